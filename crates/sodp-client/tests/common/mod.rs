//! Test support shared by the client's and the CLI's integration tests: the
//! real `sodp-server` as a child process on a free port, and a TCP proxy
//! that can cut connections while the server keeps running.
//!
//! The server binary is `$SODP_SERVER_BIN`, or `sodp-server` in the test's
//! own target directory (`cargo build --workspace --bins` puts it there; when
//! it is missing it is built into a separate target directory).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A running `sodp-server`; killed on drop.
pub struct TestServer {
    child: Option<Child>,
    pub port: u16,
    extra: Vec<String>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// Starts the server with extra command-line arguments.
    pub fn start_with(extra: &[&str]) -> TestServer {
        TestServer::start_on(free_port(), extra)
    }

    /// Starts the server on a given port.
    pub fn start_on(port: u16, extra: &[&str]) -> TestServer {
        let mut server = TestServer {
            child: None,
            port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    /// Like [`start_with`](Self::start_with), but `None` when the server
    /// refuses to start with these arguments (e.g. a feature it lacks).
    pub fn try_start_with(extra: &[&str]) -> Option<TestServer> {
        let port = free_port();
        let mut child = Command::new(server_bin())
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("sodp-server refused {extra:?} ({status})");
            return None;
        }
        wait_healthy(port);
        Some(TestServer {
            child: Some(child),
            port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        })
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(server_bin())
            .arg("--addr")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sodp-server");
        self.child = Some(child);
        wait_healthy(self.port);
    }

    /// Kills the server (its in-memory state is lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts a fresh one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `GET /health` answers 200 (10 s at most).
fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let req = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
            let mut answer = String::new();
            let _ = s
                .write_all(req.as_bytes())
                .and_then(|()| s.read_to_string(&mut answer));
            if answer.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("sodp-server on port {port} did not become healthy");
}

/// A TCP proxy in front of a server. `cut()` drops every proxied connection
/// and refuses new ones until `restore()`; the server is untouched.
pub struct Proxy {
    pub port: u16,
    open: Arc<AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    pub async fn start(target_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
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
