//! Writes that depend on what is there: [`Client::transact`] (read, compute,
//! compare-and-set, retry on conflict — like Firebase's `runTransaction`)
//! and [`Client::transaction`], a builder for one all-or-nothing write of
//! several keys (`state.transaction`).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sodp_proto::Value;

use crate::client::{version_of, Client};
use crate::convert;
use crate::error::{Error, Result};
use crate::options::WriteOptions;
use crate::random;

/// How many times [`Client::transact`] computes and tries its write before
/// returning the last conflict.
pub const TRANSACT_ATTEMPTS: u32 = 25;

/// First and longest pause between two `transact` attempts (each pause is
/// jittered to between half and one and a half of the current delay, which
/// doubles per conflict), so contending writers stop colliding.
const RETRY_DELAY: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(250));

/// What [`Client::transact`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transacted<T> {
    /// The value written.
    pub value: T,
    /// The version of that write.
    pub version: u64,
    /// How many tries it took (1 = no conflict).
    pub attempts: u32,
}

impl Client {
    /// Reads `key` ([`fetch`](Self::fetch)), computes `update(current)`,
    /// and writes the result only if the key did not change meanwhile
    /// (`if_version`); on a conflict reads again and retries, up to
    /// [`TRANSACT_ATTEMPTS`] times, after which the last
    /// [`Error::Conflict`] is returned.
    ///
    /// `update` gets the current value (`None` when the key holds none)
    /// and may run several times, so it must not have side effects. Needs
    /// the extensions `read` and `conditional`.
    ///
    /// ```no_run
    /// # async fn demo(client: sodp_client::Client) -> sodp_client::Result<()> {
    /// let done = client
    ///     .transact("stats.visits", |n: Option<u64>| n.unwrap_or(0) + 1)
    ///     .await?;
    /// println!("now {} (version {})", done.value, done.version);
    /// # Ok(()) }
    /// ```
    pub async fn transact<T, F>(&self, key: &str, mut update: F) -> Result<Transacted<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        let mut delay = RETRY_DELAY.0;
        let mut attempt = 1;
        loop {
            let current = self.fetch(key).await?;
            let value = update(current.value_as()?);
            let expected = if current.initialized {
                current.version
            } else {
                0
            };
            let options = WriteOptions::new().if_version(expected);
            match self.set_with(key, &value, options).await {
                Ok(version) => {
                    return Ok(Transacted {
                        value,
                        version,
                        attempts: attempt,
                    })
                }
                Err(Error::Conflict { .. }) if attempt < TRANSACT_ATTEMPTS => {
                    tokio::time::sleep(jitter(delay)).await;
                    delay = (delay * 2).min(RETRY_DELAY.1);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A builder for one all-or-nothing write of several keys
    /// (`state.transaction`, extension `transaction`): 1 to 64 ops, every
    /// condition compared with the state before the transaction, all
    /// changes under one version.
    ///
    /// ```no_run
    /// # async fn demo(client: sodp_client::Client) -> sodp_client::Result<()> {
    /// use serde_json::json;
    /// use sodp_client::WriteOptions;
    /// let version = client
    ///     .transaction()
    ///     .patch_with("bank.alice", &json!({"balance": 90}), WriteOptions::new().if_version(17))
    ///     .patch_with("bank.bob", &json!({"balance": 110}), WriteOptions::new().if_version(12))
    ///     .commit()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// When one condition fails nothing is applied and `commit` returns
    /// [`Error::Conflict`] with `op` (its index) and that key's version.
    pub fn transaction(&self) -> Transaction {
        Transaction {
            client: self.clone(),
            ops: Vec::new(),
            requires: vec!["transaction"],
            idempotency_key: None,
            error: None,
        }
    }
}

/// Ops collected for one `state.transaction`; see [`Client::transaction`].
///
/// Each method adds one op and returns the builder. A value that cannot be
/// converted is reported by [`commit`](Self::commit), which sends nothing
/// then.
#[derive(Debug)]
#[must_use = "a transaction does nothing until committed"]
pub struct Transaction {
    client: Client,
    ops: Vec<Value>,
    requires: Vec<&'static str>,
    idempotency_key: Option<String>,
    /// The first op that could not be built.
    error: Option<Error>,
}

impl Transaction {
    pub fn set<T: Serialize + ?Sized>(self, key: &str, value: &T) -> Self {
        self.set_with(key, value, WriteOptions::default())
    }

    /// `set` with `if_version` / `ttl` (an op's `idempotency_key` is an
    /// error: the key belongs to the whole transaction, see
    /// [`idempotency_key`](Self::idempotency_key)).
    pub fn set_with<T: Serialize + ?Sized>(
        self,
        key: &str,
        value: &T,
        options: WriteOptions,
    ) -> Self {
        let value = convert::to_value(value);
        self.push("state.set", key, value.map(|v| vec![("value", v)]), options)
    }

    pub fn patch<T: Serialize + ?Sized>(self, key: &str, patch: &T) -> Self {
        self.patch_with(key, patch, WriteOptions::default())
    }

    pub fn patch_with<T: Serialize + ?Sized>(
        self,
        key: &str,
        patch: &T,
        options: WriteOptions,
    ) -> Self {
        let patch = convert::to_patch(patch);
        self.push(
            "state.patch",
            key,
            patch.map(|p| vec![("patch", p)]),
            options,
        )
    }

    pub fn set_in<T: Serialize + ?Sized>(self, key: &str, path: &str, value: &T) -> Self {
        self.set_in_with(key, path, value, WriteOptions::default())
    }

    pub fn set_in_with<T: Serialize + ?Sized>(
        self,
        key: &str,
        path: &str,
        value: &T,
        options: WriteOptions,
    ) -> Self {
        let fields = convert::to_value(value).map(|v| vec![("path", path.into()), ("value", v)]);
        self.push("state.set_in", key, fields, options)
    }

    pub fn delete(self, key: &str) -> Self {
        self.delete_with(key, WriteOptions::default())
    }

    pub fn delete_with(self, key: &str, options: WriteOptions) -> Self {
        self.push("state.delete", key, Ok(vec![]), options)
    }

    /// An op as the wire spells it (`{method, args}`), e.g. from a JSON file.
    /// The server checks it like any other.
    pub fn op(mut self, method: &str, args: impl Into<Value>) -> Self {
        let args = args.into();
        if args.get("if_version").is_some() {
            self.requires.push("conditional");
        }
        if args.get("ttl_ms").is_some() {
            self.requires.push("ttl");
        }
        self.ops.push(Value::map_from([
            ("method", Value::from(method)),
            ("args", args),
        ]));
        self
    }

    /// This idempotency key for the transaction instead of a generated one
    /// (see [`WriteOptions::idempotency_key`]).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// How many ops were added.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Sends the transaction; all of its changes or none are applied.
    /// Returns the one version they all took.
    pub async fn commit(self) -> Result<u64> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let args = Value::map_from([("ops", Value::from(self.ops))]);
        let data = self
            .client
            .invoke(
                "state.transaction",
                args,
                self.requires,
                self.idempotency_key,
            )
            .await?;
        Ok(version_of(&data))
    }

    fn push(
        mut self,
        method: &str,
        key: &str,
        fields: Result<Vec<(&'static str, Value)>>,
        options: WriteOptions,
    ) -> Self {
        if self.error.is_some() {
            return self;
        }
        if options.idempotency_key.is_some() {
            self.error = Some(Error::Config(format!(
                "op {} ({method} {key:?}): an idempotency key belongs to the whole \
                 transaction (Transaction::idempotency_key), not to one op",
                self.ops.len()
            )));
            return self;
        }
        match fields {
            Ok(fields) => {
                let args = options.args(key, fields, &mut self.requires);
                self.ops.push(Value::map_from([
                    ("method", Value::from(method)),
                    ("args", args),
                ]));
            }
            Err(e) => self.error = Some(e),
        }
        self
    }
}

/// `delay` scaled by a random factor in [0.5, 1.5).
fn jitter(delay: Duration) -> Duration {
    let unit = (random::next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    delay.mul_f64(0.5 + unit)
}
