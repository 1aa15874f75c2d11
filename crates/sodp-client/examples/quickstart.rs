//! The Python client's quick start, in Rust.
//!
//! Start a server (`cargo run -p sodp-server`), then:
//! `cargo run -p sodp-client --example quickstart [ws://localhost:7777]`

use std::time::Duration;

use serde_json::json;
use sodp_client::Client;

#[tokio::main]
async fn main() -> sodp_client::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://localhost:7777".into());
    let client = Client::builder(url).build()?;
    client.ready().await?;

    // Subscribe
    let unsub = client.watch("game.player", |update| {
        println!(
            "player: {} version={}",
            update.value.to_json(),
            update.meta.version
        );
    });

    // Mutate
    client
        .set("game.player", &json!({"name": "Alice", "health": 100}))
        .await?;
    client.patch("game.player", &json!({"health": 80})).await?; // only health changes

    tokio::time::sleep(Duration::from_secs(1)).await;
    unsub.unwatch(); // remove this callback
    client.close(); // close the connection
    Ok(())
}
