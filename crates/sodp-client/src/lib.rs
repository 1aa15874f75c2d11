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
//! Each file owns one thing; no two modules import each other (the handle
//! is extended by `impl Client` blocks in `builder`, `watch` and
//! `state_ref` rather than `client` importing them).
//! - [`builder`]: [`ClientBuilder`] (fills in and validates the options),
//!   [`Client::builder`] and [`Client::connect`].
//! - [`client`]: [`Client`], the cheap-to-clone handle: starting the
//!   connection task, calls, writes, cache reads, `unwatch`, `close`.
//! - [`watch`]: [`Client::watch`] / [`Client::watch_async`] with a drop
//!   guard ([`WatchGuard`]) and [`Client::subscribe`], the `Stream` form
//!   ([`Subscription`]).
//! - [`state_ref`]: [`StateRef`], the same API scoped to one key, and
//!   [`Client::state`].
//! - [`update`]: what watchers receive ([`Update`], [`Meta`], [`Source`]).
//! - [`error`]: the [`Error`] enum.
//! - Internals: `config` (the options as the connection task reads them),
//!   `shared` (what handles and task share: subscription table, [`Status`],
//!   the command channel and its `Command`s), `connection` (the background
//!   task: reconnect loop, frame routing), `handshake` (HELLO/AUTH), `socket`
//!   (frames over WebSocket), `subscriptions` (cache + watchers per key,
//!   sans-I/O), `mailbox` (one watcher's bounded, conflating buffer),
//!   `messages` (frame bodies), `refresh` and `token` (tokens and in-band
//!   refresh), `backoff`, `url`, `convert` (serde), `tls` (a private CA for
//!   `wss://`).
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
//!
//! # Bounded buffers
//! A watcher that does not keep up never makes the client's memory grow and
//! never slows anyone else down. Each watcher (stream or callback) has a
//! buffer of [`ClientBuilder::watch_buffer`] updates (default 64). When an
//! update arrives for a full buffer, the updates waiting there are dropped
//! and the new one takes their place with [`Update::lagged`] counting how
//! many it replaced and its `ops` empty: the watcher reads the newest value
//! next and knows it skipped changes (treat such an update as a baseline).
//! The connection task never waits for a watcher, so one stalled consumer
//! cannot hold back other keys, other watchers, or calls. For live state the
//! newest value is what matters; a consumer that needs every intermediate
//! change must keep up (or raise the buffer), and `lagged` tells it when it
//! did not.
//!
//! The only unbounded queues left run the other way, from the user to the
//! connection task, which drains them without waiting for anyone: calls
//! (each awaited by its caller; while disconnected they wait in a queue
//! that drops those past their call timeout — so with `call_timeout(None)`
//! it is bounded only by how many calls the user has started) and
//! WATCH/UNWATCH requests, one per watcher added or removed.

#![forbid(unsafe_code)]

pub mod builder;
pub mod client;
pub mod error;
pub mod state_ref;
pub mod update;
pub mod watch;

mod backoff;
mod config;
mod connection;
mod convert;
mod handshake;
mod mailbox;
mod messages;
mod refresh;
mod shared;
mod socket;
mod subscriptions;
#[cfg(feature = "tls")]
mod tls;
mod token;
mod url;

pub use builder::ClientBuilder;
pub use client::{Client, Status};
pub use error::{Error, Result};
pub use sodp_proto::{DeltaOp, OpKind, Value};
pub use state_ref::StateRef;
pub use update::{Meta, Source, Update};
pub use watch::{Subscription, WatchGuard};
