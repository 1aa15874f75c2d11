//! [`Config`]: everything the connection task needs to know, fixed when the
//! client is built.
//!
//! [`ClientBuilder`](crate::ClientBuilder) fills one in; the connection task
//! (`connection`), the handshake (`handshake`) and the handles (`client`)
//! only read it. This module depends on nothing but the option types
//! (`backoff`, `token`, `error`), so every module can import it without a
//! cycle.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::backoff::Backoff;
use crate::error::Error;
use crate::token::TokenSource;

pub(crate) type Hook = Arc<dyn Fn() + Send + Sync>;
pub(crate) type ErrorHook = Arc<dyn Fn(&Error) + Send + Sync>;

/// The wall clock, injectable so token-expiry logic can run on test time.
/// JWT `exp` claims are wall-clock seconds; timers use Tokio's clock.
pub(crate) type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// How many undelivered updates one watcher may hold by default (see
/// [`ClientBuilder::watch_buffer`](crate::ClientBuilder::watch_buffer)).
pub const DEFAULT_WATCH_BUFFER: usize = 64;

/// How many calls may wait for a connection by default (see
/// [`ClientBuilder::max_pending`](crate::ClientBuilder::max_pending)).
pub const DEFAULT_MAX_PENDING: usize = 1024;

/// Everything the connection task needs to know, fixed at build time.
#[derive(Clone)]
pub(crate) struct Config {
    /// Normalised to `ws://` or `wss://`.
    pub url: String,
    pub token: TokenSource,
    pub reconnect: bool,
    pub retry_first_connect: bool,
    pub backoff: Backoff,
    pub connect_timeout: Duration,
    pub call_timeout: Option<Duration>,
    /// Per-watcher delivery buffer, at least 1 (see `mailbox`).
    pub watch_buffer: usize,
    /// Calls that may wait for a connection (queued while disconnected,
    /// plus in-flight idempotent calls waiting to be resent).
    pub max_pending: usize,
    pub on_connect: Option<Hook>,
    pub on_disconnect: Option<Hook>,
    pub on_error: Option<ErrorHook>,
    pub wall_clock: WallClock,
    /// `wss://` trusting only a private CA (`tls_ca_pem`); `None`: the
    /// webpki roots.
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Config {
    /// The defaults documented on the builder's methods; `url` is filled in
    /// by `build()`.
    pub fn new() -> Config {
        Config {
            url: String::new(),
            token: TokenSource::None,
            reconnect: true,
            retry_first_connect: true,
            backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(30),
            },
            connect_timeout: Duration::from_secs(10),
            call_timeout: Some(Duration::from_secs(30)),
            watch_buffer: DEFAULT_WATCH_BUFFER,
            max_pending: DEFAULT_MAX_PENDING,
            on_connect: None,
            on_disconnect: None,
            on_error: None,
            wall_clock: Arc::new(SystemTime::now),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Hands an error no caller is waiting on to the `on_error` hook.
    pub fn report(&self, error: &Error) {
        if let Some(hook) = &self.on_error {
            hook(error);
        }
    }
}
