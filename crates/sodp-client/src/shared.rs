//! What the handles and the connection task share, and the channel between
//! them: [`Shared`] (the subscription table and the published [`Status`]),
//! the [`Command`]s the handles send, and the [`PendingCall`]s among them.
//!
//! Kept apart from `client` (the handles) and `connection` (the task) so
//! that both depend on it and neither on the other's internals.
//!
//! The command channel is the one unbounded queue left, on purpose: its
//! reader is the connection task, which never waits for a user, and each
//! entry stands for a call whose caller is awaiting it (and gives up at the
//! call timeout) or a WATCH/UNWATCH of a watcher being added or removed.
//! Queues towards the user are bounded: see `mailbox`.

use std::sync::{Mutex, MutexGuard};

use sodp_proto::{Frame, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{Error, Result};
use crate::subscriptions::Subscriptions;

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Dialling, authenticating, or waiting to retry.
    Connecting,
    /// Connected and authenticated.
    Connected,
    /// Stopped for good: `None` after [`Client::close`](crate::Client::close),
    /// otherwise the error that ended it (a rejected token, or a failure with
    /// reconnect off).
    Closed(Option<Error>),
}

/// A call waiting to be sent or answered.
pub(crate) struct PendingCall {
    pub method: String,
    pub args: Value,
    /// Extensions the server must advertise for the call to go out; when
    /// one is missing it fails with [`Error::Unsupported`] unsent.
    pub requires: Vec<&'static str>,
    /// The CALL's `idempotency_key`: the caller's, or generated when a write
    /// is first sent to a server advertising `idempotency`. A call with one
    /// is resent (with the same key) after a reconnect instead of failing.
    pub idempotency_key: Option<String>,
    /// Sent on an earlier connection whose RESULT never came.
    pub resent: bool,
    pub reply: oneshot::Sender<Result<Value>>,
}

impl PendingCall {
    pub fn new(method: &str, args: Value, reply: oneshot::Sender<Result<Value>>) -> PendingCall {
        PendingCall {
            method: method.to_owned(),
            args,
            requires: Vec::new(),
            idempotency_key: None,
            resent: false,
            reply,
        }
    }

    /// The caller gave up (timed out or dropped the future).
    pub fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// True when HELLO `capabilities` advertise `name` (as `true`).
pub(crate) fn supports(capabilities: &Value, name: &str) -> bool {
    capabilities
        .get(name)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The methods that get a generated idempotency key. Not `state.presence`:
/// its entry belongs to the session that set it, and that session's end
/// removed it, so replaying the remembered RESULT on a new session would
/// report a presence that is not there.
pub(crate) fn exactly_once(method: &str) -> bool {
    matches!(
        method,
        "state.set" | "state.patch" | "state.set_in" | "state.delete" | "state.transaction"
    )
}

/// What the public API asks of the connection task.
pub(crate) enum Command {
    /// WATCH, UNWATCH or a resync. Dropped while disconnected: the
    /// subscription table already records the intent, and the next connection
    /// resubscribes from it.
    Send(Frame),
    /// Queued while disconnected (at most `max_pending`); when in flight as
    /// the connection drops, resent if it has an idempotency key, else failed.
    Call(PendingCall),
    Close,
}

pub(crate) type CommandSender = mpsc::UnboundedSender<Command>;
pub(crate) type CommandReceiver = mpsc::UnboundedReceiver<Command>;

/// The channel from the handles to the connection task.
pub(crate) fn command_channel() -> (CommandSender, CommandReceiver) {
    mpsc::unbounded_channel()
}

/// State shared between the handles and the connection task.
pub(crate) struct Shared {
    /// A std mutex: it is never held across an `.await`, only for table
    /// updates and non-blocking mailbox pushes.
    pub subs: Mutex<Subscriptions>,
    pub status: watch::Sender<Status>,
    /// HELLO `capabilities` of the latest session (nil before the first).
    pub capabilities: Mutex<Value>,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            subs: Mutex::new(Subscriptions::default()),
            status: watch::channel(Status::Connecting).0,
            capabilities: Mutex::new(Value::Nil),
        }
    }

    /// HELLO `capabilities` of the latest session.
    pub fn capabilities(&self) -> Value {
        self.capabilities
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn subs(&self) -> MutexGuard<'_, Subscriptions> {
        // A panic in a user callback never happens under this lock (callbacks
        // run on their own tasks), so poisoning can only come from a bug
        // here; the table is still consistent enough to keep serving.
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }
}
