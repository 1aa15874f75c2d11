//! SODP security policy: who a session is, what it may read and write, what
//! shape values must keep, and how fast it may go. Pure decisions — no
//! sockets, no async, no logging; the server calls these and acts.
//!
//! # Layout
//!
//! - [`jwt`]: [`JwtConfig`] → [`JwtVerifier`] → [`Claims`]. The algorithm is
//!   pinned by the configured key (HS256 / RS256 / ES256).
//! - [`identity`]: [`Identity`], the subject + claims an ACL decides on, and
//!   claim-path lookup (`cognito:groups`, `realm_access.roles`).
//! - [`acl`]: [`Acl`], per-key read/write rules with identity-provider
//!   presets, and the ACL file format (serde-derived, `deny_unknown_fields`).
//! - [`schema`]: [`Schema`], per-key value types checked before a write
//!   lands, and the schema file format (serde-derived likewise).
//! - `tracked` (private): the serde `Deserializer` over a parsed JSON tree
//!   that gives ACL and schema load errors their location (`rules[3].write`,
//!   `key "player.pos" at fields.x`).
//! - [`rate`]: [`RateLimiter`], a per-session token bucket.
//! - [`origin`]: [`OriginPolicy`], the browser `Origin` allow-list.
//! - [`limits`]: [`ConnectionLimiter`], total and per-IP connection caps.
//! - [`env`](mod@env): the environment variable names, and [`SecurityConfig`], which
//!   reads them all (with `*_FILE` variants) and builds the pieces above.
//!
//! # Wiring it into the server
//!
//! At start-up (any error here should stop the server with its message):
//!
//! ```no_run
//! use std::sync::Arc;
//! use sodp_auth::{SecurityConfig, Policy};
//!
//! let config = SecurityConfig::default();   // filled from flags/variables
//! let policy: Arc<Policy> = Arc::new(config.build()?);
//! // HELLO: auth = policy.jwt.is_some();
//! //        capabilities.token_refresh = policy.jwt.is_some();
//! //        capabilities.rate_limit_writes = config.rate_writes_per_sec (when > 0), same for watches.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! On the WebSocket upgrade (before any session exists):
//! - `policy.origins.allows(origin_header)` — false → HTTP 403.
//! - `policy.connections.try_acquire(peer_ip)` — `Err` → refuse (HTTP 503);
//!   keep the returned [`ConnectionPermit`] in the session: dropping it frees
//!   the slot.
//!
//! In the session:
//! - AUTH before AUTH_OK: `jwt.verify_at(token, now_unix)` (the session's
//!   clock; `jwt.verify(token)` reads the system clock) → `Ok(claims)`: reply
//!   `AUTH_OK {sub: claims.sub}`, build `Identity::from_claims(&claims)`, arm
//!   the expiry timer with `claims.expires_in_precise(now)` added to the
//!   timer's clock with `checked_add` (an `exp` centuries away is valid).
//!   `Err(e)`: ERROR 401 with `e.to_string()` (never contains the token),
//!   close.
//! - AUTH on a live session (refresh):
//!   `jwt.verify_refresh_at(token, &sub, now_unix)` → replace the identity
//!   and re-arm the timer; `Err` → ERROR 401, close.
//! - No JWT configured: `Identity::anonymous()`.
//! - WATCH / RESUME of `key`: `acl.can_read(key, &identity)` (when an ACL is
//!   loaded) — false → ERROR 403 for that key only, generic message.
//! - Every mutating CALL (set, patch, set_in, delete, presence):
//!   `acl.can_write(key, &identity)` → false → RESULT 403; then, except for
//!   delete, `schema.validate(key, &new_value)` on the value the mutation
//!   would produce → `Err(e)` → RESULT 422 with `e.to_string()`
//!   (`/position/x: expected Int, got string`).
//! - Per session: `RateLimiter::new(policy.rate_writes_per_sec)` and one for
//!   watches; `try_acquire(now)` false → 429.

#![forbid(unsafe_code)]

pub mod acl;
pub mod env;
pub mod identity;
pub mod jwt;
pub mod limits;
pub mod origin;
pub mod rate;
pub mod schema;
mod tracked;

pub use acl::{Access, Acl, AclError, Decision, Preset};
pub use env::{Policy, PolicyError, SecurityConfig};
pub use identity::Identity;
pub use jwt::{AuthError, Claims, ConfigError, JwtConfig, JwtVerifier};
pub use limits::{ConnectionLimiter, ConnectionPermit, LimitExceeded};
pub use origin::{OriginError, OriginPolicy};
pub use rate::RateLimiter;
pub use schema::{Schema, SchemaError, SchemaLoadError};
