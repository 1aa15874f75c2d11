//! The listener: accepts TCP connections (completing the TLS handshake
//! with `--tls-cert`), routes each to `/health` or a session, counts
//! connections, and shuts down gracefully.
//!
//! Everything after the TLS handshake is generic over the stream, so a
//! plain connection runs exactly the code it ran before TLS existed
//! (`serve::<TcpStream>`), and a TLS one the same code over
//! `TlsStream<TcpStream>`.
//!
//! Shutdown: stop accepting, tell every session (they close with a
//! WebSocket close frame and release their presence paths), then wait —
//! bounded — until the last connection task has finished.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::http::{self, Request};
use crate::memory;
use crate::session;
use crate::shared::{SetupError, Shared};
use crate::tcp::{DirectSocket, SharedTcp};
use crate::tls::{self, Certificates, TlsError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] rustls::Error),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ConnectError),
    #[error(
        "--data-dir and --redis-url exclude each other: in cluster mode Redis keeps the state"
    )]
    DurableCluster,
}

/// What TLS needs at accept time.
struct Tls {
    certificates: Arc<Certificates>,
    acceptor: TlsAcceptor,
}

/// A bound, not yet running, server.
pub struct Server {
    listener: TcpListener,
    health_listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    tls: Option<Tls>,
    shared: Arc<Shared>,
}

impl Server {
    /// Loads the policy and binds the listeners.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        if config.cluster.is_some() && config.storage.is_some() {
            return Err(StartError::DurableCluster);
        }
        // Before anything else: a bad certificate is the operator's
        // mistake to hear about at once, not after recovery.
        let tls = match &config.tls {
            Some(tls) => {
                let certificates = Certificates::load(tls.clone())?;
                let acceptor = TlsAcceptor::from(certificates.server_config()?);
                Some(Tls {
                    certificates,
                    acceptor,
                })
            }
            None => None,
        };
        let shared = Arc::new(Shared::new(config)?);
        if let Some(tls) = &tls {
            tls.certificates.publish_expiry(&shared.metrics);
        }
        if let Some(cc) = &shared.config.cluster {
            let cluster =
                crate::cluster::Cluster::start(cc, shared.config.history_len, &shared.store)
                    .await?;
            let _ = shared.cluster.set(cluster);
        }
        let listen = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })
        };
        let listener = listen(shared.config.addr).await?;
        if let Ok(addr) = listener.local_addr() {
            let _ = shared.local_addr.set(addr);
        }
        let health_listener = match shared.config.health_addr {
            Some(addr) => Some(listen(addr).await?),
            None => None,
        };
        let metrics_listener = match shared.config.metrics_addr {
            Some(addr) => Some(listen(addr).await?),
            None => None,
        };
        Ok(Server {
            listener,
            health_listener,
            metrics_listener,
            tls,
            shared,
        })
    }

    /// With TLS: the certificates served, to reload on SIGHUP.
    pub fn certificates(&self) -> Option<Arc<Certificates>> {
        self.tls.as_ref().map(|t| t.certificates.clone())
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address the metrics listener got, if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
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
        for (listener, port) in [
            (self.health_listener, SidePort::Health),
            (self.metrics_listener, SidePort::Metrics),
        ] {
            if let Some(listener) = listener {
                let (shared, stop) = (self.shared.clone(), stop_rx.clone());
                tokio::spawn(serve_side_port(listener, shared, stop, port));
            }
        }
        let trimmer = tokio::spawn(memory::trim_after_disconnects(self.shared.clone()));
        let expiry = tokio::spawn(crate::store::expire_keys(self.shared.clone()));
        let reloader = self.tls.as_ref().map(|t| {
            let metrics = self.shared.metrics.clone();
            tokio::spawn(tls::watch_files(t.certificates.clone(), metrics))
        });
        let acceptor = self.tls.as_ref().map(|t| t.acceptor.clone());
        tokio::pin!(shutdown);
        let serve = accept_loop(&self.listener, |tcp, peer| {
            let (shared, alive) = (self.shared.clone(), alive_tx.clone());
            tokio::spawn(connection(tcp, peer, shared, acceptor.clone(), alive));
        });
        tokio::select! {
            () = serve => {}
            () = &mut shutdown => {}
        }
        info!(connections = self.shared.connections(), "shutting down");
        drop(self.listener);
        self.shared.close_all_sessions();
        let _ = stop_tx.send(true);
        drop(alive_tx);
        trimmer.abort();
        expiry.abort();
        if let Some(cluster) = self.shared.cluster.get() {
            cluster.stop();
        }
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        let grace = self.shared.config.shutdown_grace + Duration::from_secs(1);
        if time::timeout(grace, alive_rx.recv()).await.is_err() {
            warn!("some connections did not finish within the grace period");
        }
        // Every write in flight is written and synced before the exit.
        let storage = self.shared.store.storage().clone();
        let _ = tokio::task::spawn_blocking(move || storage.flush()).await;
    }
}

/// One accepted connection: the TLS handshake when configured, then
/// [`serve`]. `_alive` is held until the connection is over (shutdown
/// waits for it).
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    _alive: mpsc::Sender<()>,
) {
    let _ = tcp.set_nodelay(true);
    match tls {
        None => serve(SharedTcp::new(tcp), peer, shared).await,
        // Boxed: a plain connection's task must not be sized for the TLS
        // handshake and TLS stream (rustls keeps several KiB inline), which
        // every idle connection would otherwise pay for.
        Some(acceptor) => Box::pin(serve_tls(tcp, peer, shared, acceptor)).await,
    }
}

/// The TLS handshake (bounded by the handshake timeout), then [`serve`].
async fn serve_tls(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>, acceptor: TlsAcceptor) {
    match time::timeout(shared.config.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => serve(stream, peer, shared).await,
        Ok(Err(e)) => {
            shared.metrics.tls_handshake_failures.inc();
            debug!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            shared.metrics.tls_handshake_failures.inc();
            debug!(%peer, "TLS handshake timed out");
        }
    }
}

/// Reads the request and answers it, or runs the session it upgrades to.
async fn serve<S>(stream: S, peer: SocketAddr, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + DirectSocket + Unpin + Send + 'static,
{
    // Two steps, so that the handshake's state (the request, its strings,
    // the answers' futures) and the session's share the task's memory
    // instead of the session carrying them for its whole life.
    let Some(upgraded) = handshake(stream, peer, &shared).await else {
        return;
    };
    let Upgraded {
        stream,
        leftover,
        outbox,
        permit,
    } = upgraded;
    if let Some(socket) = stream.direct_socket() {
        outbox.attach(socket);
    }
    // The session deregisters itself when it ends (its `Holdings`).
    session::run(stream, leftover, shared, outbox).await;
    drop(permit);
}

/// A connection upgraded to a session, ready to run.
struct Upgraded<S> {
    stream: S,
    /// Bytes read past the upgrade request.
    leftover: Vec<u8>,
    outbox: Arc<crate::outbox::Outbox>,
    /// Held for the session's life; dropping it frees the slot.
    permit: sodp_auth::ConnectionPermit,
}

/// Reads the request and answers it; `Some` when it is an upgrade that was
/// accepted.
async fn handshake<S>(mut stream: S, peer: SocketAddr, shared: &Arc<Shared>) -> Option<Upgraded<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request = match http::read_request(&mut stream, shared.config.handshake_timeout).await {
        Ok(r) => r,
        Err(e) => {
            debug!(%peer, error = %e, "no request");
            return None;
        }
    };
    match request {
        Request::Health => {
            let _ =
                http::respond(&mut stream, 200, "application/json", &shared.health_json()).await;
        }
        Request::Ready => {
            let (status, body) = shared.readiness();
            let _ = http::respond(&mut stream, status, "application/json", &body).await;
        }
        // Metrics only on --metrics-port, never on the public port.
        Request::Metrics => {
            let _ = http::respond(&mut stream, 404, "text/plain", "not found").await;
        }
        Request::Refuse(status, message) => {
            let _ = http::respond(&mut stream, status, "text/plain", message).await;
        }
        Request::Inspector {
            path,
            forwarded_for,
        } => {
            // The page's loopback check, like its WebSocket's, is of the
            // client a trusted proxy names.
            let remote =
                (shared.config.trusted_proxies).client_ip(peer.ip(), forwarded_for.as_deref());
            let client = SocketAddr::new(remote, peer.port());
            let _ = crate::inspector::serve(&mut stream, shared, client, &path).await;
        }
        Request::Upgrade {
            accept_key,
            leftover,
            origin,
            forwarded_for,
            inspector,
            cross_site,
        } => {
            // Behind a trusted proxy, the client it names; else the peer.
            let remote =
                (shared.config.trusted_proxies).client_ip(peer.ip(), forwarded_for.as_deref());
            // The client as the inspector's checks and the session registry
            // see it (a local reverse proxy must not make everyone loopback).
            let client = SocketAddr::new(remote, peer.port());
            if inspector {
                if let Err((status, message)) =
                    crate::admin::admits_inspector_ws(shared, client, cross_site)
                {
                    let _ = http::respond(&mut stream, status, "text/plain", message).await;
                    return None;
                }
            }
            // The inspector's own page (admitted above) needs no allow-list entry.
            if !inspector && !shared.policy.origins.allows(origin.as_deref()) {
                debug!(%remote, %peer, ?origin, "origin refused");
                let _ = http::respond(&mut stream, 403, "text/plain", "origin not allowed").await;
                return None;
            }
            let permit = match shared.policy.connections.try_acquire(remote) {
                Ok(permit) => permit,
                Err(e) => {
                    debug!(%remote, %peer, error = %e, "connection refused");
                    let _ = http::respond(&mut stream, 503, "text/plain", &e.to_string()).await;
                    return None;
                }
            };
            if http::accept_upgrade(&mut stream, &accept_key)
                .await
                .is_err()
            {
                return None;
            }
            let outbox = shared.open_session_from(crate::registry::Origin {
                peer: Some(client),
                inspector,
                cross_site,
            });
            debug!(%remote, %peer, session = outbox.id(), "session started");
            return Some(Upgraded {
                stream,
                leftover,
                outbox,
                permit,
            });
        }
    }
    None
}

/// How long a listener waits after a failed accept (typically EMFILE: out
/// of file descriptors) before trying again, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Something connections are accepted from (a `TcpListener`; tests use a
/// fake that fails).
pub trait Acceptor {
    fn accept(&self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send;
}

impl Acceptor for TcpListener {
    fn accept(&self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send {
        TcpListener::accept(self)
    }
}

/// Accepts forever, handing each connection to `handle`; backs off after
/// a failed accept. Both listeners use it.
pub async fn accept_loop<A: Acceptor>(listener: &A, mut handle: impl FnMut(TcpStream, SocketAddr)) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => handle(tcp, peer),
            Err(e) => {
                warn!(error = %e, "accept failed; backing off");
                time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// What a side listener answers besides 404.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SidePort {
    /// `--health-port`: `/health` and `/ready`.
    Health,
    /// `--metrics-port`: `/metrics` (and `/health`, `/ready`).
    Metrics,
}

/// Content type of the OpenMetrics text exposition.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A side listener (`--health-port`, `--metrics-port`): plain HTTP, no
/// WebSocket.
async fn serve_side_port(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    port: SidePort,
) {
    let serve = accept_loop(&listener, |mut tcp, _| {
        let shared = shared.clone();
        tokio::spawn(async move {
            let json = "application/json";
            let (status, kind, body) =
                match http::read_request(&mut tcp, shared.config.handshake_timeout).await {
                    Ok(Request::Health) => (200, json, shared.health_json()),
                    Ok(Request::Ready) => {
                        let (status, body) = shared.readiness();
                        (status, json, body)
                    }
                    Ok(Request::Metrics) if port == SidePort::Metrics => {
                        (200, OPENMETRICS, shared.metrics_text())
                    }
                    Ok(_) => (404, "text/plain", "not found".to_owned()),
                    Err(_) => return,
                };
            let _ = http::respond(&mut tcp, status, kind, &body).await;
        });
    });
    tokio::select! {
        () = serve => {}
        _ = stop.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An acceptor whose every accept fails, counting the attempts.
    struct Failing(AtomicUsize);

    impl Acceptor for Failing {
        fn accept(&self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send {
            // A loop that never waits would call this without end: fail the
            // test instead of hanging it.
            assert!(self.0.fetch_add(1, Ordering::Relaxed) < 1000, "spinning");
            std::future::ready(Err(io::Error::from_raw_os_error(24))) // EMFILE
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_accept_backs_off_instead_of_spinning() {
        let failing = Failing(AtomicUsize::new(0));
        let run = accept_loop(&failing, |_, _| unreachable!("nothing is accepted"));
        let _ = time::timeout(Duration::from_secs(1), run).await;
        let attempts = failing.0.load(Ordering::Relaxed);
        // One attempt per backoff period (100 ms) in one second of paused
        // time; a spinning loop would never let the clock advance at all.
        assert!((10..=11).contains(&attempts), "{attempts} attempts");
    }

    /// Every idle connection's task is as large as its future: the TLS path
    /// (handshake, rustls state) is boxed so a plain connection is not
    /// sized for it (unboxed it was 8,336 B against 1,904 B), and the
    /// future is bounded outright.
    #[tokio::test]
    async fn a_plain_connection_is_not_sized_for_tls() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut accepted = Vec::new();
        for _ in 0..2 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            accepted.push(listener.accept().await.unwrap());
        }
        let shared = Arc::new(Shared::new(Config::default()).unwrap());
        let (alive, _rx) = mpsc::channel(1);
        let (tcp, peer) = accepted.swap_remove(0);
        let plain = serve(SharedTcp::new(tcp), peer, shared.clone());
        let (tcp, peer) = accepted.swap_remove(0);
        let whole = connection(tcp, peer, shared, None, alive);
        let (plain, whole) = (std::mem::size_of_val(&plain), std::mem::size_of_val(&whole));
        assert!(
            whole <= plain + 256,
            "a connection's future is {whole} B, its plain session {plain} B"
        );
        // Nor for the WebSocket library's stream and the handshake's state:
        // the session reads frames itself (`session::frames`) and the
        // request is gone once the session runs. In this (test) build the
        // future is 1,264 B; it was 2,064 B with tungstenite's stream and
        // the request's strings kept for the session's life.
        assert!(
            whole <= IDLE_TASK_BOUND,
            "a connection's future is {whole} B (bound {IDLE_TASK_BOUND} B)"
        );
    }

    /// See `a_plain_connection_is_not_sized_for_tls`.
    const IDLE_TASK_BOUND: usize = 1400;
}
