//! The extensions of the contract (docs/PROTOCOL.md, "Extensions"), each
//! rule checked over real WebSockets: `conditional`, `read`, `transaction`,
//! `idempotency`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use sodp_proto::Value;

const QUIET: Duration = Duration::from_millis(150);

fn caps(c: &TestClient) -> &Value {
    c.hello.body.get("capabilities").unwrap()
}

fn data(r: &Value) -> &Value {
    assert_eq!(r.get("success"), Some(&Value::Bool(true)), "{r:?}");
    r.get("data").unwrap()
}

/// A failed RESULT's code and its `version` field.
fn conflict(r: &Value) -> u64 {
    assert_eq!(failure_code(r), Some(409), "{r:?}");
    r.get("version").and_then(Value::as_u64).expect("a version")
}

fn message(r: &Value) -> String {
    r.get("data")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

// ---- conditional -------------------------------------------------------

#[tokio::test]
async fn conditional_is_advertised() {
    let server = TestServer::start().await;
    let c = server.client().await;
    assert_eq!(caps(&c).get("conditional"), Some(&Value::Bool(true)));
}

#[tokio::test]
async fn a_conditional_write_applies_only_at_the_required_version() {
    let server = TestServer::start().await;
    let mut watcher = server.client().await;
    let mut c = server.client().await;
    watcher.watch("cas.k").await;

    // 0: only while the key holds no value.
    let v1 = c
        .ok(
            "state.set",
            json!({"state": "cas.k", "value": {"n": 1}, "if_version": 0}),
        )
        .await;
    assert_eq!(watcher.delta().await.0, v1);
    let r = c
        .call(
            "state.set",
            json!({"state": "cas.k", "value": {"n": 9}, "if_version": 0}),
        )
        .await;
    assert_eq!(conflict(&r), v1);
    assert!(message(&r).starts_with("409 "), "{r:?}");

    // A stale version on each method: 409 with the current version, and
    // nothing changed, nobody notified.
    let v2 = c
        .ok(
            "state.patch",
            json!({"state": "cas.k", "patch": {"n": 2}, "if_version": v1}),
        )
        .await;
    assert_eq!(watcher.delta().await.0, v2);
    for (method, args) in [
        (
            "state.set",
            json!({"state": "cas.k", "value": 5, "if_version": v1}),
        ),
        (
            "state.patch",
            json!({"state": "cas.k", "patch": {"n": 5}, "if_version": v1}),
        ),
        (
            "state.set_in",
            json!({"state": "cas.k", "path": "/n", "value": 5, "if_version": v1}),
        ),
        ("state.delete", json!({"state": "cas.k", "if_version": v1})),
        (
            "state.presence",
            json!({"state": "cas.k", "path": "/p", "value": 5, "if_version": v1}),
        ),
    ] {
        let r = c.call(method, args).await;
        assert_eq!(conflict(&r), v2, "{method}");
    }
    watcher.expect_silence(QUIET).await;
    let snap = server.shared.store.snapshot("cas.k");
    assert_eq!((snap.version, snap.value), (v2, v(json!({"n": 2}))));
    assert_eq!(server.shared.store.presence_count(), 0);

    // The right version applies, on each method.
    let v3 = c
        .ok(
            "state.set_in",
            json!({"state": "cas.k", "path": "/m", "value": 3, "if_version": v2}),
        )
        .await;
    let v4 = c
        .ok(
            "state.presence",
            json!({"state": "cas.k", "path": "/p", "value": 1, "if_version": v3}),
        )
        .await;
    let v5 = c
        .ok("state.delete", json!({"state": "cas.k", "if_version": v4}))
        .await;
    assert!(v3 > v2 && v4 > v3 && v5 > v4);
    for expected in [v3, v4, v5] {
        assert_eq!(watcher.delta().await.0, expected);
    }

    // A deleted key is at its delete's version, and holds no value.
    let v6 = c
        .ok(
            "state.set",
            json!({"state": "cas.k", "value": 1, "if_version": v5}),
        )
        .await;
    c.ok("state.delete", json!({"state": "cas.k"})).await;
    let v8 = c
        .ok(
            "state.set",
            json!({"state": "cas.k", "value": null, "if_version": 0}),
        )
        .await;
    assert!(v8 > v6);
    // nil is a value.
    let r = c
        .call(
            "state.set",
            json!({"state": "cas.k", "value": 1, "if_version": 0}),
        )
        .await;
    assert_eq!(conflict(&r), v8);
}

#[tokio::test]
async fn a_never_written_key_is_at_version_zero() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let r = c
        .call(
            "state.set",
            json!({"state": "cas.none", "value": 1, "if_version": 7}),
        )
        .await;
    assert_eq!(conflict(&r), 0);
    assert_eq!(server.shared.store.key_count(), 0, "no slot left behind");
    let r = c
        .call(
            "state.delete",
            json!({"state": "cas.none", "if_version": 0}),
        )
        .await;
    assert_eq!(data(&r).get("version"), Some(&Value::Int(0)));
}

#[tokio::test]
async fn if_version_must_be_an_unsigned_integer() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for bad in [json!("1"), json!(-1), json!(1.5), json!(null)] {
        let r = c
            .call(
                "state.set",
                json!({"state": "cas.k", "value": 1, "if_version": bad}),
            )
            .await;
        assert_eq!(failure_code(&r), Some(400), "{bad}: {r:?}");
        assert!(message(&r).contains("`if_version`"), "{r:?}");
    }
    assert_eq!(server.shared.store.snapshot("cas.k").version, 0);
}
