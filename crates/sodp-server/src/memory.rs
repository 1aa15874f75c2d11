//! Giving memory back to the operating system after bulk disconnects.
//!
//! Allocators keep freed memory for reuse, so a server that held 10,000
//! connections keeps their memory after they leave. A background task
//! watches the connection count and, when it has fallen well below its
//! recent peak, asks the allocator to give free pages back through
//! `Config::trim_memory` (the binary passes mimalloc's `mi_collect`; the
//! library itself knows no allocator and holds no unsafe code).

use std::sync::Arc;
use std::time::Duration;

use crate::shared::Shared;

/// How often the connection count is checked.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Trim once at least this many connections have gone since the peak.
const MIN_DROP: usize = 256;

/// Runs until the process ends (returns at once if there is no trim hook).
pub async fn trim_after_disconnects(shared: Arc<Shared>) {
    let Some(trim) = shared.config.trim_memory else {
        return;
    };
    let mut peak = 0usize;
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    loop {
        ticker.tick().await;
        let now = shared.connections();
        peak = peak.max(now);
        if peak - now >= MIN_DROP && now <= peak / 2 {
            tokio::task::spawn_blocking(trim);
            peak = now;
        }
    }
}
