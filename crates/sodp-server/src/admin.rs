//! Who is an administrator, and what the web inspector may do.
//!
//! - **The admin permission** (every `admin.*` method): with authentication
//!   configured, a token holding `--inspector-admin-claim` (no claim
//!   configured: nobody); without authentication, and only with
//!   `--inspector`, a session from loopback — or from anywhere with
//!   `--inspector-public`. (A server without authentication and without
//!   `--inspector` has no administrators: behind a reverse proxy on the same
//!   machine every peer looks like loopback.) A session a browser page of
//!   another origin opened is never an administrator without a token: a
//!   web page must not reach a local server's admin methods through its
//!   visitor's browser. It grants the `admin.*` methods and nothing else:
//!   reads and writes stay under the ACL.
//! - **The inspector's page** (`/inspector`, its assets, `/inspector/ws`):
//!   only with `--inspector`; to loopback peers only, unless
//!   `--inspector-public` is given or tokens decide (authentication with an
//!   admin claim configured); `/inspector/ws` only from the inspector's own
//!   page (no cross-site `Origin`).
//! - **Writes from the inspector**: a session opened on `/inspector/ws` may
//!   write only with `--inspector-writes`, and only as an administrator.
//!   Enforced here, by the server, whatever the page does.

use std::net::SocketAddr;

use sodp_auth::Identity;

use crate::error::{ErrorCode, Rejection};
use crate::registry::SessionInfo;
use crate::shared::Shared;

/// The methods that change state.
const WRITES: &[&str] = &[
    "state.set",
    "state.patch",
    "state.set_in",
    "state.delete",
    "state.presence",
    "state.transaction",
];

/// Whether `identity`, on the session `info`, holds the admin permission.
pub fn is_admin(shared: &Shared, info: &SessionInfo, identity: &Identity) -> bool {
    let config = &shared.config.inspector;
    if shared.policy.jwt.is_some() {
        let Some(claim) = &config.admin_claim else {
            return false;
        };
        return identity.lookup(&claim.claim).into_iter().any(|v| match v {
            serde_json::Value::String(s) => *s == claim.value,
            serde_json::Value::Array(items) => {
                items.iter().any(|i| i.as_str() == Some(&claim.value))
            }
            _ => false,
        });
    }
    config.enabled && !info.cross_site && (config.public || info.is_loopback())
}

/// The admin methods' refusal: the same for every method and argument, so
/// a non-administrator learns nothing (not even whether a session exists).
pub fn require_admin(
    shared: &Shared,
    info: &SessionInfo,
    identity: &Identity,
) -> Result<(), Rejection> {
    if is_admin(shared, info, identity) {
        Ok(())
    } else {
        shared.metrics.acl_denials.inc();
        Err(Rejection::new(ErrorCode::Forbidden, "access denied"))
    }
}

/// Whether the inspector's page (and its WebSocket) is served to `peer`:
/// `Err` is the HTTP status and message to answer instead.
pub fn serves_inspector(shared: &Shared, peer: SocketAddr) -> Result<(), (u16, &'static str)> {
    let config = &shared.config.inspector;
    if !config.enabled {
        return Err((404, "not found"));
    }
    let tokens_decide = shared.policy.jwt.is_some() && config.admin_claim.is_some();
    if config.public || tokens_decide || peer.ip().to_canonical().is_loopback() {
        Ok(())
    } else {
        Err((
            403,
            "the inspector is served to loopback only (see --inspector-public)",
        ))
    }
}

/// Whether an upgrade on `/inspector/ws` is admitted: as for the page, and
/// never from another site's page (`cross_site`).
pub fn admits_inspector_ws(
    shared: &Shared,
    peer: SocketAddr,
    cross_site: bool,
) -> Result<(), (u16, &'static str)> {
    serves_inspector(shared, peer)?;
    if cross_site {
        return Err((
            403,
            "the inspector's WebSocket is for the inspector's own page",
        ));
    }
    Ok(())
}

/// Refuses a write from an inspector session unless `--inspector-writes`
/// is on and the session is an administrator's.
pub fn check_inspector_call(
    shared: &Shared,
    info: &SessionInfo,
    identity: &Identity,
    method: &str,
) -> Result<(), Rejection> {
    if !info.inspector || !WRITES.contains(&method) {
        return Ok(());
    }
    if !shared.config.inspector.writes {
        return Err(Rejection::new(
            ErrorCode::Forbidden,
            "the inspector is read-only: start the server with --inspector-writes to write from it",
        ));
    }
    require_admin(shared, info, identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::outbox::Outbox;
    use std::sync::Arc;

    fn shared(configure: impl FnOnce(&mut Config)) -> Shared {
        let mut config = Config::default();
        configure(&mut config);
        Shared::new(config).unwrap()
    }

    fn from(addr: &str, inspector: bool) -> SessionInfo {
        let origin = crate::registry::Origin {
            peer: Some(addr.parse().unwrap()),
            inspector,
            cross_site: false,
        };
        SessionInfo::new(Arc::new(Outbox::new(1, 1)), origin, 0)
    }

    #[test]
    fn without_auth_only_loopback_is_admin_with_the_inspector_on_unless_public() {
        let anon = Identity::anonymous();
        let s = shared(|c| c.inspector.enabled = true);
        assert!(is_admin(&s, &from("127.0.0.1:9", false), &anon));
        assert!(!is_admin(&s, &from("10.1.2.3:9", false), &anon));
        let s = shared(|c| {
            c.inspector.enabled = true;
            c.inspector.public = true;
        });
        assert!(is_admin(&s, &from("10.1.2.3:9", false), &anon));
        let off = shared(|_| {});
        assert!(
            !is_admin(&off, &from("127.0.0.1:9", false), &anon),
            "no --inspector, no admin"
        );
    }

    #[test]
    fn the_page_is_served_to_loopback_only_unless_public_or_tokens_decide() {
        let remote: SocketAddr = "10.1.2.3:9".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let off = shared(|_| {});
        assert_eq!(serves_inspector(&off, local).unwrap_err().0, 404);
        let on = shared(|c| c.inspector.enabled = true);
        assert!(serves_inspector(&on, local).is_ok());
        assert_eq!(serves_inspector(&on, remote).unwrap_err().0, 403);
        let public = shared(|c| {
            c.inspector.enabled = true;
            c.inspector.public = true;
        });
        assert!(serves_inspector(&public, remote).is_ok());
        let tokens = shared(|c| {
            c.inspector.enabled = true;
            c.security.jwt.hs256_secret = Some("s".into());
            c.inspector.admin_claim = Some(crate::config::AdminClaim::parse("role:admin").unwrap());
        });
        assert!(serves_inspector(&tokens, remote).is_ok());
    }

    #[test]
    fn only_inspector_sessions_are_held_to_the_writes_flag() {
        let anon = Identity::anonymous();
        let s = shared(|c| c.inspector.enabled = true);
        let insp = from("127.0.0.1:9", true);
        let plain = from("127.0.0.1:9", false);
        assert_eq!(
            check_inspector_call(&s, &insp, &anon, "state.set")
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
        assert!(check_inspector_call(&s, &insp, &anon, "state.get").is_ok());
        assert!(check_inspector_call(&s, &insp, &anon, "admin.stats").is_ok());
        assert!(check_inspector_call(&s, &plain, &anon, "state.set").is_ok());
        let w = shared(|c| {
            c.inspector.enabled = true;
            c.inspector.writes = true;
        });
        assert!(check_inspector_call(&w, &insp, &anon, "state.set").is_ok());
        assert!(check_inspector_call(&w, &from("10.0.0.1:9", true), &anon, "state.set").is_err());
    }
}
