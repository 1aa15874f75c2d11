//! The state store: every key's value, version, history, subscribers and
//! presence bindings, and the one place where a write becomes a change.
//!
//! # Concurrency
//! The key table is a `std::sync::Mutex<HashMap>` held only to find or
//! create a key's slot. Each slot has its own `std::sync::Mutex`: a write
//! locks its key, computes the new value and ops, takes the next global
//! version, records history and queues the DELTA to every subscriber before
//! unlocking. That single critical section is what makes writes to one key
//! atomic and keeps every subscriber's versions strictly increasing. Nothing
//! inside it awaits (queueing is `try_send`), so a blocking mutex is right.
//! Lock order is table → slot, never the reverse.
//!
//! # Where durability and clustering slot in
//! [`Store::commit`] is the single point where a change is known (key,
//! version, ops, new value, encoded frame) and not yet visible. A durable log
//! appends there before publishing; a cluster engine replaces the version
//! counter and publishes the encoded frame to other nodes from there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sodp_proto::codec::encoded_len;
use sodp_proto::frame::FIRST_SUBSCRIPTION_STREAM;
use sodp_proto::merge::Undo;
use sodp_proto::{diff, merge, pointer, DeltaOp, Map, Value};

use crate::error::Rejection;
use crate::history::{History, HistoryBudget};
use crate::outbox::{Outbox, SessionId};
use crate::size;
use crate::wire;

/// Checks a value before it is stored (the schema, when one is loaded).
pub trait Validator: Send + Sync {
    fn validate(&self, key: &str, value: &Value) -> Result<(), Rejection>;
}

/// A write, already parsed from a CALL.
#[derive(Debug, Clone)]
pub enum Mutation {
    Set(Value),
    Patch(Map),
    SetIn {
        path: String,
        value: Value,
    },
    Delete,
    /// `set_in`, and bind the path to `session` (the newest binder owns it).
    Presence {
        path: String,
        value: Value,
        session: SessionId,
    },
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
    pub max_depth: usize,
    pub validator: Option<Arc<dyn Validator>>,
}

/// Shared by every session (cheap to share behind an `Arc`).
pub struct Store {
    keys: Mutex<HashMap<Arc<str>, Arc<KeySlot>>>,
    version: AtomicU64,
    next_stream: AtomicU32,
    history: HistoryBudget,
    max_keys: Option<usize>,
    max_value_bytes: Option<usize>,
    max_depth: usize,
    validator: Option<Arc<dyn Validator>>,
}

/// One key. The stream id is fixed for the slot's life and the same on every
/// session, which is what lets one encoded DELTA serve all subscribers.
pub struct KeySlot {
    key: Arc<str>,
    stream_id: u32,
    state: Mutex<KeyState>,
}

#[derive(Default)]
struct KeyState {
    value: Value,
    /// Encoded size of `value` (see `size`), for `max_value_bytes`.
    size: usize,
    version: u64,
    initialized: bool,
    history: History,
    subscribers: HashMap<SessionId, Arc<Outbox>>,
    /// Presence path (normalised pointer) → the session that bound it last.
    presence: HashMap<String, SessionId>,
    /// Removed from the table; whoever holds this slot must look again.
    retired: bool,
}

impl KeyState {
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

/// A std mutex whose poisoning (a panic elsewhere while holding it) does not
/// take the whole server down: the data is still consistent at every unlock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Store {
    pub fn new(options: StoreOptions) -> Store {
        Store {
            keys: Mutex::new(HashMap::new()),
            version: AtomicU64::new(options.version_base),
            next_stream: AtomicU32::new(FIRST_SUBSCRIPTION_STREAM),
            history: HistoryBudget::new(options.history_len, options.history_bytes),
            max_keys: options.max_keys,
            max_value_bytes: options.max_value_bytes,
            max_depth: options.max_depth,
            validator: options.validator,
        }
    }

    /// Number of keys held (written, watched or bound).
    pub fn key_count(&self) -> usize {
        lock(&self.keys).len()
    }

    /// Bytes of history held across all keys.
    pub fn history_bytes(&self) -> usize {
        self.history.used_bytes()
    }

    /// The latest version issued by this server.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
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

    /// Runs `f` with `key`'s slot locked, creating the slot if needed.
    fn with_slot<R>(
        &self,
        key: &str,
        f: impl FnOnce(&KeySlot, &mut KeyState) -> R,
    ) -> Result<R, Rejection> {
        loop {
            let slot = self.slot(key)?;
            let mut st = lock(&slot.state);
            if !st.retired {
                return Ok(f(&slot, &mut st));
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
        let key: Arc<str> = Arc::from(key);
        let slot = Arc::new(KeySlot {
            key: key.clone(),
            stream_id: self.next_stream.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(KeyState::default()),
        });
        keys.insert(key, slot.clone());
        Ok(slot)
    }

    /// Drops `key`'s slot if nothing refers to it any more (never written,
    /// not watched, no presence), so watching random keys cannot grow the
    /// table without bound.
    fn retire_if_unused(&self, key: &str) {
        let mut keys = lock(&self.keys);
        let Some(slot) = keys.get(key).cloned() else {
            return;
        };
        let mut st = lock(&slot.state);
        if st.is_unused() {
            st.retired = true;
            st.history.clear(&self.history);
            keys.remove(key);
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
        self.with_slot(key, |slot, st| subscribe(slot, st, outbox, seq, params))
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
        self.with_slot(key, |slot, st| {
            let replayed = st.history.replay_since(since).map(|frames| {
                let mut n = 0;
                for frame in frames {
                    outbox.push(frame.clone());
                    n += 1;
                }
                n
            });
            subscribe(slot, st, outbox, seq, params);
            replayed
        })
    }

    /// Stops delivering `key` to `session`.
    pub fn unwatch(&self, key: &str, session: SessionId) {
        let now_unused = self.with_existing(key, |_, st| {
            st.subscribers.remove(&session);
            st.is_unused()
        });
        if now_unused == Some(true) {
            self.retire_if_unused(key);
        }
    }

    /// Applies a write. Returns the version of the change, or the key's
    /// current version if the write changed nothing (no version is taken
    /// and no DELTA is sent in that case).
    pub fn write(&self, key: &str, mutation: Mutation) -> Result<u64, Rejection> {
        self.with_slot(key, |slot, st| self.apply(slot, st, mutation))?
    }

    /// Applies a mutation to the stored value **in place**: the store is the
    /// only holder of its containers, so a write copies nothing but what it
    /// touches, however large the value. If a schema then refuses the
    /// result, the change is undone before anyone sees it.
    fn apply(
        &self,
        slot: &KeySlot,
        st: &mut KeyState,
        mutation: Mutation,
    ) -> Result<u64, Rejection> {
        let size = self.check_size(slot, st, &mutation)?;
        let (ops, undo) = match mutation {
            Mutation::Set(value) => {
                let ops = diff(&st.value, &value);
                let previous = std::mem::replace(&mut st.value, value);
                (ops, Undo::Root(previous))
            }
            Mutation::Patch(patch) => {
                let undo = self.undo_for(|| Undo::before_patch(&st.value, &patch));
                (merge::merge_patch_in_place(&mut st.value, &patch), undo)
            }
            Mutation::SetIn { path, value } => self.set_in(st, &path, value)?,
            Mutation::Presence {
                path,
                value,
                session,
            } => {
                let normalised = pointer::format(&parse_path(&path)?);
                if normalised == "/" {
                    return Err(Rejection::bad_request(
                        "presence needs a path below the root, e.g. \"/alice\"",
                    ));
                }
                let (ops, undo) = self.set_in(st, &normalised, value)?;
                // Bound only once accepted: a refused write binds nothing.
                let version = self.finish(slot, st, ops, undo, size)?;
                st.presence.insert(normalised, session);
                return Ok(version);
            }
            Mutation::Delete => {
                if !st.initialized {
                    return Ok(st.version);
                }
                st.value = Value::Nil;
                st.size = size;
                let version = self.commit(slot, st, vec![DeltaOp::remove("/")]);
                st.initialized = false;
                return Ok(version);
            }
        };
        self.finish(slot, st, ops, undo, size)
    }

    /// The key's size after `mutation`, refused if it would grow past
    /// `max_value_bytes` (a write that shrinks an oversized value is fine).
    fn check_size(
        &self,
        slot: &KeySlot,
        st: &KeyState,
        mutation: &Mutation,
    ) -> Result<usize, Rejection> {
        let after = match mutation {
            Mutation::Set(value) => encoded_len(value),
            Mutation::Patch(patch) => size::after_patch(st.size, &st.value, patch),
            Mutation::SetIn { path, value } | Mutation::Presence { path, value, .. } => {
                size::after_set_in(st.size, &st.value, path, value)
            }
            Mutation::Delete => encoded_len(&Value::Nil),
        };
        match self.max_value_bytes {
            Some(max) if after > max && after > st.size => Err(Rejection::bad_request(format!(
                "{}: the value would be about {after} bytes, over the limit of {max} bytes per key",
                slot.key
            ))),
            _ => Ok(after),
        }
    }

    /// An undo record, taken only when a schema could refuse the change
    /// (taking it shares the entries it saves, which costs a copy of each
    /// when they are then written).
    fn undo_for(&self, take: impl FnOnce() -> Undo) -> Undo {
        match self.validator {
            Some(_) => take(),
            None => Undo::Nothing,
        }
    }

    fn set_in(
        &self,
        st: &mut KeyState,
        path: &str,
        value: Value,
    ) -> Result<(Vec<DeltaOp>, Undo), Rejection> {
        let segments = parse_path(path)?;
        if segments.len() + value.depth() > self.max_depth {
            return Err(Rejection::bad_request(format!(
                "path and value together nest deeper than the limit of {}",
                self.max_depth
            )));
        }
        let first = segments.first().map(String::as_str);
        let undo = self.undo_for(|| Undo::before_change(&st.value, first));
        match merge::set_in_in_place(&mut st.value, path, value) {
            Ok(op) => Ok((op.into_iter().collect(), undo)),
            Err(e) => Err(Rejection::bad_request(e.to_string())),
        }
    }

    /// After a change made in place: nothing to do if nothing changed;
    /// otherwise validate (undoing the change if refused) and commit. A key's
    /// first write is always `ADD "/"` with the whole value.
    fn finish(
        &self,
        slot: &KeySlot,
        st: &mut KeyState,
        ops: Vec<DeltaOp>,
        undo: Undo,
        size: usize,
    ) -> Result<u64, Rejection> {
        if st.initialized && ops.is_empty() {
            return Ok(st.version);
        }
        if let Some(validator) = &self.validator {
            if let Err(refusal) = validator.validate(&slot.key, &st.value) {
                undo.restore(&mut st.value);
                return Err(refusal);
            }
        }
        let ops = if st.initialized {
            ops
        } else {
            st.initialized = true;
            vec![DeltaOp::add("/", st.value.clone())]
        };
        st.size = size;
        Ok(self.commit(slot, st, ops))
    }

    /// The commit point, under the key lock: `st.value` already holds the
    /// new value; take the version, record history, fan out.
    fn commit(&self, slot: &KeySlot, st: &mut KeyState, ops: Vec<DeltaOp>) -> u64 {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        let frame = wire::delta(slot.stream_id, &slot.key, version, &ops);
        st.version = version;
        // A subscriber whose queue is full is evicted (its outbox closes the
        // session) and dropped here; the others are unaffected.
        st.subscribers
            .retain(|_, outbox| outbox.push(frame.clone()));
        // Moved, not cloned: with no subscribers the frame is never shared.
        st.history.push(version, frame, &self.history);
        version
    }

    /// Presence cleanup: if `session` still owns `path` on `key`, removes the
    /// path and publishes the change.
    pub fn release_presence(&self, key: &str, path: &str, session: SessionId) {
        self.with_existing(key, |slot, st| {
            if st.presence.get(path) != Some(&session) {
                return; // Another session has taken the path since.
            }
            st.presence.remove(path);
            let removed = pointer::parse(path)
                .ok()
                .and_then(|segments| delta_lookup_len(&st.value, &segments));
            if let Ok(Some(op)) = merge::remove_in_in_place(&mut st.value, path) {
                st.size = st.size.saturating_sub(removed.unwrap_or(0));
                self.commit(slot, st, vec![op]);
            }
        });
    }
}

/// Queues STATE_INIT — the key's current state, the "live" marker — and
/// adds the subscriber, under the key lock so no change slips in between.
fn subscribe(
    slot: &KeySlot,
    st: &mut KeyState,
    outbox: &Arc<Outbox>,
    seq: u64,
    params: Option<&Value>,
) {
    outbox.push(wire::state_init(
        slot.stream_id,
        seq,
        &slot.key,
        st.version,
        &st.value,
        st.initialized,
        params,
    ));
    st.subscribers.insert(outbox.id(), outbox.clone());
}

/// Encoded length of the value at `segments`, if it exists.
fn delta_lookup_len(value: &Value, segments: &[String]) -> Option<usize> {
    sodp_proto::delta::lookup(value, segments).map(encoded_len)
}

fn parse_path(path: &str) -> Result<Vec<String>, Rejection> {
    pointer::parse(path).map_err(|e| Rejection::bad_request(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sodp_proto::{Frame, FrameType};

    fn store() -> Store {
        Store::new(StoreOptions {
            version_base: 0,
            history_len: 1000,
            history_bytes: 1 << 20,
            max_keys: Some(3),
            max_value_bytes: Some(4096),
            max_depth: 8,
            validator: None,
        })
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
        let v1 = s.write("k", Mutation::Set(json!({"a": 1}).into())).unwrap();
        let v2 = s.write("k", Mutation::Set(json!({"a": 1}).into())).unwrap();
        assert_eq!(v1, v2);
        assert_eq!(s.version(), 1);
    }

    #[test]
    fn watch_then_write_delivers_init_then_delta() {
        let s = store();
        let outbox = Arc::new(Outbox::new(1, 16));
        s.watch("k", &outbox, 1, None).unwrap();
        s.write("k", Mutation::Set(json!({"a": 1}).into())).unwrap();
        s.write("k", Mutation::Delete).unwrap();
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
            s.write("k", Mutation::Set(Value::Int(i))).unwrap();
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
    fn presence_belongs_to_the_newest_binder() {
        let s = store();
        let presence = |session| Mutation::Presence {
            path: "/alice".into(),
            value: Value::Int(session as i64),
            session,
        };
        s.write("c", presence(1)).unwrap();
        s.write("c", presence(2)).unwrap();
        s.release_presence("c", "/alice", 1);
        assert_eq!(s.snapshot("c").value, json!({"alice": 2}).into());
        s.release_presence("c", "/alice", 2);
        assert_eq!(s.snapshot("c").value, json!({}).into());
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
    fn values_cannot_grow_past_the_size_limit() {
        let s = store(); // 4,096 bytes per key
        let chunk = "x".repeat(1000);
        s.write("k", Mutation::Set(json!({"a": chunk}).into()))
            .unwrap();
        for field in ["b", "c", "d"] {
            s.write(
                "k",
                Mutation::Patch(match Value::from(json!({field: chunk})) {
                    Value::Map(m) => (*m).clone(),
                    _ => unreachable!(),
                }),
            )
            .unwrap();
        }
        let before = s.snapshot("k");
        let grow = Mutation::SetIn {
            path: "/e".into(),
            value: Value::from(chunk.clone()),
        };
        let refused = s.write("k", grow).unwrap_err();
        assert!(
            refused.message.contains("over the limit of 4096"),
            "{}",
            refused.message
        );
        assert_eq!(s.snapshot("k"), before, "nothing changed");
        // Shrinking is always allowed, and frees room again.
        s.write(
            "k",
            Mutation::SetIn {
                path: "/a".into(),
                value: Value::Int(1),
            },
        )
        .unwrap();
        s.write(
            "k",
            Mutation::SetIn {
                path: "/e".into(),
                value: Value::from(chunk),
            },
        )
        .unwrap();
        assert!(s
            .write("k", Mutation::Set(Value::from("y".repeat(5000))))
            .is_err());
    }

    #[test]
    fn deep_set_in_paths_are_refused() {
        let s = store();
        let path = "/a".repeat(20);
        assert!(s
            .write(
                "k",
                Mutation::SetIn {
                    path,
                    value: Value::Int(1)
                }
            )
            .is_err());
    }
}
