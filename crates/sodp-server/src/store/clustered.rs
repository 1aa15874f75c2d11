//! The store in cluster mode, the write path: writes and transactions
//! drafted on a copy and committed by the shared engine ([`Remote`]), then
//! applied. Beside it: `cluster_catch_up.rs` (changes applied in version
//! order, gaps healed), `cluster_reads.rs` (WATCH, RESUME, patterns, keys,
//! history), `cluster_upkeep.rs` (presence releases, reaping, expiry).
//!
//! A node's copy of a key is a cache that only ever advances by committed
//! changes, each applied exactly when it follows the copy's version: the
//! writer's own change when the engine confirms it, everyone's when it
//! arrives over the fanout (whichever comes first; the other is a
//! duplicate). A change that does not follow the copy is a gap: the copy is
//! caught up from the engine's history, or reset to the engine's image with
//! one DELTA from the old value to the new (so key subscribers stay exact
//! without a reconnect). Pattern streams are fed apart, in Redis's commit
//! order (`cluster_patterns.rs`).
//!
//! No key lock is held while the engine is asked: a draft is made under
//! the lock on a copy (values are shared, so that is O(1)), proposed with
//! the version it was made on, and applied under the lock again. A stale
//! draft is answered [`stale`] after catching the copy up, and the session
//! runs the CALL again on the fresh copy.
//!
//! An idempotent call's record goes into the same engine step as its change
//! ([`Remember`]); a call some node already committed is answered with that
//! outcome ([`Outcome::Remembered`]) and changes nothing.

use sodp_proto::{DeltaOp, Value};

use super::many::{TxDrafted, TxOp};
use super::remote::{stale, Binding, CatchUp, Outcome, Proposal, Remember, Remote};
use super::{Doc, Edit, EditKind, KeySlot, KeyState, Store, Written};
use crate::error::Rejection;
use crate::idempotency::{reused, Tag};
use crate::outbox::SessionId;

/// How many times an internal write (a presence release, an expiry) is
/// redrafted after losing a race with another node before giving up.
pub(super) const INTERNAL_RETRIES: usize = 16;

/// A write drafted on a copy of the key, to propose.
pub(super) struct Draft {
    pub(super) base: u64,
    pub(super) ops: Vec<DeltaOp>,
    pub(super) value: Value,
    pub(super) size: usize,
    pub(super) initialized: bool,
    pub(super) expires: Option<u64>,
    pub(super) presence: Option<(String, SessionId)>,
}

enum Drafted {
    /// The write changes nothing (if the copy is current).
    Unchanged {
        version: u64,
        presence: Option<(String, SessionId)>,
    },
    Change(Draft),
}

impl KeyState {
    /// A copy to draft a write on: the value (shared) and what describes it.
    fn scratch(&self) -> KeyState {
        KeyState {
            value: self.value.clone(),
            size: self.size,
            version: self.version,
            initialized: self.initialized,
            expires_at: self.expires_at,
            ..KeyState::new()
        }
    }
}

impl Store {
    /// [`Store::write`] in cluster mode.
    pub(super) fn write_remote(
        &self,
        remote: &dyn Remote,
        key: &str,
        tag: Option<&Tag>,
        edit: impl FnOnce(&mut Doc<'_>) -> Result<Edit, Rejection>,
    ) -> Result<Written, Rejection> {
        remote.check_writable()?;
        let _gate = remote.gate(key);
        let drafted = self.with_slot(key, |slot, st| self.draft(slot, st, edit))?;
        let (base, result) = match drafted {
            Ok(Drafted::Change(draft)) => return self.propose(remote, key, draft, tag),
            Ok(Drafted::Unchanged { version, presence }) => {
                if let Some((path, session)) = presence {
                    self.bind_remote(remote, key, version, path, session)?;
                }
                (
                    version,
                    Ok(Written {
                        version,
                        ticket: 0,
                        changed: false,
                    }),
                )
            }
            Err((base, refusal)) => (base, Err(refusal)),
        };
        // Refused, or a no-op, judged on the copy: true only if the copy
        // was current.
        match remote.catch_up(key, base)? {
            CatchUp::Current => result,
            other => {
                self.apply_catch_up(key, other);
                Err(stale(key))
            }
        }
    }

    /// [`Store::write_many`] in cluster mode: drafted on the copies of all
    /// keys, committed by one script call with one version (all or
    /// nothing), applied key by key.
    pub(super) fn write_many_remote(
        &self,
        remote: &dyn Remote,
        keys: &[String],
        ops: Vec<TxOp<'_>>,
        tag: Option<&Tag>,
    ) -> Result<Written, Rejection> {
        remote.check_writable()?;
        let _gates = remote.gates(keys);
        let (drafted, bases) = self.draft_sorted(keys, ops)?;
        let (drafts, changed) = match drafted {
            Err(refusal) => return self.confirm_all(remote, keys, &bases, Err(refusal)),
            Ok(TxDrafted::Unchanged(written)) => {
                return self.confirm_all(remote, keys, &bases, Ok(written))
            }
            Ok(TxDrafted::Changed(drafts, changed)) => (drafts, changed),
        };
        for draft in &drafts {
            // Counted again when each key's change is applied.
            self.memory.release(draft.reserved);
        }
        let proposals: Vec<Proposal<'_>> = (0..keys.len())
            .filter(|p| changed[*p])
            .map(|p| {
                let (base, expires_before) = bases[p];
                let st = &drafts[p].st;
                Proposal {
                    key: &keys[p],
                    base,
                    initialized: st.initialized,
                    value: &st.value,
                    size: st.size,
                    ops: &drafts[p].ops,
                    expires: (st.expires_at != expires_before).then(|| st.expires_at.unwrap_or(0)),
                    binding: Binding::None,
                    expiring_at: None,
                }
            })
            .collect();
        let outcome = remote.commit(&proposals, self.remembering(tag))?;
        let expires: Vec<Option<u64>> = proposals.iter().map(|p| p.expires).collect();
        drop(proposals);
        match outcome {
            Outcome::Committed(version) => {
                let mut expires = expires.into_iter();
                for (p, draft) in drafts.into_iter().enumerate() {
                    if !changed[p] {
                        continue;
                    }
                    let size = draft.st.size;
                    self.apply_own(
                        &keys[p],
                        version,
                        Draft {
                            base: bases[p].0,
                            ops: draft.ops,
                            value: draft.st.value,
                            size,
                            initialized: draft.st.initialized,
                            expires: expires.next().flatten(),
                            presence: None,
                        },
                    );
                }
                Ok(Written {
                    version,
                    ticket: 0,
                    changed: true,
                })
            }
            Outcome::Remembered(print, version) => remembered(tag, print, version),
            Outcome::Stale | Outcome::NotOwner => {
                for key in keys {
                    self.catch_up(remote, key)?;
                }
                Err(stale(&keys.join(", ")))
            }
        }
    }

    /// A transaction refused or changing nothing on the copies: the answer
    /// stands only if every copy was current.
    fn confirm_all(
        &self,
        remote: &dyn Remote,
        keys: &[String],
        bases: &[(u64, Option<u64>)],
        result: Result<Written, Rejection>,
    ) -> Result<Written, Rejection> {
        let mut current = true;
        for (key, (base, _)) in keys.iter().zip(bases) {
            match remote.catch_up(key, *base)? {
                CatchUp::Current => {}
                other => {
                    self.apply_catch_up(key, other);
                    current = false;
                }
            }
        }
        match current {
            true => result,
            false => Err(stale(&keys.join(", "))),
        }
    }

    /// Runs `edit` on a copy of the key (under its lock): what the write
    /// would change, without changing anything.
    fn draft(
        &self,
        slot: &KeySlot,
        st: &mut KeyState,
        edit: impl FnOnce(&mut Doc<'_>) -> Result<Edit, Rejection>,
    ) -> Result<Drafted, (u64, Rejection)> {
        let base = st.version;
        let mut scratch = st.scratch();
        let mut doc = Doc {
            key: &slot.key,
            st: &mut scratch,
            store: self,
            admitted: None,
        };
        let edited = edit(&mut doc);
        // The size was admitted against the budget; the memory itself is
        // counted when the change is applied.
        let admitted = doc.admitted.take();
        if let Some((_, growth)) = admitted {
            self.memory.release(growth);
        }
        let edit = edited.map_err(|r| (base, r))?;
        let value_unchanged = match edit.kind {
            EditKind::Change => st.initialized && edit.ops.is_empty(),
            EditKind::Delete => !st.initialized,
        };
        let deadline = match edit.kind {
            EditKind::Delete if !st.initialized => None,
            _ => edit.new_deadline(st.expires_at),
        };
        if value_unchanged && deadline.is_none() {
            return Ok(Drafted::Unchanged {
                version: base,
                presence: edit.presence,
            });
        }
        if let (Some(validator), EditKind::Change) = (&self.validator, &edit.kind) {
            validator
                .validate(&slot.key, &scratch.value)
                .map_err(|r| (base, r))?;
        }
        let (ops, initialized) = match edit.kind {
            EditKind::Change if st.initialized => (edit.ops, true),
            EditKind::Change => (vec![DeltaOp::add("/", scratch.value.clone())], true),
            EditKind::Delete => (edit.ops, false),
        };
        Ok(Drafted::Change(Draft {
            base,
            ops,
            size: admitted.map_or(scratch.size, |(size, _)| size),
            value: scratch.value,
            initialized,
            expires: deadline.map(|at| at.unwrap_or(0)),
            presence: edit.presence,
        }))
    }

    /// Proposes a draft; once committed, applies it to the copy.
    fn propose(
        &self,
        remote: &dyn Remote,
        key: &str,
        draft: Draft,
        tag: Option<&Tag>,
    ) -> Result<Written, Rejection> {
        let binding = match &draft.presence {
            Some((path, session)) => Binding::Bind(path, *session),
            None => Binding::None,
        };
        let outcome = remote.commit(
            &[Proposal {
                key,
                base: draft.base,
                initialized: draft.initialized,
                value: &draft.value,
                size: draft.size,
                ops: &draft.ops,
                expires: draft.expires,
                binding,
                expiring_at: None,
            }],
            self.remembering(tag),
        )?;
        match outcome {
            Outcome::Committed(version) => {
                self.apply_own(key, version, draft);
                Ok(Written {
                    version,
                    ticket: 0,
                    changed: true,
                })
            }
            Outcome::Remembered(print, version) => remembered(tag, print, version),
            Outcome::Stale | Outcome::NotOwner => {
                self.catch_up(remote, key)?;
                Err(stale(key))
            }
        }
    }

    /// The record an idempotent call commits with its change.
    fn remembering<'t>(&self, tag: Option<&'t Tag>) -> Option<Remember<'t>> {
        tag.map(|tag| Remember {
            tag,
            window: self.idempotency.window(),
        })
    }

    /// A committed draft of this node: applied unless the fanout brought it
    /// first.
    pub(super) fn apply_own(&self, key: &str, version: u64, draft: Draft) {
        let behind = self
            .with_slot(key, |slot, st| {
                let behind = st.version < version && st.version != draft.base;
                if st.version == draft.base {
                    self.install(
                        slot,
                        st,
                        draft.value,
                        draft.size,
                        draft.initialized,
                        draft.ops,
                        version,
                        draft.expires,
                    );
                }
                if let Some((path, session)) = draft.presence {
                    self.hold_binding(st, path, session);
                }
                behind
            })
            .unwrap_or(false);
        if behind {
            if let Some(remote) = self.remote() {
                let _ = self.catch_up(remote, key);
            }
        }
    }

    /// A presence path bound again by a write that changed nothing: the
    /// engine's registry records it for this node all the same.
    fn bind_remote(
        &self,
        remote: &dyn Remote,
        key: &str,
        version: u64,
        path: String,
        session: SessionId,
    ) -> Result<(), Rejection> {
        let _ = (remote, version);
        let _ = self.with_existing(key, |_, st| self.hold_binding(st, path, session));
        Ok(())
    }

    /// Records locally that `session` owns `path` (the newest binder owns it).
    fn hold_binding(&self, st: &mut KeyState, path: String, session: SessionId) {
        if !st.presence.contains_key(&path) {
            self.memory.force(super::presence_cost(&path));
        }
        st.presence.insert(path, session);
    }

    /// Makes the copy hold a committed change: the new value (already
    /// computed), its size, the deadline, then the ordinary commit —
    /// history, the DELTA encoded once to every key and pattern subscriber.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn install(
        &self,
        slot: &KeySlot,
        st: &mut KeyState,
        value: Value,
        size: usize,
        initialized: bool,
        ops: Vec<DeltaOp>,
        version: u64,
        expires: Option<u64>,
    ) {
        self.memory.force(size);
        self.memory.release(st.size);
        st.value = value;
        st.size = size;
        st.initialized = initialized;
        if let Some(at) = expires {
            let new = (at != 0).then_some(at);
            self.timers.moved(&slot.key, st.expires_at, new);
            st.expires_at = new;
        }
        self.raise_version(version);
        self.commit_versioned(slot, st, ops, version, expires);
    }
}

/// The answer to an idempotent call some node already committed: its
/// outcome if it was this call (same fingerprint), else 409.
fn remembered(
    tag: Option<&Tag>,
    print: crate::idempotency::Fingerprint,
    version: u64,
) -> Result<Written, Rejection> {
    match tag {
        Some(tag) if tag.fingerprint == print => Ok(Written {
            version,
            ticket: 0,
            changed: false,
        }),
        Some(tag) => Err(reused(&tag.key)),
        None => Err(Rejection::new(
            crate::error::ErrorCode::Internal,
            "the engine answered an idempotency record to a call without one",
        )),
    }
}
