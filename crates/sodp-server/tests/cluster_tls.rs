//! Cluster mode over `rediss://`: a TLS-only `redis-server` (no plain
//! port) whose certificate a CA made by the test signed, and real
//! `sodp-server` processes. With `--redis-ca-file` (or its variable) the
//! nodes trust that CA and share state; with another CA, or with the
//! system's roots only, a node refuses to start and says why.

mod common;
#[path = "common/redis.rs"]
mod redis_server;
#[path = "../../sodp-client/tests/common/test_ca.rs"]
mod test_ca;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Launched, TestClient};
use redis_server::{RedisServer, RedisTls};
use serde_json::json;
use test_ca::TestCa;

const BIN: &str = env!("CARGO_BIN_EXE_sodp-server");

/// A TLS-only Redis with a certificate from `ca`.
async fn tls_redis(ca: &TestCa) -> RedisServer {
    let files = ca.issue_server();
    RedisServer::start_tls(RedisTls {
        cert: files.cert,
        key: files.key,
        ca: ca.ca_file(),
    })
    .await
}

/// `sodp-server` on port 0 in cluster mode on `redis_url`.
fn node_command(redis_url: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--addr", "127.0.0.1:0", "--redis-url", redis_url])
        .env_remove("SODP_REDIS_CA_FILE")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to its exit (it must exit within a few seconds: a node that
/// cannot start must not hang retrying); its status and output.
fn run_to_exit(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sodp-server");
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("sodp-server did not exit: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// The node exited 1 (a start failure, not a panic, not a usage error)
/// with a message containing every one of `words`; its stderr.
fn refused_start(out: &Output, words: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "a node that cannot reach Redis must not announce itself: {out:?}"
    );
    for word in words {
        assert!(stderr.contains(word), "expected {word:?} in: {stderr}");
    }
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_rediss_with_a_private_ca_share_writes_with_the_same_versions_and_ops() {
    let ca = TestCa::new("redis");
    let redis = tls_redis(&ca).await;
    // One node told by flag, the other by environment variable.
    let mut a = node_command(&redis.url());
    a.arg("--redis-ca-file")
        .arg(ca.ca_file())
        .stderr(Stdio::null());
    let a = Launched::spawn(a, false);
    let mut b = node_command(&redis.url());
    b.env("SODP_REDIS_CA_FILE", ca.ca_file())
        .stderr(Stdio::null());
    let b = Launched::spawn(b, false);
    let on = |node: &Launched| format!("ws://127.0.0.1:{}", node.port);

    let mut watch_a = TestClient::connect(&on(&a)).await;
    let mut watch_b = TestClient::connect(&on(&b)).await;
    watch_a.watch("doc").await;
    watch_b.watch("doc").await;
    let mut writer_a = TestClient::connect(&on(&a)).await;
    let mut writer_b = TestClient::connect(&on(&b)).await;
    let v1 = writer_a
        .ok("state.set", json!({"state": "doc", "value": {"n": 1}}))
        .await;
    let v2 = writer_b
        .ok("state.patch", json!({"state": "doc", "patch": {"m": 2}}))
        .await;
    // (Not v1 + 1: a node's first commit floors its version at Redis's
    // clock — see commit.lua.)
    assert!(
        v2 > v1,
        "versions increase across the nodes: {v1} then {v2}"
    );
    let seen_a = [watch_a.delta().await, watch_a.delta().await];
    let seen_b = [watch_b.delta().await, watch_b.delta().await];
    assert_eq!(seen_a, seen_b, "same versions and ops on both nodes");
    assert_eq!([seen_a[0].0, seen_a[1].0], [v1, v2]);

    // The state is in the TLS-only Redis (checked behind the nodes' backs).
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sodp:*")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the nodes wrote to the TLS Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_given_the_wrong_ca_refuses_to_start_and_says_the_certificate_is_not_trusted() {
    let ca = TestCa::new("redis-real");
    let other = TestCa::new("redis-other");
    let redis = tls_redis(&ca).await;
    let mut cmd = node_command(&redis.url());
    cmd.arg("--redis-ca-file").arg(other.ca_file());
    let stderr = refused_start(&run_to_exit(cmd), &["cannot reach Redis", "not trusted"]);
    assert!(stderr.contains("--redis-ca-file"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_without_a_ca_file_refuses_a_private_ca_with_the_system_roots() {
    let ca = TestCa::new("redis-private");
    let redis = tls_redis(&ca).await;
    let stderr = refused_start(
        &run_to_exit(node_command(&redis.url())),
        &["cannot reach Redis", "not trusted"],
    );
    assert!(
        stderr.contains("system"),
        "the message says which roots were tried: {stderr}"
    );
}

#[test]
fn an_unusable_ca_file_is_refused_at_start_naming_the_file() {
    let ca = TestCa::new("redis-files");
    let url = "rediss://127.0.0.1:1";
    let garbage = ca.dir.join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    let key_only = ca.issue_server().key;
    let missing = ca.dir.join("missing.pem");
    for path in [&garbage, &key_only, &missing] {
        let mut cmd = node_command(url);
        cmd.arg("--redis-ca-file").arg(path);
        refused_start(&run_to_exit(cmd), &["--redis-ca-file", &display(path)]);
    }
    // A CA file says nothing to a plain-TCP URL.
    let mut cmd = node_command("redis://127.0.0.1:1");
    cmd.arg("--redis-ca-file").arg(ca.ca_file());
    refused_start(&run_to_exit(cmd), &["rediss://"]);
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
