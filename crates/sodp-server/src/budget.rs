//! The server-wide budget for what the store holds (`--max-memory`).
//!
//! Counted: every key's value (its exact encoded size) and a fixed overhead
//! per key slot and per presence binding. A write that would grow the total
//! past the budget is refused with 507 before anything changes; writes that
//! shrink, deletes and reads always work, so a full server can be drained.
//! RESUME history takes only what is left (at most `--history-bytes`): each
//! commit trims its key's history to the room remaining, so history never
//! crowds out a write and the whole store stays within the budget plus at
//! most one history frame.
//!
//! Growth is *reserved* (an atomic add, undone when refused), so concurrent
//! writers on different keys cannot overshoot the budget together.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{ErrorCode, Rejection};

/// Bytes a key slot costs beyond its value: the table entry, the slot, its
/// lock and the key string's allocation (the key's own bytes are added).
pub const SLOT_OVERHEAD: usize = 256;

/// Bytes a presence binding costs beyond its path: the map entry and the
/// session's own record of it.
pub const PRESENCE_OVERHEAD: usize = 128;

/// The budget and what is used of it.
#[derive(Debug)]
pub struct MemoryBudget {
    max: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(max: usize) -> MemoryBudget {
        MemoryBudget {
            max,
            used: AtomicUsize::new(0),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Bytes counted now, history excluded (see [`MemoryBudget::reserve`]).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` of the budget, or refuses (507) if the total with
    /// `others` (bytes held elsewhere, e.g. history) would pass the maximum.
    pub fn reserve(&self, bytes: usize, others: usize) -> Result<(), Rejection> {
        if bytes == 0 {
            return Ok(());
        }
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        let total = before.saturating_add(bytes).saturating_add(others);
        if total > self.max {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return Err(Rejection::new(
                ErrorCode::InsufficientStorage,
                format!(
                    "the server's memory budget is exhausted ({} of {} bytes in use); \
                     deletes and shrinking writes still work",
                    before.saturating_add(others),
                    self.max
                ),
            ));
        }
        Ok(())
    }

    /// Gives `bytes` back.
    pub fn release(&self, bytes: usize) {
        if bytes > 0 {
            // Saturating: a release never takes the count below zero.
            let _ = self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(bytes))
                });
        }
    }

    /// Takes `bytes` without checking (for what must always succeed, like
    /// a slot for a WATCH of a key that is then read).
    pub fn force(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_growth_past_the_maximum_and_frees() {
        let b = MemoryBudget::new(1000);
        b.reserve(600, 0).unwrap();
        let e = b.reserve(300, 200).unwrap_err();
        assert_eq!(e.code, ErrorCode::InsufficientStorage);
        assert_eq!(b.used(), 600, "a refused reservation takes nothing");
        b.release(600);
        b.reserve(900, 0).unwrap();
        b.release(5000);
        assert_eq!(b.used(), 0);
    }
}
