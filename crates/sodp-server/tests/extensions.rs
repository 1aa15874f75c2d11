//! The extensions of the contract (docs/PROTOCOL.md, "Extensions"), each
//! rule checked over real WebSockets: `conditional`, `read`, `transaction`,
//! `idempotency`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use sodp_proto::{DeltaOp, Value};

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

// ---- read ----------------------------------------------------------------

fn temp_file(name: &str, content: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("extensions-{}-{name}", std::process::id()));
    std::fs::write(&path, content).unwrap();
    path
}

/// Anonymous sessions may read and write `public.*`, only write `hidden.*`.
const ACL: &str = r#"{
  "rules": [
    { "pattern": "public.*", "read": ["*"], "write": ["*"] },
    { "pattern": "hidden.*", "read": [], "write": ["*"] }
  ]
}"#;

async fn acl_server(name: &str) -> TestServer {
    let acl = temp_file(name, ACL);
    TestServer::with(move |config| config.security.acl_file = Some(acl)).await
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn read_is_advertised() {
    let server = TestServer::start().await;
    let c = server.client().await;
    assert_eq!(caps(&c).get("read"), Some(&Value::Bool(true)));
}

#[tokio::test]
async fn state_get_answers_version_value_and_initialized() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let r = c.call("state.get", json!({"state": "r.k"})).await;
    assert_eq!(
        data(&r),
        &v(json!({"version": 0, "value": null, "initialized": false}))
    );
    let v1 = c
        .ok("state.set", json!({"state": "r.k", "value": {"a": [1, 2]}}))
        .await;
    let r = c.call("state.get", json!({"state": "r.k"})).await;
    assert_eq!(
        data(&r),
        &v(json!({"version": v1, "value": {"a": [1, 2]}, "initialized": true}))
    );
    let v2 = c.ok("state.delete", json!({"state": "r.k"})).await;
    let r = c.call("state.get", json!({"state": "r.k"})).await;
    assert_eq!(
        data(&r),
        &v(json!({"version": v2, "value": null, "initialized": false}))
    );
    assert_eq!(server.shared.store.version(), v2, "reads take no version");
    let r = c.call("state.get", json!({"state": 5})).await;
    assert_eq!(failure_code(&r), Some(400));
    assert!(message(&r).contains("`state`"), "{r:?}");
    let r = c.call("state.get", json!({"state": "bad key!"})).await;
    assert_eq!(failure_code(&r), Some(400), "{r:?}");
}

#[tokio::test]
async fn reads_apply_the_acl() {
    let server = acl_server("read-acl.json").await;
    let mut c = server.client().await;
    c.ok("state.set", json!({"state": "hidden.a", "value": 1}))
        .await;
    c.ok("state.set", json!({"state": "public.a", "value": 1}))
        .await;
    c.ok("state.set", json!({"state": "public.b", "value": 2}))
        .await;
    c.ok("state.set", json!({"state": "hidden.b", "value": 1}))
        .await;
    for (method, args) in [
        ("state.get", json!({"state": "hidden.a"})),
        ("state.history", json!({"state": "hidden.a"})),
    ] {
        let r = c.call(method, args).await;
        assert_eq!(failure_code(&r), Some(403), "{method}: {r:?}");
    }
    let r = c.call("state.keys", json!({})).await;
    assert_eq!(
        strings(data(&r).get("keys").unwrap()),
        ["public.a", "public.b"]
    );
    assert_eq!(data(&r).get("next"), None);
    let r = c.call("state.keys", json!({"prefix": "hidden"})).await;
    assert!(strings(data(&r).get("keys").unwrap()).is_empty(), "{r:?}");
}

#[tokio::test]
async fn state_keys_pages_by_whole_segments_in_byte_order() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for key in [
        "a.b", "a.b.c", "a.b.a", "a.bc", "a.b-x", "a", "b.z", "a.b.d.e",
    ] {
        c.ok("state.set", json!({"state": key, "value": 1})).await;
    }
    c.ok("state.set", json!({"state": "a.b.gone", "value": 1}))
        .await;
    c.ok("state.delete", json!({"state": "a.b.gone"})).await;
    c.watch("a.b.watched").await; // a slot without a value

    let r = c.call("state.keys", json!({"prefix": "a.b"})).await;
    assert_eq!(
        strings(data(&r).get("keys").unwrap()),
        ["a.b", "a.b.a", "a.b.c", "a.b.d.e"]
    );
    assert_eq!(data(&r).get("next"), None);

    // Pages of 2: `next` is present exactly while more may follow.
    let r = c
        .call("state.keys", json!({"prefix": "a.b", "limit": 2}))
        .await;
    assert_eq!(strings(data(&r).get("keys").unwrap()), ["a.b", "a.b.a"]);
    let next = data(&r).get("next").unwrap().as_str().unwrap().to_owned();
    assert_eq!(next, "a.b.a");
    let r = c
        .call(
            "state.keys",
            json!({"prefix": "a.b", "limit": 2, "after": next}),
        )
        .await;
    assert_eq!(strings(data(&r).get("keys").unwrap()), ["a.b.c", "a.b.d.e"]);
    let next = data(&r).get("next").unwrap().as_str().unwrap().to_owned();
    let r = c
        .call(
            "state.keys",
            json!({"prefix": "a.b", "limit": 2, "after": next}),
        )
        .await;
    assert!(strings(data(&r).get("keys").unwrap()).is_empty());
    assert_eq!(data(&r).get("next"), None);

    // No prefix: every key holding a value.
    let r = c.call("state.keys", json!({"limit": 5000})).await;
    assert_eq!(
        strings(data(&r).get("keys").unwrap()),
        ["a", "a.b", "a.b-x", "a.b.a", "a.b.c", "a.b.d.e", "a.bc", "b.z"]
    );
    let r = c.call("state.keys", json!({"after": "a.bc"})).await;
    assert_eq!(strings(data(&r).get("keys").unwrap()), ["b.z"]);

    for (args, field) in [
        (json!({"limit": 0}), "`limit`"),
        (json!({"limit": "5"}), "`limit`"),
        (json!({"prefix": 3}), "`prefix`"),
        (json!({"prefix": "bad key!"}), "`prefix`"),
        (json!({"after": 3}), "`after`"),
    ] {
        let r = c.call("state.keys", args.clone()).await;
        assert_eq!(failure_code(&r), Some(400), "{args}: {r:?}");
        assert!(message(&r).contains(field), "{args}: {r:?}");
    }
}

#[tokio::test]
async fn state_keys_caps_a_page_at_1000() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for i in 0..1001 {
        c.ok(
            "state.set",
            json!({"state": format!("many.k{i:04}"), "value": i}),
        )
        .await;
    }
    let r = c.call("state.keys", json!({"limit": 5000})).await;
    let keys = strings(data(&r).get("keys").unwrap());
    assert_eq!(keys.len(), 1000);
    assert_eq!(keys.last().unwrap(), "many.k0999");
    assert_eq!(data(&r).get("next"), Some(&Value::from("many.k0999")));
    let r = c.call("state.keys", json!({})).await;
    assert_eq!(strings(data(&r).get("keys").unwrap()).len(), 100);
}

fn entries(r: &Value) -> Vec<(u64, Vec<DeltaOp>)> {
    data(r)
        .get("entries")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e.get("version").and_then(Value::as_u64).unwrap(),
                DeltaOp::list_from_value(e.get("ops").unwrap()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn state_history_pages_the_retained_changes() {
    let server = TestServer::with(|config| config.history_len = 3).await;
    let mut c = server.client().await;
    let r = c.call("state.history", json!({"state": "h.none"})).await;
    assert_eq!(data(&r), &v(json!({"entries": [], "complete": true})));

    let mut versions = Vec::new();
    for i in 0..3 {
        versions.push(
            c.ok("state.set", json!({"state": "h.k", "value": {"n": i}}))
                .await,
        );
    }
    let r = c.call("state.history", json!({"state": "h.k"})).await;
    assert_eq!(
        entries(&r),
        [
            (versions[0], vec![DeltaOp::add("/", v(json!({"n": 0})))]),
            (versions[1], vec![DeltaOp::update("/n", Value::Int(1))]),
            (versions[2], vec![DeltaOp::update("/n", Value::Int(2))]),
        ]
    );
    assert_eq!(data(&r).get("complete"), Some(&Value::Bool(true)));
    let r = c
        .call(
            "state.history",
            json!({"state": "h.k", "since_version": versions[0], "limit": 1}),
        )
        .await;
    assert_eq!(
        entries(&r),
        [(versions[1], vec![DeltaOp::update("/n", Value::Int(1))])]
    );
    assert_eq!(data(&r).get("complete"), Some(&Value::Bool(true)));

    // A fourth change pushes the first out: from 0 the history is no
    // longer complete; from the first version it still is.
    versions.push(
        c.ok("state.set", json!({"state": "h.k", "value": {"n": 3}}))
            .await,
    );
    let r = c.call("state.history", json!({"state": "h.k"})).await;
    assert_eq!(entries(&r).len(), 3);
    assert_eq!(entries(&r)[0].0, versions[1]);
    assert_eq!(data(&r).get("complete"), Some(&Value::Bool(false)));
    let r = c
        .call(
            "state.history",
            json!({"state": "h.k", "since_version": versions[0]}),
        )
        .await;
    assert_eq!(data(&r).get("complete"), Some(&Value::Bool(true)));

    for (args, field) in [
        (
            json!({"state": "h.k", "since_version": -1}),
            "`since_version`",
        ),
        (json!({"state": "h.k", "limit": 0}), "`limit`"),
        (json!({}), "`state`"),
    ] {
        let r = c.call("state.history", args.clone()).await;
        assert_eq!(failure_code(&r), Some(400), "{args}: {r:?}");
        assert!(message(&r).contains(field), "{args}: {r:?}");
    }
}
