//! Async Rust client for SODP, the State-Oriented Data Protocol.
//!
//! A [`Client`] keeps named state keys in sync with a server over WebSocket:
//! watch a key and get its whole value once, then only the changes; write
//! with `set`, `patch`, `set_in`, `delete` and `presence`.
//!
//! ```no_run
//! use serde_json::json;
//! use sodp_client::Client;
//!
//! # async fn demo() -> sodp_client::Result<()> {
//! let client = Client::connect("ws://localhost:7777").await?;
//! let _guard = client.watch("game.player", |u| {
//!     println!("player: {:?} version={}", u.value.to_json(), u.meta.version)
//! });
//! client.set("game.player", &json!({"name": "Alice", "health": 100})).await?;
//! client.patch("game.player", &json!({"health": 80})).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`builder`]: [`ClientBuilder`], the options (token or token provider,
//!   reconnect and backoff, hooks, timeouts).
//! - [`client`]: [`Client`], the cheap-to-clone handle: calls, writes, cache
//!   reads, `unwatch`, `close`.
//! - [`watch`]: callbacks with a drop guard ([`WatchGuard`]) and the
//!   `Stream` form ([`Subscription`]).
//! - [`state_ref`]: [`StateRef`], the same API scoped to one key.
//! - [`update`]: what watchers receive ([`Update`], [`Meta`], [`Source`]).
//! - [`error`]: the [`Error`] enum.
//! - Internals: `connection` (the background task: reconnect loop, frame
//!   routing), `handshake` (HELLO/AUTH), `socket` (frames over WebSocket),
//!   `subscriptions` (cache + watchers per key, sans-I/O), `messages`
//!   (frame bodies), `refresh` and `token` (tokens and in-band refresh),
//!   `backoff`, `url`, `convert` (serde).
//!
//! # Behaviour
//! - Several watchers of one key share one server subscription; the last
//!   one to go sends UNWATCH.
//! - After a reconnect, keys with a known version are RESUMEd (the server
//!   replays what was missed), the others WATCHed again.
//! - Calls made while not connected are queued; calls in flight when the
//!   connection drops fail at once with [`Error::Connection`].
//! - A rejected token (ERROR 401 during the handshake) stops the client
//!   with [`Error::Auth`]; so does a live 401 when the token is static.
//! - Every server HEARTBEAT is echoed; three heartbeat intervals (from
//!   HELLO's `heartbeat_interval_ms`) without a frame count as a lost
//!   connection.

pub mod builder;
pub mod client;
pub mod error;
pub mod state_ref;
pub mod update;
pub mod watch;

mod backoff;
mod connection;
mod convert;
mod handshake;
mod messages;
mod refresh;
mod socket;
mod subscriptions;
mod token;
mod url;

pub use builder::ClientBuilder;
pub use client::{Client, Status};
pub use error::{Error, Result};
pub use sodp_proto::{DeltaOp, OpKind, Value};
pub use state_ref::StateRef;
pub use update::{Meta, Source, Update};
pub use watch::{Subscription, WatchGuard};
