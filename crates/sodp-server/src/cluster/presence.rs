//! Node leases and the presence paths of dead nodes.
//!
//! Each node renews `lease:<node>` (a key with a TTL of `--cluster-lease-ms`)
//! several times per lease and is listed in `nodes`. Every presence path a
//! session of the node binds is recorded, in the same script as the write,
//! in the node's registry `np:<node>` and as the path's owner. A survivor
//! that finds a listed node without a lease claims it (`reap:<node>`, SET
//! NX with the lease's TTL, so one survivor does it and another takes over
//! if that one dies too), removes each registered path that a session of
//! the dead node still owns — ordinary versioned changes, through the same
//! commit script — then forgets the node. A path is thus gone within about
//! one lease (plus a renewal interval) of the node's death.
//!
//! The renewal is also the node's health check: it marks Redis up or down
//! (`/ready`, 503 for writes).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use tokio::sync::watch;

use super::Cluster;
use crate::store::remote::Binding;
use crate::store::Store;

/// How often the lease is renewed (and Redis's health checked).
pub fn renew_interval(lease: Duration) -> Duration {
    (lease / 3).clamp(Duration::from_millis(20), Duration::from_millis(500))
}

/// The lease task: until `stop`.
pub async fn run(cluster: Arc<Cluster>, store: Weak<Store>, mut stop: watch::Receiver<bool>) {
    let lease = cluster.config.lease;
    let mut last_sweep = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(renew_interval(lease)) => {}
            _ = stop.changed() => return,
        }
        match renew(&cluster).await {
            Ok(()) => cluster.conn.mark_up(),
            Err(e) => {
                cluster.conn.mark_down(&e);
                continue;
            }
        }
        let pending = cluster.take_pending_releases();
        if !pending.is_empty() {
            let Some(store) = store.upgrade() else { return };
            for (key, path, session) in pending {
                // Fails again (and is deferred again) if Redis went away.
                store.release_presence(&key, &path, session);
            }
        }
        if last_sweep.elapsed() >= lease / 3 {
            last_sweep = Instant::now();
            let Some(store) = store.upgrade() else { return };
            if let Err(e) = sweep(&cluster, &store).await {
                tracing::warn!(error = %e, "could not look for dead nodes");
            }
        }
    }
}

pub(super) async fn renew(cluster: &Cluster) -> redis::RedisResult<()> {
    let names = &cluster.names;
    let mut con = cluster.conn.manager();
    redis::pipe()
        .cmd("SET")
        .arg(names.lease(&cluster.node))
        .arg(1)
        .arg("PX")
        .arg(cluster.config.lease.as_millis() as u64)
        .ignore()
        .cmd("SADD")
        .arg(names.nodes())
        .arg(&cluster.node)
        .ignore()
        .query_async(&mut con)
        .await
}

/// Finds listed nodes without a lease and removes their presence paths.
async fn sweep(cluster: &Cluster, store: &Store) -> redis::RedisResult<()> {
    let names = &cluster.names;
    let mut con = cluster.conn.manager();
    let nodes: Vec<String> = con.smembers(names.nodes()).await?;
    for dead in nodes.iter().filter(|n| **n != cluster.node) {
        if con.exists(names.lease(dead)).await? {
            continue;
        }
        let claimed: redis::Value = redis::cmd("SET")
            .arg(names.reaper(dead))
            .arg(&cluster.node)
            .arg("NX")
            .arg("PX")
            .arg(cluster.config.lease.as_millis() as u64)
            .query_async(&mut con)
            .await?;
        if claimed == redis::Value::Nil {
            continue; // Another survivor is at it.
        }
        let paths: Vec<Vec<u8>> = con.smembers(names.registry(dead)).await?;
        let owner_prefix = format!("{dead}:");
        let mut all = true;
        for member in &paths {
            let Some((key, path)) = std::str::from_utf8(member)
                .ok()
                .and_then(|m| m.split_once('\n'))
            else {
                continue;
            };
            all &= reap_path(cluster, store, key, path, &owner_prefix);
        }
        if all {
            tracing::info!(node = %dead, paths = paths.len(), "removed the presence paths of a dead node");
            redis::pipe()
                .del(names.registry(dead))
                .ignore()
                .srem(names.nodes(), dead)
                .ignore()
                .query_async::<()>(&mut con)
                .await?;
        }
    }
    Ok(())
}

/// Removes one path of a dead node (redrafted while other nodes win the
/// race). False if Redis failed: the next sweep tries again.
fn reap_path(cluster: &Cluster, store: &Store, key: &str, path: &str, owner: &str) -> bool {
    for _ in 0..16 {
        match store.remove_path(cluster, key, path, Binding::Reap(path, owner)) {
            Ok(()) => return true,
            Err(e) if e.stale => continue,
            Err(e) => {
                tracing::warn!(key, path, error = %e, "presence path of a dead node not removed yet");
                return false;
            }
        }
    }
    false
}
