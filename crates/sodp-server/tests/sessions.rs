//! Session ends of every kind, presence cleanup, backpressure, concurrency.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use sodp_proto::{apply, DeltaOp, FrameType, OpKind, Value};

async fn presence_then(end: impl AsyncFnOnce(TestClient)) {
    let server = TestServer::with(|c| c.heartbeat_interval = Duration::from_millis(150)).await;
    let mut watcher = server.client().await;
    let mut other = server.client().await;
    let mut leaver = server.client().await;
    watcher.watch("collab.cursors").await;
    other
        .ok(
            "state.presence",
            json!({"state": "collab.cursors", "path": "/bob", "value": {"line": 9}}),
        )
        .await;
    leaver
        .ok(
            "state.presence",
            json!({"state": "collab.cursors", "path": "/alice", "value": {"line": 1}}),
        )
        .await;
    watcher.delta().await;
    watcher.delta().await;
    // Keep the watcher alive across heartbeat intervals while waiting.
    end(leaver).await;
    loop {
        let f = watcher.recv_any().await;
        if f.kind == FrameType::Heartbeat {
            watcher.send(FrameType::Heartbeat, 0, Value::Nil).await;
            other.send(FrameType::Heartbeat, 0, Value::Nil).await;
            continue;
        }
        assert_eq!(f.kind, FrameType::Delta);
        let ops = DeltaOp::list_from_value(f.body.get("ops").unwrap()).unwrap();
        assert_eq!(ops, vec![DeltaOp::remove("/alice")]);
        break;
    }
    assert_eq!(
        server.shared.store.snapshot("collab.cursors").value,
        v(json!({"bob": {"line": 9}})),
        "only the leaver's path goes"
    );
}

#[tokio::test]
async fn presence_removed_on_graceful_close() {
    presence_then(async |mut c: TestClient| {
        c.ws.close(None).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn presence_removed_when_tcp_drops() {
    presence_then(async |c: TestClient| {
        // No close handshake: the socket just goes away.
        drop(c);
    })
    .await;
}

#[tokio::test]
async fn presence_removed_on_heartbeat_timeout() {
    presence_then(async |c: TestClient| {
        // The client stays connected but never answers: leak it on purpose.
        std::mem::forget(c);
    })
    .await;
}

#[tokio::test]
async fn newest_binder_owns_the_path() {
    let server = TestServer::start().await;
    let mut watcher = server.client().await;
    let mut first = server.client().await;
    let mut second = server.client().await;
    watcher.watch("room").await;
    first
        .ok(
            "state.presence",
            json!({"state": "room", "path": "/me", "value": 1}),
        )
        .await;
    second
        .ok(
            "state.presence",
            json!({"state": "room", "path": "/me", "value": 2}),
        )
        .await;
    watcher.delta().await;
    watcher.delta().await;
    drop(first);
    eventually("first session to end", || server.shared.connections() == 2).await;
    watcher.expect_silence(Duration::from_millis(150)).await;
    assert_eq!(
        server.shared.store.snapshot("room").value,
        v(json!({"me": 2}))
    );
    second.ws.close(None).await.unwrap();
    assert_eq!(watcher.delta().await.1, vec![DeltaOp::remove("/me")]);
}

#[tokio::test]
async fn slow_subscriber_is_evicted_and_others_get_everything() {
    let server = TestServer::with(|c| c.outbound_queue = 8).await;
    let mut innocent = server.client().await;
    let mut slow = server.client().await;
    let mut writer = server.client().await;
    innocent.watch("big").await;
    slow.watch("big").await; // ...and then never reads again.

    let blob = "x".repeat(100_000);
    let writes = 300u64;
    let mut versions = Vec::new();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < writes as usize {
            let (version, ops) = innocent.delta().await;
            seen.push((version, ops.len()));
        }
        seen
    });
    for i in 0..writes {
        versions.push(
            writer
                .ok(
                    "state.set",
                    json!({"state": "big", "value": {"i": i, "blob": blob}}),
                )
                .await,
        );
    }
    let seen = reader.await.unwrap();
    assert_eq!(
        seen.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        versions,
        "every delta, in order"
    );
    eventually("the slow subscriber to be evicted", || {
        server.shared.connections() == 2
    })
    .await;
    drop(slow);
}

/// Direct delivery under pressure, over real sockets on a multi-threaded
/// runtime: four writers on their own connections write one key, and a
/// subscriber stops reading until megabytes are waiting, so flushes from
/// several threads meet full sockets and leave the rest to its session
/// task. It must then get every change once, in version order, and the
/// ops must rebuild the last value exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_pauses_gets_every_change_in_order() {
    let server = TestServer::start().await;
    let mut watcher = server.client().await;
    let init = watcher.watch("doc").await;
    let mut value = init.body.get("value").cloned().unwrap();

    let (writers, each) = (4u64, 60u64);
    let blob = "y".repeat(100_000);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut client = server.client().await;
        let blob = blob.clone();
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for i in 0..each {
                let field = format!("w{w}");
                // A new string each time, so every DELTA carries all of it.
                let pad = format!("{i:04}{blob}");
                let patch = json!({"state": "doc", "patch": {field: {"i": i, "pad": pad}}});
                versions.push(client.ok("state.patch", patch).await);
            }
            versions
        }));
    }
    // Not reading while 240 × ~100 KB DELTAs (~24 MB, more than the two
    // sockets buffer) are sent to us.
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    acked.sort_unstable();
    let mut seen = Vec::new();
    while seen.len() < acked.len() {
        let (version, ops) = watcher.delta().await;
        value = apply(&value, &ops).unwrap();
        seen.push(version);
    }
    assert_eq!(seen, acked, "every change once, in version order");
    let expected: serde_json::Map<String, serde_json::Value> = (0..writers)
        .map(|w| {
            let pad = format!("{:04}{blob}", each - 1);
            (format!("w{w}"), json!({"i": each - 1, "pad": pad}))
        })
        .collect();
    assert_eq!(value, v(serde_json::Value::Object(expected)));
    assert_eq!(server.shared.store.snapshot("doc").value, value);
}

#[tokio::test]
async fn concurrent_writers_lose_nothing() {
    let server = TestServer::start().await;
    let mut watcher = server.client().await;
    let init = watcher.watch("shared.obj").await;
    let mut value = init.body.get("value").cloned().unwrap();

    let (clients, patches) = (8, 200);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move {
            for i in 0..patches {
                let field = format!("f{c}");
                client
                    .ok(
                        "state.patch",
                        json!({"state": "shared.obj", "patch": {field: i}}),
                    )
                    .await;
            }
        }));
    }
    let mut last_version = 0;
    for _ in 0..clients * patches {
        let (version, ops) = watcher.delta().await;
        assert!(version > last_version, "versions must strictly increase");
        last_version = version;
        value = apply(&value, &ops).unwrap();
    }
    for t in tasks {
        t.await.unwrap();
    }
    let expected: serde_json::Map<String, serde_json::Value> = (0..clients)
        .map(|c| (format!("f{c}"), json!(patches - 1)))
        .collect();
    assert_eq!(value, v(serde_json::Value::Object(expected)));
    assert_eq!(server.shared.store.snapshot("shared.obj").value, value);
}

#[tokio::test]
async fn shutdown_closes_sessions_with_a_close_frame() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.ok(
        "state.presence",
        json!({"state": "p", "path": "/x", "value": 1}),
    )
    .await;
    let shared = server.shared.clone();
    let stopping = tokio::spawn(server.shutdown());
    assert_eq!(c.expect_close().await, Some(1001));
    stopping.await.unwrap();
    assert_eq!(
        shared.store.snapshot("p").value,
        v(json!({})),
        "presence released at shutdown"
    );
}

#[tokio::test]
async fn delete_then_rewrite_starts_with_add_root() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.watch("k").await;
    c.ok("state.set", json!({"state": "k", "value": 1})).await;
    c.delta().await;
    c.ok("state.delete", json!({"state": "k"})).await;
    c.delta().await;
    c.ok("state.patch", json!({"state": "k", "patch": {"a": 1}}))
        .await;
    let (_, ops) = c.delta().await;
    assert_eq!((ops[0].kind, ops[0].path.as_str()), (OpKind::Add, "/"));
    assert_eq!(ops[0].value, Some(v(json!({"a": 1}))));
}
