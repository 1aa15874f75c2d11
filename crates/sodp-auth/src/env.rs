//! The security options, their environment variable names, and the start-up
//! step that turns them into a ready [`Policy`].
//!
//! Every option has a flag and an environment variable of the names below
//! (see docs/SECURITY.md). The server's flag parser reads both, once, into
//! [`SecurityConfig`]'s public fields (secrets through [`read_secret`]) and
//! calls [`SecurityConfig::build`].
//!
//! Conventions:
//! - A variable set to the empty string counts as unset — **except the JWT
//!   key variables**, where an empty value is an error, so a secret that
//!   failed to be injected cannot silently turn authentication off.
//! - `X` and `X_FILE` (the value read from a file, for secrets mounted by an
//!   orchestrator) are mutually exclusive. Trailing newlines of a `_FILE`
//!   secret are trimmed.
//! - Numbers are decimal; 0 means "no limit" for rates and connection caps.

use std::path::PathBuf;

use thiserror::Error;

use crate::acl::{Acl, AclError};
use crate::jwt::{ConfigError, JwtConfig, JwtVerifier};
use crate::limits::ConnectionLimiter;
use crate::origin::{OriginError, OriginPolicy};
use crate::schema::{Schema, SchemaLoadError};

/// HS256 shared secret.
pub const SODP_JWT_SECRET: &str = "SODP_JWT_SECRET";
/// File holding the HS256 shared secret.
pub const SODP_JWT_SECRET_FILE: &str = "SODP_JWT_SECRET_FILE";
/// RS256 public key, inline PEM.
pub const SODP_JWT_PUBLIC_KEY: &str = "SODP_JWT_PUBLIC_KEY";
/// File holding the RS256 public key PEM.
pub const SODP_JWT_PUBLIC_KEY_FILE: &str = "SODP_JWT_PUBLIC_KEY_FILE";
/// ES256 (P-256) public key, inline PEM.
pub const SODP_JWT_ES256_PUBLIC_KEY: &str = "SODP_JWT_ES256_PUBLIC_KEY";
/// File holding the ES256 public key PEM.
pub const SODP_JWT_ES256_PUBLIC_KEY_FILE: &str = "SODP_JWT_ES256_PUBLIC_KEY_FILE";
/// Expected `iss`.
pub const SODP_JWT_ISSUER: &str = "SODP_JWT_ISSUER";
/// Expected `aud`.
pub const SODP_JWT_AUDIENCE: &str = "SODP_JWT_AUDIENCE";
/// Clock-skew leeway for `exp`/`nbf`, seconds (default 0, max 300).
pub const SODP_JWT_LEEWAY_SECS: &str = "SODP_JWT_LEEWAY_SECS";
/// Seconds a new connection has to complete AUTH (default 10).
pub const SODP_AUTH_TIMEOUT_SECS: &str = "SODP_AUTH_TIMEOUT_SECS";
/// Path of the ACL file.
pub const SODP_ACL_FILE: &str = "SODP_ACL_FILE";
/// Path of the schema file.
pub const SODP_SCHEMA_FILE: &str = "SODP_SCHEMA_FILE";
/// Mutating CALLs per second per session (0 = unlimited).
pub const SODP_RATE_WRITES_PER_SEC: &str = "SODP_RATE_WRITES_PER_SEC";
/// WATCH/RESUME per second per session (0 = unlimited).
pub const SODP_RATE_WATCHES_PER_SEC: &str = "SODP_RATE_WATCHES_PER_SEC";
/// Comma-separated browser origins allowed to connect (`*` = any).
pub const SODP_ALLOWED_ORIGINS: &str = "SODP_ALLOWED_ORIGINS";
/// Maximum concurrent connections (0 = unlimited).
pub const SODP_MAX_CONNECTIONS: &str = "SODP_MAX_CONNECTIONS";
/// Maximum concurrent connections per client address (IPv6: per /64).
pub const SODP_MAX_CONNECTIONS_PER_IP: &str = "SODP_MAX_CONNECTIONS_PER_IP";

/// Every variable this module reads, for `--help` text and docs.
pub const ALL_VARS: &[&str] = &[
    SODP_JWT_SECRET,
    SODP_JWT_SECRET_FILE,
    SODP_JWT_PUBLIC_KEY,
    SODP_JWT_PUBLIC_KEY_FILE,
    SODP_JWT_ES256_PUBLIC_KEY,
    SODP_JWT_ES256_PUBLIC_KEY_FILE,
    SODP_JWT_ISSUER,
    SODP_JWT_AUDIENCE,
    SODP_JWT_LEEWAY_SECS,
    SODP_AUTH_TIMEOUT_SECS,
    SODP_ACL_FILE,
    SODP_SCHEMA_FILE,
    SODP_RATE_WRITES_PER_SEC,
    SODP_RATE_WATCHES_PER_SEC,
    SODP_ALLOWED_ORIGINS,
    SODP_MAX_CONNECTIONS,
    SODP_MAX_CONNECTIONS_PER_IP,
];

/// Default for [`SecurityConfig::auth_timeout_secs`].
pub const DEFAULT_AUTH_TIMEOUT_SECS: u64 = 10;

/// Any start-up problem with the security options. The message names the
/// variable or file and never contains a secret.
#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("{var}: {problem}")]
    Var { var: &'static str, problem: String },
    #[error(transparent)]
    Jwt(#[from] ConfigError),
    #[error(transparent)]
    Acl(#[from] AclError),
    #[error(transparent)]
    Schema(#[from] SchemaLoadError),
    #[error(transparent)]
    Origin(#[from] OriginError),
}

/// All security options, unvalidated.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    pub jwt: JwtConfig,
    pub auth_timeout_secs: u64,
    pub acl_file: Option<PathBuf>,
    pub schema_file: Option<PathBuf>,
    pub rate_writes_per_sec: u32,
    pub rate_watches_per_sec: u32,
    /// The raw comma-separated list; `None` = every origin allowed.
    pub allowed_origins: Option<String>,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            jwt: JwtConfig::default(),
            auth_timeout_secs: DEFAULT_AUTH_TIMEOUT_SECS,
            acl_file: None,
            schema_file: None,
            rate_writes_per_sec: 0,
            rate_watches_per_sec: 0,
            allowed_origins: None,
            max_connections: 0,
            max_connections_per_ip: 0,
        }
    }
}

/// The validated, loaded policy the server shares (`Arc<Policy>`) across
/// sessions.
#[derive(Debug)]
pub struct Policy {
    /// `Some` = HELLO `auth: true`.
    pub jwt: Option<JwtVerifier>,
    pub auth_timeout_secs: u64,
    pub acl: Option<Acl>,
    pub schema: Option<Schema>,
    pub rate_writes_per_sec: u32,
    pub rate_watches_per_sec: u32,
    pub origins: OriginPolicy,
    pub connections: ConnectionLimiter,
}

impl SecurityConfig {
    /// Validates everything and loads the files. Any error should stop the
    /// server at start, with the error's message.
    pub fn build(&self) -> Result<Policy, PolicyError> {
        if self.auth_timeout_secs == 0 {
            return Err(PolicyError::Var {
                var: SODP_AUTH_TIMEOUT_SECS,
                problem: "must be at least 1 second".into(),
            });
        }
        Ok(Policy {
            jwt: JwtVerifier::new(&self.jwt)?,
            auth_timeout_secs: self.auth_timeout_secs,
            acl: self.acl_file.as_ref().map(Acl::load).transpose()?,
            schema: self.schema_file.as_ref().map(Schema::load).transpose()?,
            rate_writes_per_sec: self.rate_writes_per_sec,
            rate_watches_per_sec: self.rate_watches_per_sec,
            origins: match &self.allowed_origins {
                Some(list) => OriginPolicy::parse(list)?,
                None => OriginPolicy::allow_all(),
            },
            connections: ConnectionLimiter::new(self.max_connections, self.max_connections_per_ip),
        })
    }
}

/// A key or secret given inline (the option named `var`) or as a file (the
/// option named `file_var`, for secrets mounted by an orchestrator): at most
/// one of the two; an empty value is an error, never "authentication off";
/// a file's trailing newlines are trimmed.
pub fn read_secret(
    var: &'static str,
    inline: Option<&str>,
    file_var: &'static str,
    file: Option<&str>,
) -> Result<Option<String>, PolicyError> {
    let empty = |v: &'static str| PolicyError::Var {
        var: v,
        problem: "set but empty (unset it to disable)".into(),
    };
    match (inline, file) {
        (Some(_), Some(_)) => Err(PolicyError::Var {
            var,
            problem: format!("both {var} and {file_var} are set; use one"),
        }),
        (Some(""), None) => Err(empty(var)),
        (Some(v), None) => Ok(Some(v.to_owned())),
        (None, Some("")) => Err(empty(file_var)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Var {
                var: file_var,
                problem: format!("cannot read {path}: {e}"),
            })?;
            let text = text.trim_end_matches(['\r', '\n']).to_owned();
            if text.is_empty() {
                return Err(PolicyError::Var {
                    var: file_var,
                    problem: format!("{path} is empty"),
                });
            }
            Ok(Some(text))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_can_be_shared_across_tasks() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Policy>();
    }

    #[test]
    fn nothing_set_means_everything_off() {
        let c = SecurityConfig::default();
        assert!(!c.jwt.is_enabled());
        let p = c.build().expect("policy");
        assert!(p.jwt.is_none() && p.acl.is_none() && p.schema.is_none());
        assert!(p.origins.allows_any());
        assert_eq!(p.auth_timeout_secs, 10);
        assert_eq!((p.rate_writes_per_sec, p.rate_watches_per_sec), (0, 0));
    }

    #[test]
    fn empty_key_variable_is_an_error_not_auth_off() {
        let e = read_secret(SODP_JWT_SECRET, Some(""), SODP_JWT_SECRET_FILE, None).unwrap_err();
        assert!(e.to_string().contains(SODP_JWT_SECRET), "{e}");
    }

    #[test]
    fn inline_and_file_together_is_an_error() {
        let e = read_secret(
            SODP_JWT_PUBLIC_KEY,
            Some("x"),
            SODP_JWT_PUBLIC_KEY_FILE,
            Some("/k.pem"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("both"), "{e}");
    }

    #[test]
    fn key_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("sodp-auth-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("secret");
        std::fs::write(&path, "from-file\n").expect("write");
        let p = path.to_string_lossy().to_string();
        let secret =
            read_secret(SODP_JWT_SECRET, None, SODP_JWT_SECRET_FILE, Some(&p)).expect("secret");
        assert_eq!(secret.as_deref(), Some("from-file"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_key_file_names_the_variable() {
        let e = read_secret(
            SODP_JWT_ES256_PUBLIC_KEY,
            None,
            SODP_JWT_ES256_PUBLIC_KEY_FILE,
            Some("/nonexistent/sodp/key.pem"),
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with(SODP_JWT_ES256_PUBLIC_KEY_FILE),
            "{e}"
        );
    }

    #[test]
    fn build_reports_bad_parts() {
        let bad_origin = SecurityConfig {
            allowed_origins: Some("not-an-origin".into()),
            ..SecurityConfig::default()
        };
        assert!(matches!(bad_origin.build(), Err(PolicyError::Origin(_))));
        let missing_acl = SecurityConfig {
            acl_file: Some("/nonexistent/acl.json".into()),
            ..SecurityConfig::default()
        };
        assert!(matches!(missing_acl.build(), Err(PolicyError::Acl(_))));
        let zero_timeout = SecurityConfig {
            auth_timeout_secs: 0,
            ..SecurityConfig::default()
        };
        assert!(zero_timeout.build().is_err());
    }
}
