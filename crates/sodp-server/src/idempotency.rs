//! Extension `idempotency`: the remembered outcomes of successful writes
//! that carried an `idempotency_key`, per identity, so a client that resends
//! a write after losing its RESULT gets the original outcome instead of a
//! second change.
//!
//! Each identity (JWT `sub`; sessions without one share the anonymous
//! identity) has its own table behind its own lock. A session holds that
//! lock while it looks the key up *and* runs the write, so a duplicate sent
//! at the same moment by another session of the identity waits and then
//! finds the record. Records are dropped oldest first past
//! `idempotency_max_keys` per identity and once older than
//! `idempotency_window`; tables left empty are dropped by a periodic sweep.
//!
//! A record keeps a fingerprint of method + args (two SipHash-1-3 digests
//! with fixed keys over the arguments encoded in name order), the version
//! and the storage ticket: a replay is delivered once that ticket is durable,
//! like the original RESULT.
//!
//! Durable servers keep records across restarts: the write carries a
//! [`Tag`] down to the commit, which logs it *in the same record* as the
//! change (so a crash keeps both or neither), checkpoints hold every live
//! record, and recovery [`Idempotency::restore`]s them with their age.
//!
//! Records count against `--max-memory` ([`record_cost`]): room is reserved
//! before the write runs; a full budget first recycles the identity's own
//! oldest records, then refuses the write (507) with nothing changed.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sodp_proto::call::CallArgs;
use sodp_proto::codec;
use tokio::time::Instant;

use crate::budget::MemoryBudget;
use crate::error::{ErrorCode, Rejection};
use crate::store::Written;

/// The longest `idempotency_key`, in bytes.
pub const MAX_KEY_BYTES: usize = 128;

/// Every this many lookups, every table is swept of expired records.
const SWEEP_EVERY: u64 = 1024;

/// What identifies a CALL's content: method + args.
pub type Fingerprint = (u64, u64);

/// Bytes a record costs against `--max-memory`: the key twice (the map and
/// the age queue) and the entries around it.
pub fn record_cost(key: &str) -> usize {
    2 * key.len() + 160
}

/// What an idempotent write hands to the commit, to be logged with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// The JWT `sub`; `None`: the anonymous identity.
    pub identity: Option<String>,
    /// The CALL's `idempotency_key`.
    pub key: String,
    pub fingerprint: Fingerprint,
    /// When the call was made (Unix ms): the record's age after a restart.
    pub at_ms: u64,
}

/// A remembered call as the log and checkpoints hold it: the tag and the
/// version the call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub tag: Tag,
    pub version: u64,
}

/// A remembered successful write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub fingerprint: Fingerprint,
    pub written: Written,
    at: Instant,
    at_ms: u64,
}

/// One identity's records, in the order they were made.
#[derive(Debug)]
pub struct Table {
    records: HashMap<String, Record>,
    order: VecDeque<(String, Instant)>,
    budget: Arc<MemoryBudget>,
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not remembered: run the call (and [`Table::remember`] its success).
    New,
    /// The same call was made: answer its outcome again.
    Same(Written),
    /// The key was used for another call: 409.
    Reused,
}

/// Every identity's table.
pub struct Idempotency {
    tables: Mutex<HashMap<String, Arc<Mutex<Table>>>>,
    window: Duration,
    max_keys: usize,
    lookups: AtomicU64,
    budget: Arc<MemoryBudget>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// 409: the idempotency key `key` was used for another call.
pub fn reused(key: &str) -> Rejection {
    Rejection::new(
        ErrorCode::Conflict,
        format!("idempotency key reused: {key:?} was used for another call"),
    )
}

/// The fingerprint of `method` with `args` (a repeated argument: the last
/// one counts, as when the args are read).
pub fn fingerprint(method: &str, args: &CallArgs<'_>) -> Fingerprint {
    let mut buf = Vec::new();
    codec::write_str(&mut buf, method);
    match args {
        CallArgs::Absent => buf.push(0xc0),
        CallArgs::NotAMap => buf.push(0xc1),
        CallArgs::Fields(fields) => {
            let mut last: Vec<(&str, &sodp_proto::Value)> = Vec::with_capacity(fields.len());
            for (name, value) in fields {
                match last.iter_mut().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = value,
                    None => last.push((name, value)),
                }
            }
            last.sort_by(|a, b| a.0.cmp(b.0));
            for (name, value) in last {
                codec::write_str(&mut buf, name);
                codec::write_value(&mut buf, value);
            }
        }
    }
    let digest = |salt: u8| {
        let mut h = DefaultHasher::new();
        h.write_u8(salt);
        h.write(&buf);
        h.finish()
    };
    (digest(0), digest(1))
}

impl Table {
    fn new(budget: Arc<MemoryBudget>) -> Table {
        Table {
            records: HashMap::new(),
            order: VecDeque::new(),
            budget,
        }
    }

    fn prune(&mut self, now: Instant, window: Duration, max_keys: usize) {
        while let Some((_, at)) = self.order.front() {
            if self.order.len() <= max_keys && now.saturating_duration_since(*at) < window {
                break;
            }
            self.forget_oldest();
        }
    }

    /// Drops the oldest record and gives its memory back.
    fn forget_oldest(&mut self) -> bool {
        let Some((key, _)) = self.order.pop_front() else {
            return false;
        };
        self.records.remove(&key);
        self.budget.release(record_cost(&key));
        true
    }

    /// Reserves the memory a record for `key` will need, before the write
    /// runs: a full budget recycles this identity's oldest records first,
    /// then refuses (507). Undo with [`Table::unreserve`] if the write fails.
    pub fn reserve(&mut self, key: &str) -> Result<(), Rejection> {
        loop {
            match self.budget.reserve(record_cost(key), 0) {
                Ok(()) => return Ok(()),
                Err(refusal) => {
                    if !self.forget_oldest() {
                        return Err(refusal);
                    }
                }
            }
        }
    }

    /// Gives back what [`Table::reserve`] took, for a call not remembered.
    pub fn unreserve(&mut self, key: &str) {
        self.budget.release(record_cost(key));
    }

    /// Looks `key` up for a call with `fingerprint`.
    pub fn seen(&self, key: &str, fingerprint: Fingerprint) -> Seen {
        match self.records.get(key) {
            None => Seen::New,
            Some(record) if record.fingerprint == fingerprint => Seen::Same(record.written),
            Some(_) => Seen::Reused,
        }
    }

    /// Remembers a successful call (after [`Table::seen`] said `New` and
    /// [`Table::reserve`] made room), forgetting the oldest beyond `max_keys`.
    pub fn remember(&mut self, tag: &Tag, written: Written, max_keys: usize) {
        self.insert(tag, written, Instant::now(), max_keys);
    }

    fn insert(&mut self, tag: &Tag, written: Written, at: Instant, max_keys: usize) {
        while self.order.len() >= max_keys && self.forget_oldest() {}
        let record = Record {
            fingerprint: tag.fingerprint,
            written,
            at,
            at_ms: tag.at_ms,
        };
        if self.records.insert(tag.key.clone(), record).is_some() {
            // Restored twice (checkpoint and log): one entry, one charge.
            self.order.retain(|(k, _)| *k != tag.key);
            self.budget.release(record_cost(&tag.key));
        }
        self.order.push_back((tag.key.clone(), at));
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// A locked table; the lock is held while the call runs.
pub struct Locked {
    table: Arc<Mutex<Table>>,
    window: Duration,
    pub max_keys: usize,
}

/// The name an identity's table is filed under.
fn table_name(identity: Option<&str>) -> &str {
    identity.unwrap_or("")
}

impl Locked {
    /// The identity's table, pruned, locked until the guard is dropped.
    pub fn lock(&self) -> MutexGuard<'_, Table> {
        let mut table = lock(&self.table);
        table.prune(Instant::now(), self.window, self.max_keys);
        table
    }
}

impl Idempotency {
    /// Records count against `budget` (the store's `--max-memory`).
    pub fn new(window: Duration, max_keys: usize, budget: Arc<MemoryBudget>) -> Idempotency {
        Idempotency {
            tables: Mutex::new(HashMap::new()),
            window,
            max_keys: max_keys.max(1),
            lookups: AtomicU64::new(0),
            budget,
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// `identity`'s table (`None`: the anonymous identity).
    pub fn table(&self, identity: Option<&str>) -> Locked {
        if self.lookups.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        Locked {
            table: self.table_of(identity),
            window: self.window,
            max_keys: self.max_keys,
        }
    }

    fn table_of(&self, identity: Option<&str>) -> Arc<Mutex<Table>> {
        lock(&self.tables)
            .entry(table_name(identity).to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(Table::new(self.budget.clone()))))
            .clone()
    }

    /// Puts back a record read from the data directory, `now_ms` being the
    /// present (Unix ms): one older than the window is dropped, the others
    /// keep their age (so they expire when they would have).
    pub fn restore(&self, remembered: Remembered, now_ms: u64) {
        let age = Duration::from_millis(now_ms.saturating_sub(remembered.tag.at_ms));
        if age >= self.window {
            return;
        }
        let now = Instant::now();
        let at = now.checked_sub(age).unwrap_or(now);
        let table = self.table_of(remembered.tag.identity.as_deref());
        let mut table = lock(&table);
        self.budget.force(record_cost(&remembered.tag.key));
        let written = Written {
            version: remembered.version,
            ticket: 0,
            changed: false,
        };
        table.insert(&remembered.tag, written, at, self.max_keys);
    }

    /// Every record still within the window, oldest first per identity (a
    /// checkpoint's copy).
    pub fn images(&self) -> Vec<Remembered> {
        let now = Instant::now();
        let tables: Vec<(String, Arc<Mutex<Table>>)> = lock(&self.tables)
            .iter()
            .map(|(name, table)| (name.clone(), table.clone()))
            .collect();
        let mut out = Vec::new();
        for (name, table) in tables {
            let table = lock(&table);
            let identity = (!name.is_empty()).then_some(name);
            for (key, at) in &table.order {
                if now.saturating_duration_since(*at) >= self.window {
                    continue;
                }
                let Some(record) = table.records.get(key) else {
                    continue;
                };
                out.push(Remembered {
                    tag: Tag {
                        identity: identity.clone(),
                        key: key.clone(),
                        fingerprint: record.fingerprint,
                        at_ms: record.at_ms,
                    },
                    version: record.written.version,
                });
            }
        }
        out
    }

    /// Drops expired records everywhere, and the tables left empty.
    fn sweep(&self) {
        let now = Instant::now();
        lock(&self.tables).retain(|_, table| {
            // A table in use is skipped; its own lookups prune it.
            let Ok(mut table) = table.try_lock() else {
                return true;
            };
            table.prune(now, self.window, self.max_keys);
            !table.is_empty()
        });
    }

    /// Records held across all identities (for tests and inspection).
    pub fn len(&self) -> usize {
        lock(&self.tables).values().map(|t| lock(t).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sodp_proto::Value;

    fn written(version: u64) -> Written {
        Written {
            version,
            ticket: 0,
            changed: true,
        }
    }

    fn tag(key: &str, print: Fingerprint, at_ms: u64) -> Tag {
        Tag {
            identity: Some("alice".into()),
            key: key.into(),
            fingerprint: print,
            at_ms,
        }
    }

    fn budget(max: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget::new(max))
    }

    #[test]
    fn fingerprints_ignore_argument_order_but_not_content() {
        let a = CallArgs::Fields(vec![("state", Value::from("k")), ("value", Value::Int(1))]);
        let b = CallArgs::Fields(vec![("value", Value::Int(1)), ("state", Value::from("k"))]);
        let c = CallArgs::Fields(vec![("value", Value::Int(2)), ("state", Value::from("k"))]);
        assert_eq!(fingerprint("state.set", &a), fingerprint("state.set", &b));
        assert_ne!(fingerprint("state.set", &a), fingerprint("state.set", &c));
        assert_ne!(fingerprint("state.set", &a), fingerprint("state.patch", &a));
    }

    #[tokio::test(start_paused = true)]
    async fn records_are_bounded_in_count_and_time() {
        let memory = budget(1 << 20);
        let idem = Idempotency::new(Duration::from_secs(60), 3, memory.clone());
        let t = idem.table(Some("alice"));
        for i in 0..5u64 {
            let mut table = t.lock();
            assert_eq!(table.seen(&format!("k{i}"), (i, i)), Seen::New);
            table.reserve(&format!("k{i}")).unwrap();
            table.remember(&tag(&format!("k{i}"), (i, i), 0), written(i), t.max_keys);
        }
        assert_eq!(
            memory.used(),
            3 * record_cost("k0"),
            "three records counted"
        );
        {
            let table = t.lock();
            // At most 3 kept, the oldest forgotten first.
            assert_eq!(table.len(), 3);
            assert_eq!(table.seen("k1", (1, 1)), Seen::New);
            assert_eq!(table.seen("k2", (2, 2)), Seen::Same(written(2)));
            assert_eq!(table.seen("k4", (4, 4)), Seen::Same(written(4)));
            assert_eq!(table.seen("k4", (9, 9)), Seen::Reused);
        }
        assert_eq!(
            idem.table(Some("bob")).lock().seen("k4", (4, 4)),
            Seen::New,
            "per identity"
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(t.lock().is_empty(), "expired");
        assert_eq!(memory.used(), 0, "expired records give their memory back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_budget_recycles_the_identitys_own_records_then_refuses() {
        let memory = budget(2 * record_cost("k0"));
        let idem = Idempotency::new(Duration::from_secs(60), 100, memory.clone());
        let alice = idem.table(Some("alice"));
        for i in 0..5u64 {
            let mut table = alice.lock();
            table.reserve(&format!("k{i}")).unwrap();
            table.remember(&tag(&format!("k{i}"), (i, i), 0), written(i), 100);
        }
        assert_eq!(alice.lock().len(), 2, "the oldest made room for the newest");
        assert_eq!(memory.used(), memory.max());
        let bob = idem.table(Some("bob"));
        let refused = bob.lock().reserve("b0").unwrap_err();
        assert_eq!(refused.code, crate::error::ErrorCode::InsufficientStorage);
        assert_eq!(memory.used(), memory.max(), "a refusal takes nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn restored_records_keep_their_age_and_images_round_trip() {
        let memory = budget(1 << 20);
        let idem = Idempotency::new(Duration::from_secs(60), 100, memory.clone());
        let now_ms = 1_000_000;
        // 50 s old: 10 s left; 61 s old: already past the window.
        idem.restore(
            Remembered {
                tag: tag("young", (1, 1), now_ms - 50_000),
                version: 7,
            },
            now_ms,
        );
        idem.restore(
            Remembered {
                tag: tag("old", (2, 2), now_ms - 61_000),
                version: 8,
            },
            now_ms,
        );
        // The same record from checkpoint and log: kept once, charged once.
        idem.restore(
            Remembered {
                tag: tag("young", (1, 1), now_ms - 50_000),
                version: 7,
            },
            now_ms,
        );
        assert_eq!(idem.len(), 1);
        assert_eq!(memory.used(), record_cost("young"));
        assert_eq!(
            idem.table(Some("alice")).lock().seen("young", (1, 1)),
            Seen::Same(Written {
                changed: false,
                ..written(7)
            })
        );
        let images = idem.images();
        assert_eq!(
            images,
            vec![Remembered {
                tag: tag("young", (1, 1), now_ms - 50_000),
                version: 7
            }]
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(idem.images().is_empty(), "expires when it would have");
    }
}
