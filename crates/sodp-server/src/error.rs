//! Errors that travel to the client: a code from the contract and a message.

use std::fmt;

/// The contract's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Bad frame or arguments.
    BadRequest = 400,
    /// Authentication failed; the connection is closed.
    Unauthorized = 401,
    /// ACL denial.
    Forbidden = 403,
    /// Unknown method.
    NotFound = 404,
    /// A condition (`if_version`, a reused idempotency key) did not hold.
    Conflict = 409,
    /// A pattern's snapshot is over `max_value_bytes` (WATCH/RESUME).
    PayloadTooLarge = 413,
    /// Schema violation.
    Unprocessable = 422,
    /// Rate limit.
    TooManyRequests = 429,
    /// Server fault (also: a write that could not be made durable).
    Internal = 500,
    /// The storage cannot take more writes right now (retry).
    Unavailable = 503,
    /// The server's memory budget (`--max-memory`) is exhausted.
    InsufficientStorage = 507,
}

/// A refusal to send back as an ERROR frame or a failed RESULT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
    /// A 409's current version of the key (`version` in the RESULT).
    pub version: Option<u64>,
    /// The 0-based index of the transaction op that failed (`op`).
    pub op: Option<usize>,
    /// Cluster mode: the node's copy of a key was behind the shared state
    /// (now caught up); the session runs the CALL again (never sent).
    pub stale: bool,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            message: message.into(),
            version: None,
            op: None,
            stale: false,
        }
    }

    /// 409: a condition failed; `version` is the key's current version.
    pub fn conflict(message: impl Into<String>, version: u64) -> Rejection {
        Rejection {
            version: Some(version),
            ..Rejection::new(ErrorCode::Conflict, message)
        }
    }

    /// Marks the rejection as caused by op `index` of a transaction.
    pub fn at_op(mut self, index: usize) -> Rejection {
        self.op = Some(index);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Rejection {
        Rejection::new(ErrorCode::BadRequest, message)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code as u16, self.message)
    }
}

impl std::error::Error for Rejection {}
