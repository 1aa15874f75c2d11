//! Durable state on the real binary: what survives SIGTERM and `kill -9`,
//! RESUME across a restart, presence of the previous run, corruption, and
//! a crash test that kills the server at random moments under load.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;
use sodp_proto::{delta, FrameType, Value};

const BIN: &str = env!("CARGO_BIN_EXE_sodp-server");

/// A fresh data directory, removed when the test ends.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let dir = std::env::temp_dir().join(format!(
            "sodp-durable-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        DataDir(dir)
    }

    fn segments(&self) -> Vec<PathBuf> {
        files(&self.0, "log-")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with(prefix) && name.ends_with(".sodp")
        })
        .collect();
    out.sort();
    out
}

fn server_cmd(dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null());
    cmd
}

fn start(dir: &Path, extra: &[&str]) -> Launched {
    Launched::spawn(server_cmd(dir, extra), false)
}

/// Runs the binary to its exit and returns (success, stderr).
fn start_fails(dir: &Path, extra: &[&str]) -> (bool, String) {
    let mut cmd = server_cmd(dir, extra);
    cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.success(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (true, "still running: it started".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn url(server: &Launched) -> String {
    format!("ws://127.0.0.1:{}", server.port)
}

fn sigterm(mut server: Launched) {
    server.terminate();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

fn kill9(mut server: Launched) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// Starts a server that writes a checkpoint after its first write (one to
/// another key), waits for the checkpoint, and stops it.
async fn checkpoint_once(dir: &DataDir, extra: &[&str]) {
    let mut args = vec!["--checkpoint-bytes", "1"];
    args.extend_from_slice(extra);
    let server = start(&dir.0, &args);
    let mut c = TestClient::connect(&url(&server)).await;
    c.ok("state.set", json!({"state": "nudge", "value": 1}))
        .await;
    eventually("a checkpoint is written", || {
        !files(&dir.0, "checkpoint-").is_empty()
    })
    .await;
    sigterm(server);
}

/// `(value, version, initialized)` of `key`, read by a WATCH.
async fn read(server: &Launched, key: &str) -> (Value, u64, bool) {
    let mut c = TestClient::connect(&url(server)).await;
    let init = c.watch(key).await;
    let body = init.body;
    (
        body.get("value").cloned().unwrap_or(Value::Nil),
        body.get("version").and_then(Value::as_u64).unwrap(),
        body.get("initialized").and_then(Value::as_bool).unwrap(),
    )
}

async fn write_the_fixture(server: &Launched) -> HashMap<&'static str, u64> {
    let mut c = TestClient::connect(&url(server)).await;
    let mut versions = HashMap::new();
    c.ok(
        "state.set",
        json!({"state": "game.player", "value": {"name": "A", "hp": 100, "bag": ["sword"]}}),
    )
    .await;
    c.ok(
        "state.patch",
        json!({"state": "game.player", "patch": {"hp": 80}}),
    )
    .await;
    c.ok(
        "state.set_in",
        json!({"state": "game.player", "path": "/bag/-", "value": "bow"}),
    )
    .await;
    // A field removal (set without `name`).
    versions.insert(
        "game.player",
        c.ok(
            "state.set",
            json!({"state": "game.player", "value": {"hp": 80, "bag": ["sword", "bow"]}}),
        )
        .await,
    );
    c.ok("state.set", json!({"state": "gone", "value": 1}))
        .await;
    versions.insert("gone", c.ok("state.delete", json!({"state": "gone"})).await);
    versions
}

async fn check_the_fixture(server: &Launched, versions: &HashMap<&'static str, u64>) {
    let (value, version, initialized) = read(server, "game.player").await;
    assert_eq!(value, v(json!({"hp": 80, "bag": ["sword", "bow"]})));
    assert_eq!(version, versions["game.player"]);
    assert!(initialized);
    let (value, version, initialized) = read(server, "gone").await;
    assert_eq!(
        (value, initialized),
        (Value::Nil, false),
        "a deleted key stays deleted"
    );
    assert_eq!(version, versions["gone"]);
}

#[tokio::test]
async fn state_survives_sigterm_and_kill_9() {
    let dir = DataDir::new("survive");
    let server = start(&dir.0, &[]);
    let versions = write_the_fixture(&server).await;
    let mut holder = TestClient::connect(&url(&server)).await;
    let bound = holder
        .ok(
            "state.presence",
            json!({"state": "room", "path": "/alice", "value": {"x": 1}}),
        )
        .await;
    sigterm(server);

    let server = start(&dir.0, &[]);
    check_the_fixture(&server, &versions).await;
    let (room, room_version, _) = read(&server, "room").await;
    assert_eq!(
        room,
        v(json!({})),
        "presence of the previous run is removed"
    );
    assert!(room_version > bound, "as an ordinary versioned change");
    // New versions are above every version of the previous run.
    let mut c = TestClient::connect(&url(&server)).await;
    let after = c
        .ok("state.set", json!({"state": "fresh", "value": 1}))
        .await;
    assert!(after > room_version);
    let mut holder = TestClient::connect(&url(&server)).await;
    holder
        .ok(
            "state.presence",
            json!({"state": "room", "path": "/bob", "value": 2}),
        )
        .await;
    kill9(server);

    let server = start(&dir.0, &[]);
    check_the_fixture(&server, &versions).await;
    assert_eq!(
        read(&server, "room").await.0,
        v(json!({})),
        "no ghost after kill -9"
    );
    assert_eq!(read(&server, "fresh").await.1, after);
    drop(holder);
}

#[tokio::test]
async fn resume_replays_what_was_missed_across_a_restart() {
    let dir = DataDir::new("resume");
    let server = start(&dir.0, &[]);
    let mut c = TestClient::connect(&url(&server)).await;
    c.ok("state.set", json!({"state": "doc", "value": {"n": 0}}))
        .await;
    let mut watcher = TestClient::connect(&url(&server)).await;
    let init = watcher.watch("doc").await;
    let seen_version = init.body.get("version").and_then(Value::as_u64).unwrap();
    let mut seen = init.body.get("value").cloned().unwrap();
    drop(watcher);
    for n in 1..=5 {
        c.ok("state.patch", json!({"state": "doc", "patch": {"n": n}}))
            .await;
    }
    kill9(server);

    let server = start(&dir.0, &[]);
    let mut watcher = TestClient::connect(&url(&server)).await;
    watcher
        .send(
            FrameType::Resume,
            10,
            v(json!({"state": "doc", "since_version": seen_version})),
        )
        .await;
    let mut replayed = 0;
    loop {
        let f = watcher.recv().await;
        match f.kind {
            FrameType::Delta => {
                let ops = sodp_proto::DeltaOp::list_from_value(f.body.get("ops").unwrap()).unwrap();
                seen = delta::apply(&seen, &ops).unwrap();
                replayed += 1;
            }
            FrameType::StateInit => {
                assert_eq!(
                    f.body.get("value"),
                    Some(&seen),
                    "replay + live marker agree"
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(replayed, 5, "exactly the missed changes");
    assert_eq!(seen, v(json!({"n": 5})));
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_rest_kept() {
    let dir = DataDir::new("torn");
    let server = start(&dir.0, &[]);
    let versions = write_the_fixture(&server).await;
    kill9(server);
    // A record half written when the process died.
    let newest = dir.segments().pop().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    use std::io::Write;
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
    drop(f);
    let server = start(&dir.0, &[]);
    check_the_fixture(&server, &versions).await;
}

#[tokio::test]
async fn corruption_stops_the_server_naming_file_and_offset() {
    let dir = DataDir::new("corrupt");
    let server = start(&dir.0, &[]);
    let versions = write_the_fixture(&server).await;
    sigterm(server);
    // A second run, so the damaged segment is not the newest.
    let server = start(&dir.0, &[]);
    sigterm(server);
    let first = dir.segments()[0].clone();
    let mut bytes = std::fs::read(&first).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&first, &bytes).unwrap();
    let (ok, stderr) = start_fails(&dir.0, &[]);
    assert!(!ok, "a damaged log must stop the server: {stderr}");
    assert!(
        stderr.contains(first.file_name().unwrap().to_str().unwrap()),
        "{stderr}"
    );
    assert!(stderr.contains("offset"), "{stderr}");
    // --recover salvages what reads.
    let server = start(&dir.0, &["--recover"]);
    let (value, _, _) = read(&server, "gone").await;
    assert_eq!(value, Value::Nil);
    drop(server);
    let _ = versions;
}

#[tokio::test]
async fn a_missing_segment_stops_the_server() {
    let dir = DataDir::new("missing");
    for _ in 0..3 {
        let server = start(&dir.0, &[]);
        write_the_fixture(&server).await;
        sigterm(server);
    }
    let segments = dir.segments();
    assert!(segments.len() >= 3, "{segments:?}");
    std::fs::remove_file(&segments[1]).unwrap();
    let (ok, stderr) = start_fails(&dir.0, &[]);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("missing"), "{stderr}");
    assert!(
        stderr.contains(segments[1].file_name().unwrap().to_str().unwrap()),
        "{stderr}"
    );
}

#[tokio::test]
async fn checkpoints_bound_the_log_and_keep_everything() {
    let dir = DataDir::new("checkpoint");
    // 400 patches of about 40 log bytes each (only `i` changes) pass the
    // threshold at least once.
    let server = start(&dir.0, &["--checkpoint-bytes", "8000"]);
    let mut c = TestClient::connect(&url(&server)).await;
    let mut last = 0;
    for i in 0..400 {
        last = c
            .ok(
                "state.patch",
                json!({"state": format!("k{}", i % 20), "patch": {"i": i, "pad": "x".repeat(100)}}),
            )
            .await;
    }
    eventually("a checkpoint is written", || {
        !files(&dir.0, "checkpoint-").is_empty()
    })
    .await;
    sigterm(server);
    assert!(
        dir.segments().len() <= 3,
        "old segments are deleted: {:?}",
        dir.segments()
    );
    let server = start(&dir.0, &["--checkpoint-bytes", "8000"]);
    let (value, version, _) = read(&server, "k19").await;
    assert_eq!(value.get("i"), Some(&Value::from(399u64)));
    assert_eq!(version, last);
    for i in 0..20 {
        let (value, _, _) = read(&server, &format!("k{i}")).await;
        assert_eq!(value.get("i").and_then(Value::as_u64), Some(380 + i));
    }
}

/// What a writer knows about its key at the moment of a crash.
#[derive(Debug, Default, Clone)]
struct Known {
    /// (version, n) of the last acknowledged write.
    acked: Option<(u64, u64)>,
    /// `n` of the write sent but not acknowledged when the server died.
    in_flight: Option<u64>,
    /// Every version acknowledged in this cycle.
    versions: Vec<u64>,
}

/// A CALL that returns `None` instead of panicking when the connection
/// dies (the server is killed under it).
async fn try_call(
    c: &mut TestClient,
    id: u64,
    method: &str,
    args: serde_json::Value,
) -> Option<u64> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let call_id = format!("w{id}");
    let body = v(json!({"call_id": call_id, "method": method, "args": args}));
    let bytes = sodp_proto::Frame::new(FrameType::Call, 0, body).encode();
    c.ws.send(Message::Binary(bytes.into())).await.ok()?;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), c.ws.next())
            .await
            .ok()??
            .ok()?;
        let Message::Binary(b) = msg else { continue };
        let f = sodp_proto::Frame::decode(&b, 128).ok()?;
        if f.kind == FrameType::Result
            && f.body.get("call_id") == Some(&Value::from(call_id.as_str()))
        {
            assert_eq!(f.body.get("success"), Some(&Value::Bool(true)), "{f:?}");
            return f.body.get("data")?.get("version")?.as_u64();
        }
    }
}

#[tokio::test]
async fn crash_test_every_acknowledged_write_survives_kill_9() {
    let dir = DataDir::new("crash");
    let cycles: u64 = std::env::var("SODP_CRASH_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(6);
    let mut seen_versions = std::collections::HashSet::new();
    let mut floor = 0u64;
    let mut seed = 0x5eed_u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut total = 0;
    for cycle in 0..cycles {
        let server = start(&dir.0, &[]);
        let url = url(&server);
        // Four writers on their own keys, two more on one shared key, each
        // mixing set, patch, set_in and delete; each write sets `n`.
        let keys = ["own.0", "own.1", "own.2", "own.3", "shared", "shared"];
        let mut writers = Vec::new();
        for (w, key) in keys.iter().enumerate() {
            let known = std::sync::Arc::new(std::sync::Mutex::new(Known::default()));
            let record = known.clone();
            let url = url.clone();
            let name = key.to_string();
            let key = name.clone();
            let task = tokio::spawn(async move {
                let mut c = TestClient::connect(&url).await;
                for n in 1u64.. {
                    let (method, args) = match n % 5 {
                        0 => ("state.delete", json!({"state": key})),
                        1 | 4 => (
                            "state.set",
                            json!({"state": key, "value": {"w": w, "n": n, "cycle": cycle}}),
                        ),
                        2 => ("state.patch", json!({"state": key, "patch": {"n": n}})),
                        _ => (
                            "state.set_in",
                            json!({"state": key, "path": "/n", "value": n}),
                        ),
                    };
                    record.lock().unwrap().in_flight = Some(n);
                    let Some(version) = try_call(&mut c, n, method, args).await else {
                        break;
                    };
                    let mut k = record.lock().unwrap();
                    k.acked = Some((version, if method == "state.delete" { 0 } else { n }));
                    k.in_flight = None;
                    k.versions.push(version);
                }
            });
            writers.push((name, known, task));
        }
        tokio::time::sleep(Duration::from_millis(150 + rand() % 400)).await;
        kill9(server);
        for (_, _, task) in &mut writers {
            let _ = task.await;
        }
        let server = start(&dir.0, &[]);
        let mut cycle_max = floor;
        for (key, known, _) in &writers {
            let known = known.lock().unwrap().clone();
            for version in &known.versions {
                assert!(
                    *version > floor,
                    "{key}: version {version} not above the previous run's {floor}"
                );
                // (Within a run a no-op write answers the current version,
                // so only earlier runs' versions must never come back.)
                assert!(
                    !seen_versions.contains(version),
                    "version {version} of an earlier run handed out again"
                );
                cycle_max = cycle_max.max(*version);
            }
            total += known.versions.len();
            let (value, version, initialized) = read(&server, key).await;
            cycle_max = cycle_max.max(version);
            let Some((acked_version, acked_n)) = known.acked else {
                continue;
            };
            assert!(
                version >= acked_version,
                "{key}: acknowledged version {acked_version} lost (now {version})"
            );
            if key == "shared" {
                continue; // Two writers: only "nothing acked is lost" holds.
            }
            let n = if initialized {
                value.get("n").and_then(Value::as_u64)
            } else {
                Some(0)
            };
            if version == acked_version {
                assert_eq!(n, Some(acked_n), "{key}: the acknowledged value");
            } else {
                // Only the write in flight at the crash can have landed.
                let expected = known.in_flight.map(|f| if f % 5 == 0 { 0 } else { f });
                assert_eq!(
                    n, expected,
                    "{key}: at {version}, after acked {acked_version}"
                );
            }
        }
        for (_, known, _) in &writers {
            seen_versions.extend(known.lock().unwrap().versions.iter().copied());
        }
        for (_, known, _) in &writers {
            seen_versions.extend(known.lock().unwrap().versions.iter().copied());
        }
        floor = cycle_max;
        kill9(server);
        if (cycle + 1) % 50 == 0 {
            eprintln!(
                "crash test: {} cycles, {total} acknowledged writes checked",
                cycle + 1
            );
        }
    }
    eprintln!("crash test: {cycles} cycles, {total} acknowledged writes checked");
    assert!(
        total > 20,
        "the writers made progress: {total} acknowledged writes"
    );
}

#[tokio::test]
async fn a_disk_that_refuses_writes_fails_them_with_500_and_keeps_what_was_acked() {
    let dir = DataDir::new("full");
    std::fs::create_dir_all(&dir.0).unwrap();
    // The log may not grow past 256 KiB (RLIMIT_FSIZE, with SIGXFSZ ignored
    // so the write fails with EFBIG instead of killing the process): a
    // stand-in for a full disk that needs no privileges.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 256; exec {BIN} --addr 127.0.0.1:0 --data-dir {}",
            dir.0.display()
        ))
        .env("RUST_LOG", "error")
        .stderr(Stdio::null());
    let server = Launched::spawn(cmd, false);
    let mut c = TestClient::connect(&url(&server)).await;
    let chunk = "x".repeat(8 * 1024);
    let mut acked = Vec::new();
    let failure = loop {
        let n = acked.len();
        let r = c
            .call(
                "state.set",
                json!({"state": format!("k{n}"), "value": chunk}),
            )
            .await;
        match failure_code(&r) {
            None => acked.push(r.get("data").unwrap().get("version").unwrap().clone()),
            Some(code) => break (code, r),
        }
        assert!(acked.len() < 1000, "the limit never bit");
    };
    assert_eq!(failure.0, 500, "{:?}", failure.1);
    let message = failure
        .1
        .get("data")
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    assert!(message.contains("durable"), "{message}");
    // Every later write is refused; the server keeps serving reads.
    let r = c
        .call("state.set", json!({"state": "small", "value": 1}))
        .await;
    assert_eq!(failure_code(&r), Some(500));
    let (value, _, _) = read(&server, "k0").await;
    assert_eq!(value, Value::from(chunk.as_str()));
    assert!(server_is_alive(&server));
    // Load balancers stop sending traffic: /ready says why.
    let ready = http_get(("127.0.0.1", server.port), "/ready").await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains("storage failed"), "{ready}");
    kill9(server);
    // Without the limit, everything acknowledged is there.
    let server = start(&dir.0, &[]);
    for (n, version) in acked.iter().enumerate() {
        let (value, v, _) = read(&server, &format!("k{n}")).await;
        assert_eq!(Some(v), version.as_u64());
        assert_eq!(value, Value::from(chunk.as_str()));
    }
}

fn server_is_alive(server: &Launched) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", server.port)).is_ok()
}

#[tokio::test]
async fn batch_and_never_keep_what_reached_the_disk() {
    for (mode, stop) in [("batch", "kill"), ("never", "term")] {
        let dir = DataDir::new(mode);
        let args = ["--fsync", mode, "--fsync-interval-ms", "20"];
        let server = start(&dir.0, &args);
        let versions = write_the_fixture(&server).await;
        if stop == "kill" {
            // Past the interval, the writes are synced: kill -9 keeps them.
            tokio::time::sleep(Duration::from_millis(300)).await;
            kill9(server);
        } else {
            // SIGTERM writes and syncs what is pending, whatever the mode.
            sigterm(server);
        }
        let server = start(&dir.0, &args);
        check_the_fixture(&server, &versions).await;
    }
}

#[tokio::test]
async fn restarts_without_writes_do_not_pile_up_log_segments() {
    let dir = DataDir::new("restarts");
    let server = start(&dir.0, &[]);
    let versions = write_the_fixture(&server).await;
    sigterm(server);
    for _ in 0..14 {
        let server = start(&dir.0, &[]);
        sigterm(server);
    }
    // Each start opens a segment; a start that replays more than 8 writes a
    // checkpoint and drops the segments before it.
    assert!(
        !files(&dir.0, "checkpoint-").is_empty(),
        "a checkpoint was written"
    );
    assert!(dir.segments().len() <= 10, "{:?}", dir.segments());
    let server = start(&dir.0, &[]);
    check_the_fixture(&server, &versions).await;
}

#[tokio::test]
async fn a_second_server_cannot_open_a_data_directory_in_use() {
    let dir = DataDir::new("lock");
    let first = start(&dir.0, &[]);
    let (ok, stderr) = start_fails(&dir.0, &[]);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("in use by another sodp-server"), "{stderr}");
    drop(first);
    // Once the first is gone, the directory opens again.
    let again = start(&dir.0, &[]);
    drop(again);
}

#[tokio::test]
async fn ttl_deadlines_survive_restarts_and_expire_while_down() {
    let dir = DataDir::new("ttl");
    let server = start(&dir.0, &[]);
    let mut c = TestClient::connect(&url(&server)).await;
    c.ok(
        "state.set",
        json!({"state": "lasting", "value": 1, "ttl_ms": 600_000}),
    )
    .await;
    let short = c
        .ok(
            "state.set",
            json!({"state": "short", "value": 2, "ttl_ms": 300}),
        )
        .await;
    c.ok("state.set", json!({"state": "forever", "value": 3}))
        .await;
    kill9(server);
    // Past the short deadline while the server is down.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server = start(&dir.0, &[]);
    let (value, version, initialized) = read(&server, "short").await;
    assert!(
        !initialized,
        "expired while down: deleted at start ({value:?})"
    );
    assert!(version > short, "as an ordinary versioned delete");
    let mut w = TestClient::connect(&url(&server)).await;
    let init = w.watch("lasting").await;
    let expires = init.body.get("expires_at").and_then(Value::as_u64);
    assert!(expires.is_some(), "the deadline survived: {init:?}");
    assert_eq!(read(&server, "forever").await.0, Value::Int(3));
    // And again through a checkpoint: the deadline is in the image.
    sigterm(server);
    checkpoint_once(&dir, &[]).await;
    let server = start(&dir.0, &[]);
    let mut w = TestClient::connect(&url(&server)).await;
    let init = w.watch("lasting").await;
    assert_eq!(init.body.get("expires_at").and_then(Value::as_u64), expires);
}

/// An idempotent CALL; returns its RESULT body.
async fn call_idempotent(
    c: &mut TestClient,
    method: &str,
    args: serde_json::Value,
    key: &str,
) -> Value {
    c.call_with(method, v(args), [("idempotency_key", Value::from(key))])
        .await
}

fn result_version(r: &Value) -> u64 {
    assert_eq!(r.get("success"), Some(&Value::Bool(true)), "{r:?}");
    r.get("data")
        .and_then(|d| d.get("version"))
        .and_then(Value::as_u64)
        .unwrap()
}

/// Exactly-once across a crash: a client that lost the RESULT and retries
/// after the server restarted gets the original outcome, not a second
/// change — through the log, a checkpoint, and for a call that changed
/// nothing (whose retry must not run against a newer state).
#[tokio::test]
async fn idempotent_outcomes_survive_kill_9_and_checkpoints() {
    let dir = DataDir::new("idempotency");
    let server = start(&dir.0, &[]);
    let mut c = TestClient::connect(&url(&server)).await;
    let patch = json!({"state": "counter", "patch": {"n": 1}});
    let first = result_version(&call_idempotent(&mut c, "state.patch", patch.clone(), "p-1").await);
    c.ok("state.set", json!({"state": "same", "value": 7}))
        .await;
    // Changes nothing (the value is already 7), yet must be remembered.
    let noop = result_version(
        &call_idempotent(
            &mut c,
            "state.set",
            json!({"state": "same", "value": 7}),
            "s-1",
        )
        .await,
    );
    let tx = json!({"ops": [
        {"method": "state.set", "args": {"state": "tx.a", "value": 1}},
        {"method": "state.set", "args": {"state": "tx.b", "value": 2}},
    ]});
    let tx_version =
        result_version(&call_idempotent(&mut c, "state.transaction", tx.clone(), "t-1").await);
    kill9(server);

    let server = start(&dir.0, &[]);
    let mut c = TestClient::connect(&url(&server)).await;
    c.ok("state.set", json!({"state": "same", "value": 8}))
        .await;
    for _ in 0..2 {
        let again = call_idempotent(&mut c, "state.patch", patch.clone(), "p-1").await;
        assert_eq!(result_version(&again), first, "the original outcome");
        let again = call_idempotent(
            &mut c,
            "state.set",
            json!({"state": "same", "value": 7}),
            "s-1",
        )
        .await;
        assert_eq!(result_version(&again), noop);
        let again = call_idempotent(&mut c, "state.transaction", tx.clone(), "t-1").await;
        assert_eq!(result_version(&again), tx_version);
    }
    assert_eq!(read(&server, "counter").await.1, first, "no second change");
    assert_eq!(
        read(&server, "same").await.0,
        Value::Int(8),
        "the no-op retry did not run against the newer state"
    );
    let reused = call_idempotent(
        &mut c,
        "state.patch",
        json!({"state": "counter", "patch": {"n": 2}}),
        "p-1",
    )
    .await;
    assert_eq!(failure_code(&reused), Some(409), "{reused:?}");
    sigterm(server);

    // Through a checkpoint: the records are in its image, the old log gone.
    checkpoint_once(&dir, &[]).await;
    let server = start(&dir.0, &[]);
    let mut c = TestClient::connect(&url(&server)).await;
    let again = call_idempotent(&mut c, "state.patch", patch, "p-1").await;
    assert_eq!(
        result_version(&again),
        first,
        "remembered through the checkpoint"
    );
    assert_eq!(read(&server, "counter").await.1, first);
}

/// A transaction is one log record: a crash that tears it keeps none of
/// its keys' changes (never half a transaction).
#[tokio::test]
async fn a_torn_transaction_is_dropped_whole() {
    let dir = DataDir::new("torn-tx");
    let server = start(&dir.0, &[]);
    let mut c = TestClient::connect(&url(&server)).await;
    let before = c
        .ok("state.set", json!({"state": "tx.a", "value": 0}))
        .await;
    c.ok(
        "state.transaction",
        json!({"ops": [
            {"method": "state.set", "args": {"state": "tx.a", "value": 1}},
            {"method": "state.set", "args": {"state": "tx.b", "value": 2}},
        ]}),
    )
    .await;
    kill9(server);
    // Tear the last record (the transaction) by cutting its last bytes.
    let newest = dir.segments().pop().unwrap();
    let len = std::fs::metadata(&newest).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let server = start(&dir.0, &[]);
    let (a, version, _) = read(&server, "tx.a").await;
    assert_eq!(
        (a, version),
        (Value::Int(0), before),
        "tx.a as before the transaction"
    );
    let (_, _, b_initialized) = read(&server, "tx.b").await;
    assert!(!b_initialized, "tx.b was never written");
}

/// History trimmed before a checkpoint stays trimmed after the restart:
/// `state.history` from before the retained changes says `complete: false`
/// (it would otherwise claim a gapless history it does not have).
#[tokio::test]
async fn trimmed_history_is_still_known_trimmed_after_a_restart() {
    let dir = DataDir::new("history-floor");
    let server = start(&dir.0, &["--history", "3"]);
    let mut c = TestClient::connect(&url(&server)).await;
    let mut versions = Vec::new();
    for n in 0..10 {
        versions.push(c.ok("state.set", json!({"state": "h", "value": n})).await);
    }
    sigterm(server);
    // A checkpoint of the trimmed history (written by a run that only
    // touches another key), then a run that reads `h` from it alone, with
    // room for far more history than it holds.
    checkpoint_once(&dir, &["--history", "3"]).await;
    let server = start(&dir.0, &[]);
    let mut c = TestClient::connect(&url(&server)).await;
    let history = |since: u64| json!({"state": "h", "since_version": since});
    let r = c.call("state.history", history(versions[1])).await;
    let data = r.get("data").unwrap();
    let entries = data.get("entries").and_then(Value::as_array).unwrap();
    let retained: Vec<u64> = entries
        .iter()
        .map(|e| e.get("version").and_then(Value::as_u64).unwrap())
        .collect();
    assert_eq!(retained, versions[7..], "the last three changes were kept");
    assert_eq!(
        data.get("complete"),
        Some(&Value::Bool(false)),
        "changes after {} were dropped before the restart: {r:?}",
        versions[1]
    );
    let r = c.call("state.history", history(versions[6])).await;
    assert_eq!(
        r.get("data").and_then(|d| d.get("complete")),
        Some(&Value::Bool(true)),
        "from the version before the first retained change, nothing is missing"
    );
}
