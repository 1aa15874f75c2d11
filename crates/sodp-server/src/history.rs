//! Per-key history of recent changes, kept as the encoded DELTA frames so a
//! RESUME replays them without re-encoding.
//!
//! Two bounds: a number of changes per key, and a byte budget shared by all
//! keys (`HistoryBudget`). A write that pushes the total over the budget
//! trims its own key's oldest entries, so the total never exceeds the budget
//! by more than one frame; a key starved by the budget simply answers
//! RESUME with a fresh STATE_INIT.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

/// Memory an entry costs beyond its frame bytes: the deque slot (version +
/// `Bytes`), the shared-buffer header and allocator overhead. Counted so the
/// byte budget bounds real memory, not just payload.
const ENTRY_OVERHEAD: usize = 96;

fn cost(frame: &Bytes) -> usize {
    frame.len() + ENTRY_OVERHEAD
}

/// The server-wide history limits and the bytes currently held.
#[derive(Debug)]
pub struct HistoryBudget {
    max_entries: usize,
    max_bytes: usize,
    used_bytes: AtomicUsize,
}

impl HistoryBudget {
    pub fn new(max_entries: usize, max_bytes: usize) -> HistoryBudget {
        HistoryBudget {
            max_entries,
            max_bytes,
            used_bytes: AtomicUsize::new(0),
        }
    }

    /// Bytes of history currently held across all keys.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes.load(Ordering::Relaxed)
    }
}

/// The retained changes of one key, oldest first.
#[derive(Debug, Default)]
pub struct History {
    entries: VecDeque<(u64, Bytes)>,
    /// The newest version that is no longer retained (0: nothing dropped).
    /// A RESUME from below it cannot be served by replay.
    floor: u64,
}

impl History {
    /// Records a change and trims to the budget.
    /// `room` caps the shared budget further (what the server's memory
    /// budget has left).
    pub fn push(&mut self, version: u64, frame: Bytes, budget: &HistoryBudget, room: usize) {
        let max_bytes = budget.max_bytes.min(room);
        budget.used_bytes.fetch_add(cost(&frame), Ordering::Relaxed);
        self.entries.push_back((version, frame));
        while self.entries.len() > budget.max_entries
            || (budget.used_bytes() > max_bytes && !self.entries.is_empty())
        {
            self.drop_oldest(budget);
        }
    }

    fn drop_oldest(&mut self, budget: &HistoryBudget) {
        if let Some((v, frame)) = self.entries.pop_front() {
            budget.used_bytes.fetch_sub(cost(&frame), Ordering::Relaxed);
            self.floor = v;
        }
    }

    /// The frames of every change after `since`, if `since` is a version
    /// this key had (in this process) and every change after it is still
    /// held. Anything else — trimmed history, a version from before a
    /// restart, a version of another key — cannot be replayed safely.
    pub fn replay_since(&self, since: u64) -> Option<impl Iterator<Item = &Bytes>> {
        let start = self.entries.partition_point(|(v, _)| *v < since);
        let start = match self.entries.get(start) {
            Some((v, _)) if *v == since => start + 1,
            _ if since == self.floor => start,
            _ => return None,
        };
        Some(self.entries.range(start..).map(|(_, f)| f))
    }

    /// At most `limit` retained changes after `since`, oldest first, and
    /// whether none after `since` is missing before them (nothing after
    /// `since` was dropped).
    pub fn since(&self, since: u64, limit: usize) -> (impl Iterator<Item = (u64, &Bytes)>, bool) {
        let start = self.entries.partition_point(|(v, _)| *v <= since);
        let frames = self
            .entries
            .range(start..)
            .take(limit)
            .map(|(v, f)| (*v, f));
        (frames, since >= self.floor)
    }

    /// The newest version no longer retained (0: nothing was dropped).
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Starts a history recovered from a checkpoint, whose changes up to
    /// `floor` were dropped before it was written (call before `push`).
    pub fn start_above(&mut self, floor: u64) {
        self.floor = floor;
    }

    /// Every retained change, oldest first (for checkpoints).
    pub fn frames(&self) -> impl Iterator<Item = (u64, &Bytes)> {
        self.entries.iter().map(|(v, f)| (*v, f))
    }

    /// Forgets everything and starts again after `floor` (cluster mode: the
    /// copy jumped to the shared engine's image, so only a RESUME from the
    /// version it jumped from can still be replayed).
    pub fn restart(&mut self, budget: &HistoryBudget, floor: u64) {
        self.clear(budget);
        self.floor = floor;
    }

    /// Releases everything (the key is being dropped).
    pub fn clear(&mut self, budget: &HistoryBudget) {
        while !self.entries.is_empty() {
            self.drop_oldest(budget);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n; 10])
    }

    #[test]
    fn replays_only_what_is_complete() {
        let budget = HistoryBudget::new(3, 1 << 20);
        let mut h = History::default();
        for v in [2, 5, 9, 11] {
            h.push(v, frame(v as u8), &budget, usize::MAX);
        }
        // Version 2 was trimmed: resuming from 1 or 0 is impossible, but
        // from 2 itself everything after it is still held.
        assert!(h.replay_since(1).is_none());
        assert!(h.replay_since(0).is_none());
        assert_eq!(h.replay_since(2).unwrap().count(), 3);
        assert_eq!(h.replay_since(9).unwrap().count(), 1);
        assert_eq!(h.replay_since(11).unwrap().count(), 0);
        assert!(h.replay_since(12).is_none(), "ahead of the key");
        assert!(h.replay_since(6).is_none(), "not a version of this key");
        // Nothing trimmed: a client that never saw a version can replay all.
        let mut fresh = History::default();
        fresh.push(4, frame(4), &budget, usize::MAX);
        assert_eq!(fresh.replay_since(0).unwrap().count(), 1);
    }

    #[test]
    fn byte_budget_is_shared_and_bounded() {
        let one = cost(&frame(0));
        let budget = HistoryBudget::new(1000, 2 * one + one / 2);
        let (mut a, mut b) = (History::default(), History::default());
        a.push(1, frame(1), &budget, usize::MAX);
        a.push(2, frame(2), &budget, usize::MAX);
        b.push(3, frame(3), &budget, usize::MAX);
        assert!(budget.used_bytes() <= 2 * one + one / 2);
        b.clear(&budget);
        a.clear(&budget);
        assert_eq!(budget.used_bytes(), 0);
    }
}
