//! A timer the session loop polls only once it has fired.
//!
//! The loop (`io::run`) selects over the outbox, the socket and its timers
//! (the heartbeat, the auth deadline) on every turn — once per frame read or
//! batch written. Polling a tokio timer that is not due still costs its
//! bookkeeping (the coop budget, the entry's state, the waker comparison):
//! ~160 instructions per turn for the heartbeat alone, on the path of every
//! small write. A [`Due`] polls its timer with a waker of its own, which
//! records that the timer fired and then wakes the session task (through the
//! outbox, which holds that task's waker). Until then the loop skips the
//! timer's branch with one atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crate::outbox::Outbox;

/// Whether a timer must be polled; see the module doc.
pub struct Due {
    flag: Arc<Flag>,
    waker: Waker,
}

struct Flag {
    fired: AtomicBool,
    outbox: Arc<Outbox>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.outbox.wake_session_task();
    }
}

impl Due {
    /// A timer of the session owning `outbox`; it is polled on the first
    /// turn (to register it).
    pub fn new(outbox: Arc<Outbox>) -> Due {
        let flag = Arc::new(Flag {
            fired: AtomicBool::new(true),
            outbox,
        });
        Due {
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// The timer fired (or was moved, or never polled).
    pub fn is_due(&self) -> bool {
        self.flag.fired.load(Ordering::Acquire)
    }

    /// The timer was reset: poll it on the next turn so it registers anew.
    pub fn rearm(&self) {
        self.flag.fired.store(true, Ordering::Release);
    }

    /// Polls the timer with this `Due`'s waker if it is due; pending (at
    /// the cost of one atomic load) if not. The check is made here, on
    /// every poll, and not as a `select!` precondition: a precondition is
    /// evaluated once per `select!`, so a timer that fires while the task
    /// waits in it would never be polled. A timer that is ready stays due:
    /// the next poll registers its next expiry (an interval) or returns
    /// ready again (a sleep that was not reset).
    pub fn poll<T>(&self, poll: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        if !self.is_due() {
            return Poll::Pending;
        }
        self.flag.fired.store(false, Ordering::Release);
        let ready = poll(&mut Context::from_waker(&self.waker));
        if ready.is_ready() {
            self.rearm();
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::{self, Instant};

    use super::*;
    use crate::outbox::tests::{count, registered};

    #[tokio::test(start_paused = true)]
    async fn a_timer_is_due_only_once_it_fired_and_then_wakes_the_session_task() {
        let outbox = Arc::new(Outbox::new(1, 8));
        let due = Due::new(outbox.clone());
        let mut interval = time::interval_at(
            Instant::now() + Duration::from_secs(30),
            Duration::from_secs(30),
        );
        assert!(due.is_due(), "a new timer must be polled to register");
        assert!(due.poll(|cx| interval.poll_tick(cx)).is_pending());
        assert!(!due.is_due());
        let untouched = due.poll(|_| -> Poll<()> { unreachable!("polled while not due") });
        assert!(untouched.is_pending());

        // The session task waits on its outbox; the timer must wake it.
        let (wakes, _waker) = registered(&outbox);
        time::sleep(Duration::from_secs(29)).await;
        assert!(!due.is_due());
        assert_eq!(count(&wakes), 0);
        time::sleep(Duration::from_secs(2)).await;
        assert!(due.is_due());
        assert_eq!(count(&wakes), 1, "the fired timer woke the session task");

        assert!(due.poll(|cx| interval.poll_tick(cx)).is_ready());
        // Ready leaves it due, so that the next turn registers the next tick.
        assert!(due.is_due());
        assert!(due.poll(|cx| interval.poll_tick(cx)).is_pending());
        assert!(!due.is_due());
    }
}
