//! Every write method, `call`, results and failures.

use serde_json::json;
use sodp_client::{Client, Error, Source};

use crate::{client, json, next, next_from, quiet, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_method_reaches_a_watcher() {
    let server = TestServer::start();
    let c = client(&server.url()).await;
    let mut sub = c.subscribe("game.player");
    let init = next(&mut sub).await;
    assert_eq!(init.meta.source, Source::Init);
    assert!(!init.meta.initialized && init.value.is_nil());

    let v1 = c
        .set("game.player", &json!({"name": "Alice", "health": 100}))
        .await
        .unwrap();
    let u = next(&mut sub).await;
    assert_eq!((u.meta.source, u.meta.version), (Source::Delta, v1));
    assert!(u.meta.initialized);
    assert_eq!(json(&u.value), json!({"name": "Alice", "health": 100}));

    let v2 = c
        .patch("game.player", &json!({"health": 80}))
        .await
        .unwrap();
    assert!(v2 > v1);
    let u = next(&mut sub).await;
    assert_eq!(u.meta.version, v2);
    assert_eq!(u.ops.len(), 1, "only health changes: {:?}", u.ops);
    assert_eq!(json(&u.value), json!({"name": "Alice", "health": 80}));

    let v3 = c.set_in("game.player", "/position/x", &5).await.unwrap();
    let u = next(&mut sub).await;
    assert_eq!(u.meta.version, v3);
    assert_eq!(json(&u.value)["position"], json!({"x": 5}));

    let v4 = c
        .presence("game.player", "/cursor", &json!({"line": 1}))
        .await
        .unwrap();
    let u = next(&mut sub).await;
    assert_eq!(u.meta.version, v4);
    assert_eq!(json(&u.value)["cursor"], json!({"line": 1}));

    let v5 = c.delete("game.player").await.unwrap();
    let u = next(&mut sub).await;
    assert_eq!(u.meta.version, v5);
    assert!(u.value.is_nil() && !u.meta.initialized);
    assert!(c.get("game.player").unwrap().is_nil());

    let data = c
        .call(
            "state.set",
            json!({"state": "game.player", "value": {"n": 1}}),
        )
        .await
        .unwrap();
    let u = next(&mut sub).await;
    assert_eq!(
        data.get("version").and_then(|v| v.as_u64()),
        Some(u.meta.version)
    );
    assert_eq!(json(&u.value), json!({"n": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_write_succeeds_without_a_delta() {
    let server = TestServer::start();
    let c = client(&server.url()).await;
    let v = c.set("k", &json!({"a": 1})).await.unwrap();
    let mut sub = c.subscribe("k");
    next_from(&mut sub, Source::Init).await;
    let again = c.set("k", &json!({"a": 1})).await.unwrap();
    assert_eq!(again, v, "a no-op write reports the current version");
    quiet(&mut sub, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_calls_are_typed() {
    let server = TestServer::start();
    let c = client(&server.url()).await;
    match c.call("no.such.method", json!({})).await {
        Err(Error::Call { code: 404, message }) => assert!(!message.is_empty()),
        other => panic!("expected a 404 call error, got {other:?}"),
    }
    match c.set("bad key!", &1).await {
        Err(Error::Call { code: 400, .. }) => {}
        other => panic!("expected a 400 call error, got {other:?}"),
    }
    // The connection survives failed calls.
    assert!(c.set("ok.key", &1).await.is_ok());
    assert!(matches!(
        c.patch("k", &json!([1])).await,
        Err(Error::Serde(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_before_the_first_connection_are_queued() {
    let server = TestServer::start();
    let c = Client::builder(server.url()).build().unwrap();
    // No ready(): the call waits for the connection.
    let v = c.set("early", &"bird").await.unwrap();
    assert!(v > 0);
    let other = client(&server.url()).await;
    let mut sub = other.subscribe("early");
    assert_eq!(json(&next(&mut sub).await.value), json!("bird"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_access_through_state_ref() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
    struct Player {
        name: String,
        health: u32,
    }
    let server = TestServer::start();
    let c = client(&server.url()).await;
    let player = c.state("game.typed");
    assert_eq!(player.key(), "game.typed");
    let mut sub = player.subscribe();
    next_from(&mut sub, Source::Init).await;
    assert!(player.is_watching());
    assert_eq!(player.get_as::<Player>().unwrap(), None);

    let alice = Player {
        name: "Alice".into(),
        health: 100,
    };
    player.set(&alice).await.unwrap();
    let u = next(&mut sub).await;
    assert_eq!(u.value_as::<Player>().unwrap(), Some(alice.clone()));
    assert_eq!(player.get_as::<Player>().unwrap(), Some(alice));

    player.patch(&json!({"health": 80})).await.unwrap();
    next(&mut sub).await;
    assert_eq!(player.get_as::<Player>().unwrap().unwrap().health, 80);
    player.set_in("/health", &70).await.unwrap();
    next(&mut sub).await;
    assert_eq!(
        player.get().unwrap().get("health"),
        Some(&sodp_client::Value::Int(70))
    );
    assert_eq!(player.meta().unwrap().source, Source::Cache);
    player.delete().await.unwrap();
    next(&mut sub).await;
    assert_eq!(player.get_as::<Player>().unwrap(), None);
    player.unwatch();
    assert!(!player.is_watching());
    assert!(sub.recv().await.is_none(), "unwatch ends the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_fails_later_calls() {
    let server = TestServer::start();
    let c = client(&server.url()).await;
    c.close();
    c.closed().await;
    assert_eq!(c.set("k", &1).await, Err(Error::Closed));
    assert_eq!(c.ready().await, Err(Error::Closed));
    let mut late = c.subscribe("k");
    assert!(
        late.recv().await.is_none(),
        "streams of a closed client end"
    );
    assert!(!c.is_watching("k"));
}
