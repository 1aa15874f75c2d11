//! Every frame and method of the contract, over real WebSockets.

mod common;

use common::*;
use serde_json::json;
use sodp_proto::{DeltaOp, FrameType, OpKind, Value};

#[tokio::test]
async fn hello_advertises_capabilities() {
    let server = TestServer::start().await;
    let c = server.client().await;
    let body = &c.hello.body;
    assert_eq!(body.get("protocol"), Some(&Value::from("sodp")));
    assert_eq!(body.get("version"), Some(&Value::from("1.0")));
    assert_eq!(body.get("auth"), Some(&Value::Bool(false)));
    let caps = body.get("capabilities").unwrap();
    for cap in ["multi_watch", "params", "resume"] {
        assert_eq!(caps.get(cap), Some(&Value::Bool(true)), "{cap}");
    }
    assert_eq!(caps.get("backpressure_limit"), Some(&Value::Int(1024)));
}

#[tokio::test]
async fn watch_of_unknown_key_is_uninitialised() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let init = c.watch("game.none").await;
    assert_eq!(init.body.get("state"), Some(&Value::from("game.none")));
    assert_eq!(init.body.get("version"), Some(&Value::Int(0)));
    assert_eq!(init.body.get("value"), Some(&Value::Nil));
    assert_eq!(init.body.get("initialized"), Some(&Value::Bool(false)));
    assert!(init.stream_id >= 10);
}

#[tokio::test]
async fn each_method_sends_its_exact_ops() {
    let server = TestServer::start().await;
    let mut watcher = server.client().await;
    let mut writer = server.client().await;
    watcher.watch("game.player").await;

    let player = json!({"name": "Alice", "health": 100, "position": {"x": 0, "y": 0}});
    let v1 = writer
        .ok(
            "state.set",
            json!({"state": "game.player", "value": player}),
        )
        .await;
    assert_eq!(
        watcher.delta().await,
        (v1, vec![DeltaOp::add("/", v(player.clone()))])
    );

    let v2 = writer
        .ok(
            "state.patch",
            json!({"state": "game.player", "patch": {"position": {"x": 5}}}),
        )
        .await;
    assert!(v2 > v1);
    assert_eq!(
        watcher.delta().await,
        (v2, vec![DeltaOp::update("/position/x", Value::Int(5))])
    );

    let v3 = writer
        .ok(
            "state.set_in",
            json!({"state": "game.player", "path": "/inventory", "value": ["sword"]}),
        )
        .await;
    assert_eq!(
        watcher.delta().await,
        (v3, vec![DeltaOp::add("/inventory", v(json!(["sword"])))])
    );

    let v4 = writer
        .ok(
            "state.set_in",
            json!({"state": "game.player", "path": "/inventory/0", "value": "axe"}),
        )
        .await;
    assert_eq!(
        watcher.delta().await,
        (v4, vec![DeltaOp::update("/inventory/0", v(json!("axe")))])
    );

    let v5 = writer
        .ok(
            "state.set_in",
            json!({"state": "game.player", "path": "/inventory/-", "value": "bow"}),
        )
        .await;
    let (_, ops) = watcher.delta().await;
    assert_eq!(
        (ops[0].kind, ops[0].path.as_str()),
        (OpKind::Add, "/inventory/-")
    );

    let v6 = writer
        .ok(
            "state.set_in",
            json!({"state": "game.player", "path": "/a~1b", "value": 1}),
        )
        .await;
    assert_eq!(
        watcher.delta().await,
        (v6, vec![DeltaOp::add("/a~1b", Value::Int(1))])
    );
    assert!(v6 > v5 && v5 > v4);

    let expected = json!({"name": "Alice", "health": 100, "position": {"x": 5, "y": 0}, "inventory": ["axe", "bow"], "a/b": 1});
    assert_eq!(
        server.shared.store.snapshot("game.player").value,
        v(expected)
    );

    // A write that changes nothing takes no version and sends no DELTA.
    let same = writer
        .ok(
            "state.patch",
            json!({"state": "game.player", "patch": {"health": 100}}),
        )
        .await;
    assert_eq!(same, v6);

    let v7 = writer
        .ok("state.delete", json!({"state": "game.player"}))
        .await;
    assert_eq!(watcher.delta().await, (v7, vec![DeltaOp::remove("/")]));
    let snap = server.shared.store.snapshot("game.player");
    assert!(!snap.initialized);
    assert_eq!(snap.version, v7);
    watcher
        .expect_silence(std::time::Duration::from_millis(100))
        .await;
}

#[tokio::test]
async fn multi_watch_params_and_unwatch() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(
        FrameType::Watch,
        11,
        v(json!({"states": ["a.one", "a.two"], "params": {"view": "full"}})),
    )
    .await;
    let (i1, i2) = (c.recv().await, c.recv().await);
    for (init, key) in [(&i1, "a.one"), (&i2, "a.two")] {
        assert_eq!(init.kind, FrameType::StateInit);
        assert_eq!(init.body.get("state"), Some(&Value::from(key)));
        assert_eq!(init.body.get("params"), Some(&v(json!({"view": "full"}))));
    }
    assert_ne!(i1.stream_id, i2.stream_id);

    c.ok("state.set", json!({"state": "a.one", "value": 1}))
        .await;
    let f = c.recv().await;
    assert_eq!((f.kind, f.stream_id), (FrameType::Delta, i1.stream_id));

    c.send(FrameType::Unwatch, 0, v(json!({"states": ["a.one"]})))
        .await;
    c.ok("state.set", json!({"state": "a.one", "value": 2}))
        .await;
    c.ok("state.set", json!({"state": "a.two", "value": 2}))
        .await;
    let f = c.recv().await;
    assert_eq!(
        (f.kind, f.stream_id),
        (FrameType::Delta, i2.stream_id),
        "a.one must be silent after UNWATCH"
    );

    c.send(FrameType::Unwatch, 0, v(json!({"state": "a.two"})))
        .await;
    c.ok("state.set", json!({"state": "a.two", "value": 3}))
        .await;
    c.expect_silence(std::time::Duration::from_millis(100))
        .await;
}

#[tokio::test]
async fn a_second_watch_shares_the_subscription() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let first = c.watch("k").await;
    let second = c.watch("k").await;
    assert_eq!(first.stream_id, second.stream_id);
    c.ok("state.set", json!({"state": "k", "value": 1})).await;
    c.delta().await;
    c.expect_silence(std::time::Duration::from_millis(100))
        .await;
}

#[tokio::test]
async fn resume_replays_missed_changes_then_marks_live() {
    let server = TestServer::start().await;
    let mut writer = server.client().await;
    let v1 = writer
        .ok("state.set", json!({"state": "r", "value": {"n": 1}}))
        .await;
    let v2 = writer
        .ok("state.patch", json!({"state": "r", "patch": {"n": 2}}))
        .await;
    let v3 = writer
        .ok("state.patch", json!({"state": "r", "patch": {"n": 3}}))
        .await;

    let mut c = server.client().await;
    c.send(
        FrameType::Resume,
        10,
        v(json!({"state": "r", "since_version": v1})),
    )
    .await;
    // Nobody watched while these were written: the server kept them as ops
    // and encodes the DELTAs now, exactly as a watcher would have got them.
    for (expected, n) in [(v2, 2), (v3, 3)] {
        let f = c.recv().await;
        assert_eq!(f.kind, FrameType::Delta);
        assert_eq!(f.body.get("state"), Some(&Value::from("r")));
        assert_eq!(
            f.body.get("version").and_then(Value::as_u64),
            Some(expected)
        );
        assert_eq!(
            f.body.get("ops"),
            Some(&v(json!([{"op": "UPDATE", "path": "/n", "value": n}])))
        );
    }
    let marker = c.recv().await;
    assert_eq!(marker.kind, FrameType::StateInit);
    assert_eq!(marker.body.get("value"), Some(&v(json!({"n": 3}))));
    // And it is live afterwards.
    let v4 = writer
        .ok("state.patch", json!({"state": "r", "patch": {"n": 4}}))
        .await;
    assert_eq!(c.delta().await.0, v4);
}

#[tokio::test]
async fn resume_falls_back_to_state_init() {
    let server = TestServer::with(|c| c.history_len = 2).await;
    let mut writer = server.client().await;
    let v1 = writer
        .ok("state.set", json!({"state": "r", "value": 1}))
        .await;
    for n in 2..=5 {
        writer
            .ok("state.set", json!({"state": "r", "value": n}))
            .await;
    }
    let mut c = server.client().await;
    // History trimmed past v1.
    c.send(
        FrameType::Resume,
        10,
        v(json!({"state": "r", "since_version": v1})),
    )
    .await;
    let f = c.recv().await;
    assert_eq!(
        f.kind,
        FrameType::StateInit,
        "trimmed history must give STATE_INIT alone"
    );
    assert_eq!(f.body.get("value"), Some(&Value::Int(5)));
    // since_version ahead of the key (e.g. the server restarted).
    c.send(
        FrameType::Resume,
        10,
        v(json!({"state": "r", "since_version": 999_999})),
    )
    .await;
    assert_eq!(c.recv().await.kind, FrameType::StateInit);
    // Up to date: no replay, just the marker.
    let now = server.shared.store.snapshot("r").version;
    c.send(
        FrameType::Resume,
        10,
        v(json!({"state": "r", "since_version": now})),
    )
    .await;
    assert_eq!(c.recv().await.kind, FrameType::StateInit);
    c.expect_silence(std::time::Duration::from_millis(100))
        .await;
}

#[tokio::test]
async fn call_failures_are_results_with_codes() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let r = c.call("state.nope", json!({"state": "k"})).await;
    assert_eq!(failure_code(&r), Some(404));
    let r = c
        .call("state.set", json!({"state": "bad key!", "value": 1}))
        .await;
    assert_eq!(failure_code(&r), Some(400));
    let r = c
        .call("state.patch", json!({"state": "k", "patch": 5}))
        .await;
    assert_eq!(failure_code(&r), Some(400));
    let r = c
        .call(
            "state.set_in",
            json!({"state": "k", "path": "no-slash", "value": 1}),
        )
        .await;
    assert_eq!(failure_code(&r), Some(400));
    c.ok("state.set", json!({"state": "k", "value": {"l": [1]}}))
        .await;
    let r = c
        .call(
            "state.set_in",
            json!({"state": "k", "path": "/l/7", "value": 1}),
        )
        .await;
    assert_eq!(failure_code(&r), Some(400), "index out of range");
    let r = c
        .call(
            "state.presence",
            json!({"state": "k", "path": "/", "value": 1}),
        )
        .await;
    assert_eq!(failure_code(&r), Some(400), "presence on the root");
    let data = r.get("data").and_then(Value::as_str).unwrap();
    assert!(data.contains("presence"), "{data}");
}

#[tokio::test]
async fn heartbeat_echo_rule() {
    let server =
        TestServer::with(|c| c.heartbeat_interval = std::time::Duration::from_millis(200)).await;
    let mut c = server.client().await;
    // An unsolicited client HEARTBEAT is answered.
    c.send(FrameType::Heartbeat, 0, Value::Nil).await;
    assert_eq!(c.recv_any().await.kind, FrameType::Heartbeat);
    // The server pings; our echo is not answered again.
    let f = c.recv_any().await;
    assert_eq!(f.kind, FrameType::Heartbeat);
    c.send(FrameType::Heartbeat, 0, Value::Nil).await;
    // Stay alive across several intervals by echoing each ping; never more
    // than one heartbeat per interval arrives.
    let start = tokio::time::Instant::now();
    let mut pings = 0;
    while start.elapsed() < std::time::Duration::from_millis(900) {
        let f = c.recv_any().await;
        assert_eq!(f.kind, FrameType::Heartbeat);
        pings += 1;
        c.send(FrameType::Heartbeat, 0, Value::Nil).await;
    }
    assert!(pings <= 6, "ping-pong loop: {pings} heartbeats in 900 ms");
    assert_eq!(server.shared.connections(), 1);
}

#[tokio::test]
async fn silent_clients_are_closed_after_two_intervals() {
    let server =
        TestServer::with(|c| c.heartbeat_interval = std::time::Duration::from_millis(100)).await;
    let mut c = server.client().await;
    // Never echo: the server closes within a few intervals.
    let started = std::time::Instant::now();
    c.expect_close().await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    eventually("connection count to drop", || {
        server.shared.connections() == 0
    })
    .await;
}

#[tokio::test]
async fn resume_after_a_restart_never_mixes_histories() {
    // A client saw version `since` on a server that has since restarted.
    let before = TestServer::start().await;
    let mut w = before.client().await;
    for n in 0..5 {
        w.ok("state.set", json!({"state": "k", "value": {"old": n}}))
            .await;
    }
    let stale = before.shared.store.snapshot("k");
    before.shutdown().await;

    // The new process writes more changes than the old one ever did.
    let after = TestServer::start().await;
    let mut w = after.client().await;
    for n in 0..10 {
        w.ok("state.set", json!({"state": "k", "value": {"new": n}}))
            .await;
    }
    let mut c = after.client().await;
    c.send(
        FrameType::Resume,
        10,
        v(json!({"state": "k", "since_version": stale.version})),
    )
    .await;
    let (mut value, mut replayed) = (stale.value, 0);
    loop {
        let f = c.recv().await;
        if f.kind == FrameType::StateInit {
            if replayed > 0 {
                assert_eq!(
                    value,
                    *f.body.get("value").unwrap(),
                    "a replay must rebuild the live value"
                );
            }
            break;
        }
        let ops = DeltaOp::list_from_value(f.body.get("ops").unwrap()).unwrap();
        value = sodp_proto::apply(&value, &ops).unwrap();
        replayed += 1;
    }
    assert_eq!(
        replayed, 0,
        "a version from another process is never replayed from"
    );
    assert!(
        after.shared.store.version() > stale.version,
        "versions keep increasing across restarts"
    );
}

#[tokio::test]
async fn a_busy_subscriber_that_echoes_is_never_timed_out() {
    // Deliveries keep the session task busy writing; the echoes it reads in
    // between must still count as signs of life.
    let server =
        TestServer::with(|c| c.heartbeat_interval = std::time::Duration::from_millis(150)).await;
    let mut watcher = server.client().await;
    let mut writer = server.client().await;
    watcher.watch("busy").await;
    let writes = tokio::spawn(async move {
        for i in 0..60 {
            writer
                .ok("state.set", json!({"state": "busy", "value": i}))
                .await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        writer
    });
    let mut last = None;
    while last != Some(v(json!(59))) {
        let f = watcher.recv_any().await;
        match f.kind {
            FrameType::Heartbeat => watcher.send(FrameType::Heartbeat, 0, Value::Nil).await,
            FrameType::Delta => {
                last = DeltaOp::list_from_value(f.body.get("ops").unwrap()).unwrap()[0]
                    .value
                    .clone()
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let _writer = writes.await.unwrap();
    assert_eq!(server.shared.connections(), 2, "nobody was timed out");
}
