//! The protocol state machine driven without sockets: frames in as bytes,
//! frames out of the outbox. Time-dependent behaviour runs on tokio's paused
//! clock (`ClockSource::Tokio`), so nothing here sleeps.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use sodp_proto::codec::encoded_len;
use sodp_proto::{Frame, FrameType, Value};
use tokio::time::Instant;

use super::Session;
use crate::clock::ClockSource;
use crate::config::Config;
use crate::outbox::Outbox;
use crate::shared::Shared;
use crate::wire;

const SECRET: &[u8] = b"session-test-secret";

fn shared_with(edit: impl FnOnce(&mut Config)) -> Arc<Shared> {
    let mut config = Config {
        clock: ClockSource::Tokio,
        ..Config::default()
    };
    edit(&mut config);
    Arc::new(Shared::new(config).expect("policy"))
}

/// One session and the frames it has produced.
struct Peer {
    session: Session,
    outbox: Arc<Outbox>,
    calls: u64,
}

impl Peer {
    fn new(shared: &Arc<Shared>) -> Peer {
        let outbox = shared.open_session();
        let session = Session::new(shared.clone(), outbox.clone());
        let peer = Peer {
            session,
            outbox,
            calls: 0,
        };
        let hello = peer.frames();
        assert_eq!(hello[0].kind, FrameType::Hello);
        peer
    }

    fn send(&mut self, kind: FrameType, body: serde_json::Value) {
        let message = wire::encode(kind, 1, 1, Value::from(body));
        self.session.on_frame(wire::ws_payload(&message));
    }

    fn frames(&self) -> Vec<Frame> {
        let mut batch = VecDeque::new();
        self.outbox.take_all(&mut batch);
        batch
            .iter()
            .map(|m| Frame::decode(wire::ws_payload(m), 200).expect("server frame"))
            .collect()
    }

    /// Sends a CALL and returns its RESULT body.
    fn call(&mut self, method: &str, args: serde_json::Value) -> Value {
        self.calls += 1;
        let call_id = format!("c{}", self.calls);
        self.send(
            FrameType::Call,
            json!({"call_id": call_id, "method": method, "args": args}),
        );
        let frames = self.frames();
        let result = frames
            .iter()
            .find(|f| f.kind == FrameType::Result)
            .unwrap_or_else(|| panic!("no RESULT for {method}: {frames:?}"));
        assert_eq!(result.body.get("call_id"), Some(&Value::from(call_id)));
        result.body.clone()
    }

    fn ok(&mut self, method: &str, args: serde_json::Value) {
        let r = self.call(method, args);
        assert_eq!(r.get("success"), Some(&Value::Bool(true)), "{r:?}");
    }
}

fn code(result: &Value) -> Option<i64> {
    result.get("code").and_then(Value::as_i64)
}

fn token(claims: serde_json::Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn with_jwt(c: &mut Config) {
    c.security.jwt.hs256_secret = Some(String::from_utf8(SECRET.to_vec()).unwrap());
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn presence_belongs_to_the_newest_binder() {
    let shared = shared_with(|_| {});
    let mut a = Peer::new(&shared);
    let mut b = Peer::new(&shared);
    a.ok(
        "state.presence",
        json!({"state": "room", "path": "/alice", "value": 1}),
    );
    b.ok(
        "state.presence",
        json!({"state": "room", "path": "/alice", "value": 2}),
    );
    drop(a);
    assert_eq!(
        shared.store.snapshot("room").value,
        json!({"alice": 2}).into(),
        "an older session ending does not remove a path taken since"
    );
    drop(b);
    assert_eq!(shared.store.snapshot("room").value, json!({}).into());
}

#[tokio::test]
async fn a_panicking_session_task_still_releases_everything() {
    let shared = shared_with(|_| {});
    let mut watcher = Peer::new(&shared);
    watcher.send(FrameType::Watch, json!({"state": "room"}));
    watcher.frames();
    let mut doomed = Peer::new(&shared);
    doomed.ok(
        "state.presence",
        json!({"state": "room", "path": "/ghost", "value": true}),
    );
    doomed.send(FrameType::Watch, json!({"state": "other"}));
    assert_eq!(shared.connections(), 2);
    let task = tokio::spawn(async move {
        let _session = doomed;
        panic!("a bug in a session task");
    });
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(
        shared.store.snapshot("room").value,
        json!({}).into(),
        "no ghost: the presence path went with the session"
    );
    let deltas: Vec<_> = watcher
        .frames()
        .into_iter()
        .filter(|f| f.kind == FrameType::Delta)
        .collect();
    assert_eq!(deltas.len(), 2, "the watcher saw the join and the leave");
    assert_eq!(shared.connections(), 1, "deregistered");
    assert_eq!(
        shared.store.key_count(),
        1,
        "`other` was unwatched and retired"
    );
}

#[tokio::test]
async fn deletes_of_unknown_keys_and_refused_writes_leave_no_slots() {
    let shared = shared_with(|c| {
        c.limits.max_value_bytes = Some(1000);
        c.limits.max_depth = 8;
    });
    let mut p = Peer::new(&shared);
    for i in 0..2000 {
        p.ok("state.delete", json!({"state": format!("random.{i}")}));
    }
    assert_eq!(shared.store.key_count(), 0);
    let big = "x".repeat(2000);
    let r = p.call("state.set", json!({"state": "big", "value": big}));
    assert_eq!(code(&r), Some(400));
    let r = p.call(
        "state.set_in",
        json!({"state": "deep", "path": "/a/b/c/d/e/f/g/h/i", "value": 1}),
    );
    assert_eq!(code(&r), Some(400));
    let r = p.call(
        "state.set_in",
        json!({"state": "bad", "path": "/a/5", "value": 1}),
    );
    assert_eq!(code(&r), Some(400));
    assert_eq!(shared.store.key_count(), 0, "nothing left behind");
    assert_eq!(shared.store.memory().counted, 0);
}

#[tokio::test]
async fn a_failed_call_says_its_code_in_its_message() {
    let shared = shared_with(|_| {});
    let mut p = Peer::new(&shared);
    let r = p.call("state.nope", json!({"state": "k"}));
    assert_eq!(code(&r), Some(404));
    let data = r.get("data").and_then(Value::as_str).unwrap();
    assert!(data.starts_with("404 unknown method"), "{data}");
}

#[tokio::test]
async fn presence_join_leave_cycles_keep_the_recorded_size_exact() {
    let shared = shared_with(|c| c.limits.max_value_bytes = Some(4096));
    let mut host = Peer::new(&shared);
    host.ok(
        "state.set",
        json!({"state": "room", "value": {"topic": "x"}}),
    );
    for i in 0..3000 {
        let mut guest = Peer::new(&shared);
        let name = format!("/guest-with-a-long-name-{}", i % 40);
        guest.ok(
            "state.presence",
            json!({"state": "room", "path": name, "value": {"x": i, "y": i}}),
        );
        drop(guest);
        let snap = shared.store.snapshot("room");
        assert_eq!(shared.store.recorded_size("room"), encoded_len(&snap.value));
    }
    // A value that is really small still accepts growing writes.
    host.ok(
        "state.patch",
        json!({"state": "room", "patch": {"more": "y".repeat(1000)}}),
    );
}

#[tokio::test(start_paused = true)]
async fn a_token_with_a_huge_exp_never_panics_the_session() {
    let shared = shared_with(with_jwt);
    // Representable but centuries away: accepted, and the session lives.
    let mut p = Peer::new(&shared);
    let far = json!(1_000_000_000_000_000_000u64);
    p.send(
        FrameType::Auth,
        json!({"token": token(json!({"sub": "alice", "exp": far}))}),
    );
    assert_eq!(p.frames()[0].kind, FrameType::AuthOk);
    p.ok("state.set", json!({"state": "k", "value": 1}));
    tokio::time::advance(Duration::from_secs(10 * 365 * 86_400)).await;
    assert!(p.session.deadline().is_none_or(|d| d > Instant::now()));
    // Beyond what a clock can hold: accepted or refused with 401 — never a
    // panic, and the server keeps serving.
    for exp in [
        json!(10_000_000_000_000_000_000u64),
        json!(u64::MAX),
        json!(1e300),
    ] {
        let mut p = Peer::new(&shared);
        p.send(
            FrameType::Auth,
            json!({"token": token(json!({"sub": "bob", "exp": exp}))}),
        );
        let first = &p.frames()[0];
        match first.kind {
            FrameType::AuthOk => p.ok("state.set", json!({"state": "k", "value": 2})),
            FrameType::Error => {
                assert_eq!(first.body.get("code").and_then(Value::as_i64), Some(401))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut after = Peer::new(&shared);
    after.send(
        FrameType::Auth,
        // The server's clock has moved on ten years (paused time, above).
        json!({"token": token(json!({"sub": "carol", "exp": shared.clock.unix_secs() + 60}))}),
    );
    assert_eq!(after.frames()[0].kind, FrameType::AuthOk);
}

#[tokio::test(start_paused = true)]
async fn a_token_expires_on_paused_time() {
    let shared = shared_with(with_jwt);
    let mut p = Peer::new(&shared);
    let exp = now_unix() + 60;
    p.send(
        FrameType::Auth,
        json!({"token": token(json!({"sub": "alice", "exp": exp}))}),
    );
    assert_eq!(p.frames()[0].kind, FrameType::AuthOk);
    let deadline = p.session.deadline().expect("the token's exp is a deadline");
    // To the sub-second: `exp` is whole seconds, the clock is not, so the
    // deadline is (59, 60] s away — a timer computed from whole seconds
    // would let the session outlive its token by up to a second.
    let remaining = shared.clock.since_epoch();
    let expected = Duration::from_secs(exp) - remaining;
    assert_eq!(deadline - Instant::now(), expected);
    assert!(expected > Duration::from_secs(59) && expected <= Duration::from_secs(60));
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(deadline <= Instant::now());
    p.session.on_deadline(Instant::now());
    let frames = p.frames();
    assert_eq!(frames[0].kind, FrameType::Error);
    assert_eq!(
        frames[0].body.get("code").and_then(Value::as_i64),
        Some(401)
    );
    assert!(p.outbox.closing().is_some(), "the session is closed");
}

#[tokio::test(start_paused = true)]
async fn the_write_rate_limit_runs_on_paused_time() {
    let shared = shared_with(|c| c.security.rate_writes_per_sec = 2);
    let mut p = Peer::new(&shared);
    p.ok("state.set", json!({"state": "k", "value": 1}));
    p.ok("state.set", json!({"state": "k", "value": 2}));
    assert_eq!(
        code(&p.call("state.set", json!({"state": "k", "value": 3}))),
        Some(429)
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    p.ok("state.set", json!({"state": "k", "value": 4}));
}

#[tokio::test(start_paused = true)]
async fn two_silent_heartbeat_intervals_close_the_session() {
    let shared = shared_with(|c| c.heartbeat_interval = Duration::from_secs(30));
    let mut p = Peer::new(&shared);
    tokio::time::advance(Duration::from_secs(30)).await;
    p.session.on_heartbeat_tick(Instant::now());
    assert_eq!(p.frames()[0].kind, FrameType::Heartbeat);
    assert!(p.outbox.closing().is_none());
    tokio::time::advance(Duration::from_secs(30)).await;
    p.session.on_heartbeat_tick(Instant::now());
    assert!(p.outbox.closing().is_some());
}
