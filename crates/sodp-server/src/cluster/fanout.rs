//! Fanout across nodes: one pub/sub connection per node, subscribed to the
//! channel of every key a local session watches (counted per key), feeding
//! each change to the store, which applies it when it follows the node's
//! copy and sends it on to local subscribers as one encoded DELTA.
//!
//! Pattern messages (PSUBSCRIBE, one per watched prefix) also feed that
//! prefix's pattern stream, in the order Redis committed them — the only
//! way pattern streams are fed in cluster mode (`store/cluster_patterns.rs`).
//!
//! Gap detection: every change names the version it follows; one that
//! does not follow the copy (a message lost, a subscription that came up
//! late) makes the node catch the key up from Redis, and one that does not
//! follow a pattern stream makes the node send that pattern's subscribers
//! a fresh snapshot. After the pub/sub connection is lost and comes back,
//! every watched key is caught up and every pattern re-snapshotted, since
//! messages published meanwhile are gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::watch;

use super::entry;
use super::Cluster;
use crate::error::Rejection;
use crate::store::{Applied, Fed, Store};

/// How many fetches a gap may take before the node waits for the next
/// change (which starts another round).
const HEAL_ROUNDS: usize = 4;

/// Local subscribers per key and per pattern prefix.
#[derive(Default)]
struct Watched {
    keys: HashMap<String, usize>,
    prefixes: HashMap<String, usize>,
}

/// What the node is subscribed to.
#[derive(Default)]
pub struct Fanout {
    /// An async mutex because it is held while Redis confirms a
    /// (un)subscription, so the two never cross.
    watched: tokio::sync::Mutex<Watched>,
    /// The current pub/sub connection's command side (None while down).
    sink: Mutex<Option<PubSubSink>>,
}

/// One subscriber fewer; the count left (None: there was none).
fn decrement(counts: &mut HashMap<String, usize>, name: &str) -> Option<usize> {
    let count = counts.get_mut(name)?;
    *count -= 1;
    let left = *count;
    if left == 0 {
        counts.remove(name);
    }
    Some(left)
}

fn sink_of(fanout: &Fanout) -> Option<PubSubSink> {
    fanout
        .sink
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

fn set_sink(fanout: &Fanout, sink: Option<PubSubSink>) {
    *fanout.sink.lock().unwrap_or_else(|p| p.into_inner()) = sink;
}

impl Cluster {
    /// One local subscriber more for `key`; the first subscribes at Redis
    /// (confirmed before this returns).
    pub(super) fn watch_key(&self, key: &str) -> Result<(), Rejection> {
        self.conn.block(async {
            let mut watched = self.fanout.watched.lock().await;
            let count = watched.keys.entry(key.to_owned()).or_insert(0);
            *count += 1;
            if *count > 1 {
                return Ok(());
            }
            let result = match sink_of(&self.fanout) {
                Some(mut sink) => self
                    .conn
                    .observe(sink.subscribe(self.names.channel(key)).await),
                None => self.conn.check().and(Err(Rejection::new(
                    crate::error::ErrorCode::Unavailable,
                    "the cluster's pub/sub connection is down; retry",
                ))),
            };
            if result.is_err() {
                watched.keys.remove(key);
            }
            result
        })
    }

    /// One local subscriber fewer; the last unsubscribes.
    pub(super) fn unwatch_key(&self, key: &str) {
        self.conn.block(async {
            let mut watched = self.fanout.watched.lock().await;
            if let Some(0) = decrement(&mut watched.keys, key) {
                if let Some(mut sink) = sink_of(&self.fanout) {
                    let _ = sink.unsubscribe(self.names.channel(key)).await;
                }
            }
        });
    }

    /// One local pattern subscriber more for `prefix`; the first
    /// subscribes to the channels of every key below it.
    pub(super) fn watch_prefix(&self, prefix: &str) -> Result<(), Rejection> {
        self.conn.block(async {
            let mut watched = self.fanout.watched.lock().await;
            let count = watched.prefixes.entry(prefix.to_owned()).or_insert(0);
            *count += 1;
            if *count > 1 {
                return Ok(());
            }
            let result = match sink_of(&self.fanout) {
                Some(mut sink) => self
                    .conn
                    .observe(sink.psubscribe(self.names.channel_pattern(prefix)).await),
                None => self.conn.check().and(Err(Rejection::new(
                    crate::error::ErrorCode::Unavailable,
                    "the cluster's pub/sub connection is down; retry",
                ))),
            };
            if result.is_err() {
                watched.prefixes.remove(prefix);
            }
            result
        })
    }

    pub(super) fn unwatch_prefix(&self, prefix: &str) {
        self.conn.block(async {
            let mut watched = self.fanout.watched.lock().await;
            if let Some(0) = decrement(&mut watched.prefixes, prefix) {
                if let Some(mut sink) = sink_of(&self.fanout) {
                    let _ = sink.punsubscribe(self.names.channel_pattern(prefix)).await;
                }
            }
        });
    }

    /// Keys and prefixes with local subscribers (for tests and inspection).
    pub fn watched(&self) -> (usize, usize) {
        self.conn.block(async {
            let w = self.fanout.watched.lock().await;
            (w.keys.len(), w.prefixes.len())
        })
    }

    /// Brings the node's copy of `key` up to Redis after a gap.
    async fn heal(&self, store: &Store, key: &str) {
        for _ in 0..HEAL_ROUNDS {
            let since = store.local_version(key);
            match self.fetch(key, since).await {
                Ok(catch_up) => {
                    if store.apply_catch_up(key, catch_up) {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "cannot catch up yet");
                    return;
                }
            }
        }
    }

    /// Sends every live subscriber of the pattern with `prefix` a fresh
    /// snapshot (after a missed change, or a reconnect). Bounded by the
    /// node's memory budget: a snapshot the node could not hold is not
    /// read (the subscribers go on without it, and it is logged).
    async fn resnapshot(&self, store: &Store, prefix: &str) {
        match self.snapshot(prefix, Some(store.memory().max)).await {
            Ok(snapshot) => store.reinit_pattern(prefix, &snapshot),
            Err(e) => tracing::warn!(prefix, error = %e, "cannot send a pattern's snapshot yet"),
        }
    }

    async fn on_message(&self, store: &Store, msg: redis::Msg) {
        let Some(key) = self.names.key_of_channel(msg.get_channel_name()) else {
            return;
        };
        let pattern: Option<String> = msg.get_pattern().ok();
        let prefix = pattern
            .as_deref()
            .and_then(|p| self.names.prefix_of_pattern(p));
        let change = match entry::parse(msg.get_payload_bytes()) {
            Ok(change) => change,
            Err(e) => {
                tracing::warn!(key, error = %e, "catching up instead");
                self.metrics_gap();
                if let Some(prefix) = prefix {
                    self.resnapshot(store, prefix).await;
                }
                return self.heal(store, key).await;
            }
        };
        if let Some(prefix) = prefix {
            if store.publish_remote(prefix, key, &change) == Fed::Gap {
                self.metrics_gap();
                self.resnapshot(store, prefix).await;
            }
        }
        if store.apply_change(key, change, false) == Applied::Gap {
            self.metrics_gap();
            self.heal(store, key).await;
        }
    }
}

/// The subscriber task: hands every message to the store; after the
/// connection is lost, reconnects, resubscribes and catches up; until
/// `stop`. `first`: the stream of the connection made at start (its sink is
/// already in place).
pub async fn run(
    cluster: Arc<Cluster>,
    store: Weak<Store>,
    mut stop: watch::Receiver<bool>,
    first: PubSubStream,
) {
    let mut backoff = Duration::from_millis(50);
    let mut first = Some(first);
    loop {
        if *stop.borrow() {
            return;
        }
        let mut stream = match first.take() {
            Some(stream) => stream,
            None => match reconnect(&cluster, &store, &mut backoff, &mut stop).await {
                Some(stream) => stream,
                None => continue,
            },
        };
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => {
                        let Some(store) = store.upgrade() else { return };
                        cluster.on_message(&store, msg).await;
                    }
                    None => break,
                },
                _ = stop.changed() => return,
            }
        }
        set_sink(&cluster.fanout, None);
        cluster.conn.mark_down(&"the pub/sub connection was lost");
    }
}

/// A new pub/sub connection, subscribed to every watched key, each of
/// which is then caught up (what was published meanwhile is gone).
async fn reconnect(
    cluster: &Cluster,
    store: &Weak<Store>,
    backoff: &mut Duration,
    stop: &mut watch::Receiver<bool>,
) -> Option<PubSubStream> {
    let pubsub = match cluster.conn.client.get_async_pubsub().await {
        Ok(pubsub) => pubsub,
        Err(e) => {
            cluster.conn.mark_down(&e);
            tokio::select! {
                () = tokio::time::sleep(*backoff) => {}
                _ = stop.changed() => {}
            }
            *backoff = (*backoff * 2).min(Duration::from_secs(1));
            return None;
        }
    };
    let (mut sink, stream) = pubsub.split();
    let (mut keys, prefixes) = {
        let watched = cluster.fanout.watched.lock().await;
        let channels: Vec<String> = watched
            .keys
            .keys()
            .map(|k| cluster.names.channel(k))
            .collect();
        let patterns: Vec<String> = watched
            .prefixes
            .keys()
            .map(|p| cluster.names.channel_pattern(p))
            .collect();
        let subscribed = match channels.is_empty() {
            true => Ok(()),
            false => sink.subscribe(&channels).await,
        };
        let psubscribed = match (subscribed, patterns.is_empty()) {
            (Ok(()), false) => sink.psubscribe(&patterns).await,
            (other, _) => other,
        };
        if let Err(e) = psubscribed {
            cluster.conn.mark_down(&e);
            return None;
        }
        set_sink(&cluster.fanout, Some(sink));
        let keys: Vec<String> = watched.keys.keys().cloned().collect();
        let prefixes: Vec<String> = watched.prefixes.keys().cloned().collect();
        (keys, prefixes)
    };
    *backoff = Duration::from_millis(50);
    let store = store.upgrade()?;
    for prefix in &prefixes {
        keys.extend(store.keys_held_under(prefix));
    }
    keys.sort_unstable();
    keys.dedup();
    tracing::info!(
        keys = keys.len(),
        "pub/sub reconnected: catching watched keys up"
    );
    for key in &keys {
        cluster.heal(&store, key).await;
    }
    for prefix in &prefixes {
        cluster.resnapshot(&store, prefix).await;
    }
    Some(stream)
}

/// The first pub/sub connection, made at start so that the first WATCH
/// finds it; its stream goes to [`run`].
pub async fn connect(cluster: &Cluster) -> redis::RedisResult<PubSubStream> {
    let (sink, stream) = cluster.conn.client.get_async_pubsub().await?.split();
    set_sink(&cluster.fanout, Some(sink));
    Ok(stream)
}
