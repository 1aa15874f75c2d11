//! One session's outbound side: a bounded queue of encoded frames, and the
//! signal that ends the session.
//!
//! Frames are `Bytes`, so a DELTA encoded once is shared by every
//! subscriber's queue without copying. `push` never blocks: a session whose
//! queue is full has fallen too far behind and is evicted, so a slow reader
//! can never slow the writer or other subscribers, and its memory is bounded
//! by the queue length.

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

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
    pub const NORMAL: Close = Close {
        code: 1000,
        reason: "",
        flush: true,
    };
}

/// The sending half, shared by the session and every key it watches.
pub struct Outbox {
    id: SessionId,
    queue: mpsc::Sender<Bytes>,
    closing: watch::Sender<Option<Close>>,
}

/// The receiving half, owned by the session's writer task.
pub struct OutboxReceiver {
    pub frames: mpsc::Receiver<Bytes>,
    pub closing: watch::Receiver<Option<Close>>,
}

impl Outbox {
    pub fn new(id: SessionId, capacity: usize) -> (Outbox, OutboxReceiver) {
        let (queue, frames) = mpsc::channel(capacity.max(1));
        let (closing, closing_rx) = watch::channel(None);
        (
            Outbox { id, queue, closing },
            OutboxReceiver {
                frames,
                closing: closing_rx,
            },
        )
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Queues a frame. Returns false if the session is gone or has just been
    /// evicted because its queue was full.
    pub fn push(&self, frame: Bytes) -> bool {
        match self.queue.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(Close::EVICTED);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Asks the session to end. The first reason wins.
    pub fn close(&self, close: Close) {
        self.closing.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(close);
                true
            } else {
                false
            }
        });
    }

    /// The reason the session is ending, if it is.
    pub fn closing(&self) -> Option<Close> {
        *self.closing.borrow()
    }

    /// A receiver that wakes when the session is asked to end.
    pub fn watch_close(&self) -> watch::Receiver<Option<Close>> {
        self.closing.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_evicts() {
        let (outbox, mut rx) = Outbox::new(1, 2);
        assert!(outbox.push(Bytes::from_static(b"a")));
        assert!(outbox.push(Bytes::from_static(b"b")));
        assert!(!outbox.push(Bytes::from_static(b"c")));
        assert_eq!(outbox.closing(), Some(Close::EVICTED));
        assert_eq!(rx.frames.try_recv().unwrap(), Bytes::from_static(b"a"));
    }

    #[test]
    fn first_close_reason_wins() {
        let (outbox, _rx) = Outbox::new(1, 2);
        outbox.close(Close::SHUTDOWN);
        outbox.close(Close::EVICTED);
        assert_eq!(outbox.closing(), Some(Close::SHUTDOWN));
    }
}
