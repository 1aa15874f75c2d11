//! Per-key history of recent changes, for RESUME replays and reads of what
//! changed (`state.history`, pattern resumes, checkpoints).
//!
//! A change that was sent to a subscriber is kept as the bytes of the DELTA
//! frame it was sent as, so a RESUME replays it without re-encoding. A
//! change nobody was sent (the key had no subscriber) is kept as its ops in
//! the compact form the durable log uses (`[code, path, value]`, see
//! `storage::record::write_op`): encoding a whole DELTA that nobody reads
//! was about 8 % of a small write; a replay encodes the frame then.
//!
//! # Layout: one byte ring per key
//! Both kinds live in one ring of bytes per key (`bytes`), indexed by a
//! deque of small fixed-size entries (version, length, form). Dropping the
//! oldest change only moves the ring's head: nothing of it is read or
//! freed. That matters because the oldest change is, by then, cold — a
//! thousand changes old — and with one heap block per op, path and value,
//! evicting it (and reusing its freed blocks for the next write) missed
//! the cache several times per write: ~10 % of a small write's server time
//! at a fixed rate (`perf record`, see docs/BENCHMARKS.md). Changes too
//! large to be worth copying (over [`INLINE_MAX`] bytes) are kept as they
//! were handed over, in a side deque: a frame shares its buffer with the
//! subscribers' queues, ops share their values with the key's value.
//!
//! Two bounds: a number of changes per key, and a byte budget shared by all
//! keys (`HistoryBudget`). A write that would push the total over the
//! budget first trims its own key's oldest entries, and a change that does
//! not fit even then is not kept; writers of other keys racing with it can
//! overshoot by one change each. A key starved by the budget simply answers
//! RESUME with a fresh STATE_INIT.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use sodp_proto::codec::{decode_value, encoded_len, write_array_len, write_nil, write_uint};
use sodp_proto::{DeltaOp, Frame, Value};

use crate::storage::record::{op_from, write_op};
use crate::wire;

/// Memory an entry costs beyond its bytes: its index slot (16 B) and an
/// allowance for the two deques' growth (each doubles when full). Counted
/// so the byte budget bounds real memory, not just payload.
const ENTRY_OVERHEAD: usize = 48;

/// What an op kept unencoded costs beyond its path and encoded value: the
/// op itself and its path's allocation.
const OP_OVERHEAD: usize = std::mem::size_of::<DeltaOp>() + 16;

/// A frame longer than this, or ops whose paths and values come to more,
/// are kept as they are instead of being copied into the ring.
pub const INLINE_MAX: usize = 512;

/// Nesting accepted when a kept change is decoded again (what this server
/// encoded, so only a bound against a bug).
const DECODE_DEPTH: usize = 1024;

/// A change to keep, as the store hands it over.
#[derive(Debug)]
pub enum Retained {
    /// The DELTA frame the change was sent as.
    Frame(Bytes),
    /// The ops of a change nobody was sent, and the deadline it set
    /// (`Some(0)`: removed).
    Ops(Vec<DeltaOp>, Option<u64>),
}

/// How a replay turns kept changes back into the DELTAs it sends (the
/// store's key slot: a replayed DELTA names its key, see `wire::with_state`).
pub trait Replay {
    /// A change kept as the live DELTA it was sent as.
    fn resend(&mut self, sent: &[u8]) -> Bytes;
    /// A change kept as its ops (`expires`: the deadline it set).
    fn encode(&mut self, version: u64, ops: &[DeltaOp], expires: Option<u64>) -> Bytes;
}

/// How an entry's change is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// DELTA frame bytes in the ring.
    Frame,
    /// `[deadline | nil, op…]` in the compact op form, in the ring.
    Ops,
    /// The next of `large`, as it was handed over.
    Large,
}

#[derive(Debug)]
struct Entry {
    version: u64,
    /// Bytes in the ring (0 for [`Form::Large`]; otherwise [`INLINE_MAX`]
    /// plus the ops' small headers at most).
    len: u32,
    form: Form,
}

/// A retained change, borrowed from its history.
#[derive(Debug)]
pub enum Kept<'a> {
    Frame(Cow<'a, [u8]>),
    Ops(Cow<'a, [u8]>),
    Large(&'a [DeltaOp], Option<u64>),
}

impl Kept<'_> {
    /// The change's ops (`None` if its bytes do not decode, which bytes this
    /// server wrote always do).
    pub fn ops(&self) -> Option<Vec<DeltaOp>> {
        match self {
            Kept::Frame(frame) => DeltaOp::list_from_value(&ops_of_frame(frame)?).ok(),
            Kept::Ops(bytes) => Some(decode_ops(bytes)?.0),
            Kept::Large(ops, _) => Some(ops.to_vec()),
        }
    }

    /// The change's ops as their wire maps (`state.history` answers these).
    pub fn ops_value(&self) -> Option<Value> {
        match self {
            Kept::Frame(frame) => ops_of_frame(frame),
            _ => Some(Value::from(
                self.ops()?
                    .iter()
                    .map(DeltaOp::to_value)
                    .collect::<Vec<_>>(),
            )),
        }
    }

    /// The DELTA frame `replay` makes of the change.
    fn frame(&self, version: u64, replay: &mut impl Replay) -> Option<Bytes> {
        match self {
            Kept::Frame(frame) => Some(replay.resend(frame)),
            Kept::Large(ops, expires) => Some(replay.encode(version, ops, *expires)),
            Kept::Ops(bytes) => {
                let (ops, expires) = decode_ops(bytes)?;
                Some(replay.encode(version, &ops, expires))
            }
        }
    }
}

/// Bytes `range` of a ring split into `head` and `tail` (borrowed unless
/// the range wraps).
fn ring_range<'a>(head: &'a [u8], tail: &'a [u8], range: std::ops::Range<usize>) -> Cow<'a, [u8]> {
    let split = head.len();
    if range.end <= split {
        Cow::Borrowed(&head[range])
    } else if range.start >= split {
        Cow::Borrowed(&tail[range.start - split..range.end - split])
    } else {
        let mut joined = head[range.start..].to_vec();
        joined.extend_from_slice(&tail[..range.end - split]);
        Cow::Owned(joined)
    }
}

/// The `ops` field of a DELTA message.
fn ops_of_frame(frame: &[u8]) -> Option<Value> {
    let f = Frame::decode(wire::ws_payload(frame), DECODE_DEPTH).ok()?;
    f.body.get("ops").cloned()
}

/// Writes `[deadline | nil, op…]` (see [`Form::Ops`]).
fn encode_ops(buf: &mut Vec<u8>, ops: &[DeltaOp], expires: Option<u64>) {
    write_array_len(buf, ops.len() + 1);
    match expires {
        Some(at) => write_uint(buf, at),
        None => write_nil(buf),
    }
    for op in ops {
        write_op(buf, op);
    }
}

fn decode_ops(bytes: &[u8]) -> Option<(Vec<DeltaOp>, Option<u64>)> {
    let value = decode_value(bytes, DECODE_DEPTH).ok()?;
    let (first, ops) = value.as_array()?.split_first()?;
    let expires = match first {
        Value::Nil => None,
        at => Some(at.as_u64()?),
    };
    Some((ops.iter().map(op_from).collect::<Option<_>>()?, expires))
}

thread_local! {
    /// Where ops are encoded before they are copied into a ring (kept
    /// between writes; dropped if a large change grew it).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
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
    entries: VecDeque<Entry>,
    /// The ring: the bytes of every entry but the large ones, in order.
    bytes: VecDeque<u8>,
    /// The large entries and their cost, in order.
    large: VecDeque<(usize, Retained)>,
    /// The newest version that is no longer retained (0: nothing dropped).
    /// A RESUME from below it cannot be served by replay.
    floor: u64,
}

impl History {
    /// Records a change and trims to the budget.
    /// `room` caps the shared budget further (what the server's memory
    /// budget has left).
    pub fn push(&mut self, version: u64, change: Retained, budget: &HistoryBudget, room: usize) {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            self.push_with(version, change, budget, room, &mut scratch);
            if scratch.capacity() > 4 * INLINE_MAX {
                *scratch = Vec::new();
            }
        });
    }

    fn push_with(
        &mut self,
        version: u64,
        change: Retained,
        budget: &HistoryBudget,
        room: usize,
        scratch: &mut Vec<u8>,
    ) {
        // What the change costs and how it is held, before anything moves.
        enum Held {
            Frame(Bytes),
            Ops,
            Large(Retained),
        }
        let (held, cost) = match change {
            Retained::Frame(frame) if frame.len() > INLINE_MAX => {
                let cost = ENTRY_OVERHEAD + frame.len();
                (Held::Large(Retained::Frame(frame)), cost)
            }
            Retained::Frame(frame) => {
                let cost = ENTRY_OVERHEAD + frame.len();
                (Held::Frame(frame), cost)
            }
            Retained::Ops(ops, expires) => {
                let payload: usize = ops
                    .iter()
                    .map(|op| op.path.len() + op.value.as_ref().map_or(0, encoded_len))
                    .sum();
                if payload > INLINE_MAX {
                    let cost = ENTRY_OVERHEAD + ops.len() * OP_OVERHEAD + payload;
                    (Held::Large(Retained::Ops(ops, expires)), cost)
                } else {
                    scratch.clear();
                    encode_ops(scratch, &ops, expires);
                    (Held::Ops, ENTRY_OVERHEAD + scratch.len())
                }
            }
        };
        // Make room: drop the oldest until the change fits both bounds.
        // The shared total is read once and updated once (by the net
        // amount): each atomic update waits for every store before it.
        let max_bytes = budget.max_bytes.min(room);
        let used = budget.used_bytes();
        let fits = |freed: usize, entries: usize| {
            entries < budget.max_entries && used.saturating_sub(freed) + cost <= max_bytes
        };
        let mut freed = 0;
        while !self.entries.is_empty() && !fits(freed, self.entries.len()) {
            freed += self.drop_oldest();
        }
        let keep = fits(freed, self.entries.len());
        let added = if keep { cost } else { 0 };
        if added >= freed {
            budget
                .used_bytes
                .fetch_add(added - freed, Ordering::Relaxed);
        } else {
            budget
                .used_bytes
                .fetch_sub(freed - added, Ordering::Relaxed);
        }
        if !keep {
            // Over the budget on its own: kept nowhere, so no RESUME from
            // before it can be replayed.
            self.floor = version;
            return;
        }
        let (form, len) = match held {
            Held::Large(change) => {
                self.large.push_back((cost, change));
                (Form::Large, 0)
            }
            Held::Frame(frame) => {
                self.bytes.extend(frame.iter());
                (Form::Frame, frame.len() as u32)
            }
            Held::Ops => {
                self.bytes.extend(scratch.iter());
                (Form::Ops, scratch.len() as u32)
            }
        };
        self.entries.push_back(Entry { version, len, form });
        // A ring trimmed far below what it once held gives memory back.
        if freed > 0 && self.bytes.capacity() > 4 * self.bytes.len().max(1024) {
            self.bytes.shrink_to(2 * self.bytes.len());
        }
    }

    /// Drops the oldest change and answers what it cost (the caller updates
    /// the budget): the ring's head moves past its bytes, which are neither
    /// read nor freed (see the module doc).
    fn drop_oldest(&mut self) -> usize {
        let Some(entry) = self.entries.pop_front() else {
            return 0;
        };
        self.floor = entry.version;
        match entry.form {
            Form::Large => self.large.pop_front().map_or(0, |(cost, _)| cost),
            Form::Frame | Form::Ops => {
                self.bytes.drain(..entry.len as usize);
                ENTRY_OVERHEAD + entry.len as usize
            }
        }
    }

    /// The changes from the `start`th on, oldest first.
    fn kept_from(&self, start: usize) -> impl Iterator<Item = (u64, Kept<'_>)> {
        let before = self.entries.range(..start);
        let mut offset: usize = before.clone().map(|e| e.len as usize).sum();
        let mut large = before.filter(|e| e.form == Form::Large).count();
        let (head, tail) = self.bytes.as_slices();
        self.entries.range(start..).map(move |entry| {
            let bytes = || ring_range(head, tail, offset..offset + entry.len as usize);
            let kept = match entry.form {
                Form::Frame => Kept::Frame(bytes()),
                Form::Ops => Kept::Ops(bytes()),
                Form::Large => {
                    let (_, change) = &self.large[large];
                    large += 1;
                    match change {
                        Retained::Frame(frame) => Kept::Frame(Cow::Borrowed(frame)),
                        Retained::Ops(ops, expires) => Kept::Large(ops, *expires),
                    }
                }
            };
            offset += entry.len as usize;
            (entry.version, kept)
        })
    }

    /// Where the changes after `since` start, if `since` is a version this
    /// key had (in this process) and every change after it is still held.
    /// Anything else — trimmed history, a version from before a restart, a
    /// version of another key — cannot be replayed safely.
    fn replay_start(&self, since: u64) -> Option<usize> {
        let start = self.entries.partition_point(|e| e.version < since);
        match self.entries.get(start) {
            Some(e) if e.version == since => Some(start + 1),
            _ if since == self.floor => Some(start),
            _ => None,
        }
    }

    /// Whether [`History::replay_since`] would replay from `since`.
    pub fn can_replay_since(&self, since: u64) -> bool {
        self.replay_start(since).is_some()
    }

    /// The DELTA frames `replay` makes of every change after `since`, if
    /// they can be replayed (see [`History::replay_start`]).
    pub fn replay_since(&self, since: u64, mut replay: impl Replay) -> Option<Vec<Bytes>> {
        let start = self.replay_start(since)?;
        self.kept_from(start)
            .map(|(version, kept)| kept.frame(version, &mut replay))
            .collect()
    }

    /// At most `limit` retained changes after `since`, oldest first, and
    /// whether none after `since` is missing before them (nothing after
    /// `since` was dropped).
    pub fn since(&self, since: u64, limit: usize) -> (impl Iterator<Item = (u64, Kept<'_>)>, bool) {
        let start = self.entries.partition_point(|e| e.version <= since);
        (self.kept_from(start).take(limit), since >= self.floor)
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
    pub fn changes(&self) -> impl Iterator<Item = (u64, Kept<'_>)> {
        self.kept_from(0)
    }

    /// Forgets everything and starts again after `floor` (cluster mode: the
    /// copy jumped to the shared engine's image, so only a RESUME from the
    /// version it jumped from can still be replayed).
    pub fn restart(&mut self, budget: &HistoryBudget, floor: u64) {
        self.clear(budget);
        self.floor = floor;
    }

    /// Releases everything (the key is being dropped), memory included.
    pub fn clear(&mut self, budget: &HistoryBudget) {
        let mut freed = 0;
        while !self.entries.is_empty() {
            freed += self.drop_oldest();
        }
        budget.used_bytes.fetch_sub(freed, Ordering::Relaxed);
        let floor = self.floor;
        *self = History {
            floor,
            ..History::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Retained {
        Retained::Frame(Bytes::from(vec![n; 10]))
    }

    /// Replays frames as they were kept; nothing it replays is kept as ops.
    struct AsKept;

    impl Replay for AsKept {
        fn resend(&mut self, sent: &[u8]) -> Bytes {
            Bytes::copy_from_slice(sent)
        }

        fn encode(&mut self, _: u64, _: &[DeltaOp], _: Option<u64>) -> Bytes {
            panic!("nothing here is kept as ops")
        }
    }

    #[test]
    fn replays_only_what_is_complete() {
        let budget = HistoryBudget::new(3, 1 << 20);
        let mut h = History::default();
        for v in [2, 5, 9, 11] {
            h.push(v, frame(v as u8), &budget, usize::MAX);
        }
        let count = |h: &History, since| h.replay_since(since, AsKept).map(|f| f.len());
        // Version 2 was trimmed: resuming from 1 or 0 is impossible, but
        // from 2 itself everything after it is still held.
        assert_eq!(count(&h, 1), None);
        assert_eq!(count(&h, 0), None);
        assert_eq!(count(&h, 2), Some(3));
        assert_eq!(count(&h, 9), Some(1));
        assert_eq!(count(&h, 11), Some(0));
        assert_eq!(count(&h, 12), None, "ahead of the key");
        assert_eq!(count(&h, 6), None, "not a version of this key");
        assert!(h.can_replay_since(2) && !h.can_replay_since(6));
        assert_eq!(
            h.replay_since(2, AsKept).unwrap(),
            [vec![5u8; 10], vec![9; 10], vec![11; 10]],
            "the frames' own bytes, oldest first"
        );
        // Nothing trimmed: a client that never saw a version can replay all.
        let mut fresh = History::default();
        fresh.push(4, frame(4), &budget, usize::MAX);
        assert_eq!(count(&fresh, 0), Some(1));
    }

    #[test]
    fn byte_budget_is_shared_and_bounded() {
        let one = ENTRY_OVERHEAD + 10;
        let budget = HistoryBudget::new(1000, 2 * one + one / 2);
        let (mut a, mut b) = (History::default(), History::default());
        a.push(1, frame(1), &budget, usize::MAX);
        a.push(2, frame(2), &budget, usize::MAX);
        assert_eq!(budget.used_bytes(), 2 * one);
        b.push(3, frame(3), &budget, usize::MAX);
        assert!(budget.used_bytes() <= 2 * one + one / 2);
        assert_eq!(b.changes().count(), 0, "b's own change went over");
        assert_eq!(b.floor(), 3, "so nothing from before it replays");
        assert!(!b.can_replay_since(0) && b.can_replay_since(3));
        assert_eq!(budget.used_bytes(), 2 * one, "and it costs nothing");
        let none = HistoryBudget::new(0, 1 << 20);
        let mut c = History::default();
        c.push(4, frame(4), &none, usize::MAX);
        assert_eq!(
            (c.changes().count(), c.floor(), none.used_bytes()),
            (0, 4, 0)
        );
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

    /// Ops whose value is over [`INLINE_MAX`]: kept as they are.
    fn large_ops(n: i64) -> Vec<DeltaOp> {
        let big = Value::from("x".repeat(INLINE_MAX + n as usize));
        vec![
            DeltaOp::add("/big", big),
            DeltaOp::update("/n", Value::Int(n)),
        ]
    }

    /// Replays as the store does for key `k` on stream 7, noting the
    /// versions it had to encode from ops.
    #[derive(Default)]
    struct AsStore {
        encoded: Vec<u64>,
    }

    impl Replay for &mut AsStore {
        fn resend(&mut self, sent: &[u8]) -> Bytes {
            wire::with_state(sent, "k")
        }

        fn encode(&mut self, version: u64, ops: &[DeltaOp], expires: Option<u64>) -> Bytes {
            self.encoded.push(version);
            wire::delta_naming(7, "k", version, ops, expires)
        }
    }

    #[test]
    fn changes_kept_as_ops_are_encoded_when_replayed() {
        let budget = HistoryBudget::new(10, 1 << 20);
        let mut h = History::default();
        h.push(1, Retained::Ops(ops(1), None), &budget, usize::MAX);
        h.push(
            2,
            Retained::Frame(wire::delta(7, 2, &ops(2))),
            &budget,
            usize::MAX,
        );
        h.push(3, Retained::Ops(ops(3), Some(99)), &budget, usize::MAX);
        h.push(4, Retained::Ops(large_ops(4), Some(0)), &budget, usize::MAX);
        let before = budget.used_bytes();

        let mut replay = AsStore::default();
        let frames: Vec<Bytes> = h.replay_since(0, &mut replay).expect("nothing trimmed");
        assert_eq!(
            replay.encoded,
            [1, 3, 4],
            "only what was kept as ops is encoded"
        );
        // The one kept as its live frame gets `state` spliced in, and comes
        // out byte for byte as if it had been built naming the key.
        let expected = [
            wire::delta_naming(7, "k", 1, &ops(1), None),
            wire::delta_naming(7, "k", 2, &ops(2), None),
            wire::delta_naming(7, "k", 3, &ops(3), Some(99)),
            wire::delta_naming(7, "k", 4, &large_ops(4), Some(0)),
        ];
        assert_eq!(frames, expected, "live frames, naming the key");
        assert_eq!(budget.used_bytes(), before, "a replay changes nothing held");
        h.clear(&budget);
        assert_eq!(budget.used_bytes(), 0);
    }

    #[test]
    fn ops_read_the_same_whichever_way_a_change_is_kept() {
        let budget = HistoryBudget::new(10, 1 << 20);
        let mut h = History::default();
        h.push(1, Retained::Ops(ops(5), Some(0)), &budget, usize::MAX);
        let frame = wire::delta_expiring(3, 2, &ops(5), Some(0));
        h.push(2, Retained::Frame(frame), &budget, usize::MAX);
        h.push(3, Retained::Ops(large_ops(5), None), &budget, usize::MAX);
        let kept: Vec<_> = h.changes().collect();
        let forms: Vec<_> = kept
            .iter()
            .map(|(_, k)| std::mem::discriminant(k))
            .collect();
        assert!(forms[0] != forms[1] && forms[1] != forms[2] && forms[0] != forms[2]);
        assert_eq!(kept[0].1.ops(), Some(ops(5)));
        assert_eq!(kept[1].1.ops(), Some(ops(5)));
        assert_eq!(kept[2].1.ops(), Some(large_ops(5)));
        assert_eq!(kept[0].1.ops_value(), kept[1].1.ops_value());
        assert!(kept[0].1.ops_value().is_some());
        let wire: Vec<Value> = large_ops(5).iter().map(DeltaOp::to_value).collect();
        assert_eq!(kept[2].1.ops_value(), Some(Value::from(wire)));
    }

    #[test]
    fn what_a_change_costs() {
        let mut bytes = Vec::new();
        encode_ops(&mut bytes, &ops(5), None);
        let kept = ENTRY_OVERHEAD + bytes.len();
        let budget = HistoryBudget::new(10, kept + 1);
        let mut h = History::default();
        h.push(1, Retained::Ops(ops(1), None), &budget, usize::MAX);
        assert_eq!(
            budget.used_bytes(),
            kept,
            "its encoded bytes and the overhead"
        );
        h.push(2, Retained::Ops(ops(2), None), &budget, usize::MAX);
        assert_eq!(h.changes().count(), 1, "the budget trims ops entries too");
        assert_eq!(h.floor(), 1);
        h.clear(&budget);

        let large = large_ops(1);
        let payload: usize = large
            .iter()
            .map(|op| op.path.len() + op.value.as_ref().map_or(0, encoded_len))
            .sum();
        let budget = HistoryBudget::new(10, 1 << 20);
        h.push(1, Retained::Ops(large, None), &budget, usize::MAX);
        assert_eq!(
            budget.used_bytes(),
            ENTRY_OVERHEAD + 2 * OP_OVERHEAD + payload
        );
        let frame = wire::delta(1, 2, &large_ops(2));
        h.push(2, Retained::Frame(frame.clone()), &budget, usize::MAX);
        assert!(h.bytes.is_empty(), "a large change is not copied");
        assert_eq!(h.replay_since(1, AsKept), Some(vec![frame]));
    }

    /// Many changes of every form through a small history: the ring wraps
    /// (so some changes straddle its end) and every read still gives back
    /// exactly what was pushed, the budget exactly what is held.
    #[test]
    fn the_ring_wraps_and_reads_back_every_change_exactly() {
        let budget = HistoryBudget::new(7, 1 << 20);
        let mut h = History::default();
        let mut pushed: Vec<(u64, Vec<DeltaOp>)> = Vec::new();
        let mut expected_cost = Vec::new();
        let (mut wrapped, mut straddled) = (false, false);
        for v in 1..=200u64 {
            let n = v as i64;
            // Vary the lengths so entries end at every offset of the ring.
            let mut ops = ops(n);
            ops.push(DeltaOp::add("/s", Value::from("y".repeat(v as usize % 23))));
            let (change, cost) = match v % 6 {
                0 => (Retained::Ops(large_ops(n), None), None),
                5 => {
                    ops = large_ops(n);
                    let f = wire::delta(1, v, &ops);
                    assert!(f.len() > INLINE_MAX);
                    let cost = ENTRY_OVERHEAD + f.len();
                    (Retained::Frame(f), Some(cost))
                }
                1 | 3 => {
                    let f = wire::delta(1, v, &ops);
                    let cost = ENTRY_OVERHEAD + f.len();
                    (Retained::Frame(f), Some(cost))
                }
                _ => {
                    let mut b = Vec::new();
                    encode_ops(&mut b, &ops, Some(v));
                    (
                        Retained::Ops(ops.clone(), Some(v)),
                        Some(ENTRY_OVERHEAD + b.len()),
                    )
                }
            };
            let ops = match &change {
                Retained::Ops(o, _) => o.clone(),
                Retained::Frame(_) => ops,
            };
            h.push(v, change, &budget, usize::MAX);
            pushed.push((v, ops));
            expected_cost.push(cost);
            let tail = &pushed[pushed.len().saturating_sub(7)..];
            let read: Vec<(u64, Vec<DeltaOp>)> = h
                .changes()
                .map(|(v, k)| (v, k.ops().expect("decodes")))
                .collect();
            assert_eq!(read, tail, "after pushing version {v}");
            let frames = h
                .replay_since(h.floor(), &mut AsStore::default())
                .expect("complete");
            assert_eq!(frames.len(), tail.len());
            for (frame, (v, ops)) in frames.iter().zip(tail) {
                let f = Frame::decode(wire::ws_payload(frame), 64).unwrap();
                assert_eq!(f.body.get("version").and_then(Value::as_u64), Some(*v));
                assert_eq!(f.body.get("state"), Some(&Value::from("k")));
                let got = DeltaOp::list_from_value(f.body.get("ops").unwrap()).unwrap();
                assert_eq!(&got, ops);
            }
            let since = v.saturating_sub(3);
            let (page, complete) = h.since(since, 2);
            assert!(complete, "nothing after {since} was dropped");
            assert!(page.map(|(pv, _)| pv).eq((since + 1..=v).take(2)));
            wrapped |= !h.bytes.as_slices().1.is_empty();
            straddled |= h
                .changes()
                .any(|(_, k)| matches!(k, Kept::Frame(Cow::Owned(_)) | Kept::Ops(Cow::Owned(_))));
            let known: Option<usize> = expected_cost[expected_cost.len().saturating_sub(7)..]
                .iter()
                .copied()
                .sum();
            if let Some(known) = known {
                assert_eq!(budget.used_bytes(), known, "after pushing version {v}");
            }
        }
        assert!(
            wrapped && straddled,
            "the ring wrapped, with a change across its end"
        );
        h.clear(&budget);
        assert_eq!(budget.used_bytes(), 0);
        assert_eq!(h.floor(), 200);
    }
}
