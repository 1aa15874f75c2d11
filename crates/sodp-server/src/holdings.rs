//! What a session holds in the store — its subscriptions and presence
//! bindings — and the guarantee that it lets go.
//!
//! [`Holdings`] releases everything when dropped: every key is unwatched,
//! every presence path the session still owns is removed (a versioned change
//! every watcher sees), and the session leaves the server's registry. Being
//! a drop guard, it runs however the session task ends — a return, an early
//! `?`, a panic unwinding through it — so a bug can never leave a ghost
//! cursor behind. A session that ends normally releases from its own task
//! ([`Holdings::release_all`]); the guard, in cluster mode, hands its release
//! (which waits for Redis) to a task of its own, so that a runtime shutting
//! down never waits on it.

use std::sync::Arc;

use crate::outbox::SessionId;
use crate::registry::{Held, SessionInfo};
use crate::shared::Shared;
use crate::store::Store;

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

    /// Releases everything now, from the session's own task: how a session
    /// that ends normally lets go (in cluster mode this waits for Redis, so
    /// a shutdown's grace period covers it). The drop guard is for a
    /// session that never gets here.
    pub fn release_all(&mut self) {
        release(self.take(), &self.shared.store, self.session);
    }

    /// Takes the sets out of the session's info: the store is never called
    /// with them locked.
    fn take(&mut self) -> Held {
        std::mem::take(&mut *self.info.held())
    }
}

/// Lets go of everything in `held` in the store.
fn release(held: Held, store: &Store, session: SessionId) {
    for key in held.watched {
        store.unwatch(&key, session);
    }
    for (key, paths) in held.presence {
        for path in paths {
            store.release_presence(&key, &path, session);
        }
    }
}

impl Drop for Holdings {
    fn drop(&mut self) {
        let held = self.take();
        if self.shared.store.remote().is_none() {
            release(held, &self.shared.store, self.session);
        } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // Here the session did not end normally (a panic unwinding, or
            // its task dropped by a runtime shutting down). In cluster mode
            // a release waits for Redis (`cluster::Connection::block`),
            // which needs the runtime's other tasks to run; a task dropped
            // during a shutdown must not wait for them — they are never
            // polled again, so it would wait forever and the process would
            // never exit. The release is a task of its own instead: run at
            // once after a panic, dropped unrun during a shutdown, when the
            // other nodes reap this node's paths once its lease runs out.
            let shared = Arc::clone(&self.shared);
            let session = self.session;
            runtime.spawn(async move { release(held, &shared.store, session) });
        }
        // (Cluster mode with no runtime at all: nothing can reach Redis;
        // the lease reaps the paths.)
        self.shared.deregister(self.session);
    }
}
