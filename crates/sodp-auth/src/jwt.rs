//! JWT verification: who a session is.
//!
//! The accepted algorithm is fixed by the configured key, never by the token:
//! an HS256 secret accepts only HS256, an RSA public key only RS256, a P-256
//! public key only ES256. With several keys configured, each token is checked
//! against the one key of the algorithm its header names. This closes the two
//! classic holes: `alg: none`, and "algorithm confusion" where an RS256 public
//! key (which is public) is used as an HMAC secret for a forged HS256 token.
//!
//! `sub` and `exp` are required; `nbf` is honoured when present; `iss` and `aud`
//! are checked (and then required) only when configured. Leeway defaults to 0.
//!
//! # Time
//!
//! `exp` and `nbf` are decided by this module, never by jsonwebtoken (whose
//! own checks read the system clock, and are switched off): only against the
//! `now_unix` passed to [`JwtVerifier::verify_at`] /
//! [`JwtVerifier::verify_refresh_at`]. A caller with its own clock (a session
//! on tokio's paused time, a test) passes that clock's reading. The
//! conveniences [`JwtVerifier::verify`] and [`JwtVerifier::verify_refresh`],
//! and [`unix_now`] / [`unix_now_precise`], are the only readers of the
//! system clock here.
//!
//! Claims are attacker-chosen numbers: every computation on them is checked
//! or saturating. A NumericDate is any non-negative JSON integer that fits a
//! u64 (taken exactly) or a finite non-negative float below 2^64 (rounded
//! towards "less valid": `exp` down, `nbf` up); anything else is
//! [`AuthError::InvalidClaim`]. An `exp` centuries away is valid and simply
//! never expires in practice: [`Claims::expires_in`] saturates instead of
//! overflowing.
//!
//! No error ever carries the token or any part of it: errors are logged and
//! sent to clients, tokens are credentials.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use thiserror::Error;

/// Tokens longer than this are refused before any parsing or crypto. Real
/// tokens are well under 8 KiB; this bounds the work a stranger can cause.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Leeway above this is a configuration mistake (a day of clock skew is not
/// skew), and would make expired tokens live on.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// What the operator configured. Build it from env/flags, then hand it to
/// [`JwtVerifier::new`], which validates it once at start-up.
#[derive(Clone, Default)]
pub struct JwtConfig {
    /// Shared secret for HS256 (raw bytes of the string, not base64-decoded).
    pub hs256_secret: Option<String>,
    /// RSA public key (PEM, `BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`) for RS256.
    pub rs256_public_key_pem: Option<String>,
    /// P-256 public key (PEM, `BEGIN PUBLIC KEY`) for ES256.
    pub es256_public_key_pem: Option<String>,
    /// Expected `iss`; when set, tokens must carry exactly this issuer.
    pub issuer: Option<String>,
    /// Expected `aud`; when set, tokens must carry it (string or in an array).
    pub audience: Option<String>,
    /// Clock-skew allowance for `exp` and `nbf`, in seconds. Default 0.
    pub leeway_secs: u64,
}

impl JwtConfig {
    /// True when at least one key is configured, i.e. HELLO must say `auth: true`.
    pub fn is_enabled(&self) -> bool {
        self.hs256_secret.is_some()
            || self.rs256_public_key_pem.is_some()
            || self.es256_public_key_pem.is_some()
    }
}

// Hand-written so that `{:?}` of a config never prints the secret.
impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("rs256_public_key_pem", &self.rs256_public_key_pem.is_some())
            .field("es256_public_key_pem", &self.es256_public_key_pem.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// A configuration that cannot work. Reported once, at start-up.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("JWT HS256 secret is empty")]
    EmptySecret,
    #[error("JWT RS256 public key is not a usable RSA public key in PEM form: {0}")]
    InvalidRsaKey(String),
    #[error("JWT ES256 public key is not a usable P-256 public key in PEM form: {0}")]
    InvalidEcKey(String),
    #[error("JWT {0} is set but empty")]
    EmptyClaim(&'static str),
    #[error("JWT leeway of {0} s is above the maximum of {MAX_LEEWAY_SECS} s")]
    LeewayTooLarge(u64),
}

/// Why a token was refused. Messages are safe to log and to send to the
/// client: they never contain the token.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("token too large")]
    TooLarge,
    #[error("malformed token")]
    Malformed,
    /// The header's `alg` is not one a configured key accepts. The value is
    /// sanitised (short, ASCII alphanumerics only) before it is kept here.
    #[error("token algorithm {alg:?} not accepted")]
    AlgorithmNotAllowed { alg: String },
    #[error("token header has unsupported critical extensions")]
    CriticalHeader,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token lacks required claim {0:?}")]
    MissingClaim(&'static str),
    #[error("token claim {0:?} has an invalid value")]
    InvalidClaim(&'static str),
    #[error("token issuer not accepted")]
    WrongIssuer,
    #[error("token audience not accepted")]
    WrongAudience,
    /// A refresh token (AUTH on a live session) names another subject.
    #[error("token subject differs from the session's")]
    SubjectMismatch,
}

/// A verified token's claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// The subject: who the session is. Never empty.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not-before, seconds since the Unix epoch, when the token had one.
    pub nbf: Option<u64>,
    /// The leeway the verifier applied; live expiry honours it too.
    pub leeway_secs: u64,
    /// Every claim as sent (a JSON object), for ACL role/group/claim lookups.
    pub raw: serde_json::Value,
}

impl Claims {
    /// The Unix second at which the session must end: `exp` plus leeway.
    pub fn expires_at(&self) -> u64 {
        self.exp.saturating_add(self.leeway_secs)
    }

    /// How long from `now_unix` until the session must end (zero if already).
    /// Saturating: never panics, whatever `exp` is.
    pub fn expires_in(&self, now_unix: u64) -> Duration {
        Duration::from_secs(self.expires_at().saturating_sub(now_unix))
    }

    /// [`Claims::expires_in`] from a sub-second `now` (time since the Unix
    /// epoch, e.g. [`unix_now_precise`] or an injected clock). The server arms
    /// its expiry timer with this: whole seconds would let a session outlive
    /// `exp` by up to a second. Saturating: never panics. The result can be
    /// centuries long; add it to an `Instant` with `checked_add` (`None` =
    /// no deadline that the clock can represent).
    pub fn expires_in_precise(&self, now: Duration) -> Duration {
        Duration::from_secs(self.expires_at()).saturating_sub(now)
    }

    /// True once the token is no longer valid at `now_unix`.
    pub fn is_expired_at(&self, now_unix: u64) -> bool {
        now_unix >= self.expires_at()
    }

    /// One claim, looked up the ACL way: the literal name first, then a dotted
    /// path (`realm_access.roles`). See [`crate::identity::lookup_claim`].
    pub fn get(&self, path: &str) -> Option<&serde_json::Value> {
        crate::identity::lookup_claim(&self.raw, path)
            .into_iter()
            .next()
    }
}

/// Seconds since the Unix epoch by the system clock (0 for a clock set
/// before 1970, rather than a panic).
pub fn unix_now() -> u64 {
    unix_now_precise().as_secs()
}

/// Time since the Unix epoch by the system clock, at the clock's precision
/// (zero for a clock set before 1970, rather than a panic).
pub fn unix_now_precise() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// Verifies tokens against the configured keys. Cheap to share (`Arc`) across
/// sessions; verification takes `&self`.
pub struct JwtVerifier {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    es256: Option<DecodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.algorithms())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

impl JwtVerifier {
    /// Validates the configuration and parses the keys. `Ok(None)` when no
    /// key is configured: authentication is off.
    pub fn new(config: &JwtConfig) -> Result<Option<JwtVerifier>, ConfigError> {
        if !config.is_enabled() {
            return Ok(None);
        }
        // Pin the backend explicitly: if some other crate in the build turned
        // on jsonwebtoken's `aws_lc_rs` too, automatic selection would panic.
        // An Err means a provider is already installed, which is fine.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
        );

        if config.leeway_secs > MAX_LEEWAY_SECS {
            return Err(ConfigError::LeewayTooLarge(config.leeway_secs));
        }
        let issuer = non_empty(&config.issuer, "issuer")?;
        let audience = non_empty(&config.audience, "audience")?;

        let hs256 = match &config.hs256_secret {
            Some(s) if s.is_empty() => return Err(ConfigError::EmptySecret),
            Some(s) => Some(DecodingKey::from_secret(s.as_bytes())),
            None => None,
        };
        let rs256 = config
            .rs256_public_key_pem
            .as_deref()
            .map(rsa_key)
            .transpose()?;
        let es256 = config
            .es256_public_key_pem
            .as_deref()
            .map(ec_key)
            .transpose()?;
        Ok(Some(JwtVerifier {
            hs256,
            rs256,
            es256,
            issuer,
            audience,
            leeway_secs: config.leeway_secs,
        }))
    }

    /// The algorithms this verifier accepts, for a start-up log line.
    pub fn algorithms(&self) -> Vec<&'static str> {
        [
            (self.hs256.is_some(), "HS256"),
            (self.rs256.is_some(), "RS256"),
            (self.es256.is_some(), "ES256"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }

    /// Verifies `token` against the system clock ([`unix_now`]). Code with
    /// its own clock calls [`JwtVerifier::verify_at`].
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, unix_now())
    }

    /// Verifies `token` as of `now_unix` (seconds since the Unix epoch).
    /// `exp`, `nbf` and the leeway are judged against `now_unix` only; the
    /// system clock is never read.
    pub fn verify_at(&self, token: &str, now_unix: u64) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let name = header_algorithm(token)?;
        let (alg, key) = match name.as_str() {
            "HS256" => (Algorithm::HS256, self.hs256.as_ref()),
            "RS256" => (Algorithm::RS256, self.rs256.as_ref()),
            "ES256" => (Algorithm::ES256, self.es256.as_ref()),
            _ => (Algorithm::HS256, None),
        };
        let Some(key) = key else {
            return Err(AuthError::AlgorithmNotAllowed { alg: name });
        };

        let data = jsonwebtoken::decode::<serde_json::Value>(token, key, &self.validation(alg))
            .map_err(|e| map_error(e.kind()))?;
        let claims = data.claims;

        let sub = match claims.get("sub") {
            None | Some(serde_json::Value::Null) => return Err(AuthError::MissingClaim("sub")),
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(AuthError::InvalidClaim("sub")),
        };
        // Fractional NumericDates round towards "less valid": exp down, nbf up.
        let exp = match numeric_date(&claims, "exp", f64::floor)? {
            Some(t) => t,
            None => return Err(AuthError::MissingClaim("exp")),
        };
        let nbf = numeric_date(&claims, "nbf", f64::ceil)?;

        if now_unix >= exp.saturating_add(self.leeway_secs) {
            return Err(AuthError::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now_unix.saturating_add(self.leeway_secs)) {
            return Err(AuthError::NotYetValid);
        }
        Ok(Claims {
            sub,
            exp,
            nbf,
            leeway_secs: self.leeway_secs,
            raw: claims,
        })
    }

    /// Verifies a refresh: AUTH sent again on a live session whose subject is
    /// `current_sub`. The new token must be valid and for the same subject.
    /// Reads the system clock; see [`JwtVerifier::verify_refresh_at`].
    pub fn verify_refresh(&self, token: &str, current_sub: &str) -> Result<Claims, AuthError> {
        self.verify_refresh_at(token, current_sub, unix_now())
    }

    /// [`JwtVerifier::verify_refresh`] as of `now_unix`.
    pub fn verify_refresh_at(
        &self,
        token: &str,
        current_sub: &str,
        now_unix: u64,
    ) -> Result<Claims, AuthError> {
        let claims = self.verify_at(token, now_unix)?;
        if claims.sub != current_sub {
            return Err(AuthError::SubjectMismatch);
        }
        Ok(claims)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        // exp/nbf are checked by us against the caller's `now_unix`:
        // jsonwebtoken's own checks read the system clock. `sub` and `exp` are
        // required by us too (so that an ill-typed one is InvalidClaim, not
        // "missing"), not through `required_spec_claims`.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.leeway = 0;
        v.reject_tokens_expiring_in_less_than = 0;
        let mut required: HashSet<String> = HashSet::new();
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.insert("iss".into());
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.insert("aud".into());
            }
            // No audience configured: `aud` is not checked (jsonwebtoken would
            // otherwise refuse every token that carries one).
            None => v.validate_aud = false,
        }
        v.required_spec_claims = required;
        v
    }
}

fn non_empty(value: &Option<String>, what: &'static str) -> Result<Option<String>, ConfigError> {
    match value {
        Some(s) if s.trim().is_empty() => Err(ConfigError::EmptyClaim(what)),
        other => Ok(other.clone()),
    }
}

fn rsa_key(pem: &str) -> Result<DecodingKey, ConfigError> {
    let bad = |m: &str| ConfigError::InvalidRsaKey(m.to_owned());
    if pem.contains("PRIVATE KEY") {
        return Err(bad("a private key was given; configure the public key"));
    }
    let key = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| bad(&e.to_string()))?;
    // from_rsa_pem only unwraps the PEM; parse the key now so a bad one stops
    // the server at start instead of failing every login.
    let der = key.try_get_as_bytes().map_err(|e| bad(&e.to_string()))?;
    let parse = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER
        .key_utils
        .rsa_pub_components_from_public_key;
    parse(der).map_err(|e| bad(&e.to_string()))?;
    Ok(key)
}

fn ec_key(pem: &str) -> Result<DecodingKey, ConfigError> {
    let bad = |m: &str| ConfigError::InvalidEcKey(m.to_owned());
    if pem.contains("PRIVATE KEY") {
        return Err(bad("a private key was given; configure the public key"));
    }
    let key = DecodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| bad(&e.to_string()))?;
    // Building a verifier parses the point on P-256: a P-384 key fails here.
    let factory = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.verifier_factory;
    factory(&Algorithm::ES256, &key).map_err(|e| bad(&e.to_string()))?;
    Ok(key)
}

/// Reads `alg` from the token header without trusting anything else in it.
fn header_algorithm(token: &str) -> Result<String, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    let header = header.as_object().ok_or(AuthError::Malformed)?;
    // RFC 7515 §4.1.11: extensions we do not understand must be refused.
    if header.contains_key("crit") {
        return Err(AuthError::CriticalHeader);
    }
    match header.get("alg") {
        Some(serde_json::Value::String(alg)) => Ok(sanitise(alg)),
        _ => Err(AuthError::Malformed),
    }
}

/// Keeps attacker-chosen text in logs short and printable.
fn sanitise(s: &str) -> String {
    s.chars()
        .take(16)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '?' })
        .collect()
}

/// A NumericDate claim in whole seconds: `Ok(None)` when absent, an error
/// when not a non-negative number that fits a u64. Integers are taken exactly;
/// floats (finite, `0 <= t < 2^64`) are rounded by `round` (floor or ceil).
fn numeric_date(
    claims: &serde_json::Value,
    name: &'static str,
    round: fn(f64) -> f64,
) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => {
            if let Some(t) = n.as_u64() {
                return Ok(Some(t));
            }
            match n.as_f64() {
                // Every float below 2^64 from 2^53 on is an integer, so
                // floor/ceil stay below 2^64 and the `as` is exact (it would
                // saturate, never wrap, in any case).
                Some(t) if (0.0..TWO_POW_64).contains(&t) => Ok(Some(round(t) as u64)),
                _ => Err(AuthError::InvalidClaim(name)),
            }
        }
        Some(_) => Err(AuthError::InvalidClaim(name)),
    }
}

/// 2^64 as an f64 (exact).
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            AuthError::AlgorithmNotAllowed { alg: "?".into() }
        }
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(static_claim(c)),
        ErrorKind::InvalidClaimFormat(c) => AuthError::InvalidClaim(static_claim(c)),
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        // Bad base64/JSON/UTF-8, wrong shape, or anything new: refuse plainly.
        _ => AuthError::Malformed,
    }
}

fn static_claim(name: &str) -> &'static str {
    match name {
        "sub" => "sub",
        "exp" => "exp",
        "nbf" => "nbf",
        "iss" => "iss",
        "aud" => "aud",
        _ => "?",
    }
}
