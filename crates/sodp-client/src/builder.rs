//! [`ClientBuilder`]: the options a client is built with, mirroring the
//! Python client's constructor, and the entry points that use it
//! ([`Client::builder`], [`Client::connect`]). The options themselves live
//! in `config`; this file only fills them in and validates them.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::client::Client;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::token::TokenSource;

impl Client {
    /// Starts configuring a client for `url` (`ws://`, `wss://`, `sodp://`,
    /// `sodps://`).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            config: Config::new(),
            ca_pem: None,
        }
    }

    /// Connects with default options and waits until ready.
    pub async fn connect(url: impl Into<String>) -> Result<Client> {
        let client = Client::builder(url).build()?;
        client.ready().await?;
        Ok(client)
    }
}

/// Builds a [`Client`]. Start with [`Client::builder`].
///
/// ```no_run
/// # async fn demo() -> sodp_client::Result<()> {
/// use std::time::Duration;
/// let client = sodp_client::Client::builder("ws://localhost:7777")
///     .token_provider(|| async { Ok::<_, std::io::Error>(std::env::var("SODP_TOKEN").unwrap_or_default()) })
///     .reconnect_delay(Duration::from_millis(500))
///     .on_disconnect(|| eprintln!("lost the server, reconnecting"))
///     .build()?;
/// client.ready().await?;
/// # Ok(()) }
/// ```
pub struct ClientBuilder {
    url: String,
    config: Config,
    /// Parsed by `build` (see [`ClientBuilder::tls_ca_pem`]).
    ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("token", &self.config.token)
            .field("reconnect", &self.config.reconnect)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// A static JWT sent in AUTH when the server asks for one.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.token = TokenSource::Static(token.into());
        self
    }

    /// An async token provider, called on every connect and reconnect (and
    /// before expiry when the server supports in-band refresh). Supersedes
    /// [`token`](Self::token).
    pub fn token_provider<F, Fut, E>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<String, E>> + Send + 'static,
        E: fmt::Display,
    {
        self.config.token = TokenSource::from_async(provider);
        self
    }

    /// A synchronous token provider; see [`token_provider`](Self::token_provider).
    pub fn token_provider_sync<F, E>(mut self, provider: F) -> Self
    where
        F: Fn() -> std::result::Result<String, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        self.config.token = TokenSource::from_sync(provider);
        self
    }

    /// Reconnect automatically after the connection drops (default: on).
    pub fn reconnect(mut self, on: bool) -> Self {
        self.config.reconnect = on;
        self
    }

    /// Keep retrying when the *first* connection attempt fails (default: on).
    /// Off, `ready()` returns the first connection error instead of waiting,
    /// while later drops are still retried when `reconnect` is on.
    pub fn retry_first_connect(mut self, on: bool) -> Self {
        self.config.retry_first_connect = on;
        self
    }

    /// Base reconnect delay (default 1 s), doubled per failed attempt.
    pub fn reconnect_delay(mut self, delay: Duration) -> Self {
        self.config.backoff.base = delay;
        self
    }

    /// Maximum reconnect delay (default 30 s).
    pub fn max_reconnect_delay(mut self, delay: Duration) -> Self {
        self.config.backoff.max = delay;
        self
    }

    /// How long the WebSocket upgrade plus HELLO/AUTH may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How long a call waits for its RESULT (default 30 s; `None` = forever).
    /// Includes time spent queued while the client is (re)connecting.
    pub fn call_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// How many undelivered updates each watcher (stream or callback) may
    /// hold (default 64; 0 is a configuration error). A watcher that falls further behind
    /// gets the newest value next, with [`Update::lagged`](crate::Update::lagged)
    /// counting the updates it skipped; see the crate docs.
    pub fn watch_buffer(mut self, updates: usize) -> Self {
        self.config.watch_buffer = updates;
        self
    }

    /// How many calls may wait for a connection (default 1024): calls made
    /// while the client is not connected, and, when the server advertises
    /// `idempotency`, writes that were in flight when the connection dropped
    /// and will be resent after the reconnect. A call made while that many
    /// wait fails at once with [`Error::QueueFull`]; an in-flight write that
    /// does not fit fails with [`Error::Connection`]. Each waiting call still
    /// gives up at its [`call_timeout`](Self::call_timeout). 0 = never queue.
    pub fn max_pending(mut self, calls: usize) -> Self {
        self.config.max_pending = calls;
        self
    }

    /// Called each time a connection is established and authenticated.
    /// Runs on the connection task: keep it short and non-blocking.
    pub fn on_connect(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.config.on_connect = Some(Arc::new(hook));
        self
    }

    /// Called each time an established connection drops.
    pub fn on_disconnect(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.config.on_disconnect = Some(Arc::new(hook));
        self
    }

    /// Called for errors no caller is waiting on: failed connection attempts,
    /// denied watches, undecodable frames, deltas that do not apply.
    pub fn on_error(mut self, hook: impl Fn(&Error) + Send + Sync + 'static) -> Self {
        self.config.on_error = Some(Arc::new(hook));
        self
    }

    /// Trust these CA certificates (PEM, one or more) for `wss://` instead of
    /// the built-in webpki roots: a private CA or a self-signed server.
    /// Checked by [`build`](Self::build) (no certificate in it:
    /// [`Error::Config`]). Without the `tls` feature, `build` refuses it.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Validates the configuration and starts connecting in the background.
    /// Must be called inside a Tokio runtime.
    pub fn build(mut self) -> Result<Client> {
        self.config.url = crate::url::normalize(&self.url)?;
        if self.config.watch_buffer == 0 {
            return Err(Error::Config(
                "the watch buffer must hold at least one update".into(),
            ));
        }
        if let Some(pem) = &self.ca_pem {
            #[cfg(feature = "tls")]
            {
                self.config.tls = Some(crate::tls::trusting(pem)?);
            }
            #[cfg(not(feature = "tls"))]
            {
                let _ = pem;
                return Err(Error::Config(
                    "tls_ca_pem needs the `tls` feature of sodp-client".into(),
                ));
            }
        }
        if self.config.backoff.max < self.config.backoff.base {
            self.config.backoff.max = self.config.backoff.base;
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Config("the client must be built inside a Tokio runtime".into()))?;
        Ok(Client::start(self.config, runtime))
    }
}
