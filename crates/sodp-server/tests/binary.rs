//! The `sodp-server` binary itself: defaults, flags, SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_sodp-server");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_health(port: u16) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_closes_sessions_and_exits_zero() {
    let port = free_port();
    let mut child = Command::new(BIN)
        .arg(format!("127.0.0.1:{port}")) // the reference server's positional form
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_health(port).await;
    let mut c = TestClient::connect(&format!("ws://127.0.0.1:{port}")).await;
    c.ok(
        "state.presence",
        json!({"state": "p", "path": "/me", "value": 1}),
    )
    .await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(c.expect_close().await, Some(1001));
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn help_and_unsupported_options() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--addr",
        "--max-message-bytes",
        "--history",
        "--heartbeat-secs",
        "SODP_MAX_FRAME_BYTES",
    ] {
        assert!(help.contains(flag), "--help should mention {flag}");
    }
    let out = Command::new(BIN)
        .args(["127.0.0.1:0", "--redis-url", "redis://x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not supported yet"));
}

#[tokio::test]
async fn health_port_answers_health_only() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (port, health) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args([
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--health-port",
            &health.to_string(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_health(health).await;
    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", health))
            .await
            .unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let ok = get("/health").await;
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.contains("\"status\":\"ok\""),
        "{ok}"
    );
    assert!(get("/").await.starts_with("HTTP/1.1 404"));
    let _ = child.kill();
    let _ = child.wait();
}
