//! Cluster mode: what sessions read — WATCH and RESUME (subscribe at the
//! engine, catch up, then serve from the copy; replay from the engine's
//! history when the node's own does not reach back), pattern subscriptions at
//! the engine, `state.keys` from the engine's key index, `state.history` from the
//! engine's history.

use std::sync::Arc;

use sodp_proto::{DeltaOp, Value};

use super::remote::{CatchUp, Change, Remote};
use super::Store;
use crate::error::Rejection;
use crate::outbox::{Outbox, SessionId};

impl Store {
    /// WATCH in cluster mode: subscribe at the engine, catch the copy up,
    /// then STATE_INIT from the copy (changes after it arrive by fanout).
    pub(super) fn watch_remote(
        &self,
        remote: &dyn Remote,
        key: &str,
        outbox: &Arc<Outbox>,
        seq: u64,
        params: Option<&Value>,
    ) -> Result<(), Rejection> {
        let counted = self.watch_engine(remote, key, outbox)?;
        let result = self.with_slot(key, |slot, st| {
            self.subscribe(slot, st, outbox, seq, params)
        });
        if result.is_err() && counted {
            remote.unwatch(key);
        }
        result
    }

    /// Subscribes at the engine (unless this session already watches the
    /// key) and catches the copy up. Returns whether it subscribed.
    fn watch_engine(
        &self,
        remote: &dyn Remote,
        key: &str,
        outbox: &Arc<Outbox>,
    ) -> Result<bool, Rejection> {
        let already = self
            .with_existing(key, |_, st| st.subscribers.contains_key(&outbox.id()))
            .unwrap_or(false);
        if !already {
            remote.watch(key)?;
        }
        if let Err(e) = self.catch_up(remote, key) {
            if !already {
                remote.unwatch(key);
            }
            return Err(e);
        }
        Ok(!already)
    }

    /// A pattern WATCH/RESUME in cluster mode: subscribe to the channels
    /// below `prefix` (unless this session already is), confirmed by Redis
    /// before the snapshot is read (see `cluster_patterns.rs`). Returns
    /// whether it subscribed.
    pub(super) fn watch_prefix_remote(
        &self,
        remote: &dyn Remote,
        prefix: &str,
        session: SessionId,
    ) -> Result<bool, Rejection> {
        if self.pattern_has(prefix, session) {
            return Ok(false);
        }
        remote.watch_prefix(prefix)?;
        Ok(true)
    }

    /// The keys this node holds a copy of below `prefix` (`""`: all).
    pub fn keys_held_under(&self, prefix: &str) -> Vec<String> {
        super::lock(&self.order)
            .iter()
            .filter(|k| super::patterns::below(k, prefix))
            .map(|k| k.to_string())
            .collect()
    }

    /// `state.keys` in cluster mode: paged from Redis's index of keys with
    /// a value (what this node holds may be a subset).
    pub(super) fn keys_remote(
        &self,
        remote: &dyn Remote,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        mut visible: impl FnMut(&str) -> bool,
    ) -> Result<super::KeysPage, Rejection> {
        const PAGE: usize = 256;
        let mut page = super::KeysPage {
            keys: Vec::new(),
            next: None,
            ticket: 0,
        };
        let mut cursor = match after {
            Some(after) if after >= prefix => (after.to_owned(), false),
            _ => (prefix.to_owned(), true),
        };
        loop {
            let bound = match cursor.1 {
                true => std::ops::Bound::Included(cursor.0.as_str()),
                false => std::ops::Bound::Excluded(cursor.0.as_str()),
            };
            let batch = remote.key_range(bound, PAGE)?;
            let full = batch.len() == PAGE;
            for key in batch {
                if !key.starts_with(prefix) {
                    return Ok(page);
                }
                cursor = (key.clone(), false);
                if !super::read::under(&key, prefix) {
                    continue;
                }
                if page.keys.len() == limit {
                    page.next = page.keys.last().cloned();
                    return Ok(page);
                }
                if visible(&key) {
                    page.keys.push(key);
                }
            }
            if !full {
                return Ok(page);
            }
        }
    }

    /// `state.history` in cluster mode: from Redis's history of the key,
    /// written by any node.
    pub(super) fn history_remote(
        &self,
        remote: &dyn Remote,
        key: &str,
        since: u64,
        limit: usize,
    ) -> Result<super::HistoryPage, Rejection> {
        let (changes, complete) = match remote.catch_up(key, since)? {
            CatchUp::Current => (Vec::new(), true),
            CatchUp::Changes(changes) => (changes, true),
            CatchUp::Image(image) => (
                image
                    .later
                    .into_iter()
                    .filter(|c| c.version > since)
                    .collect(),
                false,
            ),
        };
        let entries = changes
            .into_iter()
            .take(limit)
            .map(|c| {
                let ops = c.ops.iter().map(DeltaOp::to_value).collect();
                (c.version, Value::Array(Arc::new(ops)))
            })
            .collect();
        Ok(super::HistoryPage {
            entries,
            complete,
            ticket: 0,
        })
    }

    /// RESUME in cluster mode: replay from the node's history if it holds
    /// every change after `since`, else from the engine's (written by any
    /// node), then STATE_INIT.
    pub(super) fn resume_remote(
        &self,
        remote: &dyn Remote,
        key: &str,
        since: u64,
        outbox: &Arc<Outbox>,
        seq: u64,
        params: Option<&Value>,
    ) -> Result<Option<usize>, Rejection> {
        let counted = self.watch_engine(remote, key, outbox)?;
        let local = self
            .with_existing(key, |_, st| st.history.can_replay_since(since))
            .unwrap_or(false);
        let fetched = match local {
            true => None,
            false => match remote.catch_up(key, since) {
                Ok(CatchUp::Changes(changes)) => Some(changes),
                Ok(CatchUp::Current) => Some(Vec::new()),
                _ => None,
            },
        };
        let result = self.with_slot(key, |slot, st| {
            let replayed = if let Some(frames) = st.history.replay_since(since, slot) {
                outbox.push_all(&frames);
                Some(frames.len())
            } else {
                fetched.and_then(|changes| {
                    let upto: Vec<&Change> =
                        changes.iter().filter(|c| c.version <= st.version).collect();
                    let reaches = upto
                        .last()
                        .map_or(since == st.version, |c| c.version == st.version);
                    reaches.then(|| {
                        let frames: Vec<_> = upto
                            .iter()
                            .map(|c| slot.replayed_delta(c.version, &c.ops, c.expires))
                            .collect();
                        outbox.push_all(&frames);
                        frames.len()
                    })
                })
            };
            self.subscribe(slot, st, outbox, seq, params);
            replayed
        });
        if result.is_err() && counted {
            remote.unwatch(key);
        }
        result
    }
}
