//! End-to-end tests of the `sodp` binary against the real server.

#[path = "../../sodp-client/tests/common/mod.rs"]
mod common;
#[path = "../../sodp-client/tests/common/test_ca.rs"]
mod test_ca;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{json, Value};

fn sodp(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sodp"))
        .args(args)
        .env("SODP_URL", url)
        .env_remove("SODP_TOKEN")
        .output()
        .expect("run sodp")
}

/// Runs `sodp`, asserts success, and parses its single line of output.
fn ok_json(url: &str, args: &[&str]) -> Value {
    let out = sodp(url, args);
    assert!(
        out.status.success(),
        "sodp {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// Runs `sodp get KEY` until it prints `want` (10 s at most): for changes
/// the server makes on its own time, like releasing a dead holder's presence.
fn wait_for_value(url: &str, key: &str, want: &Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = ok_json(url, &["get", key]);
        if got == *want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} is still {got}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A long-running `sodp` whose stdout lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(url: &str, args: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sodp"))
            .args(args)
            .arg("--url")
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sodp");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    fn next(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a line from sodp");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// Sends SIGINT (as Ctrl-C would) and returns the exit status.
    fn interrupt(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        self.child.wait().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_sees_what_set_and_patch_write() {
    let server = TestServer::start();
    let url = server.url();
    let watch = Running::start(&url, &["watch", "game.player", "game.score"]);
    let mut inits = vec![watch.next(), watch.next()];
    inits.sort_by_key(|l| l["key"].as_str().unwrap().to_owned());
    assert_eq!(
        inits,
        [
            json!({"key": "game.player", "version": 0, "source": "init", "value": null}),
            json!({"key": "game.score", "version": 0, "source": "init", "value": null}),
        ]
    );

    let v1 = ok_json(
        &url,
        &["set", "game.player", r#"{"name":"Alice","health":100}"#],
    );
    let line = watch.next();
    assert_eq!(line["version"], v1["version"]);
    assert_eq!(
        line,
        json!({"key": "game.player", "version": v1["version"], "source": "delta",
               "value": {"name": "Alice", "health": 100}})
    );
    ok_json(&url, &["patch", "game.player", r#"{"health":80}"#]);
    assert_eq!(
        watch.next()["value"],
        json!({"name": "Alice", "health": 80})
    );
    ok_json(&url, &["set", "game.score", "42"]);
    assert_eq!(watch.next()["value"], json!(42));
    assert!(watch.interrupt().success(), "Ctrl-C is a clean exit");
}

#[test]
fn watch_ops_prints_raw_delta_ops() {
    let server = TestServer::start();
    let url = server.url();
    ok_json(&url, &["set", "k", r#"{"a":1}"#]);
    let watch = Running::start(&url, &["watch", "--ops", "k"]);
    assert_eq!(
        watch.next()["value"],
        json!({"a": 1}),
        "baselines print the value"
    );
    ok_json(&url, &["set-in", "k", "/b/c", "true"]);
    let line = watch.next();
    assert_eq!(line["source"], "delta");
    // set_in reports the location it set; applying creates the intermediates.
    assert_eq!(
        line["ops"],
        json!([{"op": "ADD", "path": "/b/c", "value": true}])
    );
    assert!(line.get("value").is_none());
}

#[test]
fn one_shot_commands() {
    let server = TestServer::start();
    let url = server.url();
    assert_eq!(ok_json(&url, &["get", "none.yet"]), Value::Null);
    let v = ok_json(&url, &["set", "k", r#"{"list":[1]}"#]);
    assert!(v["version"].as_u64().unwrap() > 0);
    ok_json(&url, &["set-in", "k", "/list/-", "2"]);
    assert_eq!(ok_json(&url, &["get", "k"]), json!({"list": [1, 2]}));
    let data = ok_json(
        &url,
        &["call", "state.patch", r#"{"state":"k","patch":{"x":"y"}}"#],
    );
    assert!(data["version"].is_u64());
    assert_eq!(
        ok_json(&url, &["get", "k"]),
        json!({"list": [1, 2], "x": "y"})
    );
    ok_json(&url, &["delete", "k"]);
    assert_eq!(ok_json(&url, &["get", "k"]), Value::Null);
}

#[test]
fn presence_is_held_until_interrupted() {
    let server = TestServer::start();
    let url = server.url();
    let held = Running::start(
        &url,
        &["presence", "room.cursors", "/alice", r#"{"line":3}"#],
    );
    assert!(held.next()["version"].is_u64());
    assert_eq!(
        ok_json(&url, &["get", "room.cursors"]),
        json!({"alice": {"line": 3}})
    );
    assert!(held.interrupt().success());
    wait_for_value(&url, "room.cursors", &json!({}));

    // A holder killed outright (no goodbye) loses its entry too.
    let mut killed = Running::start(&url, &["presence", "room.cursors", "/bob", "2"]);
    killed.next();
    assert_eq!(ok_json(&url, &["get", "room.cursors"]), json!({"bob": 2}));
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    wait_for_value(&url, "room.cursors", &json!({}));
}

#[test]
fn bad_input_and_failures_give_clear_messages_and_exit_codes() {
    let server = TestServer::start();
    let url = server.url();

    let out = sodp(&url, &["set", "k", "{not json"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("sodp: error: invalid JSON for VALUE:"),
        "{err}"
    );

    let out = sodp(&url, &["set", "k", "hello"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("strings need quotes"));

    let out = sodp(&url, &["patch", "k", "[1]"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PATCH must be a JSON object"));

    let out = sodp(&url, &["call", "no.such", "{}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("call failed (404)"));

    let out = sodp(&url, &["set", "bad key", "1"]);
    assert_eq!(out.status.code(), Some(1));

    let port = common::refused_port();
    let down = format!("ws://127.0.0.1:{port}");
    for args in [&["get", "k"][..], &["set", "k", "1"], &["watch", "k"]] {
        let out = sodp(&down, args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            format!("sodp: error: cannot connect to {down}: connection refused")
        );
    }

    let out = sodp("http://nowhere", &["get", "k"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported URL scheme"));
}

#[test]
fn help_on_every_subcommand() {
    for sub in [
        "watch", "get", "set", "patch", "set-in", "delete", "presence", "call",
    ] {
        let out = sodp("ws://unused", &[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: sodp"), "{sub}: {text}");
    }
    let out = sodp("ws://unused", &["--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes"));
    let out = sodp("ws://unused", &[]);
    assert_eq!(out.status.code(), Some(2), "no subcommand is a usage error");
}

#[test]
fn watch_and_presence_survive_a_server_restart() {
    let mut server = TestServer::start();
    let url = server.url();
    let watch = Running::start(&url, &["watch", "room.cursors"]);
    assert_eq!(watch.next()["source"], "init");
    let held = Running::start(&url, &["presence", "room.cursors", "/bob", "1"]);
    held.next();
    assert_eq!(watch.next()["value"], json!({"bob": 1}));

    server.restart();
    // The watcher reconnects and gets a new baseline; the presence holder
    // reconnects and sets its entry again.
    let mut seen = vec![];
    while seen.last() != Some(&json!({"bob": 1})) {
        seen.push(watch.next()["value"].clone());
        assert!(seen.len() < 5, "{seen:?}");
    }
    ok_json(&url, &["set-in", "room.cursors", "/carol", "2"]);
    assert_eq!(watch.next()["value"], json!({"bob": 1, "carol": 2}));
}

#[test]
fn token_option_and_auth_failures() {
    const SECRET: &str = "test-secret-of-sufficient-length-0123456789";
    let server = TestServer::start_with(&["--jwt-secret", SECRET]);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "alice", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let url = server.url();
    let v = ok_json(&url, &["set", "k", "1", "--token", &token]);
    assert!(v["version"].is_u64());

    let out = sodp(&url, &["get", "k", "--token", "garbage"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("authentication failed"));

    let out = sodp(&url, &["get", "k"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "no token for a server that needs one"
    );
}

#[test]
fn ca_file_for_wss_and_a_wrong_ca_is_refused() {
    let ca = test_ca::TestCa::new("cli");
    let files = ca.issue_server();
    let server = TestServer::start_with(&[
        "--tls-cert",
        files.cert.to_str().unwrap(),
        "--tls-key",
        files.key.to_str().unwrap(),
    ]);
    let url = server.wss_url();
    let ca_file = ca.ca_file();
    let ca_file = ca_file.to_str().unwrap();
    let v = ok_json(&url, &["set", "k", "{\"a\":1}", "--ca-file", ca_file]);
    assert!(v["version"].is_u64(), "{v}");
    // The same through the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_sodp"))
        .args(["get", "k"])
        .env("SODP_URL", &url)
        .env("SODP_CA_FILE", ca_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!({"a": 1})
    );

    let other = test_ca::TestCa::new("cli-other");
    for args in [
        vec!["get", "k", "--ca-file", other.ca_file().to_str().unwrap()],
        vec!["get", "k"],
    ] {
        let out = sodp(&url, &args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("TLS") && stderr.contains("UnknownIssuer"),
            "{args:?}: {stderr}"
        );
    }
    let out = sodp(&url, &["get", "k", "--ca-file", "/nonexistent/ca.pem"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ca.pem"));
}
