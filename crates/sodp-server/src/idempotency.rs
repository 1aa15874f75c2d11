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
//! like the original RESULT. Records live in memory only (not yet in the
//! durable log): a restart forgets them.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sodp_proto::call::CallArgs;
use sodp_proto::codec;
use tokio::time::Instant;

use crate::store::Written;

/// The longest `idempotency_key`, in bytes.
pub const MAX_KEY_BYTES: usize = 128;

/// Every this many lookups, every table is swept of expired records.
const SWEEP_EVERY: u64 = 1024;

/// What identifies a CALL's content: method + args.
pub type Fingerprint = (u64, u64);

/// A remembered successful write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub fingerprint: Fingerprint,
    pub written: Written,
    at: Instant,
}

/// One identity's records, in the order they were made.
#[derive(Debug, Default)]
pub struct Table {
    records: HashMap<String, Record>,
    order: VecDeque<(String, Instant)>,
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
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
    fn prune(&mut self, now: Instant, window: Duration, max_keys: usize) {
        while let Some((key, at)) = self.order.front() {
            if self.order.len() <= max_keys && now.saturating_duration_since(*at) < window {
                break;
            }
            self.records.remove(key);
            self.order.pop_front();
        }
    }

    /// Looks `key` up for a call with `fingerprint`.
    pub fn seen(&self, key: &str, fingerprint: Fingerprint) -> Seen {
        match self.records.get(key) {
            None => Seen::New,
            Some(record) if record.fingerprint == fingerprint => Seen::Same(record.written),
            Some(_) => Seen::Reused,
        }
    }

    /// Remembers a successful call (after [`Table::seen`] said `New`),
    /// forgetting the oldest beyond `max_keys`.
    pub fn remember(
        &mut self,
        key: String,
        fingerprint: Fingerprint,
        written: Written,
        max_keys: usize,
    ) {
        let at = Instant::now();
        while self.order.len() >= max_keys {
            match self.order.pop_front() {
                Some((old, _)) => self.records.remove(&old),
                None => break,
            };
        }
        self.order.push_back((key.clone(), at));
        self.records.insert(
            key,
            Record {
                fingerprint,
                written,
                at,
            },
        );
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

impl Locked {
    /// The identity's table, pruned, locked until the guard is dropped.
    pub fn lock(&self) -> MutexGuard<'_, Table> {
        let mut table = lock(&self.table);
        table.prune(Instant::now(), self.window, self.max_keys);
        table
    }
}

impl Idempotency {
    pub fn new(window: Duration, max_keys: usize) -> Idempotency {
        Idempotency {
            tables: Mutex::new(HashMap::new()),
            window,
            max_keys: max_keys.max(1),
            lookups: AtomicU64::new(0),
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
        let name = identity.unwrap_or("");
        let table = lock(&self.tables)
            .entry(name.to_owned())
            .or_default()
            .clone();
        Locked {
            table,
            window: self.window,
            max_keys: self.max_keys,
        }
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
        let idem = Idempotency::new(Duration::from_secs(60), 3);
        let t = idem.table(Some("alice"));
        for i in 0..5u64 {
            let mut table = t.lock();
            assert_eq!(table.seen(&format!("k{i}"), (i, i)), Seen::New);
            table.remember(format!("k{i}"), (i, i), written(i), t.max_keys);
        }
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
    }
}
