//! Integration tests against the real `sodp-server`, started as a child
//! process on a port of the kernel's choosing (see `tests/common`).

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/test_ca.rs"]
mod test_ca;

mod auth;
mod buffers;
mod exactly_once;
mod extensions;
mod methods;
mod presence;
mod reconnect;
mod tls;
mod watching;

use std::time::Duration;

use sodp_client::{Client, Source, Subscription, Update};

pub use common::{Proxy, TestServer};

/// A client with short reconnect delays, ready to use.
pub async fn client(url: &str) -> Client {
    let client = Client::builder(url)
        .reconnect_delay(Duration::from_millis(50))
        .max_reconnect_delay(Duration::from_millis(300))
        .call_timeout(Some(Duration::from_secs(5)))
        .build()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), client.ready())
        .await
        .expect("ready in time")
        .expect("connected");
    client
}

/// The next update of a subscription (5 s at most).
pub async fn next(sub: &mut Subscription) -> Update {
    tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .unwrap_or_else(|_| panic!("no update for {} within 5 s", sub.key()))
        .expect("subscription ended")
}

/// Skips updates until one has the given source.
pub async fn next_from(sub: &mut Subscription, source: Source) -> Update {
    loop {
        let u = next(sub).await;
        if u.meta.source == source {
            return u;
        }
    }
}

/// Asserts that nothing arrives within `ms` milliseconds.
pub async fn quiet(sub: &mut Subscription, ms: u64) {
    if let Ok(u) = tokio::time::timeout(Duration::from_millis(ms), sub.recv()).await {
        panic!("unexpected update: {u:?}");
    }
}

/// Polls `probe` until `done` holds for what it returns (5 s at most). On
/// timeout the panic shows the last value seen, so a failure says what
/// arrived instead of only that the right thing did not.
pub async fn eventually<T: std::fmt::Debug>(
    what: &str,
    probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    eventually_within(Duration::from_secs(5), what, probe, done).await
}

/// [`eventually`] with a deadline of `limit`.
pub async fn eventually_within<T: std::fmt::Debug>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let seen = probe();
        if done(&seen) {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last saw {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn json(v: &sodp_client::Value) -> serde_json::Value {
    v.to_json()
}
