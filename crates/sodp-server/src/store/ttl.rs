//! Keys that expire (extension `ttl`): the deadlines, and the task that
//! deletes keys when theirs passes.
//!
//! Deadlines (Unix ms) are kept in one ordered set of `(deadline, key)`, so
//! an idle key with a deadline costs one entry and no CPU: the expiry task
//! sleeps until the earliest deadline (woken early when an earlier one is
//! set), takes every entry that is due, and deletes each key exactly as
//! `state.delete` would — a new version, `REMOVE "/"`, history — if the key
//! still has that deadline (a write since may have moved or removed it; its
//! old entry is removed then, too).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sodp_proto::{DeltaOp, Value};
use tokio::sync::Notify;

use super::{lock, Store};
use crate::shared::Shared;
use crate::size;

/// A change of a key's deadline a write asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Expire at this Unix time (ms).
    At(u64),
    /// No deadline any more (`ttl_ms: 0`).
    Clear,
}

/// Every deadline, earliest first.
#[derive(Default)]
pub struct Timers {
    due: Mutex<BTreeSet<(u64, Arc<str>)>>,
    earlier: Notify,
}

impl Timers {
    /// Records that `key` now expires at `new` instead of `old`.
    pub(super) fn moved(&self, key: &Arc<str>, old: Option<u64>, new: Option<u64>) {
        let mut due = lock(&self.due);
        if let Some(old) = old {
            due.remove(&(old, key.clone()));
        }
        if let Some(new) = new {
            let earliest = due.first().is_none_or(|(first, _)| new < *first);
            due.insert((new, key.clone()));
            if earliest {
                self.earlier.notify_one();
            }
        }
    }

    fn next(&self) -> Option<u64> {
        lock(&self.due).first().map(|(at, _)| *at)
    }

    pub(super) fn take_due(&self, now: u64) -> Vec<(u64, Arc<str>)> {
        let mut due = lock(&self.due);
        let mut taken = Vec::new();
        while let Some(first) = due.first() {
            if first.0 > now {
                break;
            }
            taken.extend(due.pop_first());
        }
        taken
    }

    /// Deadlines held (for tests and inspection).
    pub fn len(&self) -> usize {
        lock(&self.due).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Store {
    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// Deletes `key` if its deadline is still `at`.
    /// Its DELTA is written straight to the subscribers' sockets once the
    /// key's lock is released, without waking their tasks.
    pub(super) fn expire(&self, key: &str, at: u64) {
        let _flush = crate::outbox::FlushScope::open(&self.metrics.bytes_out, None);
        if let Some(remote) = self.remote() {
            return self.expire_remote(remote, key, at);
        }
        self.with_existing(key, |slot, st| {
            if st.expires_at != Some(at) {
                return;
            }
            st.expires_at = None;
            if !st.initialized {
                return;
            }
            let size_after = size::after_set(&Value::Nil);
            self.memory.release(st.size.saturating_sub(size_after));
            st.size = size_after;
            st.value = Value::Nil;
            self.commit_expiring(slot, st, vec![DeltaOp::remove("/")], Some(0), None);
            st.initialized = false;
        });
    }
}

/// The expiry task: runs until the server stops.
pub async fn expire_keys(shared: Arc<Shared>) {
    let store = &shared.store;
    let timers = store.timers();
    loop {
        let now = shared.clock.since_epoch().as_millis() as u64;
        for (at, key) in timers.take_due(now) {
            store.expire(&key, at);
        }
        let earlier = timers.earlier.notified();
        match timers.next() {
            Some(at) => {
                let wait = Duration::from_millis(at.saturating_sub(now).max(1));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = earlier => {}
                }
            }
            None => earlier.await,
        }
    }
}
