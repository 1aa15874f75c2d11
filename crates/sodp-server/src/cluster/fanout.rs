//! Fanout across nodes: one pub/sub connection per node, subscribed to the
//! channel of every key a local session watches (counted per key), feeding
//! each change to the store, which applies it when it follows the node's
//! copy and sends it on to local subscribers as one encoded DELTA.
//!
//! Gap detection: every change names the version it follows; one that
//! does not follow the copy (a message lost, a subscription that came up
//! late) makes the node catch the key up from Redis. After the pub/sub
//! connection is lost and comes back, every watched key is caught up the
//! same way, since messages published meanwhile are gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::watch;

use super::entry;
use super::Cluster;
use crate::error::Rejection;
use crate::store::{Applied, Store};

/// How many fetches a gap may take before the node waits for the next
/// change (which starts another round).
const HEAL_ROUNDS: usize = 4;

/// What the node is subscribed to.
#[derive(Default)]
pub struct Fanout {
    /// key → local subscribers; an async mutex because it is held while
    /// Redis confirms a (un)subscription, so the two never cross.
    watched: tokio::sync::Mutex<HashMap<String, usize>>,
    /// The current pub/sub connection's command side (None while down).
    sink: Mutex<Option<PubSubSink>>,
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
            let count = watched.entry(key.to_owned()).or_insert(0);
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
                watched.remove(key);
            }
            result
        })
    }

    /// One local subscriber fewer; the last unsubscribes.
    pub(super) fn unwatch_key(&self, key: &str) {
        self.conn.block(async {
            let mut watched = self.fanout.watched.lock().await;
            match watched.get_mut(key) {
                Some(count) if *count > 1 => *count -= 1,
                Some(_) => {
                    watched.remove(key);
                    if let Some(mut sink) = sink_of(&self.fanout) {
                        let _ = sink.unsubscribe(self.names.channel(key)).await;
                    }
                }
                None => {}
            }
        });
    }

    /// Keys with local subscribers (for tests and inspection).
    pub fn watched_keys(&self) -> usize {
        self.conn
            .block(async { self.fanout.watched.lock().await.len() })
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

    async fn on_message(&self, store: &Store, msg: redis::Msg) {
        let Some(key) = self.names.key_of_channel(msg.get_channel_name()) else {
            return;
        };
        let applied = match entry::parse(msg.get_payload_bytes()) {
            Ok(change) => store.apply_change(key, change, false),
            Err(e) => {
                tracing::warn!(key, error = %e, "catching up instead");
                Applied::Gap
            }
        };
        if applied == Applied::Gap {
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
    let keys: Vec<String> = {
        let watched = cluster.fanout.watched.lock().await;
        let channels: Vec<String> = watched.keys().map(|k| cluster.names.channel(k)).collect();
        if !channels.is_empty() {
            if let Err(e) = sink.subscribe(&channels).await {
                cluster.conn.mark_down(&e);
                return None;
            }
        }
        set_sink(&cluster.fanout, Some(sink));
        watched.keys().cloned().collect()
    };
    *backoff = Duration::from_millis(50);
    let store = store.upgrade()?;
    tracing::info!(
        keys = keys.len(),
        "pub/sub reconnected: catching watched keys up"
    );
    for key in &keys {
        cluster.heal(&store, key).await;
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
