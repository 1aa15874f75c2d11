//! Per-key history of recent changes, for RESUME replays and reads of what
//! changed (`state.history`, pattern resumes, checkpoints).
//!
//! A change that was sent to a subscriber is kept as the DELTA frame it was
//! sent as, so a RESUME replays it without re-encoding. A change nobody was
//! sent (the key had no subscriber) is kept as its ops: most such changes
//! are never replayed, and encoding a DELTA that nobody reads was about 8 %
//! of a small write. A replay encodes them then, once, and keeps the frame.
//!
//! Two bounds: a number of changes per key, and a byte budget shared by all
//! keys (`HistoryBudget`). A write that pushes the total over the budget
//! trims its own key's oldest entries, so the total never exceeds the budget
//! by more than one change; a key starved by the budget simply answers
//! RESUME with a fresh STATE_INIT.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use sodp_proto::codec::encoded_len;
use sodp_proto::{DeltaOp, Frame, Value};

use crate::wire;

/// Memory an entry costs beyond its payload: the deque slot (version +
/// `Retained`), the shared-buffer header and allocator overhead. Counted so
/// the byte budget bounds real memory, not just payload.
const ENTRY_OVERHEAD: usize = 96;

/// What an op kept unencoded costs beyond its path and encoded value: the
/// op itself and its path's allocation.
const OP_OVERHEAD: usize = std::mem::size_of::<DeltaOp>() + 16;

/// What an entry holds of its change.
#[derive(Debug)]
pub enum Retained {
    /// The DELTA frame the change was sent (or replayed) as.
    Frame(Bytes),
    /// The ops of a change nobody was sent, and the deadline it set
    /// (`Some(0)`: removed), encoded only when a replay needs the frame.
    Ops(Vec<DeltaOp>, Option<u64>),
}

impl Retained {
    /// Bytes counted against the budget: a frame's length, or what ops
    /// would encode to plus their in-memory overhead (the same measure, the
    /// encoded size, the memory budget counts values in).
    fn cost(&self) -> usize {
        ENTRY_OVERHEAD
            + match self {
                Retained::Frame(frame) => frame.len(),
                Retained::Ops(ops, _) => ops
                    .iter()
                    .map(|op| {
                        OP_OVERHEAD + op.path.len() + op.value.as_ref().map_or(0, encoded_len)
                    })
                    .sum(),
            }
    }

    /// The change's ops (a frame is decoded; `None` if it does not hold a
    /// DELTA, which a frame this server encoded always does).
    pub fn ops(&self) -> Option<Vec<DeltaOp>> {
        match self {
            Retained::Ops(ops, _) => Some(ops.clone()),
            Retained::Frame(frame) => DeltaOp::list_from_value(&ops_of_frame(frame)?).ok(),
        }
    }

    /// The change's ops as their wire maps (`state.history` answers these).
    pub fn ops_value(&self) -> Option<Value> {
        match self {
            Retained::Ops(ops, _) => Some(Value::from(
                ops.iter().map(DeltaOp::to_value).collect::<Vec<_>>(),
            )),
            Retained::Frame(frame) => ops_of_frame(frame),
        }
    }
}

/// The `ops` field of a DELTA message.
fn ops_of_frame(frame: &Bytes) -> Option<Value> {
    let f = Frame::decode(wire::ws_payload(frame), 1024).ok()?;
    f.body.get("ops").cloned()
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
    entries: VecDeque<(u64, Retained)>,
    /// The newest version that is no longer retained (0: nothing dropped).
    /// A RESUME from below it cannot be served by replay.
    floor: u64,
}

impl History {
    /// Records a change and trims to the budget.
    /// `room` caps the shared budget further (what the server's memory
    /// budget has left).
    pub fn push(&mut self, version: u64, change: Retained, budget: &HistoryBudget, room: usize) {
        let max_bytes = budget.max_bytes.min(room);
        budget
            .used_bytes
            .fetch_add(change.cost(), Ordering::Relaxed);
        self.entries.push_back((version, change));
        while self.entries.len() > budget.max_entries
            || (budget.used_bytes() > max_bytes && !self.entries.is_empty())
        {
            self.drop_oldest(budget);
        }
    }

    fn drop_oldest(&mut self, budget: &HistoryBudget) {
        if let Some((v, change)) = self.entries.pop_front() {
            budget
                .used_bytes
                .fetch_sub(change.cost(), Ordering::Relaxed);
            self.floor = v;
        }
    }

    /// Where the changes after `since` start, if `since` is a version this
    /// key had (in this process) and every change after it is still held.
    /// Anything else — trimmed history, a version from before a restart, a
    /// version of another key — cannot be replayed safely.
    fn replay_start(&self, since: u64) -> Option<usize> {
        let start = self.entries.partition_point(|(v, _)| *v < since);
        match self.entries.get(start) {
            Some((v, _)) if *v == since => Some(start + 1),
            _ if since == self.floor => Some(start),
            _ => None,
        }
    }

    /// Whether [`History::replay_since`] would replay from `since`.
    pub fn can_replay_since(&self, since: u64) -> bool {
        self.replay_start(since).is_some()
    }

    /// The DELTA frames of every change after `since`, if they can be
    /// replayed (see [`History::replay_start`]). A change kept as ops is
    /// encoded by `encode(version, ops, expires)` now and kept as that frame
    /// from then on (its cost in `budget` updated).
    pub fn replay_since(
        &mut self,
        since: u64,
        budget: &HistoryBudget,
        mut encode: impl FnMut(u64, &[DeltaOp], Option<u64>) -> Bytes,
    ) -> Option<Vec<Bytes>> {
        let start = self.replay_start(since)?;
        let frames = self.entries.range_mut(start..).map(|(version, change)| {
            let frame = match change {
                Retained::Frame(frame) => return frame.clone(),
                Retained::Ops(ops, expires) => encode(*version, ops, *expires),
            };
            let encoded = Retained::Frame(frame.clone());
            budget
                .used_bytes
                .fetch_add(encoded.cost(), Ordering::Relaxed);
            budget
                .used_bytes
                .fetch_sub(change.cost(), Ordering::Relaxed);
            *change = encoded;
            frame
        });
        Some(frames.collect())
    }

    /// At most `limit` retained changes after `since`, oldest first, and
    /// whether none after `since` is missing before them (nothing after
    /// `since` was dropped).
    pub fn since(
        &self,
        since: u64,
        limit: usize,
    ) -> (impl Iterator<Item = (u64, &Retained)>, bool) {
        let start = self.entries.partition_point(|(v, _)| *v <= since);
        let changes = self
            .entries
            .range(start..)
            .take(limit)
            .map(|(v, c)| (*v, c));
        (changes, since >= self.floor)
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
    pub fn changes(&self) -> impl Iterator<Item = (u64, &Retained)> {
        self.entries.iter().map(|(v, c)| (*v, c))
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

    fn frame(n: u8) -> Retained {
        Retained::Frame(Bytes::from(vec![n; 10]))
    }

    fn no_encoding(_: u64, _: &[DeltaOp], _: Option<u64>) -> Bytes {
        panic!("nothing here is kept as ops")
    }

    #[test]
    fn replays_only_what_is_complete() {
        let budget = HistoryBudget::new(3, 1 << 20);
        let mut h = History::default();
        for v in [2, 5, 9, 11] {
            h.push(v, frame(v as u8), &budget, usize::MAX);
        }
        let count = |h: &mut History, since| {
            h.replay_since(since, &budget, no_encoding)
                .map(|frames| frames.len())
        };
        // Version 2 was trimmed: resuming from 1 or 0 is impossible, but
        // from 2 itself everything after it is still held.
        assert_eq!(count(&mut h, 1), None);
        assert_eq!(count(&mut h, 0), None);
        assert_eq!(count(&mut h, 2), Some(3));
        assert_eq!(count(&mut h, 9), Some(1));
        assert_eq!(count(&mut h, 11), Some(0));
        assert_eq!(count(&mut h, 12), None, "ahead of the key");
        assert_eq!(count(&mut h, 6), None, "not a version of this key");
        assert!(h.can_replay_since(2) && !h.can_replay_since(6));
        // Nothing trimmed: a client that never saw a version can replay all.
        let mut fresh = History::default();
        fresh.push(4, frame(4), &budget, usize::MAX);
        assert_eq!(count(&mut fresh, 0), Some(1));
    }

    #[test]
    fn byte_budget_is_shared_and_bounded() {
        let one = frame(0).cost();
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

    fn ops(n: i64) -> Vec<DeltaOp> {
        vec![
            DeltaOp::update("/n", Value::Int(n)),
            DeltaOp::remove("/gone"),
        ]
    }

    fn encode(stream_id: u32) -> impl FnMut(u64, &[DeltaOp], Option<u64>) -> Bytes {
        move |version, ops, expires| wire::delta_expiring(stream_id, "k", version, ops, expires)
    }

    #[test]
    fn changes_kept_as_ops_are_encoded_once_when_replayed() {
        let budget = HistoryBudget::new(10, 1 << 20);
        let mut h = History::default();
        h.push(1, Retained::Ops(ops(1), None), &budget, usize::MAX);
        h.push(
            2,
            Retained::Frame(wire::delta(7, "k", 2, &ops(2))),
            &budget,
            usize::MAX,
        );
        h.push(3, Retained::Ops(ops(3), Some(99)), &budget, usize::MAX);
        let before = budget.used_bytes();

        let mut encoded = Vec::new();
        let frames: Vec<Bytes> = h
            .replay_since(0, &budget, |v, o, e| {
                encoded.push(v);
                encode(7)(v, o, e)
            })
            .expect("nothing trimmed");
        assert_eq!(encoded, [1, 3], "only what was kept as ops is encoded");
        let expected = [
            wire::delta(7, "k", 1, &ops(1)),
            wire::delta(7, "k", 2, &ops(2)),
            wire::delta_expiring(7, "k", 3, &ops(3), Some(99)),
        ];
        assert_eq!(
            frames, expected,
            "the frames a subscriber would have been sent"
        );
        // The budget now counts the frames, exactly.
        let frames_cost: usize = expected
            .iter()
            .map(|f| Retained::Frame(f.clone()).cost())
            .sum();
        assert_eq!(budget.used_bytes(), frames_cost);
        assert_ne!(before, frames_cost);

        // A second replay encodes nothing.
        assert_eq!(
            h.replay_since(1, &budget, no_encoding)
                .map(|frames| frames.len()),
            Some(2)
        );
        h.clear(&budget);
        assert_eq!(budget.used_bytes(), 0);
    }

    #[test]
    fn ops_read_the_same_whichever_way_a_change_is_kept() {
        let kept = Retained::Ops(ops(5), Some(0));
        let sent = Retained::Frame(wire::delta_expiring(3, "k", 8, &ops(5), Some(0)));
        assert_eq!(kept.ops(), Some(ops(5)));
        assert_eq!(sent.ops(), Some(ops(5)));
        assert_eq!(kept.ops_value(), sent.ops_value());
        assert!(kept.ops_value().is_some());
    }

    #[test]
    fn ops_cost_what_they_would_encode_to_plus_their_overhead() {
        let kept = Retained::Ops(ops(5), None);
        let payload: usize = ops(5)
            .iter()
            .map(|op| op.path.len() + op.value.as_ref().map_or(0, encoded_len))
            .sum();
        assert_eq!(kept.cost(), ENTRY_OVERHEAD + 2 * OP_OVERHEAD + payload);
        let budget = HistoryBudget::new(10, kept.cost() + 1);
        let mut h = History::default();
        h.push(1, Retained::Ops(ops(1), None), &budget, usize::MAX);
        h.push(2, Retained::Ops(ops(2), None), &budget, usize::MAX);
        assert_eq!(h.changes().count(), 1, "the budget trims ops entries too");
        assert_eq!(h.floor(), 1);
    }
}
