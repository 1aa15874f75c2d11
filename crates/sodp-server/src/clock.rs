//! Wall-clock time for what is decided by it — token `exp`/`nbf` — behind a
//! seam, so tests run on tokio's paused clock instead of sleeping.
//!
//! [`ClockSource::System`] reads the system clock. [`ClockSource::Tokio`]
//! starts at the system time and then follows tokio's clock: under
//! `tokio::time::pause()` it stands still until a test advances it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which clock a server reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClockSource {
    #[default]
    System,
    Tokio,
}

/// A clock as configured.
#[derive(Debug, Clone)]
pub struct Clock {
    source: ClockSource,
    start_unix: Duration,
    start: tokio::time::Instant,
}

fn system_unix() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

impl Clock {
    pub fn new(source: ClockSource) -> Clock {
        Clock {
            source,
            start_unix: system_unix(),
            start: tokio::time::Instant::now(),
        }
    }

    /// Time since the Unix epoch.
    pub fn since_epoch(&self) -> Duration {
        match self.source {
            ClockSource::System => system_unix(),
            ClockSource::Tokio => self.start_unix + self.start.elapsed(),
        }
    }

    /// Whole seconds since the Unix epoch.
    pub fn unix_secs(&self) -> u64 {
        self.since_epoch().as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_follows_paused_time() {
        let clock = Clock::new(ClockSource::Tokio);
        let t0 = clock.unix_secs();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.unix_secs(), t0 + 3600);
    }
}
