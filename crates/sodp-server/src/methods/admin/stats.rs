//! `admin.stats {}` → the server at a glance: connections, keys, the
//! newest version, counters since start (CALLs, deliveries, frames and
//! bytes, rate-limit refusals, ACL denials), memory (budget use, history,
//! the process's RSS), storage and readiness, and the cluster (this build:
//! a single node). The inspector charts rates from the counters' deltas
//! between two polls.

use serde_json::json;

use super::{data, Args, Context, Method, Reply};
use crate::error::Rejection;
use crate::shared::Shared;

pub(in crate::methods) struct Stats;

impl Method for Stats {
    fn parse(_: &mut Args<'_>) -> Result<Self, Rejection> {
        Ok(Stats)
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        let shared = cx.shared;
        let store = &shared.store;
        let m = &shared.metrics;
        let memory = store.memory();
        let (status, _) = shared.readiness();
        let now_ms = shared.clock.since_epoch().as_millis() as u64;
        let inspector = &shared.config.inspector;
        data(json!({
            "server": {
                "version": env!("CARGO_PKG_VERSION"),
                "commit": env!("SODP_COMMIT"),
                "started_at": shared.started_at_ms,
                "now": now_ms,
                "uptime_ms": now_ms.saturating_sub(shared.started_at_ms),
            },
            "connections": shared.connections(),
            "keys": store.key_count(),
            "version": store.version(),
            "counters": {
                "calls": m.calls_total(),
                "deliveries": m.deliveries.get(),
                "frames_in": m.frames_rx.get(),
                "bytes_in": m.bytes_in.get(),
                "bytes_out": m.bytes_out.get(),
                "rate_limited": m.rate_limited.get(),
                "acl_denials": m.acl_denials.get(),
            },
            "memory": {
                "used": memory.counted + memory.history,
                "values": memory.counted,
                "history": memory.history,
                "max": memory.max,
                "rss": crate::metrics::process_rss_bytes(),
            },
            "storage": {
                "engine": store.storage().describe(),
                "durable": shared.config.storage.is_some(),
                "ready": status == 200,
                "problem": store.storage().check_writable().err().map(|r| r.message),
            },
            "cluster": cluster_status(shared),
            "inspector": {
                "enabled": inspector.enabled,
                "writes": inspector.writes,
                "public": inspector.public,
                "writers_recorded": shared.writers.is_some(),
            },
        }))
    }
}

/// Single node: this one. Cluster mode: every node Redis lists, alive or
/// waiting to be reaped, and this node's id, Redis and healed gaps.
fn cluster_status(shared: &Shared) -> serde_json::Value {
    let addr = shared
        .local_addr
        .get()
        .unwrap_or(&shared.config.addr)
        .to_string();
    let Some(cluster) = shared.cluster.get() else {
        return json!({
            "mode": "single node",
            "nodes": [{"addr": addr, "self": true, "alive": true}],
        });
    };
    let nodes = match cluster.nodes() {
        Ok(nodes) => nodes
            .into_iter()
            .map(|(id, alive)| json!({"id": id, "alive": alive, "self": id == cluster.node()}))
            .collect(),
        // Redis away: say so, and show this node at least.
        Err(_) => vec![json!({"id": cluster.node(), "alive": true, "self": true})],
    };
    json!({
        "mode": "cluster",
        "node": cluster.node(),
        "addr": addr,
        "redis": cluster.redis_url(),
        "redis_up": crate::store::remote::Remote::check_writable(&**cluster).is_ok(),
        "gaps_healed": cluster.gaps(),
        "nodes": nodes,
    })
}
