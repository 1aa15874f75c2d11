//! One-shot reads (extension `read`): a key's state, a page of the keys that
//! hold a value, a page of a key's retained history.
//!
//! Each read also returns the storage ticket of the newest change it shows:
//! its RESULT must not leave before that change is durable, exactly as a
//! DELTA or STATE_INIT showing it would not.

use std::ops::Bound;
use std::sync::Arc;

use sodp_proto::Value;

use super::{lock, Snapshot, Store};
use crate::storage::Ticket;

/// How many key names are taken from the ordered index per lock of it.
const BATCH: usize = 128;

/// A page of `state.keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysPage {
    pub keys: Vec<String>,
    /// The `after` of the next page, when more keys may follow.
    pub next: Option<String>,
    pub ticket: Ticket,
}

/// A page of `state.history`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// Each change's version and its ops (as the DELTA carried them).
    pub entries: Vec<(u64, Value)>,
    /// No change after `since` is missing before the first entry.
    pub complete: bool,
    pub ticket: Ticket,
}

/// `key` is `prefix` or below it by whole segments (`""`: every key).
pub(super) fn under(key: &str, prefix: &str) -> bool {
    match key.strip_prefix(prefix) {
        Some(rest) => prefix.is_empty() || rest.is_empty() || rest.starts_with('.'),
        None => false,
    }
}

impl Store {
    /// The current state of `key` and the ticket of its last change.
    pub fn read(&self, key: &str) -> (Snapshot, Ticket) {
        if let Some(remote) = self.remote() {
            // Cluster mode: the copy may be behind (no local watcher keeps
            // it current); while Redis is away, the copy is the answer.
            let _ = self.catch_up(remote, key);
        }
        self.with_existing(key, |_, st| {
            let snapshot = Snapshot {
                value: st.value.clone(),
                version: st.version,
                initialized: st.initialized,
            };
            (snapshot, st.last_ticket)
        })
        .unwrap_or((
            Snapshot {
                value: Value::Nil,
                version: 0,
                initialized: false,
            },
            0,
        ))
    }

    /// The keys holding a value, `prefix` or below it (`""`: all), in byte
    /// order, strictly after `after`, at most `limit`, that `visible` lets
    /// through. Walks the ordered index from the first possible key and
    /// stops at the page's end, never touching keys outside `prefix`.
    pub fn keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        mut visible: impl FnMut(&str) -> bool,
    ) -> KeysPage {
        if let Some(remote) = self.remote() {
            // While Redis is away, this node's keys are the answer.
            if let Ok(page) = self.keys_remote(remote, prefix, after, limit, &mut visible) {
                return page;
            }
        }
        let mut page = KeysPage {
            keys: Vec::new(),
            next: None,
            ticket: 0,
        };
        let mut cursor: Bound<Arc<str>> = match after {
            Some(after) if after >= prefix => Bound::Excluded(Arc::from(after)),
            _ => Bound::Included(Arc::from(prefix)),
        };
        loop {
            let batch: Vec<Arc<str>> = {
                let order = lock(&self.order);
                let from = match &cursor {
                    Bound::Included(k) => Bound::Included(&**k),
                    Bound::Excluded(k) => Bound::Excluded(&**k),
                    Bound::Unbounded => Bound::Unbounded,
                };
                order
                    .range::<str, _>((from, Bound::Unbounded))
                    .take_while(|k| k.starts_with(prefix))
                    .take(BATCH)
                    .cloned()
                    .collect()
            };
            if batch.is_empty() {
                return page;
            }
            for key in batch {
                cursor = Bound::Excluded(key.clone());
                if !under(&key, prefix) {
                    continue;
                }
                if page.keys.len() == limit {
                    // Another candidate exists: more may follow.
                    page.next = page.keys.last().cloned();
                    return page;
                }
                let held = self
                    .with_existing(&key, |_, st| st.initialized.then_some(st.last_ticket))
                    .flatten();
                if let Some(ticket) = held {
                    if visible(&key) {
                        page.ticket = page.ticket.max(ticket);
                        page.keys.push(key.to_string());
                    }
                }
            }
        }
    }

    /// The retained changes of `key` after `since`, oldest first, at most
    /// `limit` (a never-written key: none, and complete).
    pub fn history(&self, key: &str, since: u64, limit: usize) -> HistoryPage {
        if let Some(remote) = self.remote() {
            if let Ok(page) = self.history_remote(remote, key, since, limit) {
                return page;
            }
        }
        self.with_existing(key, |_, st| {
            let (changes, complete) = st.history.since(since, limit);
            let entries = changes
                .filter_map(|(version, change)| Some((version, change.ops_value()?)))
                .collect();
            HistoryPage {
                entries,
                complete,
                ticket: st.last_ticket,
            }
        })
        .unwrap_or(HistoryPage {
            entries: Vec::new(),
            complete: true,
            ticket: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::under;

    #[test]
    fn under_means_by_whole_segments() {
        assert!(under("a.b", "a.b"));
        assert!(under("a.b.c", "a.b"));
        assert!(!under("a.bc", "a.b"));
        assert!(!under("a", "a.b"));
        assert!(under("anything", ""));
    }
}
