//! Test support shared by the client's, the CLI's and the bench's
//! integration tests: the real `sodp-server` as a child process on a port
//! the kernel picked (read back from the server's announcement), and a TCP
//! proxy that can cut connections while the server keeps running.
//!
//! The server binary is `$SODP_SERVER_BIN`, or `sodp-server` in the test's
//! own target directory (`cargo build --workspace --bins` puts it there; when
//! it is missing it is built into a separate target directory).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

/// The target profile directory the test binary runs from (`target/debug`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

pub fn server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SODP_SERVER_BIN") {
            return PathBuf::from(bin);
        }
        let bin = profile_dir().join("sodp-server");
        if bin.exists() {
            return bin;
        }
        // `cargo test` keeps its target directory locked while tests run, so
        // a nested build there would deadlock: build into a directory of its own.
        let target = profile_dir().join("..").join("sodp-server-for-tests");
        eprintln!(
            "sodp-server not built; building it into {}",
            target.display()
        );
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "sodp-server", "--target-dir"])
            .arg(&target)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .status()
            .expect("run cargo build -p sodp-server");
        assert!(status.success(), "cargo build -p sodp-server failed");
        let bin = target.join("debug").join("sodp-server");
        assert!(
            bin.exists(),
            "{} missing; set SODP_SERVER_BIN",
            bin.display()
        );
        bin
    })
    .clone()
}

/// A port nothing listens on (the kernel picked it, then it was released):
/// for tests of "connection refused" only. Never start a server on it —
/// that is the bind-drop-rebind race; servers bind port 0 and announce the
/// port they got (see [`TestServer`]).
pub fn refused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port from the kernel")
        .port()
}

/// How long a starting server may take to announce its address.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `sodp-server`; killed on drop.
///
/// Started with `--addr 127.0.0.1:0`: the kernel picks the port and the
/// server prints `listening ws://127.0.0.1:PORT` (`wss://` with TLS) as its first stdout line,
/// which is read (with a timeout) to learn it. A server that exits instead
/// (e.g. it refuses an argument) fails the test with its stderr. Stderr goes
/// to a log file in the temp directory, removed on drop.
pub struct TestServer {
    child: Option<Child>,
    pub port: u16,
    extra: Vec<String>,
    log: PathBuf,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// Starts the server with extra command-line arguments; panics (with the
    /// server's stderr) if it does not come up.
    pub fn start_with(extra: &[&str]) -> TestServer {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let log = std::env::temp_dir().join(format!(
            "sodp-test-server-{}-{}.log",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let mut server = TestServer {
            child: None,
            port: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log,
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The URL of a server started with `--tls-cert` (the test CA's
    /// certificates name `localhost` and `127.0.0.1`).
    pub fn wss_url(&self) -> String {
        format!("wss://localhost:{}", self.port)
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's process id (panics when stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Starts the process on `self.port` (0 the first time) and waits for
    /// its announcement.
    fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log file");
        let mut child = Command::new(server_bin())
            .arg("--addr")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn sodp-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep reading so the server can never block on a full pipe.
            for _ in lines {}
        });
        let first = rx.recv_timeout(ANNOUNCE_TIMEOUT);
        let bound = match &first {
            Ok(Some(Ok(line))) => line
                .strip_prefix("listening ws://")
                .or_else(|| line.strip_prefix("listening wss://"))
                .and_then(|a| a.trim().parse::<SocketAddr>().ok()),
            _ => None,
        };
        let Some(bound) = bound else {
            let _ = child.kill();
            let status = child.wait();
            panic!(
                "sodp-server {:?} on port {} did not announce `listening ws://ADDR` \
                 (first stdout line: {first:?}; exit: {status:?}); stderr:\n{}",
                self.extra,
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        };
        if self.port != 0 {
            assert_eq!(bound.port(), self.port, "restarted on the same port");
        }
        self.port = bound.port();
        self.child = Some(child);
    }

    /// Kills the server (its in-memory state is lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts a fresh one on the port the first start
    /// got.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A TCP proxy in front of a server. `cut()` drops every proxied connection
/// and refuses new ones until `restore()`; the server is untouched.
pub struct Proxy {
    pub port: u16,
    open: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
}

impl Proxy {
    pub async fn start(target_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let (o, g) = (open.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !o.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let born = g.load(Ordering::SeqCst);
                let g = g.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        return;
                    };
                    let cut = async {
                        while g.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut => {}
                    }
                });
            }
        });
        Proxy {
            port,
            open,
            generation,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Drops all current connections and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}
