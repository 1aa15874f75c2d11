//! Cluster mode: the writes the server makes by itself — a session's presence
//! paths released when it ends (retried once the engine is back), a dead
//! node's paths reaped by the survivors, keys expired once whichever node
//! notices — each proposed to the engine like a client's write.

use sodp_proto::{merge, pointer, DeltaOp, Value};

use super::clustered::{Draft, INTERNAL_RETRIES};
use super::remote::{stale, Binding, CatchUp, Outcome, Proposal, Remote};
use super::Store;
use crate::error::Rejection;
use crate::outbox::SessionId;
use crate::size;

impl Store {
    /// A session's presence path released in cluster mode: removed through
    /// the engine like any write (redrafted if another node wrote first).
    pub(super) fn release_presence_remote(
        &self,
        remote: &dyn Remote,
        key: &str,
        path: &str,
        session: SessionId,
    ) {
        for _ in 0..INTERNAL_RETRIES {
            let owned = self
                .with_existing(key, |_, st| st.presence.get(path) == Some(&session))
                .unwrap_or(false);
            if !owned {
                return; // Another session has taken the path since.
            }
            match self.remove_path(remote, key, path, Binding::Unbind(path, session)) {
                Ok(()) => {
                    let _ = self.with_existing(key, |_, st| {
                        if st.presence.get(path) == Some(&session) {
                            st.presence.remove(path);
                            self.memory.release(super::presence_cost(path));
                        }
                    });
                    return;
                }
                Err(e) if e.stale => continue,
                Err(e) => {
                    tracing::warn!(key, path, error = %e, "presence path not released yet (the engine is unreachable); retried when it is back");
                    remote.defer_release(key, path, session);
                    return;
                }
            }
        }
    }

    /// Removes `path` from `key` through the engine (one attempt). Used
    /// for presence releases, here and by the survivors of a dead node.
    pub fn remove_path(
        &self,
        remote: &dyn Remote,
        key: &str,
        path: &str,
        binding: Binding<'_>,
    ) -> Result<(), Rejection> {
        let _gate = remote.gate(key);
        let drafted = self.with_slot(key, |_, st| {
            let base = st.version;
            let mut value = st.value.clone();
            let size = match pointer::parse(path) {
                Ok(segments) => size::after_remove(st.size, &st.value, &segments),
                Err(_) => st.size,
            };
            match merge::remove_in_in_place(&mut value, path) {
                Ok(Some(op)) if st.initialized => Some(Draft {
                    base,
                    ops: vec![op],
                    value,
                    size,
                    initialized: true,
                    expires: None,
                    presence: None,
                }),
                _ => None,
            }
            .ok_or(base)
        })?;
        let draft = match drafted {
            Ok(draft) => draft,
            Err(base) => {
                // Nothing to remove on the copy: only true if it is current.
                return match remote.catch_up(key, base)? {
                    CatchUp::Current => Ok(()),
                    other => {
                        self.apply_catch_up(key, other);
                        Err(stale(key))
                    }
                };
            }
        };
        let outcome = remote.commit(
            &[Proposal {
                key,
                base: draft.base,
                initialized: true,
                value: &draft.value,
                size: draft.size,
                ops: &draft.ops,
                expires: None,
                binding,
                expiring_at: None,
            }],
            None,
        )?;
        match outcome {
            Outcome::Committed(version) => {
                self.apply_own(key, version, draft);
                Ok(())
            }
            // (Remembered: only for idempotent calls, which this is not.)
            Outcome::NotOwner | Outcome::Remembered(..) => Ok(()),
            Outcome::Stale => {
                self.catch_up(remote, key)?;
                Err(stale(key))
            }
        }
    }

    /// A deadline found due in Redis's index (cluster mode): the copy is
    /// caught up, then expired through the engine as [`Store::expire`]
    /// would. A deadline that moved meanwhile is left alone.
    pub fn expire_due(&self, key: &str, at: u64) {
        let Some(remote) = self.remote() else { return };
        if self.catch_up(remote, key).is_ok() {
            self.expire_remote(remote, key, at);
        }
    }

    /// A key's deadline passed (cluster mode): deleted through the engine,
    /// which commits it only if the key still has that deadline — so the
    /// key expires once, whichever node notices first.
    pub(super) fn expire_remote(&self, remote: &dyn Remote, key: &str, at: u64) {
        for _ in 0..INTERNAL_RETRIES {
            let _gate = remote.gate(key);
            let draft = self
                .with_existing(key, |_, st| {
                    (st.expires_at == Some(at) && st.initialized).then(|| Draft {
                        base: st.version,
                        ops: vec![DeltaOp::remove("/")],
                        value: Value::Nil,
                        size: size::after_set(&Value::Nil),
                        initialized: false,
                        expires: Some(0),
                        presence: None,
                    })
                })
                .flatten();
            let Some(draft) = draft else { return };
            let outcome = remote.commit(
                &[Proposal {
                    key,
                    base: draft.base,
                    initialized: false,
                    value: &draft.value,
                    size: draft.size,
                    ops: &draft.ops,
                    expires: Some(0),
                    binding: Binding::None,
                    expiring_at: Some(at),
                }],
                None,
            );
            match outcome {
                Ok(Outcome::Committed(version)) => return self.apply_own(key, version, draft),
                Ok(Outcome::Stale | Outcome::NotOwner | Outcome::Remembered(..)) => {
                    // Another node expired it, or a write moved the deadline.
                    if self.catch_up(remote, key).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "expiry deferred: the engine is unreachable");
                    return;
                }
            }
        }
    }
}
