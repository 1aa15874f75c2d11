//! Pattern subscriptions (extension `prefix_watch`): one stream whose value
//! is the map from key to value of every key below a prefix (`a.b.*`) or of
//! every key (`*`).
//!
//! # Index
//! Patterns are kept by prefix (`""` for `*`). The patterns a written key
//! matches are found by looking up each of its proper prefixes by whole
//! segments (`a.b.c`: `""`, `a`, `a.b`) — as many hash lookups as the key
//! has segments, however many patterns are registered. With no pattern at
//! all a commit only reads one atomic counter.
//!
//! # Order
//! A commit to a key that matches a pattern takes its version, appends to
//! storage and queues its pattern DELTAs with the pattern lock held (lock
//! order: slot → patterns), so every pattern stream sees versions in
//! increasing order. A WATCH registers the subscriber as *pending* (its
//! DELTAs are buffered), reads each matching key under that key's lock with
//! no pattern lock held, then, under the pattern lock, applies the buffered
//! DELTAs newer than what it read, queues STATE_INIT and goes live. So the
//! snapshot holds every change up to its version and none later, and every
//! later DELTA has a higher version.
//!
//! # ACL
//! Each subscriber carries a read check for its identity (as of the WATCH);
//! keys it may not read are left out of its snapshot and its DELTAs.
//!
//! In cluster mode the stream is sequenced by the fanout instead (snapshot
//! from Redis, changes in Redis's commit order): `cluster_patterns.rs`.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sodp_proto::codec::encoded_len;
use sodp_proto::{delta, DeltaOp, Map, Value};

use super::{lock, Store};
use crate::error::{ErrorCode, Rejection};
use crate::outbox::{Outbox, SessionId};
use crate::storage::{Delivery, Storage, Ticket};
use crate::wire;

/// Whether a subscriber may read a key.
pub type ReadCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A DELTA buffered for a pending subscriber: version, key, prefixed ops,
/// ticket.
type Buffered = (u64, Arc<str>, Vec<DeltaOp>, Ticket);

pub(super) struct Sub {
    pub(super) outbox: Arc<Outbox>,
    pub(super) may_read: ReadCheck,
    /// `None`: live; `Some`: the WATCH is reading the keys.
    pub(super) pending: Option<Vec<Buffered>>,
    /// Cluster mode: only versions above this one are sent — the snapshot's
    /// version, then one less than the last version sent (a transaction's
    /// keys share one version; nothing older may follow).
    pub(super) after: u64,
}

pub(super) struct Entry {
    pub(super) pattern: Arc<str>,
    pub(super) stream_id: u32,
    pub(super) subs: HashMap<SessionId, Sub>,
    /// Cluster mode: the version of each key with a value that the live
    /// subscribers' maps hold (to tell a missed change from the next).
    pub(super) fed: HashMap<Arc<str>, u64>,
}

/// Every pattern subscription, by prefix.
#[derive(Default)]
pub struct Patterns {
    count: AtomicUsize,
    pub(super) entries: Mutex<HashMap<String, Entry>>,
}

/// A pattern's prefix: `Ok(None)` for a plain key, `Ok(Some(""))` for `*`,
/// `Ok(Some("a.b"))` for `a.b.*`; any other use of `*` is 400.
pub fn parse_pattern(state: &str) -> Result<Option<&str>, Rejection> {
    if !state.contains('*') {
        return Ok(None);
    }
    if state == "*" {
        return Ok(Some(""));
    }
    match state.strip_suffix(".*") {
        Some(prefix) if !prefix.is_empty() && !prefix.contains('*') => Ok(Some(prefix)),
        _ => Err(Rejection::bad_request(format!(
            "bad pattern {state:?}: a pattern is `<key prefix>.*` or `*`"
        ))),
    }
}

/// `key` is strictly below `prefix` (`""`: every key).
pub(super) fn below(key: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1)
}

/// The prefixes by whole segments a pattern matching `key` can have.
fn prefixes(key: &str) -> impl Iterator<Item = &str> {
    std::iter::once("").chain(key.match_indices('.').map(move |(i, _)| &key[..i]))
}

/// 413 when a pattern's snapshot `value` is larger than `max_bytes`.
pub(super) fn fits(
    pattern: &str,
    value: &Value,
    max_bytes: Option<usize>,
) -> Result<(), Rejection> {
    let Some(max) = max_bytes else { return Ok(()) };
    let size = encoded_len(value);
    if size <= max {
        return Ok(());
    }
    Err(Rejection::new(
        ErrorCode::PayloadTooLarge,
        format!("{pattern}: the snapshot would be {size} bytes, over the limit of {max} bytes"),
    ))
}

/// A key's op as an op on the pattern's map: the path below `/<key>`.
pub(super) fn prefixed(key: &str, op: &DeltaOp) -> DeltaOp {
    let path = if op.path == "/" {
        format!("/{key}")
    } else {
        format!("/{key}{}", op.path)
    };
    DeltaOp {
        kind: op.kind,
        path,
        value: op.value.clone(),
    }
}

/// Delivers `frame` to `to` once `ticket` is durable.
fn deliver(storage: &Arc<dyn Storage>, ticket: Ticket, to: Vec<Arc<Outbox>>, frame: bytes::Bytes) {
    if to.is_empty() {
        return;
    }
    if storage.is_visible(ticket) {
        for outbox in to {
            outbox.push(frame.clone());
        }
    } else {
        storage.deliver(ticket, Delivery::Fanout(to, frame));
    }
}

/// The pattern lock, held by a commit whose key matches a pattern.
pub struct Publishing<'a>(MutexGuard<'a, HashMap<String, Entry>>);

impl Publishing<'_> {
    /// Queues the pattern DELTAs of a committed change of `key`.
    pub fn publish(
        &mut self,
        storage: &Arc<dyn Storage>,
        key: &Arc<str>,
        version: u64,
        ops: &[DeltaOp],
        ticket: Ticket,
    ) -> usize {
        let mut delivered = 0;
        for prefix in prefixes(key) {
            let Some(entry) = self.0.get_mut(prefix) else {
                continue;
            };
            let ops: Vec<DeltaOp> = ops.iter().map(|op| prefixed(key, op)).collect();
            let mut to = Vec::new();
            for sub in entry.subs.values_mut() {
                if !(sub.may_read)(key) {
                    continue;
                }
                match &mut sub.pending {
                    Some(buffer) => buffer.push((version, key.clone(), ops.clone(), ticket)),
                    None => to.push(sub.outbox.clone()),
                }
            }
            if !to.is_empty() {
                delivered += to.len();
                let frame =
                    wire::delta_naming(entry.stream_id, &entry.pattern, version, &ops, None);
                deliver(storage, ticket, to, frame);
            }
        }
        delivered
    }
}

impl Patterns {
    /// The pattern lock if any pattern matches one of `keys` (none
    /// registered: no lock is taken).
    pub fn matching<'a, 'k>(
        &'a self,
        mut keys: impl Iterator<Item = &'k str>,
    ) -> Option<Publishing<'a>> {
        if self.count.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let entries = lock(&self.entries);
        keys.any(|key| prefixes(key).any(|p| entries.contains_key(p)))
            .then_some(Publishing(entries))
    }
}

/// What a WATCH of a pattern read from one key.
struct Read {
    key: Arc<str>,
    version: u64,
    value: Option<Value>,
    ticket: Ticket,
    /// Changes after `since` (RESUME), and whether none is missing.
    history: Vec<(u64, Vec<DeltaOp>)>,
    complete: bool,
}

/// A WATCH or RESUME of a pattern: the pattern and its prefix, who asks
/// (its outbox, the frame's sequence number and `params`), the read check
/// that filters keys, the snapshot limit (413 above it), and for a RESUME
/// the version to replay from.
pub struct PatternWatch<'a> {
    pub pattern: &'a str,
    pub prefix: &'a str,
    pub outbox: &'a Arc<Outbox>,
    pub seq: u64,
    pub params: Option<&'a Value>,
    pub may_read: ReadCheck,
    pub max_bytes: Option<usize>,
    pub since: Option<u64>,
}

impl Store {
    /// WATCH (`since: None`) or RESUME of the pattern `pattern` (prefix
    /// `prefix`): STATE_INIT with the map of every matching key the session
    /// may read, then live DELTAs; a RESUME first replays every change after
    /// `since` to those keys when all of them are still held. A snapshot
    /// larger than `max_bytes` is 413 and subscribes nothing.
    pub fn watch_pattern(&self, watch: PatternWatch<'_>) -> Result<Option<usize>, Rejection> {
        let Some(remote) = self.remote() else {
            return self.watch_pattern_local(watch);
        };
        let prefix = watch.prefix;
        let counted = self.watch_prefix_remote(remote, prefix, watch.outbox.id())?;
        let result = self.watch_pattern_cluster(remote, watch);
        if counted && result.is_err() {
            remote.unwatch_prefix(prefix);
        }
        result
    }

    /// Registers `outbox` as a pending subscriber of the pattern (its
    /// DELTAs are buffered until it goes live).
    pub(super) fn add_pending(
        &self,
        pattern: &str,
        prefix: &str,
        outbox: &Arc<Outbox>,
        may_read: &ReadCheck,
    ) {
        let mut entries = lock(&self.patterns.entries);
        let entry = entries.entry(prefix.to_owned()).or_insert_with(|| {
            self.patterns.count.fetch_add(1, Ordering::SeqCst);
            Entry {
                pattern: Arc::from(pattern),
                stream_id: self.next_stream.fetch_add(1, Ordering::Relaxed),
                subs: HashMap::new(),
                fed: HashMap::new(),
            }
        });
        entry.subs.insert(
            outbox.id(),
            Sub {
                outbox: outbox.clone(),
                may_read: may_read.clone(),
                pending: Some(Vec::new()),
                after: 0,
            },
        );
    }

    fn watch_pattern_local(&self, watch: PatternWatch<'_>) -> Result<Option<usize>, Rejection> {
        let PatternWatch {
            pattern,
            prefix,
            outbox,
            seq,
            params,
            may_read,
            max_bytes,
            since,
        } = watch;
        let session = outbox.id();
        self.add_pending(pattern, prefix, outbox, &may_read);
        let reads = self.read_matching(prefix, &may_read, since);
        let mut entries = lock(&self.patterns.entries);
        let Some(entry) = entries.get_mut(prefix) else {
            // A pattern with a pending subscriber is never removed.
            return Err(Rejection::new(ErrorCode::Internal, "pattern lost"));
        };
        let buffered = entry
            .subs
            .get_mut(&session)
            .and_then(|sub| sub.pending.take())
            .unwrap_or_default();
        let mut map = Map::default();
        let mut version = 0;
        let mut ticket = 0;
        let mut read_versions = HashMap::new();
        for read in &reads {
            version = version.max(read.version);
            ticket = ticket.max(read.ticket);
            read_versions.insert(read.key.clone(), read.version);
            if let Some(value) = &read.value {
                map.insert(read.key.to_string(), value.clone());
            }
        }
        let mut value = Value::from(map);
        let mut newer = Vec::new();
        for (v, key, ops, t) in buffered {
            if v <= read_versions.get(&key).copied().unwrap_or(0) {
                continue; // Already in what was read.
            }
            for op in &ops {
                // The ops are the key's own, prefixed: they apply.
                let _ = delta::apply_in_place(&mut value, op);
            }
            version = version.max(v);
            ticket = ticket.max(t);
            newer.push((v, ops));
        }
        if let Err(refusal) = fits(pattern, &value, max_bytes) {
            self.remove_sub(&mut entries, prefix, session);
            return Err(refusal);
        }
        let visible = self.storage.is_visible(ticket);
        let mut replayed = None;
        if let Some(since) = since {
            if reads.iter().all(|read| read.complete) {
                let mut changes: Vec<(u64, Vec<DeltaOp>)> = reads
                    .iter()
                    .flat_map(|read| {
                        read.history.iter().map(|(v, ops)| {
                            (*v, ops.iter().map(|op| prefixed(&read.key, op)).collect())
                        })
                    })
                    .chain(newer)
                    .filter(|(v, _)| *v > since)
                    .collect();
                changes.sort_by_key(|(v, _)| *v);
                replayed = Some(changes.len());
                for (v, ops) in changes {
                    let frame = wire::delta_naming(entry.stream_id, &entry.pattern, v, &ops, None);
                    self.send(visible, ticket, outbox, frame);
                }
            }
        }
        let frame = wire::state_init(
            entry.stream_id,
            seq,
            pattern,
            version,
            &value,
            true,
            params,
            None,
        );
        self.send(visible, ticket, outbox, frame);
        if let Some(sub) = entry.subs.get_mut(&session) {
            sub.pending = None;
        }
        Ok(replayed)
    }

    /// Reads every key below `prefix` that the check lets through: its
    /// value if it holds one, and for a RESUME its history after `since`.
    fn read_matching(&self, prefix: &str, may_read: &ReadCheck, since: Option<u64>) -> Vec<Read> {
        let names: Vec<Arc<str>> = {
            let order = lock(&self.order);
            order
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|k| k.starts_with(prefix))
                .filter(|k| below(k, prefix))
                .cloned()
                .collect()
        };
        names
            .into_iter()
            .filter(|key| may_read(key))
            .filter_map(|key| {
                self.with_existing(&key, |_, st| {
                    let (history, complete) = match since {
                        Some(since) => {
                            let (changes, complete) = st.history.since(since, usize::MAX);
                            let history = changes
                                .filter_map(|(v, change)| Some((v, change.ops()?)))
                                .collect();
                            (history, complete)
                        }
                        None => (Vec::new(), true),
                    };
                    Read {
                        key: key.clone(),
                        version: st.version,
                        value: st.initialized.then(|| st.value.clone()),
                        ticket: st.last_ticket,
                        history,
                        complete,
                    }
                })
            })
            .collect()
    }

    /// Whether `session` has a subscription to the pattern with `prefix`.
    pub(super) fn pattern_has(&self, prefix: &str, session: SessionId) -> bool {
        lock(&self.patterns.entries)
            .get(prefix)
            .is_some_and(|entry| entry.subs.contains_key(&session))
    }

    /// Ends `session`'s subscription to the pattern with `prefix`.
    pub fn unwatch_pattern(&self, prefix: &str, session: SessionId) {
        self.unwatch_pattern_local(prefix, session);
        // One call per pattern subscription the session held (even if it
        // was evicted since); not under the pattern lock: it waits for Redis.
        if let Some(remote) = self.remote() {
            remote.unwatch_prefix(prefix);
        }
    }

    pub(super) fn unwatch_pattern_local(&self, prefix: &str, session: SessionId) {
        self.remove_sub(&mut lock(&self.patterns.entries), prefix, session);
    }

    /// Removes `session`'s subscription to `prefix` (and the pattern with
    /// its last one), under the pattern lock `entries` is.
    fn remove_sub(&self, entries: &mut HashMap<String, Entry>, prefix: &str, session: SessionId) {
        if let Some(entry) = entries.get_mut(prefix) {
            entry.subs.remove(&session);
            if entry.subs.is_empty() {
                entries.remove(prefix);
                self.patterns.count.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_prefixes() {
        assert_eq!(parse_pattern("a.b").unwrap(), None);
        assert_eq!(parse_pattern("*").unwrap(), Some(""));
        assert_eq!(parse_pattern("a.b.*").unwrap(), Some("a.b"));
        for bad in ["a*", "a.*.b", ".*", "a.b*", "**", "a.**"] {
            assert!(parse_pattern(bad).is_err(), "{bad}");
        }
        assert!(below("a.b.c", "a.b"));
        assert!(!below("a.b", "a.b"));
        assert!(!below("a.bc", "a.b"));
        assert!(below("x", ""));
        assert_eq!(prefixes("a.b.c").collect::<Vec<_>>(), ["", "a", "a.b"]);
    }
}
