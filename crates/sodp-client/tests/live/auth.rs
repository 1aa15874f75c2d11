//! Authentication against a server started with `--jwt-secret`: static
//! tokens, rejected tokens, token providers, and in-band refresh keeping a
//! session alive past its first token's expiry. A server that refuses
//! `--jwt-secret` or `--acl-file` fails these tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sodp_client::{Client, Error, Status};

use crate::TestServer;

pub const SECRET: &str = "test-secret-of-sufficient-length-0123456789";

pub fn token(sub: &str, ttl_secs: u64) -> String {
    token_expiring(sub, now_secs() + ttl_secs)
}

pub fn token_expiring(sub: &str, exp: u64) -> String {
    let claims = serde_json::json!({"sub": sub, "exp": exp});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn auth_server() -> TestServer {
    TestServer::start_with(&["--jwt-secret", SECRET])
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_token_accepted_and_bad_token_stops_the_client() {
    let server = auth_server();
    let good = Client::builder(server.url())
        .token(token("alice", 60))
        .build()
        .unwrap();
    good.ready().await.unwrap();
    assert!(good.set("auth.k", &1).await.is_ok());

    let bad = Client::builder(server.url())
        .token("not-a-jwt")
        .reconnect_delay(Duration::from_millis(20))
        .build()
        .unwrap();
    assert!(matches!(bad.ready().await, Err(Error::Auth(_))));
    assert!(matches!(bad.status(), Status::Closed(Some(Error::Auth(_)))));

    let none = Client::builder(server.url()).build().unwrap();
    assert!(matches!(none.ready().await, Err(Error::Auth(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_refreshes_in_band_past_the_first_expiry() {
    let server = auth_server();
    // The `exp` of every token minted, in order.
    let minted = Arc::new(Mutex::new(Vec::<u64>::new()));
    let disconnects = Arc::new(AtomicUsize::new(0));
    let (m, d) = (minted.clone(), disconnects.clone());
    let client = Client::builder(server.url())
        .token_provider(move || {
            let exp = now_secs() + 2;
            m.lock().unwrap().push(exp);
            async move { Ok::<_, String>(token_expiring("alice", exp)) }
        })
        .on_disconnect(move || {
            d.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    client.ready().await.unwrap();
    // The server ends a session with ERROR 401 when its token expires (no
    // leeway by default). Wait, on the wall clock the server also reads,
    // until the first two tokens are a second past their expiry and a third
    // has been minted: only in-band refreshes can have kept this session.
    crate::eventually_within(
        Duration::from_secs(15),
        "two expiries survived and three tokens minted",
        || (now_secs(), minted.lock().unwrap().clone()),
        |(now, exps)| exps.len() >= 3 && *now > exps[1] + 1,
    )
    .await;
    assert_eq!(
        disconnects.load(Ordering::SeqCst),
        0,
        "the session never dropped"
    );
    assert_eq!(client.status(), Status::Connected);
    assert!(client.set("auth.refresh", &true).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_expiry_of_a_static_token_stops_the_client() {
    let server = auth_server();
    // `exp` has whole-second precision: 2 s leaves at least one second to
    // connect before the token expires.
    let client = Client::builder(server.url())
        .token(token("alice", 2))
        .reconnect_delay(Duration::from_millis(20))
        .build()
        .unwrap();
    client.ready().await.unwrap();
    let mut sub = client.subscribe("auth.expiring");
    // The server sends ERROR 401 at `exp` and closes; a static token cannot
    // get better, so the client stops and its streams end.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while sub.recv().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "stream ended after the live expiry");
    assert!(matches!(
        client.status(),
        Status::Closed(Some(Error::Auth(_)))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_denials_are_typed_and_keep_the_connection() {
    let acl = serde_json::json!({"rules": [
        {"pattern": "user.{sub}.*", "read": ["{sub}"], "write": ["{sub}"]},
        {"pattern": "public.*", "read": ["*"], "write": []}
    ]});
    let path = std::env::temp_dir().join(format!("sodp-client-acl-{}.json", std::process::id()));
    std::fs::write(&path, acl.to_string()).unwrap();
    let server =
        TestServer::start_with(&["--jwt-secret", SECRET, "--acl-file", path.to_str().unwrap()]);
    let errors = Arc::new(std::sync::Mutex::new(Vec::<Error>::new()));
    let e = errors.clone();
    let client = Client::builder(server.url())
        .token(token("alice", 60))
        .on_error(move |err| e.lock().unwrap().push(err.clone()))
        .build()
        .unwrap();
    client.ready().await.unwrap();

    assert!(client.set("user.alice.profile", &1).await.is_ok());
    assert!(matches!(
        client.set("public.news", &1).await,
        Err(Error::Call { code: 403, .. })
    ));
    let _denied = client.subscribe("user.bob.profile");
    let mut allowed = client.subscribe("public.news");
    let init = tokio::time::timeout(Duration::from_secs(5), allowed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(init.meta.source, sodp_client::Source::Init);
    crate::eventually(
        "the 403 for the denied watch",
        || errors.lock().unwrap().clone(),
        |e| !e.is_empty(),
    )
    .await;
    assert!(
        matches!(&errors.lock().unwrap()[0], Error::Server { code: 403, .. }),
        "{errors:?}"
    );
    assert_eq!(client.status(), Status::Connected);
    let _ = std::fs::remove_file(path);
}
