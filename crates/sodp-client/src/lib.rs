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
//! # Extensions
//! When the server advertises them in HELLO `capabilities` (see
//! [`Client::supports`]), the client offers the project's protocol
//! extensions; a call that needs one the server lacks fails with
//! [`Error::Unsupported`] without being sent.
//! - `conditional`: [`WriteOptions::if_version`] on `set_with`,
//!   `patch_with`, `set_in_with`, `delete_with` → [`Error::Conflict`]
//!   carrying the key's current version.
//! - `ttl`: [`WriteOptions::ttl`] — the key expires as an ordinary delete.
//! - `read`: [`Client::fetch`] (the server's value now; [`Client::get`]
//!   stays the cached value of a watched key), [`Client::keys`] /
//!   [`Client::iter_keys`], [`Client::history`].
//! - `transaction`: [`Client::transaction`] (several keys, all or nothing,
//!   one version) and, with `read` + `conditional`, [`Client::transact`]
//!   (read, compute, compare-and-set, retry on conflict).
//! - `prefix_watch`: watch `game.players.*` or `*` like any key; the value
//!   is an object of full key → value of every matching key.
//! - `idempotency`: exactly-once writes across reconnects (below).
//!
//! ```no_run
//! # async fn demo(client: sodp_client::Client) -> sodp_client::Result<()> {
//! use sodp_client::{Error, WriteOptions};
//! let seen = client.fetch("game.score").await?;
//! match client
//!     .set_with("game.score", &42, WriteOptions::new().if_version(seen.version))
//!     .await
//! {
//!     Ok(version) => println!("written at {version}"),
//!     Err(Error::Conflict { version, .. }) => println!("changed meanwhile (now {version})"),
//!     Err(e) => return Err(e),
//! }
//! let visits = client.transact("stats.visits", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
//! let mut players = client.subscribe("game.players.*"); // value: {"game.players.alice": …, …}
//! # Ok(()) }
//! ```
//!
//! # Exactly-once writes
//! When the server advertises `idempotency`, every write (`set`, `patch`,
//! `set_in`, `delete`, a transaction, and those methods through
//! [`Client::call`]) carries a generated idempotency key (128 random
//! bits), kept for the call's lifetime. A write in flight when the
//! connection drops is not failed: it waits with the calls made while
//! disconnected and is resent, with the same key, first after the
//! reconnect; the server applies a key it already applied only once and
//! answers with the original RESULT, so the caller gets its version either
//! way. Bounds: at most [`ClientBuilder::max_pending`] calls wait (default
//! 1024; a call beyond fails at once with [`Error::QueueFull`], an
//! in-flight write that does not fit fails with [`Error::Connection`]),
//! and each still gives up at its [`call_timeout`](ClientBuilder::call_timeout).
//! Not resent: `presence` (its entry belonged to the lost connection, so
//! it fails as before), calls to a server that did not advertise
//! `idempotency`, a write resent to a server that no longer advertises it,
//! and a write over the server's `max_message_bytes` (the server closed the
//! connection for it). The server remembers keys per identity for
//! `idempotency_window_ms` (across its own restarts too when it has a data
//! directory; a server without one forgets them when it restarts); a resend
//! outside that could apply twice.
//!
//! # Layout
//! Each file owns one thing; no two modules import each other (the handle
//! is extended by `impl Client` blocks in `builder`, `watch`, `state_ref`,
//! `reads` and `transaction` rather than `client` importing them).
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
//! - [`options`]: the options of one write, [`WriteOptions`] (`if_version`,
//!   `ttl`, idempotency key), and the capability each needs.
//! - [`reads`]: one-shot reads ([`Client::fetch`], [`Client::keys`],
//!   [`Client::iter_keys`], [`Client::history`]) and their results.
//! - [`transaction`]: read-modify-write ([`Client::transact`]) and the
//!   [`Transaction`] builder.
//! - [`error`]: the [`Error`] enum.
//! - Internals: `config` (the options as the connection task reads them),
//!   `shared` (what handles and task share: subscription table, [`Status`],
//!   the command channel and its `Command`s), `connection` (the background
//!   task: reconnect loop, frame routing), `handshake` (HELLO/AUTH), `socket`
//!   (frames over WebSocket), `subscriptions` (cache + watchers per key,
//!   sans-I/O), `mailbox` (one watcher's bounded, conflating buffer),
//!   `messages` (frame bodies), `refresh` and `token` (tokens and in-band
//!   refresh), `backoff`, `url`, `convert` (serde), `random` (idempotency
//!   keys and retry jitter without a dependency), `tls` (a private CA for
//!   `wss://`).
//!
//! # Behaviour
//! - Several watchers of one key share one server subscription; the last
//!   one to go sends UNWATCH.
//! - After a reconnect, keys with a known version are RESUMEd (the server
//!   replays what was missed), the others WATCHed again.
//! - Calls made while not connected are queued (at most
//!   [`ClientBuilder::max_pending`]); calls in flight when the connection
//!   drops fail at once with [`Error::Connection`] — except writes to a
//!   server with `idempotency`, which are resent (see above).
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
//! The other way, from the user to the connection task: calls wait for a
//! connection in a queue of at most [`ClientBuilder::max_pending`] (those
//! past their call timeout are dropped from it), and the command channel
//! that carries calls and WATCH/UNWATCH requests to the task is drained
//! without waiting for anyone (each entry is a call its caller awaits, or
//! one request per watcher added or removed).

#![forbid(unsafe_code)]

pub mod builder;
pub mod client;
pub mod error;
pub mod options;
pub mod reads;
pub mod state_ref;
pub mod transaction;
pub mod update;
pub mod watch;

mod backoff;
mod config;
mod connection;
mod convert;
mod handshake;
mod mailbox;
mod messages;
mod random;
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
pub use options::{WatchOptions, WriteOptions};
pub use reads::{Fetched, HistoryEntry, HistoryPage, KeysPage};
pub use sodp_proto::{DeltaOp, OpKind, Value};
pub use state_ref::StateRef;
pub use transaction::{Transacted, Transaction, TRANSACT_ATTEMPTS};
pub use update::{Meta, Source, Update};
pub use watch::{Subscription, WatchGuard};
