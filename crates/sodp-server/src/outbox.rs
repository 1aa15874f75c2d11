//! One session's outbound side: a bounded queue of encoded frames, and the
//! signal that ends the session.
//!
//! Frames are `Bytes`, so a DELTA encoded once is shared by every
//! subscriber's queue without copying. `push` never blocks: a session whose
//! queue is full has fallen too far behind and is evicted, so a slow reader
//! can never slow the writer or other subscribers, and its memory is bounded
//! by the queue length.
//!
//! The queue is a `std::sync::Mutex<VecDeque>` plus one `AtomicWaker` for the
//! session task, not a channel: a delivery is one uncontended lock, a push
//! and a wake, and the session takes everything queued in one swap. The
//! close signal travels through the same waker, so the session task has one
//! thing to wait on for "something to send or a reason to stop".

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::Poll;

use bytes::Bytes;
use futures_util::task::AtomicWaker;

/// Identifies a session for subscriptions and presence ownership.
pub type SessionId = u64;

/// Why and how a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// WebSocket close code.
    pub code: u16,
    pub reason: &'static str,
    /// Send what is already queued before the close frame.
    pub flush: bool,
}

impl Close {
    /// Every way a session is closed (for metrics).
    pub const ALL: [Close; 7] = [
        Close::EVICTED,
        Close::SHUTDOWN,
        Close::HEARTBEAT_TIMEOUT,
        Close::TOO_BIG,
        Close::UNAUTHORIZED,
        Close::NORMAL,
        Close::DISCONNECTED,
    ];

    /// The reason as a label: `normal` for a plain close.
    pub fn label(&self) -> &'static str {
        if self.reason.is_empty() {
            "normal"
        } else {
            self.reason
        }
    }

    pub const EVICTED: Close = Close {
        code: 1008,
        reason: "outbound queue full",
        flush: false,
    };
    pub const SHUTDOWN: Close = Close {
        code: 1001,
        reason: "server shutting down",
        flush: true,
    };
    pub const HEARTBEAT_TIMEOUT: Close = Close {
        code: 1001,
        reason: "heartbeat timeout",
        flush: false,
    };
    pub const TOO_BIG: Close = Close {
        code: 1009,
        reason: "message too big",
        flush: true,
    };
    pub const UNAUTHORIZED: Close = Close {
        code: 1008,
        reason: "unauthorized",
        flush: true,
    };
    /// `admin.disconnect`.
    pub const DISCONNECTED: Close = Close {
        code: 1008,
        reason: "disconnected by an administrator",
        flush: true,
    };
    pub const NORMAL: Close = Close {
        code: 1000,
        reason: "",
        flush: true,
    };
}

/// What the session task was woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Frames were moved into the caller's batch.
    Frames,
    /// The session must end (see [`Outbox::closing`]).
    Closing,
}

/// Shared by the session and every key it watches.
pub struct Outbox {
    id: SessionId,
    capacity: usize,
    queue: Mutex<VecDeque<Bytes>>,
    closing: OnceLock<Close>,
    session_task: AtomicWaker,
}

impl Outbox {
    pub fn new(id: SessionId, capacity: usize) -> Outbox {
        Outbox {
            id,
            capacity: capacity.max(1),
            queue: Mutex::new(VecDeque::new()),
            closing: OnceLock::new(),
            session_task: AtomicWaker::new(),
        }
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Frames queued now (for an administrator: one lock).
    pub fn len(&self) -> usize {
        self.queue().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Bytes>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame. Returns false if the session is ending, or has just
    /// been evicted because its queue was full.
    pub fn push(&self, frame: Bytes) -> bool {
        let queued = self.enqueue(frame);
        if queued {
            self.session_task.wake();
        }
        queued
    }

    /// [`Outbox::push`] for the session task itself (its RESULTs, ERRORs,
    /// heartbeats and pongs): no wake-up, because that task looks at the
    /// queue before it next waits (`session::io::run`). Waking a task from
    /// inside its own poll only makes the runtime poll it once more for
    /// nothing. Any other thread or task must use `push`.
    pub fn push_own(&self, frame: Bytes) -> bool {
        self.enqueue(frame)
    }

    fn enqueue(&self, frame: Bytes) -> bool {
        if self.closing.get().is_some() {
            return false;
        }
        let mut queue = self.queue();
        if queue.len() >= self.capacity {
            drop(queue);
            self.close(Close::EVICTED);
            return false;
        }
        queue.push_back(frame);
        true
    }

    /// Queues several frames back to back, with nothing in between (the
    /// DELTAs of one transaction). All or none: a queue without room for
    /// them all is evicted, as by [`Outbox::push`].
    pub fn push_all(&self, frames: &[Bytes]) -> bool {
        if self.closing.get().is_some() {
            return false;
        }
        {
            let mut queue = self.queue();
            if queue.len() + frames.len() > self.capacity {
                drop(queue);
                self.close(Close::EVICTED);
                return false;
            }
            queue.extend(frames.iter().cloned());
        }
        self.session_task.wake();
        true
    }

    /// Asks the session to end. The first reason wins.
    pub fn close(&self, close: Close) {
        if self.closing.set(close).is_ok() {
            self.session_task.wake();
        }
    }

    /// The reason the session is ending, if it is.
    pub fn closing(&self) -> Option<Close> {
        self.closing.get().copied()
    }

    /// Waits until there are frames (moved into `batch`) or the session is
    /// closing. Only the session task calls this.
    pub async fn next_batch(&self, batch: &mut VecDeque<Bytes>) -> Wake {
        poll_fn(|cx| {
            self.session_task.register(cx.waker());
            if self.closing.get().is_some() {
                return Poll::Ready(Wake::Closing);
            }
            let mut queue = self.queue();
            if queue.is_empty() {
                return Poll::Pending;
            }
            std::mem::swap(&mut *queue, batch);
            Poll::Ready(Wake::Frames)
        })
        .await
    }

    /// Resolves once the session is closing without a flush (eviction, dead
    /// peer): a write to a peer that stopped reading is abandoned then.
    pub async fn abandoned(&self) {
        poll_fn(|cx| {
            self.session_task.register(cx.waker());
            match self.closing() {
                Some(close) if !close.flush => Poll::Ready(()),
                _ => Poll::Pending,
            }
        })
        .await
    }

    /// Moves everything queued into `batch` (for the goodbye flush).
    pub fn take_all(&self, batch: &mut VecDeque<Bytes>) {
        batch.append(&mut self.queue());
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    #[test]
    fn full_queue_evicts() {
        let outbox = Outbox::new(1, 2);
        assert!(outbox.push(Bytes::from_static(b"a")));
        assert!(outbox.push(Bytes::from_static(b"b")));
        assert!(!outbox.push(Bytes::from_static(b"c")));
        assert_eq!(outbox.closing(), Some(Close::EVICTED));
        let mut batch = VecDeque::new();
        outbox.take_all(&mut batch);
        assert_eq!(batch, [Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        assert!(
            !outbox.push(Bytes::from_static(b"d")),
            "nothing queues after a close"
        );
    }

    /// Counts the wake-ups of the task that waits on the outbox.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn own_frames_queue_without_a_wake_up_and_obey_the_same_bounds() {
        let outbox = Outbox::new(1, 2);
        let wakes = std::sync::Arc::new(Wakes(Default::default()));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut batch = VecDeque::new();
        let mut waiting = std::pin::pin!(outbox.next_batch(&mut batch));
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert!(outbox.push_own(Bytes::from_static(b"a")));
        assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(outbox.push(Bytes::from_static(b"b")));
        assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(
            !outbox.push_own(Bytes::from_static(b"c")),
            "a full queue evicts"
        );
        assert_eq!(outbox.closing(), Some(Close::EVICTED));
        assert_eq!(waiting.as_mut().poll(&mut cx), Poll::Ready(Wake::Closing));
        assert!(!outbox.push_own(Bytes::from_static(b"d")));
        let mut rest = VecDeque::new();
        outbox.take_all(&mut rest);
        assert_eq!(rest, [Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
    }

    #[test]
    fn first_close_reason_wins() {
        let outbox = Outbox::new(1, 2);
        outbox.close(Close::SHUTDOWN);
        outbox.close(Close::EVICTED);
        assert_eq!(outbox.closing(), Some(Close::SHUTDOWN));
    }

    #[tokio::test]
    async fn next_batch_takes_everything_queued() {
        let outbox = std::sync::Arc::new(Outbox::new(1, 8));
        let mut batch = VecDeque::new();
        let waiter = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let wake = outbox.next_batch(&mut batch).await;
                (wake, batch.len())
            })
        };
        tokio::task::yield_now().await;
        outbox.push(Bytes::from_static(b"a"));
        outbox.push(Bytes::from_static(b"b"));
        let (wake, n) = waiter.await.unwrap();
        assert_eq!(wake, Wake::Frames);
        assert!(n >= 1);
        outbox.close(Close::NORMAL);
        let mut batch = VecDeque::new();
        assert_eq!(outbox.next_batch(&mut batch).await, Wake::Closing);
    }
}
