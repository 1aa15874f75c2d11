//! `sodp-server`: keeps named state keys in sync between one server and many
//! WebSocket clients (SODP v1.0, MessagePack frames).
//!
//! # Layout
//! - [`config`]: every option and limit, with safe defaults.
//! - [`server`]: the listener, connection caps, graceful shutdown.
//! - [`http`]: the HTTP side of a connection: `/health`, the WebSocket upgrade.
//! - [`session`]: one connection's state machine: frames in, frames out.
//! - [`methods`]: one file per CALL method, parsing `args` into a mutation.
//! - [`store`]: values, versions, subscribers, presence; the commit point.
//! - [`history`]: recent changes per key, for RESUME.
//! - [`size`]: a key's size after a write, judged before it (`--max-value-bytes`).
//! - [`outbox`]: a session's bounded outbound queue and its close signal.
//! - [`wire`]: the frames the server sends, encoded once.
//! - [`error`]: error codes and the `Rejection` sent to clients.
//! - [`memory`]: returning freed memory to the OS after bulk disconnects.
//!
//! A write flows: session → `methods::parse` → `Store::write` (key lock:
//! compute value + ops, version, encode DELTA once, history, push to every
//! subscriber's `Outbox`) → each session's writer task → socket.

pub mod cli;
pub mod config;
pub mod error;
pub mod history;
pub mod http;
pub mod memory;
pub mod methods;
pub mod outbox;
pub mod server;
pub mod session;
pub mod size;
pub mod store;
pub mod wire;

pub use config::{Config, Limits};
pub use server::{Server, Shared};
