//! Who made each recent change: a bounded ring of (version → session,
//! subject, method, time), kept only while the inspector is enabled, read
//! by `admin.writers` (and `admin.keys` for the last write time).
//!
//! A change is recorded by the session that made it, right after its
//! write returns, with one lock of the ring; a server without `--inspector`
//! has no ring and pays nothing. Changes no session made (a TTL expiry, the
//! presence release of a session that ended) are not recorded, and the ring
//! forgets the oldest changes once full: an unknown writer is answered as
//! unknown, never guessed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use crate::outbox::SessionId;

/// Changes remembered (a few hundred kB at most).
pub const CAPACITY: usize = 4096;

/// One change and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    pub version: u64,
    pub session: SessionId,
    pub subject: Option<Arc<str>>,
    pub method: &'static str,
    /// Unix ms.
    pub at_ms: u64,
}

/// The ring (see the module doc).
pub struct Writers {
    capacity: usize,
    ring: Mutex<VecDeque<WriteRecord>>,
}

impl Writers {
    pub fn new(capacity: usize) -> Writers {
        Writers {
            capacity: capacity.max(1),
            ring: Mutex::new(VecDeque::new()),
        }
    }

    /// Remembers a change, dropping the oldest when full.
    pub fn record(&self, record: WriteRecord) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    /// The records of those `versions` still remembered (a transaction's
    /// keys share one version and one writer).
    pub fn lookup(&self, versions: &[u64]) -> HashMap<u64, WriteRecord> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = HashMap::new();
        if versions.is_empty() {
            return found;
        }
        let wanted: HashSet<u64> = versions.iter().copied().collect();
        for r in ring.iter() {
            if wanted.contains(&r.version) {
                found.entry(r.version).or_insert_with(|| r.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(version: u64) -> WriteRecord {
        WriteRecord {
            version,
            session: version * 10,
            subject: None,
            method: "state.set",
            at_ms: 0,
        }
    }

    #[test]
    fn remembers_the_newest_capacity_changes() {
        let w = Writers::new(2);
        for v in 1..=3 {
            w.record(rec(v));
        }
        let found = w.lookup(&[1, 2, 3, 4]);
        assert_eq!(found.len(), 2);
        assert_eq!(found[&3].session, 30);
        assert!(!found.contains_key(&1), "the oldest is forgotten");
    }
}
