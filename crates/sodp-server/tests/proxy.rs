//! `--trusted-proxies` over real sockets: `X-Forwarded-For` decides which
//! address the per-IP connection cap counts only when the TCP peer is a
//! trusted proxy; from anyone else it is ignored.

mod common;

use common::*;
use serde_json::json;
use sodp_server::proxy::TrustedProxies;

/// A server allowing one connection per client address, trusting `trusted`.
async fn capped(trusted: &str) -> TestServer {
    let trusted = TrustedProxies::parse(trusted).unwrap();
    TestServer::with(move |config| {
        config.security.max_connections_per_ip = 1;
        config.trusted_proxies = trusted;
    })
    .await
}

/// An upgrade (from 127.0.0.1) claiming to forward for `xff`; `Err(status)`
/// when refused with an HTTP status.
async fn forwarded_for(server: &TestServer, xff: &str) -> Result<TestClient, u16> {
    connect_with_header(&server.url(), "X-Forwarded-For", xff).await
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_an_untrusted_peer() {
    // The peer (127.0.0.1) is not in the list: every connection counts as
    // 127.0.0.1, whatever it claims.
    let server = capped("10.0.0.0/8").await;
    let _a = forwarded_for(&server, "203.0.113.1").await.unwrap();
    assert_eq!(forwarded_for(&server, "203.0.113.2").await.err(), Some(503));
    // Without any list, the same.
    let server = capped("").await;
    let _a = forwarded_for(&server, "203.0.113.1").await.unwrap();
    assert_eq!(forwarded_for(&server, "203.0.113.2").await.err(), Some(503));
}

#[tokio::test]
async fn forwarded_for_is_honoured_from_a_trusted_proxy() {
    let server = capped("127.0.0.1, 10.0.0.0/8").await;
    let mut a = forwarded_for(&server, "203.0.113.1").await.unwrap();
    // Another client behind the same proxy has its own allowance.
    let mut b = forwarded_for(&server, "203.0.113.2").await.unwrap();
    assert_eq!(forwarded_for(&server, "203.0.113.1").await.err(), Some(503));
    // The rightmost untrusted hop counts: a spoofed first entry does not
    // buy a new slot, an inner trusted proxy (10.0.0.7) is skipped.
    assert_eq!(
        forwarded_for(&server, "198.51.100.9, 203.0.113.2, 10.0.0.7")
            .await
            .err(),
        Some(503)
    );
    let mut c = forwarded_for(&server, "203.0.113.1, 203.0.113.3, 10.0.0.7")
        .await
        .expect("203.0.113.3 has a slot");
    a.ok("state.set", json!({"state": "k", "value": 1})).await;
    b.watch("k").await;
    c.watch("k").await;
}

/// A GET of `path` on `server` claiming to forward for `xff` (from
/// 127.0.0.1); the status line.
async fn page_for(server: &TestServer, path: &str, xff: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {xff}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_inspector_page_is_judged_by_the_client_a_trusted_proxy_names() {
    let server = TestServer::with(|config| {
        config.inspector.enabled = true;
        config.trusted_proxies = TrustedProxies::parse("127.0.0.1").unwrap();
    })
    .await;
    // A remote client behind the local proxy is not loopback: the page,
    // like its WebSocket, is refused.
    assert!(page_for(&server, "/inspector", "203.0.113.1")
        .await
        .contains(" 403 "));
    assert_eq!(
        forwarded_for(&server, "203.0.113.1").await.err(),
        None,
        "a plain upgrade is not the inspector's"
    );
    // A loopback client through the proxy is served.
    assert!(page_for(&server, "/inspector", "127.0.0.1")
        .await
        .contains(" 200 "));
    // An untrusted peer's claim changes nothing: it is loopback itself.
    let untrusted = TestServer::with(|config| config.inspector.enabled = true).await;
    assert!(page_for(&untrusted, "/inspector", "203.0.113.1")
        .await
        .contains(" 200 "));
}
