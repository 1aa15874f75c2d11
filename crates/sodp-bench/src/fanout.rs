//! `fanout`: N subscribers watch one key; one writer patches it W times.
//!
//! Write `i` is the patch `{"n": i, "t": send_ns}`, so every DELTA names the
//! write it carries. For each (write, subscriber) pair the latency is from
//! the moment the CALL was flushed to the socket to the moment the DELTA was
//! decoded; each subscriber checks that it sees every write exactly once and
//! in order (missing, duplicated, out-of-order deltas must all be 0).
//! Per write, the latency of its last delivery is how long the write took
//! to reach every subscriber (`all_delivered_latency`): the time one fanout
//! takes, so the spread of the per-pair latencies can be told apart from
//! writes that were held up as a whole.
//!
//! Open loop (`--rate R`): write `i` is due at `i / R` seconds, sent
//! whenever due regardless of progress. Closed loop (no rate): at most
//! `--window` writes are in flight, where a write is done when it is acked
//! and delivered to every subscriber.
//!
//! All connections are driven from one task (one `SelectAll` over the
//! subscriber streams) on the current-thread runtime: no task wake-up or
//! channel hop per delivery, no locks. Every connection is a lean
//! WebSocket (`rawws`) whose DELTAs are read in place, so the generator
//! can take deliveries faster than a server sends them.

use std::time::Duration;

use futures_util::stream::SelectAll;
use futures_util::StreamExt;
use serde_json::json;
use sodp_proto::FrameType;
use tokio::time::Instant;

use crate::clock::now_ns;
use crate::procfs::{self, round, Usage};
use crate::rawws::{self, Inbound, Incoming, Message, RawWs};
use crate::report::{per_second, Report};
use crate::scan;
use crate::stats::summarize;
use crate::wire::{self, CallTemplate, Error};

/// Parameters of a fanout run.
#[derive(Debug, Clone)]
pub struct Params {
    pub subs: usize,
    pub writes: usize,
    /// Writes per second (open loop); `None` = closed loop.
    pub rate: Option<f64>,
    /// Closed loop: writes in flight at most.
    pub window: usize,
    /// Give up when nothing arrives for this long.
    pub stall: Duration,
    /// Hard bound on the measured phase.
    pub timeout: Duration,
    pub connect_concurrency: usize,
    /// Where the writer connects (`None`: the subscribers' server).
    pub writer_url: Option<String>,
}

/// Per-subscriber bookkeeping.
struct Sub {
    stream_id: u32,
    seen: Vec<u64>,
    max_n: Option<usize>,
    last_version: u64,
}

impl Sub {
    /// Marks write `n` seen; false when it already was.
    fn mark(&mut self, n: usize) -> bool {
        let (w, b) = (n / 64, 1u64 << (n % 64));
        let fresh = self.seen[w] & b == 0;
        self.seen[w] |= b;
        fresh
    }
}

/// What a subscriber's message is, read in place from its bytes: a DELTA
/// on the fast path (`scan::delta`), anything else decoded fully.
enum Received {
    Delta(scan::Delta),
    Heartbeat,
    Error,
    Other,
    Undecodable,
}

impl Inbound for Received {
    fn read(bytes: &[u8]) -> Received {
        if let Some(d) = scan::delta(bytes, "n") {
            return Received::Delta(d);
        }
        match wire::decode(bytes) {
            Ok(f) if f.kind == FrameType::Delta => Received::Delta(scan::Delta {
                stream_id: f.stream_id,
                version: f.body.get("version").and_then(|v| v.as_u64()).unwrap_or(0),
                field: wire::delta_field(&f.body, "n"),
            }),
            Ok(f) if f.kind == FrameType::Heartbeat => Received::Heartbeat,
            Ok(f) if f.kind == FrameType::Error => Received::Error,
            Ok(_) => Received::Other,
            Err(_) => Received::Undecodable,
        }
    }

    fn reply(&self) -> Option<Vec<u8>> {
        matches!(self, Received::Heartbeat).then(wire::heartbeat_frame)
    }
}

/// Counters of everything that must be zero in a correct run.
#[derive(Default)]
struct Faults {
    duplicated: u64,
    out_of_order: u64,
    version_regressions: u64,
    wrong_stream: u64,
    unknown_write: u64,
    closed_conns: u64,
    error_frames: u64,
    failed_calls: u64,
    decode_errors: u64,
}

pub async fn run(url: &str, pid: Option<u32>, p: &Params) -> Result<Report, Error> {
    if p.subs == 0 || p.writes == 0 {
        return Err("fanout needs --subs >= 1 and --writes >= 1".into());
    }
    if p.subs.saturating_mul(p.writes) > 100_000_000 {
        return Err("subs × writes is capped at 100,000,000 samples".into());
    }
    let key = wire::run_key("fanout", "");
    let t_connect = now_ns();
    let conns = wire::open_many(p.subs, p.connect_concurrency, || {
        rawws::connect_watching(url, &key)
    })
    .await?;
    let connect_s = (now_ns() - t_connect) as f64 / 1e9;
    let mut writer = RawWs::connect(p.writer_url.as_deref().unwrap_or(url)).await?;

    let mut subs = Vec::with_capacity(p.subs);
    let mut streams = SelectAll::new();
    for (i, (ws, stream_id)) in conns.into_iter().enumerate() {
        subs.push(Sub {
            stream_id,
            seen: vec![0; p.writes.div_ceil(64)],
            max_n: None,
            last_version: 0,
        });
        streams.push(Incoming::<Received>::new(ws).map(move |m| (i, m)));
    }

    let w = p.writes;
    let template = CallTemplate::new("state.patch", &key, "patch");
    let mut send_ts = vec![0u64; w];
    let mut delivered = vec![0u32; w];
    let mut last_delivery = vec![0u64; w];
    let mut acked = vec![false; w];
    let mut latencies: Vec<u64> = Vec::with_capacity(w * p.subs);
    let mut ack_latencies: Vec<u64> = Vec::with_capacity(w);
    let mut faults = Faults::default();
    let (mut next_write, mut completed, mut n_acked, mut unique) = (0usize, 0usize, 0usize, 0u64);
    let expected = (w * p.subs) as u64;

    let before = pid.and_then(procfs::sample);
    let start = now_ns();
    let t0 = Instant::now();
    let period_ns = p.rate.map(|r| (1e9 / r.max(1e-3)) as u64);
    let due = |i: usize| t0 + Duration::from_nanos(period_ns.unwrap_or(0) * i as u64);
    let sleep = tokio::time::sleep_until(due(0));
    tokio::pin!(sleep);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last_progress = start;
    let deadline = start + p.timeout.as_nanos() as u64;
    let open = period_ns.is_some();

    loop {
        if n_acked == w && unique == expected {
            break;
        }
        let can_send_closed = !open && next_write < w && next_write < completed + p.window;
        tokio::select! {
            biased;
            _ = &mut sleep, if open && next_write < w => {
                // Everything due by now goes out in one flush.
                let now = Instant::now();
                let mut batch = 0;
                while next_write < w && due(next_write) <= now && batch < 256 {
                    let t = now_ns();
                    let f = template.frame(next_write as u64, &format!("w{next_write}"), |b| {
                        wire::write_uint_map(b, &[("n", next_write as u64), ("t", t)])
                    });
                    writer.queue(&f);
                    batch += 1;
                    next_write += 1;
                }
                let t = now_ns();
                send_ts[next_write - batch..next_write].fill(t);
                writer.flush().await?;
                if next_write < w {
                    sleep.as_mut().reset(due(next_write));
                }
            }
            _ = std::future::ready(()), if can_send_closed => {
                let end = (completed + p.window).min(w);
                let first = next_write;
                let t = now_ns();
                while next_write < end {
                    let f = template.frame(next_write as u64, &format!("w{next_write}"), |b| {
                        wire::write_uint_map(b, &[("n", next_write as u64), ("t", t)])
                    });
                    writer.queue(&f);
                    next_write += 1;
                }
                let t = now_ns();
                send_ts[first..next_write].fill(t);
                writer.flush().await?;
            }
            Some((i, m)) = streams.next() => {
                let batch = match m {
                    Ok(batch) => batch,
                    Err(_) => {
                        faults.closed_conns += 1;
                        continue;
                    }
                };
                let now = now_ns();
                for received in batch {
                    let d = match received {
                        Received::Delta(d) => d,
                        Received::Error => {
                            faults.error_frames += 1;
                            continue;
                        }
                        Received::Undecodable => {
                            faults.decode_errors += 1;
                            continue;
                        }
                        // Heartbeats were echoed by the stream itself.
                        Received::Heartbeat | Received::Other => continue,
                    };
                    let s = &mut subs[i];
                    if d.stream_id != s.stream_id {
                        faults.wrong_stream += 1;
                    }
                    if d.version <= s.last_version {
                        faults.version_regressions += 1;
                    }
                    s.last_version = d.version;
                    let n = match d.field {
                        Some(n) if (n as usize) < next_write => n as usize,
                        _ => {
                            faults.unknown_write += 1;
                            continue;
                        }
                    };
                    if !s.mark(n) {
                        faults.duplicated += 1;
                        continue;
                    }
                    if s.max_n.is_some_and(|m| n < m) {
                        faults.out_of_order += 1;
                    }
                    s.max_n = Some(s.max_n.map_or(n, |m| m.max(n)));
                    let latency = now.saturating_sub(send_ts[n]);
                    latencies.push(latency);
                    last_delivery[n] = last_delivery[n].max(latency);
                    delivered[n] += 1;
                    unique += 1;
                    last_progress = now;
                    while completed < next_write
                        && acked[completed]
                        && delivered[completed] as usize == p.subs
                    {
                        completed += 1;
                    }
                }
            }
            r = writer.read() => {
                if r.is_err() {
                    return Err("the writer connection was closed".into());
                }
                let now = now_ns();
                let mut heartbeats = 0;
                while let Some(m) = writer.next_message()? {
                    let Message::Binary(bytes) = m else {
                        return Err("the writer connection was closed".into());
                    };
                    let Ok(f) = wire::decode(bytes) else {
                        faults.decode_errors += 1;
                        continue;
                    };
                    match f.kind {
                        FrameType::Result => {
                            let Some(n) = wire::call_number(&f.body, "w").map(|n| n as usize) else {
                                faults.unknown_write += 1;
                                continue;
                            };
                            if n >= next_write || acked[n] {
                                faults.unknown_write += 1;
                                continue;
                            }
                            if f.body.get("success").and_then(|v| v.as_bool()) != Some(true) {
                                faults.failed_calls += 1;
                            }
                            acked[n] = true;
                            n_acked += 1;
                            ack_latencies.push(now.saturating_sub(send_ts[n]));
                            last_progress = now;
                            while completed < next_write
                                && acked[completed]
                                && delivered[completed] as usize == p.subs
                            {
                                completed += 1;
                            }
                        }
                        FrameType::Heartbeat => heartbeats += 1,
                        FrameType::Error => faults.error_frames += 1,
                        _ => {}
                    }
                }
                for _ in 0..heartbeats {
                    writer.queue(&wire::heartbeat_frame());
                }
                writer.flush().await?;
            }
            _ = tick.tick() => {
                let now = now_ns();
                if now > deadline || now - last_progress > p.stall.as_nanos() as u64 {
                    break;
                }
            }
        }
    }
    let end = now_ns();
    let after = pid.and_then(procfs::sample);
    let elapsed = (end - start) as f64 / 1e9;
    let sent = next_write;
    let missing = (sent * p.subs) as u64 - unique;

    let dl = summarize(&mut latencies);
    let al = summarize(&mut ack_latencies);
    let mut to_all: Vec<u64> = (0..sent)
        .filter(|&n| delivered[n] as usize == p.subs)
        .map(|n| last_delivery[n])
        .collect();
    let all = summarize(&mut to_all);
    let usage = before
        .zip(after)
        .map(|(before, after)| Usage { before, after });
    let clean = missing == 0
        && faults.duplicated == 0
        && faults.out_of_order == 0
        && sent == w
        && n_acked == w;
    let json = json!({
        "scenario": "fanout",
        "url": url,
        "writer_url": p.writer_url.as_deref().unwrap_or(url),
        "subs": p.subs,
        "writes": w,
        "mode": if open { "open" } else { "closed" },
        "rate": p.rate,
        "window": p.window,
        "connect_s": round(connect_s),
        "elapsed_s": round(elapsed),
        "writes_sent": sent,
        "writes_acked": n_acked,
        "deliveries": unique,
        "expected_deliveries": expected,
        "missing": missing,
        "duplicated": faults.duplicated,
        "out_of_order": faults.out_of_order,
        "version_regressions": faults.version_regressions,
        "wrong_stream": faults.wrong_stream,
        "unknown_write": faults.unknown_write,
        "closed_conns": faults.closed_conns,
        "error_frames": faults.error_frames,
        "failed_calls": faults.failed_calls,
        "decode_errors": faults.decode_errors,
        "ok": clean,
        "writes_per_s": per_second(n_acked as u64, elapsed),
        "deliveries_per_s": per_second(unique, elapsed),
        "delivery_latency": dl.to_json(),
        "ack_latency": al.to_json(),
        "all_delivered_latency": all.to_json(),
        "server": usage.map(|u| u.to_json(&[("write", n_acked as u64), ("delivery", unique)])),
    });
    let mut summary = format!(
        "fanout: {} subs × {} writes ({}) in {:.2}s — {:.0} deliveries/s, {:.0} writes/s\n  \
         delivery latency {}\n  to every sub     {}\n  ack latency      {}\n  \
         missing {} duplicated {} out-of-order {} (version regressions {}, closed {}, errors {}){}",
        p.subs,
        w,
        match p.rate {
            Some(r) => format!("open loop {r}/s"),
            None => format!("closed loop, window {}", p.window),
        },
        elapsed,
        unique as f64 / elapsed,
        n_acked as f64 / elapsed,
        dl.line(),
        all.line(),
        al.line(),
        missing,
        faults.duplicated,
        faults.out_of_order,
        faults.version_regressions,
        faults.closed_conns,
        faults.error_frames + faults.failed_calls,
        if clean { "" } else { "  <-- NOT CLEAN" },
    );
    if let Some(u) = usage {
        summary.push_str(&format!(
            "\n  server CPU {:.0} ms: {:.2} µs/write, {:.3} µs/delivery; RSS {} → {} KiB",
            u.cpu_us() / 1e3,
            u.cpu_us_per(n_acked as u64).unwrap_or(0.0),
            u.cpu_us_per(unique).unwrap_or(0.0),
            u.before.rss_kib,
            u.after.rss_kib
        ));
    }
    Ok(Report { json, summary })
}
