//! What can make `sodp` fail, and the exit code for each.

use std::fmt;

use sodp_client::Error;

/// A failure to report on stderr before exiting non-zero.
#[derive(Debug)]
pub enum CliError {
    /// Bad input from the user (invalid JSON, a patch that is not an object).
    Usage(String),
    /// Anything the client reported.
    Client(Error),
}

impl CliError {
    /// See the exit-code table in `sodp --help`.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Client(e) => match e {
                Error::Call { .. } | Error::Server { .. } | Error::Unsupported(_) => 1,
                Error::Serde(_) | Error::Config(_) => 2,
                Error::Connection(_) | Error::Timeout | Error::Closed | Error::QueueFull(_) => 3,
                Error::Auth(_) => 4,
                Error::Protocol(_) => 5,
                Error::Conflict { .. } => 6,
            },
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) => f.write_str(m),
            CliError::Client(Error::Config(m)) => f.write_str(m),
            CliError::Client(e) => e.fmt(f),
        }
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::Client(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        let call = Error::Call {
            code: 400,
            message: "bad".into(),
        };
        assert_eq!(CliError::from(call).exit_code(), 1);
        assert_eq!(CliError::from(Error::Connection("x".into())).exit_code(), 3);
        assert_eq!(CliError::from(Error::Auth("x".into())).exit_code(), 4);
        let conflict = Error::Conflict {
            version: 3,
            op: None,
            message: "x".into(),
        };
        assert_eq!(CliError::from(conflict).exit_code(), 6);
        assert_eq!(
            CliError::from(Error::Unsupported("ttl".into())).exit_code(),
            1
        );
    }
}
