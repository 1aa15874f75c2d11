//! The protocol extensions against the real server: conditional writes,
//! TTL, one-shot reads, transactions, `transact`, and pattern watches.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::TryStreamExt;
use serde_json::json;
use sodp_client::{Error, Source, WriteOptions};

use crate::{client, eventually, json, next, next_from, Proxy, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_advertises_every_extension() {
    let server = TestServer::start();
    let c = client(&server.url()).await;
    for name in [
        "conditional",
        "transaction",
        "idempotency",
        "prefix_watch",
        "ttl",
        "read",
    ] {
        assert!(c.supports(name), "{name} in {:?}", c.capabilities());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_conflict_with_the_current_version() {
    let server = TestServer::start();
    let c = client(&server.url()).await;
    let only_new = || WriteOptions::new().if_version(0);
    let v1 = c
        .set_with("cas.k", &json!({"n": 1}), only_new())
        .await
        .unwrap();
    match c.set_with("cas.k", &json!({"n": 2}), only_new()).await {
        Err(Error::Conflict {
            version,
            op: None,
            message,
        }) => {
            assert_eq!(version, v1);
            assert!(!message.is_empty());
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let now = c.fetch("cas.k").await.unwrap();
    assert_eq!(
        (now.version, json(&now.value)),
        (v1, json!({"n": 1})),
        "nothing changed"
    );

    let at = |v| WriteOptions::new().if_version(v);
    let v2 = c
        .patch_with("cas.k", &json!({"n": 2}), at(v1))
        .await
        .unwrap();
    let v3 = c.set_in_with("cas.k", "/m", &3, at(v2)).await.unwrap();
    let stale = c.delete_with("cas.k", at(v2)).await.unwrap_err();
    assert_eq!(stale.code(), Some(409));
    assert!(
        matches!(stale, Error::Conflict { version, .. } if version == v3),
        "{stale:?}"
    );
    let gone = c.delete_with("cas.k", at(v3)).await.unwrap();
    // A deleted key holds no value: `if_version: 0` applies again.
    c.set_with("cas.k", &1, only_new()).await.unwrap();
    assert!(gone > v3);

    // Through a StateRef, and typed.
    let r = c.state("cas.typed");
    let v = r.set_with(&5u32, only_new()).await.unwrap();
    assert_eq!(r.fetch().await.unwrap().value_as::<u32>().unwrap(), Some(5));
    assert!(matches!(
        r.delete_with(at(v + 100)).await,
        Err(Error::Conflict { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_expires_the_key_as_a_delete() {
    let server = TestServer::start();
    let c = client(&server.url()).await;
    let mut sub = c.subscribe("ttl.k");
    next_from(&mut sub, Source::Init).await;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let before = now_ms();
    let opts = WriteOptions::new().ttl(Duration::from_millis(1000));
    let written = c.set_with("ttl.k", &"soon gone", opts).await.unwrap();
    let set = next(&mut sub).await;
    assert_eq!(json(&set.value), json!("soon gone"));
    let deadline = set.meta.expires_at.expect("the DELTA carries expires_at");
    assert!(
        deadline >= before + 1000 && deadline <= now_ms() + 1000,
        "{deadline}"
    );
    // A new watcher learns the deadline from STATE_INIT.
    let other = client(&server.url()).await;
    let mut late = other.subscribe("ttl.k");
    assert_eq!(
        next_from(&mut late, Source::Init).await.meta.expires_at,
        Some(deadline)
    );
    let expired = next(&mut sub).await;
    assert!(expired.value.is_nil() && !expired.meta.initialized);
    assert_eq!(expired.meta.expires_at, None);
    assert!(now_ms() + 50 >= deadline, "not before the deadline");
    assert!(expired.meta.version > written);
    assert!(!c.fetch("ttl.k").await.unwrap().initialized);

    // TTL zero removes a deadline; a bad one (on delete) is refused by the server.
    let opts = WriteOptions::new().ttl(Duration::from_millis(200));
    c.set_with("ttl.kept", &1, opts).await.unwrap();
    c.patch_with(
        "ttl.kept",
        &json!({}),
        WriteOptions::new().ttl(Duration::ZERO),
    )
    .await
    .ok(); // a patch of a non-object may be refused; the set below decides
    c.set_with("ttl.kept", &2, WriteOptions::new().ttl(Duration::ZERO))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        c.fetch("ttl.kept").await.unwrap().initialized,
        "no deadline any more"
    );
    let refused = c
        .delete_with("ttl.kept", WriteOptions::new().ttl(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(400), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_reads_fetch_keys_and_history() {
    let server = TestServer::start();
    let c = client(&server.url()).await;
    let never = c.fetch("read.none").await.unwrap();
    assert_eq!(
        (never.version, never.value.is_nil(), never.initialized),
        (0, true, false)
    );

    let mut versions = vec![];
    for n in 0..5 {
        versions.push(c.set(&format!("read.k{n}"), &n).await.unwrap());
    }
    c.set("read", &"the prefix itself").await.unwrap();
    c.set("readX", &"not below the prefix").await.unwrap();

    let page = c.keys(Some("read"), None, Some(2)).await.unwrap();
    assert_eq!(page.keys, ["read", "read.k0"]);
    let next_page = c
        .keys(Some("read"), page.next.as_deref(), Some(2))
        .await
        .unwrap();
    assert_eq!(next_page.keys, ["read.k1", "read.k2"]);
    let all: Vec<String> = c
        .iter_keys(Some("read"), Some(2))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        all,
        ["read", "read.k0", "read.k1", "read.k2", "read.k3", "read.k4"]
    );
    let everything: Vec<String> = c.iter_keys(None, None).try_collect().await.unwrap();
    assert_eq!(everything.len(), 7);
    let last = c.keys(Some("read.k"), None, None).await.unwrap();
    assert!(
        last.keys.is_empty() && last.next.is_none(),
        "whole segments: {last:?}"
    );

    let h = c.state("read.h");
    let v1 = h.set(&json!({"a": 1})).await.unwrap();
    let v2 = h.patch(&json!({"a": 2})).await.unwrap();
    let v3 = h.delete().await.unwrap();
    let history = h.history(None, None).await.unwrap();
    assert!(history.complete);
    let got: Vec<u64> = history.entries.iter().map(|e| e.version).collect();
    assert_eq!(got, [v1, v2, v3]);
    assert_eq!(history.entries[1].ops.len(), 1);
    let tail = c.history("read.h", Some(v1), Some(1)).await.unwrap();
    assert_eq!(
        tail.entries.iter().map(|e| e.version).collect::<Vec<_>>(),
        [v2]
    );
    assert!(c
        .history("read.none", None, None)
        .await
        .unwrap()
        .entries
        .is_empty());

    let bad = c.fetch("bad key!").await.unwrap_err();
    assert_eq!(bad.code(), Some(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_applies_all_or_nothing_under_one_version() {
    let server = TestServer::start();
    let c = client(&server.url()).await;
    let va = c.set("bank.alice", &json!({"balance": 100})).await.unwrap();
    let vb = c.set("bank.bob", &json!({"balance": 100})).await.unwrap();
    let mut alice = c.subscribe("bank.alice");
    next_from(&mut alice, Source::Init).await;

    let at = |v| WriteOptions::new().if_version(v);
    let version = c
        .transaction()
        .patch_with("bank.alice", &json!({"balance": 90}), at(va))
        .patch_with("bank.bob", &json!({"balance": 110}), at(vb))
        .set("bank.log", &json!(["alice→bob 10"]))
        .commit()
        .await
        .unwrap();
    let u = next(&mut alice).await;
    assert_eq!(
        (u.meta.version, json(&u.value)),
        (version, json!({"balance": 90}))
    );
    for key in ["bank.alice", "bank.bob", "bank.log"] {
        assert_eq!(c.fetch(key).await.unwrap().version, version, "{key}");
    }

    // One stale condition (op 1): nothing is applied, no DELTA.
    let failed = c
        .transaction()
        .patch_with("bank.alice", &json!({"balance": 0}), at(version))
        .patch_with("bank.bob", &json!({"balance": 0}), at(vb))
        .delete("bank.log")
        .commit()
        .await;
    match failed {
        Err(Error::Conflict {
            op: Some(1),
            version: current,
            ..
        }) => assert_eq!(current, version),
        other => panic!("expected a conflict at op 1, got {other:?}"),
    }
    assert_eq!(
        json(&c.fetch("bank.alice").await.unwrap().value),
        json!({"balance": 90})
    );
    assert!(c.fetch("bank.log").await.unwrap().initialized);
    crate::quiet(&mut alice, 200).await;

    // Raw ops, as in a JSON file; bad ones get the server's 400.
    let raw = c
        .transaction()
        .op(
            "state.set_in",
            json!({"state": "bank.bob", "path": "/note", "value": "hi"}),
        )
        .op(
            "state.delete",
            json!({"state": "bank.log", "if_version": version}),
        )
        .commit()
        .await
        .unwrap();
    assert!(raw > version);
    assert!(!c.fetch("bank.log").await.unwrap().initialized);
    let bad = c
        .transaction()
        .op("state.presence", json!({"state": "k"}))
        .commit()
        .await;
    assert_eq!(bad.unwrap_err().code(), Some(400));
    let empty = c.transaction().commit().await;
    assert_eq!(empty.unwrap_err().code(), Some(400));
    // An op's own idempotency key is refused before anything is sent.
    let per_op = c
        .transaction()
        .set_with("k", &1, WriteOptions::new().idempotency_key("x"))
        .commit()
        .await;
    assert!(matches!(per_op, Err(Error::Config(_))), "{per_op:?}");
}

/// Several clients (own connections) incrementing one counter with
/// `transact` end with the exact sum: no update is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transact_loops_sum_exactly() {
    const WRITERS: u64 = 4;
    const EACH: u64 = 20;
    let server = TestServer::start();
    let mut clients = vec![];
    for _ in 0..WRITERS {
        clients.push(client(&server.url()).await);
    }
    let started = std::time::Instant::now();
    let mut tasks = vec![];
    for c in clients {
        tasks.push(tokio::spawn(async move {
            let mut retried = 0;
            for _ in 0..EACH {
                let done = c
                    .transact("tx.counter", |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap();
                retried += done.attempts - 1;
            }
            retried
        }));
    }
    let mut retries = 0;
    for t in tasks {
        retries += t.await.unwrap();
    }
    let c = client(&server.url()).await;
    let total = c.fetch("tx.counter").await.unwrap();
    assert_eq!(total.value_as::<u64>().unwrap(), Some(WRITERS * EACH));
    let took = started.elapsed();
    eprintln!(
        "{} increments by {WRITERS} connections in {took:?} ({:.0}/s), {retries} retries after conflicts",
        WRITERS * EACH,
        (WRITERS * EACH) as f64 / took.as_secs_f64()
    );

    // A value typed as a struct, through a StateRef.
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Score {
        points: u32,
    }
    let r = c.state("tx.score");
    let first = r
        .transact(|s: Option<Score>| Score {
            points: s.map_or(1, |s| s.points * 10),
        })
        .await
        .unwrap();
    assert_eq!((first.value.points, first.attempts), (1, 1));
    let second = r
        .transact(|s: Option<Score>| Score {
            points: s.map_or(1, |s| s.points * 10),
        })
        .await
        .unwrap();
    assert_eq!(second.value, Score { points: 10 });
    assert!(second.version > first.version);
}

/// A pattern watch's value is the map of matching keys: it sees keys
/// added, updated and removed, never a key outside the pattern, both DELTAs
/// of a transaction touching two matching keys, and it RESUMEs after a cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_watch_is_a_map_of_the_matching_keys() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.port).await;
    let writer = client(&server.url()).await;
    writer
        .set("game.players.alice", &json!({"hp": 10}))
        .await
        .unwrap();
    writer
        .set("game.players", &"not below the prefix")
        .await
        .unwrap();
    let watcher = client(&proxy.url()).await;
    let mut sub = watcher.subscribe("game.players.*");
    let init = next_from(&mut sub, Source::Init).await;
    assert_eq!(json(&init.value), json!({"game.players.alice": {"hp": 10}}));
    assert!(init.meta.initialized);

    let added = writer
        .set("game.players.bob", &json!({"hp": 5}))
        .await
        .unwrap();
    let u = next(&mut sub).await;
    assert_eq!(u.meta.version, added);
    assert_eq!(
        json(&u.value),
        json!({"game.players.alice": {"hp": 10}, "game.players.bob": {"hp": 5}})
    );
    writer
        .patch("game.players.alice", &json!({"hp": 9}))
        .await
        .unwrap();
    assert_eq!(
        json(&next(&mut sub).await.value)["game.players.alice"],
        json!({"hp": 9})
    );
    writer.set("game.playersX", &1).await.unwrap();
    writer.set("other.k", &1).await.unwrap();
    writer.delete("game.players.bob").await.unwrap();
    let u = next(&mut sub).await;
    assert_eq!(
        json(&u.value),
        json!({"game.players.alice": {"hp": 9}}),
        "only the delete"
    );

    // A transaction touching two matching keys: two DELTAs, one version.
    let v = writer
        .transaction()
        .set("game.players.carol", &1)
        .set("game.players.dave", &2)
        .commit()
        .await
        .unwrap();
    let want =
        json!({"game.players.alice": {"hp": 9}, "game.players.carol": 1, "game.players.dave": 2});
    let u = eventually_value(&mut sub, &want).await;
    assert_eq!(u, v);
    assert_eq!(json(&watcher.get("game.players.*").unwrap()), want);

    // Cut: what changed meanwhile is replayed (RESUME on the pattern).
    proxy.cut();
    eventually(
        "disconnect",
        || watcher.status(),
        |s| *s != sodp_client::Status::Connected,
    )
    .await;
    writer.delete("game.players.carol").await.unwrap();
    writer.set("game.players.erin", &3).await.unwrap();
    proxy.restore();
    let want =
        json!({"game.players.alice": {"hp": 9}, "game.players.dave": 2, "game.players.erin": 3});
    eventually_value(&mut sub, &want).await;

    // `*` watches every key.
    let mut all = watcher.subscribe("*");
    let init = next_from(&mut all, Source::Init).await;
    let keys: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(json(&init.value)).unwrap();
    assert!(keys.contains_key("other.k") && keys.contains_key("game.players"));
    assert!(!keys.contains_key("game.players.carol"));
}

/// Reads updates until the value is `want`; returns that update's version.
async fn eventually_value(sub: &mut sodp_client::Subscription, want: &serde_json::Value) -> u64 {
    let mut seen = vec![];
    loop {
        let u = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .unwrap_or_else(|_| panic!("never reached {want}; saw {seen:?}"))
            .expect("stream open");
        if json(&u.value) == *want {
            return u.meta.version;
        }
        seen.push(json(&u.value));
    }
}
