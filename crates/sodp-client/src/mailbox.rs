//! One watcher's delivery buffer: bounded, conflating, and never blocking the
//! connection task.
//!
//! The subscription table holds the [`Sender`] and pushes every update into
//! it while the table's lock is held; the watcher (a [`Subscription`] stream
//! or a callback task) holds the [`Receiver`].
//!
//! # Policy
//! A mailbox holds at most `capacity` undelivered updates. When an update
//! arrives and the mailbox is full, the updates waiting in it are dropped
//! and the new one is queued alone, with [`Update::lagged`] counting the
//! updates it replaced (their own `lagged` included) and its `ops` emptied,
//! since they only describe the step from the previous, undelivered value.
//! So a consumer that falls behind reads the newest value next, learns that
//! it skipped changes, and never costs more than `capacity` updates of
//! memory; the sender never waits, so one slow watcher cannot stall the
//! connection or any other watcher.
//!
//! [`Subscription`]: crate::Subscription

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::update::Update;

struct State {
    queue: VecDeque<Update>,
    capacity: usize,
    sender_alive: bool,
    receiver_alive: bool,
    waker: Option<Waker>,
}

struct Slot(Mutex<State>);

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding this lock; recover rather than spread
        // a poison that cannot mean an inconsistent queue.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A new mailbox holding at most `capacity` updates (at least one).
pub(crate) fn mailbox(capacity: usize) -> (Sender, Receiver) {
    let slot = Arc::new(Slot(Mutex::new(State {
        queue: VecDeque::new(),
        capacity: capacity.max(1),
        sender_alive: true,
        receiver_alive: true,
        waker: None,
    })));
    (Sender { slot: slot.clone() }, Receiver { slot })
}

/// The subscription table's end. Dropping it ends the watcher's stream once
/// what is queued has been read.
pub(crate) struct Sender {
    slot: Arc<Slot>,
}

impl Sender {
    /// Queues `update`, conflating when full (see the module docs). Returns
    /// false when the receiver is gone, so the watcher can be forgotten.
    pub fn send(&self, mut update: Update) -> bool {
        let waker = {
            let mut state = self.slot.lock();
            if !state.receiver_alive {
                return false;
            }
            if state.queue.len() >= state.capacity {
                let skipped: u64 = state.queue.drain(..).map(|u| 1 + u.lagged).sum();
                update.lagged += skipped;
                update.ops = Arc::from([]);
            }
            state.queue.push_back(update);
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.slot.lock();
            state.sender_alive = false;
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The watcher's end.
pub(crate) struct Receiver {
    slot: Arc<Slot>,
}

impl Receiver {
    /// The next update; `None` once the sender is gone and the queue empty.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Update>> {
        let mut state = self.slot.lock();
        if let Some(update) = state.queue.pop_front() {
            return Poll::Ready(Some(update));
        }
        if !state.sender_alive {
            return Poll::Ready(None);
        }
        match &state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub async fn recv(&mut self) -> Option<Update> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// A read-only view of the queue, for whoever holds the watch guard.
    pub fn gauge(&self) -> Gauge {
        Gauge {
            slot: self.slot.clone(),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.slot.lock();
        state.receiver_alive = false;
        state.queue.clear();
    }
}

/// How many updates wait in a mailbox.
#[derive(Clone)]
pub(crate) struct Gauge {
    slot: Arc<Slot>,
}

impl Gauge {
    pub fn queued(&self) -> usize {
        self.slot.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::{Meta, Source};
    use sodp_proto::{DeltaOp, Value};

    fn update(version: u64) -> Update {
        Update {
            key: Arc::from("k"),
            value: Value::from(version),
            meta: Meta {
                version,
                initialized: true,
                source: Source::Delta,
                expires_at: None,
            },
            ops: Arc::from([DeltaOp::update("/", Value::from(version))]),
            lagged: 0,
        }
    }

    fn drain(rx: &mut Receiver) -> Vec<(u64, u64, usize)> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = vec![];
        while let Poll::Ready(Some(u)) = rx.poll_recv(&mut cx) {
            out.push((u.meta.version, u.lagged, u.ops.len()));
        }
        out
    }

    #[test]
    fn delivers_in_order_below_capacity() {
        let (tx, mut rx) = mailbox(3);
        for v in 1..=3 {
            assert!(tx.send(update(v)));
        }
        assert_eq!(rx.gauge().queued(), 3);
        assert_eq!(drain(&mut rx), [(1, 0, 1), (2, 0, 1), (3, 0, 1)]);
    }

    #[test]
    fn a_full_mailbox_conflates_to_the_newest_value() {
        let (tx, mut rx) = mailbox(4);
        let gauge = rx.gauge();
        for v in 1..=10_000 {
            assert!(tx.send(update(v)));
            assert!(gauge.queued() <= 4, "bounded at {v}");
        }
        let got = drain(&mut rx);
        // Every update is either delivered or counted in a `lagged`.
        let accounted: u64 = got.iter().map(|(_, lagged, _)| 1 + lagged).sum();
        assert_eq!(accounted, 10_000);
        assert_eq!(got.last().map(|g| g.0), Some(10_000), "the newest value");
        assert!(got.iter().any(|g| g.1 > 0), "a lag is reported");
        for (_, lagged, ops) in &got {
            assert_eq!(*ops == 0, *lagged > 0, "a conflated update has no ops");
        }
        // Reading catches up: later updates are delivered one by one again.
        tx.send(update(10_001));
        assert_eq!(drain(&mut rx), [(10_001, 0, 1)]);
    }

    #[test]
    fn capacity_one_always_holds_the_newest() {
        let (tx, mut rx) = mailbox(0); // treated as 1
        tx.send(update(1));
        tx.send(update(2));
        tx.send(update(3));
        assert_eq!(drain(&mut rx), [(3, 2, 0)]);
    }

    #[test]
    fn ends_after_the_sender_and_stops_when_the_receiver_goes() {
        let (tx, mut rx) = mailbox(2);
        tx.send(update(1));
        drop(tx);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(_))));
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));

        let (tx, rx) = mailbox(2);
        let gauge = rx.gauge();
        tx.send(update(1));
        drop(rx);
        assert!(!tx.send(update(2)), "nobody reads any more");
        assert_eq!(gauge.queued(), 0, "queued updates freed with the receiver");
    }

    #[tokio::test]
    async fn recv_wakes_on_send_and_on_close() {
        let (tx, mut rx) = mailbox(2);
        let reader = tokio::spawn(async move {
            let first = rx.recv().await.map(|u| u.meta.version);
            let end = rx.recv().await.map(|u| u.meta.version);
            (first, end)
        });
        tokio::task::yield_now().await;
        tx.send(update(7));
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(reader.await.unwrap(), (Some(7), None));
    }
}
