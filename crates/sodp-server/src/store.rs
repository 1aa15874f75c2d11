//! The state store: every key's value, version, history, subscribers and
//! presence bindings, and the one place where a write becomes a change.
//!
//! The store does not know the CALL methods. A method (see `methods/`) hands
//! [`Store::write`] a closure that edits the key through a [`Doc`] — first
//! [`Doc::admit`] with the exact size the value will have, then the change
//! in place — and returns an [`Edit`] (the ops, how to undo, what presence it
//! binds). The store keeps what every write shares: the key table, the key
//! lock, the size and memory limits, schema validation (undoing a refused
//! change), and the commit point.
//!
//! # Concurrency
//! The key table is a `std::sync::Mutex<HashMap>` held only to find or
//! create a key's slot. Each slot has its own `std::sync::Mutex`: a write
//! locks its key, changes the value, takes the next global version, records
//! history and queues the DELTA to every subscriber's outbox before
//! unlocking. That single critical section is what makes writes to one key
//! atomic and keeps every subscriber's versions strictly increasing. Nothing
//! inside it awaits (an outbox push never blocks), so a blocking mutex is
//! right. Lock order is table → slot, never the reverse.
//!
//! # Slots
//! A key's slot lives once the key has been written (a deleted key keeps its
//! version and history), or while it has a subscriber or a presence
//! binding. Whatever leaves a slot unused — a refused write, a no-op delete
//! of a key never written, the last UNWATCH — retires it, so no sequence of
//! requests can grow the table without bound.
//!
//! # Where durability and clustering slot in
//! [`Store::commit`] is the single point where a change is known (key,
//! version, ops, new value, encoded frame) and not yet visible. A durable log
//! appends there before publishing. In cluster mode (`store/clustered.rs`)
//! writes are drafted on a copy and committed by Redis first; the change is
//! then applied through the same commit point with Redis's version.

mod cluster_catch_up;
mod cluster_patterns;
mod cluster_reads;
mod cluster_upkeep;
mod clustered;
mod many;
mod patterns;
mod read;
pub mod remote;
pub use cluster_patterns::Fed;
mod ttl;

pub use cluster_catch_up::Applied;
pub use many::{EditFn, TxOp};
pub use patterns::{parse_pattern, PatternWatch, ReadCheck};
pub use read::{HistoryPage, KeysPage};
pub use remote::Remote;
pub use ttl::{expire_keys, Deadline, Timers};

use many::Gathered;
use patterns::Patterns;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use sodp_proto::codec::encoded_len;
use sodp_proto::frame::FIRST_SUBSCRIPTION_STREAM;
use sodp_proto::merge::{self, Undo};
use sodp_proto::{pointer, DeltaOp, Value};

use crate::budget::{MemoryBudget, PRESENCE_OVERHEAD, SLOT_OVERHEAD};
use crate::error::Rejection;
use crate::history::{History, HistoryBudget, Replay, Retained};
use crate::idempotency::{Idempotency, Remembered, Tag};
use crate::metrics::{Metrics, Reason};
use crate::outbox::{Outbox, SessionId};
use crate::size;
use crate::storage::durable::SnapshotSource;
use crate::storage::record::KeyImage;
use crate::storage::recovery::Sink;
use crate::storage::{Change, Delivery, Memory, Storage, Ticket};
use crate::wire;

/// Checks a value before it is stored (the schema, when one is loaded).
pub trait Validator: Send + Sync {
    fn validate(&self, key: &str, value: &Value) -> Result<(), Rejection>;
}

/// What the store was built with.
pub struct StoreOptions {
    /// The first change gets version `version_base + 1`. The server uses
    /// the start time in microseconds, so versions keep increasing across
    /// restarts and a RESUME from before a restart can never be mistaken
    /// for a position in the new history.
    pub version_base: u64,
    pub history_len: usize,
    pub history_bytes: usize,
    pub max_keys: Option<usize>,
    /// Largest encoded value one key may hold.
    pub max_value_bytes: Option<usize>,
    /// Everything the store holds, in bytes (see `budget`).
    pub max_memory: usize,
    pub max_depth: usize,
    pub validator: Option<Arc<dyn Validator>>,
    /// Where committed changes are kept (`Memory`: nowhere).
    pub storage: Arc<dyn Storage>,
    pub metrics: Arc<Metrics>,
    /// Extension `idempotency`: how long, and how many per identity, the
    /// outcomes of idempotent writes are remembered.
    pub idempotency_window: std::time::Duration,
    pub idempotency_max_keys: usize,
}

/// What a committed (or no-op) write reports: its version, and the ticket
/// its acknowledgement must wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub version: u64,
    pub ticket: Ticket,
    /// The write took `version` (false: it changed nothing, and `version`
    /// is the key's current one).
    pub changed: bool,
}

/// What a change is committed with: its version, the deadline it set
/// (`Some(0)`: removed; `None`: unchanged) and its storage ticket.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    version: u64,
    expires: Option<u64>,
    ticket: Ticket,
}

/// Shared by every session (cheap to share behind an `Arc`).
pub struct Store {
    keys: Mutex<HashMap<Arc<str>, Arc<KeySlot>, foldhash::fast::RandomState>>,
    /// Every key with a slot, in byte order (`state.keys` pages through it).
    /// Changed only with `keys` locked (lock order: keys → order → slot).
    order: Mutex<BTreeSet<Arc<str>>>,
    /// Pattern subscriptions (`prefix_watch`), indexed by prefix.
    patterns: Patterns,
    /// Key deadlines (`ttl`).
    timers: Timers,
    version: AtomicU64,
    next_stream: AtomicU32,
    history: HistoryBudget,
    memory: Arc<MemoryBudget>,
    /// Outcomes of idempotent writes: made durable with the commit they
    /// answer, so they live beside it (records count against `memory`).
    pub idempotency: Idempotency,
    max_keys: Option<usize>,
    max_value_bytes: Option<usize>,
    max_depth: usize,
    validator: Option<Arc<dyn Validator>>,
    storage: Arc<dyn Storage>,
    /// Cluster mode: the shared engine that commits writes (set once, at
    /// start; see `store/clustered.rs`).
    remote: OnceLock<Arc<dyn Remote>>,
    metrics: Arc<Metrics>,
}

/// One key. The stream id is fixed for the slot's life and the same on every
/// session, which is what lets one encoded DELTA serve all subscribers.
pub struct KeySlot {
    key: Arc<str>,
    stream_id: u32,
    state: Mutex<KeyState>,
}

impl KeySlot {
    /// The key's DELTA for a change (`expires`: the deadline it set, see
    /// [`wire::delta_expiring`]), as every subscriber is sent it live.
    fn delta(&self, version: u64, ops: &[DeltaOp], expires: Option<u64>) -> bytes::Bytes {
        wire::delta_expiring(self.stream_id, version, ops, expires)
    }

    /// The same change as a RESUME replays it: naming the key.
    fn replayed_delta(&self, version: u64, ops: &[DeltaOp], expires: Option<u64>) -> bytes::Bytes {
        wire::delta_naming(self.stream_id, &self.key, version, ops, expires)
    }
}

/// A RESUME's DELTAs come before the STATE_INIT that maps their stream to
/// the key, so they name it.
impl Replay for &KeySlot {
    fn resend(&mut self, sent: &[u8]) -> bytes::Bytes {
        wire::with_state(sent, &self.key)
    }

    fn encode(&mut self, version: u64, ops: &[DeltaOp], expires: Option<u64>) -> bytes::Bytes {
        self.replayed_delta(version, ops, expires)
    }
}

struct KeyState {
    value: Value,
    /// Exact encoded size of `value` (see `size`): what the key counts
    /// against `max_value_bytes` and the memory budget.
    size: usize,
    version: u64,
    initialized: bool,
    history: History,
    subscribers: HashMap<SessionId, Arc<Outbox>>,
    /// Presence path (normalised pointer) → the session that bound it last.
    presence: HashMap<String, SessionId>,
    /// The storage ticket of the key's last change: frames showing it wait
    /// until it is durable.
    last_ticket: Ticket,
    /// Removed from the table; whoever holds this slot must look again.
    retired: bool,
    /// When the key expires (Unix ms; extension `ttl`).
    expires_at: Option<u64>,
}

impl KeyState {
    /// A key that was never written: nil, whose encoding is one byte.
    fn new() -> KeyState {
        KeyState {
            value: Value::Nil,
            size: encoded_len(&Value::Nil),
            version: 0,
            initialized: false,
            history: History::default(),
            subscribers: HashMap::new(),
            presence: HashMap::new(),
            last_ticket: 0,
            retired: false,
            expires_at: None,
        }
    }

    /// Never written (a deleted key keeps its slot: its version and
    /// history are part of the contract), not watched, nothing bound.
    fn is_unused(&self) -> bool {
        self.version == 0 && self.subscribers.is_empty() && self.presence.is_empty()
    }
}

/// A key's current state, for `STATE_INIT` and inspection.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub value: Value,
    pub version: u64,
    pub initialized: bool,
}

/// What the store holds, in bytes (see [`Store::memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    /// Values, key slots and presence bindings.
    pub counted: usize,
    /// RESUME history.
    pub history: usize,
    pub max: usize,
}

/// A key, locked, as a write method sees it.
pub struct Doc<'a> {
    key: &'a str,
    st: &'a mut KeyState,
    store: &'a Store,
    /// The size admitted for the value after this write, and the budget
    /// bytes reserved for it.
    admitted: Option<(usize, usize)>,
}

impl Doc<'_> {
    pub fn key(&self) -> &str {
        self.key
    }

    pub fn value(&self) -> &Value {
        &self.st.value
    }

    /// Whether the key holds a value (a deleted or never-written key does not).
    pub fn initialized(&self) -> bool {
        self.st.initialized
    }

    pub fn version(&self) -> u64 {
        self.st.version
    }

    /// The exact encoded size of the current value.
    pub fn size(&self) -> usize {
        self.st.size
    }

    /// Extension `conditional`: refuses with 409 (carrying the current
    /// version) unless the key is at `if_version` — 0 meaning "holds no
    /// value". Nothing has changed when this refuses.
    pub fn require(&self, if_version: Option<u64>) -> Result<(), Rejection> {
        match if_version {
            Some(wanted) if !condition_holds(self.st.version, self.st.initialized, wanted) => {
                Err(Rejection::conflict(
                    format!(
                        "{}: version is {}, not {wanted} as required by `if_version`",
                        self.key, self.st.version
                    ),
                    self.st.version,
                ))
            }
            _ => Ok(()),
        }
    }

    /// The deepest nesting a value may have.
    pub fn max_depth(&self) -> usize {
        self.store.max_depth
    }

    /// Declares the exact size the value will have after this write, before
    /// anything changes. Refuses a key growing past `max_value_bytes` (400)
    /// or the server past its memory budget (507); shrinking always passes.
    pub fn admit(&mut self, size_after: usize) -> Result<(), Rejection> {
        let current = self.st.size;
        if let Some(max) = self.store.max_value_bytes {
            if size_after > max && size_after > current {
                return Err(Rejection::bad_request(format!(
                    "{}: the value would be {size_after} bytes, over the limit of {max} bytes per key",
                    self.key
                )));
            }
        }
        let growth = size_after.saturating_sub(current);
        // History is not counted here: it only gets what values leave
        // free (see `commit`), so it can never crowd out a write.
        self.store.memory.reserve(growth, 0)?;
        self.admitted = Some((size_after, growth));
        Ok(())
    }

    /// The value, to change in place. Only after [`Doc::admit`].
    pub fn value_mut(&mut self) -> &mut Value {
        debug_assert!(self.admitted.is_some(), "admit the size first");
        &mut self.st.value
    }

    /// An undo record, taken only when a schema could refuse the change
    /// (taking it shares the entries it saves, which costs a copy of each
    /// when they are then written).
    pub fn undo(&self, take: impl FnOnce(&Value) -> Undo) -> Undo {
        match self.store.validator {
            Some(_) => take(&self.st.value),
            None => Undo::Nothing,
        }
    }

    /// Gives back a reservation that was not used (the write failed).
    fn cancel(&mut self) {
        if let Some((_, growth)) = self.admitted.take() {
            self.store.memory.release(growth);
        }
    }
}

/// What a write did to a [`Doc`], for the store to validate and commit.
#[must_use]
pub struct Edit {
    ops: Vec<DeltaOp>,
    undo: Undo,
    kind: EditKind,
    /// A presence path (normalised) to bind to this session once committed.
    presence: Option<(String, SessionId)>,
    /// A new deadline for the key (`ttl_ms`); `None` keeps the current one.
    deadline: Option<Deadline>,
}

enum EditKind {
    /// The value was changed in place; `ops` describe the change.
    Change,
    /// The key was deleted.
    Delete,
}

impl Edit {
    /// A change made in place, described by `ops` (none: nothing changed).
    pub fn change(ops: Vec<DeltaOp>, undo: Undo) -> Edit {
        Edit {
            ops,
            undo,
            kind: EditKind::Change,
            presence: None,
            deadline: None,
        }
    }

    /// The key is deleted (the value was set to nil).
    pub fn delete() -> Edit {
        Edit {
            ops: vec![DeltaOp::remove("/")],
            undo: Undo::Nothing,
            kind: EditKind::Delete,
            presence: None,
            deadline: None,
        }
    }

    /// Sets or clears the key's deadline with the change (`None`: keep).
    pub fn with_deadline(mut self, deadline: Option<Deadline>) -> Edit {
        self.deadline = deadline;
        self
    }

    /// The deadline the key has after this edit, if it differs from
    /// `current` (`Some(None)`: removed). A delete removes it.
    fn new_deadline(&self, current: Option<u64>) -> Option<Option<u64>> {
        let new = match (&self.kind, self.deadline) {
            (EditKind::Delete, _) | (EditKind::Change, Some(Deadline::Clear)) => None,
            (EditKind::Change, Some(Deadline::At(at))) => Some(at),
            (EditKind::Change, None) => current,
        };
        (new != current).then_some(new)
    }

    /// Binds `path` (a normalised pointer) to `session` when committed.
    pub fn bind_presence(mut self, path: String, session: SessionId) -> Edit {
        self.presence = Some((path, session));
        self
    }
}

/// Whether a key at `version` (holding a value or not) satisfies
/// `if_version: wanted`: 0 is "holds no value" (never written or deleted);
/// any other number must equal the version (a delete's included).
pub fn condition_holds(version: u64, initialized: bool, wanted: u64) -> bool {
    if wanted == 0 {
        !initialized
    } else {
        version == wanted
    }
}

/// A std mutex whose poisoning (a panic elsewhere while holding it) does not
/// take the whole server down: the data is still consistent at every unlock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn slot_cost(key: &str) -> usize {
    SLOT_OVERHEAD + key.len()
}

fn presence_cost(path: &str) -> usize {
    PRESENCE_OVERHEAD + path.len()
}

impl Store {
    pub fn new(options: StoreOptions) -> Store {
        let memory = Arc::new(MemoryBudget::new(options.max_memory));
        Store {
            keys: Mutex::new(HashMap::default()),
            order: Mutex::new(BTreeSet::new()),
            patterns: Patterns::default(),
            timers: Timers::default(),
            version: AtomicU64::new(options.version_base),
            next_stream: AtomicU32::new(FIRST_SUBSCRIPTION_STREAM),
            history: HistoryBudget::new(options.history_len, options.history_bytes),
            memory: memory.clone(),
            idempotency: Idempotency::new(
                options.idempotency_window,
                options.idempotency_max_keys,
                memory,
            ),
            max_keys: options.max_keys,
            max_value_bytes: options.max_value_bytes,
            max_depth: options.max_depth,
            validator: options.validator,
            storage: options.storage,
            remote: OnceLock::new(),
            metrics: options.metrics,
        }
    }

    /// Cluster mode: from now on writes are committed by `remote` (once,
    /// before the first connection).
    pub fn attach_remote(&self, remote: Arc<dyn Remote>) {
        let _ = self.remote.set(remote);
    }

    /// The shared engine, in cluster mode.
    pub fn remote(&self) -> Option<&dyn Remote> {
        self.remote.get().map(|r| &**r)
    }

    /// A store for tests and tools: in memory, with the given limits.
    pub fn in_memory(options: StoreOptions) -> Store {
        Store::new(StoreOptions {
            storage: Arc::new(Memory),
            ..options
        })
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Number of keys held (written, watched or bound).
    pub fn key_count(&self) -> usize {
        lock(&self.keys).len()
    }

    /// Bytes of history held across all keys.
    pub fn history_bytes(&self) -> usize {
        self.history.used_bytes()
    }

    /// Bytes held against `--max-memory`: values, slots and presence (what
    /// writes are refused by) plus history (which takes only what is left),
    /// and the maximum.
    pub fn memory(&self) -> MemoryUse {
        MemoryUse {
            counted: self.memory.used(),
            history: self.history.used_bytes(),
            max: self.memory.max(),
        }
    }

    /// Makes the next version at least `floor + 1` (after recovery: above
    /// everything the previous run could have handed out).
    pub fn raise_version(&self, floor: u64) {
        self.version.fetch_max(floor, Ordering::SeqCst);
    }

    /// The latest version issued by this server.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Presence bindings held across all keys (walks every key: for tests
    /// and inspection, not the hot path).
    pub fn presence_count(&self) -> usize {
        let slots: Vec<_> = lock(&self.keys).values().cloned().collect();
        slots
            .iter()
            .map(|slot| lock(&slot.state).presence.len())
            .sum()
    }

    /// The exact encoded size recorded for `key`'s value (0: no such key).
    pub fn recorded_size(&self, key: &str) -> usize {
        self.with_existing(key, |_, st| st.size).unwrap_or(0)
    }

    /// The current state of `key` (never-written keys: nil, version 0).
    pub fn snapshot(&self, key: &str) -> Snapshot {
        match self.with_existing(key, |_, st| Snapshot {
            value: st.value.clone(),
            version: st.version,
            initialized: st.initialized,
        }) {
            Some(s) => s,
            None => Snapshot {
                value: Value::Nil,
                version: 0,
                initialized: false,
            },
        }
    }

    /// Runs `f` with `key`'s slot locked, creating the slot if needed, and
    /// retires the slot afterwards if `f` left it unused.
    fn with_slot<R>(
        &self,
        key: &str,
        f: impl FnOnce(&KeySlot, &mut KeyState) -> R,
    ) -> Result<R, Rejection> {
        loop {
            let slot = self.slot(key)?;
            let mut st = lock(&slot.state);
            if !st.retired {
                let result = f(&slot, &mut st);
                let unused = st.is_unused();
                drop(st);
                if unused {
                    self.retire_if_unused(key);
                }
                return Ok(result);
            }
        }
    }

    /// Runs `f` with `key`'s slot locked, if the key exists.
    fn with_existing<R>(
        &self,
        key: &str,
        f: impl FnOnce(&KeySlot, &mut KeyState) -> R,
    ) -> Option<R> {
        loop {
            let slot = lock(&self.keys).get(key).cloned()?;
            let mut st = lock(&slot.state);
            if !st.retired {
                return Some(f(&slot, &mut st));
            }
        }
    }

    fn slot(&self, key: &str) -> Result<Arc<KeySlot>, Rejection> {
        let mut keys = lock(&self.keys);
        if let Some(slot) = keys.get(key) {
            return Ok(slot.clone());
        }
        if let Some(max) = self.max_keys {
            if keys.len() >= max {
                return Err(Rejection::bad_request(format!(
                    "the server holds its maximum of {max} keys"
                )));
            }
        }
        // A slot always gets its memory: a WATCH must work on a full
        // server, and an unused slot is retired right after.
        let state = KeyState::new();
        self.memory.force(slot_cost(key) + state.size);
        let key: Arc<str> = Arc::from(key);
        let slot = Arc::new(KeySlot {
            key: key.clone(),
            stream_id: self.next_stream.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(state),
        });
        lock(&self.order).insert(key.clone());
        keys.insert(key, slot.clone());
        Ok(slot)
    }

    /// Drops `key`'s slot if nothing refers to it any more (no value, not
    /// watched, no presence), so random keys cannot grow the table.
    fn retire_if_unused(&self, key: &str) {
        let mut keys = lock(&self.keys);
        let Some(slot) = keys.get(key).cloned() else {
            return;
        };
        let mut st = lock(&slot.state);
        if st.is_unused() {
            st.retired = true;
            st.history.clear(&self.history);
            self.memory.release(slot_cost(key) + st.size);
            keys.remove(key);
            lock(&self.order).remove(key);
        }
    }

    /// Subscribes `outbox` to `key`: queues STATE_INIT (with `seq` and the
    /// echoed `params`), then every later DELTA.
    pub fn watch(
        &self,
        key: &str,
        outbox: &Arc<Outbox>,
        seq: u64,
        params: Option<&Value>,
    ) -> Result<(), Rejection> {
        if let Some(remote) = self.remote() {
            return self.watch_remote(remote, key, outbox, seq, params);
        }
        self.with_slot(key, |slot, st| {
            self.subscribe(slot, st, outbox, seq, params)
        })
    }

    /// RESUME: replays the DELTAs after `since` if every one is still held,
    /// then queues STATE_INIT as the live marker and subscribes. Returns how
    /// many DELTAs were replayed (`None`: could not replay, STATE_INIT only).
    pub fn resume(
        &self,
        key: &str,
        since: u64,
        outbox: &Arc<Outbox>,
        seq: u64,
        params: Option<&Value>,
    ) -> Result<Option<usize>, Rejection> {
        if let Some(remote) = self.remote() {
            return self.resume_remote(remote, key, since, outbox, seq, params);
        }
        self.with_slot(key, |slot, st| {
            let visible = self.storage.is_visible(st.last_ticket);
            let replayed = st.history.replay_since(since, slot).map(|frames| {
                let n = frames.len();
                for frame in frames {
                    self.send(visible, st.last_ticket, outbox, frame);
                }
                n
            });
            self.subscribe(slot, st, outbox, seq, params);
            replayed
        })
    }

    /// Stops delivering `key` (or a pattern) to `session`.
    pub fn unwatch(&self, key: &str, session: SessionId) {
        if let Ok(Some(prefix)) = parse_pattern(key) {
            return self.unwatch_pattern(prefix, session);
        }
        let left = self.with_existing(key, |_, st| {
            st.subscribers.remove(&session);
            st.is_unused()
        });
        // One call per subscription the session held (its `Holdings` makes
        // sure), even if the subscriber was evicted from the slot since.
        if let Some(remote) = self.remote() {
            remote.unwatch(key);
        }
        if left == Some(true) {
            self.retire_if_unused(key);
        }
    }

    /// Applies one write to `key` under its lock. `edit` admits the size
    /// the value will have, changes it in place and says what it did.
    /// Returns the version of the change, or the key's current version if
    /// the write changed nothing (no version is taken and no DELTA is sent
    /// then). A refused write changes nothing and leaves nothing behind.
    pub fn write(
        &self,
        key: &str,
        edit: impl FnOnce(&mut Doc<'_>) -> Result<Edit, Rejection>,
    ) -> Result<Written, Rejection> {
        self.write_tagged(key, None, edit)
    }

    /// [`Store::write`] of an idempotent call: `tag` is made durable with
    /// the change (or alone, if the write changed nothing).
    pub fn write_tagged(
        &self,
        key: &str,
        tag: Option<&Tag>,
        edit: impl FnOnce(&mut Doc<'_>) -> Result<Edit, Rejection>,
    ) -> Result<Written, Rejection> {
        if let Some(remote) = self.remote() {
            return self.write_remote(remote, key, tag, edit);
        }
        self.storage.check_writable()?;
        self.with_slot(key, |slot, st| {
            let mut doc = Doc {
                key: &slot.key,
                st,
                store: self,
                admitted: None,
            };
            let edit = match edit(&mut doc) {
                Ok(edit) => edit,
                Err(refusal) => {
                    doc.cancel();
                    return Err(refusal);
                }
            };
            let admitted = doc.admitted.take();
            let before = st.version;
            let version = self.finish(slot, st, edit, admitted, tag)?;
            Ok(Written {
                version,
                ticket: st.last_ticket,
                changed: version != before,
            })
        })?
    }

    /// After a change made in place: nothing to do if nothing changed;
    /// otherwise validate (undoing the change if refused) and commit. A key's
    /// first write is always `ADD "/"` with the whole value.
    fn finish(
        &self,
        slot: &KeySlot,
        st: &mut KeyState,
        edit: Edit,
        admitted: Option<(usize, usize)>,
        tag: Option<&Tag>,
    ) -> Result<u64, Rejection> {
        let (size_after, growth) = admitted.unwrap_or((st.size, 0));
        let value_unchanged = match edit.kind {
            EditKind::Change => st.initialized && edit.ops.is_empty(),
            EditKind::Delete => !st.initialized,
        };
        // A deadline set, moved or removed is a change too (a key without a
        // value has none to change).
        let deadline = match edit.kind {
            EditKind::Delete if !st.initialized => None,
            _ => edit.new_deadline(st.expires_at),
        };
        let unchanged = value_unchanged && deadline.is_none();
        debug_assert!(
            value_unchanged || admitted.is_some(),
            "a change must admit its size first"
        );
        let expires = deadline.map(|at| at.unwrap_or(0));
        let version = if unchanged {
            self.memory.release(growth);
            if let Some(tag) = tag {
                self.remember_unchanged(st, tag);
            }
            st.version
        } else {
            if let (Some(validator), EditKind::Change) = (&self.validator, &edit.kind) {
                if let Err(refusal) = validator.validate(&slot.key, &st.value) {
                    edit.undo.restore(&mut st.value);
                    self.memory.release(growth);
                    return Err(refusal);
                }
            }
            // Growth was reserved by `admit`; shrinking is given back now.
            self.memory.release(st.size.saturating_sub(size_after));
            st.size = size_after;
            if let Some(new) = deadline {
                self.timers.moved(&slot.key, st.expires_at, new);
                st.expires_at = new;
            }
            match edit.kind {
                EditKind::Change => {
                    let ops = if st.initialized {
                        edit.ops
                    } else {
                        st.initialized = true;
                        vec![DeltaOp::add("/", st.value.clone())]
                    };
                    self.commit_expiring(slot, st, ops, expires, tag)
                }
                EditKind::Delete => {
                    let version = self.commit_expiring(slot, st, edit.ops, expires, tag);
                    st.initialized = false;
                    version
                }
            }
        };
        // Bound even when the value was already there: the newest binder
        // owns the path.
        if let Some((path, session)) = edit.presence {
            let cost = presence_cost(&path);
            if !st.presence.contains_key(&path) {
                self.memory.force(cost);
                st.last_ticket = self.storage.append_bind(&slot.key, &path);
            }
            st.presence.insert(path, session);
        }
        Ok(version)
    }

    /// The commit point, under the key lock: `st.value` already holds the
    /// new value; take the version, then [`Store::commit_at`].
    /// A key that a pattern subscription matches takes its version and
    /// publishes to the pattern streams with the pattern lock held.
    fn commit(&self, slot: &KeySlot, st: &mut KeyState, ops: Vec<DeltaOp>) -> u64 {
        self.commit_expiring(slot, st, ops, None, None)
    }

    /// An idempotent call that changed nothing is still remembered durably
    /// (a retry after a restart must not run it against a newer state); its
    /// RESULT waits for that record.
    fn remember_unchanged(&self, st: &mut KeyState, tag: &Tag) {
        let ticket = self.storage.append_commit(st.version, &[], Some(tag));
        st.last_ticket = st.last_ticket.max(ticket);
    }

    /// [`Store::commit`] of a change that also set, moved or removed the
    /// key's deadline: its DELTA says `expires_at` (0: removed).
    fn commit_expiring(
        &self,
        slot: &KeySlot,
        st: &mut KeyState,
        ops: Vec<DeltaOp>,
        expires: Option<u64>,
        tag: Option<&Tag>,
    ) -> u64 {
        // The pattern lock first, then the version: pattern streams see
        // versions in order.
        let publishing = self.patterns.matching(std::iter::once(&*slot.key));
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        self.commit_published(slot, st, ops, version, expires, publishing, tag);
        version
    }

    /// Commits a change whose version is known (cluster mode: Redis's) to
    /// the key's streams.
    fn commit_versioned(
        &self,
        slot: &KeySlot,
        st: &mut KeyState,
        ops: Vec<DeltaOp>,
        version: u64,
        expires: Option<u64>,
    ) {
        // Pattern streams are fed by the fanout, in Redis's commit order
        // (see `cluster_patterns.rs`).
        self.commit_published(slot, st, ops, version, expires, None, None);
    }

    /// Storage (with `tag`, for an idempotent call), [`Store::commit_at`],
    /// then the pattern streams, under the pattern lock `publishing` holds.
    #[allow(clippy::too_many_arguments)]
    fn commit_published(
        &self,
        slot: &KeySlot,
        st: &mut KeyState,
        ops: Vec<DeltaOp>,
        version: u64,
        expires: Option<u64>,
        mut publishing: Option<patterns::Publishing<'_>>,
        tag: Option<&Tag>,
    ) {
        let pattern_ops = publishing.as_ref().map(|_| ops.clone());
        let change = Change {
            key: &slot.key,
            ops: &ops,
            expires,
        };
        let ticket = self.storage.append_commit(version, &[change], tag);
        let stamp = Stamp {
            version,
            expires,
            ticket,
        };
        self.commit_at(slot, st, ops, stamp, None);
        if let (Some(publishing), Some(ops)) = (&mut publishing, pattern_ops) {
            let n = publishing.publish(&self.storage, &slot.key, version, &ops, st.last_ticket);
            self.metrics.deliveries.inc_by(n as u64);
        }
    }

    /// Commits a change with a version already taken (a transaction gives
    /// all its keys the same one) and already in storage at `ticket`: DELTA
    /// encoded once, history, and fanout — now, or, with `gather`, collected
    /// per subscriber so that the transaction sends each session its DELTAs
    /// back to back.
    fn commit_at(
        &self,
        slot: &KeySlot,
        st: &mut KeyState,
        ops: Vec<DeltaOp>,
        stamp: Stamp,
        gather: Option<&mut Gathered>,
    ) {
        let Stamp {
            version,
            expires,
            ticket,
        } = stamp;
        st.version = version;
        st.last_ticket = ticket;
        // History gets what the memory budget has left (up to its own
        // limit): on a full server RESUME falls back to STATE_INIT sooner.
        let room = self.memory.max().saturating_sub(self.memory.used());
        if st.subscribers.is_empty() {
            // Nobody to tell: the DELTA is encoded only if a RESUME asks.
            let change = Retained::Ops(ops, expires);
            st.history.push(version, change, &self.history, room);
            return;
        }
        let frame = slot.delta(version, &ops, expires);
        if let Some(gathered) = gather {
            self.metrics.deliveries.inc_by(st.subscribers.len() as u64);
            gathered.add(st.subscribers.values(), &frame);
        } else if self.storage.is_visible(ticket) {
            // A subscriber whose queue is full is evicted (its outbox closes
            // the session) and dropped here; the others are unaffected.
            let started = std::time::Instant::now();
            let before = st.subscribers.len();
            st.subscribers
                .retain(|_, outbox| outbox.push(frame.clone()));
            let m = &self.metrics;
            m.deliveries.inc_by(st.subscribers.len() as u64);
            if st.subscribers.len() < before {
                m.evictions
                    .get_or_create(&Reason {
                        reason: "queue_full",
                    })
                    .inc_by((before - st.subscribers.len()) as u64);
            }
            m.fanout_ms
                .observe(started.elapsed().as_secs_f64() * 1000.0);
        } else {
            self.metrics.deliveries.inc_by(st.subscribers.len() as u64);
            // Not before the change is durable: no watcher may see what a
            // crash could take back.
            let to: Vec<_> = st.subscribers.values().cloned().collect();
            self.storage
                .deliver(ticket, Delivery::Fanout(to, frame.clone()));
        }
        st.history
            .push(version, Retained::Frame(frame), &self.history, room);
    }

    /// Queues STATE_INIT — the key's current state, the "live" marker — and
    /// adds the subscriber, under the key lock so no change slips in between.
    fn subscribe(
        &self,
        slot: &KeySlot,
        st: &mut KeyState,
        outbox: &Arc<Outbox>,
        seq: u64,
        params: Option<&Value>,
    ) {
        let frame = wire::state_init(
            slot.stream_id,
            seq,
            &slot.key,
            st.version,
            &st.value,
            st.initialized,
            params,
            st.expires_at,
        );
        let visible = self.storage.is_visible(st.last_ticket);
        self.send(visible, st.last_ticket, outbox, frame);
        st.subscribers.insert(outbox.id(), outbox.clone());
    }

    /// Sends a frame that shows the key as of `ticket`: at once if that is
    /// durable, else once it is.
    fn send(&self, visible: bool, ticket: Ticket, outbox: &Arc<Outbox>, frame: bytes::Bytes) {
        if visible {
            outbox.push(frame);
        } else {
            self.storage
                .deliver(ticket, Delivery::Frame(outbox.clone(), frame));
        }
    }

    /// Finishes a recovery (see [`Loader`]): every key's recorded size and
    /// memory are counted, then every presence path a session of the
    /// previous run still held is removed — as ordinary versioned changes,
    /// so watchers that RESUME see the removal. Before any connection, and
    /// after the storage has started (the removals are logged).
    pub fn finish_recovery(&self, binds: impl IntoIterator<Item = (String, String)>, now_ms: u64) {
        let slots: Vec<_> = lock(&self.keys).values().cloned().collect();
        for slot in slots {
            let mut st = lock(&slot.state);
            st.size = encoded_len(&st.value);
            self.memory.force(st.size);
        }
        for (key, path) in binds {
            self.with_existing(&key, |slot, st| {
                let size_after = match pointer::parse(&path) {
                    Ok(segments) => size::after_remove(st.size, &st.value, &segments),
                    Err(_) => st.size,
                };
                if let Ok(Some(op)) = merge::remove_in_in_place(&mut st.value, &path) {
                    self.memory.release(st.size.saturating_sub(size_after));
                    st.size = size_after;
                    self.commit(slot, st, vec![op]);
                }
                st.last_ticket = self.storage.append_unbind(&slot.key, &path);
            });
        }
        // Keys whose deadline passed while the server was down go now, as
        // ordinary versioned deletes, before the first connection.
        for (at, key) in self.timers.take_due(now_ms) {
            self.expire(&key, at);
        }
    }

    /// An image of every key, for a checkpoint: values are shared, history
    /// frames decoded back into ops.
    pub fn images(&self) -> Vec<KeyImage> {
        let slots: Vec<_> = lock(&self.keys).values().cloned().collect();
        slots
            .iter()
            .filter_map(|slot| {
                let st = lock(&slot.state);
                if st.retired || st.version == 0 {
                    return None;
                }
                let history = st
                    .history
                    .changes()
                    .filter_map(|(version, change)| Some((version, change.ops()?)))
                    .collect();
                Some(KeyImage {
                    key: slot.key.to_string(),
                    version: st.version,
                    initialized: st.initialized,
                    value: st.value.clone(),
                    history,
                    binds: st.presence.keys().cloned().collect(),
                    expires_at: st.expires_at,
                    history_floor: Some(st.history.floor()),
                })
            })
            .collect()
    }

    /// Presence cleanup: if `session` still owns `path` on `key`, removes the
    /// path and publishes the change.
    pub fn release_presence(&self, key: &str, path: &str, session: SessionId) {
        if let Some(remote) = self.remote() {
            return self.release_presence_remote(remote, key, path, session);
        }
        let now_unused = self.with_existing(key, |slot, st| {
            if st.presence.get(path) != Some(&session) {
                return false; // Another session has taken the path since.
            }
            st.presence.remove(path);
            self.memory.release(presence_cost(path));
            st.last_ticket = self.storage.append_unbind(key, path);
            let size_after = match pointer::parse(path) {
                Ok(segments) => size::after_remove(st.size, &st.value, &segments),
                Err(_) => st.size,
            };
            if let Ok(Some(op)) = merge::remove_in_in_place(&mut st.value, path) {
                self.memory.release(st.size.saturating_sub(size_after));
                st.size = size_after;
                self.commit(slot, st, vec![op]);
            }
            st.is_unused()
        });
        if now_unused == Some(true) {
            self.retire_if_unused(key);
        }
    }
}

/// The encoded size of a value, for methods that replace it whole.
pub fn size_of(value: &Value) -> usize {
    encoded_len(value)
}

/// Recovery's [`Sink`]: loads keys straight into the store's slots, so a
/// restart builds no second copy of the state. Sizes and memory are counted
/// once at the end ([`Store::finish_recovery`]).
pub struct Loader<'a> {
    store: &'a Store,
    /// The present (Unix ms): remembered idempotent calls keep their age.
    now_ms: u64,
}

impl<'a> Loader<'a> {
    pub fn new(store: &'a Store, now_ms: u64) -> Loader<'a> {
        Loader { store, now_ms }
    }
}

impl Sink for Loader<'_> {
    fn image(&mut self, image: KeyImage) {
        let store = self.store;
        let _ = store.with_slot(&image.key, |slot, st| {
            st.value = image.value;
            st.version = image.version;
            st.initialized = image.initialized;
            store
                .timers
                .moved(&slot.key, st.expires_at, image.expires_at);
            st.expires_at = image.expires_at;
            // What the previous run had dropped stays dropped: a RESUME from
            // before it gets STATE_INIT, and `state.history` says so. A
            // checkpoint that did not record it: from its first change on.
            let floor = image
                .history_floor
                .unwrap_or_else(|| image.history.first().map_or(image.version, |(v, _)| *v));
            st.history.start_above(floor);
            for (version, ops) in image.history {
                let change = Retained::Ops(ops, None);
                st.history.push(version, change, &store.history, usize::MAX);
            }
        });
    }

    fn version(&mut self, key: &str) -> u64 {
        self.store
            .with_existing(key, |_, st| st.version)
            .unwrap_or(0)
    }

    fn change(
        &mut self,
        version: u64,
        key: &str,
        ops: Vec<DeltaOp>,
        expires: Option<u64>,
    ) -> Result<(), sodp_proto::ApplyError> {
        let store = self.store;
        store
            .with_slot(key, |slot, st| {
                for op in &ops {
                    // In place: a patch of a large value costs the patch.
                    sodp_proto::delta::apply_in_place(&mut st.value, op)?;
                    if op.path == "/" {
                        st.initialized = op.kind != sodp_proto::OpKind::Remove;
                    }
                }
                st.version = version;
                if let Some(at) = expires {
                    let new = (at != 0).then_some(at);
                    store.timers.moved(&slot.key, st.expires_at, new);
                    st.expires_at = new;
                }
                let change = Retained::Ops(ops, expires);
                st.history.push(version, change, &store.history, usize::MAX);
                Ok(())
            })
            .unwrap_or(Ok(()))
    }

    fn remembered(&mut self, remembered: Remembered) {
        self.store.idempotency.restore(remembered, self.now_ms);
    }
}

impl SnapshotSource for Store {
    fn images(&self) -> Vec<KeyImage> {
        Store::images(self)
    }

    fn remembered(&self) -> Vec<Remembered> {
        self.idempotency.images()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;
    use sodp_proto::diff;
    use sodp_proto::{Frame, FrameType};

    fn options() -> StoreOptions {
        StoreOptions {
            version_base: 0,
            history_len: 1000,
            history_bytes: 1 << 20,
            max_keys: Some(3),
            max_value_bytes: Some(4096),
            max_memory: 1 << 30,
            max_depth: 8,
            validator: None,
            storage: Arc::new(Memory),
            metrics: Arc::default(),
            idempotency_window: std::time::Duration::from_secs(600),
            idempotency_max_keys: 10_000,
        }
    }

    fn store() -> Store {
        Store::in_memory(options())
    }

    /// A change that arrives from outside any session's burst (the cluster
    /// fanout's receiver) is written to the subscriber's socket by the call
    /// itself, after the key's lock: its session task is not woken for it.
    #[test]
    fn a_change_from_the_fanout_is_sent_without_waking_the_subscriber_task() {
        use crate::store::remote::Change;
        crate::outbox::tests::two_workers().block_on(async {
            let s = store();
            let version = set(&s, "k", Value::from(json!({"a": 1}))).unwrap();
            let change = Change {
                prev: version,
                version: version + 1,
                ops: vec![DeltaOp::update("/a", Value::Int(2))],
                expires: None,
                size: None,
            };
            let frame = sent_without_a_wake(&s, "k", || {
                assert_eq!(s.apply_change("k", change, false), Applied::Applied);
            })
            .await;
            assert_eq!(frame.kind, FrameType::Delta, "{frame:?}");
        });
    }

    /// An expiry, like a change from the fanout, is written to the
    /// subscribers' sockets by the expiry task itself.
    #[test]
    fn an_expiry_is_sent_without_waking_the_subscriber_task() {
        crate::outbox::tests::two_workers().block_on(async {
            let s = store();
            let at = 4_102_444_800_000; // 2100-01-01, Unix ms
            let value = Value::from(json!({"a": 1}));
            set_with_deadline(&s, "k", value, Some(Deadline::At(at))).unwrap();
            let frame = sent_without_a_wake(&s, "k", || s.expire("k", at)).await;
            assert_eq!(frame.kind, FrameType::Delta, "{frame:?}");
            assert_eq!(
                frame.body.get("expires_at").and_then(Value::as_u64),
                Some(0),
                "{frame:?}"
            );
        });
    }

    /// Watches `key` from an outbox attached to a real socket, runs
    /// `change`, and returns the frame that reached the subscriber's socket;
    /// fails if nothing did or if the subscriber's task was woken for it.
    async fn sent_without_a_wake(s: &Store, key: &str, change: impl FnOnce()) -> Frame {
        use crate::outbox::tests::{attached, count, received, registered, take};
        let (_server, mut client, outbox) = attached(8).await;
        let (wakes, waker) = registered(&outbox);
        s.watch(key, &outbox, 1, None).unwrap();
        // The STATE_INIT, as the session task would take it.
        assert_eq!(take(&outbox, &waker).map(|f| f.len()), Some(1));
        outbox.written();
        let before = count(&wakes);
        change();
        let got = received(&mut client).await;
        assert!(!got.is_empty(), "nothing was sent to the subscriber");
        assert_eq!(count(&wakes), before, "the subscriber's task was woken");
        Frame::decode(crate::wire::ws_payload(&got), 16).unwrap()
    }

    /// `state.set`, as its method does it.
    fn set(s: &Store, key: &str, value: Value) -> Result<u64, Rejection> {
        set_written(s, key, value).map(|w| w.version)
    }

    fn set_written(s: &Store, key: &str, value: Value) -> Result<Written, Rejection> {
        set_with_deadline(s, key, value, None)
    }

    /// `state.set` with a `ttl_ms` (as the deadline it gives).
    fn set_with_deadline(
        s: &Store,
        key: &str,
        value: Value,
        deadline: Option<Deadline>,
    ) -> Result<Written, Rejection> {
        s.write(key, |doc| {
            doc.admit(size::after_set(&value))?;
            let ops = diff(doc.value(), &value);
            let previous = std::mem::replace(doc.value_mut(), value);
            Ok(Edit::change(ops, Undo::Root(previous)).with_deadline(deadline))
        })
    }

    /// `state.delete`, as its method does it.
    fn delete(s: &Store, key: &str) -> Result<u64, Rejection> {
        s.write(key, |doc| {
            if doc.initialized() {
                doc.admit(size::after_set(&Value::Nil))?;
                *doc.value_mut() = Value::Nil;
            }
            Ok(Edit::delete())
        })
        .map(|w| w.version)
    }

    fn drain(outbox: &Outbox) -> Vec<Frame> {
        let mut batch = std::collections::VecDeque::new();
        outbox.take_all(&mut batch);
        batch
            .iter()
            .map(|b| Frame::decode(wire::ws_payload(b), 64).unwrap())
            .collect()
    }

    #[test]
    fn first_write_adds_root_and_noop_takes_no_version() {
        let s = store();
        let v1 = set(&s, "k", json!({"a": 1}).into()).unwrap();
        let v2 = set(&s, "k", json!({"a": 1}).into()).unwrap();
        assert_eq!(v1, v2);
        assert_eq!(s.version(), 1);
    }

    #[test]
    fn watch_then_write_delivers_init_then_delta() {
        let s = store();
        let outbox = Arc::new(Outbox::new(1, 16));
        s.watch("k", &outbox, 1, None).unwrap();
        set(&s, "k", json!({"a": 1}).into()).unwrap();
        delete(&s, "k").unwrap();
        let frames = drain(&outbox);
        let kinds: Vec<_> = frames.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [FrameType::StateInit, FrameType::Delta, FrameType::Delta]
        );
        let snap = s.snapshot("k");
        assert!(!snap.initialized);
        assert_eq!(snap.version, 2);
    }

    #[test]
    fn resume_replays_then_marks_live() {
        let s = store();
        for i in 0..5i64 {
            set(&s, "k", Value::Int(i)).unwrap();
        }
        let outbox = Arc::new(Outbox::new(1, 16));
        let n = s.resume("k", 3, &outbox, 1, None).unwrap();
        assert_eq!(n, Some(2));
        let kinds: Vec<_> = drain(&outbox).iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [FrameType::Delta, FrameType::Delta, FrameType::StateInit]
        );
    }

    #[test]
    fn unused_slots_are_retired_and_key_limit_holds() {
        let s = store();
        let outbox = Arc::new(Outbox::new(7, 16));
        for k in ["a", "b", "c"] {
            s.watch(k, &outbox, 1, None).unwrap();
        }
        assert!(s.watch("d", &outbox, 1, None).is_err());
        s.unwatch("a", 7);
        assert_eq!(s.key_count(), 2);
        s.watch("d", &outbox, 1, None).unwrap();
    }

    #[test]
    fn refused_and_noop_writes_leave_no_slot_behind() {
        let s = Store::in_memory(StoreOptions {
            max_keys: None,
            ..options()
        });
        for i in 0..1000 {
            delete(&s, &format!("never.written.{i}")).unwrap();
        }
        assert_eq!(s.key_count(), 0, "no-op deletes leave nothing");
        let too_big = Value::from("x".repeat(5000));
        for i in 0..100 {
            assert!(set(&s, &format!("too.big.{i}"), too_big.clone()).is_err());
        }
        assert_eq!(s.key_count(), 0, "refused writes leave nothing");
        assert_eq!(s.memory().counted, 0, "and hold no memory");
        // A deleted key keeps its slot: its version is part of the contract.
        set(&s, "k", Value::Int(1)).unwrap();
        let v = delete(&s, "k").unwrap();
        assert_eq!(s.key_count(), 1);
        assert_eq!(s.snapshot("k").version, v);
    }

    #[test]
    fn the_memory_budget_refuses_growth_and_lets_everything_else_through() {
        let s = Store::in_memory(StoreOptions {
            max_keys: None,
            max_memory: 4000,
            ..options()
        });
        let chunk = Value::from("x".repeat(1000));
        let mut written = 0;
        let refusal = loop {
            match set(&s, &format!("k{written}"), chunk.clone()) {
                Ok(_) => written += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(refusal.code, ErrorCode::InsufficientStorage);
        // Each key: a 256-byte slot + its key + 1,003 encoded bytes.
        assert_eq!(written, 3, "three keys fit in 4,000 bytes");
        let used = s.memory();
        assert!(used.counted <= used.max, "{used:?}");
        assert!(used.counted + used.history <= used.max + 1200, "{used:?}");
        assert_eq!(s.key_count(), written, "the refused key left no slot");
        // Shrinking and deleting work on a full server, and free room.
        set(&s, "k0", Value::Int(1)).unwrap();
        assert!(s.memory().counted < used.counted);
        delete(&s, "k1").unwrap();
        set(&s, "k3", chunk).unwrap();
    }

    #[test]
    fn values_cannot_grow_past_the_size_limit() {
        let s = store(); // 4,096 bytes per key
        set(&s, "k", Value::from("x".repeat(3000))).unwrap();
        let before = s.snapshot("k");
        let refused = set(&s, "k", Value::from("x".repeat(5000))).unwrap_err();
        assert!(
            refused.message.contains("over the limit of 4096"),
            "{}",
            refused.message
        );
        assert_eq!(s.snapshot("k"), before, "nothing changed");
        assert_eq!(s.recorded_size("k"), encoded_len(&before.value));
    }
}
