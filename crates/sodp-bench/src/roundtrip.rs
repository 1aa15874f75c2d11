//! `roundtrip`: one connection watches a key and sets it N times in
//! sequence, waiting each time for both its own RESULT and its own DELTA.
//! Measures the unloaded latency of a write as its author sees it.

use std::time::Duration;

use serde_json::json;
use sodp_proto::FrameType;

use crate::clock::now_ns;
use crate::procfs::{self, round, Usage};
use crate::report::{per_second, Report};
use crate::stats::summarize;
use crate::wire::{self, CallTemplate, Error};

/// Parameters of a roundtrip run.
#[derive(Debug, Clone)]
pub struct Params {
    pub count: usize,
    /// Bound on one round trip.
    pub timeout: Duration,
}

pub async fn run(url: &str, pid: Option<u32>, p: &Params) -> Result<Report, Error> {
    let key = wire::run_key("roundtrip", "");
    let (mut ws, stream_id) = wire::connect_watching(url, &key, 64 * 1024).await?;
    let call = CallTemplate::new("state.set", &key, "value");
    let mut result_lat = Vec::with_capacity(p.count);
    let mut delta_lat = Vec::with_capacity(p.count);
    let mut both_lat = Vec::with_capacity(p.count);
    let (mut failed, mut wrong) = (0u64, 0u64);

    let before = pid.and_then(procfs::sample);
    let start = now_ns();
    for i in 0..p.count as u64 {
        let frame = call.frame(i, &format!("r{i}"), |b| {
            wire::write_uint_map(b, &[("n", i)])
        });
        let sent = now_ns();
        wire::send(&mut ws, frame).await?;
        let (mut got_result, mut got_delta) = (None, None);
        while got_result.is_none() || got_delta.is_none() {
            let f = tokio::time::timeout(p.timeout, wire::next_frame(&mut ws))
                .await
                .map_err(|_| format!("round trip {i} timed out"))??;
            let now = now_ns();
            match f.kind {
                FrameType::Result if wire::call_number(&f.body, "r") == Some(i) => {
                    if f.body.get("success").and_then(|v| v.as_bool()) != Some(true) {
                        failed += 1;
                    }
                    got_result = Some(now);
                }
                FrameType::Delta
                    if f.stream_id == stream_id && wire::delta_field(&f.body, "n") == Some(i) =>
                {
                    got_delta = Some(now)
                }
                FrameType::Heartbeat => wire::send(&mut ws, wire::heartbeat_frame()).await?,
                _ => wrong += 1,
            }
        }
        let (r, d) = (got_result.unwrap_or(sent), got_delta.unwrap_or(sent));
        result_lat.push(r - sent);
        delta_lat.push(d - sent);
        both_lat.push(r.max(d) - sent);
    }
    let elapsed = (now_ns() - start) as f64 / 1e9;
    let after = pid.and_then(procfs::sample);
    let usage = before
        .zip(after)
        .map(|(before, after)| Usage { before, after });
    let (rl, dl, bl) = (
        summarize(&mut result_lat),
        summarize(&mut delta_lat),
        summarize(&mut both_lat),
    );
    let json = json!({
        "scenario": "roundtrip",
        "url": url,
        "count": p.count,
        "elapsed_s": round(elapsed),
        "roundtrips_per_s": per_second(p.count as u64, elapsed),
        "failed_calls": failed,
        "unexpected_frames": wrong,
        "ok": failed == 0 && wrong == 0,
        "result_latency": rl.to_json(),
        "delta_latency": dl.to_json(),
        "roundtrip_latency": bl.to_json(),
        "server": usage.map(|u| u.to_json(&[("write", p.count as u64)])),
    });
    let mut summary = format!(
        "roundtrip: {} sequential set → own RESULT + own DELTA in {:.2}s ({:.0}/s), {} failed, {} unexpected\n  \
         RESULT {}\n  DELTA  {}\n  both   {}",
        p.count,
        elapsed,
        p.count as f64 / elapsed,
        failed,
        wrong,
        rl.line(),
        dl.line(),
        bl.line()
    );
    if let Some(u) = usage {
        summary.push_str(&format!(
            "\n  server CPU {:.2} µs per round trip",
            u.cpu_us_per(p.count as u64).unwrap_or(0.0)
        ));
    }
    Ok(Report { json, summary })
}
