//! What a session holds in the store — its subscriptions and presence
//! bindings — and the guarantee that it lets go.
//!
//! [`Holdings`] releases everything when dropped: every key is unwatched,
//! every presence path the session still owns is removed (a versioned change
//! every watcher sees), and the session leaves the server's registry. Being
//! a drop guard, it runs however the session task ends — a return, an early
//! `?`, a panic unwinding through it — so a bug can never leave a ghost
//! cursor behind.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::outbox::SessionId;
use crate::shared::Shared;

pub struct Holdings {
    shared: Arc<Shared>,
    session: SessionId,
    watched: HashSet<String>,
    /// key → normalised paths bound there by `state.presence`.
    presence: HashMap<String, HashSet<String>>,
    presence_count: usize,
}

impl Holdings {
    pub fn new(shared: Arc<Shared>, session: SessionId) -> Holdings {
        Holdings {
            shared,
            session,
            watched: HashSet::new(),
            presence: HashMap::new(),
            presence_count: 0,
        }
    }

    pub fn is_watching(&self, key: &str) -> bool {
        self.watched.contains(key)
    }

    pub fn watch_count(&self) -> usize {
        self.watched.len()
    }

    /// Records a subscription the store has made.
    pub fn hold_watch(&mut self, key: &str) {
        if !self.watched.contains(key) {
            self.watched.insert(key.to_owned());
        }
    }

    /// Ends a subscription (if held) in the store.
    pub fn release_watch(&mut self, key: &str) {
        if self.watched.remove(key) {
            self.shared.store.unwatch(key, self.session);
        }
    }

    pub fn holds_presence(&self, key: &str, path: &str) -> bool {
        self.presence
            .get(key)
            .is_some_and(|paths| paths.contains(path))
    }

    pub fn presence_count(&self) -> usize {
        self.presence_count
    }

    /// Records a presence binding the store has made.
    pub fn hold_presence(&mut self, key: String, path: String) {
        if self.presence.entry(key).or_default().insert(path) {
            self.presence_count += 1;
        }
    }

    /// Releases everything now (also done on drop).
    pub fn release_all(&mut self) {
        let store = &self.shared.store;
        for key in self.watched.drain() {
            store.unwatch(&key, self.session);
        }
        for (key, paths) in self.presence.drain() {
            for path in paths {
                store.release_presence(&key, &path, self.session);
            }
        }
        self.presence_count = 0;
    }
}

impl Drop for Holdings {
    fn drop(&mut self) {
        self.release_all();
        self.shared.deregister(self.session);
    }
}
