//! Watch callbacks, guards, shared subscriptions and the `Stream` API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use sodp_client::{Source, Update};

use crate::{client, eventually, json, next, next_from, quiet, TestServer};

type Seen = Arc<Mutex<Vec<(Source, serde_json::Value)>>>;

fn recorder() -> (Seen, impl FnMut(Update) + Send + 'static) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    (seen, move |u: Update| {
        s.lock().unwrap().push((u.meta.source, u.value.to_json()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_of_one_key_share_one_subscription() {
    let server = TestServer::start();
    let c = client(&server.url()).await;
    let writer = client(&server.url()).await;
    writer.set("shared.k", &1).await.unwrap();

    let mut first = c.subscribe("shared.k");
    assert_eq!(next(&mut first).await.meta.source, Source::Init);

    // A second watcher is served from the cache; a second server WATCH would
    // have produced a fresh STATE_INIT for the first watcher too.
    let (seen, callback) = recorder();
    let guard = c.watch("shared.k", callback);
    let mut second = c.subscribe("shared.k");
    let cached = next(&mut second).await;
    assert_eq!(
        (cached.meta.source, json(&cached.value)),
        (Source::Cache, json!(1))
    );
    quiet(&mut first, 200).await;
    eventually(
        "the callback's cache update",
        || seen.lock().unwrap().clone(),
        |s| s.len() == 1,
    )
    .await;
    assert_eq!(seen.lock().unwrap()[0], (Source::Cache, json!(1)));

    writer.set("shared.k", &2).await.unwrap();
    assert_eq!(json(&next(&mut first).await.value), json!(2));
    assert_eq!(json(&next(&mut second).await.value), json!(2));
    eventually(
        "the callback's delta",
        || seen.lock().unwrap().clone(),
        |s| s.len() == 2,
    )
    .await;

    // Removing one watcher leaves the others subscribed.
    guard.unwatch();
    drop(second);
    writer.set("shared.k", &3).await.unwrap();
    assert_eq!(json(&next(&mut first).await.value), json!(3));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "no calls after the guard went"
    );
    assert!(c.is_watching("shared.k"));

    // The last one going unsubscribes and clears the cache.
    drop(first);
    assert!(!c.is_watching("shared.k"));
    assert_eq!(c.get("shared.k"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_sync_and_async_see_init_then_deltas() {
    let server = TestServer::start();
    let c = client(&server.url()).await;
    let (seen, callback) = recorder();
    let guard = c.watch("cb.k", callback);
    let seen_async: Seen = Arc::default();
    let s = seen_async.clone();
    let guard2 = c.state("cb.k").watch_async(move |u| {
        let s = s.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            s.lock().unwrap().push((u.meta.source, u.value.to_json()));
        }
    });
    eventually("init", || seen.lock().unwrap().clone(), |s| s.len() == 1).await;
    c.set("cb.k", &json!({"a": 1})).await.unwrap();
    c.patch("cb.k", &json!({"b": 2})).await.unwrap();
    let expected = vec![
        (Source::Init, json!(null)),
        (Source::Delta, json!({"a": 1})),
        (Source::Delta, json!({"a": 1, "b": 2})),
    ];
    eventually(
        "sync callback",
        || seen.lock().unwrap().clone(),
        |s| *s == expected,
    )
    .await;
    // The async watcher is the key's second: registered before the STATE_INIT
    // arrives it shares that Init; registered after (the WATCH round trip can
    // win the race on a loaded machine) it gets the cached value instead.
    // Either way exactly one baseline, then the same deltas.
    let mut from_cache = expected.clone();
    from_cache[0].0 = Source::Cache;
    eventually(
        "async callback",
        || seen_async.lock().unwrap().clone(),
        |s| *s == expected || *s == from_cache,
    )
    .await;
    assert_eq!(guard.key(), "cb.k");
    drop((guard, guard2));
    assert!(!c.is_watching("cb.k"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_api_with_stream_ext() {
    let server = TestServer::start();
    let c = client(&server.url()).await;
    let writer = c.clone();
    let sub = c.subscribe("stream.k");
    let producer = tokio::spawn(async move {
        for i in 1..=5 {
            writer.set("stream.k", &i).await.unwrap();
        }
    });
    let values: Vec<serde_json::Value> = sub
        .filter(|u| std::future::ready(u.meta.source == Source::Delta))
        .map(|u| u.value.to_json())
        .take(5)
        .collect()
        .await;
    producer.await.unwrap();
    assert_eq!(values, [json!(1), json!(2), json!(3), json!(4), json!(5)]);
    // The stream was dropped by `collect`: the key is no longer watched.
    assert!(!c.is_watching("stream.k"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_is_watching_and_unwatch() {
    let server = TestServer::start();
    let c = client(&server.url()).await;
    c.set("g.k", &json!([1, 2])).await.unwrap();
    assert_eq!(c.get("g.k"), None, "not watched: nothing cached");
    assert!(!c.is_watching("g.k"));
    let mut sub = c.subscribe("g.k");
    assert!(c.is_watching("g.k"));
    next_from(&mut sub, Source::Init).await;
    assert_eq!(c.get("g.k").map(|v| v.to_json()), Some(json!([1, 2])));
    assert!(c.meta("g.k").unwrap().initialized);
    c.unwatch("g.k");
    assert!(!c.is_watching("g.k"));
    assert_eq!(c.get("g.k"), None);
    assert!(sub.recv().await.is_none());

    // After UNWATCH the server sends nothing more for the key; a new watch
    // starts over with a fresh STATE_INIT.
    c.set("g.k", &3).await.unwrap();
    let mut again = c.subscribe("g.k");
    let u = next(&mut again).await;
    assert_eq!((u.meta.source, json(&u.value)), (Source::Init, json!(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_keys_route_to_the_right_watchers() {
    let server = TestServer::start();
    let c = client(&server.url()).await;
    let mut subs: Vec<_> = (0..5)
        .map(|i| c.subscribe(&format!("route.k{i}")))
        .collect();
    for s in &mut subs {
        next_from(s, Source::Init).await;
    }
    for i in (0..5).rev() {
        c.set(&format!("route.k{i}"), &i).await.unwrap();
    }
    for (i, s) in subs.iter_mut().enumerate() {
        let u = next(s).await;
        assert_eq!(&*u.key, format!("route.k{i}"));
        assert_eq!(json(&u.value), json!(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_with_params_is_served_like_any_other() {
    let server = TestServer::start();
    let c = client(&server.url()).await;
    let writer = client(&server.url()).await;
    writer.set("params.k", &json!({"hp": 1})).await.unwrap();

    let params = sodp_client::Value::from(json!({"view": "compact"}));
    let opts = sodp_client::WatchOptions::new().params(params);
    let (seen, callback) = recorder();
    let _guard = c.watch_with("params.k", opts, callback);
    eventually(
        "the baseline",
        || seen.lock().unwrap().clone(),
        |s| s.len() == 1,
    )
    .await;
    writer.patch("params.k", &json!({"hp": 2})).await.unwrap();
    eventually(
        "the change",
        || seen.lock().unwrap().clone(),
        |s| s.len() == 2,
    )
    .await;
    assert_eq!(
        seen.lock().unwrap().clone(),
        [
            (Source::Init, json!({"hp": 1})),
            (Source::Delta, json!({"hp": 2}))
        ]
    );
}
