//! `sodp-server`: keeps named state keys in sync between one server and many
//! WebSocket clients (SODP v1.0, MessagePack frames).
//!
//! # Layout
//! - [`config`]: every option and limit, with safe defaults.
//! - [`shared`]: what every connection shares (config, store, policy,
//!   clock, the session registry).
//! - [`server`]: the listeners, graceful shutdown.
//! - [`http`]: the HTTP side of a connection: `/health`, the WebSocket upgrade.
//! - [`tls`]: `wss://` — the rustls configuration, certificate reloads.
//! - [`proxy`]: the client's address behind trusted reverse proxies.
//! - [`session`]: one connection — the protocol state machine (`session`),
//!   its I/O loop (`session::io`), AUTH (`session::auth`), WATCH/RESUME/
//!   UNWATCH (`session::watch`), HELLO (`session::hello`).
//! - [`holdings`]: what a session holds in the store; released on drop.
//! - [`access`]: key and ACL checks.
//! - [`admin`]: who is an administrator; what the web inspector may do.
//! - [`registry`]: the live sessions, as the admin methods show them.
//! - [`writers`]: who made each recent change (only with `--inspector`).
//! - [`inspector`]: the web inspector's embedded page and assets.
//! - [`idempotency`]: remembered outcomes of writes with an idempotency key.
//! - [`methods`]: one file per CALL method: parse, checks, apply.
//! - [`store`]: values, versions, subscribers, presence; the commit point.
//! - [`size`]: a key's exact size after a write, known before it.
//! - [`budget`]: the server-wide memory budget (`--max-memory`).
//! - [`history`]: recent changes per key, for RESUME.
//! - [`storage`]: the seam to what keeps changes (`Memory`, the durable
//!   log with group commit and checkpoints, recovery).
//! - [`outbox`]: a session's bounded outbound queue and its close signal.
//! - [`wire`]: the frames the server sends, encoded once.
//! - [`error`]: error codes and the `Rejection` sent to clients.
//! - [`clock`]: wall-clock time behind a seam (tests run on paused time).
//! - [`memory`]: returning freed memory to the OS after bulk disconnects.
//! - [`metrics`]: Prometheus metrics (`--metrics-port`).
//! - [`cluster`]: cluster mode — several nodes sharing one state in Redis
//!   (commit script, cross-node fanout with gap detection, node leases).
//! - `fuzzing` (feature `fuzzing`): the session fuzz target's body.
//!
//! A write flows: `session::io` → `Session::on_frame` → `methods::parse` →
//! the method's `run` (checks) → `Store::write` (key lock: admit the exact
//! size, change in place, validate, version, encode the DELTA once, history,
//! push to every subscriber's `Outbox`) → each subscriber's I/O loop →
//! socket.

#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod batch;
pub mod budget;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod history;
pub mod holdings;
pub mod http;
pub mod idempotency;
pub mod inspector;
pub mod memory;
pub mod methods;
pub mod metrics;
pub mod outbox;
pub mod proxy;
pub mod registry;
pub mod server;
pub mod session;
pub mod shared;
pub mod size;
pub mod storage;
pub mod store;
pub mod tcp;
pub mod tls;
pub mod wire;
pub mod writers;

pub use config::{Config, Limits};
pub use server::Server;
pub use shared::Shared;
