//! `writes`: C connections pipeline writes (alternating `state.set` and
//! `state.patch`) over K keys for S seconds, each keeping up to `--window`
//! CALLs in flight. Reports acked writes/s and ack latency (CALL flushed →
//! RESULT decoded), and with `--server-pid` the server's CPU per acked
//! write, which is the figure that still separates servers once a
//! single-core load generator saturates.
//!
//! Closed loop (default): each connection keeps `--window` CALLs in flight.
//! Open loop (`--rate N`): N writes per second in total, spread evenly over
//! the connections and staggered between them (connection `c`'s write `n`
//! is due at `(n·C + c) / N` seconds), each sent when due whatever is in
//! flight, paced on tokio's clock — so servers are compared at the same
//! offered load, and the CPU per write is not that of a saturated server.
//!
//! Each connection is one task on a lean WebSocket (`rawws`); every reply
//! a read brings is handled before the refill (or everything due) goes out
//! in one flush.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sodp_proto::FrameType;

use crate::clock::now_ns;
use crate::procfs::{self, round, Usage};
use crate::rawws::{Message, RawWs};
use crate::report::{per_second, Report};
use crate::scan;
use crate::stats::summarize;
use crate::wire::{self, CallTemplate, Error};

/// Parameters of a writes run.
#[derive(Debug, Clone)]
pub struct Params {
    pub conns: usize,
    pub keys: usize,
    pub duration: Duration,
    pub window: usize,
    /// Writes per second in total (open loop); `None`: closed loop.
    pub rate: Option<f64>,
    /// After the duration, how long to wait for outstanding acks.
    pub drain: Duration,
}

/// When writes are sent.
#[derive(Debug, Clone, Copy)]
enum Pacing {
    /// Up to `window` in flight.
    Window(usize),
    /// Connection `conn` of `conns`, `rate` writes/s in total, from `t0`.
    Rate {
        t0: tokio::time::Instant,
        rate: f64,
        conns: usize,
    },
}

impl Pacing {
    /// When connection `conn`'s write `n` is due (open loop).
    fn due(&self, conn: usize, n: u64) -> Option<tokio::time::Instant> {
        match *self {
            Pacing::Window(_) => None,
            Pacing::Rate { t0, rate, conns } => {
                let slot = n as f64 * conns as f64 + conn as f64;
                Some(t0 + Duration::from_secs_f64(slot / rate))
            }
        }
    }
}

#[derive(Default)]
struct ConnStats {
    sent: u64,
    acked: u64,
    failed: u64,
    errors: u64,
    latencies: Vec<u64>,
}

/// The pre-encoded set and patch calls for every key.
struct Templates {
    set: Vec<CallTemplate>,
    patch: Vec<CallTemplate>,
}

pub async fn run(url: &str, pid: Option<u32>, p: &Params) -> Result<Report, Error> {
    run_on(url, pid, p, &wire::run_key("writes", "")).await
}

/// [`run`] on keys `BASE.k0`, `BASE.k1`, ...
pub async fn run_on(url: &str, pid: Option<u32>, p: &Params, base: &str) -> Result<Report, Error> {
    if p.conns == 0 || p.keys == 0 || p.window == 0 {
        return Err("writes needs --conns, --keys and --window >= 1".into());
    }
    if p.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err("writes needs --rate > 0".into());
    }
    let keys: Vec<String> = (0..p.keys).map(|k| format!("{base}.k{k}")).collect();
    let templates = Arc::new(Templates {
        set: keys
            .iter()
            .map(|k| CallTemplate::new("state.set", k, "value"))
            .collect(),
        patch: keys
            .iter()
            .map(|k| CallTemplate::new("state.patch", k, "patch"))
            .collect(),
    });
    let mut conns = Vec::with_capacity(p.conns);
    for _ in 0..p.conns {
        conns.push(RawWs::connect(url).await?);
    }

    let before = pid.and_then(procfs::sample);
    let t0 = tokio::time::Instant::now();
    let start = now_ns();
    let stop = start + p.duration.as_nanos() as u64;
    let give_up = stop + p.drain.as_nanos() as u64;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, ws)| {
            let t = templates.clone();
            let pacing = match p.rate {
                None => Pacing::Window(p.window),
                Some(rate) => Pacing::Rate {
                    t0,
                    rate,
                    conns: p.conns,
                },
            };
            tokio::spawn(async move { drive(ws, c, t, pacing, stop, give_up).await })
        })
        .collect();
    let mut total = ConnStats::default();
    let mut first_error = None;
    // Acked writes per connection: how evenly the server served them.
    let mut per_conn: Vec<u64> = Vec::with_capacity(p.conns);
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => {
                total.sent += s.sent;
                total.acked += s.acked;
                per_conn.push(s.acked);
                total.failed += s.failed;
                total.errors += s.errors;
                total.latencies.extend(s.latencies);
            }
            Ok(Err(e)) => first_error = first_error.or(Some(e.to_string())),
            Err(e) => first_error = first_error.or(Some(e.to_string())),
        }
    }
    let end = now_ns();
    let after = pid.and_then(procfs::sample);
    let elapsed = (end - start) as f64 / 1e9;
    let lat = summarize(&mut total.latencies);
    let usage = before
        .zip(after)
        .map(|(before, after)| Usage { before, after });
    let clean = first_error.is_none()
        && total.failed == 0
        && total.errors == 0
        && total.acked == total.sent;
    let json = json!({
        "scenario": "writes",
        "url": url,
        "conns": p.conns,
        "keys": p.keys,
        "duration_s": p.duration.as_secs_f64(),
        "window": p.rate.is_none().then_some(p.window),
        "offered_rate": p.rate,
        "elapsed_s": round(elapsed),
        "writes_sent": total.sent,
        "writes_acked": total.acked,
        "acked_per_conn": fairness(&mut per_conn),
        "failed_calls": total.failed,
        "error_frames": total.errors,
        "connection_error": first_error,
        "ok": clean,
        "writes_per_s": per_second(total.acked, elapsed),
        "ack_latency": lat.to_json(),
        "server": usage.map(|u| u.to_json(&[("write", total.acked)])),
    });
    let load = match p.rate {
        Some(rate) => format!("at {rate:.0}/s offered"),
        None => format!("× window {}", p.window),
    };
    let mut summary = format!(
        "writes: {} conns {load} over {} keys for {:.1}s — {} acked ({:.0}/s), {} failed, {} errors{}\n  ack latency {}",
        p.conns,
        p.keys,
        elapsed,
        total.acked,
        total.acked as f64 / elapsed,
        total.failed,
        total.errors,
        first_error.map(|e| format!(", connection error: {e}")).unwrap_or_default(),
        lat.line(),
    );
    if let Some(u) = usage {
        summary.push_str(&format!(
            "\n  server CPU {:.0} ms: {:.2} µs/write; RSS {} → {} KiB",
            u.cpu_us() / 1e3,
            u.cpu_us_per(total.acked).unwrap_or(0.0),
            u.before.rss_kib,
            u.after.rss_kib
        ));
    }
    Ok(Report { json, summary })
}

/// Min, median and max of the acked writes per connection.
fn fairness(per_conn: &mut [u64]) -> serde_json::Value {
    per_conn.sort_unstable();
    match (per_conn.first(), per_conn.last()) {
        (Some(min), Some(max)) => json!({
            "min": min,
            "p50": per_conn[per_conn.len() / 2],
            "max": max,
        }),
        _ => serde_json::Value::Null,
    }
}

/// One connection until `stop` (no new calls after it) and then until
/// every call is answered or `give_up`.
async fn drive(
    mut ws: RawWs,
    conn: usize,
    t: Arc<Templates>,
    pacing: Pacing,
    stop: u64,
    give_up: u64,
) -> Result<ConnStats, Error> {
    let mut st = ConnStats {
        latencies: Vec::with_capacity(1 << 12),
        ..ConnStats::default()
    };
    let keys = t.set.len();
    let window = match pacing {
        Pacing::Window(w) => w,
        Pacing::Rate { .. } => 64,
    };
    let mut in_flight: HashMap<u64, u64> = HashMap::with_capacity(window * 2);
    let mut n = 0u64;
    let give_up_at =
        tokio::time::Instant::now() + Duration::from_nanos(give_up.saturating_sub(now_ns()));
    let deadline = tokio::time::sleep_until(give_up_at);
    tokio::pin!(deadline);
    let stop_at = tokio::time::Instant::now() + Duration::from_nanos(stop.saturating_sub(now_ns()));
    let pace = tokio::time::sleep_until(pacing.due(conn, 0).unwrap_or(stop_at));
    tokio::pin!(pace);
    let mut id = String::with_capacity(24);
    let mut queue = |ws: &mut RawWs, n: u64| {
        use std::fmt::Write;
        let k = (conn + n as usize) % keys;
        id.clear();
        let _ = write!(id, "c{n}");
        let frame = if n.is_multiple_of(2) {
            t.set[k].frame(n, &id, |b| {
                wire::write_uint_map(b, &[("n", n), ("c", conn as u64)])
            })
        } else {
            t.patch[k].frame(n, &id, |b| wire::write_uint_map(b, &[("n", n)]))
        };
        ws.queue(&frame);
    };
    let open = matches!(pacing, Pacing::Rate { .. });
    loop {
        let now = now_ns();
        // Open loop: a write is still due before the stop.
        let sending = open && pacing.due(conn, n).is_some_and(|d| d < stop_at);
        if !open && now < stop && in_flight.len() < window {
            // Refill the window and flush once.
            while in_flight.len() < window {
                queue(&mut ws, n);
                in_flight.insert(n, now);
                n += 1;
                st.sent += 1;
            }
            ws.flush().await?;
        } else if in_flight.is_empty() && !sending {
            break;
        }
        // Wait for replies (or, open loop, the next write due), then take
        // every complete one the read brought.
        tokio::select! {
            r = ws.read() => r?,
            _ = &mut pace, if sending => {
                // Everything due by now goes out in one flush.
                let due_now = tokio::time::Instant::now();
                let mut batch = 0;
                while let Some(d) = pacing.due(conn, n) {
                    if d > due_now || d >= stop_at || batch == 256 {
                        break;
                    }
                    queue(&mut ws, n);
                    in_flight.insert(n, now_ns());
                    n += 1;
                    st.sent += 1;
                    batch += 1;
                }
                ws.flush().await?;
                if let Some(d) = pacing.due(conn, n) {
                    pace.as_mut().reset(d);
                }
                continue;
            }
            _ = &mut deadline => break,
        }
        let now = now_ns();
        let mut heartbeats = 0;
        while let Some(m) = ws.next_message()? {
            let bytes = match m {
                Message::Binary(b) => b,
                Message::Close => return Err("connection closed by the server".into()),
            };
            if let Some(r) = scan::result(bytes, "c") {
                if let Some(sent_at) = in_flight.remove(&r.call) {
                    st.latencies.push(now.saturating_sub(sent_at));
                    st.acked += 1;
                    st.failed += u64::from(!r.success);
                }
                continue;
            }
            let f = wire::decode(bytes)?;
            match f.kind {
                FrameType::Result => {
                    if let Some(sent_at) =
                        wire::call_number(&f.body, "c").and_then(|c| in_flight.remove(&c))
                    {
                        st.latencies.push(now.saturating_sub(sent_at));
                        st.acked += 1;
                        if f.body.get("success").and_then(|v| v.as_bool()) != Some(true) {
                            st.failed += 1;
                        }
                    }
                }
                FrameType::Heartbeat => heartbeats += 1,
                FrameType::Error => st.errors += 1,
                _ => {}
            }
        }
        for _ in 0..heartbeats {
            ws.queue(&wire::heartbeat_frame());
        }
        if ws.has_queued() {
            ws.flush().await?;
        }
    }
    Ok(st)
}
