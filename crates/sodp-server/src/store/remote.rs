//! The seam between the store and a shared engine that several servers
//! commit to (cluster mode, see `crate::cluster`).
//!
//! With a [`Remote`] attached, the store stops being the commit point: a
//! write is drafted on a copy of the node's local value, proposed to the
//! engine with the version it was drafted on (its *base*), and only once the
//! engine has committed it — and assigned its version — is it applied to the
//! local copy and fanned out. Changes committed by other nodes arrive as
//! [`Change`]s naming the version they follow, so a node notices a missed
//! one and catches up ([`CatchUp`]). The store never imports the engine;
//! the engine drives the store through its public methods.

use sodp_proto::{DeltaOp, Value};

use crate::error::Rejection;
use crate::idempotency::{Fingerprint, Tag};
use crate::outbox::SessionId;

/// One committed change of a key, as the engine records and publishes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The key's version before this change (0: never written).
    pub prev: u64,
    pub version: u64,
    pub ops: Vec<DeltaOp>,
    /// The deadline the change set (`Some(0)`: removed; `None`: kept).
    pub expires: Option<u64>,
    /// The value's encoded size after the change, as its writer counted it
    /// (`None`: an entry without it, counted by the receiver).
    pub size: Option<usize>,
}

/// A key as the engine holds it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub version: u64,
    pub initialized: bool,
    pub value: Value,
    pub expires_at: Option<u64>,
    /// Changes still retained, oldest first, including every one after
    /// the version asked about (some before them are missing), for
    /// `state.history`; may start earlier.
    pub later: Vec<Change>,
}

/// Every key below a prefix that has a value, as the engine held them at
/// one version: (key, the key's version, value), in key order.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternSnapshot {
    pub version: u64,
    pub keys: Vec<(String, u64, Value)>,
}

/// What brings a copy of a key from a version up to the engine's.
#[derive(Debug, Clone, PartialEq)]
pub enum CatchUp {
    /// The copy is current.
    Current,
    /// Every change after the copy's version, oldest first.
    Changes(Vec<Change>),
    /// The engine's history does not reach back that far (or the version
    /// was never one of the key's): the key as it is now.
    Image(Image),
}

/// A presence binding a write makes or a release removes, recorded in the
/// engine so that survivors can remove it when this node dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding<'a> {
    None,
    /// `path` is now bound to a session of this node.
    Bind(&'a str, SessionId),
    /// The session releases `path` (only if it still owns it anywhere).
    Unbind(&'a str, SessionId),
    /// A survivor removes `path` for the dead node `node` (only if a
    /// session of that node still owns it).
    Reap(&'a str, &'a str),
}

/// A key's change as drafted by this node, for the engine to commit if the
/// key is still at `base`.
pub struct Proposal<'a> {
    pub key: &'a str,
    pub base: u64,
    pub initialized: bool,
    pub value: &'a Value,
    /// The value's encoded size (the engine is sent the value only when
    /// the ops are not much smaller, or when it asks for it).
    pub size: usize,
    pub ops: &'a [DeltaOp],
    pub expires: Option<u64>,
    pub binding: Binding<'a>,
    /// The deadline the key must still have (an expiry: the key expires
    /// once, whichever node notices first).
    pub expiring_at: Option<u64>,
}

/// An idempotent call's record, committed in the same engine step as its
/// change: the call and how long the engine keeps its outcome.
#[derive(Debug, Clone, Copy)]
pub struct Remember<'a> {
    pub tag: &'a Tag,
    pub window: std::time::Duration,
}

/// The engine's answer to a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed with this version.
    Committed(u64),
    /// An idempotent call whose key some node already committed: that
    /// call's fingerprint and version; nothing was committed.
    Remembered(Fingerprint, u64),
    /// Some key was no longer at its base (another node wrote it first),
    /// or an expiry's deadline had moved: nothing was committed.
    Stale,
    /// A release or reap of a presence path that another session has
    /// taken since: nothing was committed (and nothing needs to be).
    NotOwner,
}

/// What the store needs from a shared engine. Every method may block the
/// calling thread for a round trip (see `cluster::connection::block`).
pub trait Remote: Send + Sync {
    /// Refuses writes while the engine is unreachable (503).
    fn check_writable(&self) -> Result<(), Rejection>;

    /// Commits every proposal as one change with one version — all or
    /// nothing — and `remember`'s record with it (unless the engine already
    /// holds one for that call's key: [`Outcome::Remembered`]).
    fn commit(
        &self,
        proposals: &[Proposal<'_>],
        remember: Option<Remember<'_>>,
    ) -> Result<Outcome, Rejection>;

    /// What brings `key` from version `since` to the engine's version.
    fn catch_up(&self, key: &str, since: u64) -> Result<CatchUp, Rejection>;

    /// This node starts receiving `key`'s changes (counted: one call per
    /// subscriber; confirmed by the engine before it returns).
    fn watch(&self, key: &str) -> Result<(), Rejection>;

    /// One subscriber of `key` fewer.
    fn unwatch(&self, key: &str);

    /// This node starts receiving the changes of every key below
    /// `prefix` (`""`: all keys), counted like [`Remote::watch`].
    fn watch_prefix(&self, prefix: &str) -> Result<(), Rejection>;

    /// One pattern subscriber of `prefix` fewer.
    fn unwatch_prefix(&self, prefix: &str);

    /// Every key below `prefix` with a value, at one version (413 when the
    /// values take more than `limit` bytes).
    fn pattern_snapshot(
        &self,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<PatternSnapshot, Rejection>;

    /// Up to `count` keys holding a value, in byte order, from `from` on.
    fn key_range(
        &self,
        from: std::ops::Bound<&str>,
        count: usize,
    ) -> Result<Vec<String>, Rejection>;

    /// Serialises this node's writes to `key` (held from draft to apply),
    /// so they never race each other: only other nodes' writes can make a
    /// draft stale.
    fn gate(&self, key: &str) -> Gate;

    /// [`Remote::gate`] for several keys at once (a transaction), taken in
    /// one order so that two transactions never wait for each other.
    fn gates(&self, keys: &[String]) -> Vec<Gate>;

    /// A presence release that could not reach the engine: retried once
    /// it is reachable again (else the path would outlive its session for
    /// as long as this node lives).
    fn defer_release(&self, key: &str, path: &str, session: SessionId);

    /// A line for `/health` and the start-up log.
    fn describe(&self) -> String;
}

/// Held while a node writes a key (see [`Remote::gate`]).
pub type Gate = tokio::sync::OwnedMutexGuard<()>;

/// The refusal that makes the session run a CALL again: the key changed
/// on another node since this node's copy (which has been caught up).
pub fn stale(key: &str) -> Rejection {
    let mut r = Rejection::new(
        crate::error::ErrorCode::Unavailable,
        format!("{key}: changed concurrently on another node too often; retry"),
    );
    r.stale = true;
    r
}
