//! Security over real sockets: the JWT attack matrix, live expiry and
//! in-band refresh, the ACL matrix through identity-provider presets, schema
//! validation, rate limits, the Origin allow-list, connection caps, and the
//! binary's security flags. (The policy logic itself is unit-tested in
//! `sodp-auth`; these tests check that the server applies it.)

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use futures_util::StreamExt;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use sodp_auth::JwtConfig;
use sodp_proto::{DeltaOp, Frame, FrameType, Value};
use sodp_server::Config;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::MaybeTlsStream;

const SECRET: &str = "security-integration-test-secret-0123456789";
const ISSUER: &str = "https://issuer.sodp.test";
const AUDIENCE: &str = "sodp";

// ---------------------------------------------------------------- helpers

fn key_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sodp-auth/tests/keys")
        .join(name)
}

fn key(name: &str) -> String {
    std::fs::read_to_string(key_file(name)).expect("test key")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &serde_json::Value) -> String {
    encode(&Header::new(alg), claims, key).expect("sign")
}

fn hs256_with(secret: &[u8], claims: &serde_json::Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(secret), claims)
}

fn hs256(claims: &serde_json::Value) -> String {
    hs256_with(SECRET.as_bytes(), claims)
}

fn rs256_with(private_pem: &str, claims: &serde_json::Value) -> String {
    let key = EncodingKey::from_rsa_pem(key(private_pem).as_bytes()).expect("rsa key");
    sign(Algorithm::RS256, &key, claims)
}

fn es256(claims: &serde_json::Value) -> String {
    let key = EncodingKey::from_ec_pem(key("ec_private.pem").as_bytes()).expect("ec key");
    sign(Algorithm::ES256, &key, claims)
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A token with an arbitrary header and signature, no crypto.
fn raw_token(header: &serde_json::Value, claims: &serde_json::Value, signature: &str) -> String {
    format!("{}.{}.{}", b64(header), b64(claims), signature)
}

/// Claims for `sub`, valid for a minute, with the issuer and audience the
/// strict server expects.
fn claims_for(sub: &str) -> serde_json::Value {
    json!({"sub": sub, "exp": unix_now() + 60, "iss": ISSUER, "aud": AUDIENCE})
}

/// `claims` with `extra`'s fields added (or replaced; null removes).
fn with(mut claims: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let map = claims.as_object_mut().unwrap();
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            map.remove(k);
        } else {
            map.insert(k.clone(), v.clone());
        }
    }
    claims
}

fn hs_only(config: &mut Config) {
    config.security.jwt = JwtConfig {
        hs256_secret: Some(SECRET.into()),
        ..JwtConfig::default()
    };
}

/// All three algorithms, with an expected issuer and audience.
fn strict(config: &mut Config) {
    config.security.jwt = JwtConfig {
        hs256_secret: Some(SECRET.into()),
        rs256_public_key_pem: Some(key("rsa_public.pem")),
        es256_public_key_pem: Some(key("ec_public.pem")),
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        leeway_secs: 0,
    };
}

/// Writes `content` to a fresh file under the test temp dir.
fn temp_file(name: &str, content: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("security-{}-{n}-{name}", std::process::id()));
    std::fs::write(&path, content).unwrap();
    path
}

async fn send_auth(c: &mut TestClient, token: &str) {
    c.send(
        FrameType::Auth,
        0,
        Value::map_from([("token", Value::from(token))]),
    )
    .await;
}

/// Connects and authenticates; asserts AUTH_OK names `sub`.
async fn authed(server: &TestServer, token: &str, sub: &str) -> TestClient {
    let mut c = server.client().await;
    send_auth(&mut c, token).await;
    expect_auth_ok(&mut c, sub).await;
    c
}

async fn expect_auth_ok(c: &mut TestClient, sub: &str) {
    let f = c.recv().await;
    assert_eq!(f.kind, FrameType::AuthOk, "{f:?}");
    assert_eq!(f.body.get("sub"), Some(&Value::from(sub)), "{f:?}");
}

fn message_of(body: &Value) -> &str {
    body.get("message")
        .or_else(|| body.get("data"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no message in {body:?}"))
}

/// The next frame must be ERROR `code` whose message contains `needle`.
async fn expect_error(c: &mut TestClient, code: i64, needle: &str) -> Frame {
    let f = c.recv().await;
    assert_eq!(f.kind, FrameType::Error, "{f:?}");
    assert_eq!(
        f.body.get("code").and_then(Value::as_i64),
        Some(code),
        "{f:?}"
    );
    let message = message_of(&f.body);
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
    f
}

/// The connection must end now: nothing but heartbeats before the close.
async fn expect_closed(c: &mut TestClient) {
    loop {
        match tokio::time::timeout(TIMEOUT, c.ws.next())
            .await
            .expect("timed out waiting for the server to close")
        {
            Some(Ok(Message::Binary(b))) => {
                let f = Frame::decode(&b, 128).unwrap();
                assert_eq!(f.kind, FrameType::Heartbeat, "frame after refusal: {f:?}");
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => {}
        }
    }
}

/// ERROR 401 mentioning `needle`, then the close.
async fn expect_refused(c: &mut TestClient, needle: &str) -> Frame {
    let f = expect_error(c, 401, needle).await;
    expect_closed(c).await;
    f
}

/// The RESULT must be a failure with `code` whose message contains `needle`.
fn assert_failed(result: &Value, code: i64, needle: &str) {
    assert_eq!(failure_code(result), Some(code), "{result:?}");
    let message = message_of(result);
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
}

/// Waits until the server holds no session and no connection slot.
async fn all_sessions_gone(server: &TestServer) {
    let shared = server.shared.clone();
    eventually("every session to end", || {
        shared.connections() == 0 && shared.policy.connections.active() == 0
    })
    .await;
}

/// A WebSocket upgrade with an `Origin` header; `Err(status)` when the
/// server answers with an HTTP status instead of 101.
async fn connect_with_origin(server: &TestServer, origin: &str) -> Result<TestClient, u16> {
    connect_with_header(&server.url(), "Origin", origin).await
}

/// A WebSocket upgrade from a chosen local address (127.0.0.x are all
/// loopback on Linux); `Err(status)` on an HTTP refusal.
async fn connect_from(server: &TestServer, local_ip: [u8; 4]) -> Result<TestClient, u16> {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from((local_ip, 0)))
        .expect("bind a loopback source address");
    let tcp = socket.connect(server.addr).await.expect("tcp connect");
    match tokio_tungstenite::client_async(server.url(), MaybeTlsStream::Plain(tcp)).await {
        Ok((ws, _)) => Ok(TestClient::from_ws(ws).await),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("unexpected connect error {e}"),
    }
}

async fn close(mut c: TestClient) {
    let _ = c.ws.close(None).await;
    // Drain until the server's close arrives, so the slot is released.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(TIMEOUT, c.ws.next()).await {}
}

// ------------------------------------------------------ JWT: valid tokens

#[tokio::test]
async fn valid_hs256_rs256_es256_tokens_authenticate() {
    let server = TestServer::with(strict).await;
    let tokens = [
        ("HS256", hs256(&claims_for("alice"))),
        ("RS256", rs256_with("rsa_private.pem", &claims_for("bob"))),
        ("ES256", es256(&claims_for("carol"))),
    ];
    for ((alg, token), sub) in tokens.iter().zip(["alice", "bob", "carol"]) {
        let mut c = server.client().await;
        let hello = &c.hello.body;
        assert_eq!(hello.get("auth"), Some(&Value::Bool(true)), "{alg}");
        let caps = hello.get("capabilities").unwrap();
        assert_eq!(caps.get("token_refresh"), Some(&Value::Bool(true)), "{alg}");
        send_auth(&mut c, token).await;
        expect_auth_ok(&mut c, sub).await;
        // The session is live: watches and writes work.
        let key = format!("live.{sub}");
        c.watch(&key).await;
        let version = c.ok("state.set", json!({"state": key, "value": 1})).await;
        assert_eq!(c.delta().await.0, version, "{alg}");
    }
}

#[tokio::test]
async fn hello_without_keys_says_auth_false_and_no_token_refresh() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert_eq!(c.hello.body.get("auth"), Some(&Value::Bool(false)));
    let caps = c.hello.body.get("capabilities").unwrap();
    assert_ne!(caps.get("token_refresh"), Some(&Value::Bool(true)));
    assert!(caps.get("rate_limit_writes").is_none());
    assert!(caps.get("rate_limit_watches").is_none());
    // AUTH on a server without auth is a plain 400; the connection stays.
    send_auth(&mut c, &hs256(&claims_for("alice"))).await;
    expect_error(&mut c, 400, "does not require authentication").await;
    c.ok("state.set", json!({"state": "still.open", "value": 1}))
        .await;
}

// ----------------------------------------------------- JWT: attack matrix

#[tokio::test]
async fn every_bad_token_gets_401_and_the_connection_is_closed() {
    let server = TestServer::with(strict).await;
    let now = unix_now();
    let good = claims_for("alice");
    let es_good = es256(&good);
    // An ES256 token whose payload was swapped after signing.
    let es_tampered = {
        let parts: Vec<&str> = es_good.split('.').collect();
        let forged = with(good.clone(), json!({"sub": "mallory"}));
        format!("{}.{}.{}", parts[0], b64(&forged), parts[2])
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            hs256(&with(good.clone(), json!({"exp": now - 10}))),
            "token expired",
        ),
        (
            "nbf in the future",
            hs256(&with(good.clone(), json!({"nbf": now + 60}))),
            "not yet valid",
        ),
        (
            "HS256 with another secret",
            hs256_with(b"some-other-secret-of-the-same-length-000", &good),
            "invalid token signature",
        ),
        (
            "RS256 signed by another RSA key",
            rs256_with("rsa_other_private.pem", &good),
            "invalid token signature",
        ),
        (
            "ES256 payload tampered",
            es_tampered,
            "invalid token signature",
        ),
        (
            "alg none, empty signature",
            raw_token(&json!({"alg": "none", "typ": "JWT"}), &good, ""),
            "\"none\" not accepted",
        ),
        (
            "alg None, some signature",
            raw_token(&json!({"alg": "None", "typ": "JWT"}), &good, "AAAA"),
            "\"None\" not accepted",
        ),
        (
            "HS256 signed with the RSA public key PEM",
            hs256_with(key("rsa_public.pem").as_bytes(), &good),
            "invalid token signature",
        ),
        (
            "HS384 (not configured)",
            sign(
                Algorithm::HS384,
                &EncodingKey::from_secret(SECRET.as_bytes()),
                &good,
            ),
            "\"HS384\" not accepted",
        ),
        (
            "missing sub",
            hs256(&with(good.clone(), json!({"sub": null}))),
            "\"sub\"",
        ),
        (
            "empty sub",
            hs256(&with(good.clone(), json!({"sub": ""}))),
            "\"sub\"",
        ),
        (
            "missing exp",
            hs256(&with(good.clone(), json!({"exp": null}))),
            "\"exp\"",
        ),
        (
            "wrong iss",
            hs256(&with(good.clone(), json!({"iss": "https://evil.test"}))),
            "issuer not accepted",
        ),
        (
            "missing iss",
            hs256(&with(good.clone(), json!({"iss": null}))),
            "\"iss\"",
        ),
        (
            "wrong aud",
            hs256(&with(good.clone(), json!({"aud": "other-service"}))),
            "audience not accepted",
        ),
        (
            "missing aud",
            hs256(&with(good.clone(), json!({"aud": null}))),
            "\"aud\"",
        ),
        ("not a JWT", "not-a-jwt".to_owned(), "malformed token"),
        (
            "oversized",
            format!("{}.{}.x", "a".repeat(9000), "b".repeat(9000)),
            "too large",
        ),
    ];
    for (name, token, needle) in &cases {
        let mut c = server.client().await;
        send_auth(&mut c, token).await;
        let f = expect_error(&mut c, 401, needle).await;
        let message = message_of(&f.body);
        for part in token.split('.').filter(|p| p.len() >= 8) {
            assert!(
                !message.contains(part),
                "{name}: {message:?} leaks the token"
            );
        }
        expect_closed(&mut c).await;
    }
    // AUTH without a token string.
    let mut c = server.client().await;
    c.send(FrameType::Auth, 0, v(json!({"token": 42}))).await;
    expect_refused(&mut c, "token").await;
    all_sessions_gone(&server).await;
}

#[tokio::test]
async fn rsa_public_key_as_hmac_secret_is_refused_when_only_rs256_is_configured() {
    let server = TestServer::with(|config| {
        config.security.jwt = JwtConfig {
            rs256_public_key_pem: Some(key("rsa_public.pem")),
            ..JwtConfig::default()
        };
    })
    .await;
    let claims = json!({"sub": "alice", "exp": unix_now() + 60});
    for pem in ["rsa_public.pem", "rsa_public_pkcs1.pem"] {
        let mut c = server.client().await;
        send_auth(&mut c, &hs256_with(key(pem).as_bytes(), &claims)).await;
        expect_refused(&mut c, "\"HS256\" not accepted").await;
    }
    // A valid token of an algorithm that is not configured.
    let mut c = server.client().await;
    send_auth(&mut c, &es256(&claims)).await;
    expect_refused(&mut c, "\"ES256\" not accepted").await;
    // The genuine RS256 token works.
    authed(&server, &rs256_with("rsa_private.pem", &claims), "alice").await;
}

#[tokio::test]
async fn frames_before_auth_get_401_and_close() {
    let server = TestServer::with(hs_only).await;
    let mut c = server.client().await;
    c.send(FrameType::Watch, 10, v(json!({"state": "secret.doc"})))
        .await;
    expect_refused(&mut c, "authenticate first").await;

    let mut c = server.client().await;
    c.send(
        FrameType::Call,
        0,
        v(json!({"call_id": "c1", "method": "state.set",
                 "args": {"state": "secret.doc", "value": "pwned"}})),
    )
    .await;
    expect_refused(&mut c, "authenticate first").await;
    assert!(!server.shared.store.snapshot("secret.doc").initialized);

    for (kind, body) in [
        (
            FrameType::Resume,
            json!({"state": "secret.doc", "since_version": 0}),
        ),
        (FrameType::Unwatch, json!({"state": "secret.doc"})),
    ] {
        let mut c = server.client().await;
        c.send(kind, 0, v(body)).await;
        expect_refused(&mut c, "authenticate first").await;
    }
    all_sessions_gone(&server).await;
}

#[tokio::test]
async fn heartbeat_is_accepted_before_auth() {
    let server = TestServer::with(hs_only).await;
    let mut c = server.client().await;
    c.send(FrameType::Heartbeat, 0, Value::Nil).await;
    assert_eq!(c.recv_any().await.kind, FrameType::Heartbeat);
    send_auth(
        &mut c,
        &hs256(&json!({"sub": "alice", "exp": unix_now() + 60})),
    )
    .await;
    expect_auth_ok(&mut c, "alice").await;
}

#[tokio::test]
async fn auth_that_never_comes_is_closed_after_the_timeout() {
    let server = TestServer::with(|config| {
        hs_only(config);
        config.security.auth_timeout_secs = 1;
    })
    .await;
    let started = std::time::Instant::now();
    let mut c = server.client().await;
    expect_refused(&mut c, "timed out").await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    all_sessions_gone(&server).await;
}

// --------------------------------------------- JWT: live expiry and refresh

#[tokio::test]
async fn token_expiry_closes_a_live_session_and_releases_its_presence() {
    let server = TestServer::with(hs_only).await;
    let mut observer = authed(
        &server,
        &hs256(&json!({"sub": "observer", "exp": unix_now() + 60})),
        "observer",
    )
    .await;
    let exp = unix_now() + 2;
    let mut c = authed(
        &server,
        &hs256(&json!({"sub": "alice", "exp": exp})),
        "alice",
    )
    .await;
    c.ok(
        "state.presence",
        json!({"state": "room", "path": "/alice", "value": "here"}),
    )
    .await;
    observer.watch("room").await;

    expect_error(&mut c, 401, "token expired").await;
    let at = unix_now_f64();
    expect_closed(&mut c).await;
    assert!(at >= exp as f64 - 0.05, "closed at {at}, before exp {exp}");
    assert!(
        at < exp as f64 + 1.5,
        "closed at {at}, long after exp {exp}"
    );
    // The expired session's presence is gone.
    let (_, ops) = observer.delta().await;
    assert_eq!(ops, vec![DeltaOp::remove("/alice")]);
    // The other session is untouched.
    observer
        .ok("state.set", json!({"state": "after", "value": 1}))
        .await;
}

// The expiry timer's sub-second precision is checked on paused time, without
// the wall clock: `session::tests::a_token_expires_on_paused_time`.

#[tokio::test]
async fn in_band_refresh_keeps_the_session_alive_past_the_first_expiry() {
    let server = TestServer::with(hs_only).await;
    let first_exp = unix_now() + 2;
    let mut c = authed(
        &server,
        &hs256(&json!({"sub": "alice", "exp": first_exp, "v": 1})),
        "alice",
    )
    .await;
    c.watch("doc").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_auth(
        &mut c,
        &hs256(&json!({"sub": "alice", "exp": unix_now() + 60, "v": 2})),
    )
    .await;
    expect_auth_ok(&mut c, "alice").await;
    // Past the first token's expiry (with the timer's whole-second slack):
    // nothing arrives, and the session still works.
    let until = first_exp as f64 + 1.2 - unix_now_f64();
    c.expect_silence(Duration::from_secs_f64(until.max(0.0)))
        .await;
    assert!(unix_now_f64() > first_exp as f64 + 1.0);
    let version = c.ok("state.set", json!({"state": "doc", "value": 1})).await;
    assert_eq!(c.delta().await.0, version);
}

#[tokio::test]
async fn refresh_for_another_subject_or_with_a_bad_token_is_refused() {
    let server = TestServer::with(hs_only).await;
    let exp = unix_now() + 60;
    let mut c = authed(
        &server,
        &hs256(&json!({"sub": "alice", "exp": exp})),
        "alice",
    )
    .await;
    send_auth(&mut c, &hs256(&json!({"sub": "bob", "exp": exp}))).await;
    expect_refused(&mut c, "subject differs").await;

    let mut c = authed(
        &server,
        &hs256(&json!({"sub": "alice", "exp": exp})),
        "alice",
    )
    .await;
    send_auth(
        &mut c,
        &hs256(&json!({"sub": "alice", "exp": unix_now() - 5})),
    )
    .await;
    expect_refused(&mut c, "token expired").await;

    let mut c = authed(
        &server,
        &hs256(&json!({"sub": "alice", "exp": exp})),
        "alice",
    )
    .await;
    send_auth(
        &mut c,
        &hs256_with(b"not-the-secret", &json!({"sub": "alice", "exp": exp})),
    )
    .await;
    expect_refused(&mut c, "invalid token signature").await;
    all_sessions_gone(&server).await;
}

#[tokio::test]
async fn refresh_replaces_the_claims_the_acl_decides_on() {
    let server = TestServer::with(keycloak_server).await;
    let mut alice = authed(&server, &token(json!({"sub": "alice"})), "alice").await;
    write_denied(&mut alice, "public.news").await;
    send_auth(
        &mut alice,
        &token(json!({"sub": "alice", "realm_access": {"roles": ["editor"]}})),
    )
    .await;
    expect_auth_ok(&mut alice, "alice").await;
    write_allowed(&mut alice, "public.news").await;
    // And a role dropped at refresh is gone at once.
    send_auth(&mut alice, &token(json!({"sub": "alice"}))).await;
    expect_auth_ok(&mut alice, "alice").await;
    write_denied(&mut alice, "public.news").await;
}

/// A pattern subscription filters each change with the session's claims
/// as they are then: a role gained or dropped at refresh counts at once.
#[tokio::test]
async fn refresh_changes_what_a_pattern_subscription_lets_through() {
    let server = TestServer::with(keycloak_server).await;
    let mut bob = authed(&server, &token(json!({"sub": "bob"})), "bob").await;
    let mut alice = authed(&server, &token(json!({"sub": "alice"})), "alice").await;
    alice
        .send(FrameType::Watch, 0, v(json!({"state": "users.*"})))
        .await;
    let init = alice.recv().await;
    assert_eq!(init.kind, FrameType::StateInit, "{init:?}");
    let changed = |key: &str| json!({"state": key, "value": 1});
    bob.ok("state.set", changed("users.bob.hidden")).await;
    alice.expect_silence(Duration::from_millis(150)).await;
    send_auth(
        &mut alice,
        &token(json!({"sub": "alice", "realm_access": {"roles": ["admin"]}})),
    )
    .await;
    expect_auth_ok(&mut alice, "alice").await;
    let seen = bob.ok("state.set", changed("users.bob.seen")).await;
    let (version, ops) = alice.delta().await;
    assert_eq!(version, seen);
    assert_eq!(ops[0].path, "/users.bob.seen", "{ops:?}");
    send_auth(&mut alice, &token(json!({"sub": "alice"}))).await;
    expect_auth_ok(&mut alice, "alice").await;
    bob.ok("state.set", changed("users.bob.hidden.again")).await;
    alice.expect_silence(Duration::from_millis(150)).await;
}

// ------------------------------------------------------------------- ACL

const KEYCLOAK_ACL: &str = r#"{
  "preset": "keycloak",
  "rules": [
    { "pattern": "users.{sub}.*", "read": ["{sub}", "role:admin"], "write": ["{sub}"] },
    { "pattern": "users.*",       "read": ["role:admin"] },
    { "pattern": "public.*",      "read": ["*"], "write": ["role:editor"] },
    { "pattern": "staff.*",       "read": ["group:/staff"], "write": ["group:/staff"] },
    { "pattern": "tenants.acme.*","read": ["tenant:acme"], "write": ["perm:write"] }
  ]
}"#;

fn keycloak_server(config: &mut Config) {
    hs_only(config);
    config.security.acl_file = Some(temp_file("keycloak-acl.json", KEYCLOAK_ACL));
}

fn token(claims: serde_json::Value) -> String {
    hs256(&with(claims, json!({"exp": unix_now() + 60})))
}

/// WATCH must answer STATE_INIT. The key is unwatched again, so that later
/// writes in the same test send this session no DELTA.
async fn watch_allowed(c: &mut TestClient, key: &str) {
    let init = c.watch(key).await;
    assert_eq!(init.body.get("state"), Some(&Value::from(key)));
    c.send(FrameType::Unwatch, 0, v(json!({"state": key})))
        .await;
}

async fn watch_denied(c: &mut TestClient, key: &str) -> Frame {
    c.send(FrameType::Watch, 10, v(json!({"state": key}))).await;
    expect_error(c, 403, "").await
}

async fn write_allowed(c: &mut TestClient, key: &str) {
    c.ok("state.set", json!({"state": key, "value": {"by": "test"}}))
        .await;
}

async fn write_denied(c: &mut TestClient, key: &str) -> Value {
    let r = c
        .call("state.set", json!({"state": key, "value": "overwritten"}))
        .await;
    assert_failed(&r, 403, "");
    r
}

#[tokio::test]
async fn acl_keycloak_sub_capture_roles_groups_and_claims() {
    let server = TestServer::with(keycloak_server).await;
    let mut alice = authed(
        &server,
        &token(json!({
            "sub": "alice",
            "realm_access": {"roles": ["editor"]},
            "groups": ["/staff"],
            "tenant": "acme",
            "scope": "openid profile write"
        })),
        "alice",
    )
    .await;
    let mut bob = authed(
        &server,
        &token(json!({"sub": "bob", "realm_access": {"roles": ["admin"]}})),
        "bob",
    )
    .await;
    // Roles at the top level are not where keycloak puts them.
    let mut carol = authed(
        &server,
        &token(json!({"sub": "carol", "roles": ["admin", "editor"], "groups": ["staff"]})),
        "carol",
    )
    .await;

    // {sub} capture: own keys read + write, other users' keys neither.
    watch_allowed(&mut alice, "users.alice.profile").await;
    write_allowed(&mut alice, "users.alice.profile").await;
    write_allowed(&mut bob, "users.bob.profile").await;
    watch_denied(&mut alice, "users.bob.profile").await;
    write_denied(&mut alice, "users.bob.profile").await;
    // `users.{sub}.*` needs a segment after the subject.
    watch_denied(&mut alice, "users.alice").await;

    // role:admin (realm_access.roles) reads other users' keys, via the
    // second rule — but may not write them.
    watch_allowed(&mut bob, "users.alice.profile").await;
    write_denied(&mut bob, "users.alice.profile").await;
    watch_denied(&mut carol, "users.alice.profile").await;

    // public.*: read for anyone, write for role:editor.
    watch_allowed(&mut alice, "public.news").await;
    write_allowed(&mut alice, "public.news").await;
    watch_allowed(&mut bob, "public.news").await;
    write_denied(&mut bob, "public.news").await;
    write_denied(&mut carol, "public.news").await;

    // group:/staff.
    watch_allowed(&mut alice, "staff.rota").await;
    write_allowed(&mut alice, "staff.rota").await;
    watch_denied(&mut bob, "staff.rota").await;
    watch_denied(&mut carol, "staff.rota").await;
    write_denied(&mut carol, "staff.rota").await;

    // CLAIM:VALUE and perm: (scope split on spaces).
    watch_allowed(&mut alice, "tenants.acme.orders").await;
    write_allowed(&mut alice, "tenants.acme.orders").await;
    watch_denied(&mut bob, "tenants.acme.orders").await;
    write_denied(&mut bob, "tenants.acme.orders").await;

    // Default deny: no rule matches.
    watch_denied(&mut alice, "unlisted").await;
    write_denied(&mut alice, "unlisted").await;

    // The values others could not overwrite are intact.
    assert_eq!(
        server.shared.store.snapshot("users.alice.profile").value,
        v(json!({"by": "test"}))
    );
    // After all those denials, every connection is still open and usable.
    for (c, sub) in [
        (&mut alice, "alice"),
        (&mut bob, "bob"),
        (&mut carol, "carol"),
    ] {
        let key = format!("users.{sub}.x");
        c.ok("state.set", json!({"state": key, "value": 0})).await;
    }
}

#[tokio::test]
async fn acl_read_allowed_write_denied_for_every_mutating_method() {
    let server = TestServer::with(keycloak_server).await;
    let mut alice = authed(
        &server,
        &token(json!({"sub": "alice", "realm_access": {"roles": ["editor"]}})),
        "alice",
    )
    .await;
    let mut bob = authed(&server, &token(json!({"sub": "bob"})), "bob").await;
    let v1 = alice
        .ok(
            "state.set",
            json!({"state": "public.board", "value": {"title": "hi"}}),
        )
        .await;
    watch_allowed(&mut bob, "public.board").await;
    for (method, args) in [
        ("state.set", json!({"state": "public.board", "value": 1})),
        (
            "state.patch",
            json!({"state": "public.board", "patch": {"title": "x"}}),
        ),
        (
            "state.set_in",
            json!({"state": "public.board", "path": "/title", "value": "x"}),
        ),
        (
            "state.presence",
            json!({"state": "public.board", "path": "/bob", "value": 1}),
        ),
        ("state.delete", json!({"state": "public.board"})),
    ] {
        let r = bob.call(method, args).await;
        assert_failed(&r, 403, "");
    }
    let snap = server.shared.store.snapshot("public.board");
    assert_eq!((snap.version, snap.value), (v1, v(json!({"title": "hi"}))));
    // RESUME is a read: allowed here, denied on a key bob may not read.
    bob.send(
        FrameType::Resume,
        12,
        v(json!({"state": "public.board", "since_version": 0})),
    )
    .await;
    let f = bob.recv().await;
    assert!(
        matches!(f.kind, FrameType::StateInit | FrameType::Delta),
        "{f:?}"
    );
    bob.send(
        FrameType::Resume,
        13,
        v(json!({"state": "users.alice.x", "since_version": 0})),
    )
    .await;
    // Skip what the allowed RESUME may still send.
    loop {
        let f = bob.recv().await;
        if f.kind == FrameType::Error {
            assert_eq!(f.body.get("code").and_then(Value::as_i64), Some(403));
            break;
        }
    }
    bob.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn acl_multi_key_watch_fails_only_the_denied_key() {
    let server = TestServer::with(keycloak_server).await;
    let mut alice = authed(&server, &token(json!({"sub": "alice"})), "alice").await;
    alice
        .send(
            FrameType::Watch,
            20,
            v(json!({"states": ["users.alice.a", "users.bob.a", "public.news"]})),
        )
        .await;
    let mut inits = Vec::new();
    let mut errors = Vec::new();
    for _ in 0..3 {
        let f = alice.recv().await;
        match f.kind {
            FrameType::StateInit => inits.push(f.body.get("state").cloned().unwrap()),
            FrameType::Error => errors.push(f),
            _ => panic!("unexpected {f:?}"),
        }
    }
    assert_eq!(
        inits,
        vec![Value::from("users.alice.a"), Value::from("public.news")]
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].body.get("code").and_then(Value::as_i64),
        Some(403)
    );
    alice.expect_silence(Duration::from_millis(100)).await;
    // The allowed subscriptions are live.
    let mut bob = authed(
        &server,
        &token(json!({"sub": "bob", "realm_access": {"roles": ["editor"]}})),
        "bob",
    )
    .await;
    let version = bob
        .ok("state.set", json!({"state": "public.news", "value": "x"}))
        .await;
    assert_eq!(alice.delta().await.0, version);
    bob.ok(
        "state.set",
        json!({"state": "users.bob.a", "value": "private"}),
    )
    .await;
    alice.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn acl_denials_do_not_reveal_whether_a_key_exists() {
    let server = TestServer::with(keycloak_server).await;
    let mut bob = authed(&server, &token(json!({"sub": "bob"})), "bob").await;
    bob.ok(
        "state.set",
        json!({"state": "users.bob.secret", "value": "s3cr3t"}),
    )
    .await;
    let mut alice = authed(&server, &token(json!({"sub": "alice"})), "alice").await;
    let existing = watch_denied(&mut alice, "users.bob.secret").await;
    let missing = watch_denied(&mut alice, "users.bob.nothing").await;
    assert_eq!(existing.body, missing.body);
    assert_eq!(existing.stream_id, missing.stream_id);
    let message = message_of(&existing.body);
    assert!(!message.contains("bob") && !message.contains("secret"));

    let existing = write_denied(&mut alice, "users.bob.secret").await;
    let missing = write_denied(&mut alice, "users.bob.nothing").await;
    assert_eq!(existing.get("data"), missing.get("data"));
    assert_eq!(existing.get("code"), missing.get("code"));
    let message = message_of(&existing);
    assert!(!message.contains("bob") && !message.contains("secret"));
    // Still connected.
    alice
        .ok("state.set", json!({"state": "users.alice.x", "value": 1}))
        .await;
}

const COGNITO_ACL: &str = r#"{
  "preset": "cognito",
  "rules": [
    { "pattern": "users.{sub}.*", "read": ["{sub}"], "write": ["{sub}"] },
    { "pattern": "ops.*",         "read": ["group:admins"], "write": ["perm:sodp/write"] },
    { "pattern": "audit.*",       "read": ["role:auditor", "cognito:groups:auditors"] },
    { "pattern": "*",             "read": ["*"] }
  ]
}"#;

#[tokio::test]
async fn acl_cognito_groups_scopes_roles_and_wildcard() {
    let server = TestServer::with(|config| {
        hs_only(config);
        config.security.acl_file = Some(temp_file("cognito-acl.json", COGNITO_ACL));
    })
    .await;
    let mut dave = authed(
        &server,
        &token(json!({
            "sub": "dave",
            "cognito:groups": ["admins"],
            "scope": "openid sodp/write"
        })),
        "dave",
    )
    .await;
    let mut erin = authed(
        &server,
        &token(json!({
            "sub": "erin",
            "cognito:groups": ["users", "auditors"],
            "scope": "openid"
        })),
        "erin",
    )
    .await;
    // Generic-preset claim names mean nothing under the cognito preset.
    let mut frank = authed(
        &server,
        &token(json!({
            "sub": "frank",
            "groups": ["admins"],
            "roles": ["auditor"],
            "permissions": ["sodp/write"]
        })),
        "frank",
    )
    .await;
    let mut gina = authed(
        &server,
        &token(json!({"sub": "gina", "cognito:roles": ["auditor"]})),
        "gina",
    )
    .await;

    watch_allowed(&mut dave, "ops.deploys").await;
    write_allowed(&mut dave, "ops.deploys").await;
    watch_denied(&mut erin, "ops.deploys").await;
    write_denied(&mut erin, "ops.deploys").await;
    watch_denied(&mut frank, "ops.deploys").await;
    write_denied(&mut frank, "ops.deploys").await;

    // role:auditor (cognito:roles) and a literal `cognito:groups` claim.
    watch_allowed(&mut gina, "audit.log").await;
    watch_allowed(&mut erin, "audit.log").await;
    watch_denied(&mut dave, "audit.log").await;
    watch_denied(&mut frank, "audit.log").await;

    // {sub} capture.
    write_allowed(&mut erin, "users.erin.settings").await;
    write_denied(&mut dave, "users.erin.settings").await;
    // Not its own key: falls through to the catch-all "*" (read only).
    watch_allowed(&mut dave, "users.erin.settings").await;

    // The catch-all: anyone reads, nobody writes.
    for c in [&mut dave, &mut erin, &mut frank, &mut gina] {
        watch_allowed(c, "anything.at.all").await;
        write_denied(c, "anything.at.all").await;
    }
}

#[tokio::test]
async fn acl_without_auth_treats_everyone_as_anonymous() {
    let server = TestServer::with(|config| {
        config.security.acl_file = Some(temp_file("anon-acl.json", KEYCLOAK_ACL));
    })
    .await;
    let mut c = server.client().await;
    assert_eq!(c.hello.body.get("auth"), Some(&Value::Bool(false)));
    watch_allowed(&mut c, "public.news").await;
    write_denied(&mut c, "public.news").await;
    // {sub} never matches an anonymous session.
    watch_denied(&mut c, "users.alice.profile").await;
    write_denied(&mut c, "users.alice.profile").await;
}

// ---------------------------------------------------------------- schema

const SCHEMA: &str = r#"{
  "t.str": "String",
  "t.int": "Int",
  "t.float": "Float",
  "t.bool": "Bool",
  "t.obj": "Object",
  "t.arr": "Array",
  "t.any": "Any",
  "t.maybe": { "type": "String", "nullable": true },
  "player.pos": { "type": "Object", "required": ["x", "y"],
                  "fields": { "x": "Float", "y": "Float",
                              "meta": { "type": "Object", "fields": { "tag": "String" } } } },
  "game.moves": { "type": "Array", "items": { "type": "Object", "fields": { "n": "Int" } } },
  "room.members": { "type": "Object", "fields": { "alice": "String", "bob": "String" } },
  "users.*": "Object"
}"#;

async fn schema_server() -> TestServer {
    TestServer::with(|config| {
        config.security.schema_file = Some(temp_file("schema.json", SCHEMA));
    })
    .await
}

/// The CALL must fail with 422 naming `path` and `expected`, and change
/// nothing in the store.
async fn refused_422(
    server: &TestServer,
    c: &mut TestClient,
    method: &str,
    args: serde_json::Value,
    path: &str,
    expected: &str,
) {
    let key = args["state"].as_str().unwrap().to_owned();
    let before = server.shared.store.snapshot(&key);
    let r = c.call(method, args.clone()).await;
    assert_failed(&r, 422, &format!("{path}: "));
    assert_failed(&r, 422, expected);
    let after = server.shared.store.snapshot(&key);
    assert_eq!(
        (after.version, after.initialized, &after.value),
        (before.version, before.initialized, &before.value),
        "{method} {args} changed the store"
    );
}

#[tokio::test]
async fn schema_each_type_and_nullable() {
    let server = schema_server().await;
    let mut c = server.client().await;
    let accepted = [
        ("t.str", json!("text")),
        ("t.int", json!(-3)),
        ("t.float", json!(1.5)),
        ("t.float", json!(2)), // Float accepts an Int.
        ("t.bool", json!(true)),
        ("t.obj", json!({"anything": [1, "x"]})),
        ("t.arr", json!([1, "mixed", null])),
        ("t.any", json!({"a": 1})),
        ("t.any", json!(null)),
        ("t.maybe", json!("text")),
        ("t.maybe", json!(null)),
        ("undeclared.key", json!(42)),
    ];
    for (key, value) in accepted {
        c.ok("state.set", json!({"state": key, "value": value}))
            .await;
    }
    let refused = [
        ("t.str", json!(5), "expected String, got int"),
        ("t.str", json!(null), "expected String, got nil"),
        ("t.int", json!(1.5), "expected Int, got float"),
        ("t.int", json!("3"), "expected Int, got string"),
        ("t.float", json!("1.5"), "expected Float"),
        ("t.bool", json!(1), "expected Bool"),
        ("t.obj", json!([1]), "expected Object, got array"),
        ("t.arr", json!({"0": 1}), "expected Array, got map"),
        ("t.maybe", json!(7), "expected String or null, got int"),
        ("users.alice", json!("not an object"), "expected Object"),
    ];
    for (key, value, expected) in refused {
        refused_422(
            &server,
            &mut c,
            "state.set",
            json!({"state": key, "value": value}),
            "/",
            expected,
        )
        .await;
    }
    // A first write that is refused leaves the key uninitialised.
    refused_422(
        &server,
        &mut c,
        "state.set",
        json!({"state": "users.bob", "value": 1}),
        "/",
        "expected Object",
    )
    .await;
    assert!(!server.shared.store.snapshot("users.bob").initialized);
}

#[tokio::test]
async fn schema_nested_fields_required_and_arrays_with_items() {
    let server = schema_server().await;
    let mut c = server.client().await;
    // Undeclared fields are allowed; declared ones may be absent.
    c.ok(
        "state.set",
        json!({"state": "player.pos", "value": {"x": 1, "y": 2.5, "extra": "ok"}}),
    )
    .await;
    c.ok(
        "state.set",
        json!({"state": "player.pos", "value": {"x": 1, "y": 2, "meta": {"tag": "a"}}}),
    )
    .await;
    for (value, path, expected) in [
        (json!({"x": 1}), "/y", "required field missing"),
        (
            json!({"x": "left", "y": 0}),
            "/x",
            "expected Float, got string",
        ),
        (
            json!({"x": 0, "y": 0, "meta": {"tag": 9}}),
            "/meta/tag",
            "expected String, got int",
        ),
        (
            json!({"x": 0, "y": 0, "meta": "flat"}),
            "/meta",
            "expected Object, got string",
        ),
    ] {
        refused_422(
            &server,
            &mut c,
            "state.set",
            json!({"state": "player.pos", "value": value}),
            path,
            expected,
        )
        .await;
    }

    c.ok(
        "state.set",
        json!({"state": "game.moves", "value": [{"n": 1}, {"n": 2, "note": "x"}]}),
    )
    .await;
    for (method, args, path, expected) in [
        (
            "state.set",
            json!({"state": "game.moves", "value": [{"n": 1}, {"n": "two"}]}),
            "/1/n",
            "expected Int, got string",
        ),
        (
            "state.set",
            json!({"state": "game.moves", "value": [{"n": 1}, 5]}),
            "/1",
            "expected Object, got int",
        ),
        (
            "state.set_in",
            json!({"state": "game.moves", "path": "/-", "value": {"n": 1.5}}),
            "/2/n",
            "expected Int, got float",
        ),
        (
            "state.set_in",
            json!({"state": "game.moves", "path": "/0/n", "value": null}),
            "/0/n",
            "expected Int, got nil",
        ),
        (
            "state.set",
            json!({"state": "game.moves", "value": {"n": 1}}),
            "/",
            "expected Array, got map",
        ),
    ] {
        refused_422(&server, &mut c, method, args, path, expected).await;
    }
    c.ok(
        "state.set_in",
        json!({"state": "game.moves", "path": "/-", "value": {"n": 3}}),
    )
    .await;
    assert_eq!(
        server.shared.store.snapshot("game.moves").value,
        v(json!([{"n": 1}, {"n": 2, "note": "x"}, {"n": 3}]))
    );
}

#[tokio::test]
async fn schema_breaking_patch_set_in_and_presence_change_nothing_and_send_no_delta() {
    let server = schema_server().await;
    let mut watcher = server.client().await;
    let mut writer = server.client().await;
    let value = json!({"x": 1, "y": 2, "meta": {"tag": "a"}});
    writer
        .ok("state.set", json!({"state": "player.pos", "value": value}))
        .await;
    watcher.watch("player.pos").await;
    watcher.watch("room.members").await;

    for (method, args, path, expected) in [
        (
            "state.patch",
            json!({"state": "player.pos", "patch": {"meta": {"tag": 5}}}),
            "/meta/tag",
            "expected String, got int",
        ),
        (
            "state.patch",
            json!({"state": "player.pos", "patch": {"x": "left"}}),
            "/x",
            "expected Float, got string",
        ),
        (
            "state.patch",
            json!({"state": "player.pos", "patch": {"y": null}}),
            "/y",
            "expected Float, got nil",
        ),
        (
            "state.set_in",
            json!({"state": "player.pos", "path": "/meta/tag", "value": [1]}),
            "/meta/tag",
            "expected String, got array",
        ),
        (
            "state.presence",
            json!({"state": "room.members", "path": "/alice", "value": 5}),
            "/alice",
            "expected String, got int",
        ),
    ] {
        refused_422(&server, &mut writer, method, args, path, expected).await;
    }
    watcher.expect_silence(Duration::from_millis(150)).await;
    assert_eq!(
        server.shared.store.snapshot("player.pos").value,
        v(value.clone())
    );

    // A refused presence binds nothing: the writer leaving removes nothing.
    let version = writer
        .ok(
            "state.presence",
            json!({"state": "room.members", "path": "/bob", "value": "here"}),
        )
        .await;
    assert_eq!(
        watcher.delta().await,
        (version, vec![DeltaOp::add("/", v(json!({"bob": "here"})))])
    );
    close(writer).await;
    let (_, ops) = watcher.delta().await;
    assert_eq!(ops, vec![DeltaOp::remove("/bob")]);
    watcher.expect_silence(Duration::from_millis(100)).await;

    // A valid patch still goes through.
    let mut writer = server.client().await;
    let version = writer
        .ok(
            "state.patch",
            json!({"state": "player.pos", "patch": {"meta": {"tag": "b"}}}),
        )
        .await;
    assert_eq!(
        watcher.delta().await,
        (version, vec![DeltaOp::update("/meta/tag", v(json!("b")))])
    );
}

// ----------------------------------------------------------- rate limits

#[tokio::test]
async fn write_rate_limit_hit_and_recovered() {
    let server = TestServer::with(|config| {
        config.security.rate_writes_per_sec = 3;
        config.security.rate_watches_per_sec = 2;
    })
    .await;
    let mut c = server.client().await;
    let caps = c.hello.body.get("capabilities").unwrap();
    assert_eq!(caps.get("rate_limit_writes"), Some(&Value::Int(3)));
    assert_eq!(caps.get("rate_limit_watches"), Some(&Value::Int(2)));

    for i in 0..3 {
        c.ok("state.set", json!({"state": "counter", "value": i}))
            .await;
    }
    let r = c
        .call("state.set", json!({"state": "counter", "value": 99}))
        .await;
    assert_failed(&r, 429, "rate limit");
    assert_eq!(server.shared.store.snapshot("counter").value, Value::Int(2));
    // Another session has its own bucket.
    let mut other = server.client().await;
    other
        .ok("state.set", json!({"state": "counter", "value": 3}))
        .await;
    // Open, and recovered once the bucket refills: wait for it, do not
    // guess how long (the refill itself is tested on paused time in
    // `session::tests::the_write_rate_limit_runs_on_paused_time`).
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let r = c
            .call("state.set", json!({"state": "counter", "value": 10}))
            .await;
        if r.get("success") == Some(&Value::Bool(true)) {
            break;
        }
        assert_failed(&r, 429, "rate limit");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bucket never refilled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn watch_rate_limit_counts_each_key_and_recovers() {
    let server = TestServer::with(|config| {
        config.security.rate_watches_per_sec = 2;
    })
    .await;
    let mut c = server.client().await;
    let caps = c.hello.body.get("capabilities").unwrap();
    assert_eq!(caps.get("rate_limit_watches"), Some(&Value::Int(2)));
    assert!(caps.get("rate_limit_writes").is_none());

    // A three-key WATCH: two fit the burst, the third is refused alone.
    c.send(
        FrameType::Watch,
        10,
        v(json!({"states": ["w.a", "w.b", "w.c"]})),
    )
    .await;
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let f = c.recv().await;
        if f.kind == FrameType::Error {
            assert_eq!(f.body.get("code").and_then(Value::as_i64), Some(429));
            assert!(message_of(&f.body).contains("rate limit"));
        }
        kinds.push(f.kind);
    }
    assert_eq!(
        kinds,
        [FrameType::StateInit, FrameType::StateInit, FrameType::Error]
    );
    // RESUME counts too.
    c.send(
        FrameType::Resume,
        11,
        v(json!({"state": "w.d", "since_version": 0})),
    )
    .await;
    expect_error(&mut c, 429, "rate limit").await;
    // Writes are not limited here, and the connection is open.
    c.ok("state.set", json!({"state": "w.a", "value": 1})).await;
    let (_, _) = c.delta().await;
    // Recovered once the bucket refills (waited for, not guessed).
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        c.send(FrameType::Watch, 12, v(json!({"state": "w.c"})))
            .await;
        let f = c.recv().await;
        if f.kind == FrameType::StateInit {
            break;
        }
        assert_eq!(
            f.body.get("code").and_then(Value::as_i64),
            Some(429),
            "{f:?}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bucket never refilled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --------------------------------------------------------------- origins

#[tokio::test]
async fn allowed_origin_connects_refused_origin_gets_403_before_any_session() {
    let server = TestServer::with(|config| {
        config.security.allowed_origins =
            Some("https://app.example.com, https://*.trusted.test".into());
    })
    .await;
    for origin in [
        "https://evil.example.com",
        "http://app.example.com",
        "https://app.example.com.evil.test",
        "https://trusted.test",
        "null",
    ] {
        assert_eq!(
            connect_with_origin(&server, origin).await.err(),
            Some(403),
            "{origin}"
        );
        assert_eq!(server.shared.connections(), 0, "{origin}");
        assert_eq!(server.shared.policy.connections.active(), 0, "{origin}");
    }
    let mut ok = Vec::new();
    for origin in [
        "https://app.example.com",
        "HTTPS://APP.EXAMPLE.COM:443",
        "https://eu.trusted.test",
    ] {
        let mut c = connect_with_origin(&server, origin)
            .await
            .unwrap_or_else(|status| panic!("{origin}: HTTP {status}"));
        c.ok("state.set", json!({"state": "o", "value": origin}))
            .await;
        ok.push(c);
    }
    // No Origin header at all: a non-browser client, allowed.
    let mut plain = server.client().await;
    plain.watch("o").await;
    assert_eq!(server.shared.connections(), 4);
}

// ------------------------------------------------------ connection caps

#[tokio::test]
async fn total_connection_cap_refuses_with_503_and_frees_the_slot() {
    let server = TestServer::with(|config| {
        config.security.max_connections = 2;
    })
    .await;
    let a = connect_from(&server, [127, 0, 0, 1]).await.unwrap();
    let mut b = connect_from(&server, [127, 0, 0, 1]).await.unwrap();
    assert_eq!(connect_from(&server, [127, 0, 0, 1]).await.err(), Some(503));
    // The total cap counts every address.
    assert_eq!(connect_from(&server, [127, 0, 0, 2]).await.err(), Some(503));
    assert_eq!(server.shared.connections(), 2);
    close(a).await;
    let shared = server.shared.clone();
    eventually("the slot to be freed", || {
        shared.policy.connections.active() == 1
    })
    .await;
    let mut c = connect_from(&server, [127, 0, 0, 1])
        .await
        .expect("a slot was freed");
    c.ok("state.set", json!({"state": "k", "value": 1})).await;
    b.watch("k").await;
}

#[tokio::test]
async fn per_ip_connection_cap_refuses_with_503_and_frees_the_slot() {
    let server = TestServer::with(|config| {
        config.security.max_connections_per_ip = 1;
    })
    .await;
    let a = connect_from(&server, [127, 0, 0, 1]).await.unwrap();
    assert_eq!(connect_from(&server, [127, 0, 0, 1]).await.err(), Some(503));
    // Another address has its own allowance.
    let mut other = connect_from(&server, [127, 0, 0, 2])
        .await
        .expect("another address is not capped by the first");
    assert_eq!(connect_from(&server, [127, 0, 0, 2]).await.err(), Some(503));
    close(a).await;
    let shared = server.shared.clone();
    eventually("the slot to be freed", || {
        shared.policy.connections.active() == 1
    })
    .await;
    let mut again = connect_from(&server, [127, 0, 0, 1])
        .await
        .expect("the address's slot was freed");
    again.watch("k").await;
    other
        .ok("state.set", json!({"state": "k", "value": 1}))
        .await;
}

#[tokio::test]
async fn a_session_ended_by_auth_failure_frees_its_slot() {
    let server = TestServer::with(|config| {
        hs_only(config);
        config.security.max_connections = 1;
    })
    .await;
    for _ in 0..3 {
        let mut c = server.client().await;
        send_auth(&mut c, "garbage").await;
        expect_refused(&mut c, "malformed").await;
        all_sessions_gone(&server).await;
    }
    authed(
        &server,
        &hs256(&json!({"sub": "alice", "exp": unix_now() + 60})),
        "alice",
    )
    .await;
}

// ------------------------------------------------------------ the binary

const BIN: &str = env!("CARGO_BIN_EXE_sodp-server");

/// The binary, with no `SODP_*` security variable inherited from the test
/// environment.
fn binary() -> Command {
    let mut cmd = Command::new(BIN);
    for var in sodp_auth::env::ALL_VARS {
        cmd.env_remove(var);
    }
    cmd
}

#[tokio::test]

async fn binary_with_jwt_secret_in_the_environment_requires_auth() {
    let mut cmd = binary();
    cmd.arg("127.0.0.1:0")
        .env("SODP_JWT_SECRET", SECRET)
        .stderr(Stdio::piped());
    let mut server = Launched::spawn(cmd, false);
    let port = server.port;
    let mut c = TestClient::connect(&format!("ws://127.0.0.1:{port}")).await;
    assert_eq!(c.hello.body.get("auth"), Some(&Value::Bool(true)));
    let caps = c.hello.body.get("capabilities").unwrap();
    assert_eq!(caps.get("token_refresh"), Some(&Value::Bool(true)));
    let token = hs256(&json!({"sub": "alice", "exp": unix_now() + 60}));
    send_auth(&mut c, &token).await;
    expect_auth_ok(&mut c, "alice").await;
    // A refused token, for the log.
    let mut refused = TestClient::connect(&format!("ws://127.0.0.1:{port}")).await;
    let bad = hs256_with(b"wrong", &json!({"sub": "mallory", "exp": unix_now() + 60}));
    send_auth(&mut refused, &bad).await;
    expect_refused(&mut refused, "invalid token signature").await;
    // Neither the secret nor a token reaches the logs.
    drop(c);
    let _ = server.child.kill();
    let mut stderr = String::new();
    let _ = server
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr);
    assert!(!stderr.contains(SECRET), "secret logged: {stderr}");
    for t in [&token, &bad] {
        for part in t.split('.') {
            assert!(!stderr.contains(part), "token logged: {stderr}");
        }
    }
}

#[test]

fn binary_refuses_a_malformed_acl_file_naming_the_file_and_rule() {
    let acl = temp_file(
        "bad-acl.json",
        r#"{"rules": [
            {"pattern": "public.*", "read": ["*"]},
            {"pattern": "a.*.b", "read": ["*"]}
        ]}"#,
    );
    let out = binary()
        .arg("127.0.0.1:0")
        .env("SODP_ACL_FILE", &acl)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&acl.display().to_string()), "{stderr}");
    assert!(stderr.contains("rules[1]"), "{stderr}");
    assert!(stderr.contains("last segment"), "{stderr}");
}

#[tokio::test]
async fn token_expiry_is_not_postponed_by_a_stream_of_deliveries() {
    // The expiring session watches a key written back to back, so its task
    // is busy sending when `exp` comes; the expiry must not wait for a lull.
    let server = TestServer::with(hs_only).await;
    let mut writer = authed(
        &server,
        &hs256(&json!({"sub": "writer", "exp": unix_now() + 60})),
        "writer",
    )
    .await;
    let exp = unix_now() + 2;
    let mut c = authed(
        &server,
        &hs256(&json!({"sub": "alice", "exp": exp})),
        "alice",
    )
    .await;
    c.watch("busy").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let writes = tokio::spawn(async move {
        let mut i = 0;
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
            writer
                .ok("state.set", json!({"state": "busy", "value": i}))
                .await;
            i += 1;
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let f = tokio::time::timeout_at(deadline, c.recv())
            .await
            .expect("the session outlived its token by seconds");
        if f.kind == FrameType::Error {
            assert_eq!(f.body.get("code").and_then(Value::as_i64), Some(401));
            break;
        }
    }
    let at = unix_now_f64();
    assert!(
        at < exp as f64 + 1.5,
        "closed at {at}, long after exp {exp}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writes.await.unwrap();
}
