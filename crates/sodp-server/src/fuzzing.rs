//! The body of the `session_frames` fuzz target (see `fuzz/`), shared with
//! the test that runs its seeded corpus, so both exercise the same code.
//!
//! The input is a script for one server and up to three sessions. Each
//! step is `[tag, len, len bytes…]`:
//! - tag % 6 == 0: the bytes are one raw frame, handed to the session;
//! - 1: a CALL: method chosen by the first byte, `args` the rest decoded as
//!   MessagePack (if it decodes);
//! - 2: AUTH with claims: the bytes as JSON (if they parse) or claims built
//!   from them, signed with the server's test key — hostile `exp`, `nbf`,
//!   `sub`, roles;
//! - 3: a timer: a heartbeat tick or the session's deadline;
//! - 4: switch to session `byte % 3` (opening it if needed);
//! - 5: the current session ends (dropped, as when its task ends).
//!
//! After the script every session ends, and the store must hold no presence
//! binding, and every key's recorded size must equal its real encoded size.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use jsonwebtoken::{encode, EncodingKey, Header};
use sodp_proto::codec::{decode_value, encoded_len};
use sodp_proto::{Frame, FrameType, Value};
use tokio::time::Instant;

use crate::config::Config;
use crate::methods;
use crate::outbox::Outbox;
use crate::session::Session;
use crate::shared::Shared;
use crate::wire;

const SECRET: &str = "fuzzing-secret";

/// Runs one script. Must return for every input without panicking.
pub fn session_frames(data: &[u8]) {
    let mut config = Config::default();
    config.limits.max_depth = 16;
    config.limits.max_value_bytes = Some(4096);
    config.limits.max_memory = 1 << 20;
    config.limits.max_subscriptions = 8;
    config.limits.max_presence_paths = 8;
    config.history_len = 8;
    config.outbound_queue = 64;
    config.security.jwt.hs256_secret = Some(SECRET.into());
    let shared = Arc::new(Shared::new(config).expect("the fuzzing policy is valid"));
    let mut sessions: [Option<(Session, Arc<Outbox>)>; 3] = [None, None, None];
    let mut current: usize = 0;
    let mut keys = HashSet::new();
    let mut rest = data;
    while let [tag, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        let (session, _) = sessions[current].get_or_insert_with(|| open(&shared));
        match tag % 6 {
            0 => session.on_frame(chunk),
            1 => {
                if let Some(key) = call(session, chunk) {
                    keys.insert(key);
                }
            }
            2 => auth(session, chunk),
            3 => match chunk.first() {
                Some(b) if b % 2 == 0 => session.on_heartbeat_tick(Instant::now()),
                _ => session.on_deadline(Instant::now()),
            },
            4 => current = chunk.first().map_or(0, |b| *b as usize % 3),
            _ => sessions[current] = None,
        }
        for (_, outbox) in sessions.iter().flatten() {
            drain(outbox);
        }
    }
    drop(sessions);
    assert_eq!(
        shared.store.presence_count(),
        0,
        "presence outlived its session"
    );
    for key in &keys {
        let snap = shared.store.snapshot(key);
        assert_eq!(
            shared.store.recorded_size(key),
            if snap.version == 0 {
                0
            } else {
                encoded_len(&snap.value)
            },
            "recorded size of {key}"
        );
    }
    assert_eq!(shared.connections(), 0);
}

fn open(shared: &Arc<Shared>) -> (Session, Arc<Outbox>) {
    let outbox = shared.open_session();
    (Session::new(shared.clone(), outbox.clone()), outbox)
}

/// Every frame the server produced must decode.
fn drain(outbox: &Outbox) {
    let mut batch = VecDeque::new();
    outbox.take_all(&mut batch);
    for message in &batch {
        Frame::decode(wire::ws_payload(message), 64).expect("server frames decode");
    }
}

/// A CALL built from `chunk`; returns the key it names.
fn call(session: &mut Session, chunk: &[u8]) -> Option<String> {
    let (method, args) = chunk.split_first()?;
    let names: Vec<&str> = methods::names().collect();
    let method = names[*method as usize % names.len()];
    let mut args = decode_value(args, 32).unwrap_or(Value::Nil);
    // A presence path without its leading slash is common in scripts;
    // give it one so presence is reached, keep whatever else the bytes say.
    if let Value::Map(m) = &mut args {
        let m = std::sync::Arc::make_mut(m);
        if let Some(path) = m.get("path").and_then(Value::as_str) {
            if !path.starts_with('/') {
                let fixed = format!("/{path}");
                m.insert("path".into(), Value::from(fixed));
            }
        }
    }
    let key = args.get("state").and_then(Value::as_str).map(str::to_owned);
    let body = Value::map_from([
        ("call_id", Value::from("f")),
        ("method", Value::from(method)),
        ("args", args),
    ]);
    let message = wire::encode(FrameType::Call, 1, 1, body);
    session.on_frame(wire::ws_payload(&message));
    key
}

/// AUTH with claims from `chunk`, signed with the server's key.
fn auth(session: &mut Session, chunk: &[u8]) {
    let claims = serde_json::from_slice::<serde_json::Value>(chunk).unwrap_or_else(|_| {
        let number = |i: usize| {
            chunk
                .get(i..i + 8)
                .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        };
        serde_json::json!({
            "sub": String::from_utf8_lossy(chunk.get(..4).unwrap_or(b"sub")),
            "exp": number(4),
            "nbf": number(12) % 4_000_000_000,
            "roles": ["admin", String::from_utf8_lossy(chunk)],
        })
    });
    let Ok(token) = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    ) else {
        return;
    };
    let body = Value::map_from([("token", Value::from(token))]);
    let message = wire::encode(FrameType::Auth, 0, 1, body);
    session.on_frame(wire::ws_payload(&message));
}
