//! Cluster mode: committed changes applied to the node's copy of a key in
//! version order, and the copy caught up when a change does not follow it.
//!
//! Every change names the version it follows. [`Store::apply_change`]
//! applies it when that is the copy's version, ignores it when the copy
//! already has it (the writer's own change, a duplicate), and reports a gap
//! otherwise; a gap is healed from the engine's history, or by resetting the
//! copy to the engine's image with one DELTA from the old value to the new.

use sodp_proto::codec::encoded_len;
use sodp_proto::{diff, DeltaOp, OpKind};

use super::remote::{CatchUp, Change, Image, Remote};
use super::{KeySlot, KeyState, Store};
use crate::error::Rejection;
use crate::outbox::FlushScope;

/// How a change from the engine met the node's copy of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// The copy already has it (the writer's own change, or a duplicate).
    Already,
    /// The copy is behind the change's `prev`: catch up.
    Gap,
    /// The node holds no copy of the key.
    NotHeld,
}

impl Store {
    /// A change committed by any node, as the fanout delivers it. `create`:
    /// make a copy of the key if the node holds none (catching up).
    ///
    /// The DELTAs it causes are written straight to the subscribers' sockets
    /// once the key's lock is released (a scope of its own, as a session's
    /// burst has; nested in one, it adds nothing): the fanout's receiver
    /// wakes no subscriber task per change.
    pub fn apply_change(&self, key: &str, change: Change, create: bool) -> Applied {
        let _flush = FlushScope::open(&self.metrics.bytes_out, None);
        let apply = |slot: &KeySlot, st: &mut KeyState| {
            if st.version >= change.version {
                return Applied::Already;
            }
            if st.version != change.prev {
                return Applied::Gap;
            }
            let mut value = st.value.clone();
            let mut initialized = st.initialized;
            for op in &change.ops {
                if sodp_proto::delta::apply_in_place(&mut value, op).is_err() {
                    // Cannot happen for a change that follows the copy; a
                    // fresh image repairs it if it does.
                    return Applied::Gap;
                }
                if op.path == "/" {
                    initialized = op.kind != OpKind::Remove;
                }
            }
            let size = change.size.unwrap_or_else(|| encoded_len(&value));
            self.install(
                slot,
                st,
                value,
                size,
                initialized,
                change.ops,
                change.version,
                change.expires,
            );
            Applied::Applied
        };
        let applied = if create {
            self.with_slot(key, apply).ok()
        } else {
            self.with_existing(key, apply)
        };
        applied.unwrap_or(Applied::NotHeld)
    }

    /// The version of the node's copy of `key` (0: none).
    pub fn local_version(&self, key: &str) -> u64 {
        self.with_existing(key, |_, st| st.version).unwrap_or(0)
    }

    /// Applies what the engine said brings the copy of `key` up to date.
    /// False if it did not fit the copy (it moved meanwhile): ask again.
    pub fn apply_catch_up(&self, key: &str, catch_up: CatchUp) -> bool {
        match catch_up {
            CatchUp::Current => true,
            CatchUp::Changes(changes) => changes
                .into_iter()
                .all(|change| self.apply_change(key, change, true) != Applied::Gap),
            CatchUp::Image(image) => {
                let _ = self.with_slot(key, |slot, st| {
                    if st.version < image.version {
                        self.reset(slot, st, image);
                    }
                });
                true
            }
        }
    }

    /// Brings the copy of `key` up to the engine's version (blocking).
    pub(super) fn catch_up(&self, remote: &dyn Remote, key: &str) -> Result<(), Rejection> {
        for _ in 0..4 {
            let since = self.local_version(key);
            if self.apply_catch_up(key, remote.catch_up(key, since)?) {
                return Ok(());
            }
        }
        // Still moving: the fanout brings the rest.
        Ok(())
    }

    /// Replaces the copy by the engine's image: one DELTA from the old
    /// value to the new at the image's version; history restarts there.
    fn reset(&self, slot: &KeySlot, st: &mut KeyState, image: Image) {
        let ops = match (st.initialized, image.initialized) {
            (true, true) => diff(&st.value, &image.value),
            (false, true) => vec![DeltaOp::add("/", image.value.clone())],
            (true, false) => vec![DeltaOp::remove("/")],
            (false, false) => Vec::new(),
        };
        let expires = (image.expires_at != st.expires_at).then(|| image.expires_at.unwrap_or(0));
        st.history.restart(&self.history, st.version);
        let size = encoded_len(&image.value);
        self.install(
            slot,
            st,
            image.value,
            size,
            image.initialized,
            ops,
            image.version,
            expires,
        );
    }
}
