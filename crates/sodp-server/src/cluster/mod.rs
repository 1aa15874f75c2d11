//! Cluster mode: several `sodp-server` nodes share one state in Redis.
//!
//! Redis is the commit point; each node keeps a copy of the keys its
//! sessions use and serves them as a single server would. The parts:
//! - `config`: `--redis-url` and the lease.
//! - `names`: every Redis key and channel the cluster uses.
//! - `connection`: the connection manager, reachability, and the bridge
//!   from the synchronous write path to Redis.
//! - `trust`: the certificates `rediss://` trusts (system or `--redis-ca-file`).
//! - `commit` + `commit.lua`: one atomic script per mutation (condition
//!   on the drafted base version, version assignment, value, history,
//!   publish), acknowledged only after it ran.
//! - `entry`: a change as history and channels carry it.
//! - `catch_up` + `fetch.lua`: a key's missed changes, or its image.
//! - `snapshot` + `snapshot.lua`: a pattern's keys at one version.
//! - `fanout`: the pub/sub subscriber, gap detection, reconnect catch-up.
//! - `presence`: node leases; the survivors remove a dead node's paths.
//! - `expiry`: deadlines of keys no node holds.
//! - `idempotency`: outcomes of idempotent writes, shared by the nodes.
//!
//! The store side (drafting, applying changes in order) is
//! `store/clustered.rs`, behind the [`Remote`] trait, so the single-node
//! server pays one `OnceLock` check per write for all of this.

mod catch_up;
mod commit;
pub mod config;
pub mod connection;
pub mod entry;
mod expiry;
mod fanout;
mod idempotency;
pub mod names;
mod presence;
mod snapshot;
mod trust;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redis::Script;
use tokio::sync::watch;

use crate::error::{ErrorCode, Rejection};
use crate::store::remote::{CatchUp, Gate, Outcome, PatternSnapshot, Proposal, Remember, Remote};
use crate::store::Store;

pub use config::ClusterConfig;
pub use connection::ConnectError;
use connection::Connection;
use fanout::Fanout;
use names::Names;
pub use trust::TrustError;

/// Stripes of write gates: writes to keys on different stripes never wait
/// for each other on this node.
const GATES: usize = 256;

/// The gate stripe of `key`.
fn stripe(key: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key) as usize % GATES
}

/// This node's membership of the cluster.
pub struct Cluster {
    conn: Connection,
    names: Names,
    /// This node's id, unique for the cluster's life (`INCR node-ids`): a
    /// restarted node is a new node, and its old self's paths are reaped.
    node: String,
    config: ClusterConfig,
    history_len: usize,
    commit: Script,
    fetch: Script,
    snapshot: Script,
    fanout: Fanout,
    /// Changes that did not follow the node's copy (each healed by a
    /// catch-up).
    gaps: AtomicU64,
    /// Presence releases that failed while Redis was away (retried by the
    /// lease task once it is back; bounded by the paths sessions held).
    pending_releases: std::sync::Mutex<Vec<(String, String, crate::outbox::SessionId)>>,
    /// Per-key write gates, striped (see [`Remote::gate`]).
    gates: Vec<Arc<tokio::sync::Mutex<()>>>,
    stop: watch::Sender<bool>,
}

impl Cluster {
    /// Connects, takes a node id, attaches to `store` and starts the
    /// subscriber and lease tasks.
    pub async fn start(
        config: &ClusterConfig,
        history_len: usize,
        store: &Arc<Store>,
    ) -> Result<Arc<Cluster>, ConnectError> {
        let conn = Connection::open(&config.url, config.ca_file.as_deref()).await?;
        let names = Names::new(&config.prefix);
        let node: u64 = redis::cmd("INCR")
            .arg(names.node_ids())
            .query_async(&mut conn.manager())
            .await
            .map_err(|source| ConnectError::Unreachable {
                url: conn.url().to_owned(),
                source,
            })?;
        let (stop, stopped) = watch::channel(false);
        let cluster = Arc::new(Cluster {
            conn,
            names,
            node: node.to_string(),
            config: config.clone(),
            history_len,
            commit: commit::script(),
            fetch: catch_up::script(),
            snapshot: snapshot::script(),
            fanout: Fanout::default(),
            gaps: AtomicU64::new(0),
            pending_releases: std::sync::Mutex::default(),
            gates: (0..GATES).map(|_| Arc::default()).collect(),
            stop,
        });
        // Listed with a lease before the first session can bind anything,
        // so a node that dies at once is still reaped.
        presence::renew(&cluster)
            .await
            .map_err(|source| ConnectError::Unreachable {
                url: cluster.conn.url().to_owned(),
                source,
            })?;
        tracing::info!(redis = %cluster.conn.url(), node = %cluster.node, lease_ms = config.lease.as_millis() as u64, "cluster mode");
        store.attach_remote(cluster.clone());
        let weak = Arc::downgrade(store);
        let stream =
            fanout::connect(&cluster)
                .await
                .map_err(|source| ConnectError::Unreachable {
                    url: cluster.conn.url().to_owned(),
                    source,
                })?;
        tokio::spawn(fanout::run(
            cluster.clone(),
            weak.clone(),
            stopped.clone(),
            stream,
        ));
        tokio::spawn(presence::run(
            cluster.clone(),
            weak.clone(),
            stopped.clone(),
        ));
        tokio::spawn(expiry::run(cluster.clone(), weak, stopped));
        Ok(cluster)
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Stops the subscriber and the lease renewal (shutdown). The lease
    /// then runs out and the survivors forget this node.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    async fn fetch(&self, key: &str, since: u64) -> Result<CatchUp, Rejection> {
        let mut con = self.conn.manager();
        let reply: Vec<Vec<u8>> = self.conn.observe(
            self.fetch
                .key(self.names.hash(key))
                .key(self.names.history(key))
                .arg(since)
                .invoke_async(&mut con)
                .await,
        )?;
        catch_up::parse(&reply).map_err(|e| Rejection::new(ErrorCode::Internal, e))
    }

    fn metrics_gap(&self) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the presence releases waiting for Redis.
    fn take_pending_releases(&self) -> Vec<(String, String, crate::outbox::SessionId)> {
        std::mem::take(
            &mut *self
                .pending_releases
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Gaps detected so far (each healed by a catch-up).
    pub fn gaps(&self) -> u64 {
        self.gaps.load(Ordering::Relaxed)
    }

    /// The Redis the nodes share (its password, if any, redacted).
    pub fn redis_url(&self) -> &str {
        self.conn.url()
    }

    /// Every node listed in Redis, each with whether its lease is alive (a
    /// listed node without one is dead, waiting for a survivor to reap it),
    /// sorted by id. Blocks the calling thread for the round trips.
    pub fn nodes(&self) -> Result<Vec<(String, bool)>, Rejection> {
        use redis::AsyncCommands;
        let mut con = self.conn.manager();
        let listing = self.conn.block(async {
            let ids: Vec<String> = con.smembers(self.names.nodes()).await?;
            let mut nodes = Vec::with_capacity(ids.len());
            for id in ids {
                let alive: bool = con.exists(self.names.lease(&id)).await?;
                nodes.push((id, alive));
            }
            Ok::<_, redis::RedisError>(nodes)
        });
        let mut nodes = self.conn.observe(listing)?;
        nodes.sort();
        Ok(nodes)
    }
}

impl Remote for Cluster {
    fn check_writable(&self) -> Result<(), Rejection> {
        self.conn.check()
    }

    fn commit(
        &self,
        proposals: &[Proposal<'_>],
        remember: Option<Remember<'_>>,
    ) -> Result<Outcome, Rejection> {
        let refloor = self.conn.cut_off_since_commit();
        let mut every_value = false;
        let outcome = loop {
            let call = commit::Call {
                proposals,
                remember,
                refloor,
                every_value,
            };
            let inv = commit::invocation(
                &self.commit,
                &self.names,
                &self.node,
                self.history_len,
                call,
            );
            let mut con = self.conn.manager();
            let reply: Vec<Vec<u8>> = self
                .conn
                .observe(self.conn.block(inv.invoke_async(&mut con)))?;
            match commit::outcome(&reply) {
                Ok(None) if !every_value => every_value = true,
                Ok(None) => {
                    break Err(Rejection::new(
                        ErrorCode::Internal,
                        "commit.lua asked for values it was given",
                    ))
                }
                Ok(Some(outcome)) => break Ok(outcome),
                Err(e) => break Err(Rejection::new(ErrorCode::Internal, e)),
            }
        };
        if refloor && outcome.is_ok() {
            self.conn.committed();
        }
        outcome
    }

    fn catch_up(&self, key: &str, since: u64) -> Result<CatchUp, Rejection> {
        self.conn.block(self.fetch(key, since))
    }

    fn watch(&self, key: &str) -> Result<(), Rejection> {
        self.watch_key(key)
    }

    fn unwatch(&self, key: &str) {
        self.unwatch_key(key);
    }

    fn watch_prefix(&self, prefix: &str) -> Result<(), Rejection> {
        Cluster::watch_prefix(self, prefix)
    }

    fn unwatch_prefix(&self, prefix: &str) {
        Cluster::unwatch_prefix(self, prefix);
    }

    fn pattern_snapshot(
        &self,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<PatternSnapshot, Rejection> {
        self.conn.block(self.snapshot(prefix, limit))
    }

    fn key_range(
        &self,
        from: std::ops::Bound<&str>,
        count: usize,
    ) -> Result<Vec<String>, Rejection> {
        use std::ops::Bound;
        let min = match from {
            Bound::Included(k) => format!("[{k}"),
            Bound::Excluded(k) => format!("({k}"),
            Bound::Unbounded => "-".to_owned(),
        };
        let mut con = self.conn.manager();
        let mut cmd = redis::cmd("ZRANGEBYLEX");
        cmd.arg(self.names.keys())
            .arg(min)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(count);
        self.conn
            .observe(self.conn.block(cmd.query_async(&mut con)))
    }

    fn gate(&self, key: &str) -> Gate {
        let stripe = self.gates[stripe(key)].clone();
        self.conn.block(stripe.lock_owned())
    }

    fn gates(&self, keys: &[String]) -> Vec<Gate> {
        let mut stripes: Vec<usize> = keys.iter().map(|k| stripe(k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        self.conn.block(async {
            let mut held = Vec::with_capacity(stripes.len());
            for s in stripes {
                held.push(self.gates[s].clone().lock_owned().await);
            }
            held
        })
    }

    fn defer_release(&self, key: &str, path: &str, session: crate::outbox::SessionId) {
        self.pending_releases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key.to_owned(), path.to_owned(), session));
    }

    fn describe(&self) -> String {
        format!("cluster: redis {} (node {})", self.conn.url(), self.node)
    }
}
