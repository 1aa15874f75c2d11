//! Bounded buffers: a watcher that does not read while the server sends
//! thousands of updates holds at most `watch_buffer` of them, never slows
//! the other watchers, and reads the newest value when it does read, with
//! `lagged` accounting for every update it skipped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use sodp_client::{Client, Source, Update};
use tokio::sync::Semaphore;

use crate::{client, eventually, eventually_within, json, next, quiet, TestServer};

const BUFFER: usize = 16;
const WRITES: u64 = 3_000;

async fn buffered_client(url: &str) -> Client {
    let c = Client::builder(url)
        .watch_buffer(BUFFER)
        .call_timeout(Some(Duration::from_secs(30)))
        .build()
        .unwrap();
    c.ready().await.unwrap();
    c
}

/// Writes `{"n": i}` for i in 1..=WRITES to `key`, 100 calls in flight at
/// a time, calling `check` after each batch. Returns the newest write's
/// version and value.
async fn flood(writer: &Client, key: &str, mut check: impl FnMut()) -> (u64, serde_json::Value) {
    let mut newest = (0, json!(null));
    let all: Vec<u64> = (1..=WRITES).collect();
    for batch in all.chunks(100) {
        let values: Vec<_> = batch.iter().map(|i| json!({"n": i})).collect();
        let versions = join_all(values.iter().map(|v| writer.set(key, v))).await;
        for (i, v) in batch.iter().zip(versions) {
            let v = v.expect("write accepted");
            if v > newest.0 {
                newest = (v, json!({"n": i}));
            }
        }
        check();
    }
    newest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_reads_stays_bounded_and_gets_the_newest_value() {
    let server = TestServer::start();
    let c = buffered_client(&server.url()).await;
    let writer = client(&server.url()).await;

    let mut idle = c.subscribe("buf.stream");
    // A second watcher of the same key on the same client reads as it goes
    // (it may fall behind a burst of 100 too, and then skips, not waits).
    let mut reader = c.subscribe("buf.stream");
    // Registered right after `idle`, it gets the baseline as the STATE_INIT
    // or — when that reached the client between the two calls (a loaded
    // machine) — from the cache: the whole value either way, never a DELTA.
    let first = next(&mut reader).await.meta.source;
    assert!(
        matches!(first, Source::Init | Source::Cache),
        "the first update is the baseline, not {first:?}"
    );
    let reading = tokio::spawn(async move {
        let mut seen = vec![];
        let mut accounted = 0;
        while accounted < WRITES {
            let u = tokio::time::timeout(Duration::from_secs(30), reader.recv())
                .await
                .expect("the reading watcher keeps getting updates")
                .expect("stream open");
            accounted += 1 + u.lagged;
            seen.push((u.meta.source, u.lagged, u.meta.version, u.value.to_json()));
        }
        seen
    });

    let mut most_queued = 0;
    let (version, value) = flood(&writer, "buf.stream", || {
        most_queued = most_queued.max(idle.queued());
    })
    .await;
    // Everything written has reached the client (its cache is current).
    eventually_within(
        Duration::from_secs(30),
        "the newest write in the client's cache",
        || c.meta("buf.stream").map(|m| m.version),
        |v| *v == Some(version),
    )
    .await;
    most_queued = most_queued.max(idle.queued());
    assert!(
        most_queued <= BUFFER,
        "a watcher that never reads held {most_queued} updates (buffer {BUFFER})"
    );

    // It reads now: what is queued, the last of it the newest value.
    let mut got: Vec<Update> = vec![];
    while idle.queued() > 0 {
        got.push(next(&mut idle).await);
    }
    let last = got.last().expect("updates were queued");
    assert_eq!((last.meta.version, json(&last.value)), (version, value));
    assert!(
        got.iter().any(|u| u.lagged > 0),
        "skipped updates are reported"
    );
    assert!(got.iter().all(|u| u.lagged == 0 || u.ops.is_empty()));
    // The STATE_INIT and every DELTA, each delivered or counted as skipped.
    let accounted: u64 = got.iter().map(|u| 1 + u.lagged).sum();
    assert_eq!(accounted, WRITES + 1);
    quiet(&mut idle, 200).await;

    // The watcher that kept reading was not held back: it accounted for
    // every change, in version order, ending at the newest.
    let seen = reading.await.unwrap();
    assert!(seen.iter().all(|(s, _, _, _)| *s == Source::Delta));
    assert_eq!(seen.iter().map(|(_, l, _, _)| 1 + l).sum::<u64>(), WRITES);
    assert!(seen.windows(2).all(|w| w[0].2 < w[1].2), "in version order");
    let newest = seen.last().map(|(_, _, v, value)| (*v, value.clone()));
    assert_eq!(newest, Some((last.meta.version, json(&last.value))));

    // Caught up, it is delivered one update at a time again.
    let v = writer.set("buf.stream", &"after").await.unwrap();
    let u = next(&mut idle).await;
    assert_eq!((u.meta.version, u.lagged, u.ops.len()), (v, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_callback_stays_bounded_and_then_sees_the_newest_value() {
    let server = TestServer::start();
    let c = buffered_client(&server.url()).await;
    let writer = client(&server.url()).await;

    // The callback blocks on its first update until the gate opens.
    let gate = Arc::new(Semaphore::new(0));
    let seen = Arc::new(Mutex::new(Vec::<Update>::new()));
    let (g, s) = (gate.clone(), seen.clone());
    let guard = c.watch_async("buf.callback", move |u| {
        let (g, s) = (g.clone(), s.clone());
        async move {
            let first = s.lock().unwrap().is_empty();
            s.lock().unwrap().push(u);
            if first {
                g.acquire().await.expect("gate").forget();
            }
        }
    });
    eventually(
        "the callback's first update",
        || seen.lock().unwrap().len(),
        |n| *n == 1,
    )
    .await;

    let mut most_queued = 0;
    let (version, value) = flood(&writer, "buf.callback", || {
        most_queued = most_queued.max(guard.queued());
    })
    .await;
    eventually_within(
        Duration::from_secs(30),
        "the newest write in the client's cache",
        || c.meta("buf.callback").map(|m| m.version),
        |v| *v == Some(version),
    )
    .await;
    most_queued = most_queued.max(guard.queued());
    assert!(
        most_queued <= BUFFER,
        "a stuck callback held {most_queued} updates (buffer {BUFFER})"
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "the callback is still stuck");

    gate.add_permits(1);
    let delivered = eventually(
        "the newest value reaches the callback",
        || {
            let seen = seen.lock().unwrap();
            let last = seen.last().map(|u| (u.meta.version, json(&u.value)));
            (last, seen.iter().map(|u| 1 + u.lagged).sum::<u64>())
        },
        |(last, _)| last.as_ref().is_some_and(|(v, _)| *v == version),
    )
    .await;
    assert_eq!(delivered.0, Some((version, value)));
    assert_eq!(delivered.1, WRITES + 1, "every update delivered or counted");
    assert!(seen.lock().unwrap().iter().any(|u| u.lagged > 0));
    assert_eq!(guard.queued(), 0);
}
