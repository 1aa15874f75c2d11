//! The state every connection shares: configuration, the store, the
//! security policy, the clock, and the registry of live sessions (so
//! shutdown and the admin methods can reach them all).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use sodp_auth::{Policy, PolicyError};
use tracing::info;

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{ErrorCode, Rejection};
use crate::metrics::{Metrics, StateReading};
use crate::outbox::{Close, Outbox, SessionId};
use crate::registry::{Origin, Registry, SessionInfo};
use crate::storage::durable::{Durable, DurableOptions, SnapshotSource};
use crate::storage::recovery::{self, RecoveryError};
use crate::storage::{Memory, Storage};
use crate::store::{Loader, Store, StoreOptions, Validator};
use crate::writers::{self, Writers};

/// Now in Unix ms on the configured clock (recovery runs before `Shared`
/// and its clock exist).
fn config_clock_ms(config: &Config) -> u64 {
    Clock::new(config.clock).since_epoch().as_millis() as u64
}

/// A start that replays more log segments than this writes a checkpoint
/// (each start opens a segment: restarts without writes would pile them up).
const MAX_SEGMENTS_WITHOUT_CHECKPOINT: usize = 8;

/// Why the shared state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("security configuration: {0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Recovery(#[from] RecoveryError),
    #[error("data directory: {0}")]
    Storage(#[from] std::io::Error),
}

/// State shared by every connection.
pub struct Shared {
    pub config: Config,
    pub store: Arc<Store>,
    /// Who may connect, read and write (loaded from `config.security`).
    pub policy: Arc<Policy>,
    /// Wall-clock time for token checks (follows tokio's clock in tests).
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// Every live session (shutdown closes them all; `admin.*` lists them).
    pub sessions: Registry,
    /// Who made each recent change; only with `--inspector` (see `writers`).
    pub writers: Option<Writers>,
    /// When this server started, Unix ms.
    pub started_at_ms: u64,
    /// The address the main listener got (set once it is bound).
    pub local_addr: std::sync::OnceLock<SocketAddr>,
    connections: AtomicUsize,
    next_session: AtomicU64,
    shutting_down: AtomicBool,
    /// Cluster mode: this node's membership (set once, when the server binds).
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

/// Says at start what the security policy is — never a secret.
fn log_policy(config: &Config, policy: &Policy) {
    let security = &config.security;
    match &policy.jwt {
        Some(jwt) => info!(
            algorithms = ?jwt.algorithms(),
            issuer = security.jwt.issuer.as_deref().unwrap_or("(any)"),
            audience = security.jwt.audience.as_deref().unwrap_or("(any)"),
            leeway_secs = security.jwt.leeway_secs,
            auth_timeout_secs = policy.auth_timeout_secs,
            "authentication: JWT required"
        ),
        None => info!("authentication: off (no JWT key configured)"),
    }
    if let (Some(acl), Some(path)) = (&policy.acl, &security.acl_file) {
        let m = acl.mappings();
        info!(file = %path.display(), rules = acl.len(), roles = ?m.roles, groups = ?m.groups, permissions = ?m.permissions, "ACL loaded");
    }
    if let Some(path) = &security.schema_file {
        info!(file = %path.display(), "schema loaded");
    }
    if policy.rate_writes_per_sec > 0 || policy.rate_watches_per_sec > 0 {
        info!(
            writes_per_sec = policy.rate_writes_per_sec,
            watches_per_sec = policy.rate_watches_per_sec,
            "rate limits"
        );
    }
    if !policy.origins.allows_any() {
        info!(
            origins = security.allowed_origins.as_deref().unwrap_or(""),
            "origin allow-list"
        );
    }
    if security.max_connections > 0 || security.max_connections_per_ip > 0 {
        info!(
            total = security.max_connections,
            per_ip = security.max_connections_per_ip,
            "connection caps (0 = none)"
        );
    }
}

/// Microseconds since the Unix epoch: versions issued by this process start
/// above every version a previous run issued (unless it sustained more than
/// a million writes per second), so clients can RESUME across restarts
/// safely and see versions that only ever increase.
fn version_base() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The schema, as the store's pre-commit check.
struct SchemaValidator(Arc<Policy>);

impl Validator for SchemaValidator {
    fn validate(&self, key: &str, value: &sodp_proto::Value) -> Result<(), Rejection> {
        match &self.0.schema {
            Some(schema) => schema
                .validate(key, value)
                .map_err(|e| Rejection::new(ErrorCode::Unprocessable, e.to_string())),
            None => Ok(()),
        }
    }
}

impl Shared {
    /// Loads the security policy (files included) and builds the store.
    pub fn new(config: Config) -> Result<Shared, SetupError> {
        let policy = Arc::new(config.security.build()?);
        log_policy(&config, &policy);
        let validator: Option<Arc<dyn Validator>> = match policy.schema {
            Some(_) => Some(Arc::new(SchemaValidator(policy.clone()))),
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        let durable = match &config.storage {
            Some(sc) => Some(Arc::new(Durable::new(DurableOptions {
                dir: sc.dir.clone(),
                fsync: sc.fsync,
                checkpoint_bytes: sc.checkpoint_bytes,
                max_pending_bytes: 256 << 20,
                metrics: metrics.clone(),
            })?)),
            None => None,
        };
        let storage: Arc<dyn Storage> = match &durable {
            Some(engine) => engine.clone(),
            None => Arc::new(Memory),
        };
        let store = Arc::new(Store::new(StoreOptions {
            version_base: version_base(),
            history_len: config.history_len,
            history_bytes: config.history_bytes,
            max_keys: config.limits.max_keys,
            max_value_bytes: config.limits.max_value_bytes,
            max_memory: config.limits.max_memory,
            max_depth: config.limits.max_depth,
            validator,
            storage,
            metrics: metrics.clone(),
            idempotency_window: config.idempotency_window,
            idempotency_max_keys: config.idempotency_max_keys,
        }));
        if let (Some(engine), Some(sc)) = (&durable, &config.storage) {
            let started = std::time::Instant::now();
            let r = recovery::recover(
                &sc.dir,
                sc.salvage,
                &mut Loader::new(&store, config_clock_ms(&config)),
            )?;
            for note in &r.notes {
                tracing::warn!("{note}");
            }
            engine.start(r.next_segment, r.version_floor, r.replayed_bytes)?;
            store.raise_version(engine.first_version().saturating_sub(1));
            store.finish_recovery(r.binds, config_clock_ms(&config));
            info!(
                dir = %sc.dir.display(),
                checkpoint_keys = r.images,
                replayed_changes = r.changes,
                replayed_bytes = r.replayed_bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "state recovered"
            );
            // Recovery's buffers are gone: give their memory back.
            if let Some(trim) = config.trim_memory {
                trim();
            }
            let source: std::sync::Weak<dyn SnapshotSource> =
                Arc::downgrade(&(store.clone() as Arc<dyn SnapshotSource>));
            engine.attach(source);
            if r.replayed_segments > MAX_SEGMENTS_WITHOUT_CHECKPOINT {
                engine.request_checkpoint();
            }
        }
        let clock = Clock::new(config.clock);
        if config.inspector.public && policy.jwt.is_none() {
            tracing::warn!(
                "--inspector-public without authentication: every client is an administrator"
            );
        }
        Ok(Shared {
            writers: config
                .inspector
                .enabled
                .then(|| Writers::new(writers::CAPACITY)),
            started_at_ms: clock.since_epoch().as_millis() as u64,
            sessions: Registry::default(),
            local_addr: std::sync::OnceLock::new(),
            config,
            store,
            policy,
            clock,
            metrics,
            connections: AtomicUsize::new(0),
            next_session: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// Open WebSocket sessions.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Registers a new session without a peer (tests, fuzzing).
    pub fn open_session(&self) -> Arc<Outbox> {
        self.open_session_from(Origin::default())
    }

    /// Registers a new session from `origin` (its peer, whether the
    /// inspector opened it); it is closed at once if shutdown has begun.
    pub fn open_session_from(&self, origin: Origin) -> Arc<Outbox> {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections.inc();
        let outbox = Arc::new(Outbox::new(id, self.config.outbound_queue));
        let now_ms = self.clock.since_epoch().as_millis() as u64;
        self.sessions
            .insert(Arc::new(SessionInfo::new(outbox.clone(), origin, now_ms)));
        if self.shutting_down.load(Ordering::SeqCst) {
            outbox.close(Close::SHUTDOWN);
        }
        outbox
    }

    /// The registry's record of the session of `outbox` (a detached one if
    /// it was never registered).
    pub fn session_info(&self, outbox: &Arc<Outbox>) -> Arc<SessionInfo> {
        self.sessions
            .get(outbox.id())
            .unwrap_or_else(|| Arc::new(SessionInfo::new(outbox.clone(), Origin::default(), 0)))
    }

    /// Removes a session from the registry (done by its `Holdings` when
    /// the session ends).
    pub fn deregister(&self, id: SessionId) {
        if self.sessions.remove(id) {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            self.metrics.connections.dec();
        }
    }

    /// Asks every session to say goodbye.
    pub fn close_all_sessions(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for outbox in self.sessions.outboxes() {
            outbox.close(Close::SHUTDOWN);
        }
    }

    /// `GET /ready`: 200 while the server takes traffic — its state is
    /// recovered (it is, before the listener opens), it is not shutting
    /// down, and its storage accepts writes; 503 with the reason otherwise.
    pub fn readiness(&self) -> (u16, String) {
        let problem = if self.shutting_down.load(Ordering::SeqCst) {
            Some("shutting down".to_owned())
        } else if let Some(remote) = self.store.remote() {
            remote.check_writable().err().map(|r| r.message)
        } else {
            self.store
                .storage()
                .check_writable()
                .err()
                .map(|r| r.message)
        };
        match problem {
            None => (200, serde_json::json!({"ready": true}).to_string()),
            Some(why) => (
                503,
                serde_json::json!({"ready": false, "reason": why}).to_string(),
            ),
        }
    }

    /// `GET /metrics`: the exposition, with the state read now.
    pub fn metrics_text(&self) -> String {
        let memory = self.store.memory();
        self.metrics.render(StateReading {
            keys: self.store.key_count(),
            history_bytes: memory.history,
            memory_bytes: memory.counted + memory.history,
            memory_max_bytes: memory.max,
            presence_paths: self.store.presence_count(),
        })
    }

    pub fn health_json(&self) -> String {
        let memory = self.store.memory();
        serde_json::json!({
            "status": "ok",
            "connections": self.connections(),
            "keys": self.store.key_count(),
            "history_bytes": self.store.history_bytes(),
            "storage": match self.store.remote() {
                Some(remote) => remote.describe(),
                None => self.store.storage().describe(),
            },
            "memory": {
                "used": memory.counted + memory.history,
                "history": memory.history,
                "max": memory.max,
            },
            "version": env!("CARGO_PKG_VERSION"),
            "commit": env!("SODP_COMMIT"),
        })
        .to_string()
    }
}
