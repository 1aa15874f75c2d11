//! The store in cluster mode: writes drafted on a copy and committed by the
//! shared engine ([`Remote`]), changes from other nodes applied in version
//! order, and a key's copy caught up after a gap.
//!
//! A node's copy of a key is a cache that only ever advances by committed
//! changes, each applied exactly when it follows the copy's version: the
//! writer's own change when the engine confirms it, everyone's when it
//! arrives over the fanout (whichever comes first; the other is a
//! duplicate). A change that does not follow the copy is a gap: the copy is
//! caught up from the engine's history, or reset to the engine's image with
//! one DELTA from the old value to the new (so key and pattern subscribers
//! stay exact without a reconnect).
//!
//! No key lock is held while the engine is asked: a draft is made under
//! the lock on a copy (values are shared, so that is O(1)), proposed with
//! the version it was made on, and applied under the lock again. A stale
//! draft is answered [`stale`] after catching the copy up, and the session
//! runs the CALL again on the fresh copy.

use sodp_proto::codec::encoded_len;
use sodp_proto::{diff, merge, pointer, DeltaOp, OpKind, Value};

use super::many::{TxDrafted, TxOp};
use super::remote::{stale, Binding, CatchUp, Change, Image, Outcome, Proposal, Remote};
use super::{Doc, Edit, EditKind, KeySlot, KeyState, Store, Written};
use crate::error::Rejection;
use crate::outbox::{Outbox, SessionId};
use crate::size;
use crate::wire;

use std::sync::Arc;

/// How many times an internal write (a presence release, an expiry) is
/// redrafted after losing a race with another node before giving up.
const INTERNAL_RETRIES: usize = 16;

/// How a change from the engine met the node's copy of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// The copy already has it (the writer's own change, or a duplicate).
    Already,
    /// The copy is behind the change's `prev`: catch up.
    Gap,
    /// The node holds no copy of the key.
    NotHeld,
}

/// A write drafted on a copy of the key, to propose.
struct Draft {
    base: u64,
    ops: Vec<DeltaOp>,
    value: Value,
    size: usize,
    initialized: bool,
    expires: Option<u64>,
    presence: Option<(String, SessionId)>,
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
        edit: impl FnOnce(&mut Doc<'_>) -> Result<Edit, Rejection>,
    ) -> Result<Written, Rejection> {
        remote.check_writable()?;
        let _gate = remote.gate(key);
        let drafted = self.with_slot(key, |slot, st| self.draft(slot, st, edit))?;
        let (base, result) = match drafted {
            Ok(Drafted::Change(draft)) => return self.propose(remote, key, draft),
            Ok(Drafted::Unchanged { version, presence }) => {
                if let Some((path, session)) = presence {
                    self.bind_remote(remote, key, version, path, session)?;
                }
                (version, Ok(Written { version, ticket: 0 }))
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
                    ops: &drafts[p].ops,
                    expires: (st.expires_at != expires_before).then(|| st.expires_at.unwrap_or(0)),
                    binding: Binding::None,
                    expiring_at: None,
                }
            })
            .collect();
        let outcome = remote.commit(&proposals)?;
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
                Ok(Written { version, ticket: 0 })
            }
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
    fn propose(&self, remote: &dyn Remote, key: &str, draft: Draft) -> Result<Written, Rejection> {
        let binding = match &draft.presence {
            Some((path, session)) => Binding::Bind(path, *session),
            None => Binding::None,
        };
        let outcome = remote.commit(&[Proposal {
            key,
            base: draft.base,
            initialized: draft.initialized,
            value: &draft.value,
            ops: &draft.ops,
            expires: draft.expires,
            binding,
            expiring_at: None,
        }])?;
        match outcome {
            Outcome::Committed(version) => {
                self.apply_own(key, version, draft);
                Ok(Written { version, ticket: 0 })
            }
            Outcome::Stale | Outcome::NotOwner => {
                self.catch_up(remote, key)?;
                Err(stale(key))
            }
        }
    }

    /// A committed draft of this node: applied unless the fanout brought it
    /// first.
    fn apply_own(&self, key: &str, version: u64, draft: Draft) {
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
    fn install(
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

    /// A change committed by any node, as the fanout delivers it. `create`:
    /// make a copy of the key if the node holds none (catching up).
    pub fn apply_change(&self, key: &str, change: Change, create: bool) -> Applied {
        let apply = |slot: &KeySlot, st: &mut KeyState| {
            if st.version >= change.version {
                return Applied::Already;
            }
            if st.version != change.prev {
                return Applied::Gap;
            }
            let mut value = st.value.clone();
            let mut initialized = st.initialized;
            for op in &change.ops {
                if sodp_proto::delta::apply_in_place(&mut value, op).is_err() {
                    // Cannot happen for a change that follows the copy; a
                    // fresh image repairs it if it does.
                    return Applied::Gap;
                }
                if op.path == "/" {
                    initialized = op.kind != OpKind::Remove;
                }
            }
            let size = encoded_len(&value);
            self.install(
                slot,
                st,
                value,
                size,
                initialized,
                change.ops,
                change.version,
                change.expires,
            );
            Applied::Applied
        };
        let applied = if create {
            self.with_slot(key, apply).ok()
        } else {
            self.with_existing(key, apply)
        };
        applied.unwrap_or(Applied::NotHeld)
    }

    /// The version of the node's copy of `key` (0: none).
    pub fn local_version(&self, key: &str) -> u64 {
        self.with_existing(key, |_, st| st.version).unwrap_or(0)
    }

    /// Applies what the engine said brings the copy of `key` up to date.
    /// False if it did not fit the copy (it moved meanwhile): ask again.
    pub fn apply_catch_up(&self, key: &str, catch_up: CatchUp) -> bool {
        match catch_up {
            CatchUp::Current => true,
            CatchUp::Changes(changes) => changes
                .into_iter()
                .all(|change| self.apply_change(key, change, true) != Applied::Gap),
            CatchUp::Image(image) => {
                let _ = self.with_slot(key, |slot, st| {
                    if st.version < image.version {
                        self.reset(slot, st, image);
                    }
                });
                true
            }
        }
    }

    /// Brings the copy of `key` up to the engine's version (blocking).
    pub(super) fn catch_up(&self, remote: &dyn Remote, key: &str) -> Result<(), Rejection> {
        for _ in 0..4 {
            let since = self.local_version(key);
            if self.apply_catch_up(key, remote.catch_up(key, since)?) {
                return Ok(());
            }
        }
        // Still moving: the fanout brings the rest.
        Ok(())
    }

    /// Replaces the copy by the engine's image: one DELTA from the old
    /// value to the new at the image's version; history restarts there.
    fn reset(&self, slot: &KeySlot, st: &mut KeyState, image: Image) {
        let ops = match (st.initialized, image.initialized) {
            (true, true) => diff(&st.value, &image.value),
            (false, true) => vec![DeltaOp::add("/", image.value.clone())],
            (true, false) => vec![DeltaOp::remove("/")],
            (false, false) => Vec::new(),
        };
        let expires = (image.expires_at != st.expires_at).then(|| image.expires_at.unwrap_or(0));
        st.history.restart(&self.history, st.version);
        let size = encoded_len(&image.value);
        self.install(
            slot,
            st,
            image.value,
            size,
            image.initialized,
            ops,
            image.version,
            expires,
        );
    }

    /// WATCH in cluster mode: subscribe at the engine, catch the copy up,
    /// then STATE_INIT from the copy (changes after it arrive by fanout).
    pub(super) fn watch_remote(
        &self,
        remote: &dyn Remote,
        key: &str,
        outbox: &Arc<Outbox>,
        seq: u64,
        params: Option<&Value>,
    ) -> Result<(), Rejection> {
        let counted = self.watch_engine(remote, key, outbox)?;
        let result = self.with_slot(key, |slot, st| {
            self.subscribe(slot, st, outbox, seq, params)
        });
        if result.is_err() && counted {
            remote.unwatch(key);
        }
        result
    }

    /// Subscribes at the engine (unless this session already watches the
    /// key) and catches the copy up. Returns whether it subscribed.
    fn watch_engine(
        &self,
        remote: &dyn Remote,
        key: &str,
        outbox: &Arc<Outbox>,
    ) -> Result<bool, Rejection> {
        let already = self
            .with_existing(key, |_, st| st.subscribers.contains_key(&outbox.id()))
            .unwrap_or(false);
        if !already {
            remote.watch(key)?;
        }
        if let Err(e) = self.catch_up(remote, key) {
            if !already {
                remote.unwatch(key);
            }
            return Err(e);
        }
        Ok(!already)
    }

    /// A pattern WATCH/RESUME in cluster mode: subscribe to the channels
    /// below `prefix` (unless this session already is), then catch up every
    /// key below it that Redis or this node holds, so the snapshot the
    /// pattern starts from is current. Returns whether it subscribed.
    pub(super) fn watch_prefix_remote(
        &self,
        remote: &dyn Remote,
        prefix: &str,
        session: SessionId,
    ) -> Result<bool, Rejection> {
        let already = self.pattern_has(prefix, session);
        if !already {
            remote.watch_prefix(prefix)?;
        }
        let caught_up = self.remote_keys_below(remote, prefix).and_then(|mut keys| {
            keys.extend(self.keys_held_under(prefix));
            keys.sort_unstable();
            keys.dedup();
            keys.iter().try_for_each(|key| self.catch_up(remote, key))
        });
        if let Err(e) = caught_up {
            if !already {
                remote.unwatch_prefix(prefix);
            }
            return Err(e);
        }
        Ok(!already)
    }

    /// Every key holding a value in Redis below `prefix`, in pages.
    fn remote_keys_below(
        &self,
        remote: &dyn Remote,
        prefix: &str,
    ) -> Result<Vec<String>, Rejection> {
        const PAGE: usize = 512;
        let start = format!("{prefix}.");
        let mut from = match prefix {
            "" => None,
            _ => Some(start.clone()),
        };
        let mut keys = Vec::new();
        let mut inclusive = true;
        loop {
            let bound = match (&from, inclusive) {
                (None, _) => std::ops::Bound::Unbounded,
                (Some(k), true) => std::ops::Bound::Included(k.as_str()),
                (Some(k), false) => std::ops::Bound::Excluded(k.as_str()),
            };
            let page = remote.key_range(bound, PAGE)?;
            let full = page.len() == PAGE;
            let mut last = None;
            for key in page {
                if !super::patterns::below(&key, prefix) {
                    return Ok(keys);
                }
                last = Some(key.clone());
                keys.push(key);
            }
            match (full, last) {
                (true, Some(last)) => {
                    from = Some(last);
                    inclusive = false;
                }
                _ => return Ok(keys),
            }
        }
    }

    /// The keys this node holds a copy of below `prefix` (`""`: all).
    pub fn keys_held_under(&self, prefix: &str) -> Vec<String> {
        super::lock(&self.order)
            .iter()
            .filter(|k| super::patterns::below(k, prefix))
            .map(|k| k.to_string())
            .collect()
    }

    /// `state.keys` in cluster mode: paged from Redis's index of keys with
    /// a value (what this node holds may be a subset).
    pub(super) fn keys_remote(
        &self,
        remote: &dyn Remote,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        mut visible: impl FnMut(&str) -> bool,
    ) -> Result<super::KeysPage, Rejection> {
        const PAGE: usize = 256;
        let mut page = super::KeysPage {
            keys: Vec::new(),
            next: None,
            ticket: 0,
        };
        let mut cursor = match after {
            Some(after) if after >= prefix => (after.to_owned(), false),
            _ => (prefix.to_owned(), true),
        };
        loop {
            let bound = match cursor.1 {
                true => std::ops::Bound::Included(cursor.0.as_str()),
                false => std::ops::Bound::Excluded(cursor.0.as_str()),
            };
            let batch = remote.key_range(bound, PAGE)?;
            let full = batch.len() == PAGE;
            for key in batch {
                if !key.starts_with(prefix) {
                    return Ok(page);
                }
                cursor = (key.clone(), false);
                if !super::read::under(&key, prefix) {
                    continue;
                }
                if page.keys.len() == limit {
                    page.next = page.keys.last().cloned();
                    return Ok(page);
                }
                if visible(&key) {
                    page.keys.push(key);
                }
            }
            if !full {
                return Ok(page);
            }
        }
    }

    /// `state.history` in cluster mode: from Redis's history of the key,
    /// written by any node.
    pub(super) fn history_remote(
        &self,
        remote: &dyn Remote,
        key: &str,
        since: u64,
        limit: usize,
    ) -> Result<super::HistoryPage, Rejection> {
        let (changes, complete) = match remote.catch_up(key, since)? {
            CatchUp::Current => (Vec::new(), true),
            CatchUp::Changes(changes) => (changes, true),
            CatchUp::Image(image) => (image.later, false),
        };
        let entries = changes
            .into_iter()
            .take(limit)
            .map(|c| {
                let ops = c.ops.iter().map(DeltaOp::to_value).collect();
                (c.version, Value::Array(Arc::new(ops)))
            })
            .collect();
        Ok(super::HistoryPage {
            entries,
            complete,
            ticket: 0,
        })
    }

    /// RESUME in cluster mode: replay from the node's history if it holds
    /// every change after `since`, else from the engine's (written by any
    /// node), then STATE_INIT.
    pub(super) fn resume_remote(
        &self,
        remote: &dyn Remote,
        key: &str,
        since: u64,
        outbox: &Arc<Outbox>,
        seq: u64,
        params: Option<&Value>,
    ) -> Result<Option<usize>, Rejection> {
        let counted = self.watch_engine(remote, key, outbox)?;
        let local = self
            .with_existing(key, |_, st| st.history.replay_since(since).is_some())
            .unwrap_or(false);
        let fetched = match local {
            true => None,
            false => match remote.catch_up(key, since) {
                Ok(CatchUp::Changes(changes)) => Some(changes),
                Ok(CatchUp::Current) => Some(Vec::new()),
                _ => None,
            },
        };
        let result = self.with_slot(key, |slot, st| {
            let replayed = if let Some(frames) = st.history.replay_since(since) {
                let frames: Vec<_> = frames.cloned().collect();
                let n = frames.len();
                outbox.push_all(&frames);
                Some(n)
            } else {
                fetched.and_then(|changes| {
                    let upto: Vec<&Change> =
                        changes.iter().filter(|c| c.version <= st.version).collect();
                    let reaches = upto
                        .last()
                        .map_or(since == st.version, |c| c.version == st.version);
                    reaches.then(|| {
                        let frames: Vec<_> = upto
                            .iter()
                            .map(|c| {
                                wire::delta_expiring(
                                    slot.stream_id,
                                    &slot.key,
                                    c.version,
                                    &c.ops,
                                    c.expires,
                                )
                            })
                            .collect();
                        outbox.push_all(&frames);
                        frames.len()
                    })
                })
            };
            self.subscribe(slot, st, outbox, seq, params);
            replayed
        });
        if result.is_err() && counted {
            remote.unwatch(key);
        }
        result
    }

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
        let outcome = remote.commit(&[Proposal {
            key,
            base: draft.base,
            initialized: true,
            value: &draft.value,
            ops: &draft.ops,
            expires: None,
            binding,
            expiring_at: None,
        }])?;
        match outcome {
            Outcome::Committed(version) => {
                self.apply_own(key, version, draft);
                Ok(())
            }
            Outcome::NotOwner => Ok(()),
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
            let outcome = remote.commit(&[Proposal {
                key,
                base: draft.base,
                initialized: false,
                value: &draft.value,
                ops: &draft.ops,
                expires: Some(0),
                binding: Binding::None,
                expiring_at: Some(at),
            }]);
            match outcome {
                Ok(Outcome::Committed(version)) => return self.apply_own(key, version, draft),
                Ok(Outcome::Stale | Outcome::NotOwner) => {
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
