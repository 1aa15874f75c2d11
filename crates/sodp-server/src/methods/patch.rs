//! `state.patch {state, patch}`: deep merge. Objects merge recursively;
//! arrays, scalars and nil in the patch replace what they land on. The merge
//! happens in place and emits one op per leaf it changes, so one field of a
//! 10,000-entry map costs one field.

use sodp_proto::merge::{self, Undo};
use sodp_proto::Map;

use super::{Args, Context, Method, Reply};
use crate::error::Rejection;
use crate::size;
use crate::store::Edit;

struct Patch {
    key: String,
    patch: Map,
}

pub(super) fn parse(args: &mut Args<'_>) -> Result<Box<dyn Method>, Rejection> {
    Ok(Box::new(Patch {
        key: args.string("state")?,
        patch: args.map("patch")?,
    }))
}

impl Method for Patch {
    fn run(self: Box<Self>, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        let Patch { key, patch } = *self;
        cx.check_writable(&key)?;
        let written = cx.shared.store.write(&key, |doc| {
            doc.admit(size::after_patch(doc.size(), doc.value(), &patch))?;
            let undo = doc.undo(|v| Undo::before_patch(v, &patch));
            let ops = merge::merge_patch_in_place(doc.value_mut(), &patch);
            Ok(Edit::change(ops, undo))
        })?;
        Ok(Reply::Written(written))
    }
}
