//! `state.patch {state, patch, if_version?}`: deep merge. Objects merge
//! recursively; arrays, scalars and nil in the patch replace what they land
//! on. The merge happens in place and emits one op per leaf it changes, so
//! one field of a 10,000-entry map costs one field.

use sodp_proto::merge::{self, Undo};
use sodp_proto::Map;

use super::{Args, Context, EditFn, Method, Reply, Target};
use crate::error::Rejection;
use crate::size;
use crate::store::{Doc, Edit};

pub(super) struct Patch {
    target: Target,
    patch: Map,
}

fn parse_patch(args: &mut Args<'_>) -> Result<Patch, Rejection> {
    Ok(Patch {
        target: Target::parse_with_ttl(args)?,
        patch: args.map("patch")?,
    })
}

pub(super) fn parse_op(args: &mut Args<'_>) -> Result<(Target, EditFn), Rejection> {
    let Patch { target, patch } = parse_patch(args)?;
    Ok((target, Box::new(move |doc| edit(doc, &patch))))
}

fn edit(doc: &mut Doc<'_>, patch: &Map) -> Result<Edit, Rejection> {
    doc.admit(size::after_patch(doc.size(), doc.value(), patch))?;
    let undo = doc.undo(|v| Undo::before_patch(v, patch));
    let ops = merge::merge_patch_in_place(doc.value_mut(), patch);
    Ok(Edit::change(ops, undo))
}

impl Method for Patch {
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection> {
        parse_patch(args)
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        let Patch { target, patch } = self;
        let written = target.write(cx, |doc| edit(doc, &patch))?;
        Ok(Reply::Written(written))
    }
}
