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
    server.terminate();
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
    // Cluster mode with a Redis that is not there: a clear refusal to start.
    let out = Command::new(BIN)
        .args(["127.0.0.1:0", "--redis-url", "redis://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach Redis at redis://127.0.0.1:1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args([
            "127.0.0.1:0",
            "--redis-url",
            "redis://h",
            "--data-dir",
            "/tmp/x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exclude each other"));
}

#[tokio::test]
async fn health_port_answers_health_only() {
    let mut cmd = Command::new(BIN);
    cmd.args(["--addr", "127.0.0.1:0", "--health-port", "0"])
        .stderr(Stdio::null());
    let server = Launched::spawn(cmd, true);
    let health = server.health_port.unwrap();
    let get = |path: &'static str| http_get(("127.0.0.1", health), path);
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
    server.terminate();
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

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("sodp-config-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// `--print-config` output of the binary with `args` and `env`.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--print-config")
        .env_remove("SODP_MAX_MEMORY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_file_precedence_flags_then_environment_then_file_then_defaults() {
    let file = temp_config(
        "precedence",
        "max_memory = 111111\nrate-writes-per-sec = 7\njwt_secret = \"s3cret-in-file\"\n",
    );
    let file = file.to_str().unwrap();
    let (ok, out, err) = print_config(&["--config", file], &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("max_memory = \"111111\"  # config file"),
        "{out}"
    );
    assert!(
        out.contains("rate_writes_per_sec = \"7\"  # config file"),
        "{out}"
    );
    assert!(out.contains("heartbeat_secs = \"30\"  # default"), "{out}");
    // Secrets never appear.
    assert!(out.contains("jwt_secret = \"<redacted>\""), "{out}");
    assert!(!out.contains("s3cret-in-file"), "{out}");
    let (_, out, _) = print_config(&["--config", file], &[("SODP_MAX_MEMORY", "222222")]);
    assert!(
        out.contains("max_memory = \"222222\"  # environment"),
        "{out}"
    );
    let (_, out, _) = print_config(
        &["--config", file, "--max-memory", "333333"],
        &[("SODP_MAX_MEMORY", "222222")],
    );
    assert!(out.contains("max_memory = \"333333\"  # flag"), "{out}");
}

#[test]
fn config_file_unknown_keys_are_an_error_naming_them() {
    let file = temp_config("unknown", "max_memroy = 1\nheartbeat_secs = 5\n");
    let out = Command::new(BIN)
        .args(["--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown option max_memroy"), "{err}");
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    // And a value of the wrong type for its option is clap's clear error.
    let file = temp_config("badtype", "max_memory = \"lots\"\n");
    let out = Command::new(BIN)
        .args(["--config", file.to_str().unwrap(), "--print-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-memory"));
}

#[test]
fn the_shipped_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/sodp.toml");
    let (ok, out, err) = print_config(&["--config", path], &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("metrics_port = \"9777\"  # config file"),
        "{out}"
    );
}

/// The server runs without transparent huge pages unless `--huge-pages`
/// (the kernel's `THP_enabled` of the process, in /proc).
/// The `THP_enabled:` field of a /proc/PID/status text.
fn thp_enabled(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_owned())
        .expect("THP_enabled in /proc/PID/status")
}

#[test]
fn transparent_huge_pages_are_off_unless_asked_for() {
    let thp = |extra: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["--addr", "127.0.0.1:0"])
            .args(extra)
            .stderr(Stdio::null());
        let mut server = Launched::spawn(cmd, false);
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        thp_enabled(&status)
    };
    // With the flag the server has what any process here has (1, or 0 on
    // a kernel built without THP).
    let ours = thp_enabled(&std::fs::read_to_string("/proc/self/status").unwrap());
    assert_eq!(thp(&[]), "0");
    assert_eq!(thp(&["--huge-pages"]), ours);
}
