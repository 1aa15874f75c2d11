//! The extensions of the contract (docs/PROTOCOL.md, "Extensions"), each
//! rule checked over real WebSockets: `conditional`, `read`, `transaction`,
//! `idempotency`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use sodp_proto::{DeltaOp, FrameType, Value};

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

// ---- transaction -----------------------------------------------------------

fn op(method: &str, args: serde_json::Value) -> serde_json::Value {
    json!({"method": method, "args": args})
}

/// Applies `ops` to `value` with the shared applier.
fn replay(value: &Value, ops: &[DeltaOp]) -> Value {
    sodp_proto::delta::apply(value, ops).unwrap()
}

#[tokio::test]
async fn transaction_is_advertised() {
    let server = TestServer::start().await;
    let c = server.client().await;
    assert_eq!(caps(&c).get("transaction"), Some(&Value::Bool(true)));
}

#[tokio::test]
async fn a_transaction_applies_every_op_with_one_version() {
    let server = TestServer::start().await;
    let mut watcher = server.client().await;
    let mut c = server.client().await;
    c.ok(
        "state.set",
        json!({"state": "tx.a", "value": {"n": 1, "keep": true}}),
    )
    .await;
    c.ok("state.set", json!({"state": "tx.same", "value": 7}))
        .await;
    let a0 = v(json!({"n": 1, "keep": true}));
    // A live DELTA names its key by stream only: map them from STATE_INIT.
    let mut keys = std::collections::HashMap::new();
    for key in ["tx.a", "tx.b", "tx.same"] {
        keys.insert(watcher.watch(key).await.stream_id, key);
    }
    let r = c
        .call(
            "state.transaction",
            json!({"ops": [
                op("state.patch", json!({"state": "tx.a", "patch": {"n": 2}})),
                op("state.set", json!({"state": "tx.b", "value": {"list": []}})),
                op("state.set_in", json!({"state": "tx.b", "path": "/list/-", "value": "x"})),
                op("state.set_in", json!({"state": "tx.a", "path": "/m", "value": 3})),
                op("state.set", json!({"state": "tx.same", "value": 7})),
            ]}),
        )
        .await;
    let version = data(&r).get("version").and_then(Value::as_u64).unwrap();

    // Back to back, in key order, one version; the unchanged key gets none.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let f = watcher.recv().await;
        assert_eq!(f.kind, FrameType::Delta, "{f:?}");
        let ops = DeltaOp::list_from_value(f.body.get("ops").unwrap()).unwrap();
        assert_eq!(f.body.get("state"), None, "{f:?}");
        seen.push((
            keys[&f.stream_id].to_owned(),
            f.body.get("version").and_then(Value::as_u64).unwrap(),
            ops,
        ));
    }
    watcher.expect_silence(QUIET).await;
    assert_eq!(seen[0].0, "tx.a");
    assert_eq!(seen[1].0, "tx.b");
    assert!(seen.iter().all(|(_, ver, _)| *ver == version));
    let a1 = replay(&a0, &seen[0].2);
    assert_eq!(a1, v(json!({"n": 2, "keep": true, "m": 3})));
    let b1 = replay(&Value::Nil, &seen[1].2);
    assert_eq!(b1, v(json!({"list": ["x"]})));
    let store = &server.shared.store;
    assert_eq!(store.snapshot("tx.a").value, a1);
    assert_eq!(store.snapshot("tx.a").version, version);
    assert_eq!(store.snapshot("tx.b").value, b1);
    assert_eq!(
        store.version(),
        version,
        "one version for the whole transaction"
    );

    // A delete in a transaction, and history of both keys at the version.
    let r = c
        .call(
            "state.transaction",
            json!({"ops": [
                op("state.delete", json!({"state": "tx.b"})),
                op("state.patch", json!({"state": "tx.a", "patch": {"n": 3}})),
            ]}),
        )
        .await;
    let v2 = data(&r).get("version").and_then(Value::as_u64).unwrap();
    assert_eq!(
        watcher.delta().await,
        (v2, vec![DeltaOp::update("/n", Value::Int(3))])
    );
    assert_eq!(watcher.delta().await, (v2, vec![DeltaOp::remove("/")]));
    assert!(!store.snapshot("tx.b").initialized);
}

#[tokio::test]
async fn one_failed_condition_applies_nothing() {
    let server = TestServer::start().await;
    let mut watcher = server.client().await;
    let mut c = server.client().await;
    let va = c
        .ok("state.set", json!({"state": "tx.a", "value": 1}))
        .await;
    let vb = c
        .ok("state.set", json!({"state": "tx.b", "value": 1}))
        .await;
    watcher.watch("tx.a").await;
    watcher.watch("tx.b").await;
    let r = c
        .call(
            "state.transaction",
            json!({"ops": [
                op("state.set", json!({"state": "tx.a", "value": 2, "if_version": va})),
                op("state.set", json!({"state": "tx.c", "value": 2})),
                op("state.set", json!({"state": "tx.b", "value": 2, "if_version": va})),
            ]}),
        )
        .await;
    assert_eq!(conflict(&r), vb);
    assert_eq!(r.get("op"), Some(&Value::Int(2)));
    watcher.expect_silence(QUIET).await;
    let store = &server.shared.store;
    assert_eq!(store.version(), vb, "no version taken");
    assert_eq!(store.snapshot("tx.a").value, Value::Int(1));
    assert_eq!(store.snapshot("tx.c").version, 0);

    // Conditions are all compared with the state before the transaction.
    let r = c
        .call(
            "state.transaction",
            json!({"ops": [
                op("state.set", json!({"state": "tx.new", "value": {"a": 1}, "if_version": 0})),
                op("state.patch", json!({"state": "tx.new", "patch": {"b": 2}, "if_version": 0})),
                op("state.delete", json!({"state": "tx.a", "if_version": va})),
            ]}),
        )
        .await;
    let v = data(&r).get("version").and_then(Value::as_u64).unwrap();
    assert_eq!(
        store.snapshot("tx.new").value,
        common::v(json!({"a": 1, "b": 2}))
    );
    assert_eq!(store.snapshot("tx.a").version, v);
}

#[tokio::test]
async fn transaction_arguments_are_checked_before_anything_changes() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let start = server.shared.store.version();
    let set = |key: &str| op("state.set", json!({"state": key, "value": 1}));
    let too_many: Vec<_> = (0..65).map(|i| set(&format!("tx.k{i}"))).collect();
    let just_enough: Vec<_> = (0..64).map(|i| set(&format!("tx.k{i}"))).collect();
    for (ops, needle, at) in [
        (json!([]), "1 to 64", None),
        (json!(too_many), "1 to 64", None),
        (json!("x"), "`ops`", None),
        (
            json!([
                set("tx.a"),
                op(
                    "state.presence",
                    json!({"state": "tx.a", "path": "/p", "value": 1})
                )
            ]),
            "cannot be part",
            Some(1),
        ),
        (
            json!([op("state.transaction", json!({"ops": [set("tx.a")]}))]),
            "cannot be part",
            Some(0),
        ),
        (
            json!([op("state.nope", json!({}))]),
            "cannot be part",
            Some(0),
        ),
        (json!([set("tx.a"), json!(5)]), "ops[1]", Some(1)),
        (
            json!([set("tx.a"), json!({"args": {}})]),
            "`method`",
            Some(1),
        ),
        (
            json!([json!({"method": "state.set", "args": 3})]),
            "`args`",
            Some(0),
        ),
        (
            json!([set("tx.a"), op("state.set", json!({"state": "tx.b"}))]),
            "missing argument `value`",
            Some(1),
        ),
        (
            json!([op(
                "state.set",
                json!({"state": "tx.b", "value": 1, "if_version": "3"})
            )]),
            "`if_version`",
            Some(0),
        ),
        (json!([set("tx.a"), set("bad key!")]), "bad key", Some(1)),
        (
            json!([
                set("tx.a"),
                op(
                    "state.set_in",
                    json!({"state": "tx.a", "path": "no-slash", "value": 1})
                )
            ]),
            "ops[1]",
            Some(1),
        ),
    ] {
        let r = c.call("state.transaction", json!({"ops": ops})).await;
        assert_eq!(failure_code(&r), Some(400), "{needle}: {r:?}");
        assert!(message(&r).contains(needle), "{needle}: {r:?}");
        assert_eq!(
            r.get("op").and_then(Value::as_u64),
            at.map(|i| i as u64),
            "{needle}"
        );
    }
    assert_eq!(server.shared.store.version(), start, "nothing was applied");
    assert_eq!(server.shared.store.key_count(), 0, "no slot left behind");
    let r = c
        .call("state.transaction", json!({"ops": just_enough}))
        .await;
    assert!(data(&r).get("version").is_some());
    assert_eq!(server.shared.store.key_count(), 64);
}

#[tokio::test]
async fn transactions_apply_the_acl_to_every_key() {
    let acl = temp_file(
        "tx-acl.json",
        r#"{"rules": [{ "pattern": "public.*", "read": ["*"], "write": ["*"] },
                      { "pattern": "ro.*", "read": ["*"] }]}"#,
    );
    let server = TestServer::with(move |config| config.security.acl_file = Some(acl)).await;
    let mut c = server.client().await;
    let start = server.shared.store.version();
    let r = c
        .call(
            "state.transaction",
            json!({"ops": [
                op("state.set", json!({"state": "public.a", "value": 1})),
                op("state.set", json!({"state": "ro.a", "value": 1})),
            ]}),
        )
        .await;
    assert_eq!(failure_code(&r), Some(403), "{r:?}");
    assert_eq!(r.get("op"), Some(&Value::Int(1)));
    assert_eq!(server.shared.store.version(), start);
}

#[tokio::test]
async fn transactions_check_the_schema_on_final_values_and_the_size_limit() {
    let schema = temp_file("tx-schema.json", r#"{"t.int": "Int"}"#);
    let server = TestServer::with(move |config| {
        config.security.schema_file = Some(schema);
        config.limits.max_value_bytes = Some(100);
    })
    .await;
    let mut c = server.client().await;
    // An intermediate value is not checked, the final one is.
    let r = c
        .call(
            "state.transaction",
            json!({"ops": [
                op("state.set", json!({"state": "t.int", "value": "not yet"})),
                op("state.set", json!({"state": "t.int", "value": 5})),
            ]}),
        )
        .await;
    assert!(data(&r).get("version").is_some(), "{r:?}");
    let r = c
        .call(
            "state.transaction",
            json!({"ops": [
                op("state.set", json!({"state": "other", "value": 1})),
                op("state.set", json!({"state": "t.int", "value": "no"})),
            ]}),
        )
        .await;
    assert_eq!(failure_code(&r), Some(422), "{r:?}");
    let store = &server.shared.store;
    assert_eq!(store.snapshot("t.int").value, Value::Int(5));
    assert_eq!(store.snapshot("other").version, 0);
    // The size limit applies to each op as it would alone.
    let r = c
        .call(
            "state.transaction",
            json!({"ops": [
                op("state.set", json!({"state": "other", "value": 1})),
                op("state.set", json!({"state": "big", "value": "x".repeat(200)})),
            ]}),
        )
        .await;
    assert_eq!(failure_code(&r), Some(400), "{r:?}");
    assert_eq!(r.get("op"), Some(&Value::Int(1)));
    assert_eq!(store.snapshot("other").version, 0);
}

/// Several clients move units between two counters with conditional
/// transactions, retrying on 409, each listing the keys in its own order:
/// the totals are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conditional_transactions_keep_exact_totals() {
    const CLIENTS: usize = 4;
    const ROUNDS: i64 = 15;
    let server = TestServer::start().await;
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        let url = server.url();
        tasks.push(tokio::spawn(async move {
            let mut c = TestClient::connect(&url).await;
            let mut conflicts = 0;
            for _ in 0..ROUNDS {
                loop {
                    let a = c.call("state.get", json!({"state": "sum.a"})).await;
                    let b = c.call("state.get", json!({"state": "sum.b"})).await;
                    let (a, b) = (data(&a).clone(), data(&b).clone());
                    let count = |d: &Value| d.get("value").and_then(Value::as_i64).unwrap_or(0);
                    let version = |d: &Value| d.get("version").and_then(Value::as_u64).unwrap();
                    let mut ops = vec![
                        op("state.set", json!({"state": "sum.a", "value": count(&a) + 1, "if_version": version(&a)})),
                        op("state.set", json!({"state": "sum.b", "value": count(&b) + 2, "if_version": version(&b)})),
                    ];
                    if n % 2 == 1 {
                        ops.reverse();
                    }
                    let r = c.call("state.transaction", json!({"ops": ops})).await;
                    match failure_code(&r) {
                        None => break,
                        Some(409) => conflicts += 1,
                        Some(code) => panic!("unexpected {code}: {r:?}"),
                    }
                }
            }
            conflicts
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("stuck")
            .unwrap();
    }
    let store = &server.shared.store;
    let total = CLIENTS as i64 * ROUNDS;
    assert_eq!(store.snapshot("sum.a").value, Value::Int(total));
    assert_eq!(store.snapshot("sum.b").value, Value::Int(2 * total));
    assert_eq!(
        store.snapshot("sum.a").version,
        store.snapshot("sum.b").version
    );
}

// ---- idempotency -----------------------------------------------------------

/// A CALL with `idempotency_key` in its body; returns its RESULT body.
async fn call_once(
    c: &mut TestClient,
    call_id: &str,
    method: &str,
    args: serde_json::Value,
    key: Value,
) -> Value {
    let body = Value::map_from([
        ("call_id", Value::from(call_id)),
        ("method", Value::from(method)),
        ("args", v(args)),
        ("idempotency_key", key),
    ]);
    c.send(FrameType::Call, 0, body).await;
    loop {
        let f = c.recv().await;
        if f.kind == FrameType::Result {
            assert_eq!(f.body.get("call_id"), Some(&Value::from(call_id)));
            return f.body;
        }
    }
}

fn version_of(r: &Value) -> u64 {
    data(r).get("version").and_then(Value::as_u64).unwrap()
}

#[tokio::test]
async fn idempotency_is_advertised_with_its_window() {
    let server = TestServer::start().await;
    let c = server.client().await;
    assert_eq!(caps(&c).get("idempotency"), Some(&Value::Bool(true)));
    assert_eq!(
        caps(&c).get("idempotency_window_ms"),
        Some(&Value::Int(600_000))
    );
    assert_eq!(
        caps(&c).get("idempotency_max_keys"),
        Some(&Value::Int(10_000))
    );
    let server = TestServer::with(|config| {
        config.idempotency_window = Duration::from_millis(1500);
        config.idempotency_max_keys = 7;
    })
    .await;
    let c = server.client().await;
    assert_eq!(
        caps(&c).get("idempotency_window_ms"),
        Some(&Value::Int(1500))
    );
    assert_eq!(caps(&c).get("idempotency_max_keys"), Some(&Value::Int(7)));
}

#[tokio::test]
async fn a_repeated_idempotent_write_gets_the_original_result_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut watcher = server.client().await;
    watcher.watch("idem.k").await;
    let mut c = server.client().await;
    let key = Value::from("write-1");
    let args = json!({"state": "idem.k", "patch": {"n": 1}});
    let first = call_once(&mut c, "a", "state.patch", args.clone(), key.clone()).await;
    let version = version_of(&first);
    assert_eq!(watcher.delta().await.0, version);

    // Same call again, even from a new connection (the same identity).
    let repeat = call_once(&mut c, "b", "state.patch", args.clone(), key.clone()).await;
    assert_eq!(version_of(&repeat), version);
    drop(c);
    let mut again = server.client().await;
    let repeat = call_once(&mut again, "c", "state.patch", args.clone(), key.clone()).await;
    assert_eq!(version_of(&repeat), version);
    watcher.expect_silence(QUIET).await;
    assert_eq!(server.shared.store.version(), version);

    // The key with other content: 409, nothing changed.
    let other = json!({"state": "idem.k", "patch": {"n": 2}});
    let r = call_once(&mut again, "d", "state.patch", other, key.clone()).await;
    assert_eq!(failure_code(&r), Some(409), "{r:?}");
    assert!(message(&r).contains("idempotency key reused"), "{r:?}");
    let r = call_once(
        &mut again,
        "e",
        "state.set",
        json!({"state": "idem.k", "patch": {"n": 1}}),
        key,
    )
    .await;
    assert_eq!(failure_code(&r), Some(409), "another method: {r:?}");
    watcher.expect_silence(QUIET).await;
    assert_eq!(
        server.shared.store.snapshot("idem.k").value,
        v(json!({"n": 1}))
    );

    // A transaction replays the same way.
    let tx = json!({"ops": [
        op("state.set", json!({"state": "idem.a", "value": 1})),
        op("state.set", json!({"state": "idem.b", "value": 1})),
    ]});
    let first = call_once(
        &mut again,
        "f",
        "state.transaction",
        tx.clone(),
        Value::from("tx"),
    )
    .await;
    let repeat = call_once(&mut again, "g", "state.transaction", tx, Value::from("tx")).await;
    assert_eq!(version_of(&first), version_of(&repeat));
    assert_eq!(server.shared.store.version(), version_of(&first));
}

#[tokio::test]
async fn failed_idempotent_calls_are_not_remembered() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.ok("state.set", json!({"state": "idem.k", "value": 1}))
        .await;
    let args = json!({"state": "idem.k", "value": 2, "if_version": 0});
    let key = Value::from("retry-me");
    let r = call_once(&mut c, "a", "state.set", args.clone(), key.clone()).await;
    assert_eq!(failure_code(&r), Some(409));
    c.ok("state.delete", json!({"state": "idem.k"})).await;
    let r = call_once(&mut c, "b", "state.set", args, key).await;
    let version = version_of(&r);
    assert_eq!(server.shared.store.snapshot("idem.k").version, version);
    assert_eq!(server.shared.store.idempotency.len(), 1);
}

#[tokio::test]
async fn idempotency_keys_are_checked() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let args = json!({"state": "idem.k", "value": 1});
    for bad in [Value::from(""), Value::from("x".repeat(129)), Value::Int(5)] {
        let r = call_once(&mut c, "bad", "state.set", args.clone(), bad.clone()).await;
        assert_eq!(failure_code(&r), Some(400), "{bad:?}: {r:?}");
        assert!(message(&r).contains("`idempotency_key`"), "{r:?}");
    }
    assert_eq!(server.shared.store.snapshot("idem.k").version, 0);
    let r = call_once(&mut c, "ok", "state.set", args, Value::from("é".repeat(64))).await;
    assert!(version_of(&r) > 0, "128 bytes of UTF-8 is fine");
}

/// Remembered outcomes are memory the server holds: counted in
/// `--max-memory`; on a full server an identity recycles its own oldest
/// records, and one with none to recycle is refused (507), nothing changed.
#[tokio::test]
async fn remembered_outcomes_count_against_the_memory_budget() {
    let server = TestServer::with(|config| {
        config.limits.max_memory = 64 * 1024;
        config.idempotency_max_keys = 1_000_000;
    })
    .await;
    let store = &server.shared.store;
    let mut c = server.client().await;
    c.ok("state.set", json!({"state": "idem.k", "value": 0}))
        .await;
    let args = |n: i64| json!({"state": "idem.k", "value": n});
    let key = |n: i64| Value::from(format!("key-{n:06}"));
    // Fill the budget with values.
    let chunk = "x".repeat(1000);
    let mut fills = 0;
    loop {
        let r = c
            .call(
                "state.set",
                json!({"state": format!("fill.{fills}"), "value": chunk}),
            )
            .await;
        if failure_code(&r) == Some(507) {
            break;
        }
        fills += 1;
    }
    // And the last bytes, by growing one value in smaller and smaller steps.
    let mut pad = chunk.clone();
    for step in [256, 64, 16, 4, 1] {
        loop {
            let longer = format!("{pad}{}", "x".repeat(step));
            let r = c
                .call("state.set", json!({"state": "fill.0", "value": longer}))
                .await;
            if failure_code(&r) == Some(507) {
                break;
            }
            pad = longer;
        }
    }
    let r = call_once(&mut c, "a", "state.set", args(1), key(1)).await;
    assert_eq!(failure_code(&r), Some(507), "no room for the record: {r:?}");
    assert_eq!(
        store.snapshot("idem.k").value,
        Value::Int(0),
        "nothing changed"
    );
    assert!(store.idempotency.is_empty());
    // Room again: each record is counted.
    c.ok("state.delete", json!({"state": "fill.0"})).await;
    let before = store.memory().counted;
    version_of(&call_once(&mut c, "b", "state.set", args(1), key(1)).await);
    assert_eq!(
        store.memory().counted - before,
        sodp_server::idempotency::record_cost("key-000001")
    );
    // Many more: the identity recycles its own records within the budget.
    for n in 2..200 {
        version_of(&call_once(&mut c, "c", "state.set", args(n % 2), key(n)).await);
        let m = store.memory();
        assert!(m.counted <= m.max, "{m:?}");
    }
    let kept = store.idempotency.len();
    assert!((1..199).contains(&kept), "recycled, not grown: {kept}");
}

#[tokio::test]
async fn remembered_outcomes_are_bounded_in_time_and_count() {
    let server = TestServer::with(|config| {
        config.idempotency_window = Duration::from_millis(300);
        config.idempotency_max_keys = 2;
    })
    .await;
    let mut c = server.client().await;
    let args = |n: i64| json!({"state": "idem.k", "value": n});
    let mut versions = Vec::new();
    for (n, key) in ["k1", "k2", "k3"].iter().enumerate() {
        let r = call_once(&mut c, key, "state.set", args(n as i64), Value::from(*key)).await;
        versions.push(version_of(&r));
    }
    // k1 was the oldest of three with room for two: forgotten, so it
    // applies again; k3 is remembered.
    let r = call_once(&mut c, "x", "state.set", args(2), Value::from("k3")).await;
    assert_eq!(version_of(&r), versions[2]);
    let r = call_once(&mut c, "y", "state.set", args(0), Value::from("k1")).await;
    assert!(version_of(&r) > versions[2], "{r:?}");
    // Past the window, nothing is remembered.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = call_once(&mut c, "z", "state.set", args(2), Value::from("k3")).await;
    assert!(version_of(&r) > versions[2]);
}

/// The same idempotent write sent at once from several connections is
/// applied once, and every sender gets that one version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_duplicates_are_applied_once() {
    let server = TestServer::start().await;
    let start = server.shared.store.version();
    for round in 0..20 {
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(server.client().await);
        }
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut c| {
                tokio::spawn(async move {
                    let args = json!({"state": "idem.count", "patch": {format!("r{round}"): true}});
                    let r = call_once(
                        &mut c,
                        "x",
                        "state.patch",
                        args,
                        Value::from(format!("dup-{round}")),
                    )
                    .await;
                    version_of(&r)
                })
            })
            .collect();
        let mut versions = Vec::new();
        for t in tasks {
            versions.push(t.await.unwrap());
        }
        assert!(versions.windows(2).all(|w| w[0] == w[1]), "{versions:?}");
    }
    assert_eq!(
        server.shared.store.version(),
        start + 20,
        "one change per round"
    );
}

// ---- prefix_watch ----------------------------------------------------------

async fn watch_raw(c: &mut TestClient, state: &str) -> sodp_proto::Frame {
    c.send(FrameType::Watch, 10, v(json!({"state": state})))
        .await;
    c.recv().await
}

/// The next DELTA applied to `map`; returns its version.
async fn apply_next(c: &mut TestClient, pattern: &str, map: &mut Value) -> u64 {
    let f = c.recv().await;
    assert_eq!(f.kind, FrameType::Delta, "{f:?}");
    assert_eq!(f.body.get("state"), Some(&Value::from(pattern)));
    let ops = DeltaOp::list_from_value(f.body.get("ops").unwrap()).unwrap();
    *map = replay(map, &ops);
    f.body.get("version").and_then(Value::as_u64).unwrap()
}

#[tokio::test]
async fn prefix_watch_is_advertised() {
    let server = TestServer::start().await;
    let c = server.client().await;
    assert_eq!(caps(&c).get("prefix_watch"), Some(&Value::Bool(true)));
}

#[tokio::test]
async fn a_pattern_watcher_sees_the_map_of_its_keys() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = server.client().await;
    c.ok(
        "state.set",
        json!({"state": "game.players.alice", "value": {"hp": 10}}),
    )
    .await;
    c.ok(
        "state.set",
        json!({"state": "game.players", "value": "not below"}),
    )
    .await;
    c.ok("state.set", json!({"state": "game.playersX", "value": 1}))
        .await;
    let vb = c
        .ok(
            "state.set",
            json!({"state": "game.players.bob.deep", "value": 2}),
        )
        .await;
    c.ok(
        "state.set",
        json!({"state": "game.players.gone", "value": 1}),
    )
    .await;
    let vg = c
        .ok("state.delete", json!({"state": "game.players.gone"}))
        .await;

    let init = watch_raw(&mut w, "game.players.*").await;
    assert_eq!(init.kind, FrameType::StateInit, "{init:?}");
    assert_eq!(init.body.get("state"), Some(&Value::from("game.players.*")));
    assert_eq!(init.body.get("initialized"), Some(&Value::Bool(true)));
    let v0 = init.body.get("version").and_then(Value::as_u64).unwrap();
    assert_eq!(v0, vb.max(vg));
    let mut map = init.body.get("value").unwrap().clone();
    assert_eq!(
        map,
        v(json!({"game.players.alice": {"hp": 10}, "game.players.bob.deep": 2}))
    );

    // A new key is ADD /<key>, a change is below it, a delete REMOVE.
    let v1 = c
        .ok(
            "state.set",
            json!({"state": "game.players.carol", "value": {"hp": 5}}),
        )
        .await;
    let v2 = c
        .ok(
            "state.patch",
            json!({"state": "game.players.alice", "patch": {"hp": 9}}),
        )
        .await;
    let v3 = c
        .ok("state.delete", json!({"state": "game.players.bob.deep"}))
        .await;
    c.ok("state.set", json!({"state": "game.playersX", "value": 2}))
        .await;
    c.ok("state.set", json!({"state": "game.players", "value": 2}))
        .await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(apply_next(&mut w, "game.players.*", &mut map).await);
    }
    assert_eq!(seen, [v1, v2, v3]);
    assert!(v1 > v0);
    w.expect_silence(QUIET).await;
    assert_eq!(
        map,
        v(json!({"game.players.alice": {"hp": 9}, "game.players.carol": {"hp": 5}}))
    );

    // UNWATCH ends it.
    w.send(FrameType::Unwatch, 0, v(json!({"state": "game.players.*"})))
        .await;
    tokio::time::sleep(QUIET).await;
    c.ok(
        "state.set",
        json!({"state": "game.players.dave", "value": 1}),
    )
    .await;
    w.expect_silence(QUIET).await;
}

#[tokio::test]
async fn the_star_pattern_watches_every_key_and_bad_patterns_are_400() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = server.client().await;
    c.ok("state.set", json!({"state": "a", "value": 1})).await;
    let init = watch_raw(&mut w, "*").await;
    let mut map = init.body.get("value").unwrap().clone();
    assert_eq!(map, v(json!({"a": 1})));
    c.ok("state.set", json!({"state": "b.c", "value": [1]}))
        .await;
    apply_next(&mut w, "*", &mut map).await;
    assert_eq!(map, v(json!({"a": 1, "b.c": [1]})));
    for bad in ["a*", "a.*.b", ".*", "**", "a.b*"] {
        let f = watch_raw(&mut w, bad).await;
        assert_eq!(f.kind, FrameType::Error, "{bad}: {f:?}");
        assert_eq!(f.body.get("code"), Some(&Value::Int(400)), "{bad}");
    }
}

#[tokio::test]
async fn pattern_watchers_never_see_keys_the_acl_hides() {
    let server = acl_server("pattern-acl.json").await;
    let mut c = server.client().await;
    let mut w = server.client().await;
    c.ok("state.set", json!({"state": "hidden.x", "value": 1}))
        .await;
    c.ok("state.set", json!({"state": "public.x", "value": 1}))
        .await;
    let init = watch_raw(&mut w, "*").await;
    let mut map = init.body.get("value").unwrap().clone();
    assert_eq!(map, v(json!({"public.x": 1})));
    c.ok("state.set", json!({"state": "hidden.y", "value": 1}))
        .await;
    c.ok("state.set", json!({"state": "public.y", "value": 2}))
        .await;
    apply_next(&mut w, "*", &mut map).await;
    w.expect_silence(QUIET).await;
    assert_eq!(map, v(json!({"public.x": 1, "public.y": 2})));
    let init = watch_raw(&mut w, "hidden.*").await;
    assert_eq!(init.body.get("value"), Some(&v(json!({}))));
}

#[tokio::test]
async fn resume_on_a_pattern_replays_then_marks_live() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = server.client().await;
    c.ok("state.set", json!({"state": "r.a", "value": 1})).await;
    let init = watch_raw(&mut w, "r.*").await;
    let since = init.body.get("version").and_then(Value::as_u64).unwrap();
    let mut map = init.body.get("value").unwrap().clone();
    drop(w);
    let v1 = c.ok("state.set", json!({"state": "r.b", "value": 2})).await;
    let v2 = c.ok("state.delete", json!({"state": "r.a"})).await;
    let v3 = c
        .ok("state.patch", json!({"state": "r.b", "patch": {"x": 1}}))
        .await;
    let mut w = server.client().await;
    w.send(
        FrameType::Resume,
        10,
        v(json!({"state": "r.*", "since_version": since})),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(apply_next(&mut w, "r.*", &mut map).await);
    }
    assert_eq!(seen, [v1, v2, v3]);
    let init = w.recv().await;
    assert_eq!(init.kind, FrameType::StateInit, "{init:?}");
    assert_eq!(init.body.get("version").and_then(Value::as_u64), Some(v3));
    assert_eq!(
        init.body.get("value"),
        Some(&map),
        "the replay reaches the snapshot"
    );
    assert_eq!(map, v(json!({"r.b": {"x": 1}})));
}

#[tokio::test]
async fn resume_on_a_pattern_without_the_history_is_state_init_alone() {
    let server = TestServer::with(|config| config.history_len = 1).await;
    let mut c = server.client().await;
    let v0 = c.ok("state.set", json!({"state": "r.a", "value": 1})).await;
    c.ok("state.set", json!({"state": "r.a", "value": 2})).await;
    c.ok("state.set", json!({"state": "r.a", "value": 3})).await;
    let mut w = server.client().await;
    w.send(
        FrameType::Resume,
        10,
        v(json!({"state": "r.*", "since_version": v0})),
    )
    .await;
    let init = w.recv().await;
    assert_eq!(init.kind, FrameType::StateInit, "{init:?}");
    assert_eq!(init.body.get("value"), Some(&v(json!({"r.a": 3}))));
}

#[tokio::test]
async fn a_pattern_snapshot_over_the_value_limit_is_413() {
    let server = TestServer::with(|config| config.limits.max_value_bytes = Some(100)).await;
    let mut c = server.client().await;
    for i in 0..3 {
        c.ok(
            "state.set",
            json!({"state": format!("big.k{i}"), "value": "x".repeat(60)}),
        )
        .await;
    }
    let mut w = server.client().await;
    let f = watch_raw(&mut w, "big.*").await;
    assert_eq!(f.kind, FrameType::Error, "{f:?}");
    assert_eq!(f.body.get("code"), Some(&Value::Int(413)));
    // Nothing was subscribed.
    c.ok("state.set", json!({"state": "big.k0", "value": 1}))
        .await;
    w.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_transaction_sends_one_pattern_delta_per_changed_key() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = server.client().await;
    let init = watch_raw(&mut w, "t.*").await;
    let mut map = init.body.get("value").unwrap().clone();
    let r = c
        .call(
            "state.transaction",
            json!({"ops": [
                op("state.set", json!({"state": "t.a", "value": 1})),
                op("state.set", json!({"state": "t.b", "value": 2})),
                op("state.set", json!({"state": "u.c", "value": 3})),
            ]}),
        )
        .await;
    let version = version_of(&r);
    assert_eq!(apply_next(&mut w, "t.*", &mut map).await, version);
    assert_eq!(apply_next(&mut w, "t.*", &mut map).await, version);
    w.expect_silence(QUIET).await;
    assert_eq!(map, v(json!({"t.a": 1, "t.b": 2})));
}

/// Writers hammer keys below a pattern while watchers subscribe: each
/// watcher's snapshot plus its DELTAs ends at the server's final map, with
/// versions strictly increasing and above the snapshot's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_snapshots_are_consistent_under_concurrent_writes() {
    let server = TestServer::start().await;
    let url = server.url();
    let writers: Vec<_> = (0..2)
        .map(|n| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut c = TestClient::connect(&url).await;
                for i in 0..60 {
                    let key = format!("s.k{}", (i * 7 + n) % 5);
                    c.ok(
                        "state.patch",
                        json!({"state": key, "patch": {format!("w{n}"): i}}),
                    )
                    .await;
                }
            })
        })
        .collect();
    let mut watchers = Vec::new();
    for _ in 0..4 {
        let mut w = server.client().await;
        let init = watch_raw(&mut w, "s.*").await;
        assert_eq!(init.kind, FrameType::StateInit);
        watchers.push((w, init));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in writers {
        t.await.unwrap();
    }
    let mut last_map = None;
    for (mut w, init) in watchers {
        let mut version = init.body.get("version").and_then(Value::as_u64).unwrap();
        let mut map = init.body.get("value").unwrap().clone();
        loop {
            match tokio::time::timeout(QUIET, w.recv()).await {
                Err(_) => break,
                Ok(f) => {
                    assert_eq!(f.kind, FrameType::Delta, "{f:?}");
                    let v = f.body.get("version").and_then(Value::as_u64).unwrap();
                    assert!(v > version, "{v} after {version}");
                    version = v;
                    let ops = DeltaOp::list_from_value(f.body.get("ops").unwrap()).unwrap();
                    map = replay(&map, &ops);
                }
            }
        }
        if let Some(last) = &last_map {
            assert_eq!(&map, last);
        }
        last_map = Some(map);
    }
    let mut expected = sodp_proto::Map::default();
    for i in 0..5 {
        let key = format!("s.k{i}");
        let snap = server.shared.store.snapshot(&key);
        if snap.initialized {
            expected.insert(key, snap.value);
        }
    }
    assert_eq!(last_map.unwrap(), Value::from(expected));
}

// ---- ttl -------------------------------------------------------------------

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn expires_at(f: &sodp_proto::Frame) -> Option<u64> {
    f.body.get("expires_at").and_then(Value::as_u64)
}

#[tokio::test]
async fn ttl_is_advertised_with_and_without_a_data_directory() {
    let server = TestServer::start().await;
    let c = server.client().await;
    assert_eq!(caps(&c).get("ttl"), Some(&Value::Bool(true)));
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("extensions-ttl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let durable = dir.clone();
    let server = TestServer::with(move |config| {
        config.storage = Some(sodp_server::config::StorageConfig::new(durable));
    })
    .await;
    let mut c = server.client().await;
    assert_eq!(caps(&c).get("ttl"), Some(&Value::Bool(true)));
    c.ok(
        "state.set",
        json!({"state": "t.k", "value": 1, "ttl_ms": 60_000}),
    )
    .await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_key_expires_as_a_versioned_delete_near_its_deadline() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = server.client().await;
    w.watch("ttl.k").await;
    let before = unix_ms();
    let v1 = c
        .ok(
            "state.set",
            json!({"state": "ttl.k", "value": {"a": 1}, "ttl_ms": 300}),
        )
        .await;
    let f = w.recv().await;
    assert_eq!(f.kind, FrameType::Delta);
    let deadline = expires_at(&f).expect("the DELTA says the deadline");
    assert!(
        deadline >= before + 300 && deadline <= unix_ms() + 300,
        "{deadline}"
    );
    // A later watcher's STATE_INIT carries it.
    let mut late = server.client().await;
    let init = late.watch("ttl.k").await;
    assert_eq!(expires_at(&init), Some(deadline));
    // A write without ttl_ms keeps the deadline (and says nothing of it).
    let v2 = c
        .ok("state.patch", json!({"state": "ttl.k", "patch": {"b": 2}}))
        .await;
    let f = w.recv().await;
    assert_eq!(f.body.get("version").and_then(Value::as_u64), Some(v2));
    assert_eq!(expires_at(&f), None);

    let f = w.recv().await;
    let seen_at = unix_ms();
    assert_eq!(f.kind, FrameType::Delta, "{f:?}");
    let ops = DeltaOp::list_from_value(f.body.get("ops").unwrap()).unwrap();
    assert_eq!(ops, vec![DeltaOp::remove("/")]);
    let v3 = f.body.get("version").and_then(Value::as_u64).unwrap();
    assert!(v3 > v2 && v2 > v1);
    assert!(seen_at >= deadline, "not before the deadline");
    assert!(seen_at <= deadline + 150, "{} ms late", seen_at - deadline);
    let snap = server.shared.store.snapshot("ttl.k");
    assert!(!snap.initialized);
    assert_eq!(snap.version, v3);
    assert!(server.shared.store.timers().is_empty());
    let r = c
        .call(
            "state.history",
            json!({"state": "ttl.k", "since_version": v2}),
        )
        .await;
    assert_eq!(entries(&r), [(v3, vec![DeltaOp::remove("/")])]);
}

#[tokio::test]
async fn renewing_postpones_and_zero_or_delete_removes_the_deadline() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = server.client().await;
    w.watch("ttl.r").await;
    c.ok(
        "state.set",
        json!({"state": "ttl.r", "value": 1, "ttl_ms": 250}),
    )
    .await;
    let first = expires_at(&w.recv().await).unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    // Renewing moves the deadline, even when the value is unchanged.
    let v2 = c
        .ok(
            "state.set",
            json!({"state": "ttl.r", "value": 1, "ttl_ms": 400}),
        )
        .await;
    let f = w.recv().await;
    assert_eq!(f.body.get("version").and_then(Value::as_u64), Some(v2));
    let second = expires_at(&f).unwrap();
    assert!(second > first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        server.shared.store.snapshot("ttl.r").initialized,
        "postponed"
    );
    // ttl_ms: 0 removes it: the DELTA says 0, the key stays.
    c.ok(
        "state.set_in",
        json!({"state": "ttl.r", "path": "/x", "value": 1, "ttl_ms": 0}),
    )
    .await;
    let f = w.recv().await;
    assert_eq!(expires_at(&f), Some(0));
    assert!(server.shared.store.timers().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(server.shared.store.snapshot("ttl.r").initialized);
    w.expect_silence(QUIET).await;
    // A delete removes it too.
    c.ok(
        "state.set",
        json!({"state": "ttl.d", "value": 1, "ttl_ms": 200}),
    )
    .await;
    assert_eq!(server.shared.store.timers().len(), 1);
    c.ok("state.delete", json!({"state": "ttl.d"})).await;
    assert!(server.shared.store.timers().is_empty());
    let v = c
        .ok("state.set", json!({"state": "ttl.d", "value": 2}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let snap = server.shared.store.snapshot("ttl.d");
    assert!(
        snap.initialized && snap.version == v,
        "the old deadline is gone"
    );
}

#[tokio::test]
async fn ttl_arguments_are_checked_and_work_in_transactions() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for (method, args) in [
        ("state.delete", json!({"state": "ttl.k", "ttl_ms": 5})),
        (
            "state.presence",
            json!({"state": "ttl.k", "path": "/p", "value": 1, "ttl_ms": 5}),
        ),
        (
            "state.set",
            json!({"state": "ttl.k", "value": 1, "ttl_ms": -5}),
        ),
        (
            "state.set",
            json!({"state": "ttl.k", "value": 1, "ttl_ms": "5"}),
        ),
    ] {
        let r = c.call(method, args).await;
        assert_eq!(failure_code(&r), Some(400), "{method}: {r:?}");
        assert!(message(&r).contains("`ttl_ms`"), "{r:?}");
    }
    assert_eq!(server.shared.store.snapshot("ttl.k").version, 0);
    let mut w = server.client().await;
    w.watch("ttl.t").await;
    let r = c
        .call(
            "state.transaction",
            json!({"ops": [
                op("state.set", json!({"state": "ttl.t", "value": 1, "ttl_ms": 200})),
                op("state.set", json!({"state": "ttl.u", "value": 1})),
            ]}),
        )
        .await;
    version_of(&r);
    let f = w.recv().await;
    assert!(expires_at(&f).is_some(), "{f:?}");
    let f = w.recv().await;
    let ops = DeltaOp::list_from_value(f.body.get("ops").unwrap()).unwrap();
    assert_eq!(ops, vec![DeltaOp::remove("/")], "expired");
    assert!(server.shared.store.snapshot("ttl.u").initialized);
}

// ---- with a data directory -------------------------------------------------

/// A transaction on a durable server survives a restart whole, every key
/// at the one version; reads and conditional writes work there too.
#[tokio::test]
async fn a_durable_transaction_survives_a_restart_with_one_version() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("extensions-durable-tx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let start = |dir: std::path::PathBuf| {
        TestServer::with(move |config| {
            config.storage = Some(sodp_server::config::StorageConfig::new(dir));
        })
    };
    let server = start(dir.clone()).await;
    let mut c = server.client().await;
    let mut w = server.client().await;
    w.watch("d.a").await;
    let va = c.ok("state.set", json!({"state": "d.a", "value": 1})).await;
    assert_eq!(w.delta().await.0, va);
    let r = c
        .call(
            "state.transaction",
            json!({"ops": [
                op("state.set", json!({"state": "d.a", "value": 2, "if_version": va})),
                op("state.set", json!({"state": "d.b", "value": {"x": 1}, "if_version": 0})),
            ]}),
        )
        .await;
    let version = version_of(&r);
    assert_eq!(
        w.delta().await,
        (version, vec![DeltaOp::update("/", Value::Int(2))])
    );
    let r = c.call("state.get", json!({"state": "d.b"})).await;
    assert_eq!(
        data(&r),
        &v(json!({"version": version, "value": {"x": 1}, "initialized": true}))
    );
    drop((c, w));
    server.shutdown().await;

    let server = start(dir.clone()).await;
    let mut c = server.client().await;
    for (key, value) in [("d.a", json!(2)), ("d.b", json!({"x": 1}))] {
        let r = c.call("state.get", json!({"state": key})).await;
        assert_eq!(
            data(&r),
            &v(json!({"version": version, "value": value, "initialized": true})),
            "{key}"
        );
    }
    let r = c.call("state.keys", json!({"prefix": "d"})).await;
    assert_eq!(strings(data(&r).get("keys").unwrap()), ["d.a", "d.b"]);
    let r = c
        .call(
            "state.set",
            json!({"state": "d.a", "value": 3, "if_version": va}),
        )
        .await;
    assert_eq!(conflict(&r), version);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_resume_replays_the_deadlines_set_while_nobody_watched() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let v1 = c
        .ok("state.set", json!({"state": "ttl.r", "value": 1}))
        .await;
    let before = unix_ms();
    let v2 = c
        .ok(
            "state.set",
            json!({"state": "ttl.r", "value": 2, "ttl_ms": 60_000}),
        )
        .await;
    let v3 = c
        .ok(
            "state.set",
            json!({"state": "ttl.r", "value": 3, "ttl_ms": 0}),
        )
        .await;
    let mut r = server.client().await;
    r.send(
        FrameType::Resume,
        4,
        v(json!({"state": "ttl.r", "since_version": v1})),
    )
    .await;
    let set = r.recv().await;
    assert_eq!(set.body.get("version").and_then(Value::as_u64), Some(v2));
    let deadline = expires_at(&set).expect("the replayed DELTA says the deadline");
    assert!(deadline >= before + 60_000 && deadline <= unix_ms() + 60_000);
    let removed = r.recv().await;
    assert_eq!(
        removed.body.get("version").and_then(Value::as_u64),
        Some(v3)
    );
    assert_eq!(expires_at(&removed), Some(0), "the deadline's removal");
    assert_eq!(r.recv().await.kind, FrameType::StateInit);
}
