//! `wss://` against a server started with `--tls-cert`/`--tls-key` and a CA
//! made by the test: trusting that CA works, trusting another (or only the
//! public roots) is refused with a TLS error, and a certificate reloaded by
//! SIGHUP is what new connections get while an old connection stays up.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sodp_client::{Client, Error};

use crate::test_ca::TestCa;
use crate::TestServer;

fn tls_server(ca: &TestCa) -> TestServer {
    let files = ca.issue_server();
    let (cert, key) = (files.cert.to_str().unwrap(), files.key.to_str().unwrap());
    TestServer::start_with(&["--tls-cert", cert, "--tls-key", key])
}

/// A client for `url` trusting `ca_pem` only; `ready()` reports the first
/// failure instead of retrying.
fn client_trusting(url: &str, ca_pem: Option<&str>) -> Client {
    let mut builder = Client::builder(url)
        .retry_first_connect(false)
        .reconnect_delay(Duration::from_millis(50))
        .call_timeout(Some(Duration::from_secs(5)));
    if let Some(pem) = ca_pem {
        builder = builder.tls_ca_pem(pem);
    }
    builder.build().unwrap()
}

async fn ready(client: &Client) -> Result<(), Error> {
    tokio::time::timeout(Duration::from_secs(5), client.ready())
        .await
        .expect("ready or failed in time")
}

#[tokio::test]
async fn wss_with_the_test_ca_and_a_wrong_ca_is_refused() {
    let ca = TestCa::new("client");
    let server = tls_server(&ca);
    let client = client_trusting(&server.wss_url(), Some(&ca.ca_pem));
    ready(&client).await.expect("connected over wss");
    let mut sub = client.subscribe("k");
    crate::next(&mut sub).await;
    client.set("k", &json!({"over": "tls"})).await.unwrap();
    assert_eq!(
        crate::next(&mut sub).await.value.to_json(),
        json!({"over": "tls"})
    );

    let other = TestCa::new("stranger");
    for trust in [Some(other.ca_pem.as_str()), None] {
        let refused = client_trusting(&server.wss_url(), trust);
        match ready(&refused).await {
            Err(Error::Connection(m)) => assert!(
                m.contains("TLS") && m.contains("UnknownIssuer"),
                "a clear TLS error: {m}"
            ),
            other => panic!("expected a TLS refusal, got {other:?}"),
        }
    }

    // Not a certificate at all: refused when the client is built.
    let e = Client::builder(server.wss_url())
        .tls_ca_pem("nothing here")
        .build()
        .unwrap_err();
    assert!(
        matches!(&e, Error::Config(m) if m.contains("TLS CA")),
        "{e}"
    );
}

#[tokio::test]
async fn a_certificate_reloaded_by_sighup_serves_new_clients_and_old_ones_stay() {
    let ca = TestCa::new("before");
    let server = tls_server(&ca);
    let connects = Arc::new(AtomicUsize::new(0));
    let counter = connects.clone();
    let old = Client::builder(server.wss_url())
        .tls_ca_pem(ca.ca_pem.as_str())
        .on_connect(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    ready(&old).await.unwrap();

    // The renewal comes from another CA, so a client trusting only that CA
    // connects only if it is served the new certificate.
    let renewed = TestCa::new("after");
    renewed.issue_into(&ca.dir);
    let still_old = client_trusting(&server.wss_url(), Some(&renewed.ca_pem));
    assert!(ready(&still_old).await.is_err(), "not before the SIGHUP");
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let new = loop {
        let c = client_trusting(&server.wss_url(), Some(&renewed.ca_pem));
        if ready(&c).await.is_ok() {
            break c;
        }
        assert!(tokio::time::Instant::now() < deadline, "never reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    new.set("k", &1).await.unwrap();
    // The connection made before the reload is still up: never reconnected.
    old.set("k", &2).await.unwrap();
    assert_eq!(connects.load(Ordering::SeqCst), 1);
}
