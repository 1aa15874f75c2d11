//! Authentication against a server started with `--jwt-secret`: static
//! tokens, rejected tokens, token providers, and in-band refresh keeping a
//! session alive past its first token's expiry.
//!
//! Skipped (with a note on stderr) while the server build has no JWT support.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sodp_client::{Client, Error, Status};

use crate::TestServer;

pub const SECRET: &str = "test-secret-of-sufficient-length-0123456789";

pub fn token(sub: &str, ttl_secs: u64) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + ttl_secs;
    let claims = serde_json::json!({"sub": sub, "exp": exp});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn auth_server() -> Option<TestServer> {
    let server = TestServer::try_start_with(&["--jwt-secret", SECRET]);
    if server.is_none() {
        eprintln!("skipped: this sodp-server build does not support --jwt-secret yet");
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_token_accepted_and_bad_token_stops_the_client() {
    let Some(server) = auth_server() else { return };
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
    let Some(server) = auth_server() else { return };
    let minted = Arc::new(AtomicUsize::new(0));
    let disconnects = Arc::new(AtomicUsize::new(0));
    let (m, d) = (minted.clone(), disconnects.clone());
    let client = Client::builder(server.url())
        .token_provider(move || {
            m.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, String>(token("alice", 2)) }
        })
        .on_disconnect(move || {
            d.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    client.ready().await.unwrap();
    // Well past the first token's 2 s lifetime.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(
        disconnects.load(Ordering::SeqCst),
        0,
        "the session never dropped"
    );
    assert!(
        minted.load(Ordering::SeqCst) >= 3,
        "refreshed before each expiry"
    );
    assert!(client.set("auth.refresh", &true).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_expiry_of_a_static_token_stops_the_client() {
    let Some(server) = auth_server() else { return };
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
        TestServer::try_start_with(&["--jwt-secret", SECRET, "--acl-file", path.to_str().unwrap()]);
    let Some(server) = server else {
        eprintln!("skipped: this sodp-server build does not support --acl-file");
        return;
    };
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
