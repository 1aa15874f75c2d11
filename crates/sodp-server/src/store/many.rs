//! [`Store::write_many`]: several writes on several keys as one mutation
//! (extension `transaction`) — all or nothing, one version.
//!
//! # Locking
//! Every touched key's slot is locked, in byte order of the key, before
//! anything is looked at; a single-key write locks one slot, so no mix of
//! transactions and writes can wait in a cycle. The slots are found (or
//! created) before any is locked, because the table lock comes before slot
//! locks; a slot retired in between makes the whole attempt start over.
//!
//! # Doing it without undo
//! The ops run on drafts: each key's value is cloned (O(1): values share
//! their containers) and edited in place as a single write would, admitting
//! each op's exact size against the draft. Conditions are compared with the
//! state before the transaction, the schema checks each final value. Only
//! when everything has passed are the drafts moved into the keys and
//! committed through [`Store::commit_at`], all with one version; a refusal
//! drops the drafts and gives their memory back, so nothing changed.
//!
//! # Delivery
//! Each changed key gets one DELTA (its ops in op order), and each session
//! gets the DELTAs of all the keys it watches in one push, back to back —
//! after the last of the transaction's storage records is durable.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

use bytes::Bytes;
use sodp_proto::DeltaOp;

use super::{condition_holds, lock, Doc, Edit, EditKind, KeySlot, KeyState, Stamp, Store, Written};
use crate::error::Rejection;
use crate::idempotency::Tag;
use crate::outbox::{Outbox, SessionId};
use crate::storage::{Change, Delivery};

/// A write's change, to run under its key's lock.
pub type EditFn<'a> = Box<dyn FnOnce(&mut Doc<'_>) -> Result<Edit, Rejection> + 'a>;

/// One write of a transaction: its key, its condition, and the change to
/// make under the key lock (what a method's `Store::write` closure does).
pub struct TxOp<'a> {
    pub key: String,
    pub if_version: Option<u64>,
    pub edit: EditFn<'a>,
}

/// The DELTAs of a transaction, gathered per subscriber in key order.
#[derive(Default)]
pub(super) struct Gathered {
    index: HashMap<SessionId, usize>,
    batch: Vec<(Arc<Outbox>, Vec<Bytes>)>,
}

impl Gathered {
    pub(super) fn add<'o>(&mut self, to: impl Iterator<Item = &'o Arc<Outbox>>, frame: &Bytes) {
        for outbox in to {
            let i = *self.index.entry(outbox.id()).or_insert_with(|| {
                self.batch.push((outbox.clone(), Vec::new()));
                self.batch.len() - 1
            });
            self.batch[i].1.push(frame.clone());
        }
    }
}

/// A key's state as the transaction's ops leave it, not yet committed.
pub(super) struct Draft {
    pub(super) st: KeyState,
    pub(super) ops: Vec<DeltaOp>,
    /// Memory reserved by this key's ops.
    pub(super) reserved: usize,
}

/// A key's version and deadline before a transaction.
pub(super) type Base = (u64, Option<u64>);

/// What a transaction's ops do, before anything is committed.
pub(super) enum TxDrafted {
    /// No key changes: the answer.
    Unchanged(Written),
    /// One draft per key (in key order), and which keys change.
    Changed(Vec<Draft>, Vec<bool>),
}

/// `ops[i]: …` — which op of the transaction a refusal came from.
fn at_op(mut refusal: Rejection, i: usize) -> Rejection {
    refusal.message = format!("ops[{i}]: {}", refusal.message);
    refusal.at_op(i)
}

impl Store {
    /// Applies `ops` in order as one mutation. Returns the one version of
    /// the change (no key changed: the newest version among the keys, and
    /// no version is taken), or the first refusal — a failed condition
    /// (409 with that key's version and the op's index), an op's own
    /// refusal, a schema violation — in which case nothing changed.
    pub fn write_many(&self, ops: Vec<TxOp<'_>>) -> Result<Written, Rejection> {
        self.write_many_tagged(ops, None)
    }

    /// [`Store::write_many`] of an idempotent call: `tag` goes into the same
    /// storage record as the changes.
    pub fn write_many_tagged(
        &self,
        ops: Vec<TxOp<'_>>,
        tag: Option<&Tag>,
    ) -> Result<Written, Rejection> {
        let mut keys: Vec<String> = ops.iter().map(|op| op.key.clone()).collect();
        keys.sort_unstable();
        keys.dedup();
        let result = match self.remote() {
            Some(remote) => self.write_many_remote(remote, &keys, ops, tag),
            None => self
                .storage
                .check_writable()
                .and_then(|()| self.write_sorted(&keys, ops, tag)),
        };
        for key in &keys {
            // Slots created for a refused transaction are given back.
            self.retire_if_unused(key);
        }
        result
    }

    fn write_sorted(
        &self,
        keys: &[String],
        ops: Vec<TxOp<'_>>,
        tag: Option<&Tag>,
    ) -> Result<Written, Rejection> {
        self.with_locked(keys, |slots, guards| {
            self.write_locked(keys, slots, guards, ops, tag)
        })?
    }

    /// Locks every key's slot in the order of `keys` (sorted: no deadlock
    /// between transactions) and runs `f` with them locked.
    fn with_locked<R>(
        &self,
        keys: &[String],
        f: impl FnOnce(&[Arc<KeySlot>], &mut [MutexGuard<'_, KeyState>]) -> R,
    ) -> Result<R, Rejection> {
        loop {
            let slots = keys
                .iter()
                .map(|key| self.slot(key))
                .collect::<Result<Vec<_>, _>>()?;
            let mut guards: Vec<MutexGuard<'_, KeyState>> =
                slots.iter().map(|slot| lock(&slot.state)).collect();
            if guards.iter().any(|st| st.retired) {
                continue; // Retired before we locked it: find the slots again.
            }
            return Ok(f(&slots, &mut guards));
        }
    }

    /// Locks every key (in order) and drafts the transaction on copies.
    /// Returns the drafts (or the refusal) and each key's version and
    /// deadline before them.
    pub(super) fn draft_sorted(
        &self,
        keys: &[String],
        ops: Vec<TxOp<'_>>,
    ) -> Result<(Result<TxDrafted, Rejection>, Vec<Base>), Rejection> {
        self.with_locked(keys, |slots, guards| {
            let bases = guards
                .iter()
                .map(|st| (st.version, st.expires_at))
                .collect();
            (self.draft_all(keys, slots, guards, ops), bases)
        })
    }

    fn write_locked(
        &self,
        keys: &[String],
        slots: &[Arc<KeySlot>],
        guards: &mut [MutexGuard<'_, KeyState>],
        ops: Vec<TxOp<'_>>,
        tag: Option<&Tag>,
    ) -> Result<Written, Rejection> {
        match self.draft_all(keys, slots, guards, ops)? {
            TxDrafted::Unchanged(mut written) => {
                // Nothing changed, but an idempotent call is remembered
                // durably all the same (its RESULT waits for the record).
                if let Some(tag) = tag {
                    let ticket = self.storage.append_commit(written.version, &[], Some(tag));
                    written.ticket = written.ticket.max(ticket);
                }
                Ok(written)
            }
            TxDrafted::Changed(drafts, changed) => {
                Ok(self.commit_drafts(slots, guards, drafts, &changed, tag))
            }
        }
    }

    /// Runs the ops on drafts of the locked keys: conditions, each op's
    /// own checks, the schema on final values. Nothing changes.
    fn draft_all(
        &self,
        keys: &[String],
        slots: &[Arc<KeySlot>],
        guards: &mut [MutexGuard<'_, KeyState>],
        ops: Vec<TxOp<'_>>,
    ) -> Result<TxDrafted, Rejection> {
        let position = |key: &str| {
            keys.binary_search_by(|k| k.as_str().cmp(key))
                .expect("every op's key is in the sorted list")
        };
        // Every condition, against the state before the transaction.
        for (i, op) in ops.iter().enumerate() {
            let st = &guards[position(&op.key)];
            if let Some(wanted) = op.if_version {
                if !condition_holds(st.version, st.initialized, wanted) {
                    let refusal = Rejection::conflict(
                        format!(
                            "{}: version is {}, not {wanted} as required by `if_version`",
                            op.key, st.version
                        ),
                        st.version,
                    );
                    return Err(at_op(refusal, i));
                }
            }
        }
        let mut drafts: Vec<Draft> = guards
            .iter()
            .map(|st| Draft {
                st: KeyState {
                    value: st.value.clone(),
                    size: st.size,
                    version: st.version,
                    initialized: st.initialized,
                    expires_at: st.expires_at,
                    ..KeyState::new()
                },
                ops: Vec::new(),
                reserved: 0,
            })
            .collect();
        let give_back = |drafts: &[Draft]| {
            for draft in drafts {
                self.memory.release(draft.reserved);
            }
        };
        for (i, op) in ops.into_iter().enumerate() {
            let p = position(&op.key);
            let draft = &mut drafts[p];
            let mut doc = Doc {
                key: &slots[p].key,
                st: &mut draft.st,
                store: self,
                admitted: None,
            };
            let edit = match (op.edit)(&mut doc) {
                Ok(edit) => edit,
                Err(refusal) => {
                    doc.cancel();
                    give_back(&drafts);
                    return Err(at_op(refusal, i));
                }
            };
            let (size_after, growth) = doc.admitted.take().unwrap_or((draft.st.size, 0));
            debug_assert!(edit.presence.is_none(), "presence is not a transaction op");
            // As `Store::finish` does for one write, on the draft.
            let unchanged = match edit.kind {
                EditKind::Change => draft.st.initialized && edit.ops.is_empty(),
                EditKind::Delete => !draft.st.initialized,
            };
            let deadline = match edit.kind {
                EditKind::Delete if !draft.st.initialized => None,
                _ => edit.new_deadline(draft.st.expires_at),
            };
            if let Some(new) = deadline {
                draft.st.expires_at = new;
            }
            if unchanged {
                self.memory.release(growth);
                continue;
            }
            draft.reserved += growth;
            draft.st.size = size_after;
            match edit.kind {
                EditKind::Change if draft.st.initialized => draft.ops.extend(edit.ops),
                EditKind::Change => {
                    draft.st.initialized = true;
                    draft.ops.push(DeltaOp::add("/", draft.st.value.clone()));
                }
                EditKind::Delete => {
                    draft.ops.extend(edit.ops);
                    draft.st.initialized = false;
                }
            }
        }
        // Which keys end up different, and the schema on their final values.
        let mut changed = vec![false; drafts.len()];
        for (p, draft) in drafts.iter().enumerate() {
            let before = &guards[p];
            let same = draft.st.initialized == before.initialized
                && (!draft.st.initialized || draft.st.value == before.value);
            let same_deadline = draft.st.expires_at == before.expires_at;
            if (draft.ops.is_empty() || same) && same_deadline {
                continue;
            }
            if let (Some(validator), true) = (&self.validator, draft.st.initialized) {
                if let Err(refusal) = validator.validate(&slots[p].key, &draft.st.value) {
                    give_back(&drafts);
                    return Err(refusal);
                }
            }
            changed[p] = true;
        }
        if !changed.contains(&true) {
            give_back(&drafts);
            return Ok(TxDrafted::Unchanged(Written {
                version: guards.iter().map(|st| st.version).max().unwrap_or(0),
                ticket: guards.iter().map(|st| st.last_ticket).max().unwrap_or(0),
                changed: false,
            }));
        }
        Ok(TxDrafted::Changed(drafts, changed))
    }

    /// Commits the drafts of the changed keys with one version.
    fn commit_drafts(
        &self,
        slots: &[Arc<KeySlot>],
        guards: &mut [MutexGuard<'_, KeyState>],
        mut drafts: Vec<Draft>,
        changed: &[bool],
        tag: Option<&Tag>,
    ) -> Written {
        // Commit: one version for every changed key (with the pattern lock
        // held if a pattern matches one of them).
        let mut publishing = self.patterns.matching(
            slots
                .iter()
                .zip(changed)
                .filter(|(_, changed)| **changed)
                .map(|(slot, _)| &*slot.key),
        );
        let version = self
            .version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        // The keys' new states, then one storage record for all of them.
        let mut committing = Vec::new();
        for (p, draft) in drafts.iter_mut().enumerate() {
            if !changed[p] {
                self.memory.release(draft.reserved);
                continue;
            }
            let st = &mut *guards[p];
            // The ops reserved their growth one by one; keep exactly the
            // net change of the key's size.
            self.memory
                .release((draft.reserved + st.size).saturating_sub(draft.st.size));
            st.value = std::mem::take(&mut draft.st.value);
            st.size = draft.st.size;
            st.initialized = draft.st.initialized;
            let expires = (st.expires_at != draft.st.expires_at).then(|| {
                self.timers
                    .moved(&slots[p].key, st.expires_at, draft.st.expires_at);
                st.expires_at = draft.st.expires_at;
                draft.st.expires_at.unwrap_or(0)
            });
            committing.push((p, std::mem::take(&mut draft.ops), expires));
        }
        let changes: Vec<Change<'_>> = committing
            .iter()
            .map(|(p, ops, expires)| Change {
                key: &slots[*p].key,
                ops,
                expires: *expires,
            })
            .collect();
        let ticket = self.storage.append_commit(version, &changes, tag);
        drop(changes);
        let mut gathered = Gathered::default();
        for (p, ops, expires) in committing {
            let st = &mut *guards[p];
            let pattern_ops = publishing.as_ref().map(|_| ops.clone());
            let stamp = Stamp {
                version,
                expires,
                ticket,
            };
            self.commit_at(&slots[p], st, ops, stamp, Some(&mut gathered));
            if let (Some(publishing), Some(ops)) = (&mut publishing, pattern_ops) {
                let n =
                    publishing.publish(&self.storage, &slots[p].key, version, &ops, st.last_ticket);
                self.metrics.deliveries.inc_by(n as u64);
            }
        }
        let batch = gathered.batch;
        if self.storage.is_visible(ticket) {
            let evicted: Vec<SessionId> = batch
                .iter()
                .filter(|(outbox, frames)| !outbox.push_all(frames))
                .map(|(outbox, _)| outbox.id())
                .collect();
            if !evicted.is_empty() {
                for st in guards.iter_mut() {
                    st.subscribers.retain(|id, _| !evicted.contains(id));
                }
            }
        } else if !batch.is_empty() {
            self.storage.deliver(ticket, Delivery::Batch(batch));
        }
        Written {
            version,
            ticket,
            changed: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use sodp_proto::merge::Undo;
    use sodp_proto::{diff, Value};

    use super::*;
    use crate::size;
    use crate::store::StoreOptions;

    fn store() -> Store {
        Store::in_memory(StoreOptions {
            version_base: 0,
            history_len: 10,
            history_bytes: 1 << 20,
            max_keys: None,
            max_value_bytes: None,
            max_memory: 1 << 30,
            max_depth: 8,
            validator: None,
            storage: Arc::new(crate::storage::Memory),
            metrics: Arc::default(),
            idempotency_window: std::time::Duration::from_secs(600),
            idempotency_max_keys: 10_000,
        })
    }

    /// Adds 1 to the integer the key holds (nil counts as 0).
    fn increment(key: &str) -> TxOp<'static> {
        TxOp {
            key: key.to_owned(),
            if_version: None,
            edit: Box::new(|doc| {
                let next = Value::Int(doc.value().as_i64().unwrap_or(0) + 1);
                doc.admit(size::after_set(&next))?;
                let ops = diff(doc.value(), &next);
                let previous = std::mem::replace(doc.value_mut(), next);
                Ok(Edit::change(ops, Undo::Root(previous)))
            }),
        }
    }

    /// Concurrent transactions over overlapping keys, each listing its keys
    /// in its own order: none deadlocks (a watchdog fails the test) and
    /// every increment lands exactly once, each transaction with one
    /// version shared by all its keys.
    #[test]
    fn overlapping_transactions_neither_deadlock_nor_lose_updates() {
        const THREADS: usize = 8;
        const ROUNDS: usize = 400;
        const KEYS: usize = 6;
        let store = Arc::new(store());
        let (done, finished) = mpsc::channel();
        for t in 0..THREADS {
            let store = store.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut touched = [0u64; KEYS];
                let mut seed = t as u64 * 7919 + 1;
                for _ in 0..ROUNDS {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    // 2 to 4 distinct keys, in an order that varies.
                    let n = 2 + (seed >> 33) as usize % 3;
                    let start = (seed >> 40) as usize % KEYS;
                    let step = if seed & 1 == 0 { 1 } else { KEYS - 1 };
                    let keys: Vec<usize> = (0..n).map(|j| (start + j * step) % KEYS).collect();
                    let ops = keys.iter().map(|k| increment(&format!("c.{k}"))).collect();
                    let written = store.write_many(ops).expect("no refusal");
                    for k in &keys {
                        touched[*k] += 1;
                        // Every key of the transaction carries its version
                        // (or a later one, from a later transaction).
                        assert!(store.snapshot(&format!("c.{k}")).version >= written.version);
                    }
                }
                done.send(touched).unwrap();
            });
        }
        drop(done);
        let mut expected = [0u64; KEYS];
        for _ in 0..THREADS {
            let touched = finished
                .recv_timeout(Duration::from_secs(30))
                .expect("a transaction thread is stuck: deadlock");
            for k in 0..KEYS {
                expected[k] += touched[k];
            }
        }
        for (k, n) in expected.iter().enumerate() {
            let snap = store.snapshot(&format!("c.{k}"));
            assert_eq!(snap.value, Value::Int(*n as i64), "c.{k}");
        }
        // One version per transaction: THREADS × ROUNDS versions in all.
        assert_eq!(store.version(), (THREADS * ROUNDS) as u64);
    }

    #[test]
    fn a_refused_transaction_leaves_no_slot_and_no_memory() {
        let s = store();
        let before = s.memory().counted;
        let refuse = TxOp {
            key: "b".into(),
            if_version: None,
            edit: Box::new(|_| Err(Rejection::bad_request("no"))),
        };
        let e = s.write_many(vec![increment("a"), refuse]).unwrap_err();
        assert_eq!(e.op, Some(1));
        assert_eq!(e.message, "ops[1]: no");
        assert_eq!(s.key_count(), 0);
        assert_eq!(s.memory().counted, before);
        assert_eq!(s.version(), 0);
    }
}
