//! The connection to Redis: a reconnecting connection manager for commands
//! and scripts, whether Redis is reachable now, and the bridge from the
//! store's synchronous write path to async Redis calls.
//!
//! # Why writes block their session's thread
//! A session handles its frames one after another without awaiting (see
//! `session`), which is what makes its CALLs take effect in order and its
//! RESULTs leave in order. In cluster mode a write must wait for Redis
//! before its RESULT; [`Connection::block`] waits on the session's own
//! worker thread with `tokio::task::block_in_place`, which first hands the
//! worker's other tasks to another thread, so nothing else stalls — the
//! price is one thread per write in flight. No lock is held while waiting.
//! This needs the multi-threaded runtime, checked at start.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Client;
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::error::{ErrorCode, Rejection};

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("--redis-url {url:?}: {source}")]
    Url {
        url: String,
        source: redis::RedisError,
    },
    #[error("cannot reach Redis at {url}: {source}")]
    Unreachable {
        url: String,
        source: redis::RedisError,
    },
    #[error("cannot reach Redis at {url}: its TLS certificate is not trusted ({reason}); checked against {roots}")]
    Untrusted {
        url: String,
        reason: String,
        roots: String,
    },
    #[error("cluster mode needs tokio's multi-threaded runtime")]
    Runtime,
    #[error(transparent)]
    Trust(#[from] super::trust::TrustError),
}

/// Commands to Redis, and whether it answers.
pub struct Connection {
    pub client: Client,
    manager: ConnectionManager,
    handle: Handle,
    up: AtomicBool,
    /// Lost the connection (or just started) since the last commit: the
    /// next commit floors its version at Redis's clock (see `commit.lua`).
    cut_off: AtomicBool,
    url: String,
}

impl Connection {
    /// Connects to `url`; a `rediss://` URL trusts `ca_file`'s
    /// certificates if given, the system's otherwise (see `trust`).
    pub async fn open(url: &str, ca_file: Option<&Path>) -> Result<Connection, ConnectError> {
        let handle = Handle::current();
        if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
            return Err(ConnectError::Runtime);
        }
        let client = super::trust::client(url, ca_file)?.map_err(|source| ConnectError::Url {
            url: redacted(url),
            source,
        })?;
        // Fail fast while Redis is away (writes answer 503 within about a
        // second); the manager keeps reconnecting in the background.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let manager = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|source| match super::trust::certificate_refusal(&source) {
                Some(reason) => ConnectError::Untrusted {
                    url: redacted(url),
                    reason,
                    roots: super::trust::roots(ca_file),
                },
                None => ConnectError::Unreachable {
                    url: redacted(url),
                    source,
                },
            })?;
        Ok(Connection {
            client,
            manager,
            handle,
            up: AtomicBool::new(true),
            cut_off: AtomicBool::new(true),
            url: redacted(url),
        })
    }

    /// A handle for commands (cheap to clone; shares the connection).
    pub fn manager(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// Runs `f` to completion from synchronous code (see the module doc).
    pub fn block<F: Future>(&self, f: F) -> F::Output {
        tokio::task::block_in_place(|| self.handle.block_on(f))
    }

    /// Spawns a task on the server's runtime.
    pub fn spawn<F>(&self, f: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(f);
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records the outcome of a Redis call; an error becomes 503.
    pub fn observe<T>(&self, result: redis::RedisResult<T>) -> Result<T, Rejection> {
        match result {
            Ok(t) => {
                self.up.store(true, Ordering::Relaxed);
                Ok(t)
            }
            Err(e) => {
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                {
                    self.mark_down(&e);
                }
                Err(unavailable(&e))
            }
        }
    }

    /// Whether the connection was lost (or new) since the last commit.
    pub fn cut_off_since_commit(&self) -> bool {
        self.cut_off.load(Ordering::SeqCst)
    }

    /// A commit went through after [`Connection::cut_off_since_commit`].
    pub fn committed(&self) {
        self.cut_off.store(false, Ordering::SeqCst);
    }

    pub fn mark_down(&self, why: &dyn std::fmt::Display) {
        self.cut_off.store(true, Ordering::SeqCst);
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(redis = %self.url, error = %why, "Redis unreachable: writes answer 503 until it is back");
        }
    }

    pub fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(redis = %self.url, "Redis reachable again");
        }
    }

    /// 503 while Redis is known to be unreachable.
    pub fn check(&self) -> Result<(), Rejection> {
        match self.is_up() {
            true => Ok(()),
            false => Err(Rejection::new(
                ErrorCode::Unavailable,
                format!("the cluster's Redis ({}) is unreachable; retry", self.url),
            )),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

/// 503 for a failed Redis call.
pub fn unavailable(e: &redis::RedisError) -> Rejection {
    Rejection::new(
        ErrorCode::Unavailable,
        format!("the cluster's Redis did not answer: {e}"),
    )
}

/// The URL without its password, for logs and `/health`.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            super::redacted("redis://user:secret@h:6379/0"),
            "redis://***@h:6379/0"
        );
        assert_eq!(super::redacted("redis://h:1"), "redis://h:1");
    }
}
