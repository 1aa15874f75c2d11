//! Deadlines of keys no node holds a copy of: every node's own timers
//! expire the keys it holds (within 100 ms); this sweep, every 100 ms over
//! Redis's index of deadlines, catches the rest — keys written by a node
//! that has died since. Either way the expiry goes through the commit
//! script with the deadline as its condition, so a key expires once.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::Cluster;
use crate::store::Store;

const SWEEP: Duration = Duration::from_millis(100);

/// Most due keys taken per sweep (the rest wait for the next one).
const BATCH: usize = 64;

pub async fn run(cluster: Arc<Cluster>, store: Weak<Store>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(SWEEP) => {}
            _ = stop.changed() => return,
        }
        if !cluster.conn.is_up() {
            continue;
        }
        let Some(store) = store.upgrade() else { return };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut con = cluster.conn.manager();
        let due: redis::RedisResult<Vec<(String, u64)>> = redis::cmd("ZRANGEBYSCORE")
            .arg(cluster.names.deadlines())
            .arg("-inf")
            .arg(now)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(BATCH)
            .query_async(&mut con)
            .await;
        let Ok(due) = due else { continue };
        for (key, at) in due {
            store.expire_due(&key, at);
        }
    }
}
