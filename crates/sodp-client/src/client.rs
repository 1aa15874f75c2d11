//! The public handle: a cheap-to-clone [`Client`] talking to one background
//! connection task through the command channel of `shared`.
//!
//! This file owns starting the task, calls and writes, cache reads,
//! `unwatch` and `close`. Other modules add to `Client` without this one
//! importing them: `builder` (`Client::builder`, `Client::connect`),
//! `watch` (`watch`, `watch_async`, `subscribe`) and `state_ref`
//! (`Client::state`).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sodp_proto::Value;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::connection::Driver;
use crate::convert;
use crate::error::{Error, Result};
use crate::options::WriteOptions;
use crate::shared::{command_channel, supports, Command, CommandSender, PendingCall, Shared};
use crate::update::Meta;

pub use crate::shared::Status;

pub(crate) struct Inner {
    pub shared: Arc<Shared>,
    pub commands: CommandSender,
    pub runtime: Handle,
    pub config: Config,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Close);
    }
}

/// A connection to an SODP server that reconnects on its own.
///
/// Cloning is cheap and every clone shares the one connection. The
/// connection closes when [`close`](Self::close) is called or when the last
/// clone (and the last watch guard or stream, which hold a clone) is dropped.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.config.url)
            .field("status", &self.status())
            .finish()
    }
}

impl Client {
    /// Spawns the connection task on `runtime` (from `ClientBuilder::build`).
    pub(crate) fn start(config: Config, runtime: Handle) -> Client {
        let (commands, rx) = command_channel();
        let shared = Arc::new(Shared::new());
        runtime.spawn(Driver::new(shared.clone(), config.clone(), rx).run());
        Client {
            inner: Arc::new(Inner {
                shared,
                commands,
                runtime,
                config,
            }),
        }
    }

    /// Waits until the client is connected and authenticated. Fails if the
    /// client stopped for good (rejected token, closed, or the connection
    /// failed with reconnecting off).
    pub async fn ready(&self) -> Result<()> {
        let mut rx = self.inner.shared.status.subscribe();
        let status = rx
            .wait_for(|s| !matches!(s, Status::Connecting))
            .await
            .map(|s| s.clone())
            .unwrap_or(Status::Closed(None));
        match status {
            Status::Connected => Ok(()),
            Status::Closed(e) => Err(e.unwrap_or(Error::Closed)),
            Status::Connecting => unreachable!(),
        }
    }

    /// The current connection status.
    pub fn status(&self) -> Status {
        self.inner.shared.status.borrow().clone()
    }

    /// Invokes a server method and returns its result data.
    ///
    /// Calls made before the first connection (or while reconnecting) are
    /// queued (at most [`max_pending`](crate::ClientBuilder::max_pending))
    /// and sent once connected. A call in flight when the connection drops
    /// fails at once with [`Error::Connection`] — unless it is a write
    /// (`state.set`, `patch`, `set_in`, `delete`, `transaction`) and the
    /// server advertises `idempotency`: then it carries a generated
    /// idempotency key, is resent with it after the reconnect, and the
    /// server applies it exactly once (see the crate docs).
    pub async fn call(&self, method: &str, args: impl Into<Value>) -> Result<Value> {
        self.invoke(method, args.into(), Vec::new(), None).await
    }

    /// [`call`](Self::call) that fails with [`Error::Unsupported`] unsent
    /// unless the server advertises every capability in `requires`, with an
    /// explicit idempotency key (which needs `idempotency`).
    pub(crate) async fn invoke(
        &self,
        method: &str,
        args: Value,
        mut requires: Vec<&'static str>,
        idempotency_key: Option<String>,
    ) -> Result<Value> {
        if let Status::Closed(e) = self.status() {
            return Err(e.unwrap_or(Error::Closed));
        }
        let (reply, rx) = oneshot::channel();
        let mut call = PendingCall::new(method, args, reply);
        if idempotency_key.is_some() {
            requires.push("idempotency");
        }
        call.requires = requires;
        call.idempotency_key = idempotency_key;
        if self.inner.commands.send(Command::Call(call)).is_err() {
            return Err(self.closed_error());
        }
        let answer = match self.inner.config.call_timeout {
            Some(t) => tokio::time::timeout(t, rx)
                .await
                .map_err(|_| Error::Timeout)?,
            None => rx.await,
        };
        answer.unwrap_or_else(|_| Err(self.closed_error()))
    }

    /// The HELLO `capabilities` of the current (or last) session: nil
    /// before the first connection.
    pub fn capabilities(&self) -> Value {
        self.inner.shared.capabilities()
    }

    /// True when the current (or last) session's server advertised the
    /// extension `name` (`"conditional"`, `"transaction"`, `"idempotency"`,
    /// `"prefix_watch"`, `"ttl"`, `"read"`, ...). False before the first
    /// connection: await [`ready`](Self::ready) first.
    pub fn supports(&self, name: &str) -> bool {
        supports(&self.inner.shared.capabilities(), name)
    }

    fn closed_error(&self) -> Error {
        match self.status() {
            Status::Closed(Some(e)) => e,
            _ => Error::Closed,
        }
    }

    /// Replaces the value of `key`. Returns the version of the write.
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<u64> {
        self.set_with(key, value, WriteOptions::default()).await
    }

    /// [`set`](Self::set) with [`WriteOptions`] (`if_version`, `ttl`,
    /// `idempotency_key`).
    pub async fn set_with<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: WriteOptions,
    ) -> Result<u64> {
        let value = convert::to_value(value)?;
        self.write("state.set", key, [("value", value)], options)
            .await
    }

    /// Deep-merges `patch` (an object) into the value of `key`.
    pub async fn patch<T: Serialize + ?Sized>(&self, key: &str, patch: &T) -> Result<u64> {
        self.patch_with(key, patch, WriteOptions::default()).await
    }

    /// [`patch`](Self::patch) with [`WriteOptions`].
    pub async fn patch_with<T: Serialize + ?Sized>(
        &self,
        key: &str,
        patch: &T,
        options: WriteOptions,
    ) -> Result<u64> {
        let patch = convert::to_patch(patch)?;
        self.write("state.patch", key, [("patch", patch)], options)
            .await
    }

    /// Sets one location of `key` by JSON Pointer (e.g. `/position/x`).
    pub async fn set_in<T: Serialize + ?Sized>(
        &self,
        key: &str,
        path: &str,
        value: &T,
    ) -> Result<u64> {
        self.set_in_with(key, path, value, WriteOptions::default())
            .await
    }

    /// [`set_in`](Self::set_in) with [`WriteOptions`].
    pub async fn set_in_with<T: Serialize + ?Sized>(
        &self,
        key: &str,
        path: &str,
        value: &T,
        options: WriteOptions,
    ) -> Result<u64> {
        let value = convert::to_value(value)?;
        let fields = [("path", path.into()), ("value", value)];
        self.write("state.set_in", key, fields, options).await
    }

    /// Removes `key` on the server; watchers see it become nil.
    pub async fn delete(&self, key: &str) -> Result<u64> {
        self.delete_with(key, WriteOptions::default()).await
    }

    /// [`delete`](Self::delete) with [`WriteOptions`] (`if_version`,
    /// `idempotency_key`; a TTL is refused by the server).
    pub async fn delete_with(&self, key: &str, options: WriteOptions) -> Result<u64> {
        self.write("state.delete", key, [], options).await
    }

    /// Sets `path` of `key` and binds it to this connection: the server
    /// removes it when the connection ends for any reason. Never resent
    /// after a reconnect (the entry belonged to the old connection).
    pub async fn presence<T: Serialize + ?Sized>(
        &self,
        key: &str,
        path: &str,
        value: &T,
    ) -> Result<u64> {
        let value = convert::to_value(value)?;
        let fields = [("path", path.into()), ("value", value)];
        self.write("state.presence", key, fields, WriteOptions::default())
            .await
    }

    async fn write<const N: usize>(
        &self,
        method: &str,
        key: &str,
        fields: [(&'static str, Value); N],
        options: WriteOptions,
    ) -> Result<u64> {
        let mut requires = Vec::new();
        let args = options.args(key, fields, &mut requires);
        let data = self
            .invoke(method, args, requires, options.idempotency_key)
            .await?;
        Ok(version_of(&data))
    }

    /// The cached value of a watched key; `None` when the key is not watched
    /// or its first STATE_INIT has not arrived yet.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.inner.shared.subs().get(key).map(|(v, _)| v)
    }

    /// The cached value converted to `T`; `Ok(None)` when unknown or nil.
    pub fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key) {
            Some(v) => convert::from_value(&v),
            None => Ok(None),
        }
    }

    /// The cached value's version and flags.
    pub fn meta(&self, key: &str) -> Option<Meta> {
        self.inner.shared.subs().get(key).map(|(_, m)| m)
    }

    /// True when this client has a subscription for `key`.
    pub fn is_watching(&self, key: &str) -> bool {
        self.inner.shared.subs().is_watching(key)
    }

    /// Cancels the server subscription for `key`, drops its cache, and ends
    /// every callback and stream watching it.
    pub fn unwatch(&self, key: &str) {
        let frame = self.inner.shared.subs().remove_key(key);
        if let Some(frame) = frame {
            let _ = self.inner.commands.send(Command::Send(frame));
        }
    }

    /// Closes the connection and stops reconnecting. Pending calls fail with
    /// [`Error::Closed`]; streams end.
    pub fn close(&self) {
        let _ = self.inner.commands.send(Command::Close);
    }

    /// Waits until the connection task has stopped (after [`close`](Self::close)
    /// or a fatal error).
    pub async fn closed(&self) {
        let mut rx = self.inner.shared.status.subscribe();
        let _ = rx.wait_for(|s| matches!(s, Status::Closed(_))).await;
    }
}

/// The `version` of a write's RESULT data.
pub(crate) fn version_of(data: &Value) -> u64 {
    data.get("version").and_then(Value::as_u64).unwrap_or(0)
}
