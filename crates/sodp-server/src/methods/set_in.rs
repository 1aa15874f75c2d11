//! `state.set_in {state, path, value, if_version?}`: set one location by JSON
//! Pointer, creating missing intermediates (`/-` appends, `/N` indexes an
//! array).

use sodp_proto::merge::{self, Undo};
use sodp_proto::Value;

use super::{check_depth, parse_path, Args, Context, EditFn, Method, Reply, Target};
use crate::error::Rejection;
use crate::size;
use crate::store::{Doc, Edit};

pub(super) struct SetIn {
    target: Target,
    path: String,
    value: Value,
}

fn parse_set_in(args: &mut Args<'_>) -> Result<SetIn, Rejection> {
    Ok(SetIn {
        target: Target::parse_with_ttl(args)?,
        path: args.string("path")?,
        value: args.value("value")?,
    })
}

pub(super) fn parse_op(args: &mut Args<'_>) -> Result<(Target, EditFn), Rejection> {
    let SetIn {
        target,
        path,
        value,
    } = parse_set_in(args)?;
    let segments = parse_path(&path)?;
    Ok((
        target,
        Box::new(move |doc| apply(doc, &path, &segments, value)),
    ))
}

impl Method for SetIn {
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection> {
        parse_set_in(args)
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        let SetIn {
            target,
            path,
            value,
        } = self;
        cx.check_writable(&target.key)?;
        let segments = parse_path(&path)?;
        let written = target.write_checked(cx, |doc| apply(doc, &path, &segments, value))?;
        Ok(Reply::Written(written))
    }
}

/// Sets `path` (already parsed into `segments`) to `value` in place. Checks
/// the depth and admits the exact size first, so a refused write changes
/// nothing. Shared with `state.presence`.
pub(super) fn apply(
    doc: &mut Doc<'_>,
    path: &str,
    segments: &[String],
    value: Value,
) -> Result<Edit, Rejection> {
    check_depth(segments.len(), &value, doc.max_depth())?;
    doc.admit(size::after_set_in(
        doc.size(),
        doc.value(),
        segments,
        &value,
    ))?;
    let first = segments.first().map(String::as_str);
    let undo = doc.undo(|v| Undo::before_change(v, first));
    match merge::set_in_in_place(doc.value_mut(), path, value) {
        Ok(op) => Ok(Edit::change(op.into_iter().collect(), undo)),
        Err(e) => Err(Rejection::bad_request(e.to_string())),
    }
}
