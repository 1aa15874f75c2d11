//! Watching keys: [`Client::watch`] / [`Client::watch_async`] (callbacks with
//! a drop guard, [`WatchGuard`]) and [`Client::subscribe`] (the `Stream`
//! form, [`Subscription`]).
//!
//! Every watcher, callback or stream, is a bounded mailbox registered in the
//! subscription table (see `mailbox` for the policy: at most
//! `watch_buffer` updates wait; a watcher that falls further behind gets the
//! newest value next with [`Update::lagged`] set). A callback watcher gets
//! its own task that drains the mailbox, so a slow or panicking callback
//! never stalls the connection or other watchers, and updates reach it in
//! order: the cached value first (when known), then each STATE_INIT and
//! DELTA.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;

use crate::client::Client;
use crate::mailbox::{mailbox, Gauge, Receiver};
use crate::options::WatchOptions;
use crate::shared::{Command, Status};
use crate::subscriptions::WatcherId;
use crate::update::Update;

/// Keeps one watcher registered; dropping it (or calling
/// [`unwatch`](Self::unwatch)) removes that watcher. When the last watcher of
/// a key goes, the client sends UNWATCH and forgets the key's cache.
#[must_use = "dropping the guard removes the watcher at once"]
pub struct WatchGuard {
    client: Client,
    key: Arc<str>,
    id: WatcherId,
    /// Cleared on removal so a callback task stops even with updates queued.
    active: Arc<AtomicBool>,
    detached: bool,
    gauge: Gauge,
}

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchGuard")
            .field("key", &self.key)
            .finish()
    }
}

impl WatchGuard {
    /// The watched key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How many updates wait to be delivered to this watcher (at most the
    /// client's [`watch_buffer`](crate::ClientBuilder::watch_buffer)).
    pub fn queued(&self) -> usize {
        self.gauge.queued()
    }

    /// Removes this watcher now (the same as dropping the guard).
    pub fn unwatch(self) {}

    /// Keeps the watcher for as long as the key stays watched (until
    /// [`Client::unwatch`] or the client closes), without holding a guard.
    pub fn detach(mut self) {
        self.detached = true;
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.active.store(false, Ordering::Release);
        let frame = self
            .client
            .inner
            .shared
            .subs()
            .remove_watcher(&self.key, self.id);
        if let Some(frame) = frame {
            let _ = self.client.inner.commands.send(Command::Send(frame));
        }
    }
}

/// A stream of [`Update`]s for one key, from [`Client::subscribe`].
///
/// Ends when the key is unwatched or the client closes for good. Dropping it
/// removes the watcher, like dropping a [`WatchGuard`]. While nobody polls,
/// at most [`watch_buffer`](crate::ClientBuilder::watch_buffer) updates
/// wait; beyond that they are conflated into the newest one (see
/// [`Update::lagged`]).
#[must_use = "streams do nothing unless polled"]
pub struct Subscription {
    rx: Receiver,
    guard: WatchGuard,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("key", &self.guard.key)
            .finish()
    }
}

impl Subscription {
    /// The watched key.
    pub fn key(&self) -> &str {
        &self.guard.key
    }

    /// How many updates wait to be read (at most the client's
    /// [`watch_buffer`](crate::ClientBuilder::watch_buffer)).
    pub fn queued(&self) -> usize {
        self.guard.queued()
    }

    /// The next update; `None` once the subscription has ended.
    pub async fn recv(&mut self) -> Option<Update> {
        self.rx.recv().await
    }
}

impl Stream for Subscription {
    type Item = Update;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Update>> {
        self.rx.poll_recv(cx)
    }
}

impl Client {
    fn register(&self, key: &str, options: WatchOptions) -> (Receiver, WatchGuard) {
        let (tx, rx) = mailbox(self.inner.config.watch_buffer);
        let mut id = 0;
        // A stopped client has nobody to feed a watcher: dropping `tx` ends
        // the stream at once instead of leaving it pending forever.
        if !matches!(self.status(), Status::Closed(_)) {
            let (watcher, frame) = self
                .inner
                .shared
                .subs()
                .add_watcher(key, options.params, tx);
            id = watcher;
            if let Some(frame) = frame {
                let _ = self.inner.commands.send(Command::Send(frame));
            }
        }
        let guard = WatchGuard {
            client: self.clone(),
            key: Arc::from(key),
            id,
            active: Arc::new(AtomicBool::new(true)),
            detached: false,
            gauge: rx.gauge(),
        };
        (rx, guard)
    }

    /// Subscribes to `key` as a stream of updates: the cached value first
    /// (source `Cache`) when the key is already known, then the server's
    /// baseline (`Init`) and each change (`Delta`). Several watchers of one
    /// key share a single server subscription.
    pub fn subscribe(&self, key: &str) -> Subscription {
        self.subscribe_with(key, WatchOptions::new())
    }

    /// [`subscribe`](Self::subscribe) with options (WATCH `params`).
    pub fn subscribe_with(&self, key: &str, options: WatchOptions) -> Subscription {
        let (rx, guard) = self.register(key, options);
        Subscription { rx, guard }
    }

    /// Calls `callback` for every update of `key` (see
    /// [`subscribe`](Self::subscribe) for which updates). The callback runs
    /// on its own task; it stops when the returned guard is dropped.
    pub fn watch<F>(&self, key: &str, callback: F) -> WatchGuard
    where
        F: FnMut(Update) + Send + 'static,
    {
        self.watch_with(key, WatchOptions::new(), callback)
    }

    /// [`watch`](Self::watch) with options (WATCH `params`).
    pub fn watch_with<F>(&self, key: &str, options: WatchOptions, mut callback: F) -> WatchGuard
    where
        F: FnMut(Update) + Send + 'static,
    {
        let (mut rx, guard) = self.register(key, options);
        let active = guard.active.clone();
        self.inner.runtime.spawn(async move {
            while let Some(update) = rx.recv().await {
                if !active.load(Ordering::Acquire) {
                    break;
                }
                callback(update);
            }
        });
        guard
    }

    /// Like [`watch`](Self::watch) with an async callback; each call is
    /// awaited before the next update is delivered.
    pub fn watch_async<F, Fut>(&self, key: &str, mut callback: F) -> WatchGuard
    where
        F: FnMut(Update) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (mut rx, guard) = self.register(key, WatchOptions::new());
        let active = guard.active.clone();
        self.inner.runtime.spawn(async move {
            while let Some(update) = rx.recv().await {
                if !active.load(Ordering::Acquire) {
                    break;
                }
                callback(update).await;
            }
        });
        guard
    }
}
