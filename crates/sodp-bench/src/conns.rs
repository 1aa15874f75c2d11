//! `conns`: N connections each watching one key are opened and held for S
//! seconds (heartbeats answered); then one write must reach all of them
//! (the liveness check), and then all are closed.
//!
//! With `--server-pid` the server's RSS is read before connecting, once
//! all are watching, at the end of the hold, and after closing (and a
//! settle delay), giving bytes per held connection and whether the memory
//! came back; the server CPU spent accepting and subscribing is reported
//! per connection.

use std::time::Duration;

use futures_util::stream::SelectAll;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use sodp_proto::FrameType;
use tokio_tungstenite::tungstenite::Message;

use crate::clock::now_ns;
use crate::procfs::{self, round, Sample, Usage};
use crate::report::Report;
use crate::wire::{self, CallTemplate, Error};

/// Parameters of a conns run.
#[derive(Debug, Clone)]
pub struct Params {
    pub count: usize,
    pub hold: Duration,
    /// Wait after closing before the last RSS reading.
    pub settle: Duration,
    /// How long the liveness write may take to reach everyone.
    pub liveness_timeout: Duration,
    pub connect_concurrency: usize,
}

pub async fn run(url: &str, pid: Option<u32>, p: &Params) -> Result<Report, Error> {
    if p.count == 0 {
        return Err("conns needs --count >= 1".into());
    }
    let key = wire::run_key("conns", "");
    let s_before = pid.and_then(procfs::sample);
    let t_connect = now_ns();
    let conns = wire::open_many(p.count, p.connect_concurrency, || {
        wire::connect_watching(url, &key, 4096)
    })
    .await?;
    let connect_s = (now_ns() - t_connect) as f64 / 1e9;
    let s_during = pid.and_then(procfs::sample);

    let mut sinks = Vec::with_capacity(p.count);
    let mut streams = SelectAll::new();
    let mut stream_ids = Vec::with_capacity(p.count);
    for (i, (ws, sid)) in conns.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        sinks.push(sink);
        stream_ids.push(sid);
        streams.push(stream.map(move |m| (i, m)));
    }

    // Hold: answer heartbeats, count anything unexpected.
    let (mut heartbeats, mut closed, mut unexpected) = (0u64, 0u64, 0u64);
    let hold_until = tokio::time::Instant::now() + p.hold;
    loop {
        tokio::select! {
            Some((i, m)) = streams.next() => match m {
                Ok(Message::Binary(b)) => match wire::decode(&b).map(|f| f.kind) {
                    Ok(FrameType::Heartbeat) => {
                        heartbeats += 1;
                        sinks[i].send(wire::message(wire::heartbeat_frame())).await?;
                    }
                    _ => unexpected += 1,
                },
                Ok(Message::Close(_)) | Err(_) => closed += 1,
                Ok(_) => {}
            },
            _ = tokio::time::sleep_until(hold_until) => break,
        }
    }
    let s_held = pid.and_then(procfs::sample);

    // Liveness: one write must reach every held connection.
    let mut writer = wire::connect(url, 16 * 1024).await?;
    let call = CallTemplate::new("state.set", &key, "value");
    let write_at = now_ns();
    wire::send(
        &mut writer,
        call.frame(1, "live", |b| wire::write_uint_map(b, &[("alive", 1)])),
    )
    .await?;
    let mut reached = vec![false; p.count];
    let (mut n_reached, mut last_delivery) = (0usize, write_at);
    let live_until = tokio::time::Instant::now() + p.liveness_timeout;
    while n_reached < p.count {
        tokio::select! {
            Some((i, m)) = streams.next() => match m {
                Ok(Message::Binary(b)) => match wire::decode(&b) {
                    Ok(f) if f.kind == FrameType::Delta
                        && wire::delta_field(&f.body, "alive") == Some(1)
                        && f.stream_id == stream_ids[i] =>
                    {
                        if !reached[i] {
                            reached[i] = true;
                            n_reached += 1;
                            last_delivery = now_ns();
                        }
                    }
                    Ok(f) if f.kind == FrameType::Heartbeat => {
                        sinks[i].send(wire::message(wire::heartbeat_frame())).await?;
                    }
                    _ => unexpected += 1,
                },
                Ok(Message::Close(_)) | Err(_) => closed += 1,
                Ok(_) => {}
            },
            _ = tokio::time::sleep_until(live_until) => break,
        }
    }
    let liveness_ms = (last_delivery - write_at) as f64 / 1e6;

    // Close everything and let the server clean up.
    let t_close = now_ns();
    drop(streams);
    for mut s in sinks {
        let _ = s.close().await;
    }
    drop(writer);
    let close_s = (now_ns() - t_close) as f64 / 1e9;
    tokio::time::sleep(p.settle).await;
    let s_after = pid.and_then(procfs::sample);

    let per_conn = |a: Option<Sample>, b: Option<Sample>| {
        a.zip(b)
            .map(|(a, b)| round((b.rss_kib as f64 - a.rss_kib as f64) * 1024.0 / p.count as f64))
    };
    let connect_usage = s_before
        .zip(s_during)
        .map(|(before, after)| Usage { before, after });
    let ok = n_reached == p.count && closed == 0;
    let json = json!({
        "scenario": "conns",
        "url": url,
        "count": p.count,
        "hold_s": p.hold.as_secs_f64(),
        "connect_s": round(connect_s),
        "connects_per_s": round(p.count as f64 / connect_s),
        "close_s": round(close_s),
        "heartbeats_answered": heartbeats,
        "closed_during_hold": closed,
        "unexpected_frames": unexpected,
        "liveness_reached": n_reached,
        "liveness_ms": round(liveness_ms),
        "ok": ok,
        "rss_kib": {
            "before": s_before.map(|s| s.rss_kib),
            "connected": s_during.map(|s| s.rss_kib),
            "held": s_held.map(|s| s.rss_kib),
            "after_close": s_after.map(|s| s.rss_kib),
        },
        "bytes_per_conn": per_conn(s_before, s_during),
        "bytes_per_conn_after_hold": per_conn(s_before, s_held),
        "bytes_left_per_conn_after_close": per_conn(s_before, s_after),
        "server": connect_usage.map(|u| u.to_json(&[("conn", p.count as u64)])),
    });
    let mut summary = format!(
        "conns: {} watching connections opened in {:.2}s ({:.0}/s), held {:.0}s ({} heartbeats answered, {} closed)\n  \
         liveness: write reached {}/{} in {:.1} ms{}",
        p.count,
        connect_s,
        p.count as f64 / connect_s,
        p.hold.as_secs_f64(),
        heartbeats,
        closed,
        n_reached,
        p.count,
        liveness_ms,
        if ok { "" } else { "  <-- NOT CLEAN" },
    );
    if let (Some(b), Some(d), Some(h), Some(a)) = (s_before, s_during, s_held, s_after) {
        summary.push_str(&format!(
            "\n  server RSS KiB: before {} · connected {} · end of hold {} · after close {}\n  \
             {:.0} bytes per connection ({:.0} at end of hold), {:.0} left per connection after close",
            b.rss_kib,
            d.rss_kib,
            h.rss_kib,
            a.rss_kib,
            per_conn(s_before, s_during).unwrap_or(0.0),
            per_conn(s_before, s_held).unwrap_or(0.0),
            per_conn(s_before, s_after).unwrap_or(0.0),
        ));
    }
    if let Some(u) = connect_usage {
        summary.push_str(&format!(
            "\n  server CPU to accept + subscribe: {:.1} µs per connection",
            u.cpu_us_per(p.count as u64).unwrap_or(0.0)
        ));
    }
    Ok(Report { json, summary })
}
