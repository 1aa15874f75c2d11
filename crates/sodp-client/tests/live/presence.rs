//! Presence entries disappear with the client that set them.

use serde_json::json;
use sodp_client::Source;

use crate::{client, json, next, next_from, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_removed_when_the_client_goes() {
    let server = TestServer::start();
    let watcher = client(&server.url()).await;
    let mut cursors = watcher.subscribe("collab.cursors");
    next_from(&mut cursors, Source::Init).await;

    let alice = client(&server.url()).await;
    let bob = client(&server.url()).await;
    alice
        .presence(
            "collab.cursors",
            "/alice",
            &json!({"name": "Alice", "line": 1}),
        )
        .await
        .unwrap();
    bob.state("collab.cursors")
        .presence("/bob", &json!({"line": 2}))
        .await
        .unwrap();
    next(&mut cursors).await;
    let u = next(&mut cursors).await;
    assert_eq!(
        json(&u.value),
        json!({"alice": {"name": "Alice", "line": 1}, "bob": {"line": 2}})
    );

    // Dropping the last handle closes the connection.
    drop(alice);
    let u = next(&mut cursors).await;
    assert_eq!(json(&u.value), json!({"bob": {"line": 2}}));
    assert!(u.ops.iter().all(|op| op.path == "/alice"), "{:?}", u.ops);

    bob.close();
    let u = next(&mut cursors).await;
    assert_eq!(json(&u.value), json!({}));
}
