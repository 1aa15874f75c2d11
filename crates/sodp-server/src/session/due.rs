//! The session loop's timers — the heartbeat and the auth deadline —
//! polled only once one of them fired.
//!
//! The loop (`io::run`) selects over the outbox, the socket and its timers
//! on every turn — once per frame read or batch written. Polling a tokio
//! timer that is not due still costs its bookkeeping (the coop budget, the
//! entry's state, the waker comparison): ~160 instructions per turn for the
//! heartbeat alone, on the path of every small write. So the timers are
//! polled with the session's outbox as their waker
//! ([`Outbox::timers_waker`]): a timer that fires marks the outbox and wakes
//! the session task, and until then [`poll`] costs one atomic load. The mark
//! lives in the outbox, so this adds no allocation and nothing to a
//! session's memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::{Interval, Sleep};

use crate::outbox::Outbox;

/// Which timer fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    Heartbeat,
    Deadline,
}

/// Polls the heartbeat and, when `deadline` is given, the auth deadline, if
/// either fired (or was moved: [`Outbox::rearm_timers`]) since the last
/// poll; pending at once otherwise.
///
/// The check belongs inside the future a `select!` polls, not in a branch
/// precondition: a precondition is evaluated once per `select!`, so a timer
/// firing while the task waits in it would never be polled. A timer that
/// is ready leaves the mark set: the next poll registers the interval's
/// next tick, and polls the other timer, which may have fired too.
pub fn poll(
    outbox: &Arc<Outbox>,
    heartbeat: &mut Interval,
    deadline: Option<Pin<&mut Sleep>>,
) -> Poll<Fired> {
    if !outbox.take_timers_mark() {
        return Poll::Pending;
    }
    let waker = outbox.timers_waker();
    let mut cx = Context::from_waker(&waker);
    let fired = if heartbeat.poll_tick(&mut cx).is_ready() {
        Some(Fired::Heartbeat)
    } else if deadline.is_some_and(|d| d.poll(&mut cx).is_ready()) {
        Some(Fired::Deadline)
    } else {
        None
    };
    match fired {
        Some(fired) => {
            outbox.rearm_timers();
            Poll::Ready(fired)
        }
        None => Poll::Pending,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::{self, Instant};

    use super::*;
    use crate::outbox::tests::{count, registered};

    fn every_30s() -> Interval {
        time::interval_at(
            Instant::now() + Duration::from_secs(30),
            Duration::from_secs(30),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn timers_are_polled_only_once_one_fired_and_then_wake_the_session_task() {
        let outbox = Arc::new(Outbox::new(1, 8));
        let mut heartbeat = every_30s();
        // A new session's timers must be polled once, to register.
        assert!(poll(&outbox, &mut heartbeat, None).is_pending());
        // Not due: the timer is not even looked at (a fresh interval would
        // be ready at once).
        let mut fresh = time::interval(Duration::from_secs(30));
        assert!(poll(&outbox, &mut fresh, None).is_pending());

        // The session task waits on its outbox; the timer must wake it.
        let (wakes, _waker) = registered(&outbox);
        time::sleep(Duration::from_secs(29)).await;
        assert_eq!(count(&wakes), 0);
        time::sleep(Duration::from_secs(2)).await;
        assert_eq!(count(&wakes), 1, "the fired timer woke the session task");

        assert_eq!(
            poll(&outbox, &mut heartbeat, None),
            Poll::Ready(Fired::Heartbeat)
        );
        // Ready leaves the mark, so the next poll registers the next tick.
        assert!(poll(&outbox, &mut heartbeat, None).is_pending());
        assert!(poll(&outbox, &mut heartbeat, None).is_pending());
    }

    #[tokio::test(start_paused = true)]
    async fn a_moved_deadline_is_polled_and_fires() {
        let outbox = Arc::new(Outbox::new(1, 8));
        let mut heartbeat = every_30s();
        let deadline = time::sleep(Duration::from_secs(3600));
        tokio::pin!(deadline);
        assert!(poll(&outbox, &mut heartbeat, Some(deadline.as_mut())).is_pending());
        deadline
            .as_mut()
            .reset(Instant::now() + Duration::from_secs(5));
        outbox.rearm_timers();
        assert!(poll(&outbox, &mut heartbeat, Some(deadline.as_mut())).is_pending());
        time::sleep(Duration::from_secs(6)).await;
        assert_eq!(
            poll(&outbox, &mut heartbeat, Some(deadline.as_mut())),
            Poll::Ready(Fired::Deadline)
        );
    }
}
