//! Unpredictable numbers without a dependency: idempotency keys that must
//! not collide with any other client's (the server remembers keys per
//! identity, and every anonymous client shares one), and jitter for the
//! `transact` retry delay.
//!
//! Each `RandomState` carries SipHash keys seeded from the operating
//! system's randomness (once per thread, then varied per instance), so
//! hashing a process-wide counter and the time with a fresh one gives 64
//! bits nobody else can guess or repeat.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// 64 random bits.
pub fn next_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    hasher.finish()
}

/// A fresh idempotency key: `rs-` and 32 hex digits (128 random bits).
pub fn idempotency_key() -> String {
    format!("rs-{:016x}{:016x}", next_u64(), next_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_are_distinct_and_well_formed() {
        let keys: HashSet<String> = (0..10_000).map(|_| idempotency_key()).collect();
        assert_eq!(keys.len(), 10_000);
        for k in keys.iter().take(10) {
            assert_eq!(k.len(), 35, "{k}");
            assert!(k[3..].chars().all(|c| c.is_ascii_hexdigit()), "{k}");
        }
    }
}
