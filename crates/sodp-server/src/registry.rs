//! The registry of live sessions, and what each one shows an administrator
//! (`admin.sessions`, `admin.session`, `admin.disconnect`).
//!
//! A session's [`SessionInfo`] is shared between the session task and the
//! registry. The session only writes to it where it already does the work:
//! its subscriptions and presence paths live here (its `Holdings` keeps them
//! nowhere else, behind a lock only it and an admin call take), the subject
//! is set at AUTH, and two counters are relaxed atomic adds. The queue depth
//! is read from the outbox at the moment an administrator asks. So an idle
//! registry costs the hot path nothing beyond what it did before.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::outbox::{Outbox, SessionId};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a session holds in the store (see `holdings`).
#[derive(Debug, Default)]
pub struct Held {
    pub watched: HashSet<String>,
    /// key → normalised paths bound there by `state.presence`.
    pub presence: HashMap<String, HashSet<String>>,
    pub presence_count: usize,
}

/// Where a session came from: its connection's peer and upgrade request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin {
    /// The peer's address (`None` for sessions made without a socket).
    pub peer: Option<SocketAddr>,
    /// Opened by the web inspector (`/inspector/ws`).
    pub inspector: bool,
    /// Upgraded by a browser page of another origin than this server.
    pub cross_site: bool,
}

/// One live session, as the registry and the admin methods see it.
pub struct SessionInfo {
    pub id: SessionId,
    /// The peer's address (`None` for sessions made without a socket).
    pub peer: Option<SocketAddr>,
    /// Opened by the web inspector (`/inspector/ws`).
    pub inspector: bool,
    /// Upgraded by a browser page of another origin (see `admin`).
    pub cross_site: bool,
    /// When the session started, Unix ms.
    pub connected_at_ms: u64,
    pub outbox: Arc<Outbox>,
    subject: Mutex<Option<Arc<str>>>,
    held: Mutex<Held>,
    calls: AtomicU64,
    rate_limited: AtomicU64,
}

impl SessionInfo {
    pub fn new(outbox: Arc<Outbox>, origin: Origin, connected_at_ms: u64) -> SessionInfo {
        SessionInfo {
            id: outbox.id(),
            peer: origin.peer,
            inspector: origin.inspector,
            cross_site: origin.cross_site,
            connected_at_ms,
            outbox,
            subject: Mutex::new(None),
            held: Mutex::new(Held::default()),
            calls: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        }
    }

    /// The JWT `sub` once authenticated.
    pub fn subject(&self) -> Option<Arc<str>> {
        lock(&self.subject).clone()
    }

    pub fn set_subject(&self, sub: &str) {
        let mut subject = lock(&self.subject);
        if subject.as_deref() != Some(sub) {
            *subject = Some(sub.into());
        }
    }

    /// The session's subscriptions and presence bindings.
    pub fn held(&self) -> MutexGuard<'_, Held> {
        lock(&self.held)
    }

    pub fn count_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// A CALL or WATCH refused by a rate limit.
    pub fn count_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Whether the peer is this machine (IPv4-mapped IPv6 included).
    pub fn is_loopback(&self) -> bool {
        self.peer
            .is_some_and(|p| p.ip().to_canonical().is_loopback())
    }
}

/// Every live session by id (ordered, so `admin.sessions` pages by id).
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<BTreeMap<SessionId, Arc<SessionInfo>>>,
}

impl Registry {
    pub fn insert(&self, info: Arc<SessionInfo>) {
        lock(&self.sessions).insert(info.id, info);
    }

    /// Removes a session; false if it was not registered.
    pub fn remove(&self, id: SessionId) -> bool {
        lock(&self.sessions).remove(&id).is_some()
    }

    pub fn get(&self, id: SessionId) -> Option<Arc<SessionInfo>> {
        lock(&self.sessions).get(&id).cloned()
    }

    /// At most `limit` sessions with an id above `after`, in id order, and
    /// whether more follow.
    pub fn page(&self, after: SessionId, limit: usize) -> (Vec<Arc<SessionInfo>>, bool) {
        let sessions = lock(&self.sessions);
        let mut range = sessions.range(after.saturating_add(1)..);
        let page: Vec<_> = range.by_ref().take(limit).map(|(_, s)| s.clone()).collect();
        let more = range.next().is_some();
        (page, more)
    }

    /// Every session's outbox (shutdown closes them all).
    pub fn outboxes(&self) -> Vec<Arc<Outbox>> {
        lock(&self.sessions)
            .values()
            .map(|s| s.outbox.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: SessionId) -> Arc<SessionInfo> {
        Arc::new(SessionInfo::new(
            Arc::new(Outbox::new(id, 4)),
            Origin::default(),
            0,
        ))
    }

    #[test]
    fn pages_in_id_order() {
        let r = Registry::default();
        for id in [5, 1, 3] {
            r.insert(info(id));
        }
        let (page, more) = r.page(0, 2);
        assert_eq!(page.iter().map(|s| s.id).collect::<Vec<_>>(), [1, 3]);
        assert!(more);
        let (page, more) = r.page(3, 2);
        assert_eq!(page.iter().map(|s| s.id).collect::<Vec<_>>(), [5]);
        assert!(!more);
        assert!(r.remove(3) && !r.remove(3));
    }

    #[test]
    fn loopback_includes_mapped_ipv6() {
        let at = |addr: &str| {
            let origin = Origin {
                peer: Some(addr.parse().unwrap()),
                ..Origin::default()
            };
            SessionInfo::new(Arc::new(Outbox::new(1, 1)), origin, 0).is_loopback()
        };
        assert!(at("127.0.0.1:1") && at("[::1]:1") && at("[::ffff:127.0.0.1]:1"));
        assert!(!at("10.0.0.1:1") && !at("[::ffff:10.0.0.1]:1"));
        assert!(!info(1).is_loopback(), "no peer is not loopback");
    }
}
