//! Prometheus metrics (`--metrics-port`, `GET /metrics`, OpenMetrics text).
//!
//! Recording is an atomic add (or a histogram bucket) on a handle resolved
//! once: label sets are built from `&'static str`s, so the write and fanout
//! paths never allocate for a metric. Gauges that describe the state — keys,
//! history bytes, memory, presence paths, process RSS/CPU/fds — are read at
//! scrape time instead of being kept up to date on every write.
//!
//! Names follow the reference server where it has one
//! (`sodp_connections_active`, `sodp_state_keys`, `sodp_calls_total`,
//! `sodp_frames_rx_total`, `sodp_rate_limited_total`,
//! `sodp_delta_fanout_duration_ms`); docs/OPERATIONS.md lists them all.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: &'static str,
    /// `ok` or the error code.
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub result: &'static str,
}

/// A histogram whose `observe` is a few atomic adds: prometheus-client's
/// own takes a mutex, which every session would contend for on every CALL.
#[derive(Clone, Debug)]
pub struct Histogram(std::sync::Arc<HistogramInner>);

#[derive(Debug)]
pub struct HistogramInner {
    /// Upper bounds; one more bucket (+Inf) follows.
    bounds: Vec<f64>,
    counts: Vec<std::sync::atomic::AtomicU64>,
    /// The sum, as f64 bits.
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Histogram {
        let bounds: Vec<f64> = bounds.into_iter().collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram(std::sync::Arc::new(HistogramInner {
            bounds,
            counts,
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    pub fn observe(&self, v: f64) {
        use std::sync::atomic::Ordering::Relaxed;
        let h = &self.0;
        let bucket = h
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(h.bounds.len());
        h.counts[bucket].fetch_add(1, Relaxed);
        let _ = h.sum.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + v).to_bits())
        });
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let h = &self.0;
        let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Relaxed)).collect();
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(counts.iter().copied())
            .collect();
        let count = counts.iter().sum();
        let sum = f64::from_bits(h.sum.load(Relaxed));
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// One CALL in this many (per session) is timed for
/// `sodp_call_duration_seconds`: a sample of the latency distribution that
/// keeps two clock reads and a histogram update off most calls.
pub const LATENCY_SAMPLE: u32 = 16;

/// Every metric the server records.
pub struct Metrics {
    pub calls: Family<CallLabels, Counter>,
    /// `calls` handles by (method, code) index, resolved on first use so a
    /// CALL costs an index and an atomic add, not a map lookup.
    call_counters: Vec<OnceLock<Counter>>,
    method_labels: Vec<&'static str>,
    pub write_seconds: Histogram,
    pub frames_rx: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub deliveries: Counter,
    pub fanout_ms: Histogram,
    pub rate_limited: Counter,
    pub evictions: Family<Reason, Counter>,
    pub sessions_closed: Family<Reason, Counter>,
    pub auth_failures: Family<Reason, Counter>,
    pub acl_denials: Counter,
    /// TLS handshakes that failed (untrusted certificate, plain HTTP on the
    /// TLS port, timeouts).
    pub tls_handshake_failures: Counter,
    /// Certificate reloads by `result` (`ok`, `failed`).
    pub tls_reloads: Family<Outcome, Counter>,
    /// The served certificate's `notAfter`, Unix seconds; exposed only
    /// while it is set (a server with `--tls-cert` whose certificate's
    /// expiry could be read).
    pub tls_certificate_expiry: Gauge,
    pub storage_sync_seconds: Histogram,
    pub connections: Gauge,
    state: StateGauges,
}

/// Gauges set from the state at scrape time.
struct StateGauges {
    keys: Gauge,
    history_bytes: Gauge,
    memory_bytes: Gauge,
    memory_max_bytes: Gauge,
    presence_paths: Gauge,
    process_rss_bytes: Gauge,
    process_cpu_seconds: Gauge<f64, AtomicU64>,
    process_open_fds: Gauge,
}

/// The codes a RESULT can carry, as label values (`ok` = success).
const CODES: [&str; 13] = [
    "ok", "400", "401", "403", "404", "409", "413", "422", "429", "500", "503", "507", "other",
];

/// Position of a RESULT's code in [`CODES`].
fn code_index(code: Option<u16>) -> usize {
    match code {
        None => 0,
        Some(400) => 1,
        Some(401) => 2,
        Some(403) => 3,
        Some(404) => 4,
        Some(409) => 5,
        Some(413) => 6,
        Some(422) => 7,
        Some(429) => 8,
        Some(500) => 9,
        Some(503) => 10,
        Some(507) => 11,
        Some(_) => 12,
    }
}

/// Method label values: every method, then `unknown`, then `none`.
fn method_labels() -> Vec<&'static str> {
    let mut labels: Vec<&'static str> = crate::methods::names().collect();
    labels.extend(["unknown", "none"]);
    labels
}

/// Label values known in advance: their series exist (at 0) from the start,
/// so dashboards and alerts see them before the first event.
const EVICTION_REASONS: [&str; 1] = ["queue_full"];
const AUTH_FAILURE_REASONS: [&str; 4] =
    ["invalid_token", "expired", "timeout", "not_authenticated"];

impl Metrics {
    fn with_known_series(self) -> Metrics {
        for reason in EVICTION_REASONS {
            drop(self.evictions.get_or_create(&Reason { reason }));
        }
        for reason in AUTH_FAILURE_REASONS {
            drop(self.auth_failures.get_or_create(&Reason { reason }));
        }
        for result in ["ok", "failed"] {
            drop(self.tls_reloads.get_or_create(&Outcome { result }));
        }
        for close in crate::outbox::Close::ALL {
            drop(self.sessions_closed.get_or_create(&Reason {
                reason: close.label(),
            }));
        }
        self
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new_empty().with_known_series()
    }
}

impl Metrics {
    fn new_empty() -> Self {
        let latency = || {
            Histogram::new([
                0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
            ])
        };
        let method_labels = method_labels();
        Metrics {
            calls: Family::default(),
            call_counters: (0..method_labels.len() * CODES.len())
                .map(|_| OnceLock::new())
                .collect(),
            method_labels,
            write_seconds: latency(),
            frames_rx: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            deliveries: Counter::default(),
            fanout_ms: Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 50.0, 100.0]),
            rate_limited: Counter::default(),
            evictions: Family::default(),
            sessions_closed: Family::default(),
            auth_failures: Family::default(),
            acl_denials: Counter::default(),
            tls_handshake_failures: Counter::default(),
            tls_reloads: Family::default(),
            tls_certificate_expiry: Gauge::default(),
            storage_sync_seconds: latency(),
            connections: Gauge::default(),
            state: StateGauges {
                keys: Gauge::default(),
                history_bytes: Gauge::default(),
                memory_bytes: Gauge::default(),
                memory_max_bytes: Gauge::default(),
                presence_paths: Gauge::default(),
                process_rss_bytes: Gauge::default(),
                process_cpu_seconds: Gauge::default(),
                process_open_fds: Gauge::default(),
            },
        }
    }
}

/// What the state gauges read at scrape time.
#[derive(Debug, Default)]
pub struct StateReading {
    pub keys: usize,
    pub history_bytes: usize,
    pub memory_bytes: usize,
    pub memory_max_bytes: usize,
    pub presence_paths: usize,
}

impl Metrics {
    /// Counts one CALL (`code` None = success) and how long it took.
    /// `method` is the name as sent (`None`: absent).
    /// `seconds` is `None` for the calls not sampled for the latency
    /// histogram (see `LATENCY_SAMPLE`).
    pub fn call(&self, method: Option<&str>, code: Option<u16>, seconds: Option<f64>) {
        let m = match method {
            None => self.method_labels.len() - 1,
            Some(name) => self
                .method_labels
                .iter()
                .position(|l| *l == name)
                .unwrap_or(self.method_labels.len() - 2),
        };
        let c = code_index(code);
        self.call_counters[m * CODES.len() + c]
            .get_or_init(|| {
                self.calls
                    .get_or_create(&CallLabels {
                        method: self.method_labels[m],
                        code: CODES[c],
                    })
                    .clone()
            })
            .inc();
        if let Some(seconds) = seconds {
            self.write_seconds.observe(seconds);
        }
    }

    /// CALLs answered since start, every method and code.
    pub fn calls_total(&self) -> u64 {
        self.call_counters
            .iter()
            .filter_map(|c| c.get().map(Counter::get))
            .sum()
    }

    /// The text exposition, with the state gauges read now.
    pub fn render(&self, state: StateReading) -> String {
        let g = &self.state;
        g.keys.set(state.keys as i64);
        g.history_bytes.set(state.history_bytes as i64);
        g.memory_bytes.set(state.memory_bytes as i64);
        g.memory_max_bytes.set(state.memory_max_bytes as i64);
        g.presence_paths.set(state.presence_paths as i64);
        if let Some(p) = process() {
            g.process_rss_bytes.set(p.rss_bytes as i64);
            g.process_cpu_seconds.set(p.cpu_seconds);
            g.process_open_fds.set(p.open_fds as i64);
        }
        let mut registry = Registry::default();
        let r = &mut registry;
        r.register(
            "sodp_calls",
            "CALLs answered, by method and result code",
            self.calls.clone(),
        );
        r.register(
            "sodp_call_duration_seconds",
            "Time from a CALL's arrival to its RESULT being queued (durable writes: to the commit)",
            self.write_seconds.clone(),
        );
        r.register(
            "sodp_frames_rx",
            "Frames received from clients",
            self.frames_rx.clone(),
        );
        r.register(
            "sodp_bytes_in",
            "WebSocket message bytes received",
            self.bytes_in.clone(),
        );
        r.register(
            "sodp_bytes_out",
            "Bytes written to clients",
            self.bytes_out.clone(),
        );
        r.register(
            "sodp_deliveries",
            "DELTAs queued to subscribers",
            self.deliveries.clone(),
        );
        r.register(
            "sodp_delta_fanout_duration_ms",
            "Time to queue one change's DELTA to all its subscribers",
            self.fanout_ms.clone(),
        );
        r.register(
            "sodp_rate_limited",
            "Requests refused by a rate limit (429)",
            self.rate_limited.clone(),
        );
        r.register(
            "sodp_evictions",
            "Sessions evicted, by reason",
            self.evictions.clone(),
        );
        r.register(
            "sodp_sessions_closed",
            "Sessions ended, by reason",
            self.sessions_closed.clone(),
        );
        r.register(
            "sodp_auth_failures",
            "Authentication failures, by reason",
            self.auth_failures.clone(),
        );
        r.register(
            "sodp_acl_denials",
            "Requests refused by the ACL (403)",
            self.acl_denials.clone(),
        );
        r.register(
            "sodp_tls_handshake_failures",
            "TLS handshakes that failed or timed out (--tls-cert)",
            self.tls_handshake_failures.clone(),
        );
        r.register(
            "sodp_tls_reloads",
            "TLS certificate reloads (file change or SIGHUP), by result",
            self.tls_reloads.clone(),
        );
        if self.tls_certificate_expiry.get() > 0 {
            r.register(
                "sodp_tls_certificate_expiry_timestamp_seconds",
                "When the served TLS certificate expires (its notAfter), Unix seconds",
                self.tls_certificate_expiry.clone(),
            );
        }
        r.register(
            "sodp_storage_sync_duration_seconds",
            "Durable storage: time of one write + sync of a group commit",
            self.storage_sync_seconds.clone(),
        );
        r.register(
            "sodp_connections_active",
            "Open WebSocket sessions",
            self.connections.clone(),
        );
        r.register("sodp_state_keys", "Keys held", g.keys.clone());
        r.register(
            "sodp_history_bytes",
            "RESUME history held, bytes",
            g.history_bytes.clone(),
        );
        r.register(
            "sodp_memory_bytes",
            "Bytes counted against --max-memory",
            g.memory_bytes.clone(),
        );
        r.register(
            "sodp_memory_max_bytes",
            "--max-memory",
            g.memory_max_bytes.clone(),
        );
        r.register(
            "sodp_presence_paths",
            "Presence paths bound",
            g.presence_paths.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident set size",
            g.process_rss_bytes.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "User + system CPU time",
            g.process_cpu_seconds.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors",
            g.process_open_fds.clone(),
        );
        let mut out = String::new();
        let _ = encode(&mut out, &registry);
        out
    }
}

/// This process's resident memory (Linux; `None` elsewhere).
pub fn process_rss_bytes() -> Option<u64> {
    process().map(|p| p.rss_bytes)
}

struct Process {
    rss_bytes: u64,
    cpu_seconds: f64,
    open_fds: usize,
}

/// This process's RSS, CPU time and open fds, from /proc (Linux).
fn process() -> Option<Process> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(Process {
        rss_bytes: rss_kib * 1024,
        // USER_HZ is 100 on every Linux this runs on.
        cpu_seconds: ticks as f64 / 100.0,
        open_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_the_exposition() {
        let h = Histogram::new([1.0, 10.0]);
        for v in [0.5, 5.0, 5.0, 50.0] {
            h.observe(v);
        }
        let mut registry = Registry::default();
        registry.register("t", "test", h);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        assert!(out.contains("t_bucket{le=\"1.0\"} 1"), "{out}");
        assert!(out.contains("t_bucket{le=\"10.0\"} 3"), "{out}");
        assert!(out.contains("t_bucket{le=\"+Inf\"} 4"), "{out}");
        assert!(out.contains("t_count 4"), "{out}");
        assert!(out.contains("t_sum 60.5"), "{out}");
    }
}
