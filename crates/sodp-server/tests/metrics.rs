//! `GET /metrics` on `--metrics-port`: exact counter values after known
//! traffic, and an exposition every line of which parses.

mod common;
#[path = "../../sodp-client/tests/common/test_ca.rs"]
mod test_ca;

use common::*;
use serde_json::json;
use sodp_proto::FrameType;

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    http_get(addr, path).await
}

/// The body of a scrape, checked line by line: `# HELP/TYPE/UNIT/EOF`
/// comments or `name{labels} value` samples, ending with `# EOF`.
fn parse(response: &str) -> Vec<(String, f64)> {
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("application/openmetrics-text"),
        "{response}"
    );
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(body.lines().last(), Some("# EOF"), "{body}");
    let mut samples = Vec::new();
    for line in body.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split_whitespace().next().unwrap_or("");
            assert!(
                ["HELP", "TYPE", "UNIT", "EOF"].contains(&kind),
                "bad comment: {line}"
            );
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let metric = name.split('{').next().unwrap();
        assert!(
            metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name: {line}"
        );
        if let Some(labels) = name.strip_prefix(metric) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        samples.push((name.to_owned(), value));
    }
    samples
}

fn sample(samples: &[(String, f64)], name: &str) -> Option<f64> {
    samples.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

#[tokio::test]
async fn counters_match_the_traffic_exactly() {
    let server = TestServer::with(|c| c.metrics_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics = server.metrics_addr.expect("metrics listener");
    let mut watcher = server.client().await;
    watcher.watch("game.player").await;
    // A pattern subscriber's DELTAs are deliveries too.
    let mut family = server.client().await;
    family
        .send(FrameType::Watch, 0, v(json!({"state": "game.*"})))
        .await;
    assert_eq!(family.recv().await.kind, FrameType::StateInit);
    let mut c = server.client().await;
    for hp in [100, 90, 80] {
        c.ok(
            "state.set",
            json!({"state": "game.player", "value": {"hp": hp}}),
        )
        .await;
    }
    let r = c.call("state.nope", json!({"state": "k"})).await;
    assert_eq!(failure_code(&r), Some(404));
    let r = c
        .call("state.set", json!({"state": "bad key!", "value": 1}))
        .await;
    assert_eq!(failure_code(&r), Some(400));
    for _ in 0..3 {
        watcher.delta().await;
        family.delta().await;
    }
    let samples = parse(&get(metrics, "/metrics").await);
    assert_eq!(
        sample(
            &samples,
            "sodp_calls_total{method=\"state.set\",code=\"ok\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &samples,
            "sodp_calls_total{method=\"state.set\",code=\"400\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &samples,
            "sodp_calls_total{method=\"unknown\",code=\"404\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sample(&samples, "sodp_deliveries_total"), Some(6.0));
    assert_eq!(sample(&samples, "sodp_connections_active"), Some(3.0));
    assert_eq!(sample(&samples, "sodp_state_keys"), Some(1.0));
    // 5 CALLs + 2 WATCHes.
    assert_eq!(sample(&samples, "sodp_frames_rx_total"), Some(7.0));
    // Latency is sampled, one CALL in 16 per session: the first of c's five.
    assert_eq!(
        sample(&samples, "sodp_call_duration_seconds_count"),
        Some(1.0)
    );
    assert!(sample(&samples, "sodp_bytes_out_total").unwrap() > 0.0);
    assert!(sample(&samples, "process_resident_memory_bytes").unwrap() > 0.0);
    assert!(sample(&samples, "process_open_fds").unwrap() > 0.0);
    // No certificate served, no expiry to report.
    assert_eq!(
        sample(&samples, "sodp_tls_certificate_expiry_timestamp_seconds"),
        None
    );
    // Not on the public port.
    let public = get(server.addr, "/metrics").await;
    assert!(public.starts_with("HTTP/1.1 404"), "{public}");
    // The metrics port answers /ready too.
    assert!(get(metrics, "/ready").await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn refusals_are_counted_by_reason() {
    let server = TestServer::with(|c| {
        c.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
        c.security.rate_writes_per_sec = 1;
        c.security.jwt.hs256_secret = Some("metrics-secret".into());
    })
    .await;
    let metrics = server.metrics_addr.unwrap();
    let mut c = server.client().await;
    c.send(FrameType::Auth, 0, v(json!({"token": "not.a.jwt"})))
        .await;
    let f = c.recv().await;
    assert_eq!(f.kind, FrameType::Error);
    let samples = parse(&get(metrics, "/metrics").await);
    assert_eq!(
        sample(
            &samples,
            "sodp_auth_failures_total{reason=\"invalid_token\"}"
        ),
        Some(1.0)
    );
    eventually("the refused session is closed and counted", || {
        server.shared.connections() == 0
    })
    .await;
    let samples = parse(&get(metrics, "/metrics").await);
    assert_eq!(
        sample(
            &samples,
            "sodp_sessions_closed_total{reason=\"unauthorized\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sample(&samples, "sodp_connections_active"), Some(0.0));
}

/// Every metric the shipped Grafana dashboard queries exists in a scrape, so
/// the dashboard cannot drift from the server. Scraped from a plain server
/// after a write and from one serving TLS (the certificate's expiry exists
/// only there).
#[tokio::test]
async fn the_grafana_dashboard_queries_only_metrics_the_server_exposes() {
    let server = TestServer::with(|c| c.metrics_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let mut c = server.client().await;
    c.ok("state.set", json!({"state": "k", "value": 1})).await;
    let mut scrape = get(server.metrics_addr.unwrap(), "/metrics").await;
    let ca = test_ca::TestCa::new("dashboard");
    let files = ca.issue_server();
    let tls = TestServer::with(|c| {
        c.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
        c.tls = Some(sodp_server::tls::TlsConfig::new(&files.cert, &files.key));
    })
    .await;
    scrape += &get(tls.metrics_addr.unwrap(), "/metrics").await;
    let families: std::collections::HashSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !(word.starts_with("sodp_") || word.starts_with("process_")) {
                    continue;
                }
                let family = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s))
                    .unwrap_or(word);
                assert!(
                    families.contains(family),
                    "{word} (panel {}) is not exposed",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} metrics referenced");
}
