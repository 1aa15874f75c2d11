//! Server configuration: every limit with its safe default.
//!
//! The binary fills this from flags and `SODP_*` environment variables
//! (`bin/sodp-server/`); tests build it directly.

use std::net::SocketAddr;
use std::time::Duration;

use sodp_auth::SecurityConfig;

use crate::clock::ClockSource;
use crate::proxy::TrustedProxies;
use crate::storage::durable::Fsync;
use crate::tls::TlsConfig;

/// Everything the server can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen for WebSocket (and `/health`) connections.
    pub addr: SocketAddr,
    /// Optional extra listener that answers only `/health`.
    pub health_addr: Option<SocketAddr>,
    /// Optional listener for `GET /metrics` (Prometheus).
    pub metrics_addr: Option<SocketAddr>,
    /// Serve `wss://` (and HTTPS `/health`…) on `addr` with this
    /// certificate; `None`: plain `ws://`.
    pub tls: Option<TlsConfig>,
    /// Proxies whose `X-Forwarded-For` names the client (see `proxy`).
    pub trusted_proxies: TrustedProxies,
    pub limits: Limits,
    /// The server sends HEARTBEAT this often; two silent intervals close
    /// the connection.
    pub heartbeat_interval: Duration,
    /// Per-key history kept for RESUME (number of changes).
    pub history_len: usize,
    /// Total bytes of history across all keys.
    pub history_bytes: usize,
    /// Bounded outbound queue per session, in frames.
    pub outbound_queue: usize,
    /// How long a client may take to send its HTTP upgrade request.
    pub handshake_timeout: Duration,
    /// How long shutdown waits for sessions to say goodbye.
    pub shutdown_grace: Duration,
    /// JWT, ACL, schema, rate limits, origins, connection caps (see
    /// `docs/SECURITY.md`). Validated and loaded when the server binds.
    pub security: SecurityConfig,
    /// Durable state (`--data-dir`); `None` keeps everything in memory.
    pub storage: Option<StorageConfig>,
    /// Cluster mode (`--redis-url`): the state is shared with other nodes
    /// through Redis. Exclusive with `storage`.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Extension `idempotency`: how long, and how many per identity, the
    /// outcomes of writes with an `idempotency_key` are remembered.
    pub idempotency_window: Duration,
    pub idempotency_max_keys: usize,
    /// The clock token expiry is judged by (tests: tokio's paused clock).
    pub clock: ClockSource,
    /// Hands freed memory back to the OS after bulk disconnects; the binary
    /// sets it for its allocator (see `memory`).
    pub trim_memory: Option<fn()>,
    /// The web inspector at `/inspector` and who counts as an administrator
    /// (see `admin`).
    pub inspector: InspectorConfig,
}

/// `--inspector`, `--inspector-public`, `--inspector-writes`,
/// `--inspector-admin-claim`.
#[derive(Debug, Clone, Default)]
pub struct InspectorConfig {
    /// Serve the inspector's page and its WebSocket (`/inspector/ws`).
    pub enabled: bool,
    /// Serve it to any address, not only loopback (and, without
    /// authentication, let sessions from any address use `admin.*`).
    pub public: bool,
    /// Let sessions opened by the inspector write (otherwise their writes
    /// are 403).
    pub writes: bool,
    /// With authentication: the claim that makes a token an administrator's.
    pub admin_claim: Option<AdminClaim>,
}

/// A claim and the value it must hold (`role:admin`: claim `role` equal to
/// `admin`, or a list containing it). The claim is looked up like an ACL
/// claim path, so `realm_access.roles:admin` works too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminClaim {
    pub claim: String,
    pub value: String,
}

impl AdminClaim {
    /// Parses `CLAIM:VALUE`, splitting at the last `:` (claim names such as
    /// `cognito:groups` contain one).
    pub fn parse(spec: &str) -> Result<AdminClaim, String> {
        match spec.rsplit_once(':') {
            Some((claim, value)) if !claim.is_empty() && !value.is_empty() => Ok(AdminClaim {
                claim: claim.to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(format!(
                "admin claim {spec:?} must be CLAIM:VALUE, e.g. role:admin"
            )),
        }
    }
}

/// Limits on what a client may send or hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest WebSocket message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Deepest nesting of a state value (containers inside containers).
    pub max_depth: usize,
    /// Longest key, in bytes.
    pub max_key_len: usize,
    /// Most keys one session may watch at once.
    pub max_subscriptions: usize,
    /// Most presence paths one session may hold at once.
    pub max_presence_paths: usize,
    /// Most keys the server holds (None: unlimited).
    pub max_keys: Option<usize>,
    /// Largest value one key may hold, MessagePack-encoded (None: unlimited).
    pub max_value_bytes: Option<usize>,
    /// Everything the store holds — values, key slots, presence bindings,
    /// history — in bytes (see `budget`). Default: [`default_max_memory`].
    pub max_memory: usize,
}

/// A quarter of the memory this process may use (the cgroup limit if there
/// is one, else the machine's RAM; 1 GiB if neither can be read). The
/// budget counts encoded bytes; a value's in-memory form is typically 2–3×
/// larger, so a quarter leaves the process well inside the machine.
pub fn default_max_memory() -> usize {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok());
    let limit = match (ram, cgroup) {
        (Some(r), Some(c)) => r.min(c),
        (Some(r), None) => r,
        (None, Some(c)) => c,
        (None, None) => 4 << 30,
    };
    limit / 4
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 1 << 20,
            max_depth: sodp_proto::codec::DEFAULT_MAX_DEPTH,
            max_key_len: sodp_proto::key::DEFAULT_MAX_KEY_LEN,
            max_subscriptions: 1024,
            max_presence_paths: 1024,
            max_keys: None,
            max_value_bytes: Some(16 << 20),
            max_memory: default_max_memory(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 7777)),
            health_addr: None,
            metrics_addr: None,
            tls: None,
            trusted_proxies: TrustedProxies::default(),
            limits: Limits::default(),
            heartbeat_interval: Duration::from_secs(30),
            history_len: 1000,
            history_bytes: 64 << 20,
            outbound_queue: 1024,
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            security: SecurityConfig::default(),
            storage: None,
            cluster: None,
            idempotency_window: Duration::from_secs(600),
            idempotency_max_keys: 10_000,
            clock: ClockSource::System,
            trim_memory: None,
            inspector: InspectorConfig::default(),
        }
    }
}

/// Where and how state is kept on disk.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub dir: std::path::PathBuf,
    pub fsync: Fsync,
    /// Log bytes after which a checkpoint is written (and older log deleted).
    pub checkpoint_bytes: u64,
    /// Start even if the data directory is damaged, keeping what reads.
    pub salvage: bool,
}

impl StorageConfig {
    pub fn new(dir: impl Into<std::path::PathBuf>) -> StorageConfig {
        StorageConfig {
            dir: dir.into(),
            fsync: Fsync::Always,
            checkpoint_bytes: 64 << 20,
            salvage: false,
        }
    }
}
