//! Cluster mode: three nodes on loopback sharing one private Redis.
//!
//! The nodes run in this process (multi-threaded runtime, as the binary);
//! the node killed with `kill -9` is a real `sodp-server` process.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::time::Duration;

use common::{failure_code, v, Launched, TestClient, TestServer};
use redis_server::RedisServer;
use serde_json::json;
use sodp_proto::{DeltaOp, FrameType, Value};
use sodp_server::cluster::ClusterConfig;

const BIN: &str = env!("CARGO_BIN_EXE_sodp-server");

async fn node(redis: &RedisServer) -> TestServer {
    node_with_lease(redis, Duration::from_secs(10)).await
}

async fn node_with_lease(redis: &RedisServer, lease: Duration) -> TestServer {
    let url = redis.url();
    TestServer::with(move |c| {
        c.cluster = Some(ClusterConfig {
            lease,
            ..ClusterConfig::new(url)
        });
    })
    .await
}

/// A node as its own `sodp-server` process (so that it can be killed or
/// stopped with a signal), with a lease of `lease_ms`.
fn node_process(redis: &RedisServer, lease_ms: u64) -> Launched {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["--addr", "127.0.0.1:0", "--redis-url", &redis.url()])
        .args(["--cluster-lease-ms", &lease_ms.to_string()])
        .stderr(std::process::Stdio::null());
    Launched::spawn(cmd, false)
}

async fn three_nodes(redis: &RedisServer) -> [TestServer; 3] {
    [node(redis).await, node(redis).await, node(redis).await]
}

fn get_field(value: &Value, field: &str) -> Option<i64> {
    value.get(field).and_then(Value::as_i64)
}

async fn read(client: &mut TestClient, key: &str) -> Value {
    let r = client.call("state.get", json!({"state": key})).await;
    assert_eq!(r.get("success"), Some(&Value::Bool(true)), "{r:?}");
    r.get("data").unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_on_one_node_reaches_watchers_on_the_others_with_the_same_version_and_ops() {
    let redis = RedisServer::start().await;
    let [a, b, c] = three_nodes(&redis).await;
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    let mut on_c = c.client().await;
    for w in [&mut on_a, &mut on_b, &mut on_c] {
        let init = w.watch("room.1").await;
        assert_eq!(init.body.get("initialized"), Some(&Value::Bool(false)));
    }
    let mut writer = a.client().await;
    let v1 = writer
        .ok(
            "state.set",
            json!({"state": "room.1", "value": {"title": "x", "n": 1}}),
        )
        .await;
    let v2 = writer
        .ok("state.patch", json!({"state": "room.1", "patch": {"n": 2}}))
        .await;
    assert_eq!(
        v2,
        v1 + 1,
        "one version per mutation, as on a single server"
    );
    let seen_a = [on_a.delta().await, on_a.delta().await];
    for w in [&mut on_b, &mut on_c] {
        let seen = [w.delta().await, w.delta().await];
        assert_eq!(seen, seen_a, "same versions and ops on every node");
    }
    assert_eq!(seen_a[0].0, v1);
    assert_eq!(seen_a[1], (v2, vec![DeltaOp::update("/n", Value::Int(2))]));
    // A write on C reaches A; a read on any node sees the latest.
    let mut writer_c = c.client().await;
    let v3 = writer_c
        .ok("state.delete", json!({"state": "room.1"}))
        .await;
    assert_eq!(on_a.delta().await, (v3, vec![DeltaOp::remove("/")]));
    let mut reader = b.client().await;
    let data = read(&mut reader, "room.1").await;
    assert_eq!(data.get("version").and_then(Value::as_u64), Some(v3));
    assert_eq!(data.get("initialized"), Some(&Value::Bool(false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_on_three_nodes_lose_nothing_and_versions_only_increase() {
    const WRITES: i64 = 25;
    let redis = RedisServer::start().await;
    let nodes = three_nodes(&redis).await;
    let mut watchers = Vec::new();
    for n in &nodes {
        let mut w = n.client().await;
        w.watch("shared").await;
        watchers.push(w);
    }
    let mut writers = Vec::new();
    for i in 0..8 {
        let url = nodes[i % 3].url();
        writers.push(tokio::spawn(async move {
            let mut c = TestClient::connect(&url).await;
            let mut versions = Vec::new();
            for j in 1..=WRITES {
                let field = format!("f{i}");
                versions.push(
                    c.ok(
                        "state.patch",
                        json!({"state": "shared", "patch": {field: j}}),
                    )
                    .await,
                );
            }
            versions
        }));
    }
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    acked.sort_unstable();
    acked.dedup();
    assert_eq!(
        acked.len(),
        8 * WRITES as usize,
        "every write has its own version"
    );
    let last = *acked.last().unwrap();
    for w in &mut watchers {
        let mut value = Value::Nil;
        let mut seen = Vec::new();
        while seen.last() != Some(&last) {
            let (version, ops) = w.delta().await;
            if let Some(prev) = seen.last() {
                assert!(version > *prev, "{version} after {prev}");
            }
            value = sodp_proto::apply(&value, &ops).unwrap();
            seen.push(version);
        }
        assert_eq!(
            seen, acked,
            "each watcher saw every acknowledged write once"
        );
        for i in 0..8 {
            assert_eq!(get_field(&value, &format!("f{i}")), Some(WRITES));
        }
    }
}

/// A counter incremented with `if_version` (read, then write only if
/// unchanged; retry on 409) by writers on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conditional_counters_across_nodes_sum_exactly() {
    const EACH: i64 = 10;
    let redis = RedisServer::start().await;
    let nodes = three_nodes(&redis).await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let url = nodes[i % 3].url();
        tasks.push(tokio::spawn(async move {
            let mut c = TestClient::connect(&url).await;
            let mut conflicts = 0;
            for _ in 0..EACH {
                loop {
                    let data = read(&mut c, "counter").await;
                    let version = data.get("version").and_then(Value::as_u64).unwrap();
                    let n = data.get("value").and_then(Value::as_i64).unwrap_or(0);
                    let r = c
                        .call(
                            "state.set",
                            json!({"state": "counter", "value": n + 1, "if_version": version}),
                        )
                        .await;
                    match failure_code(&r) {
                        None => break,
                        Some(409) => conflicts += 1,
                        Some(code) => panic!("unexpected {code}: {r:?}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for n in &nodes {
        let mut c = n.client().await;
        let data = read(&mut c, "counter").await;
        assert_eq!(data.get("value").and_then(Value::as_i64), Some(6 * EACH));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_on_another_node_replays_exactly_what_was_missed() {
    let redis = RedisServer::start().await;
    let [a, b, c] = three_nodes(&redis).await;
    let mut writer = b.client().await;
    writer
        .ok("state.set", json!({"state": "doc", "value": {"n": 0}}))
        .await;
    let mut reader = a.client().await;
    let init = reader.watch("doc").await;
    let seen = init.body.get("version").and_then(Value::as_u64).unwrap();
    drop(reader); // Cut from node A.
    let mut missed = Vec::new();
    for n in 1..=3 {
        let version = writer
            .ok("state.patch", json!({"state": "doc", "patch": {"n": n}}))
            .await;
        missed.push((version, vec![DeltaOp::update("/n", Value::Int(n))]));
    }
    let mut back = c.client().await;
    back.send(
        FrameType::Resume,
        10,
        v(json!({"state": "doc", "since_version": seen})),
    )
    .await;
    let mut replayed = Vec::new();
    for _ in 0..3 {
        replayed.push(back.delta().await);
    }
    assert_eq!(replayed, missed);
    let live = back.recv().await;
    assert_eq!(live.kind, FrameType::StateInit);
    assert_eq!(
        live.body.get("version").and_then(Value::as_u64),
        Some(missed[2].0)
    );
    // From a version the key never had (ahead of it): STATE_INIT alone.
    let mut other = c.client().await;
    other
        .send(
            FrameType::Resume,
            10,
            v(json!({"state": "doc", "since_version": missed[2].0 + 1000})),
        )
        .await;
    assert_eq!(other.recv().await.kind, FrameType::StateInit);
}

/// Runs the commit script on `key` (at `base`, giving it `value` by `ops`)
/// with a channel prefix nobody listens to — as if pub/sub had dropped
/// the change's message. Returns its version.
async fn commit_unheard(
    redis: &RedisServer,
    key: &str,
    base: u64,
    value: &Value,
    ops: &[DeltaOp],
) -> u64 {
    let mut con = redis.connection().await;
    let mut encoded_ops = Vec::new();
    sodp_proto::codec::write_value(
        &mut encoded_ops,
        &Value::Array(std::sync::Arc::new(
            ops.iter().map(DeltaOp::to_value).collect(),
        )),
    );
    let value = sodp_proto::codec::encode_value(value);
    let size = value.len();
    let reply: Vec<Vec<u8>> = redis::Script::new(include_str!("../src/cluster/commit.lua"))
        .key("sodp:version")
        .key("sodp:np:test")
        .key("sodp:keys")
        .key("sodp:ttl")
        .key(format!("sodp:k:{key}"))
        .key(format!("sodp:h:{key}"))
        .key(format!("sodp:o:{key}"))
        .arg(1)
        .arg(1000)
        .arg("nobody-listens:")
        .arg("0")
        .arg("")
        .arg(0)
        .arg(key)
        .arg(base)
        .arg("1")
        .arg(value)
        .arg("-")
        .arg(encoded_ops)
        .arg("")
        .arg("")
        .arg(size)
        .invoke_async(&mut con)
        .await
        .unwrap();
    assert_eq!(reply[0], b"ok", "{reply:?}");
    String::from_utf8(reply[1].clone())
        .unwrap()
        .parse()
        .unwrap()
}

/// A change committed in Redis whose message never reaches the nodes (as
/// if pub/sub had dropped it): the next change names a version the nodes'
/// copies do not have, and they catch up from the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_pubsub_message_is_healed_by_gap_detection() {
    let redis = RedisServer::start().await;
    let [a, b, _c] = three_nodes(&redis).await;
    let mut watcher = b.client().await;
    watcher.watch("g").await;
    let mut writer = a.client().await;
    let v1 = writer
        .ok("state.set", json!({"state": "g", "value": {"x": 1}}))
        .await;
    assert_eq!(watcher.delta().await.0, v1);
    // Behind the nodes' backs: a commit whose message nobody receives.
    let lost = commit_unheard(
        &redis,
        "g",
        v1,
        &v(json!({"x": 1, "lost": 7})),
        &[DeltaOp::add("/lost", Value::Int(7))],
    )
    .await;
    // The nodes' copies are behind now; the next write on A is drafted on
    // a stale copy, refused as stale by the script, redrafted.
    let v3 = writer
        .ok("state.patch", json!({"state": "g", "patch": {"y": 2}}))
        .await;
    assert_eq!(
        watcher.delta().await,
        (lost, vec![DeltaOp::add("/lost", Value::Int(7))]),
        "the lost change, replayed from the history"
    );
    assert_eq!(
        watcher.delta().await,
        (v3, vec![DeltaOp::add("/y", Value::Int(2))])
    );
    assert!(b.shared.cluster.get().unwrap().gaps() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_nodes_presence_paths_are_removed_by_the_survivors_within_the_lease() {
    let redis = RedisServer::start().await;
    let lease = Duration::from_millis(1000);
    let b = node_with_lease(&redis, lease).await;
    let mut a = node_process(&redis, 1000);
    let a_url = format!("ws://127.0.0.1:{}", a.port);
    let mut watcher = b.client().await;
    watcher.watch("room").await;
    let mut alice = TestClient::connect(&a_url).await;
    let mut bob = TestClient::connect(&a_url).await;
    alice
        .ok(
            "state.presence",
            json!({"state": "room", "path": "/users/alice", "value": 1}),
        )
        .await;
    bob.ok(
        "state.presence",
        json!({"state": "room", "path": "/users/bob", "value": 2}),
    )
    .await;
    assert_eq!(
        watcher.delta().await.1,
        vec![DeltaOp::add("/", v(json!({"users": {"alice": 1}})))]
    );
    assert_eq!(
        watcher.delta().await.1,
        vec![DeltaOp::add("/users/bob", Value::Int(2))]
    );
    // A session that ends normally releases its path at once.
    drop(bob);
    assert_eq!(watcher.delta().await.1, vec![DeltaOp::remove("/users/bob")]);
    // A key with a deadline that only node A holds a copy of.
    alice
        .ok(
            "state.set",
            json!({"state": "temp.x", "value": 1, "ttl_ms": 300}),
        )
        .await;
    // kill -9 of node A: nobody releases alice's path but the survivors.
    let killed = std::time::Instant::now();
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let (version, ops) = watcher.delta().await;
    let took = killed.elapsed();
    assert_eq!(ops, vec![DeltaOp::remove("/users/alice")]);
    assert!(took < lease * 4, "removed after {took:?} (lease {lease:?})");
    let mut reader = b.client().await;
    let data = read(&mut reader, "room").await;
    assert_eq!(data.get("version").and_then(Value::as_u64), Some(version));
    assert_eq!(data.get("value"), Some(&v(json!({"users": {}}))));
    // The key's deadline passed with its only holder dead: a survivor's
    // sweep of Redis's deadlines expired it, once.
    let mut con = redis.connection().await;
    let mut initialized = String::new();
    for _ in 0..100 {
        initialized = redis::cmd("HGET")
            .arg("sodp:k:temp.x")
            .arg("i")
            .query_async(&mut con)
            .await
            .unwrap();
        if initialized == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(initialized, "0", "expired by a survivor");
    let history: usize = redis::cmd("LLEN")
        .arg("sodp:h:temp.x")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(history, 2, "one write, one expiry");
    drop(alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_expires_once_whichever_node_notices() {
    let redis = RedisServer::start().await;
    let [a, b, c] = three_nodes(&redis).await;
    let mut on_b = b.client().await;
    let mut on_c = c.client().await;
    on_b.watch("session.tmp").await;
    on_c.watch("session.tmp").await;
    let mut writer = a.client().await;
    writer
        .ok(
            "state.set",
            json!({"state": "session.tmp", "value": 1, "ttl_ms": 300}),
        )
        .await;
    on_b.delta().await;
    on_c.delta().await;
    let (expired_b, ops) = on_b.delta().await;
    assert_eq!(ops, vec![DeltaOp::remove("/")]);
    assert_eq!(on_c.delta().await, (expired_b, ops));
    on_b.expect_silence(Duration::from_millis(400)).await;
    on_c.expect_silence(Duration::from_millis(100)).await;
    let mut con = redis.connection().await;
    let history: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg("sodp:h:session.tmp")
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(history.len(), 2, "one write, one expiry");
}

/// Patches field `f<i>` of `load` to `i`; the RESULT body.
async fn write(i: i64, writer: &mut TestClient) -> (i64, Value) {
    let field = format!("f{i}");
    let args = json!({"state": "load", "patch": {field: i}});
    (i, writer.call("state.patch", args).await)
}

/// Redis is killed (`kill -9`) and restarted while a writer keeps writing:
/// writes in between answer 503 on a session that stays open; afterwards
/// every acknowledged write is there, no version was handed out twice, and
/// a watcher on another node is caught up without reconnecting — a key's
/// watcher by DELTAs, a pattern's by a fresh STATE_INIT and then DELTAs,
/// its versions never going back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarted_under_load_loses_no_acknowledged_write() {
    let mut redis = RedisServer::start().await;
    let [a, b, c] = three_nodes(&redis).await;
    let mut watcher = b.client().await;
    watcher.watch("load").await;
    let mut cursors = b.client().await;
    cursors.watch("cursors").await;
    let mut everything = c.client().await;
    let init = everything.watch("*").await;
    let mut map = init.body.get("value").cloned().unwrap();
    let mut seen_at = init.body.get("version").and_then(Value::as_u64).unwrap();
    let mut holder = a.client().await;
    holder
        .ok(
            "state.presence",
            json!({"state": "cursors", "path": "/h", "value": 1}),
        )
        .await;
    assert_eq!(
        cursors.delta().await.1,
        vec![DeltaOp::add("/", v(json!({"h": 1})))]
    );
    let mut writer = a.client().await;
    let mut acked: Vec<(i64, u64)> = Vec::new();
    let mut refused = 0;
    let mut i = 0;
    for _ in 0..20 {
        let (n, r) = write(i, &mut writer).await;
        let version = r
            .get("data")
            .and_then(|d| d.get("version"))
            .and_then(Value::as_u64);
        acked.push((n, version.expect("Redis is up")));
        i += 1;
    }
    redis.kill();
    // A session ending while Redis is away: its path goes once Redis is back.
    drop(holder);
    let down = std::time::Instant::now();
    while down.elapsed() < Duration::from_millis(500) {
        let (_, r) = write(i, &mut writer).await;
        assert_eq!(failure_code(&r), Some(503), "{r:?}");
        refused += 1;
        i += 1;
    }
    // Sessions stay open and new ones are accepted; what needs Redis
    // answers 503.
    let mut fresh = a.client().await;
    fresh
        .send(FrameType::Watch, 10, v(json!({"state": "other"})))
        .await;
    let refusal = fresh.recv().await;
    assert_eq!(refusal.kind, FrameType::Error);
    assert_eq!(refusal.body.get("code").and_then(Value::as_i64), Some(503));
    let (_, r) = write(i, &mut fresh).await;
    assert_eq!(failure_code(&r), Some(503));
    redis.launch().await;
    let back = std::time::Instant::now();
    let mut after = 0;
    while after < 20 {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "writes did not resume"
        );
        let (n, r) = write(i, &mut writer).await;
        i += 1;
        match failure_code(&r) {
            None => {
                let version = r
                    .get("data")
                    .and_then(|d| d.get("version"))
                    .and_then(Value::as_u64);
                acked.push((n, version.unwrap()));
                after += 1;
            }
            Some(503) => tokio::time::sleep(Duration::from_millis(20)).await,
            Some(code) => panic!("unexpected {code}: {r:?}"),
        }
    }
    assert!(refused > 0);
    let versions: Vec<u64> = acked.iter().map(|(_, v)| *v).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    let mut reader = c.client().await;
    let data = read(&mut reader, "load").await;
    let value = data.get("value").unwrap();
    for (n, _) in &acked {
        assert_eq!(
            get_field(value, &format!("f{n}")),
            Some(*n),
            "acknowledged write f{n} lost"
        );
    }
    let last = *versions.last().unwrap();
    let mut seen = Value::Nil;
    let mut at = 0;
    while at < last {
        let (version, ops) = watcher.delta().await;
        assert!(version > at);
        seen = sodp_proto::apply(&seen, &ops).unwrap();
        at = version;
    }
    // The watcher's copy (built from DELTAs only) equals the state; writes
    // that were refused but had reached Redis may be there too.
    assert_eq!(&seen, value);
    assert_eq!(cursors.delta().await.1, vec![DeltaOp::remove("/h")]);
    let mut snapshots = 0;
    while !(seen_at >= last && map.get("load") == Some(value)) {
        let f = everything.recv().await;
        let version = f.body.get("version").and_then(Value::as_u64).unwrap();
        match f.kind {
            FrameType::StateInit => {
                assert!(version >= seen_at, "snapshot {version} after {seen_at}");
                map = f.body.get("value").cloned().unwrap();
                snapshots += 1;
            }
            FrameType::Delta => {
                assert!(version > seen_at, "version {version} after {seen_at}");
                let ops = DeltaOp::list_from_value(f.body.get("ops").unwrap()).unwrap();
                for op in &ops {
                    sodp_proto::delta::apply_in_place(&mut map, op).unwrap();
                }
            }
            other => panic!("unexpected {other:?}: {f:?}"),
        }
        seen_at = version;
    }
    assert!(
        snapshots >= 1,
        "the pattern was not re-snapshotted after Redis came back"
    );
}

/// Two counters moved together by `state.transaction` (each op with its
/// `if_version`) from writers on every node: both sum exactly, and a
/// watcher of both sees each transaction as two DELTAs of one version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transaction_counters_across_nodes_sum_exactly() {
    const EACH: i64 = 8;
    let redis = RedisServer::start().await;
    let nodes = three_nodes(&redis).await;
    let mut watcher = nodes[2].client().await;
    watcher.watch("tx.a").await;
    watcher.watch("tx.b").await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let url = nodes[i % 3].url();
        tasks.push(tokio::spawn(async move {
            let mut c = TestClient::connect(&url).await;
            for _ in 0..EACH {
                loop {
                    let a = read(&mut c, "tx.a").await;
                    let b = read(&mut c, "tx.b").await;
                    let at = |d: &Value| d.get("version").and_then(Value::as_u64).unwrap();
                    let n = |d: &Value| d.get("value").and_then(Value::as_i64).unwrap_or(0);
                    let r = c
                        .call(
                            "state.transaction",
                            json!({"ops": [
                                {"method": "state.set", "args": {"state": "tx.a", "value": n(&a) + 1, "if_version": at(&a)}},
                                {"method": "state.set", "args": {"state": "tx.b", "value": n(&b) + 2, "if_version": at(&b)}},
                            ]}),
                        )
                        .await;
                    match failure_code(&r) {
                        None => break,
                        Some(409) => {}
                        Some(code) => panic!("unexpected {code}: {r:?}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = nodes[1].client().await;
    let a = read(&mut c, "tx.a").await;
    let b = read(&mut c, "tx.b").await;
    assert_eq!(a.get("value").and_then(Value::as_i64), Some(6 * EACH));
    assert_eq!(b.get("value").and_then(Value::as_i64), Some(12 * EACH));
    assert_eq!(
        a.get("version"),
        b.get("version"),
        "the last transaction wrote both"
    );
    let mut last = 0;
    for _ in 0..6 * EACH {
        let (va, _) = watcher.delta().await;
        let (vb, _) = watcher.delta().await;
        assert_eq!(va, vb, "one version per transaction, DELTAs back to back");
        assert!(va > last);
        last = va;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn patterns_keys_and_history_work_across_nodes() {
    let redis = RedisServer::start().await;
    let [a, b, c] = three_nodes(&redis).await;
    let mut on_a = a.client().await;
    let mut on_c = c.client().await;
    let v1 = on_a
        .ok(
            "state.set",
            json!({"state": "game.players.p1", "value": {"hp": 10}}),
        )
        .await;
    on_a.ok("state.set", json!({"state": "game.other", "value": 0}))
        .await;
    // B never held the key: the snapshot comes from Redis.
    let mut watcher = b.client().await;
    let init = watcher.watch("game.players.*").await;
    assert_eq!(
        init.body.get("value"),
        Some(&v(json!({"game.players.p1": {"hp": 10}})))
    );
    assert!(init.body.get("version").and_then(Value::as_u64).unwrap() >= v1);
    let v2 = on_c
        .ok(
            "state.set",
            json!({"state": "game.players.p2", "value": {"hp": 5}}),
        )
        .await;
    assert_eq!(
        watcher.delta().await,
        (
            v2,
            vec![DeltaOp::add("/game.players.p2", v(json!({"hp": 5})))]
        )
    );
    let v3 = on_a
        .ok(
            "state.patch",
            json!({"state": "game.players.p1", "patch": {"hp": 9}}),
        )
        .await;
    assert_eq!(
        watcher.delta().await,
        (
            v3,
            vec![DeltaOp::update("/game.players.p1/hp", Value::Int(9))]
        )
    );
    let v4 = on_c
        .ok("state.delete", json!({"state": "game.players.p2"}))
        .await;
    assert_eq!(
        watcher.delta().await,
        (v4, vec![DeltaOp::remove("/game.players.p2")])
    );
    // state.keys on B lists what Redis holds, B's copies or not.
    let mut reader = b.client().await;
    let r = reader.call("state.keys", json!({"prefix": "game"})).await;
    assert_eq!(
        r.get("data").and_then(|d| d.get("keys")),
        Some(&v(json!(["game.other", "game.players.p1"]))),
        "{r:?}"
    );
    let r = reader
        .call("state.keys", json!({"prefix": "game", "limit": 1}))
        .await;
    let data = r.get("data").unwrap();
    assert_eq!(data.get("keys"), Some(&v(json!(["game.other"]))));
    assert_eq!(data.get("next"), Some(&v(json!("game.other"))));
    // state.history on C: written by A, complete.
    let mut historian = c.client().await;
    let r = historian
        .call("state.history", json!({"state": "game.players.p1"}))
        .await;
    let data = r.get("data").unwrap();
    assert_eq!(data.get("complete"), Some(&Value::Bool(true)));
    let versions: Vec<u64> = data
        .get("entries")
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .map(|e| e.get("version").and_then(Value::as_u64).unwrap())
        .collect();
    assert_eq!(versions, [v1, v3]);
}

/// Writers on every node (the watchers' own nodes included) writing
/// different keys below one pattern at once: every node's pattern stream
/// carries strictly increasing versions, one DELTA per write, and its ops
/// applied to the snapshot give the final map.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pattern_streams_stay_in_version_order_under_writers_on_every_node() {
    const WRITES: i64 = 40;
    let redis = RedisServer::start().await;
    let nodes = three_nodes(&redis).await;
    let mut watchers = Vec::new();
    for node in &nodes {
        let mut w = node.client().await;
        let init = w.watch("race.*").await;
        assert_eq!(init.body.get("value"), Some(&v(json!({}))));
        watchers.push((w, init.body.get("version").and_then(Value::as_u64).unwrap()));
    }
    let mut writers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for j in 0..2 {
            let mut c = node.client().await;
            let key = format!("race.n{n}w{j}");
            writers.push(tokio::spawn(async move {
                for i in 0..WRITES {
                    c.ok("state.patch", json!({"state": key, "patch": {"i": i}}))
                        .await;
                }
            }));
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    let expected: serde_json::Map<String, serde_json::Value> = (0..3)
        .flat_map(|n| (0..2).map(move |j| (format!("race.n{n}w{j}"), json!({"i": WRITES - 1}))))
        .collect();
    for (mut w, from) in watchers {
        let mut map = v(json!({}));
        let mut last = from;
        for _ in 0..6 * WRITES {
            let (version, ops) = w.delta().await;
            assert!(version > last, "version {version} after {last}");
            last = version;
            for op in &ops {
                sodp_proto::delta::apply_in_place(&mut map, op).unwrap();
            }
        }
        assert_eq!(map, v(serde_json::Value::Object(expected.clone())));
        w.expect_silence(Duration::from_millis(100)).await;
    }
}

/// A pattern message lost on its way to a node: the next change of that
/// key does not follow what the node's pattern subscribers hold, so they
/// get a fresh STATE_INIT holding both changes (and the stream goes on).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_pattern_message_is_healed_by_a_fresh_snapshot() {
    let redis = RedisServer::start().await;
    let [a, b, _c] = three_nodes(&redis).await;
    let mut watcher = b.client().await;
    watcher.watch("lost.*").await;
    let mut writer = a.client().await;
    let v1 = writer
        .ok("state.set", json!({"state": "lost.k", "value": {"x": 1}}))
        .await;
    assert_eq!(watcher.delta().await.0, v1);
    // Behind the nodes' backs: a commit whose message nobody receives.
    commit_unheard(
        &redis,
        "lost.k",
        v1,
        &v(json!({"x": 1, "lost": 7})),
        &[DeltaOp::add("/lost", Value::Int(7))],
    )
    .await;
    let v3 = writer
        .ok("state.patch", json!({"state": "lost.k", "patch": {"y": 2}}))
        .await;
    let init = watcher.recv().await;
    assert_eq!(init.kind, FrameType::StateInit, "{init:?}");
    assert_eq!(
        init.body.get("value"),
        Some(&v(json!({"lost.k": {"x": 1, "lost": 7, "y": 2}})))
    );
    assert!(init.body.get("version").and_then(Value::as_u64).unwrap() >= v3);
    let v4 = writer
        .ok("state.patch", json!({"state": "lost.k", "patch": {"y": 3}}))
        .await;
    assert_eq!(
        watcher.delta().await,
        (v4, vec![DeltaOp::update("/lost.k/y", Value::Int(3))])
    );
    assert!(b.shared.cluster.get().unwrap().gaps() >= 1);
}

/// Redis's `total_net_input_bytes`: what every client has sent it.
async fn redis_input_bytes(redis: &RedisServer) -> u64 {
    let mut con = redis.connection().await;
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut con)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_input_bytes:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// A small patch to a large value sends Redis the ops, not the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_patch_to_a_large_value_does_not_ship_the_value() {
    const PATCHES: u64 = 100;
    let redis = RedisServer::start().await;
    let [a, b, _c] = three_nodes(&redis).await;
    let blob = "x".repeat(64 << 10);
    let mut writer = a.client().await;
    writer
        .ok(
            "state.set",
            json!({"state": "big", "value": {"blob": blob, "n": 0}}),
        )
        .await;
    let before = redis_input_bytes(&redis).await;
    for i in 1..=PATCHES {
        writer
            .ok("state.patch", json!({"state": "big", "patch": {"n": i}}))
            .await;
    }
    let sent = redis_input_bytes(&redis).await - before;
    // Shipping the value would be 6.5 MB; the ops and the script's other
    // arguments are about 200 bytes a write.
    assert!(
        sent < 64 << 10,
        "{sent} bytes sent to Redis for {PATCHES} small patches"
    );
    let mut reader = b.client().await;
    let value = read(&mut reader, "big").await;
    assert_eq!(
        value.get("value"),
        Some(&v(json!({"blob": blob, "n": PATCHES})))
    );
}

/// With a short history, Redis's image is refreshed before the changes
/// after it could be trimmed; a node that never held a key rebuilds it
/// from the image and those changes — for WATCH, reads and pattern
/// snapshots alike — and gets the exact value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_is_rebuilt_exactly_from_its_image_and_the_changes_since() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let short = |url: String| {
        move |c: &mut sodp_server::config::Config| {
            c.history_len = 8;
            c.cluster = Some(ClusterConfig::new(url));
        }
    };
    let a = TestServer::with(short(url.clone())).await;
    let b = TestServer::with(short(url.clone())).await;
    let c = TestServer::with(short(url)).await;
    let mut writer = a.client().await;
    let blob = "y".repeat(4096);
    writer
        .ok(
            "state.set",
            json!({"state": "doc.k", "value": {"blob": blob, "list": []}}),
        )
        .await;
    let mut expected = Vec::new();
    for i in 0..45 {
        writer
            .ok(
                "state.set_in",
                json!({"state": "doc.k", "path": "/list/-", "value": i}),
            )
            .await;
        expected.push(i);
        if i % 10 == 9 {
            writer
                .ok("state.patch", json!({"state": "doc.k", "patch": {"at": i}}))
                .await;
        }
    }
    let want_json = json!({"blob": blob, "list": expected, "at": 39});
    let want = v(want_json.clone());
    let mut watcher = b.client().await;
    let init = watcher.watch("doc.k").await;
    assert_eq!(init.body.get("value"), Some(&want));
    let mut pattern = c.client().await;
    let init = pattern.watch("doc.*").await;
    assert_eq!(
        init.body.get("value"),
        Some(&v(json!({ "doc.k": want_json })))
    );
    let mut reader = c.client().await;
    assert_eq!(read(&mut reader, "doc.k").await.get("value"), Some(&want));
}

/// A CALL body with an `idempotency_key`; the RESULT body.
async fn idempotent(c: &mut TestClient, key: &str, args: serde_json::Value) -> Value {
    let body = v(json!({
        "call_id": "i1",
        "method": "state.patch",
        "args": args,
        "idempotency_key": key,
    }));
    c.send(FrameType::Call, 0, body).await;
    loop {
        let f = c.recv().await;
        if f.kind == FrameType::Result {
            return f.body;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotent_write_repeated_on_another_node_is_applied_once() {
    let redis = RedisServer::start().await;
    let [a, b, c] = three_nodes(&redis).await;
    let mut watcher = c.client().await;
    watcher.watch("cart").await;
    let args = json!({"state": "cart", "patch": {"apples": 3}});
    let mut on_a = a.client().await;
    let first = idempotent(&mut on_a, "order-1", args.clone()).await;
    let version = first.get("data").and_then(|d| d.get("version")).cloned();
    assert!(version.is_some(), "{first:?}");
    // The client reconnects to node B and sends the write again.
    let mut on_b = b.client().await;
    let again = idempotent(&mut on_b, "order-1", args).await;
    assert_eq!(
        again.get("data").and_then(|d| d.get("version")).cloned(),
        version
    );
    let other = idempotent(
        &mut on_b,
        "order-1",
        json!({"state": "cart", "patch": {"apples": 4}}),
    )
    .await;
    assert_eq!(failure_code(&other), Some(409), "{other:?}");
    assert_eq!(Some(Value::from(watcher.delta().await.0)), version);
    watcher.expect_silence(Duration::from_millis(200)).await;
}

/// The same idempotent call sent to two nodes at the same moment, while a
/// third node keeps overwriting the field it sets: applied once, both
/// answers carry the one version (the record is checked and written by the
/// commit step itself, so the node that loses the race never redrafts the
/// call on top of the overwrite).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_idempotent_call_on_two_nodes_at_once_is_applied_once() {
    let redis = RedisServer::start().await;
    let [a, b, c] = three_nodes(&redis).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut hammer = c.client().await;
    let hammering = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i -= 1;
                hammer
                    .ok(
                        "state.patch",
                        json!({"state": "race", "patch": {"mine": i}}),
                    )
                    .await;
            }
        }
    });
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    for i in 0..60 {
        let key = format!("order-{i}");
        let args = json!({"state": "race", "patch": {"mine": i}});
        let (first, second) = tokio::join!(
            idempotent(&mut on_a, &key, args.clone()),
            idempotent(&mut on_b, &key, args.clone()),
        );
        let version = |r: &Value| r.get("data").and_then(|d| d.get("version")).cloned();
        assert!(version(&first).is_some(), "{first:?}");
        assert_eq!(
            version(&first),
            version(&second),
            "{key}: {first:?} vs {second:?}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    hammering.await.unwrap();
}

/// The inspector's server view in cluster mode: `admin.stats` lists every
/// node Redis knows with its lease, marks this one, and shows a killed
/// node as dead until a survivor reaps it (then it is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_stats_lists_the_nodes_and_a_killed_one_goes() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let b = TestServer::with(move |c| {
        c.inspector.enabled = true;
        c.cluster = Some(ClusterConfig {
            lease: Duration::from_millis(1000),
            ..ClusterConfig::new(url)
        });
    })
    .await;
    let mut a = node_process(&redis, 1000);
    let mut admin = b.client().await;
    let nodes = |stats: &Value| -> Vec<(bool, bool)> {
        let cluster = stats.get("cluster").unwrap();
        assert_eq!(
            cluster.get("mode"),
            Some(&Value::from("cluster")),
            "{stats:?}"
        );
        let mut out: Vec<(bool, bool)> = cluster
            .get("nodes")
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .map(|n| {
                let flag = |f: &str| n.get(f).and_then(Value::as_bool).unwrap();
                (flag("self"), flag("alive"))
            })
            .collect();
        out.sort();
        out
    };
    let stats = admin.call("admin.stats", json!({})).await;
    let stats = stats.get("data").unwrap().clone();
    assert_eq!(nodes(&stats), [(false, true), (true, true)], "{stats:?}");
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let mut seen_dead = false;
    for _ in 0..100 {
        let stats = admin.call("admin.stats", json!({})).await;
        let listed = nodes(stats.get("data").unwrap());
        match listed.as_slice() {
            [(false, false), (true, true)] => seen_dead = true,
            [(true, true)] => break,
            [(false, true), (true, true)] => {}
            other => panic!("unexpected nodes {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = admin.call("admin.stats", json!({})).await;
    assert_eq!(
        nodes(stats.get("data").unwrap()),
        [(true, true)],
        "reaped (seen dead first: {seen_dead})"
    );
}

/// A pattern snapshot over the value limit is 413 on a cluster node too,
/// and nothing is subscribed: a later change of a key below it reaches
/// nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pattern_snapshot_over_the_value_limit_is_413_across_nodes() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let small = TestServer::with(move |c| {
        c.limits.max_value_bytes = Some(100);
        c.cluster = Some(ClusterConfig::new(url));
    })
    .await;
    let other = node(&redis).await;
    let mut writer = other.client().await;
    for i in 0..3 {
        writer
            .ok(
                "state.set",
                json!({"state": format!("big.k{i}"), "value": "x".repeat(60)}),
            )
            .await;
    }
    let mut watcher = small.client().await;
    watcher
        .send(FrameType::Watch, 1, v(json!({"state": "big.*"})))
        .await;
    let f = watcher.recv().await;
    assert_eq!(f.kind, FrameType::Error, "{f:?}");
    assert_eq!(f.body.get("code").and_then(Value::as_i64), Some(413));
    assert_eq!(small.shared.cluster.get().unwrap().watched(), (0, 0));
    writer
        .ok("state.set", json!({"state": "big.k0", "value": 1}))
        .await;
    watcher.expect_silence(Duration::from_millis(200)).await;
}

/// A node's runtime shutting down while its sessions still watch keys and
/// hold presence paths (a process exiting, this test's own runtime ending)
/// finishes. Each session's release went through Redis from inside the
/// shutdown, blocking on tasks the runtime no longer ran: it never did.
#[test]
fn a_runtime_shutting_down_under_live_sessions_finishes() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let redis = runtime.block_on(RedisServer::start());
    let live = runtime.block_on(async {
        let node = node(&redis).await;
        let mut clients = Vec::new();
        for i in 0..24 {
            let key = format!("shutdown.k{i}");
            let mut client = node.client().await;
            client.watch(&key).await;
            client
                .ok(
                    "state.presence",
                    json!({"state": key, "path": "/here", "value": i}),
                )
                .await;
            clients.push(client);
        }
        (node, clients)
    });
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(runtime);
        let _ = done.send(());
        drop(live);
    });
    assert!(
        finished.recv_timeout(Duration::from_secs(30)).is_ok(),
        "the runtime was still shutting down after 30 s"
    );
}

/// A node stopped with SIGTERM releases its sessions' presence paths
/// before it exits — at once, not when its lease runs out — and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stopped_with_sigterm_releases_its_presence_paths_before_exiting() {
    let redis = RedisServer::start().await;
    let b = node(&redis).await;
    let mut a = node_process(&redis, 60000);
    let mut watcher = b.client().await;
    watcher.watch("lobby").await;
    let mut alice = TestClient::connect(&format!("ws://127.0.0.1:{}", a.port)).await;
    alice
        .ok(
            "state.presence",
            json!({"state": "lobby", "path": "/alice", "value": 1}),
        )
        .await;
    assert_eq!(
        watcher.delta().await.1,
        vec![DeltaOp::add("/", v(json!({"alice": 1})))]
    );
    a.terminate();
    let (_, ops) = tokio::time::timeout(Duration::from_secs(10), watcher.delta())
        .await
        .expect("the path was not released within 10 s (the lease is 60 s)");
    assert_eq!(ops, vec![DeltaOp::remove("/alice")]);
    let exited = tokio::task::spawn_blocking(move || a.child.wait().unwrap());
    let exit = tokio::time::timeout(Duration::from_secs(15), exited)
        .await
        .expect("node A did not exit")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    drop(alice);
}
