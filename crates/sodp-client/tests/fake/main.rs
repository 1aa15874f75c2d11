//! Tests against a scripted fake server, for what the real server cannot be
//! made to do on demand: reject a token, never answer a call, send a bad
//! delta, deny a watch, or expect an in-band token refresh.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use sodp_client::{Client, Error, Source, Status, WatchOptions, WriteOptions};
use sodp_proto::{Frame, FrameType, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

struct Fake {
    listener: TcpListener,
    accepted: Arc<AtomicUsize>,
}

impl Fake {
    async fn start() -> Fake {
        Fake {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            accepted: Arc::default(),
        }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.listener.local_addr().unwrap())
    }

    /// A client of this server that reconnects at once.
    fn reconnecting(&self) -> sodp_client::ClientBuilder {
        Client::builder(self.url()).reconnect_delay(Duration::from_millis(20))
    }

    async fn accept(&self) -> Conn {
        let (tcp, _) = tokio::time::timeout(Duration::from_secs(5), self.listener.accept())
            .await
            .expect("client connects")
            .unwrap();
        self.accepted.fetch_add(1, Ordering::SeqCst);
        Conn(tokio_tungstenite::accept_async(tcp).await.unwrap())
    }
}

struct Conn(WebSocketStream<TcpStream>);

impl Conn {
    async fn send(&mut self, kind: FrameType, stream_id: u32, body: serde_json::Value) {
        let body = if body.is_null() {
            Value::Nil
        } else {
            Value::from(body)
        };
        let bytes = Frame::new(kind, stream_id, body).encode();
        self.0.send(Message::Binary(bytes.into())).await.unwrap();
    }

    async fn hello(&mut self, auth: bool, capabilities: serde_json::Value) {
        let body = json!({"protocol": "sodp", "version": "1.0", "server": "fake",
                          "auth": auth, "capabilities": capabilities});
        self.send(FrameType::Hello, 0, body).await;
    }

    /// A successful RESULT `{version}` for `call`.
    async fn answer(&mut self, call: &Frame, version: u64) {
        let id = body_str(call, "call_id").to_owned();
        let body = json!({"call_id": id, "success": true, "data": {"version": version}});
        self.send(FrameType::Result, 0, body).await;
    }

    /// The next frame other than HEARTBEAT.
    async fn recv(&mut self) -> Frame {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.0.next())
                .await
                .expect("a frame from the client")
                .expect("connection open")
                .unwrap();
            if let Message::Binary(b) = msg {
                let f = Frame::decode(&b, 64).unwrap();
                if f.kind != FrameType::Heartbeat {
                    return f;
                }
            }
        }
    }
}

fn body_str<'a>(f: &'a Frame, field: &str) -> &'a str {
    f.body
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// An unsigned JWT with the given `exp` (the fake does not verify).
fn jwt(exp: u64, n: usize) -> String {
    let b64 = |s: &str| {
        // base64url without padding, enough for a test
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = s.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    };
    format!(
        "{}.{}.sig",
        b64(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64(&format!(r#"{{"sub":"alice","exp":{exp},"n":{n}}}"#))
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn rejected_token_stops_reconnecting() {
    let fake = Fake::start().await;
    let client = Client::builder(fake.url())
        .token("bad-token")
        .reconnect_delay(Duration::from_millis(20))
        .build()
        .unwrap();
    let mut conn = fake.accept().await;
    conn.hello(true, json!({})).await;
    let auth = conn.recv().await;
    assert_eq!(auth.kind, FrameType::Auth);
    assert_eq!(body_str(&auth, "token"), "bad-token");
    conn.send(
        FrameType::Error,
        0,
        json!({"code": 401, "message": "invalid token"}),
    )
    .await;
    drop(conn);

    assert_eq!(
        client.ready().await,
        Err(Error::Auth("invalid token".into()))
    );
    assert!(matches!(
        client.status(),
        Status::Closed(Some(Error::Auth(_)))
    ));
    assert!(matches!(client.set("k", &1).await, Err(Error::Auth(_))));
    let no_retry = tokio::time::timeout(Duration::from_millis(300), fake.listener.accept()).await;
    assert!(no_retry.is_err(), "no reconnect after a 401");
}

#[tokio::test]
async fn a_server_requiring_auth_without_a_token_configured() {
    let fake = Fake::start().await;
    let client = Client::builder(fake.url()).build().unwrap();
    let mut conn = fake.accept().await;
    conn.hello(true, json!({})).await;
    assert!(matches!(client.ready().await, Err(Error::Auth(_))));
}

#[tokio::test]
async fn provider_is_called_per_connect_and_refreshes_in_band() {
    let fake = Fake::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let client = Client::builder(fake.url())
        .token_provider(move || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok::<_, std::io::Error>(jwt(now() + 2, n)) }
        })
        .build()
        .unwrap();
    let mut conn = fake.accept().await;
    conn.hello(true, json!({"token_refresh": true})).await;
    let first = conn.recv().await;
    assert_eq!(first.kind, FrameType::Auth);
    conn.send(FrameType::AuthOk, 0, json!({"sub": "alice"}))
        .await;
    client.ready().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Halfway to expiry (about a second) the client sends AUTH again on the
    // same connection with a fresh token.
    let second = conn.recv().await;
    assert_eq!(second.kind, FrameType::Auth);
    assert_ne!(body_str(&second, "token"), body_str(&first, "token"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    conn.send(FrameType::AuthOk, 0, json!({"sub": "alice"}))
        .await;
    assert_eq!(client.status(), Status::Connected);
}

// Paused time: the 1.2 s below pass exactly (a refresh, were one wrongly
// scheduled halfway to the 1 s expiry, would fire within them) and at once.
#[tokio::test(start_paused = true)]
async fn sync_provider_and_no_refresh_without_the_capability() {
    let fake = Fake::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let client = Client::builder(fake.url())
        .token_provider_sync(move || {
            c.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(jwt(now() + 1, 0))
        })
        .reconnect_delay(Duration::from_millis(20))
        .build()
        .unwrap();
    let mut conn = fake.accept().await;
    conn.hello(true, json!({})).await;
    assert_eq!(conn.recv().await.kind, FrameType::Auth);
    conn.send(FrameType::AuthOk, 0, json!({"sub": "alice"}))
        .await;
    client.ready().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no refresh: not advertised"
    );

    // A live expiry (401 after AUTH_OK) with a provider: reconnect and ask
    // the provider again.
    conn.send(
        FrameType::Error,
        0,
        json!({"code": 401, "message": "token expired"}),
    )
    .await;
    drop(conn);
    let mut conn = fake.accept().await;
    conn.hello(true, json!({})).await;
    assert_eq!(conn.recv().await.kind, FrameType::Auth);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn in_flight_calls_fail_promptly_and_timeouts_are_typed() {
    let fake = Fake::start().await;
    let client = Client::builder(fake.url())
        .call_timeout(Some(Duration::from_millis(300)))
        .reconnect_delay(Duration::from_millis(20))
        .build()
        .unwrap();
    let mut conn = fake.accept().await;
    conn.hello(false, json!({})).await;
    client.ready().await.unwrap();

    // Never answered: times out.
    assert_eq!(client.set("k", &1).await, Err(Error::Timeout));
    assert_eq!(conn.recv().await.kind, FrameType::Call);

    // In flight when the connection drops: fails at once, not at the timeout.
    let slow = Client::builder(fake.url())
        .call_timeout(Some(Duration::from_secs(30)))
        .build()
        .unwrap();
    let mut conn2 = fake.accept().await;
    conn2.hello(false, json!({})).await;
    slow.ready().await.unwrap();
    let call = tokio::spawn({
        let slow = slow.clone();
        async move {
            slow.call("state.set", json!({"state": "k", "value": 1}))
                .await
        }
    });
    let frame = conn2.recv().await;
    assert_eq!(frame.kind, FrameType::Call);
    assert_eq!(body_str(&frame, "method"), "state.set");
    drop(conn2);
    let result = tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .expect("failed promptly")
        .unwrap();
    assert!(matches!(result, Err(Error::Connection(_))), "{result:?}");
}

#[tokio::test]
async fn results_match_calls_by_call_id() {
    let fake = Fake::start().await;
    let client = Client::builder(fake.url()).build().unwrap();
    let mut conn = fake.accept().await;
    conn.hello(false, json!({})).await;
    let a = tokio::spawn({
        let c = client.clone();
        async move { c.call("m.a", json!({})).await }
    });
    let fa = conn.recv().await;
    let b = tokio::spawn({
        let c = client.clone();
        async move { c.call("m.b", json!({})).await }
    });
    let fb = conn.recv().await;
    // Answer out of order; one failure with a code.
    conn.send(
        FrameType::Result,
        0,
        json!({"call_id": body_str(&fb, "call_id"),
        "success": false, "data": "nope", "code": 403}),
    )
    .await;
    conn.send(
        FrameType::Result,
        0,
        json!({"call_id": body_str(&fa, "call_id"),
        "success": true, "data": {"version": 9}}),
    )
    .await;
    assert_eq!(a.await.unwrap().unwrap().to_json(), json!({"version": 9}));
    assert_eq!(
        b.await.unwrap(),
        Err(Error::Call {
            code: 403,
            message: "nope".into()
        })
    );
}

#[tokio::test]
async fn bad_deltas_and_denied_watches_are_reported() {
    let fake = Fake::start().await;
    let errors = Arc::new(Mutex::new(Vec::<Error>::new()));
    let e = errors.clone();
    let client = Client::builder(fake.url())
        .on_error(move |err| e.lock().unwrap().push(err.clone()))
        .build()
        .unwrap();
    let mut conn = fake.accept().await;
    conn.hello(false, json!({})).await;
    client.ready().await.unwrap();

    let mut sub = client.subscribe("k");
    let watch = conn.recv().await;
    assert_eq!(watch.kind, FrameType::Watch);
    assert_eq!(body_str(&watch, "state"), "k");
    // The server picks its own stream id.
    conn.send(
        FrameType::StateInit,
        42,
        json!({"state": "k", "version": 1,
        "value": {"a": 1}, "initialized": true}),
    )
    .await;
    assert_eq!(sub.recv().await.unwrap().meta.source, Source::Init);
    // Routed by stream id alone.
    conn.send(
        FrameType::Delta,
        42,
        json!({"version": 2,
        "ops": [{"op": "UPDATE", "path": "/a", "value": 2}]}),
    )
    .await;
    assert_eq!(sub.recv().await.unwrap().value.to_json(), json!({"a": 2}));

    // An unknown op: reported, never half-applied, and the key is re-watched.
    conn.send(
        FrameType::Delta,
        42,
        json!({"state": "k", "version": 3,
        "ops": [{"op": "MOVE", "path": "/a"}]}),
    )
    .await;
    let resync = conn.recv().await;
    assert_eq!(
        (resync.kind, body_str(&resync, "state")),
        (FrameType::Watch, "k")
    );
    assert!(matches!(errors.lock().unwrap()[0], Error::Protocol(_)));

    // A denied watch is an ERROR on that stream.
    let _denied = client.subscribe("secret");
    let w = conn.recv().await;
    conn.send(
        FrameType::Error,
        w.stream_id,
        json!({"code": 403, "message": "forbidden"}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while errors.lock().unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no second error: {:?}",
            errors.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(errors.lock().unwrap().len(), 2, "{errors:?}");
    assert_eq!(
        errors.lock().unwrap()[1],
        Error::Server {
            code: 403,
            message: "secret: forbidden".into()
        }
    );
    assert_eq!(client.status(), Status::Connected);
}

#[tokio::test]
async fn heartbeat_is_echoed_and_unwatch_sent_for_the_last_watcher() {
    let fake = Fake::start().await;
    let client = Client::builder(fake.url()).build().unwrap();
    let mut conn = fake.accept().await;
    conn.hello(false, json!({})).await;
    client.ready().await.unwrap();
    conn.send(FrameType::Heartbeat, 0, json!(null)).await;
    let echo = loop {
        let m = conn.0.next().await.unwrap().unwrap();
        if let Message::Binary(b) = m {
            break Frame::decode(&b, 64).unwrap();
        }
    };
    assert_eq!(echo.kind, FrameType::Heartbeat);

    let a = client.subscribe("u.k");
    let b = client.subscribe("u.k");
    assert_eq!(conn.recv().await.kind, FrameType::Watch);
    drop(a);
    drop(b);
    let unwatch = conn.recv().await;
    assert_eq!(
        (unwatch.kind, body_str(&unwatch, "state")),
        (FrameType::Unwatch, "u.k")
    );
    assert_eq!(fake.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn watch_params_are_sent_with_the_watch_and_with_the_resume_after_a_reconnect() {
    let fake = Fake::start().await;
    let client = fake.reconnecting().build().unwrap();
    let mut conn = fake.accept().await;
    conn.hello(false, json!({"params": true, "resume": true}))
        .await;
    client.ready().await.unwrap();

    let params = Value::from(json!({"view": "compact", "fields": ["hp"]}));
    let mut sub = client.subscribe_with("game.player", WatchOptions::new().params(params.clone()));
    let watch = conn.recv().await;
    assert_eq!(watch.kind, FrameType::Watch);
    assert_eq!(body_str(&watch, "state"), "game.player");
    assert_eq!(watch.body.get("params"), Some(&params));
    conn.send(
        FrameType::StateInit,
        12,
        json!({"state": "game.player", "version": 5, "value": {"hp": 3},
               "initialized": true, "params": params.to_json()}),
    )
    .await;
    assert_eq!(sub.recv().await.unwrap().meta.version, 5);
    // A watcher without params of the same key shares the subscription.
    let _second = client.subscribe("game.player");

    drop(conn);
    let mut conn = fake.accept().await;
    conn.hello(false, json!({"params": true, "resume": true}))
        .await;
    let resume = conn.recv().await;
    assert_eq!(resume.kind, FrameType::Resume);
    assert_eq!(body_str(&resume, "state"), "game.player");
    assert_eq!(resume.body.get("since_version"), Some(&Value::Int(5)));
    assert_eq!(resume.body.get("params"), Some(&params));

    // A plain watch carries no params at all.
    let _plain = client.subscribe("other");
    let plain = conn.recv().await;
    assert_eq!(plain.kind, FrameType::Watch);
    assert_eq!(plain.body.get("params"), None);
}

// Paused time: the heartbeats below come exactly 100 ms apart (on a loaded
// machine real sleeps can overshoot the 300 ms silence limit).
#[tokio::test(start_paused = true)]
async fn a_silent_server_is_detected_from_its_heartbeat_interval() {
    let fake = Fake::start().await;
    let errors = Arc::new(Mutex::new(Vec::<Error>::new()));
    let e = errors.clone();
    let client = Client::builder(fake.url())
        .reconnect_delay(Duration::from_millis(20))
        .on_error(move |err| e.lock().unwrap().push(err.clone()))
        .build()
        .unwrap();
    let mut conn = fake.accept().await;
    conn.hello(false, json!({"heartbeat_interval_ms": 100}))
        .await;
    client.ready().await.unwrap();
    // Heartbeats keep it alive...
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.send(FrameType::Heartbeat, 0, json!(null)).await;
    }
    assert_eq!(fake.accepted.load(Ordering::SeqCst), 1);
    assert!(errors.lock().unwrap().is_empty(), "{:?}", errors.lock());
    assert_eq!(client.status(), Status::Connected);
    // ...silence (the socket still open) does not: reconnect after ~300 ms.
    let mut second = fake.accept().await;
    second.hello(false, json!({})).await;
    client.ready().await.unwrap();
    let errors = errors.lock().unwrap();
    assert!(
        matches!(&errors[0], Error::Connection(m) if m.contains("nothing from the server")),
        "{errors:?}"
    );
    drop(conn);
}

/// A server whose HELLO advertises no extension: every extension call fails
/// with `Unsupported` before anything is sent, a pattern watch ends with the
/// error reported, and plain writes still work (without an idempotency key).
#[tokio::test]
async fn extensions_the_server_lacks_are_unsupported_and_nothing_is_sent() {
    let fake = Fake::start().await;
    let errors = Arc::new(Mutex::new(Vec::<Error>::new()));
    let seen = errors.clone();
    let client = Client::builder(fake.url())
        .on_error(move |e| seen.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let mut conn = fake.accept().await;
    conn.hello(false, json!({"resume": true})).await;
    client.ready().await.unwrap();
    assert!(!client.supports("conditional"));
    assert_eq!(
        client.capabilities().get("resume"),
        Some(&Value::Bool(true))
    );

    let unsupported = |name: &str| Err::<u64, _>(Error::Unsupported(name.into()));
    let conditional = WriteOptions::new().if_version(3);
    assert_eq!(
        client.set_with("k", &1, conditional.clone()).await,
        unsupported("conditional")
    );
    assert_eq!(
        client.delete_with("k", conditional).await,
        unsupported("conditional")
    );
    let ttl = WriteOptions::new().ttl(Duration::from_secs(1));
    assert_eq!(
        client.patch_with("k", &json!({"a": 1}), ttl).await,
        unsupported("ttl")
    );
    let keyed = WriteOptions::new().idempotency_key("mine");
    assert_eq!(
        client.set_in_with("k", "/a", &1, keyed).await,
        unsupported("idempotency")
    );
    assert_eq!(
        client.transaction().set("k", &1).commit().await,
        unsupported("transaction")
    );
    assert_eq!(
        client.fetch("k").await.unwrap_err(),
        Error::Unsupported("read".into())
    );
    assert_eq!(
        client.keys(None, None, None).await.unwrap_err(),
        Error::Unsupported("read".into())
    );
    assert_eq!(
        client.history("k", None, None).await.unwrap_err(),
        Error::Unsupported("read".into())
    );
    assert_eq!(
        client
            .transact("k", |n: Option<u64>| n.unwrap_or(0) + 1)
            .await
            .unwrap_err(),
        Error::Unsupported("read".into())
    );

    let mut pattern = client.subscribe("game.*");
    let ended = tokio::time::timeout(Duration::from_secs(2), pattern.recv()).await;
    assert!(
        matches!(ended, Ok(None)),
        "the pattern's stream ends: {ended:?}"
    );
    assert!(!client.is_watching("game.*"));
    assert!(errors
        .lock()
        .unwrap()
        .contains(&Error::Unsupported("prefix_watch".into())));

    // A plain write goes out as before, with no idempotency key; the first
    // frame the fake sees is this CALL (nothing of the refused ones).
    let write = tokio::spawn({
        let client = client.clone();
        async move { client.set("k", &1).await }
    });
    let call = conn.recv().await;
    assert_eq!(call.kind, FrameType::Call);
    assert_eq!(body_str(&call, "method"), "state.set");
    assert!(call.body.get("idempotency_key").is_none());
    conn.answer(&call, 4).await;
    assert_eq!(write.await.unwrap(), Ok(4));
}

/// With `idempotency` advertised, a write in flight when the connection
/// drops is resent on the next connection with the same idempotency key
/// (and the same args), and its caller gets the RESULT of the resend.
/// Presence never carries a key: it fails as before.
#[tokio::test]
async fn in_flight_writes_are_resent_with_their_key_after_a_reconnect() {
    let fake = Fake::start().await;
    let client = fake.reconnecting().build().unwrap();
    let caps = json!({"idempotency": true, "conditional": true});
    let mut conn = fake.accept().await;
    conn.hello(false, caps.clone()).await;
    client.ready().await.unwrap();

    let write = tokio::spawn({
        let client = client.clone();
        async move {
            let opts = WriteOptions::new().if_version(0);
            client.set_with("k", &json!({"n": 1}), opts).await
        }
    });
    let first = conn.recv().await;
    let key = body_str(&first, "idempotency_key").to_owned();
    assert!(key.starts_with("rs-") && key.len() == 35, "{key:?}");
    let presence = tokio::spawn({
        let client = client.clone();
        async move { client.presence("room", "/me", &1).await }
    });
    let p = conn.recv().await;
    assert_eq!(body_str(&p, "method"), "state.presence");
    assert!(p.body.get("idempotency_key").is_none());
    drop(conn); // neither RESULT arrives

    let presence = tokio::time::timeout(Duration::from_secs(2), presence)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(presence, Err(Error::Connection(_))),
        "{presence:?}"
    );

    let mut conn = fake.accept().await;
    conn.hello(false, caps).await;
    let again = conn.recv().await;
    assert_eq!(again.kind, FrameType::Call);
    assert_eq!(body_str(&again, "idempotency_key"), key, "same key");
    assert_eq!(again.body.get("args"), first.body.get("args"), "same args");
    assert_ne!(body_str(&again, "call_id"), "");
    conn.answer(&again, 9).await;
    assert_eq!(write.await.unwrap(), Ok(9));

    // A second write gets a different key.
    let next = tokio::spawn({
        let client = client.clone();
        async move { client.delete("k").await }
    });
    let frame = conn.recv().await;
    assert_ne!(body_str(&frame, "idempotency_key"), key);
    conn.answer(&frame, 10).await;
    assert_eq!(next.await.unwrap(), Ok(10));
}

/// A write resent after a reconnect to a server that no longer advertises
/// `idempotency` is not resent (it could apply twice): it fails.
#[tokio::test]
async fn no_resend_to_a_server_without_idempotency() {
    let fake = Fake::start().await;
    let client = fake.reconnecting().build().unwrap();
    let mut conn = fake.accept().await;
    conn.hello(false, json!({"idempotency": true})).await;
    client.ready().await.unwrap();
    let write = tokio::spawn({
        let client = client.clone();
        async move { client.set("k", &1).await }
    });
    assert_eq!(conn.recv().await.kind, FrameType::Call);
    drop(conn);
    let mut conn = fake.accept().await;
    conn.hello(false, json!({})).await;
    let result = tokio::time::timeout(Duration::from_secs(2), write)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&result, Err(Error::Connection(m)) if m.contains("idempotency")),
        "{result:?}"
    );
}

/// While not connected, at most `max_pending` calls wait; the next one
/// fails at once with `QueueFull`, and those waiting still time out.
#[tokio::test]
async fn the_disconnected_queue_is_bounded_by_max_pending() {
    // A listener that never accepts: the client stays connecting.
    let fake = Fake::start().await;
    let client = Client::builder(fake.url())
        .max_pending(2)
        .call_timeout(Some(Duration::from_millis(400)))
        .build()
        .unwrap();
    let waiting: Vec<_> = (0..2)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.set("k", &i).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(client.set("k", &3).await, Err(Error::QueueFull(2)));
    for w in waiting {
        assert_eq!(w.await.unwrap(), Err(Error::Timeout));
    }
    // Timed-out calls leave the queue: there is room again.
    let late = tokio::spawn({
        let client = client.clone();
        async move { client.set("k", &4).await }
    });
    assert_eq!(
        late.await.unwrap(),
        Err(Error::Timeout),
        "queued, not refused"
    );
    assert_eq!(fake.accepted.load(Ordering::SeqCst), 0);
}

/// In-flight writes beyond `max_pending` are not kept for a resend: the
/// oldest ones that fit are, the rest fail as without the extension.
#[tokio::test]
async fn in_flight_writes_beyond_max_pending_fail() {
    let fake = Fake::start().await;
    let client = fake.reconnecting().max_pending(1).build().unwrap();
    let mut conn = fake.accept().await;
    conn.hello(false, json!({"idempotency": true})).await;
    client.ready().await.unwrap();
    let write = |n: i64| {
        let client = client.clone();
        tokio::spawn(async move { client.set("k", &n).await })
    };
    let first = write(1);
    let sent_first = conn.recv().await;
    let second = write(2);
    conn.recv().await;
    drop(conn);
    let second = tokio::time::timeout(Duration::from_secs(2), second)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(second, Err(Error::Connection(_))), "{second:?}");
    let mut conn = fake.accept().await;
    conn.hello(false, json!({"idempotency": true})).await;
    let again = conn.recv().await;
    assert_eq!(
        body_str(&again, "idempotency_key"),
        body_str(&sent_first, "idempotency_key")
    );
    conn.answer(&again, 5).await;
    assert_eq!(first.await.unwrap(), Ok(5));
}
