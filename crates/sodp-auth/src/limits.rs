//! Connection caps: at most N connections in total and M per client address,
//! checked on the upgrade before a session exists.
//!
//! A successful [`ConnectionLimiter::try_acquire`] returns a
//! [`ConnectionPermit`]; the slot is freed when the permit drops, so a session
//! that ends any way at all (close, error, panic unwinding) gives it back.
//!
//! IPv6 clients are counted per /64: one subscriber line usually owns a whole
//! /64, so a per-address cap would be no cap. IPv4-mapped IPv6 addresses
//! (`::ffff:a.b.c.d`, from dual-stack listeners) count as their IPv4 address.
//!
//! A limit of 0 means "no limit".

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;

/// Why a connection was refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum LimitExceeded {
    #[error("server connection limit ({0}) reached")]
    Total(usize),
    #[error("per-address connection limit ({0}) reached")]
    PerIp(usize),
}

/// Counts live connections. Cheap to clone (shared counters).
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max_total: usize,
    max_per_ip: usize,
    // A std Mutex: the critical sections are a few integer operations and
    // never await.
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    inner: Arc<Inner>,
    ip: IpAddr,
}

impl ConnectionLimiter {
    /// Caps of `max_total` and `max_per_ip` connections; 0 = unlimited.
    pub fn new(max_total: usize, max_per_ip: usize) -> ConnectionLimiter {
        ConnectionLimiter {
            inner: Arc::new(Inner {
                max_total,
                max_per_ip,
                counts: Mutex::new(Counts::default()),
            }),
        }
    }

    /// Admits a connection from `ip`, or says which cap it would break.
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionPermit, LimitExceeded> {
        let ip = bucket(ip);
        let mut counts = self.inner.lock();
        if self.inner.max_total != 0 && counts.total >= self.inner.max_total {
            return Err(LimitExceeded::Total(self.inner.max_total));
        }
        let n = counts.per_ip.entry(ip).or_insert(0);
        if self.inner.max_per_ip != 0 && *n >= self.inner.max_per_ip {
            return Err(LimitExceeded::PerIp(self.inner.max_per_ip));
        }
        *n += 1;
        counts.total += 1;
        Ok(ConnectionPermit {
            inner: Arc::clone(&self.inner),
            ip,
        })
    }

    /// Live connections in total.
    pub fn active(&self) -> usize {
        self.inner.lock().total
    }

    /// Live connections counted against `ip`'s bucket.
    pub fn active_for(&self, ip: IpAddr) -> usize {
        self.inner
            .lock()
            .per_ip
            .get(&bucket(ip))
            .copied()
            .unwrap_or(0)
    }
}

impl Inner {
    // A poisoned lock only means another thread panicked mid-update of plain
    // counters; carry on rather than take the server down.
    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.inner.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// The address a connection counts against (see the module doc).
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn total_cap() {
        let l = ConnectionLimiter::new(2, 0);
        let a = l.try_acquire(ip("10.0.0.1")).expect("first");
        let _b = l.try_acquire(ip("10.0.0.2")).expect("second");
        assert_eq!(
            l.try_acquire(ip("10.0.0.3")).err(),
            Some(LimitExceeded::Total(2))
        );
        drop(a);
        assert!(l.try_acquire(ip("10.0.0.3")).is_ok());
    }

    #[test]
    fn per_ip_cap_and_release() {
        let l = ConnectionLimiter::new(0, 2);
        let a = l.try_acquire(ip("127.0.0.1")).expect("1");
        let _b = l.try_acquire(ip("127.0.0.1")).expect("2");
        assert_eq!(
            l.try_acquire(ip("127.0.0.1")).err(),
            Some(LimitExceeded::PerIp(2))
        );
        assert!(l.try_acquire(ip("127.0.0.2")).is_ok());
        assert_eq!(l.active_for(ip("127.0.0.1")), 2);
        drop(a);
        assert_eq!(l.active_for(ip("127.0.0.1")), 1);
        assert!(l.try_acquire(ip("127.0.0.1")).is_ok());
    }

    #[test]
    fn refused_attempts_take_no_slot() {
        let l = ConnectionLimiter::new(0, 1);
        let _a = l.try_acquire(ip("127.0.0.1")).expect("1");
        for _ in 0..10 {
            assert!(l.try_acquire(ip("127.0.0.1")).is_err());
        }
        assert_eq!(l.active(), 1);
    }

    #[test]
    fn ipv6_counts_per_slash_64_and_mapped_v4_as_v4() {
        let l = ConnectionLimiter::new(0, 1);
        let _a = l.try_acquire(ip("2001:db8:1:2::1")).expect("1");
        assert!(l.try_acquire(ip("2001:db8:1:2::ffff")).is_err());
        assert!(l.try_acquire(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = l.try_acquire(ip("192.0.2.7")).expect("v4");
        assert!(l.try_acquire(ip("::ffff:192.0.2.7")).is_err());
    }

    #[test]
    fn unlimited_by_default() {
        let l = ConnectionLimiter::new(0, 0);
        let permits: Vec<_> = (0..100)
            .map(|_| l.try_acquire(ip("127.0.0.1")).expect("unlimited"))
            .collect();
        assert_eq!(l.active(), 100);
        drop(permits);
        assert_eq!(l.active(), 0);
        assert_eq!(l.active_for(ip("127.0.0.1")), 0);
    }
}
