//! The checks every request makes before it touches a key: is the key
//! well-formed, and may this identity read or write it (the ACL).

use sodp_auth::{Access, Identity};
use sodp_proto::key::validate_key;
use tracing::debug;

use crate::error::{ErrorCode, Rejection};
use crate::outbox::SessionId;
use crate::shared::Shared;

/// Who is asking: enough to decide and to log a denial.
#[derive(Clone, Copy)]
pub struct Asker<'a> {
    pub shared: &'a Shared,
    pub session: SessionId,
    pub identity: &'a Identity,
}

impl Asker<'_> {
    /// Checks that `key` is well-formed and that the asker may `access` it.
    pub fn check(&self, key: &str, access: Access) -> Result<(), Rejection> {
        validate_key(key, self.shared.config.limits.max_key_len)
            .map_err(|e| Rejection::bad_request(format!("bad key {key:?}: {e}")))?;
        self.check_acl(key, access)
    }

    /// The ACL decision alone, for a key known to be well-formed (listing
    /// keys: the hidden ones are left out silently).
    pub fn allows(&self, key: &str, access: Access) -> bool {
        self.check_acl(key, access).is_ok()
    }

    /// The ACL decision for `key`. A denial is logged (at debug level, with
    /// the deciding rule) but the client only hears "access denied", which
    /// never reveals whether the key exists.
    fn check_acl(&self, key: &str, access: Access) -> Result<(), Rejection> {
        let Some(acl) = &self.shared.policy.acl else {
            return Ok(());
        };
        let decision = acl.decide(key, access, self.identity);
        if decision.allowed {
            return Ok(());
        }
        self.shared.metrics.acl_denials.inc();
        debug!(
            session = self.session,
            key,
            ?access,
            rule = ?decision.rule,
            sub = self.identity.sub().unwrap_or("(anonymous)"),
            "access denied"
        );
        Err(Rejection::new(ErrorCode::Forbidden, "access denied"))
    }
}
