//! The listener: accepts TCP connections, routes each to `/health` or a
//! session, counts connections, and shuts down gracefully.
//!
//! Shutdown: stop accepting, tell every session (they close with a
//! WebSocket close frame and release their presence paths), then wait —
//! bounded — until the last connection task has finished.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn};

use sodp_auth::{Policy, PolicyError};

use crate::config::Config;
use crate::error::{ErrorCode, Rejection};
use crate::http::{self, Request};
use crate::memory;
use crate::outbox::{Close, Outbox, SessionId};
use crate::session;
use crate::store::{Store, StoreOptions, Validator};

/// Initial read buffer of a connection (see `connection`).
const READ_BUFFER_BYTES: usize = 2048;

/// State shared by every connection.
pub struct Shared {
    pub config: Config,
    pub store: Store,
    /// Who may connect, read and write (loaded from `config.security`).
    pub policy: Arc<Policy>,
    connections: AtomicUsize,
    next_session: AtomicU64,
    /// Every live session's outbox, so shutdown can close them all.
    sessions: Mutex<HashMap<SessionId, Arc<Outbox>>>,
    shutting_down: AtomicBool,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("security configuration: {0}")]
    Policy(#[from] PolicyError),
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
    pub fn new(config: Config) -> Result<Shared, PolicyError> {
        let policy = Arc::new(config.security.build()?);
        log_policy(&config, &policy);
        let validator: Option<Arc<dyn Validator>> = match policy.schema {
            Some(_) => Some(Arc::new(SchemaValidator(policy.clone()))),
            None => None,
        };
        let store = Store::new(StoreOptions {
            version_base: version_base(),
            history_len: config.history_len,
            history_bytes: config.history_bytes,
            max_keys: config.limits.max_keys,
            max_value_bytes: config.limits.max_value_bytes,
            max_depth: config.limits.max_depth,
            validator,
        });
        Ok(Shared {
            config,
            store,
            policy,
            connections: AtomicUsize::new(0),
            next_session: AtomicU64::new(1),
            sessions: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Open WebSocket sessions.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<Outbox>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new session; it is closed at once if shutdown has begun.
    fn open_session(&self) -> Arc<Outbox> {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::new(id, self.config.outbound_queue));
        self.sessions().insert(id, outbox.clone());
        if self.shutting_down.load(Ordering::SeqCst) {
            outbox.close(Close::SHUTDOWN);
        }
        outbox
    }

    fn close_session(&self, id: SessionId) {
        self.sessions().remove(&id);
    }

    /// Asks every session to say goodbye.
    fn close_all_sessions(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for outbox in self.sessions().values() {
            outbox.close(Close::SHUTDOWN);
        }
    }

    fn health_json(&self) -> String {
        serde_json::json!({
            "status": "ok",
            "connections": self.connections(),
            "keys": self.store.key_count(),
            "history_bytes": self.store.history_bytes(),
            "version": env!("CARGO_PKG_VERSION"),
        })
        .to_string()
    }
}

/// Decrements the connection count when a session ends, however it ends.
struct ConnectionGuard(Arc<Shared>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A bound, not yet running, server.
pub struct Server {
    listener: TcpListener,
    health_listener: Option<TcpListener>,
    shared: Arc<Shared>,
}

impl Server {
    /// Loads the policy and binds the listeners.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let shared = Arc::new(Shared::new(config)?);
        let listen = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })
        };
        let listener = listen(shared.config.addr).await?;
        let health_listener = match shared.config.health_addr {
            Some(addr) => Some(listen(addr).await?),
            None => None,
        };
        Ok(Server {
            listener,
            health_listener,
            shared,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address the health-only listener got, if there is one.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until `shutdown` completes, then closes every session.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        // Each connection task holds a clone; `recv` returns None once all
        // of them have finished.
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        if let Some(listener) = self.health_listener {
            tokio::spawn(serve_health_only(
                listener,
                self.shared.clone(),
                stop_rx.clone(),
            ));
        }
        let trimmer = tokio::spawn(memory::trim_after_disconnects(self.shared.clone()));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let task = connection(tcp, peer, self.shared.clone(), alive_tx.clone());
                        tokio::spawn(task);
                    }
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = &mut shutdown => break,
            }
        }
        info!(connections = self.shared.connections(), "shutting down");
        drop(self.listener);
        self.shared.close_all_sessions();
        let _ = stop_tx.send(true);
        drop(alive_tx);
        trimmer.abort();
        let grace = self.shared.config.shutdown_grace + Duration::from_secs(1);
        if time::timeout(grace, alive_rx.recv()).await.is_err() {
            warn!("some connections did not finish within the grace period");
        }
    }
}

async fn connection(
    mut tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _alive: mpsc::Sender<()>,
) {
    let _ = tcp.set_nodelay(true);
    let request = match http::read_request(&mut tcp, shared.config.handshake_timeout).await {
        Ok(r) => r,
        Err(e) => {
            debug!(%peer, error = %e, "no request");
            return;
        }
    };
    match request {
        Request::Health => {
            let _ = http::respond(&mut tcp, 200, "application/json", &shared.health_json()).await;
        }
        Request::Refuse(status, message) => {
            let _ = http::respond(&mut tcp, status, "text/plain", message).await;
        }
        Request::Upgrade {
            accept_key,
            leftover,
            origin,
        } => {
            if !shared.policy.origins.allows(origin.as_deref()) {
                debug!(%peer, ?origin, "origin refused");
                let _ = http::respond(&mut tcp, 403, "text/plain", "origin not allowed").await;
                return;
            }
            // Held for the session's life; dropping it frees the slot.
            let _permit = match shared.policy.connections.try_acquire(peer.ip()) {
                Ok(permit) => permit,
                Err(e) => {
                    debug!(%peer, error = %e, "connection refused");
                    let _ = http::respond(&mut tcp, 503, "text/plain", &e.to_string()).await;
                    return;
                }
            };
            if http::accept_upgrade(&mut tcp, &accept_key).await.is_err() {
                return;
            }
            let limits = &shared.config.limits;
            // tungstenite zero-fills its whole read buffer on every read, so
            // the default 128 KiB would cost 128 KiB of RSS per connection;
            // larger messages still grow it as needed.
            let ws_config = WebSocketConfig::default()
                .read_buffer_size(READ_BUFFER_BYTES)
                .max_message_size(Some(limits.max_message_bytes))
                .max_frame_size(Some(limits.max_message_bytes));
            let ws =
                WebSocketStream::from_partially_read(tcp, leftover, Role::Server, Some(ws_config))
                    .await;
            shared.connections.fetch_add(1, Ordering::Relaxed);
            let _guard = ConnectionGuard(shared.clone());
            let outbox = shared.open_session();
            let id = outbox.id();
            debug!(%peer, session = id, "session started");
            session::run(ws, shared.clone(), outbox).await;
            shared.close_session(id);
        }
    }
}

/// The optional health-only listener (`--health-addr`).
async fn serve_health_only(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut tcp, _)) = accepted else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let status = match http::read_request(&mut tcp, shared.config.handshake_timeout).await {
                        Ok(Request::Health) => 200,
                        Ok(_) => 404,
                        Err(_) => return,
                    };
                    let body = if status == 200 { shared.health_json() } else { "not found".into() };
                    let _ = http::respond(&mut tcp, status, "application/json", &body).await;
                });
            }
            _ = stop.changed() => return,
        }
    }
}
