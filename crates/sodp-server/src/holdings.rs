//! What a session holds in the store — its subscriptions and presence
//! bindings — and the guarantee that it lets go.
//!
//! [`Holdings`] releases everything when dropped: every key is unwatched,
//! every presence path the session still owns is removed (a versioned change
//! every watcher sees), and the session leaves the server's registry. Being
//! a drop guard, it runs however the session task ends — a return, an early
//! `?`, a panic unwinding through it — so a bug can never leave a ghost
//! cursor behind.

use std::sync::Arc;

use crate::outbox::SessionId;
use crate::registry::SessionInfo;
use crate::shared::Shared;

/// The sets themselves live in the session's [`SessionInfo`], so that an
/// administrator can list them; only this session and an admin call lock
/// them.
pub struct Holdings {
    shared: Arc<Shared>,
    session: SessionId,
    info: Arc<SessionInfo>,
}

impl Holdings {
    pub fn new(shared: Arc<Shared>, info: Arc<SessionInfo>) -> Holdings {
        Holdings {
            shared,
            session: info.id,
            info,
        }
    }

    /// The session as the registry shows it.
    pub fn info(&self) -> &Arc<SessionInfo> {
        &self.info
    }

    pub fn is_watching(&self, key: &str) -> bool {
        self.info.held().watched.contains(key)
    }

    pub fn watch_count(&self) -> usize {
        self.info.held().watched.len()
    }

    /// Records a subscription the store has made.
    pub fn hold_watch(&mut self, key: &str) {
        let mut held = self.info.held();
        if !held.watched.contains(key) {
            held.watched.insert(key.to_owned());
        }
    }

    /// Ends a subscription (if held) in the store.
    pub fn release_watch(&mut self, key: &str) {
        let removed = self.info.held().watched.remove(key);
        if removed {
            self.shared.store.unwatch(key, self.session);
        }
    }

    pub fn holds_presence(&self, key: &str, path: &str) -> bool {
        self.info
            .held()
            .presence
            .get(key)
            .is_some_and(|paths| paths.contains(path))
    }

    pub fn presence_count(&self) -> usize {
        self.info.held().presence_count
    }

    /// Records a presence binding the store has made.
    pub fn hold_presence(&mut self, key: String, path: String) {
        let mut held = self.info.held();
        if held.presence.entry(key).or_default().insert(path) {
            held.presence_count += 1;
        }
    }

    /// Releases everything now (also done on drop). The sets are taken out
    /// first: the store is never called with them locked.
    pub fn release_all(&mut self) {
        let (watched, presence) = {
            let mut held = self.info.held();
            held.presence_count = 0;
            (
                std::mem::take(&mut held.watched),
                std::mem::take(&mut held.presence),
            )
        };
        let store = &self.shared.store;
        for key in watched {
            store.unwatch(&key, self.session);
        }
        for (key, paths) in presence {
            for path in paths {
                store.release_presence(&key, &path, self.session);
            }
        }
    }
}

impl Drop for Holdings {
    fn drop(&mut self) {
        self.release_all();
        self.shared.deregister(self.session);
    }
}
