//! [`WriteOptions`]: the extension arguments a write may carry —
//! `if_version` (extension `conditional`), a TTL (`ttl`) and an explicit
//! idempotency key (`idempotency`) — and how they become CALL arguments;
//! [`WatchOptions`]: what a WATCH may carry (`params`).
//!
//! Each option names the capability it needs; a call with an option the
//! server did not advertise fails with
//! [`Error::Unsupported`](crate::Error::Unsupported) without being sent
//! (a server without the extension would silently ignore the field).

use std::time::Duration;

use sodp_proto::Value;

/// Options of one write (`set_with`, `patch_with`, `set_in_with`,
/// `delete_with`, and the ops of a [`Transaction`](crate::Transaction)).
///
/// ```
/// use std::time::Duration;
/// use sodp_client::WriteOptions;
/// let opts = WriteOptions::new()
///     .if_version(17)
///     .ttl(Duration::from_secs(30));
/// assert_eq!(opts.if_version, Some(17));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Apply only if the key's current version is this; 0 = only if the key
    /// holds no value (never written, or deleted). Otherwise the write fails
    /// with [`Error::Conflict`](crate::Error::Conflict) carrying the current
    /// version, and nothing changes. Extension `conditional`.
    pub if_version: Option<u64>,
    /// The key expires this long after the write (whole milliseconds, a
    /// non-zero remainder rounds up); `Duration::ZERO` removes a deadline. A
    /// write without it keeps the current deadline. Not for `delete` (the
    /// server refuses it with 400). Extension `ttl`.
    pub ttl: Option<Duration>,
    /// This key instead of a generated one (extension `idempotency`): the
    /// server applies a CALL with a key it remembers for this identity only
    /// once, answering repeats with the original RESULT. Use it to make a
    /// retry of your own (e.g. a re-run script) exactly-once; the client
    /// already generates one for every write when the server supports it.
    pub idempotency_key: Option<String>,
}

impl WriteOptions {
    pub fn new() -> WriteOptions {
        WriteOptions::default()
    }

    /// See [`WriteOptions::if_version`](#structfield.if_version).
    pub fn if_version(mut self, version: u64) -> Self {
        self.if_version = Some(version);
        self
    }

    /// See [`WriteOptions::ttl`](#structfield.ttl).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// See [`WriteOptions::idempotency_key`](#structfield.idempotency_key).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The `args` of a write of `key` with `fields` and these options'
    /// `if_version` / `ttl_ms`, and the capabilities those need (the
    /// idempotency key goes in the CALL body, not here).
    pub(crate) fn args(
        &self,
        key: &str,
        fields: impl IntoIterator<Item = (&'static str, Value)>,
        requires: &mut Vec<&'static str>,
    ) -> Value {
        let mut args = vec![("state", Value::from(key))];
        args.extend(fields);
        if let Some(version) = self.if_version {
            args.push(("if_version", Value::from(version)));
            requires.push("conditional");
        }
        if let Some(ttl) = self.ttl {
            args.push(("ttl_ms", Value::from(ttl_ms(ttl))));
            requires.push("ttl");
        }
        Value::map_from(args)
    }
}

/// Options of one watch ([`Client::subscribe_with`](crate::Client::subscribe_with),
/// [`Client::watch_with`](crate::Client::watch_with)).
///
/// ```
/// use sodp_client::{Value, WatchOptions};
/// let opts = WatchOptions::new().params(Value::from(serde_json::json!({"view": "compact"})));
/// assert!(opts.params.is_some());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WatchOptions {
    /// Sent as `params` with the key's WATCH and with every RESUME after a
    /// reconnect: a value the application and the server agree on (the
    /// protocol leaves it opaque; the server echoes it in STATE_INIT).
    /// Watchers of one key share one subscription, so only the first
    /// watcher's params are sent; a later watcher's are not, while the key
    /// stays watched.
    pub params: Option<Value>,
}

impl WatchOptions {
    pub fn new() -> WatchOptions {
        WatchOptions::default()
    }

    /// See [`WatchOptions::params`](#structfield.params).
    pub fn params(mut self, params: Value) -> Self {
        self.params = Some(params);
        self
    }
}

/// Whole milliseconds, rounding a sub-millisecond remainder up so that a
/// tiny TTL does not turn into 0 ("remove the deadline").
fn ttl_ms(ttl: Duration) -> u64 {
    let ms = ttl.as_millis() + u128::from(!ttl.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_become_args_and_requirements() {
        let mut requires = vec![];
        let args = WriteOptions::new().args("k", [("value", Value::Int(1))], &mut requires);
        assert_eq!(args, Value::from(json!({"state": "k", "value": 1})));
        assert!(requires.is_empty());

        let opts = WriteOptions::new()
            .if_version(0)
            .ttl(Duration::from_micros(1500))
            .idempotency_key("x");
        let args = opts.args("k", [], &mut requires);
        assert_eq!(
            args,
            Value::from(json!({"state": "k", "if_version": 0, "ttl_ms": 2}))
        );
        assert_eq!(requires, ["conditional", "ttl"]);
        assert_eq!(ttl_ms(Duration::ZERO), 0);
        assert_eq!(ttl_ms(Duration::from_secs(3)), 3000);
    }
}
