//! Giving memory back to the operating system after bulk disconnects.
//!
//! Allocators keep freed memory for reuse, so a server that held 10,000
//! connections keeps their memory after they leave. A background task
//! watches the connection count and, when it has fallen well below its
//! recent peak, asks the allocator to give free pages back: mimalloc (the
//! binary's allocator) through `mi_collect`, glibc (used by the library's
//! tests and embedders) through `malloc_trim`.

use std::sync::Arc;
use std::time::Duration;

use crate::server::Shared;

/// How often the connection count is checked.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Trim once at least this many connections have gone since the peak.
const MIN_DROP: usize = 256;

/// Runs until the process ends.
pub async fn trim_after_disconnects(shared: Arc<Shared>) {
    let mut peak = 0usize;
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    loop {
        ticker.tick().await;
        let now = shared.connections();
        peak = peak.max(now);
        if peak - now >= MIN_DROP && now <= peak / 2 {
            tokio::task::spawn_blocking(release_free_memory);
            peak = now;
        }
    }
}

/// Returns free heap memory to the OS.
pub fn release_free_memory() {
    // SAFETY: mi_collect only walks mimalloc's own heaps and is documented
    // as callable from any thread at any time.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap structures; it is
    // documented as safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
