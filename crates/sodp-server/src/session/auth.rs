//! Authentication inside a session: the AUTH window after HELLO, verifying
//! the first token and in-band refreshes (same `sub`), and the deadline the
//! token's `exp` sets. Tokens never reach the logs.

use std::time::Duration;

use sodp_auth::Identity;
use sodp_proto::{Frame, FrameType, Value};
use tokio::time::Instant;
use tracing::{debug, info};

use super::Session;
use crate::error::{ErrorCode, Rejection};
use crate::outbox::Close;
use crate::wire;

/// Where the session stands with authentication.
pub(super) enum AuthState {
    /// HELLO said `auth: true`; only AUTH and HEARTBEAT until `deadline`.
    Pending { deadline: Instant },
    /// Authenticated (or no auth configured). `expires_at` is the token's
    /// `exp`: the session is closed then unless a refresh moves it.
    Live {
        sub: Option<String>,
        expires_at: Option<Instant>,
    },
}

impl AuthState {
    /// The state a new session starts in.
    pub(super) fn initial(auth_required: bool, timeout: Duration, now: Instant) -> AuthState {
        if auth_required {
            AuthState::Pending {
                deadline: now + timeout,
            }
        } else {
            AuthState::Live {
                sub: None,
                expires_at: None,
            }
        }
    }

    pub(super) fn is_live(&self) -> bool {
        matches!(self, AuthState::Live { .. })
    }
}

impl Session {
    /// The next moment something must happen without a frame arriving: the
    /// end of the authentication window, or the token's expiry.
    pub fn deadline(&self) -> Option<Instant> {
        match self.auth {
            AuthState::Pending { deadline } => Some(deadline),
            AuthState::Live { expires_at, .. } => expires_at,
        }
    }

    pub fn on_deadline(&mut self, _now: Instant) {
        let message = match self.auth {
            AuthState::Pending { .. } => "authentication timed out",
            AuthState::Live { .. } => "token expired",
        };
        info!(session = self.id, "{message}; closing");
        self.refuse_auth(0, message);
    }

    /// ERROR 401, then close: every authentication failure ends the session.
    pub(super) fn refuse_auth(&mut self, stream_id: u32, message: &str) {
        let reason = match (&self.auth, message) {
            (AuthState::Pending { .. }, "authentication timed out") => "timeout",
            (AuthState::Live { .. }, "token expired") => "expired",
            (AuthState::Pending { .. }, m) if m.starts_with("authenticate first") => {
                "not_authenticated"
            }
            _ => "invalid_token",
        };
        self.shared
            .metrics
            .auth_failures
            .get_or_create(&crate::metrics::Reason { reason })
            .inc();
        self.send_error(stream_id, &Rejection::new(ErrorCode::Unauthorized, message));
        self.outbox.close(Close::UNAUTHORIZED);
    }

    /// AUTH: the first token on a pending session, or a refresh (same
    /// `sub`) on a live one. Tokens never reach the logs.
    pub(super) fn on_auth(&mut self, frame: &Frame) {
        let Some(verifier) = &self.shared.policy.jwt else {
            return self.send_error(
                frame.stream_id,
                &Rejection::bad_request("this server does not require authentication"),
            );
        };
        let Some(token) = frame.body.get("token").and_then(Value::as_str) else {
            return self.refuse_auth(frame.stream_id, "AUTH needs `token` (a string)");
        };
        let now_unix = self.shared.clock.unix_secs();
        let verified = match &self.auth {
            AuthState::Live { sub: Some(sub), .. } => {
                verifier.verify_refresh_at(token, sub, now_unix)
            }
            _ => verifier.verify_at(token, now_unix),
        };
        let claims = match verified {
            Ok(claims) => claims,
            Err(e) => {
                info!(session = self.id, reason = %e, "authentication refused");
                return self.refuse_auth(frame.stream_id, &e.to_string());
            }
        };
        let refreshed = self.auth.is_live();
        // Checked: an `exp` too far away for the clock to represent simply
        // sets no expiry timer (never a panic).
        let now = Instant::now();
        debug!(session = self.id, sub = %claims.sub, refreshed, "authenticated");
        self.identity = Identity::from_claims(&claims);
        *self.reader.write().unwrap_or_else(|p| p.into_inner()) = self.identity.clone();
        self.holdings.info().set_subject(&claims.sub);
        self.auth = AuthState::Live {
            sub: Some(claims.sub.clone()),
            expires_at: now.checked_add(claims.expires_in_precise(self.shared.clock.since_epoch())),
        };
        let seq = self.next_seq();
        let body = Value::map_from([("sub", Value::from(claims.sub))]);
        self.send(wire::encode(FrameType::AuthOk, frame.stream_id, seq, body));
    }
}
