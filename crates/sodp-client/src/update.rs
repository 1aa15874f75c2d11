//! What watchers receive: a key's value plus where it came from.

use std::fmt;
use std::sync::Arc;

use sodp_proto::{DeltaOp, Value};

/// Why a watcher is being told about a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Replayed from the client's cache when the watch was registered.
    Cache,
    /// The server's STATE_INIT baseline (first load, or after a reconnect).
    Init,
    /// One DELTA frame applied to the previous value.
    Delta,
}

impl Source {
    /// `"cache"`, `"init"` or `"delta"`, as the Python client spells them.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Init => "init",
            Source::Delta => "delta",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Metadata of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The server version of the last change applied (global across keys).
    pub version: u64,
    /// False when the key has never been written (or was deleted).
    /// Use [`Meta::source`], not this, to tell a baseline from a change.
    pub initialized: bool,
    pub source: Source,
    /// When the key expires (Unix milliseconds; extension `ttl`), as the
    /// server announced it in STATE_INIT or the DELTA of the write that set
    /// or moved it. `None` when it has no deadline, and for a pattern.
    pub expires_at: Option<u64>,
}

/// One notification for one key.
///
/// Cloning is cheap: the value shares its containers and the ops are behind
/// an `Arc`.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub key: Arc<str>,
    /// The whole current value (nil when the key has no value).
    pub value: Value,
    pub meta: Meta,
    /// The ops of the DELTA that produced this value; empty for cache and
    /// init updates, and for a conflated update (`lagged > 0`).
    pub ops: Arc<[DeltaOp]>,
    /// How many updates this watcher missed just before this one because it
    /// fell behind (its buffer, [`ClientBuilder::watch_buffer`], was full).
    /// 0 normally. When it is not, treat the update as a fresh baseline:
    /// `value` is the whole current value and `meta` is the newest
    /// update's, but the skipped changes (and their ops) are gone.
    ///
    /// [`ClientBuilder::watch_buffer`]: crate::ClientBuilder::watch_buffer
    pub lagged: u64,
}

impl Update {
    /// The value converted to a Rust type through serde. `Ok(None)` when the
    /// value is nil.
    pub fn value_as<T: serde::de::DeserializeOwned>(&self) -> crate::Result<Option<T>> {
        crate::convert::from_value(&self.value)
    }
}
