//! [`StateRef`]: a handle scoped to one key, for per-key code, and
//! [`Client::state`] that makes one.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sodp_proto::Value;

use crate::client::Client;
use crate::error::Result;
use crate::options::WriteOptions;
use crate::reads::{Fetched, HistoryPage};
use crate::transaction::Transacted;
use crate::update::{Meta, Update};
use crate::watch::{Subscription, WatchGuard};

/// One key of one client. Cheap to clone.
///
/// ```no_run
/// # async fn demo(client: sodp_client::Client) -> sodp_client::Result<()> {
/// let player = client.state("game.player");
/// let _guard = player.watch(|u| println!("{:?}", u.value));
/// player.set(&serde_json::json!({"name": "Alice", "health": 100})).await?;
/// player.patch(&serde_json::json!({"health": 80})).await?;
/// player.set_in("/position/x", &5).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct StateRef {
    client: Client,
    key: String,
}

impl Client {
    /// A handle scoped to one key.
    pub fn state(&self, key: impl Into<String>) -> StateRef {
        StateRef {
            client: self.clone(),
            key: key.into(),
        }
    }
}

impl StateRef {
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// See [`Client::watch`].
    pub fn watch<F: FnMut(Update) + Send + 'static>(&self, callback: F) -> WatchGuard {
        self.client.watch(&self.key, callback)
    }

    /// See [`Client::watch_async`].
    pub fn watch_async<F, Fut>(&self, callback: F) -> WatchGuard
    where
        F: FnMut(Update) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        self.client.watch_async(&self.key, callback)
    }

    /// See [`Client::subscribe`].
    pub fn subscribe(&self) -> Subscription {
        self.client.subscribe(&self.key)
    }

    /// See [`Client::unwatch`].
    pub fn unwatch(&self) {
        self.client.unwatch(&self.key)
    }

    pub fn is_watching(&self) -> bool {
        self.client.is_watching(&self.key)
    }

    /// The cached value (see [`Client::get`]).
    pub fn get(&self) -> Option<Value> {
        self.client.get(&self.key)
    }

    /// The cached value as `T` (see [`Client::get_as`]).
    pub fn get_as<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.client.get_as(&self.key)
    }

    pub fn meta(&self) -> Option<Meta> {
        self.client.meta(&self.key)
    }

    pub async fn set<T: Serialize + ?Sized>(&self, value: &T) -> Result<u64> {
        self.client.set(&self.key, value).await
    }

    pub async fn patch<T: Serialize + ?Sized>(&self, patch: &T) -> Result<u64> {
        self.client.patch(&self.key, patch).await
    }

    pub async fn set_in<T: Serialize + ?Sized>(&self, path: &str, value: &T) -> Result<u64> {
        self.client.set_in(&self.key, path, value).await
    }

    pub async fn delete(&self) -> Result<u64> {
        self.client.delete(&self.key).await
    }

    pub async fn presence<T: Serialize + ?Sized>(&self, path: &str, value: &T) -> Result<u64> {
        self.client.presence(&self.key, path, value).await
    }

    /// See [`Client::set_with`].
    pub async fn set_with<T: Serialize + ?Sized>(
        &self,
        value: &T,
        options: WriteOptions,
    ) -> Result<u64> {
        self.client.set_with(&self.key, value, options).await
    }

    /// See [`Client::patch_with`].
    pub async fn patch_with<T: Serialize + ?Sized>(
        &self,
        patch: &T,
        options: WriteOptions,
    ) -> Result<u64> {
        self.client.patch_with(&self.key, patch, options).await
    }

    /// See [`Client::set_in_with`].
    pub async fn set_in_with<T: Serialize + ?Sized>(
        &self,
        path: &str,
        value: &T,
        options: WriteOptions,
    ) -> Result<u64> {
        self.client
            .set_in_with(&self.key, path, value, options)
            .await
    }

    /// See [`Client::delete_with`].
    pub async fn delete_with(&self, options: WriteOptions) -> Result<u64> {
        self.client.delete_with(&self.key, options).await
    }

    /// See [`Client::fetch`].
    pub async fn fetch(&self) -> Result<Fetched> {
        self.client.fetch(&self.key).await
    }

    /// See [`Client::history`].
    pub async fn history(
        &self,
        since_version: Option<u64>,
        limit: Option<u32>,
    ) -> Result<HistoryPage> {
        self.client.history(&self.key, since_version, limit).await
    }

    /// See [`Client::transact`].
    pub async fn transact<T, F>(&self, update: F) -> Result<Transacted<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        self.client.transact(&self.key, update).await
    }
}
