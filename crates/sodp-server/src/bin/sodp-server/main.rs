//! `sodp-server`: parse options, start logging, serve until SIGTERM/Ctrl-C;
//! with TLS, SIGHUP reloads the certificate.
//! The allocator, the log formatter and the flag parser live here, not in
//! the library.

mod cli;
mod config_file;

use cli::Args;
use sodp_server::Server;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

/// mimalloc: see the `libmimalloc-sys` entry in Cargo.toml for why.
#[global_allocator]
static GLOBAL: Allocator = Allocator;

/// mimalloc, asked through its plain entry points when the alignment is
/// one every mimalloc block has (8: blocks are multiples of 8 bytes from
/// aligned pages) — the `mimalloc` crate's allocator calls the aligned
/// ones for every allocation, 4 % more instructions per write
/// (`bench/instructions`) — and through the aligned ones otherwise.
struct Allocator;

/// The alignment every mimalloc block has.
const MI_BLOCK_ALIGN: usize = 8;

// SAFETY: each method forwards to the mimalloc function of the same
// contract; the plain ones only when `layout.align() <= MI_BLOCK_ALIGN`,
// which every block they return satisfies; memory from either is freed by
// `mi_free` and resized by `mi_realloc*`, which accept both.
unsafe impl std::alloc::GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        if layout.align() <= MI_BLOCK_ALIGN {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys as mi;
        if layout.align() <= MI_BLOCK_ALIGN {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys as mi;
        if layout.align() <= MI_BLOCK_ALIGN {
            mi::mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::load();
    if !args.huge_pages {
        disable_transparent_huge_pages();
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        // One JSON object per line: timestamp, level, message and the
        // event's fields (session, key, method, code, …).
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }

    let config = match args.into_config() {
        Ok(config) => sodp_server::Config {
            trim_memory: Some(release_free_memory),
            ..config
        },
        Err(message) => {
            eprintln!("sodp-server: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    let server = match Server::bind(config).await {
        Ok(server) => server,
        Err(e) => {
            error!("{e}");
            eprintln!("sodp-server: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let addr = server
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let scheme = if server.certificates().is_some() {
        "wss"
    } else {
        "ws"
    };
    reload_on_sighup(server.certificates(), server.shared().metrics.clone());
    info!(
        "sodp-server {} listening on {scheme}://{addr} (GET /health on the same port)",
        env!("CARGO_PKG_VERSION")
    );
    // The machine-readable announcement, on stdout whatever RUST_LOG says:
    // with `--addr 127.0.0.1:0` this is how a supervisor or a test learns
    // the port the kernel chose (no bind-drop-rebind race).
    let shutdown = shutdown_signal();
    announce(scheme, &addr, server.health_addr(), server.metrics_addr());
    server.run(shutdown).await;
    info!("stopped");
    std::process::ExitCode::SUCCESS
}

/// Prints `listening ws://ADDR` (`wss://` with TLS; then `health http://ADDR/health` with
/// `--health-port`, `metrics http://ADDR/metrics` with `--metrics-port`) on
/// stdout, one line each, flushed.
fn announce(
    scheme: &str,
    addr: &str,
    health: Option<std::net::SocketAddr>,
    metrics: Option<std::net::SocketAddr>,
) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {scheme}://{addr}");
    if let Some(health) = health {
        let _ = writeln!(out, "health http://{health}/health");
    }
    if let Some(metrics) = metrics {
        let _ = writeln!(out, "metrics http://{metrics}/metrics");
    }
    let _ = out.flush();
}

/// Reloads the TLS certificate on every SIGHUP (`systemctl reload`). The
/// handler is installed before the server announces itself and also without
/// TLS, so a SIGHUP never kills the server.
fn reload_on_sighup(
    certificates: Option<std::sync::Arc<sodp_server::tls::Certificates>>,
    metrics: std::sync::Arc<sodp_server::metrics::Metrics>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match &certificates {
                Some(certificates) => certificates.reload_and_log("SIGHUP", &metrics),
                None => info!("SIGHUP: nothing to reload (no --tls-cert)"),
            }
        }
    });
}

/// Asks the kernel for no transparent huge pages in this process (Linux's
/// `PR_SET_THP_DISABLE`, what `MIMALLOC_ALLOW_THP=0` does at start-up).
/// mimalloc marks its regions `MADV_HUGEPAGE`; as the heap grows (the RESUME
/// history filling, a burst of connections), each first touch of a 2 MiB
/// page then zeroes it whole (and may compact memory inside the fault) on
/// the worker thread. Measured (docs/BENCHMARKS.md, "transparent huge
/// pages"): CPU per write −4 to −6 % and RSS ~10 % lower while the history
/// fills; no effect once the heap stops growing. `--huge-pages` keeps them.
fn disable_transparent_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and only
    // sets a flag of the calling process.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::debug!("PR_SET_THP_DISABLE: {}", std::io::Error::last_os_error());
    }
}

/// Returns free heap memory to the OS (the library calls it after bulk
/// disconnects; see `sodp_server::memory`).
fn release_free_memory() {
    // SAFETY: mi_collect only walks mimalloc's own heaps and is documented
    // as callable from any thread at any time.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

/// Installs the SIGTERM and Ctrl-C handlers now — before the server says
/// it is listening, so a supervisor's SIGTERM is never the default "die" —
/// and returns a future that resolves on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    // `ctrl_c` installs its handler on first poll: poll it once now.
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    let _ = futures_poll_once(ctrl_c.as_mut());
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = ctrl_c.await;
    }
}

/// Polls a future once without waiting.
fn futures_poll_once<F: std::future::Future>(
    f: std::pin::Pin<&mut F>,
) -> std::task::Poll<F::Output> {
    let waker = std::task::Waker::noop();
    f.poll(&mut std::task::Context::from_waker(waker))
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::Allocator;

    /// Every size class (and the sizes between), every alignment from 1
    /// to a page: the block is aligned, zeroed when asked, keeps its bytes
    /// and its alignment through a realloc.
    #[test]
    fn blocks_are_aligned_zeroed_and_resized_as_asked() {
        let sizes = (1..=1100).chain([4095, 4096, 70_000, 1 << 21]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes, valid layouts; every block is
                // freed with the layout it was made with.
                unsafe {
                    let p = Allocator.alloc(layout);
                    assert!(
                        !p.is_null() && (p as usize).is_multiple_of(align),
                        "{size} {align}"
                    );
                    p.write_bytes(0xab, size);
                    let z = Allocator.alloc_zeroed(layout);
                    assert!((z as usize).is_multiple_of(align), "{size} {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    Allocator.dealloc(z, layout);
                    let bigger = size * 2 + 1;
                    let q = Allocator.realloc(p, layout, bigger);
                    assert!((q as usize).is_multiple_of(align), "realloc {size} {align}");
                    assert!(std::slice::from_raw_parts(q, size)
                        .iter()
                        .all(|&b| b == 0xab));
                    Allocator.dealloc(q, Layout::from_size_align(bigger, align).unwrap());
                }
            }
        }
    }
}
