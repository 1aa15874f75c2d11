//! Where committed changes go besides memory: the seam between the store's
//! commit point and a storage engine.
//!
//! The store calls a [`Storage`] at three moments, all under the key's lock
//! and so in commit order: a change was committed ([`Storage::append_commit`]:
//! one key's change, or every key of a transaction, with the outcome of an
//! idempotent call when there is one — one record, so a crash keeps all of
//! it or none), a presence path was bound or released. Each call returns a [`Ticket`], the
//! position of that record. Frames that must not be seen before the record is
//! durable — the DELTAs of the change, the writer's RESULT, a STATE_INIT or
//! replay showing it — are handed to [`Storage::deliver`] with the ticket;
//! the engine delivers them once the ticket is durable, in ticket order.
//!
//! Engines:
//! - [`Memory`]: nothing is kept; everything is delivered at once.
//! - [`durable::Durable`]: an append-only log of checksummed records in a data
//!   directory, group-committed by one thread, with checkpoints.
//!
//! Cluster mode (Redis) is not a `Storage`: Redis must assign the version
//! and check the base before anything is applied, so it sits in front of the
//! commit point (`store/remote.rs`, `store/clustered.rs`, `cluster/`) and the
//! store keeps the `Memory` engine there.

pub mod durable;
pub mod log;
pub mod record;
pub mod recovery;

use std::sync::Arc;

use bytes::Bytes;
use sodp_proto::DeltaOp;

use crate::error::Rejection;
use crate::idempotency::Tag;
use crate::outbox::Outbox;

/// One key's part of a commit: the ops that turn its previous value into
/// the new one, and its new deadline (Unix ms; `Some(0)`: removed; `None`:
/// unchanged).
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub key: &'a str,
    pub ops: &'a [DeltaOp],
    pub expires: Option<u64>,
}

/// The position of a record in the storage's order; 0 = nothing.
pub type Ticket = u64;

/// A frame (or a RESULT still to be encoded) waiting for its ticket.
pub enum Delivery {
    /// One encoded frame to several sessions (a DELTA to its subscribers).
    Fanout(Vec<Arc<Outbox>>, Bytes),
    /// Several frames per session, each session's back to back (the DELTAs
    /// of one transaction).
    Batch(Vec<(Arc<Outbox>, Vec<Bytes>)>),
    /// One encoded frame to one session (STATE_INIT, a replayed DELTA).
    Frame(Arc<Outbox>, Bytes),
    /// A write's RESULT: success once durable, 500 if the storage failed.
    Result {
        outbox: Arc<Outbox>,
        seq: u64,
        call_id: String,
        version: u64,
    },
    /// A RESULT already encoded (a read showing a change not yet durable):
    /// sent once durable, replaced by 500 if the storage failed.
    Reply {
        outbox: Arc<Outbox>,
        seq: u64,
        call_id: String,
        frame: Bytes,
    },
}

impl Delivery {
    /// Delivers as if the ticket were durable.
    pub fn deliver(self) {
        match self {
            Delivery::Fanout(outboxes, frame) => {
                for outbox in outboxes {
                    outbox.push(frame.clone());
                }
            }
            Delivery::Frame(outbox, frame) => {
                outbox.push(frame);
            }
            Delivery::Batch(batch) => {
                for (outbox, frames) in batch {
                    outbox.push_all(&frames);
                }
            }
            Delivery::Result {
                outbox,
                seq,
                call_id,
                version,
            } => {
                outbox.push(crate::wire::result_version(seq, &call_id, version));
            }
            Delivery::Reply { outbox, frame, .. } => {
                outbox.push(frame);
            }
        }
    }

    /// The storage failed before the ticket became durable: the change was
    /// never acknowledged nor seen; its writer learns 500.
    pub fn fail(self, why: &str) {
        if let Delivery::Result {
            outbox,
            seq,
            call_id,
            ..
        }
        | Delivery::Reply {
            outbox,
            seq,
            call_id,
            ..
        } = self
        {
            let rejection = Rejection::new(
                crate::error::ErrorCode::Internal,
                format!("the write could not be made durable: {why}"),
            );
            outbox.push(crate::wire::result_err(seq, &call_id, &rejection));
        }
    }
}

/// What the store needs from a storage engine.
pub trait Storage: Send + Sync {
    /// Refuses writes once the storage cannot take them (a failed sync, a
    /// backlog past its bound): 500/503, checked before anything changes.
    fn check_writable(&self) -> Result<(), Rejection>;

    /// Records a commit at `version`: its changes (none: an idempotent
    /// call that changed nothing but must be remembered) and, for an
    /// idempotent call, what to remember of it — all as one record.
    fn append_commit(
        &self,
        version: u64,
        changes: &[Change<'_>],
        remembered: Option<&Tag>,
    ) -> Ticket;

    /// Records that `path` of `key` is now bound to a session of this run.
    fn append_bind(&self, key: &str, path: &str) -> Ticket;

    /// Records that the binding of `path` of `key` was released.
    fn append_unbind(&self, key: &str, path: &str) -> Ticket;

    /// Delivers now if `ticket` is durable, else once it is.
    fn deliver(&self, ticket: Ticket, delivery: Delivery);

    /// True when frames up to `ticket` may be delivered at once.
    fn is_visible(&self, ticket: Ticket) -> bool;

    /// A line for `/health` and the start-up log.
    fn describe(&self) -> String;

    /// Writes what is pending and syncs (shutdown).
    fn flush(&self) {}
}

/// No storage: the server keeps its state in memory only.
pub struct Memory;

impl Storage for Memory {
    fn check_writable(&self) -> Result<(), Rejection> {
        Ok(())
    }
    fn append_commit(&self, _: u64, _: &[Change<'_>], _: Option<&Tag>) -> Ticket {
        0
    }
    fn append_bind(&self, _: &str, _: &str) -> Ticket {
        0
    }
    fn append_unbind(&self, _: &str, _: &str) -> Ticket {
        0
    }
    fn deliver(&self, _: Ticket, delivery: Delivery) {
        delivery.deliver();
    }
    fn is_visible(&self, _: Ticket) -> bool {
        true
    }
    fn describe(&self) -> String {
        "memory".into()
    }
}
