//! The `admin.*` methods — permission and output of each — and the web
//! inspector's HTTP side (`/inspector`, `/inspector/ws`), against a real
//! server over real sockets.

mod common;

use std::time::Duration;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use sodp_auth::jwt::JwtConfig;
use sodp_proto::{FrameType, Value};
use sodp_server::config::{AdminClaim, Config};

const SECRET: &str = "admin-test-secret";

fn token(sub: &str, extra: serde_json::Value) -> String {
    let mut claims = json!({"sub": sub, "exp": 4_000_000_000u64});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn with_auth(config: &mut Config, claim: Option<&str>) {
    config.security.jwt = JwtConfig {
        hs256_secret: Some(SECRET.into()),
        ..JwtConfig::default()
    };
    config.inspector.admin_claim = claim.map(|c| AdminClaim::parse(c).unwrap());
}

async fn authed(server: &TestServer, token: &str) -> TestClient {
    let mut c = server.client().await;
    c.send(
        FrameType::Auth,
        0,
        Value::map_from([("token", Value::from(token))]),
    )
    .await;
    let f = c.recv().await;
    assert_eq!(f.kind, FrameType::AuthOk, "{f:?}");
    c
}

/// A successful RESULT's `data`, as JSON.
async fn data(c: &mut TestClient, method: &str, args: serde_json::Value) -> serde_json::Value {
    let r = c.call(method, args).await;
    assert_eq!(
        r.get("success"),
        Some(&Value::Bool(true)),
        "{method}: {r:?}"
    );
    r.get("data").unwrap().to_json()
}

/// Every admin method with valid and with broken arguments.
fn every_admin_call() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("admin.stats", json!({})),
        ("admin.sessions", json!({})),
        ("admin.sessions", json!({"limit": 0})),
        ("admin.session", json!({"id": 1})),
        ("admin.session", json!({"id": 999_999})),
        ("admin.session", json!({"id": "x"})),
        ("admin.disconnect", json!({"id": 1})),
        ("admin.disconnect", json!({"id": 999_999})),
        ("admin.disconnect", json!({})),
        ("admin.writers", json!({"versions": [1]})),
        ("admin.writers", json!({"versions": "x"})),
        ("admin.keys", json!({})),
        ("admin.keys", json!({"prefix": "bad key!"})),
    ]
}

/// A non-administrator gets the same 403 for every admin method and any
/// arguments (never a 400 or 404 that would tell it something), and
/// nothing happens.
async fn refused_everything(c: &mut TestClient, server: &TestServer) {
    let before = server.shared.connections();
    for (method, args) in every_admin_call() {
        let r = c.call(method, args.clone()).await;
        assert_eq!(failure_code(&r), Some(403), "{method} {args}: {r:?}");
        assert_eq!(
            r.get("data").and_then(Value::as_str),
            Some("403 access denied"),
            "{method} {args}"
        );
    }
    assert_eq!(
        server.shared.connections(),
        before,
        "nobody was disconnected"
    );
}

#[tokio::test]
async fn without_auth_and_without_the_inspector_nobody_is_an_administrator() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    refused_everything(&mut c, &server).await;
}

#[tokio::test]
async fn without_auth_loopback_sessions_are_administrators_with_the_inspector_on() {
    let server = TestServer::with(|c| c.inspector.enabled = true).await;
    let mut admin = server.client().await;
    let mut other = server.client().await;
    other.watch("game.board").await;
    other
        .ok(
            "state.presence",
            json!({"state": "room.cursors", "path": "/bob", "value": 1}),
        )
        .await;

    let stats = data(&mut admin, "admin.stats", json!({})).await;
    assert_eq!(stats["connections"], 2);
    assert_eq!(
        stats["keys"], 2,
        "key slots, as /health counts them (one watched, unwritten)"
    );
    assert_eq!(stats["cluster"]["mode"], "single node");
    assert_eq!(stats["storage"]["engine"], "memory");
    assert_eq!(stats["storage"]["ready"], true);
    assert!(stats["counters"]["calls"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["memory"]["max"].as_u64().unwrap() > 0);
    assert_eq!(stats["inspector"]["writers_recorded"], true);

    let list = data(&mut admin, "admin.sessions", json!({})).await;
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{list}");
    assert!(list.get("next").is_none());
    let o = sessions
        .iter()
        .find(|s| s["watching"] == 1)
        .expect("the watcher is listed");
    assert_eq!(o["presence"], 1);
    assert_eq!(o["subject"], serde_json::Value::Null);
    assert_eq!(o["inspector"], false);
    assert!(
        o["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{o}"
    );
    assert_eq!(o["calls"], 1);
    assert_eq!(o["queue"], 0);
    let now_ms = server.shared.clock.since_epoch().as_millis() as u64;
    let since = o["connected_at"].as_u64().unwrap();
    assert!(
        since <= now_ms && now_ms - since < 60_000,
        "{since} vs {now_ms}"
    );
    let id = o["id"].as_u64().unwrap();

    let page = data(&mut admin, "admin.sessions", json!({"limit": 1})).await;
    assert_eq!(page["sessions"].as_array().unwrap().len(), 1);
    let after = page["next"].as_u64().expect("next when more follow");
    let rest = data(&mut admin, "admin.sessions", json!({"after": after})).await;
    assert_eq!(rest["sessions"].as_array().unwrap().len(), 1);

    let one = data(&mut admin, "admin.session", json!({"id": id})).await;
    assert_eq!(one["watched"], json!(["game.board"]));
    assert_eq!(one["presence_paths"], json!({"room.cursors": ["/bob"]}));
    assert_eq!(one["queue_capacity"], 1024);
    assert_eq!(one["truncated"], false);

    let r = admin.call("admin.session", json!({"id": 999_999})).await;
    assert_eq!(failure_code(&r), Some(404), "{r:?}");
    let r = admin.call("admin.session", json!({"id": "x"})).await;
    assert_eq!(failure_code(&r), Some(400), "{r:?}");
    let r = admin.call("admin.disconnect", json!({})).await;
    assert_eq!(failure_code(&r), Some(400), "{r:?}");

    // Disconnecting: the session closes (1008) and its presence goes.
    let mut watcher = server.client().await;
    watcher.watch("room.cursors").await;
    let d = data(&mut admin, "admin.disconnect", json!({"id": id})).await;
    assert_eq!(d, json!({"id": id, "disconnected": true}));
    assert_eq!(other.expect_close().await, Some(1008));
    let (_, ops) = watcher.delta().await;
    assert_eq!(ops, vec![sodp_proto::DeltaOp::remove("/bob")]);
    eventually("the session to leave the registry", || {
        server.shared.sessions.get(id).is_none()
    })
    .await;
    let r = admin.call("admin.disconnect", json!({"id": id})).await;
    assert_eq!(failure_code(&r), Some(404), "{r:?}");
}

#[tokio::test]
async fn with_auth_only_the_admin_claim_grants_it() {
    let server = TestServer::with(|c| with_auth(c, Some("roles:admin"))).await;
    let mut admin = authed(&server, &token("root", json!({"roles": ["ops", "admin"]}))).await;
    let mut user = authed(&server, &token("alice", json!({"roles": ["ops"]}))).await;
    let mut also_user = authed(&server, &token("eve", json!({"roles": "administrator"}))).await;
    refused_everything(&mut user, &server).await;
    refused_everything(&mut also_user, &server).await;

    let list = data(&mut admin, "admin.sessions", json!({})).await;
    let mut subjects: Vec<_> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subject"].as_str().unwrap().to_owned())
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["alice", "eve", "root"]);
    let alice = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subject"] == "alice")
        .unwrap();
    assert_eq!(alice["calls"], every_admin_call().len() as u64);
}

#[tokio::test]
async fn with_auth_and_no_admin_claim_nobody_is_an_administrator() {
    let server = TestServer::with(|c| with_auth(c, None)).await;
    let mut c = authed(&server, &token("root", json!({"role": "admin"}))).await;
    refused_everything(&mut c, &server).await;
}

#[tokio::test]
async fn writers_are_recorded_with_the_inspector_on_and_no_op_writes_are_not() {
    let server = TestServer::with(|c| {
        with_auth(c, Some("role:admin"));
        c.inspector.enabled = true;
    })
    .await;
    let mut admin = authed(&server, &token("root", json!({"role": "admin"}))).await;
    let mut alice = authed(&server, &token("alice", json!({}))).await;
    let v1 = alice
        .ok("state.set", json!({"state": "doc.a", "value": {"n": 1}}))
        .await;
    let w = data(
        &mut admin,
        "admin.writers",
        json!({"versions": [v1, 12345]}),
    )
    .await;
    let writers = w["writers"].as_array().unwrap();
    assert_eq!(writers.len(), 1, "{w}");
    assert_eq!(writers[0]["version"], v1);
    assert_eq!(writers[0]["subject"], "alice");
    assert_eq!(writers[0]["method"], "state.set");
    let alice_id = writers[0]["session"].as_u64().unwrap();
    assert!(server.shared.sessions.get(alice_id).is_some());

    // A change no session made (a presence release), then a write that
    // changes nothing: that write is not taken for the change's author.
    let mut bob = authed(&server, &token("bob", json!({}))).await;
    bob.ok(
        "state.presence",
        json!({"state": "doc.p", "path": "/bob", "value": 1}),
    )
    .await;
    alice
        .ok(
            "state.set_in",
            json!({"state": "doc.p", "path": "/x", "value": 1}),
        )
        .await;
    bob.ws.close(None).await.unwrap();
    let mut released = 0;
    for _ in 0..500 {
        let snap = server.shared.store.snapshot("doc.p");
        if snap.value.get("bob").is_none() {
            released = snap.version;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(released > 0, "bob's presence was released");
    let again = alice
        .ok(
            "state.set_in",
            json!({"state": "doc.p", "path": "/x", "value": 1}),
        )
        .await;
    assert_eq!(again, released, "a no-op answers the current version");
    let w = data(&mut admin, "admin.writers", json!({"versions": [released]})).await;
    assert_eq!(w["writers"], json!([]), "unknown, not guessed: {w}");

    let keys = data(&mut admin, "admin.keys", json!({"prefix": "doc"})).await;
    let listed = keys["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{keys}");
    assert_eq!(listed[0]["key"], "doc.a");
    assert_eq!(listed[0]["version"], v1);
    assert_eq!(listed[0]["size"], 4, "{{n:1}} is 4 bytes of MessagePack");
    assert_eq!(listed[0]["writer"], alice_id);
    assert!(listed[0]["written_at"].as_u64().unwrap() > 0);
    assert_eq!(listed[1]["writer"], serde_json::Value::Null);
    let page = data(&mut admin, "admin.keys", json!({"limit": 1})).await;
    assert_eq!(page["next"], "doc.a");
    let r = admin.call("admin.writers", json!({"versions": [-1]})).await;
    assert_eq!(failure_code(&r), Some(400), "{r:?}");
    // An administrator learns what is wrong with a bad prefix.
    let r = admin
        .call("admin.keys", json!({"prefix": "bad key!"}))
        .await;
    assert_eq!(failure_code(&r), Some(400), "{r:?}");
    let said = r.get("data").and_then(Value::as_str).unwrap_or_default();
    assert!(said.contains("admin.keys: argument `prefix`"), "{r:?}");
    let stats = data(&mut admin, "admin.stats", json!({})).await;
    assert_eq!(stats["inspector"]["writers_recorded"], true);
}

#[tokio::test]
async fn without_the_inspector_no_writer_is_recorded() {
    let server = TestServer::with(|c| with_auth(c, Some("role:admin"))).await;
    let mut admin = authed(&server, &token("root", json!({"role": "admin"}))).await;
    let v = admin
        .ok("state.set", json!({"state": "doc.a", "value": 1}))
        .await;
    let w = data(&mut admin, "admin.writers", json!({"versions": [v]})).await;
    assert_eq!(w["writers"], json!([]));
    let keys = data(&mut admin, "admin.keys", json!({})).await;
    assert_eq!(keys["keys"][0]["version"], v);
    assert_eq!(keys["keys"][0]["writer"], serde_json::Value::Null);
    let stats = data(&mut admin, "admin.stats", json!({})).await;
    assert_eq!(stats["inspector"]["writers_recorded"], false);
    assert!(server.shared.writers.is_none());
}

#[tokio::test]
async fn rate_limit_refusals_are_counted_per_session() {
    let server = TestServer::with(|c| {
        c.security.rate_writes_per_sec = 1;
        c.inspector.enabled = true;
    })
    .await;
    let mut c = server.client().await;
    let mut refused = 0;
    for i in 0..5 {
        let r = c.call("state.set", json!({"state": "k", "value": i})).await;
        if failure_code(&r) == Some(429) {
            refused += 1;
        }
    }
    assert!(refused > 0);
    let mut admin = server.client().await;
    // The admin's own call may be limited too: retry until it passes.
    let list = loop {
        let r = admin.call("admin.sessions", json!({})).await;
        if r.get("success") == Some(&Value::Bool(true)) {
            break r.get("data").unwrap().to_json();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let limited: u64 = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rate_limited"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(limited, refused);
}

/// Connects to `path` on the server (the inspector's WebSocket).
async fn connect_path(server: &TestServer, path: &str) -> Result<TestClient, String> {
    let url = format!("ws://{}{path}", server.addr);
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok(TestClient::from_ws(ws).await),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn without_the_flag_nothing_of_the_inspector_is_served() {
    let server = TestServer::start().await;
    for path in ["/inspector", "/inspector/", "/inspector/app.js"] {
        let r = http_get(server.addr, path).await;
        assert!(r.starts_with("HTTP/1.1 404"), "{path}: {r}");
        assert!(!r.contains("<html") && !r.contains("SODP inspector"), "{r}");
    }
    let e = connect_path(&server, "/inspector/ws").await.err().unwrap();
    assert!(e.contains("404"), "{e}");
}

#[tokio::test]
async fn with_the_flag_the_page_is_served_with_a_strict_policy() {
    let server = TestServer::with(|c| c.inspector.enabled = true).await;
    let page = http_get(server.addr, "/inspector").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("Content-Type: text/html"));
    assert!(page.contains("Content-Security-Policy: default-src 'none'"));
    assert!(page.contains("X-Frame-Options: DENY"));
    assert!(
        page.contains("/inspector/app.js"),
        "the page loads its script"
    );
    let js = http_get(server.addr, "/inspector/app.js").await;
    assert!(js.starts_with("HTTP/1.1 200"), "{js}");
    assert!(js.contains("Content-Type: text/javascript"));
    let missing = http_get(server.addr, "/inspector/nope.js").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    // Health and the plain WebSocket are unaffected.
    assert!(http_get(server.addr, "/health")
        .await
        .starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn inspector_sessions_are_read_only_without_the_writes_flag() {
    let server = TestServer::with(|c| c.inspector.enabled = true).await;
    let mut insp = connect_path(&server, "/inspector/ws").await.unwrap();
    let mut plain = server.client().await;
    plain
        .ok("state.set", json!({"state": "k", "value": 1}))
        .await;
    for (method, args) in [
        ("state.set", json!({"state": "k", "value": 2})),
        ("state.patch", json!({"state": "k", "patch": {"a": 1}})),
        (
            "state.set_in",
            json!({"state": "k", "path": "/a", "value": 1}),
        ),
        ("state.delete", json!({"state": "k"})),
        (
            "state.presence",
            json!({"state": "k", "path": "/a", "value": 1}),
        ),
        (
            "state.transaction",
            json!({"ops": [{"method": "state.delete", "args": {"state": "k"}}]}),
        ),
    ] {
        let r = insp.call(method, args).await;
        assert_eq!(failure_code(&r), Some(403), "{method}: {r:?}");
        let msg = r.get("data").and_then(Value::as_str).unwrap();
        assert!(msg.contains("--inspector-writes"), "{msg}");
    }
    assert_eq!(server.shared.store.snapshot("k").value, Value::from(1u64));
    // Reads and admin calls work; the session is marked as the inspector's.
    let r = insp.call("state.get", json!({"state": "k"})).await;
    assert_eq!(r.get("success"), Some(&Value::Bool(true)));
    let list = data(&mut insp, "admin.sessions", json!({})).await;
    let marks: Vec<bool> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["inspector"].as_bool().unwrap())
        .collect();
    assert_eq!(marks.iter().filter(|m| **m).count(), 1, "{list}");
}

#[tokio::test]
async fn inspector_writes_need_the_flag_and_an_administrator() {
    let server = TestServer::with(|c| {
        c.inspector.enabled = true;
        c.inspector.writes = true;
        with_auth(c, Some("role:admin"));
    })
    .await;
    let auth = |mut c: TestClient, t: String| async move {
        c.send(
            FrameType::Auth,
            0,
            Value::map_from([("token", Value::from(t))]),
        )
        .await;
        assert_eq!(c.recv().await.kind, FrameType::AuthOk);
        c
    };
    let admin = connect_path(&server, "/inspector/ws").await.unwrap();
    let mut admin = auth(admin, token("root", json!({"role": "admin"}))).await;
    admin
        .ok("state.set", json!({"state": "k", "value": 1}))
        .await;
    let user = connect_path(&server, "/inspector/ws").await.unwrap();
    let mut user = auth(user, token("alice", json!({}))).await;
    let r = user
        .call("state.set", json!({"state": "k", "value": 2}))
        .await;
    assert_eq!(failure_code(&r), Some(403), "{r:?}");
    // The same user on the plain endpoint writes under the ACL as always.
    let mut plain = authed(&server, &token("alice", json!({}))).await;
    plain
        .ok("state.set", json!({"state": "k", "value": 3}))
        .await;
}

/// Connects to `path` with an `Origin` header, as a browser page would.
async fn connect_from(server: &TestServer, path: &str, origin: &str) -> Result<TestClient, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}{path}", server.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Origin", origin.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(TestClient::from_ws(ws).await),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn another_sites_page_never_gets_admin_powers_through_a_browser() {
    let server = TestServer::with(|c| c.inspector.enabled = true).await;
    let own = format!("http://{}", server.addr);
    // The inspector's own page: admitted, and an administrator (loopback).
    let mut page = connect_from(&server, "/inspector/ws", &own).await.unwrap();
    data(&mut page, "admin.stats", json!({})).await;
    // Another site's page: the inspector's WebSocket is refused outright...
    let e = connect_from(&server, "/inspector/ws", "http://evil.example")
        .await
        .err()
        .unwrap();
    assert!(e.contains("403"), "{e}");
    // ...and on the plain endpoint it is an ordinary client, not an admin.
    let mut foreign = connect_from(&server, "/", "http://evil.example")
        .await
        .unwrap();
    refused_everything(&mut foreign, &server).await;
    foreign
        .ok("state.set", json!({"state": "k", "value": 1}))
        .await;
}

#[tokio::test]
async fn the_inspectors_own_page_needs_no_allowed_origins_entry() {
    let server = TestServer::with(|c| {
        c.inspector.enabled = true;
        c.security.allowed_origins = Some("https://app.example".into());
    })
    .await;
    let own = format!("http://{}", server.addr);
    let mut page = connect_from(&server, "/inspector/ws", &own).await.unwrap();
    data(&mut page, "admin.stats", json!({})).await;
    let e = connect_from(&server, "/", &own).await.err().unwrap();
    assert!(
        e.contains("403"),
        "the allow-list still holds elsewhere: {e}"
    );
    assert!(connect_from(&server, "/", "https://app.example")
        .await
        .is_ok());
}
