//! Scenarios for the protocol extensions (ours only: the baseline has none).
//!
//! - `patterns`: the `writes` load with pattern subscriptions registered —
//!   `--pattern-subs` connections watching `BASE.*` (every written key
//!   matches; their DELTAs are read and counted) and `--idle-patterns`
//!   patterns that match nothing (1,000 per connection, the per-session
//!   limit being 1,024). Comparing server CPU per write across runs shows
//!   what registered patterns cost a write.
//! - `cas`: C connections run compare-and-set loops on one counter
//!   (`state.get`, then `state.set` with `if_version`, re-read on 409) for
//!   S seconds; the counter must end at the number of commits.
//! - `keyspace`: K keys written (optionally with `ttl_ms`), then the
//!   server's RSS growth per key and its CPU while idle for a few seconds.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use sodp_proto::codec;
use sodp_proto::{FrameType, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::clock::now_ns;
use crate::procfs::{self, round, Usage};
use crate::report::{per_second, Report};
use crate::wire::{self, Error, Ws};
use crate::writes;

/// Patterns one idle connection registers (below the 1,024 limit).
const PATTERNS_PER_CONN: usize = 1000;

/// `WATCH {states: [keys...]}` (each entry its own subscription).
fn watch_list_frame(keys: &[String]) -> Vec<u8> {
    let mut buf = Vec::new();
    sodp_proto::frame::write_header(&mut buf, FrameType::Watch, 0, 0);
    codec::write_map_len(&mut buf, 1);
    codec::write_str(&mut buf, "states");
    codec::write_array_len(&mut buf, keys.len());
    for k in keys {
        codec::write_str(&mut buf, k);
    }
    buf
}

/// Sends a WATCH of `keys` and waits for their STATE_INITs.
async fn watch_all(ws: &mut Ws, keys: &[String]) -> Result<(), Error> {
    wire::send(ws, watch_list_frame(keys)).await?;
    let mut inits = 0;
    while inits < keys.len() {
        let f = wire::next_frame(ws).await?;
        match f.kind {
            FrameType::StateInit => inits += 1,
            FrameType::Heartbeat => wire::send(ws, wire::heartbeat_frame()).await?,
            FrameType::Error => return Err(format!("WATCH refused: {:?}", f.body.to_json()).into()),
            _ => {}
        }
    }
    Ok(())
}

/// Reads a connection until it closes, answering heartbeats; returns the
/// DELTAs it received.
async fn drain(mut ws: Ws, stop: tokio::sync::watch::Receiver<bool>) -> u64 {
    let mut deltas = 0;
    let mut stop = stop;
    loop {
        tokio::select! {
            _ = stop.changed() => return deltas,
            m = ws.next() => match m {
                Some(Ok(Message::Binary(b))) => match wire::decode(&b) {
                    Ok(f) if f.kind == FrameType::Delta => deltas += 1,
                    Ok(f) if f.kind == FrameType::Heartbeat => {
                        let _ = ws.send(wire::message(wire::heartbeat_frame())).await;
                    }
                    _ => {}
                },
                Some(Ok(_)) => {}
                _ => return deltas,
            },
        }
    }
}

/// `patterns`: see the module docs.
pub async fn patterns(
    url: &str,
    pid: Option<u32>,
    p: &writes::Params,
    pattern_subs: usize,
    idle_patterns: usize,
) -> Result<Report, Error> {
    let base = wire::run_key("writes", "");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    for _ in 0..pattern_subs {
        let mut ws = wire::connect(url, 64 * 1024).await?;
        watch_all(&mut ws, &[format!("{base}.*")]).await?;
        readers.push(tokio::spawn(drain(ws, stop_rx.clone())));
    }
    let idle: Vec<String> = (0..idle_patterns)
        .map(|i| format!("bench.idle.p{}.n{i}.*", std::process::id()))
        .collect();
    let mut idle_conns = Vec::new();
    for chunk in idle.chunks(PATTERNS_PER_CONN) {
        let mut ws = wire::connect(url, 64 * 1024).await?;
        watch_all(&mut ws, chunk).await?;
        idle_conns.push(tokio::spawn(drain(ws, stop_rx.clone())));
    }
    let mut report = writes::run_on(url, pid, p, &base).await?;
    let _ = stop_tx.send(true);
    let mut delivered = 0;
    for r in readers {
        delivered += r.await.unwrap_or(0);
    }
    let mut idle_deltas = 0;
    for r in idle_conns {
        idle_deltas += r.await.unwrap_or(0);
    }
    let acked = report.json["writes_acked"].as_u64().unwrap_or(0);
    // Every acked write reaches every pattern subscriber (up to what was
    // still in flight when reading stopped); idle patterns see nothing.
    let complete =
        delivered + 64 * p.conns as u64 * pattern_subs as u64 >= acked * pattern_subs as u64;
    let ok = report.json["ok"].as_bool() == Some(true) && idle_deltas == 0 && complete;
    report.json["scenario"] = "patterns".into();
    report.json["pattern_subs"] = pattern_subs.into();
    report.json["idle_patterns"] = idle_patterns.into();
    report.json["pattern_deltas"] = delivered.into();
    report.json["ok"] = ok.into();
    report.summary = format!(
        "patterns: {pattern_subs} matching pattern subscriber(s), {idle_patterns} idle patterns; {delivered} pattern DELTAs\n{}",
        report.summary
    );
    Ok(report)
}

/// A one-off CALL on `ws`; returns the RESULT body.
async fn call(ws: &mut Ws, id: u64, method: &str, args: Value) -> Result<Value, Error> {
    let call_id = format!("x{id}");
    let body = Value::map_from([
        ("call_id", Value::from(call_id.as_str())),
        ("method", Value::from(method)),
        ("args", args),
    ]);
    wire::send(
        ws,
        sodp_proto::Frame::new(FrameType::Call, 0, body).encode(),
    )
    .await?;
    loop {
        let f = wire::next_frame(ws).await?;
        match f.kind {
            FrameType::Result if f.body.get("call_id") == Some(&Value::from(call_id.as_str())) => {
                return Ok(f.body)
            }
            FrameType::Heartbeat => wire::send(ws, wire::heartbeat_frame()).await?,
            _ => {}
        }
    }
}

#[derive(Default)]
struct CasStats {
    commits: u64,
    conflicts: u64,
    reads: u64,
}

async fn cas_loop(mut ws: Ws, key: String, stop: u64) -> Result<CasStats, Error> {
    let mut st = CasStats::default();
    let mut id = 0;
    while now_ns() < stop {
        id += 1;
        let r = call(
            &mut ws,
            id,
            "state.get",
            Value::map_from([("state", Value::from(key.as_str()))]),
        )
        .await?;
        st.reads += 1;
        let data = r.get("data").ok_or("state.get without data")?;
        let v = data.get("version").and_then(Value::as_u64).unwrap_or(0);
        let n = data.get("value").and_then(Value::as_u64).unwrap_or(0);
        id += 1;
        let args = Value::map_from([
            ("state", Value::from(key.as_str())),
            ("value", Value::from(n + 1)),
            ("if_version", Value::from(v)),
        ]);
        let r = call(&mut ws, id, "state.set", args).await?;
        match r.get("success").and_then(Value::as_bool) {
            Some(true) => st.commits += 1,
            _ if r.get("code").and_then(Value::as_i64) == Some(409) => st.conflicts += 1,
            _ => return Err(format!("state.set failed: {:?}", r.to_json()).into()),
        }
    }
    Ok(st)
}

/// `cas`: see the module docs.
pub async fn cas(
    url: &str,
    pid: Option<u32>,
    conns: usize,
    duration: Duration,
) -> Result<Report, Error> {
    let key = wire::run_key("cas", "");
    let mut sockets = Vec::new();
    for _ in 0..conns.max(1) {
        sockets.push(wire::connect(url, 64 * 1024).await?);
    }
    let before = pid.and_then(procfs::sample);
    let start = now_ns();
    let stop = start + duration.as_nanos() as u64;
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(cas_loop(ws, key.clone(), stop)))
        .collect();
    let mut total = CasStats::default();
    for t in tasks {
        let s = t.await.map_err(|e| e.to_string())??;
        total.commits += s.commits;
        total.conflicts += s.conflicts;
        total.reads += s.reads;
    }
    let elapsed = (now_ns() - start) as f64 / 1e9;
    let after = pid.and_then(procfs::sample);
    let usage = before
        .zip(after)
        .map(|(before, after)| Usage { before, after });
    let mut ws = wire::connect(url, 64 * 1024).await?;
    let r = call(
        &mut ws,
        0,
        "state.get",
        Value::map_from([("state", Value::from(key.as_str()))]),
    )
    .await?;
    let final_value = r
        .get("data")
        .and_then(|d| d.get("value"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let ok = final_value == total.commits;
    let json = json!({
        "scenario": "cas",
        "conns": conns,
        "elapsed_s": round(elapsed),
        "commits": total.commits,
        "conflicts": total.conflicts,
        "commits_per_s": per_second(total.commits, elapsed),
        "conflict_ratio": round(total.conflicts as f64 / (total.commits + total.conflicts).max(1) as f64),
        "final_value": final_value,
        "ok": ok,
        "server": usage.map(|u| u.to_json(&[("commit", total.commits)])),
    });
    let summary = format!(
        "cas: {conns} conns, one counter, {elapsed:.1}s — {} commits ({:.0}/s), {} conflicts; counter ends at {final_value}{}",
        total.commits,
        total.commits as f64 / elapsed,
        total.conflicts,
        usage
            .map(|u| format!("; server {:.2} µs CPU/commit", u.cpu_us_per(total.commits).unwrap_or(0.0)))
            .unwrap_or_default()
    );
    Ok(Report { json, summary })
}

/// `keyspace`: see the module docs.
pub async fn keyspace(
    url: &str,
    pid: u32,
    keys: usize,
    ttl_ms: Option<u64>,
    idle: Duration,
) -> Result<Report, Error> {
    let base = wire::run_key("keyspace", "");
    let before = procfs::sample(pid).ok_or("cannot read the server's /proc")?;
    let conns = 4;
    let window = 64;
    let mut tasks = Vec::new();
    for c in 0..conns {
        let mut ws = wire::connect(url, 64 * 1024).await?;
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let mut in_flight = 0usize;
            let mut failed = 0u64;
            let mut k = c;
            let mut n = 0u64;
            loop {
                while in_flight < window && k < keys {
                    let mut fields = vec![
                        ("state", Value::from(format!("{base}.k{k}"))),
                        ("value", Value::from(k as u64)),
                    ];
                    if let Some(ttl) = ttl_ms {
                        fields.push(("ttl_ms", Value::from(ttl)));
                    }
                    let body = Value::map_from([
                        ("call_id", Value::from(format!("k{n}"))),
                        ("method", Value::from("state.set")),
                        ("args", Value::map_from(fields)),
                    ]);
                    ws.feed(wire::message(
                        sodp_proto::Frame::new(FrameType::Call, 0, body).encode(),
                    ))
                    .await?;
                    n += 1;
                    in_flight += 1;
                    k += conns;
                }
                ws.flush().await?;
                if in_flight == 0 {
                    return Ok::<u64, Error>(failed);
                }
                let f = wire::next_frame(&mut ws).await?;
                match f.kind {
                    FrameType::Result => {
                        in_flight -= 1;
                        if f.body.get("success").and_then(Value::as_bool) != Some(true) {
                            failed += 1;
                        }
                    }
                    FrameType::Heartbeat => wire::send(&mut ws, wire::heartbeat_frame()).await?,
                    _ => {}
                }
            }
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.map_err(|e| e.to_string())??;
    }
    let loaded = procfs::sample(pid).ok_or("cannot read the server's /proc")?;
    tokio::time::sleep(idle).await;
    let rested = procfs::sample(pid).ok_or("cannot read the server's /proc")?;
    let idle_usage = Usage {
        before: loaded,
        after: rested,
    };
    let rss_per_key =
        (loaded.rss_kib.saturating_sub(before.rss_kib) * 1024) as f64 / keys.max(1) as f64;
    let json = json!({
        "scenario": "keyspace",
        "keys": keys,
        "ttl_ms": ttl_ms,
        "failed_calls": failed,
        "rss_kib_before": before.rss_kib,
        "rss_kib_loaded": loaded.rss_kib,
        "rss_bytes_per_key": round(rss_per_key),
        "idle_s": idle.as_secs_f64(),
        "idle_cpu_us": round(idle_usage.cpu_us()),
        "ok": failed == 0,
    });
    let summary = format!(
        "keyspace: {keys} keys{} — RSS {} → {} KiB ({rss_per_key:.0} B/key); idle {:.1}s: {:.1} ms CPU",
        ttl_ms.map(|t| format!(" with ttl_ms {t}")).unwrap_or_default(),
        before.rss_kib,
        loaded.rss_kib,
        idle.as_secs_f64(),
        idle_usage.cpu_us() / 1e3
    );
    Ok(Report { json, summary })
}
