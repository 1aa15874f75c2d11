//! `state.set_in {state, path, value}`: set one location by JSON Pointer,
//! creating missing intermediates (`/-` appends, `/N` indexes an array).

use sodp_proto::merge::{self, Undo};
use sodp_proto::Value;

use super::{check_depth, parse_path, Args, Context, Method, Reply};
use crate::error::Rejection;
use crate::size;
use crate::store::{Doc, Edit};

struct SetIn {
    key: String,
    path: String,
    value: Value,
}

pub(super) fn parse(args: &mut Args<'_>) -> Result<Box<dyn Method>, Rejection> {
    Ok(Box::new(SetIn {
        key: args.string("state")?,
        path: args.string("path")?,
        value: args.value("value")?,
    }))
}

impl Method for SetIn {
    fn run(self: Box<Self>, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        let SetIn { key, path, value } = *self;
        cx.check_writable(&key)?;
        let segments = parse_path(&path)?;
        let written = cx
            .shared
            .store
            .write(&key, |doc| apply(doc, &path, &segments, value))?;
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
