//! The load generator against the real server, small and quick: every
//! scenario must finish clean (exit 0, `"ok": true`) and report the server's
//! CPU. Needs `target/debug/sodp-server` (scripts/test.sh builds the
//! workspace binaries before running tests), or `SODP_SERVER_BIN`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server_bin() -> Option<PathBuf> {
    if let Ok(bin) = std::env::var("SODP_SERVER_BIN") {
        return Some(bin.into());
    }
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/sodp-server");
    bin.exists().then_some(bin)
}

fn start() -> Option<Server> {
    let Some(bin) = server_bin() else {
        eprintln!("skipping: build sodp-server first (cargo build -p sodp-server)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Server(child, port))
}

fn bench(server: &Server, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sodp-bench"))
        .args(["--url", &format!("ws://127.0.0.1:{}", server.1)])
        .args([
            "--server-pid",
            &server.0.id().to_string(),
            "--timeout",
            "60",
        ])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["ok"], true, "{args:?}: {report}");
    assert!(report["server"]["cpu_us"].is_number(), "{report}");
    report
}

#[test]
fn every_scenario_runs_clean_against_the_real_server() {
    let Some(server) = start() else { return };
    let fanout = bench(
        &server,
        &["fanout", "--subs", "20", "--writes", "50", "--window", "4"],
    );
    assert_eq!(fanout["missing"], 0, "{fanout}");
    bench(
        &server,
        &["fanout", "--subs", "5", "--writes", "40", "--rate", "400"],
    );
    bench(
        &server,
        &["writes", "--conns", "4", "--keys", "4", "--duration", "1"],
    );
    bench(&server, &["roundtrip", "--count", "100"]);
    bench(
        &server,
        &["conns", "--count", "50", "--hold", "1", "--settle", "0"],
    );
}
