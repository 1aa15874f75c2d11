//! Server configuration: every limit with its safe default.
//!
//! The binary fills this from flags and `SODP_*` environment variables
//! (`bin/sodp-server.rs`); tests build it directly.

use std::net::SocketAddr;
use std::time::Duration;

use sodp_auth::SecurityConfig;

/// Everything the server can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen for WebSocket (and `/health`) connections.
    pub addr: SocketAddr,
    /// Optional extra listener that answers only `/health`.
    pub health_addr: Option<SocketAddr>,
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
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 7777)),
            health_addr: None,
            limits: Limits::default(),
            heartbeat_interval: Duration::from_secs(30),
            history_len: 1000,
            history_bytes: 64 << 20,
            outbound_queue: 1024,
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            security: SecurityConfig::default(),
        }
    }
}
