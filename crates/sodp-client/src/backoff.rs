//! Reconnect delays: exponential backoff with jitter.
//!
//! Attempt `n` (0-based) waits `min(max, base * 2^n)` scaled by a random
//! factor in `[0.5, 1.0]`. The jitter keeps a fleet of clients that lost the
//! same server from reconnecting in lockstep; the lower bound keeps the delay
//! from collapsing to zero.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The reconnect schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The un-jittered delay before attempt `attempt`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay before attempt `attempt`, with jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.ceiling(attempt).mul_f64(0.5 + 0.5 * random_unit())
    }
}

/// A random number in `[0, 1]`. `RandomState` is seeded randomly per
/// instance, which is all the randomness jitter needs, without a dependency.
fn random_unit() -> f64 {
    let bits = RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_max() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        };
        let secs: Vec<u64> = (0..7).map(|n| b.ceiling(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for n in 0..50 {
            let d = b.delay(n % 6);
            let c = b.ceiling(n % 6);
            assert!(d >= c / 2 && d <= c, "{d:?} vs {c:?}");
        }
    }
}
