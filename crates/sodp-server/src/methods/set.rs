//! `state.set {state, value, if_version?}`: replace the whole value; the ops
//! are the structural diff from the old value.

use sodp_proto::merge::Undo;
use sodp_proto::{diff, Value};

use super::{Args, Context, EditFn, Method, Reply, Target};
use crate::error::Rejection;
use crate::size;
use crate::store::{Doc, Edit};

pub(super) struct Set {
    target: Target,
    value: Value,
}

fn parse_set(args: &mut Args<'_>) -> Result<Set, Rejection> {
    Ok(Set {
        target: Target::parse_with_ttl(args)?,
        value: args.value("value")?,
    })
}

pub(super) fn parse_op(args: &mut Args<'_>) -> Result<(Target, EditFn), Rejection> {
    let Set { target, value } = parse_set(args)?;
    Ok((target, Box::new(move |doc| edit(doc, value))))
}

fn edit(doc: &mut Doc<'_>, value: Value) -> Result<Edit, Rejection> {
    doc.admit(size::after_set(&value))?;
    let ops = diff(doc.value(), &value);
    let previous = std::mem::replace(doc.value_mut(), value);
    Ok(Edit::change(ops, Undo::Root(previous)))
}

impl Method for Set {
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection> {
        parse_set(args)
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        let Set { target, value } = self;
        let written = target.write(cx, |doc| edit(doc, value))?;
        Ok(Reply::Written(written))
    }
}
