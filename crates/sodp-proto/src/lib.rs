//! The SODP wire protocol, shared by the server, the Rust client, the CLI and
//! the benchmark tool.
//!
//! # Layout
//! - [`value`]: the state value type (`Value`), cheap to clone: containers are
//!   reference-counted and copied only on write.
//! - [`codec`]: MessagePack bytes ↔ [`Value`], with a nesting limit so hostile
//!   input cannot overflow the stack.
//! - [`frame`]: the 4-element frame `[type, stream_id, seq, body]`.
//! - [`call`]: a zero-copy fast path for decoding CALL frames.
//! - [`pointer`]: RFC 6901 JSON Pointers (`~0`, `~1`; the root is `"/"`).
//! - [`delta`]: `DeltaOp`, `apply` (never mutates its input) and `diff`.
//! - [`merge`]: the write operations that produce a new value *and* its ops in
//!   one pass: deep-merge patch and `set_in`.
//! - [`key`]: the key grammar.
//!
//! - `fuzzing` (feature `fuzzing`): the bodies of the fuzz targets.
//!
//! Nothing here does I/O; everything is a pure function over bytes and values.

#![forbid(unsafe_code)]

pub mod call;
pub mod codec;
pub mod delta;
pub mod frame;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod key;
pub mod map;
pub mod merge;
pub mod pointer;
pub mod value;

pub use delta::{apply, diff, ApplyError, DeltaOp, OpKind};
pub use frame::{Frame, FrameError, FrameType};
pub use value::{Map, Value};
