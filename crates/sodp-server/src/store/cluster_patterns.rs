//! Pattern streams in cluster mode, sequenced by Redis's commit order.
//!
//! A pattern stream must carry strictly increasing versions across all the
//! keys below its prefix. On one node that holds because every commit takes
//! its version under the pattern lock; in a cluster, versions are assigned
//! by Redis, and a node learns of its own commits (from the script's reply)
//! and of other nodes' (from pub/sub) at different moments. So here a
//! pattern stream is fed only by the fanout's pattern messages, which one
//! pub/sub connection receives in the order Redis committed them:
//!
//! - WATCH: subscribe to the prefix's channels (confirmed), register the
//!   subscriber as pending (messages are buffered), read the snapshot from
//!   Redis in one atomic step at version C; STATE_INIT at C, then the
//!   buffered changes after C, then live. Every change after C was
//!   published after the snapshot, so it arrives; every one at or before C
//!   is in it.
//! - Each entry remembers the version of every key its live subscribers'
//!   maps hold (`fed`), so a change that does not follow (a lost message)
//!   is noticed: the fanout then reads a fresh snapshot and sends every
//!   live subscriber a new STATE_INIT ([`Store::reinit_pattern`]), as it
//!   does for every pattern after the pub/sub connection comes back.
//! - A RESUME of a pattern gets STATE_INIT alone (no replay): Redis keeps
//!   no index of deleted keys, so a replay could not be shown complete.

use std::collections::HashMap;
use std::sync::Arc;

use sodp_proto::{DeltaOp, Map, OpKind, Value};

use super::patterns::{fits, prefixed, Entry, PatternWatch, ReadCheck};
use super::remote::{Change, PatternSnapshot, Remote};
use super::{lock, Store};
use crate::error::{ErrorCode, Rejection};
use crate::wire;

/// How a pattern message met the entry of its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// Sent on (or buffered, or nobody listens).
    Sent,
    /// Already fed (a duplicate, or a change the snapshot held).
    Duplicate,
    /// It does not follow what the subscribers hold: read a new snapshot.
    Gap,
}

/// Whether `ops` leave the key without a value (its last root op removes).
fn removes(ops: &[DeltaOp]) -> bool {
    ops.iter()
        .rev()
        .find(|op| op.path == "/")
        .is_some_and(|op| op.kind == OpKind::Remove)
}

impl Entry {
    /// Whether `change` of `key` is the next one for the live subscribers.
    fn follows(&self, key: &str, change: &Change) -> Fed {
        let whole = change
            .ops
            .first()
            .is_some_and(|op| op.path == "/" && op.kind == OpKind::Add);
        match self.fed.get(key) {
            Some(&at) if at >= change.version => Fed::Duplicate,
            _ if whole => Fed::Sent,
            Some(&at) if at == change.prev => Fed::Sent,
            None if change.prev == 0 => Fed::Sent,
            _ => Fed::Gap,
        }
    }

    /// Records that the subscribers' maps now hold `change` of `key`.
    fn feed(&mut self, key: &Arc<str>, version: u64, ops: &[DeltaOp]) {
        match removes(ops) {
            true => self.fed.remove(key),
            false => self.fed.insert(key.clone(), version),
        };
    }

    /// `snapshot`'s versions, as what the subscribers' maps hold.
    fn feed_snapshot(&mut self, snapshot: &PatternSnapshot) {
        self.fed = snapshot
            .keys
            .iter()
            .map(|(key, at, _)| (Arc::from(key.as_str()), *at))
            .collect();
    }

    fn has_live(&self) -> bool {
        self.subs.values().any(|sub| sub.pending.is_none())
    }
}

/// The map of a snapshot's keys that `may_read` lets through.
fn visible_map(snapshot: &PatternSnapshot, may_read: &ReadCheck) -> Value {
    let map: Map = snapshot
        .keys
        .iter()
        .filter(|(key, _, _)| may_read(key))
        .map(|(key, _, value)| (key.clone(), value.clone()))
        .collect();
    Value::from(map)
}

impl Store {
    /// A pattern WATCH or RESUME in cluster mode (the prefix's channels are
    /// already subscribed): snapshot from Redis, STATE_INIT, buffered
    /// changes after it, live. Returns `None`: nothing is replayed.
    pub(super) fn watch_pattern_cluster(
        &self,
        remote: &dyn Remote,
        watch: PatternWatch<'_>,
    ) -> Result<Option<usize>, Rejection> {
        let PatternWatch {
            pattern,
            prefix,
            outbox,
            seq,
            params,
            may_read,
            max_bytes,
            since: _,
        } = watch;
        let session = outbox.id();
        self.add_pending(pattern, prefix, outbox, &may_read);
        let refuse = |e: Rejection| {
            self.unwatch_pattern_local(prefix, session);
            Err(e)
        };
        let snapshot = match remote.pattern_snapshot(prefix, max_bytes) {
            Ok(snapshot) => snapshot,
            Err(e) => return refuse(e),
        };
        let value = visible_map(&snapshot, &may_read);
        if let Err(refusal) = fits(pattern, &value, max_bytes) {
            return refuse(refusal);
        }
        let mut entries = lock(&self.patterns.entries);
        let Some(entry) = entries.get_mut(prefix) else {
            // A pattern with a pending subscriber is never removed.
            return Err(Rejection::new(ErrorCode::Internal, "pattern lost"));
        };
        let first_live = !entry.has_live();
        let buffered = entry
            .subs
            .get_mut(&session)
            .and_then(|sub| sub.pending.take())
            .unwrap_or_default();
        outbox.push(wire::state_init(
            entry.stream_id,
            seq,
            pattern,
            snapshot.version,
            &value,
            true,
            params,
            None,
        ));
        if first_live {
            entry.feed_snapshot(&snapshot);
        }
        let mut after = snapshot.version;
        for (version, key, ops, _) in buffered {
            if version <= after {
                continue; // In the snapshot.
            }
            if first_live {
                entry.feed(&key, version, &ops);
            }
            outbox.push(wire::delta_naming(
                entry.stream_id,
                &entry.pattern,
                version,
                &ops,
                None,
            ));
            after = version - 1;
        }
        if let Some(sub) = entry.subs.get_mut(&session) {
            sub.after = after;
        }
        Ok(None)
    }

    /// A pattern message from the fanout: `change` of `key`, for the
    /// pattern with `prefix`, sent to its live subscribers (buffered for
    /// pending ones) unless it was fed already or does not follow.
    pub fn publish_remote(&self, prefix: &str, key: &str, change: &Change) -> Fed {
        // Sends after the pattern's lock is released (see `apply_change`).
        let _flush = crate::outbox::FlushScope::open(&self.metrics.bytes_out, None);
        let mut entries = lock(&self.patterns.entries);
        let Some(entry) = entries.get_mut(prefix) else {
            return Fed::Sent;
        };
        let live = entry.has_live();
        if live {
            match entry.follows(key, change) {
                Fed::Sent => {}
                other => return other,
            }
        }
        let key: Arc<str> = Arc::from(key);
        if live {
            entry.feed(&key, change.version, &change.ops);
        }
        let ops: Vec<DeltaOp> = change.ops.iter().map(|op| prefixed(&key, op)).collect();
        let mut to = Vec::new();
        for sub in entry.subs.values_mut() {
            if !(sub.may_read)(&key) {
                continue;
            }
            match &mut sub.pending {
                Some(buffer) => buffer.push((change.version, key.clone(), ops.clone(), 0)),
                None if change.version > sub.after => {
                    sub.after = change.version - 1;
                    to.push(sub.outbox.clone());
                }
                None => {}
            }
        }
        if !to.is_empty() {
            self.metrics.deliveries.inc_by(to.len() as u64);
            let frame =
                wire::delta_naming(entry.stream_id, &entry.pattern, change.version, &ops, None);
            for outbox in to {
                outbox.push(frame.clone());
            }
        }
        Fed::Sent
    }

    /// After a missed change (or a pub/sub reconnect): every live
    /// subscriber of the pattern with `prefix` gets a new STATE_INIT from
    /// `snapshot`, and the stream goes on from its version.
    pub fn reinit_pattern(&self, prefix: &str, snapshot: &PatternSnapshot) {
        let mut entries = lock(&self.patterns.entries);
        let Some(entry) = entries.get_mut(prefix) else {
            return;
        };
        entry.feed_snapshot(snapshot);
        let mut values: HashMap<*const (), Value> = HashMap::new();
        for sub in entry.subs.values_mut() {
            if sub.pending.is_some() || sub.after >= snapshot.version {
                continue;
            }
            // Subscribers with the same read check share one map.
            let id = Arc::as_ptr(&sub.may_read) as *const ();
            let value = values
                .entry(id)
                .or_insert_with(|| visible_map(snapshot, &sub.may_read));
            sub.outbox.push(wire::state_init(
                entry.stream_id,
                0,
                &entry.pattern,
                snapshot.version,
                value,
                true,
                None,
                None,
            ));
            sub.after = snapshot.version;
        }
    }

    /// The prefixes with a pattern subscriber on this node.
    pub fn pattern_prefixes(&self) -> Vec<String> {
        lock(&self.patterns.entries).keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fed: &[(&str, u64)]) -> Entry {
        Entry {
            pattern: Arc::from("a.*"),
            stream_id: 1,
            subs: HashMap::new(),
            fed: fed.iter().map(|(k, v)| (Arc::from(*k), *v)).collect(),
        }
    }

    fn change(prev: u64, version: u64, ops: Vec<DeltaOp>) -> Change {
        Change {
            prev,
            version,
            ops,
            expires: None,
            size: None,
        }
    }

    #[test]
    fn a_change_follows_what_the_maps_hold_or_is_a_gap() {
        let e = entry(&[("a.x", 5)]);
        let update = || vec![DeltaOp::update("/n", Value::Int(1))];
        assert_eq!(e.follows("a.x", &change(5, 7, update())), Fed::Sent);
        assert_eq!(e.follows("a.x", &change(5, 5, update())), Fed::Duplicate);
        assert_eq!(e.follows("a.x", &change(3, 4, update())), Fed::Duplicate);
        assert_eq!(e.follows("a.x", &change(6, 8, update())), Fed::Gap);
        // A key the maps lack: its creation follows whatever came before
        // (a delete the maps never held), anything else is missing it.
        let create = vec![DeltaOp::add("/", Value::Int(1))];
        assert_eq!(e.follows("a.y", &change(9, 10, create)), Fed::Sent);
        assert_eq!(e.follows("a.y", &change(0, 10, update())), Fed::Sent);
        assert_eq!(e.follows("a.y", &change(9, 10, update())), Fed::Gap);
    }

    #[test]
    fn a_deleted_key_is_forgotten() {
        let mut e = entry(&[("a.x", 5)]);
        let key: Arc<str> = Arc::from("a.x");
        e.feed(&key, 6, &[DeltaOp::remove("/")]);
        assert!(e.fed.is_empty());
        e.feed(&key, 7, &[DeltaOp::add("/", Value::Int(1))]);
        assert_eq!(e.fed.get("a.x"), Some(&7));
    }
}
