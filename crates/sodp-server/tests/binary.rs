//! The `sodp-server` binary itself: defaults, flags, SIGTERM.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_sodp-server");

#[tokio::test]
async fn sigterm_closes_sessions_and_exits_zero() {
    let mut cmd = Command::new(BIN);
    cmd.arg("127.0.0.1:0") // the reference server's positional form
        .stderr(Stdio::null());
    let mut server = Launched::spawn(cmd, false);
    let port = server.port;
    let mut c = TestClient::connect(&format!("ws://127.0.0.1:{port}")).await;
    c.ok(
        "state.presence",
        json!({"state": "p", "path": "/me", "value": 1}),
    )
    .await;
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(c.expect_close().await, Some(1001));
    let status = tokio::task::spawn_blocking(move || server.child.wait())
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
    let out = Command::new(BIN).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with(concat!(
            "sodp-server ",
            env!("CARGO_PKG_VERSION"),
            " (commit "
        )),
        "{version}"
    );
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
    let mut cmd = Command::new(BIN);
    cmd.args(["--addr", "127.0.0.1:0", "--health-port", "0"])
        .stderr(Stdio::null());
    let server = Launched::spawn(cmd, true);
    let health = server.health_port.unwrap();
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
    assert!(
        ok.contains("\"memory\":{") && ok.contains("\"max\":"),
        "{ok}"
    );
    assert!(get("/").await.starts_with("HTTP/1.1 404"));
    drop(server);
}

#[test]
fn the_reference_positional_form_with_an_empty_log_dir_runs_in_memory() {
    let schema = std::env::temp_dir().join(format!("sodp-bin-schema-{}.json", std::process::id()));
    std::fs::write(&schema, "{}").unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["127.0.0.1:0", "", schema.to_str().unwrap()])
        .stderr(Stdio::null());
    let server = Launched::spawn(cmd, false);
    assert!(server.port > 0);
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let mut cmd = Command::new(BIN);
    cmd.args(["--addr", "127.0.0.1:0", "--log-format", "json"])
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped());
    let mut server = Launched::spawn(cmd, false);
    let mut c = TestClient::connect(&format!("ws://127.0.0.1:{}", server.port)).await;
    c.call("state.nope", json!({"state": "k"})).await;
    drop(c);
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    server.child.wait().unwrap();
    let mut stderr = String::new();
    use std::io::Read;
    server
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 3, "{stderr}");
    for l in &lines {
        assert!(
            l.get("level").is_some() && l.get("timestamp").is_some(),
            "{l}"
        );
    }
    // A refused call is logged with its session, method and code as fields.
    let refused = lines
        .iter()
        .find(|l| l.get("message").and_then(|m| m.as_str()) == Some("call refused"))
        .unwrap_or_else(|| panic!("no refused call in {stderr}"));
    assert_eq!(refused.get("code").and_then(|c| c.as_u64()), Some(404));
    assert_eq!(
        refused.get("method").and_then(|m| m.as_str()),
        Some("state.nope")
    );
    assert!(refused.get("session").is_some(), "{refused}");
}
