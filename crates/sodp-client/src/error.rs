//! The client's error type.
//!
//! One enum for everything a caller can see. It is `Clone` because one failure
//! (a lost connection, a rejected token) is reported to every waiter at once:
//! each pending call, `ready()`, and the `on_error` hook.

use thiserror::Error;

/// Everything that can go wrong talking to an SODP server.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The server could not be reached, or the connection was lost while a
    /// call was in flight. The message names the URL and the cause.
    #[error("{0}")]
    Connection(String),

    /// The server refused the credentials (ERROR 401), or demands a token and
    /// none was configured. The client stops reconnecting after this.
    #[error("authentication failed: {0}")]
    Auth(String),

    /// A CALL came back with `success: false`.
    #[error("call failed ({code}): {message}")]
    Call { code: i64, message: String },

    /// A conditional write (`if_version`, extension `conditional`) found the
    /// key at another version: a RESULT with code 409 carrying the key's
    /// current `version`. Nothing changed on the server. In a transaction,
    /// `op` is the 0-based index of the op whose condition failed (and
    /// `version` that op's key's version); nothing of the transaction was
    /// applied. (A 409 without a version, e.g. an idempotency key reused for
    /// another call, is an [`Error::Call`].)
    #[error("conflict{}: {message} (current version {version})", at_op(.op))]
    Conflict {
        version: u64,
        op: Option<usize>,
        message: String,
    },

    /// The call needs a protocol extension the server did not advertise in
    /// HELLO `capabilities` (the name inside, e.g. `"conditional"`). Nothing
    /// was sent: a server without the extension would silently ignore the
    /// argument.
    #[error("the server does not support the `{0}` extension")]
    Unsupported(String),

    /// While not connected, [`max_pending`](crate::ClientBuilder::max_pending)
    /// calls already wait to be sent; this one was refused at once.
    #[error("not connected and {0} calls already wait to be sent (max_pending)")]
    QueueFull(usize),

    /// An ERROR frame that is not the answer to a call, e.g. a WATCH denied by
    /// the server's ACL (403) or a rate limit (429).
    #[error("server error ({code}): {message}")]
    Server { code: i64, message: String },

    /// No RESULT within the configured call timeout.
    #[error("call timed out")]
    Timeout,

    /// The server sent something this client cannot interpret (a malformed
    /// frame, an unknown delta op, a delta that does not apply).
    #[error("protocol error: {0}")]
    Protocol(String),

    /// The client was closed with [`Client::close`](crate::Client::close).
    #[error("client is closed")]
    Closed,

    /// Invalid client configuration, e.g. an unsupported URL scheme.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A value could not be converted to or from a Rust type.
    #[error("cannot convert value: {0}")]
    Serde(String),
}

impl Error {
    /// Error code of a failed call or a server ERROR frame.
    pub fn code(&self) -> Option<i64> {
        match self {
            Error::Call { code, .. } | Error::Server { code, .. } => Some(*code),
            Error::Conflict { .. } => Some(409),
            Error::Auth(_) => Some(401),
            _ => None,
        }
    }

    /// True when retrying cannot help: the client will not reconnect.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Auth(_) | Error::Closed | Error::Config(_))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Serde(e.to_string())
    }
}

fn at_op(op: &Option<usize>) -> String {
    op.map(|i| format!(" at op {i}")).unwrap_or_default()
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
