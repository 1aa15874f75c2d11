//! Per-session rate limiting: a token bucket.
//!
//! The bucket holds at most `per_sec` tokens (the burst) and refills at
//! `per_sec` tokens per second; each write (or watch) takes one. A session
//! owns its limiters (`&mut self`, no locking). Time is passed in, so tests
//! drive the clock instead of sleeping. A clock that goes backwards refills
//! nothing and never panics.
//!
//! `per_sec == 0` means "no limit": [`RateLimiter::try_acquire`] always
//! succeeds. (Env vars use the same convention: unset or 0 = unlimited.)

use std::time::{Duration, Instant};

/// A token bucket. Tokens are counted in nanosecond-tokens (one token =
/// 1e9 units) so refills are exact integer arithmetic.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_sec: u32,
    /// Current fill, in units of 1e-9 token.
    units: u128,
    last: Option<Instant>,
}

const UNIT: u128 = 1_000_000_000;

impl RateLimiter {
    /// A bucket of `per_sec` tokens, full. 0 = unlimited.
    pub fn new(per_sec: u32) -> RateLimiter {
        RateLimiter {
            per_sec,
            units: u128::from(per_sec) * UNIT,
            last: None,
        }
    }

    /// The configured rate (0 = unlimited), for HELLO capabilities.
    pub fn per_sec(&self) -> u32 {
        self.per_sec
    }

    pub fn is_unlimited(&self) -> bool {
        self.per_sec == 0
    }

    /// Takes one token if there is one. `false` = over the limit (429).
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        if self.is_unlimited() {
            return true;
        }
        self.refill(now);
        if self.units >= UNIT {
            self.units -= UNIT;
            true
        } else {
            false
        }
    }

    /// How long until a token is available (zero if one is now), for a
    /// "retry after" hint in the 429 message.
    pub fn retry_after(&mut self, now: Instant) -> Duration {
        if self.is_unlimited() {
            return Duration::ZERO;
        }
        self.refill(now);
        let missing = UNIT.saturating_sub(self.units);
        // units refill at per_sec units per nanosecond.
        let nanos = missing.div_ceil(u128::from(self.per_sec));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn refill(&mut self, now: Instant) {
        let capacity = u128::from(self.per_sec) * UNIT;
        if let Some(last) = self.last {
            // Zero when `now` is before `last` (clock went backwards).
            let elapsed = now.saturating_duration_since(last).as_nanos();
            self.units = capacity.min(
                self.units
                    .saturating_add(elapsed.saturating_mul(u128::from(self.per_sec))),
            );
        }
        if self.last.is_none_or(|last| now > last) {
            self.last = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every test reads the real clock at most once, for a base `Instant`
    //! (std has no other constructor); all other instants are that base plus
    //! or minus exact offsets. Nothing sleeps, nothing depends on how fast
    //! the test runs.
    use super::*;

    #[test]
    fn burst_then_refuse() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(3);
        assert!(r.try_acquire(t0));
        assert!(r.try_acquire(t0));
        assert!(r.try_acquire(t0));
        assert!(!r.try_acquire(t0));
    }

    #[test]
    fn refills_at_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10);
        for _ in 0..10 {
            assert!(r.try_acquire(t0));
        }
        assert!(!r.try_acquire(t0));
        // 100 ms = exactly one token at 10/s.
        let t1 = t0 + Duration::from_millis(100);
        assert!(r.try_acquire(t1));
        assert!(!r.try_acquire(t1));
        assert!(!r.try_acquire(t1 + Duration::from_millis(99)));
        assert!(r.try_acquire(t1 + Duration::from_millis(100)));
    }

    #[test]
    fn recovers_fully_but_never_above_burst() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(5);
        for _ in 0..5 {
            assert!(r.try_acquire(t0));
        }
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert!(r.try_acquire(later));
        }
        assert!(!r.try_acquire(later));
    }

    #[test]
    fn sustained_rate_is_honoured() {
        // 1 token every 50 ms at 20/s: a steady caller is never refused.
        let t0 = Instant::now();
        let mut r = RateLimiter::new(20);
        for i in 0..1000u64 {
            assert!(
                r.try_acquire(t0 + Duration::from_millis(50 * i)),
                "call {i}"
            );
        }
    }

    #[test]
    fn zero_means_unlimited() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(0);
        assert!(r.is_unlimited());
        for _ in 0..10_000 {
            assert!(r.try_acquire(t0));
        }
        assert_eq!(r.retry_after(t0), Duration::ZERO);
    }

    #[test]
    fn clock_going_backwards_refills_nothing() {
        let t1 = Instant::now() + Duration::from_secs(10);
        let t0 = t1 - Duration::from_secs(5);
        let mut r = RateLimiter::new(1);
        assert!(r.try_acquire(t1));
        assert!(!r.try_acquire(t0));
        assert!(!r.try_acquire(t1));
        assert!(r.try_acquire(t1 + Duration::from_secs(1)));
    }

    #[test]
    fn retry_after_counts_down() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(4);
        for _ in 0..4 {
            assert!(r.try_acquire(t0));
        }
        assert_eq!(r.retry_after(t0), Duration::from_millis(250));
        assert_eq!(
            r.retry_after(t0 + Duration::from_millis(100)),
            Duration::from_millis(150)
        );
        assert_eq!(r.retry_after(t0 + Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn max_rate_does_not_overflow() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(u32::MAX);
        assert!(r.try_acquire(t0));
        assert!(r.try_acquire(t0 + Duration::from_secs(u32::MAX.into())));
    }
}
