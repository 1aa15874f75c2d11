//! One-shot reads (extension `read`): [`Client::fetch`] (`state.get`),
//! [`Client::keys`] / [`Client::iter_keys`] (`state.keys`, paged) and
//! [`Client::history`] (`state.history`), with their typed results.
//!
//! They ask the server and subscribe to nothing; [`Client::get`] stays the
//! cached value of a watched key. The server's ACL applies to each: keys
//! the session may not read are left out of `keys`, and `fetch`/`history`
//! of such a key fail with 403.

use futures_util::stream::{self, Stream};
use serde::de::DeserializeOwned;
use sodp_proto::{DeltaOp, Value};

use crate::client::Client;
use crate::convert;
use crate::error::{Error, Result};

/// A key's value as the server has it now, from [`Client::fetch`].
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    /// The version of the key's last change (0 when never written; a
    /// deleted key's is its delete's).
    pub version: u64,
    /// Nil when the key holds no value.
    pub value: Value,
    /// False when the key holds no value (never written, or deleted).
    pub initialized: bool,
}

impl Fetched {
    /// The value converted to `T`; `Ok(None)` when nil.
    pub fn value_as<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        convert::from_value(&self.value)
    }
}

/// One page of [`Client::keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysPage {
    /// Keys holding a value, in byte-wise order.
    pub keys: Vec<String>,
    /// Present exactly when more keys may follow: pass it as `after`.
    pub next: Option<String>,
}

/// One retained change of a key.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub version: u64,
    /// The change's ops, as a DELTA would carry them.
    pub ops: Vec<DeltaOp>,
}

/// A page of [`Client::history`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// Oldest first.
    pub entries: Vec<HistoryEntry>,
    /// True when no change after the asked version is missing before the
    /// first entry (the server has not trimmed any of them).
    pub complete: bool,
}

impl Client {
    /// Reads `key` once from the server (`state.get`), without watching it.
    /// Needs the extension `read` (else [`Error::Unsupported`]).
    pub async fn fetch(&self, key: &str) -> Result<Fetched> {
        let args = Value::map_from([("state", Value::from(key))]);
        let data = self.read("state.get", args).await?;
        Ok(Fetched {
            version: field_u64(&data, "state.get", "version")?,
            initialized: data
                .get("initialized")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            value: data.get("value").cloned().unwrap_or_default(),
        })
    }

    /// One page of the keys that hold a value (`state.keys`), in byte-wise
    /// order: those equal to `prefix` or below it by whole segments (`a.b`
    /// lists `a.b` and `a.b.c`, not `a.bc`; `None` lists all), strictly
    /// after `after`, at most `limit` (server default 100, at most 1,000).
    /// Pass the page's `next` as `after` for the next page, or use
    /// [`iter_keys`](Self::iter_keys). Needs the extension `read`.
    pub async fn keys(
        &self,
        prefix: Option<&str>,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<KeysPage> {
        let args = [
            ("prefix", prefix.map(Value::from)),
            ("after", after.map(Value::from)),
            ("limit", limit.map(|l| Value::from(u64::from(l)))),
        ];
        let data = self.read("state.keys", present(args)).await?;
        let keys = data
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| missing("state.keys", "keys"))?
            .iter()
            .map(|k| k.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                Error::Protocol("state.keys returned a key that is not a string".into())
            })?;
        let next = data.get("next").and_then(Value::as_str).map(str::to_owned);
        Ok(KeysPage { keys, next })
    }

    /// Every key under `prefix` (see [`keys`](Self::keys)), fetching pages
    /// of `page_size` as the stream is read. Ends after the last key, or
    /// after yielding the first error.
    pub fn iter_keys(
        &self,
        prefix: Option<&str>,
        page_size: Option<u32>,
    ) -> impl Stream<Item = Result<String>> + Send + 'static {
        struct Pages {
            client: Client,
            prefix: Option<String>,
            page_size: Option<u32>,
            after: Option<String>,
            buffered: std::vec::IntoIter<String>,
            done: bool,
        }
        let start = Pages {
            client: self.clone(),
            prefix: prefix.map(str::to_owned),
            page_size,
            after: None,
            buffered: Vec::new().into_iter(),
            done: false,
        };
        stream::unfold(start, |mut pages| async move {
            loop {
                if let Some(key) = pages.buffered.next() {
                    return Some((Ok(key), pages));
                }
                if pages.done {
                    return None;
                }
                let page = pages
                    .client
                    .keys(
                        pages.prefix.as_deref(),
                        pages.after.as_deref(),
                        pages.page_size,
                    )
                    .await;
                match page {
                    Ok(page) => {
                        // A `next` that does not move on would loop forever.
                        pages.done = page.next.is_none() || page.next == pages.after;
                        pages.after = page.next;
                        pages.buffered = page.keys.into_iter();
                    }
                    Err(e) => {
                        pages.done = true;
                        return Some((Err(e), pages));
                    }
                }
            }
        })
    }

    /// The retained changes of `key` with a version above `since_version`
    /// (default 0), oldest first, at most `limit` (server default 100, at
    /// most 1,000) (`state.history`). Page by passing the last entry's
    /// version back. Needs the extension `read`.
    pub async fn history(
        &self,
        key: &str,
        since_version: Option<u64>,
        limit: Option<u32>,
    ) -> Result<HistoryPage> {
        let args = [
            ("state", Some(Value::from(key))),
            ("since_version", since_version.map(Value::from)),
            ("limit", limit.map(|l| Value::from(u64::from(l)))),
        ];
        let data = self.read("state.history", present(args)).await?;
        let entries = data
            .get("entries")
            .and_then(Value::as_array)
            .ok_or_else(|| missing("state.history", "entries"))?
            .iter()
            .map(|entry| {
                let ops = entry
                    .get("ops")
                    .ok_or_else(|| missing("state.history", "ops"))?;
                Ok(HistoryEntry {
                    version: field_u64(entry, "state.history", "version")?,
                    ops: DeltaOp::list_from_value(ops)
                        .map_err(|e| Error::Protocol(format!("state.history: {e}")))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(HistoryPage {
            entries,
            complete: data
                .get("complete")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    async fn read(&self, method: &str, args: Value) -> Result<Value> {
        self.invoke(method, args, vec!["read"], None).await
    }
}

/// The args map of the fields that are given.
fn present<const N: usize>(fields: [(&str, Option<Value>); N]) -> Value {
    Value::map_from(fields.into_iter().filter_map(|(k, v)| Some((k, v?))))
}

fn field_u64(data: &Value, method: &str, field: &str) -> Result<u64> {
    data.get(field)
        .and_then(Value::as_u64)
        .ok_or_else(|| missing(method, field))
}

fn missing(method: &str, field: &str) -> Error {
    Error::Protocol(format!("{method} RESULT without `{field}`"))
}
