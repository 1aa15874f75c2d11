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
fn watch_with_params_is_served() {
    let server = TestServer::start();
    let url = server.url();
    ok_json(&url, &["set", "k", "1"]);
    let watch = Running::start(&url, &["watch", "--params", r#"{"view":"compact"}"#, "k"]);
    assert_eq!(watch.next()["value"], json!(1));
    ok_json(&url, &["set", "k", "2"]);
    assert_eq!(watch.next()["value"], json!(2));
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

    let out = sodp(&url, &["watch", "--params", "{oops", "k"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid JSON for PARAMS"),
        "{:?}",
        out.stderr
    );

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
        "watch", "get", "set", "patch", "set-in", "delete", "presence", "call", "keys", "history",
        "tx",
    ] {
        let out = sodp("ws://unused", &[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: sodp"), "{sub}: {text}");
    }
    for sub in ["set", "patch", "set-in"] {
        let out = sodp("ws://unused", &[sub, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        for flag in ["--if-version", "--ttl", "--idempotency-key"] {
            assert!(text.contains(flag), "{sub} --help lacks {flag}: {text}");
        }
    }
    let out = sodp("ws://unused", &["--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("6 conflict"));
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

fn fails(url: &str, args: &[&str], code: i32) -> String {
    let out = sodp(url, args);
    assert_eq!(out.status.code(), Some(code), "sodp {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn conditional_ttl_and_idempotency_flags() {
    let server = TestServer::start();
    let url = server.url();
    let v = ok_json(&url, &["set", "cas.k", r#"{"n":1}"#, "--if-version", "0"])["version"]
        .as_u64()
        .unwrap();
    let err = fails(&url, &["set", "cas.k", "2", "--if-version", "0"], 6);
    assert!(err.contains(&format!("current version {v}")), "{err}");
    assert_eq!(
        ok_json(&url, &["get", "cas.k", "--meta"]),
        json!({"version": v, "initialized": true, "value": {"n": 1}})
    );
    let vs = v.to_string();
    let v2 = ok_json(&url, &["patch", "cas.k", r#"{"n":2}"#, "--if-version", &vs])["version"]
        .as_u64()
        .unwrap();
    fails(
        &url,
        &["set-in", "cas.k", "/m", "1", "--if-version", &vs],
        6,
    );
    fails(&url, &["delete", "cas.k", "--if-version", &vs], 6);
    ok_json(&url, &["delete", "cas.k", "--if-version", &v2.to_string()]);
    assert_eq!(
        ok_json(&url, &["get", "cas.k", "--meta"])["initialized"],
        json!(false)
    );

    // --idempotency-key: a re-run of the same command is applied once.
    let append = [
        "set-in",
        "orders",
        "/-",
        r#""o-1""#,
        "--idempotency-key",
        "o-1",
    ];
    let first = ok_json(&url, &append);
    assert_eq!(ok_json(&url, &append), first, "the original result");
    assert_eq!(ok_json(&url, &["get", "orders"]), json!(["o-1"]));

    // --ttl: gone after the deadline.
    let watch = Running::start(&url, &["watch", "ttl.k"]);
    assert!(watch.next()["expires_at"].is_null(), "no deadline yet");
    ok_json(&url, &["set", "ttl.k", "1", "--ttl", "300ms"]);
    assert!(watch.next()["expires_at"].as_u64().unwrap() > 0);
    let expired = watch.next();
    assert_eq!(
        (expired["value"].clone(), expired.get("expires_at")),
        (Value::Null, None)
    );
    wait_for_value(&url, "ttl.k", &Value::Null);
    let err = fails(&url, &["set", "ttl.k", "1", "--ttl", "soon"], 2);
    assert!(err.contains("not a duration"), "{err}");
}

#[test]
fn keys_and_history() {
    let server = TestServer::start();
    let url = server.url();
    for key in ["game.b", "game.a", "game", "gameX", "other"] {
        ok_json(&url, &["set", key, "1"]);
    }
    let lines = |args: &[&str]| -> Vec<String> {
        let out = sodp(&url, args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(lines(&["keys", "game"]), ["game", "game.a", "game.b"]);
    assert_eq!(lines(&["keys"]).len(), 5);
    assert_eq!(lines(&["keys", "--limit", "2"]), ["game", "game.a"]);
    assert_eq!(lines(&["keys", "game", "--after", "game.a"]), ["game.b"]);
    assert!(lines(&["keys", "nothing"]).is_empty());

    let mut versions = vec![];
    for n in 0..3 {
        let v = ok_json(&url, &["set", "h.k", &n.to_string()])["version"]
            .as_u64()
            .unwrap();
        versions.push(v);
    }
    let changes: Vec<Value> = lines(&["history", "h.k"])
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[0]["version"], json!(versions[0]));
    assert_eq!(
        changes[0]["ops"],
        json!([{"op": "ADD", "path": "/", "value": 0}])
    );
    assert_eq!(changes[2]["ops"][0]["value"], json!(2));
    let since = versions[0].to_string();
    let tail = lines(&["history", "h.k", "--since", &since, "--limit", "1"]);
    assert_eq!(tail.len(), 1);
    assert_eq!(
        serde_json::from_str::<Value>(&tail[0]).unwrap()["version"],
        json!(versions[1])
    );
    assert!(lines(&["history", "never.written"]).is_empty());
}

#[test]
fn tx_applies_ops_all_or_nothing() {
    let server = TestServer::start();
    let url = server.url();
    let ops = r#"[{"method":"state.set","args":{"state":"a","value":1}},
                  {"method":"state.set","args":{"state":"b","value":2}}]"#;
    let v = ok_json(&url, &["tx", ops])["version"].as_u64().unwrap();
    assert_eq!(ok_json(&url, &["get", "a", "--meta"])["version"], json!(v));
    assert_eq!(ok_json(&url, &["get", "b", "--meta"])["version"], json!(v));

    let stale = format!(
        r#"[{{"method":"state.set","args":{{"state":"a","value":10,"if_version":{v}}}}},
            {{"method":"state.set","args":{{"state":"b","value":20,"if_version":0}}}}]"#
    );
    let err = fails(&url, &["tx", &stale], 6);
    assert!(
        err.contains("at op 1") && err.contains(&format!("current version {v}")),
        "{err}"
    );
    assert_eq!(ok_json(&url, &["get", "a"]), json!(1), "nothing applied");

    let err = fails(&url, &["tx", r#"{"ops":[]}"#], 2);
    assert!(err.contains("OPS must be a JSON array"), "{err}");
    let err = fails(&url, &["tx", r#"[{"args":{}}]"#], 2);
    assert!(err.contains("op 0"), "{err}");
    fails(&url, &["tx", "[]"], 1); // the server's 400: no ops
}

#[test]
fn watch_a_pattern_prints_the_map() {
    let server = TestServer::start();
    let url = server.url();
    let v = ok_json(&url, &["set", "game.a", "1"])["version"].clone();
    let watch = Running::start(&url, &["watch", "game.*"]);
    assert_eq!(
        watch.next(),
        json!({"key": "game.*", "version": v, "source": "init", "value": {"game.a": 1}})
    );
    ok_json(&url, &["set", "gameX", "0"]);
    ok_json(&url, &["set", "game.b", "2"]);
    let line = watch.next();
    assert_eq!(line["value"], json!({"game.a": 1, "game.b": 2}));
    ok_json(&url, &["delete", "game.a"]);
    assert_eq!(watch.next()["value"], json!({"game.b": 2}));
    assert!(watch.interrupt().success());
}

/// A scripted server whose HELLO advertises no extension: it answers every
/// WATCH with a STATE_INIT of version 3 and value "old", and nothing else.
async fn bare_server() -> String {
    use futures_util::{SinkExt, StreamExt};
    use sodp_proto::{Frame, FrameType, Value as V};
    use tokio_tungstenite::tungstenite::Message;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let hello = V::from(json!({"protocol": "sodp", "version": "1.0", "auth": false,
                                           "capabilities": {"resume": true}}));
                let frame = Frame::new(FrameType::Hello, 0, hello).encode();
                if ws.send(Message::Binary(frame.into())).await.is_err() {
                    return;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Binary(bytes) = msg else {
                        continue;
                    };
                    let Ok(f) = Frame::decode(&bytes, 64) else {
                        continue;
                    };
                    if f.kind == FrameType::Watch {
                        let key = f.body.get("state").cloned().unwrap_or_default();
                        let init = V::map_from([
                            ("state", key),
                            ("version", V::from(3u64)),
                            ("value", V::from("old")),
                            ("initialized", V::Bool(true)),
                        ]);
                        let frame = Frame::new(FrameType::StateInit, f.stream_id, init).encode();
                        let _ = ws.send(Message::Binary(frame.into())).await;
                    }
                }
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_extensions_get_falls_back_and_the_rest_is_unsupported() {
    let url = bare_server().await;
    let run = |args: &'static [&'static str]| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || sodp(&url, args))
    };
    let out = run(&["get", "k"]).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#""old""#);
    let out = run(&["get", "k", "--meta"]).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!({"version": 3, "initialized": true, "value": "old"})
    );
    for (args, extension) in [
        (&["watch", "game.*"][..], "prefix_watch"),
        (&["set", "k", "1", "--if-version", "3"], "conditional"),
        (&["set", "k", "1", "--ttl", "1s"], "ttl"),
        (&["delete", "k", "--idempotency-key", "x"], "idempotency"),
        (&["keys"], "read"),
        (&["history", "k"], "read"),
        (
            &["tx", r#"[{"method":"state.delete","args":{"state":"k"}}]"#],
            "transaction",
        ),
    ] {
        let out = run(args).await.unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("does not support the `{extension}` extension")),
            "{args:?}: {err}"
        );
    }
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
