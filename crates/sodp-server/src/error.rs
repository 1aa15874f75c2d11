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
    /// Conditional write failed (reserved).
    Conflict = 409,
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
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            message: message.into(),
        }
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
