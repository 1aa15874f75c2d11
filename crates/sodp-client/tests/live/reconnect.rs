//! Reconnecting: RESUME over a cut connection, WATCH/RESUME after a server
//! restart, calls failing or queued across drops, heartbeats echoed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sodp_client::{Client, Error, Source, Status};

use crate::{client, eventually, json, next, next_from, Proxy, TestServer};

fn counting_client(url: &str) -> (Client, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let connects = Arc::new(AtomicUsize::new(0));
    let disconnects = Arc::new(AtomicUsize::new(0));
    let (c1, d1) = (connects.clone(), disconnects.clone());
    let client = Client::builder(url)
        .reconnect_delay(Duration::from_millis(50))
        .max_reconnect_delay(Duration::from_millis(200))
        .call_timeout(Some(Duration::from_secs(5)))
        .on_connect(move || {
            c1.fetch_add(1, Ordering::SeqCst);
        })
        .on_disconnect(move || {
            d1.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    (client, connects, disconnects)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_what_was_missed_over_a_cut_connection() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.port).await;
    let writer = client(&server.url()).await;
    let (c, connects, disconnects) = counting_client(&proxy.url());
    c.ready().await.unwrap();

    let mut sub = c.subscribe("resume.k");
    next_from(&mut sub, Source::Init).await;
    writer.set("resume.k", &json!({"n": 0})).await.unwrap();
    assert_eq!(next(&mut sub).await.meta.source, Source::Delta);

    proxy.cut();
    eventually(
        "disconnect",
        || disconnects.load(Ordering::SeqCst),
        |n| *n == 1,
    )
    .await;
    assert_eq!(c.status(), Status::Connecting);
    let mut missed = vec![];
    for n in 1..=3 {
        missed.push(writer.patch("resume.k", &json!({"n": n})).await.unwrap());
    }
    proxy.restore();

    // The missed changes arrive as DELTAs, in order, then the STATE_INIT
    // live marker with the same value.
    for (n, version) in (1..=3).zip(&missed) {
        let u = next(&mut sub).await;
        assert_eq!(u.meta.source, Source::Delta);
        assert_eq!(u.meta.version, *version);
        assert_eq!(json(&u.value), json!({"n": n}));
    }
    let live = next(&mut sub).await;
    assert_eq!(live.meta.source, Source::Init);
    assert_eq!(json(&live.value), json!({"n": 3}));
    assert_eq!(connects.load(Ordering::SeqCst), 2);

    writer.patch("resume.k", &json!({"n": 4})).await.unwrap();
    assert_eq!(json(&next(&mut sub).await.value), json!({"n": 4}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_server_restart() {
    let mut server = TestServer::start();
    let (c, connects, disconnects) = counting_client(&server.url());
    c.ready().await.unwrap();
    let mut known = c.subscribe("restart.known");
    next_from(&mut known, Source::Init).await;
    c.set("restart.known", &"before").await.unwrap();
    next_from(&mut known, Source::Delta).await;

    server.stop();
    eventually(
        "disconnect",
        || disconnects.load(Ordering::SeqCst),
        |n| *n == 1,
    )
    .await;
    // Watched while down: WATCHed (not resumed) on reconnect.
    let mut fresh = c.subscribe("restart.fresh");
    // A call made while down is queued until the server is back.
    let queued = {
        let c = c.clone();
        tokio::spawn(async move { c.set("restart.queued", &1).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.restart();

    c.ready().await.unwrap();
    assert!(queued.await.unwrap().is_ok());
    // The restarted server lost its state: RESUME falls back to STATE_INIT.
    let u = next(&mut known).await;
    assert_eq!(u.meta.source, Source::Init);
    assert!(u.value.is_nil());
    let u = next(&mut fresh).await;
    assert_eq!(u.meta.source, Source::Init);
    assert!(connects.load(Ordering::SeqCst) >= 2);

    // Later writes arrive.
    let other = client(&server.url()).await;
    other.set("restart.known", &"after").await.unwrap();
    other.set("restart.fresh", &"new").await.unwrap();
    assert_eq!(json(&next(&mut known).await.value), json!("after"));
    assert_eq!(json(&next(&mut fresh).await.value), json!("new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reconnect_a_drop_is_final() {
    let mut server = TestServer::start();
    let c = Client::builder(server.url())
        .reconnect(false)
        .build()
        .unwrap();
    c.ready().await.unwrap();
    let mut sub = c.subscribe("final.k");
    next(&mut sub).await;
    server.stop();
    assert!(
        sub.recv().await.is_none(),
        "streams end when the client stops"
    );
    assert!(matches!(
        c.status(),
        Status::Closed(Some(Error::Connection(_)))
    ));
    assert!(matches!(c.set("k", &1).await, Err(Error::Connection(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_a_clear_error() {
    let port = crate::common::refused_port();
    let c = Client::builder(format!("ws://127.0.0.1:{port}"))
        .retry_first_connect(false)
        .build()
        .unwrap();
    match c.ready().await {
        Err(Error::Connection(m)) => {
            assert_eq!(
                m,
                format!("cannot connect to ws://127.0.0.1:{port}: connection refused")
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Client::builder("http://x").build(),
        Err(Error::Config(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_echoed() {
    // Two silent heartbeat intervals would close the connection.
    let server = TestServer::start_with(&["--heartbeat-secs", "0.3"]);
    let (c, _connects, disconnects) = counting_client(&server.url());
    c.ready().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(disconnects.load(Ordering::SeqCst), 0);
    assert!(c.set("hb", &1).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_waits_for_a_server_that_starts_later() {
    // A port a server got from the kernel, free again once it stops.
    let mut server = TestServer::start();
    server.stop();
    let (c, connects, _) = counting_client(&server.url());
    let waiting = tokio::spawn({
        let c = c.clone();
        async move { c.ready().await }
    });
    let early = tokio::spawn({
        let c = c.clone();
        async move { c.set("late.k", &"queued").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "still retrying");
    assert_eq!(c.status(), Status::Connecting);
    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    waiting.await.unwrap().unwrap();
    assert!(early.await.unwrap().is_ok(), "the queued call went through");
    assert_eq!(connects.load(Ordering::SeqCst), 1);
    drop(server);
}
