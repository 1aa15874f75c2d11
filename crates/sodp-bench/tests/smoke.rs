//! The load generator against the real server, small and quick: every
//! scenario must finish clean (exit 0, `"ok": true`) and report the server's
//! CPU. The server is `$SODP_SERVER_BIN`, or `sodp-server` next to this
//! test's binaries (built on demand when missing, see the shared
//! `sodp-client/tests/common`); a server that cannot be found, built or
//! started fails the test. It binds port 0 and announces the port it got.

#[path = "../../sodp-client/tests/common/mod.rs"]
mod common;

use std::process::Command;

use common::TestServer;

/// Runs sodp-bench with `args`; it must exit 0 with a clean JSON report.
fn run_clean(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sodp-bench"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["ok"], true, "{args:?}: {report}");
    assert!(report["server"]["cpu_us"].is_number(), "{report}");
    report
}

fn bench(server: &TestServer, args: &[&str]) -> serde_json::Value {
    let (url, pid) = (server.url(), server.pid().to_string());
    let mut all = vec!["--url", &url, "--server-pid", &pid, "--timeout", "60"];
    all.extend_from_slice(args);
    run_clean(&all)
}

#[test]
fn every_scenario_runs_clean_against_the_real_server() {
    let server = TestServer::start();
    let fanout = bench(
        &server,
        &["fanout", "--subs", "20", "--writes", "50", "--window", "4"],
    );
    assert_eq!(fanout["missing"], 0, "{fanout}");
    // Per write, the last of its deliveries: one sample per write, none
    // earlier than the median delivery, the slowest the slowest delivery.
    let (all, each) = (
        &fanout["all_delivered_latency"],
        &fanout["delivery_latency"],
    );
    assert_eq!(all["count"], 50, "{fanout}");
    assert_eq!(each["count"], 1000, "{fanout}");
    assert!(
        all["p50_us"].as_f64().unwrap() >= each["p50_us"].as_f64().unwrap(),
        "{fanout}"
    );
    assert_eq!(all["max_us"], each["max_us"], "{fanout}");
    bench(
        &server,
        &["fanout", "--subs", "5", "--writes", "40", "--rate", "400"],
    );
    bench(
        &server,
        &["writes", "--conns", "4", "--keys", "4", "--duration", "1"],
    );
    // Open loop: the offered rate is what is sent, whatever the acks do.
    let paced = bench(
        &server,
        &[
            "writes",
            "--conns",
            "4",
            "--keys",
            "4",
            "--rate",
            "400",
            "--duration",
            "1",
        ],
    );
    let sent = paced["writes_sent"].as_u64().unwrap();
    assert!(
        (395..=401).contains(&sent),
        "400/s for 1 s sent {sent}: {paced}"
    );
    assert_eq!(paced["writes_acked"], sent, "{paced}");
    assert_eq!(paced["offered_rate"], 400.0, "{paced}");
    // Open loop spreads the rate evenly: every connection gets ~100 writes.
    let per_conn = &paced["acked_per_conn"];
    let (min, max) = (
        per_conn["min"].as_u64().unwrap(),
        per_conn["max"].as_u64().unwrap(),
    );
    assert!(min <= per_conn["p50"].as_u64().unwrap(), "{paced}");
    assert!(max - min <= 1 && min * 4 + 3 >= sent, "{paced}");
    // Done once the last write due is answered (not at the drain's end).
    let elapsed = paced["elapsed_s"].as_f64().unwrap();
    assert!(elapsed < 1.5, "a 1 s run took {elapsed} s: {paced}");
    bench(&server, &["roundtrip", "--count", "100"]);
    bench(
        &server,
        &["conns", "--count", "50", "--hold", "1", "--settle", "0"],
    );
}

/// `sends` needs no server: every message reaches its reader, one per
/// connection per round, and the sender's CPU and the latencies are there.
#[test]
fn sends_delivers_every_round_to_every_connection() {
    let report = run_clean(&[
        "sends", "--conns", "8", "--rounds", "50", "--rate", "1000", "--size", "40",
    ]);
    assert_eq!(report["deliveries"], 400, "{report}");
    assert_eq!(report["delivery_latency"]["count"], 400, "{report}");
    assert_eq!(report["round_duration"]["count"], 50, "{report}");
    assert_eq!(report["all_delivered_latency"]["count"], 50, "{report}");
    assert_eq!(
        report["all_delivered_latency"]["max_us"], report["delivery_latency"]["max_us"],
        "{report}"
    );
    assert!(
        report["server"]["cpu_us"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["delivery_latency"]["p50_us"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

/// A run that would need more descriptors than the process may open is
/// refused before it opens any, with exit code 1 and the reason.
#[test]
fn a_run_beyond_the_fd_limit_is_refused_up_front() {
    let out = Command::new(env!("CARGO_BIN_EXE_sodp-bench"))
        .args(["sends", "--conns", "100000000", "--rounds", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("need more than the fd limit"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// HS256 over `{"sub":"sodp-bench","exp":4102444800}` (1 January 2100) with
/// the secret below: a token with an expiry, as live sessions carry one.
const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzb2RwLWJlbmNoIiwiZXhwIjo0MTAyNDQ0ODAwfQ._ZV6iTXrx5kEGI9XVWuOlUBpmHqfwjpHNtX4KpYnehg";

#[test]
fn authenticated_sessions_are_measured_with_a_token() {
    let server = TestServer::start_with(&["--jwt-secret", "sodp-bench-test-secret"]);
    let writes = bench(
        &server,
        &[
            "--token",
            TOKEN,
            "writes",
            "--conns",
            "4",
            "--keys",
            "4",
            "--window",
            "1",
            "--duration",
            "1",
        ],
    );
    assert!(writes["writes_acked"].as_u64().unwrap() > 0, "{writes}");
    let fanout = bench(
        &server,
        &[
            "--token", TOKEN, "fanout", "--subs", "5", "--writes", "20", "--window", "2",
        ],
    );
    assert_eq!(fanout["missing"], 0, "{fanout}");
    // Without a token, or with one the server refuses, the run stops at
    // once and says why.
    let (url, pid) = (server.url(), server.pid().to_string());
    let refused = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sodp-bench"));
        cmd.args(["--url", &url, "--server-pid", &pid, "--timeout", "10"]);
        if let Some(token) = token {
            cmd.args(["--token", token]);
        }
        let out = cmd
            .args(["writes", "--conns", "1", "--keys", "1", "--duration", "1"])
            .env_remove("SODP_BENCH_TOKEN")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{token:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refused(None);
    assert!(stderr.contains("pass --token"), "{stderr}");
    // The same claims with the signature altered.
    let forged = format!("{}x", &TOKEN[..TOKEN.len() - 1]);
    let stderr = refused(Some(&forged));
    assert!(stderr.contains("AUTH refused"), "{stderr}");
}
