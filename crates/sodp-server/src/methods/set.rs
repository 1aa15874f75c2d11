//! `state.set {state, value}`: replace the whole value; the ops are the
//! structural diff from the old value.

use sodp_proto::merge::Undo;
use sodp_proto::{diff, Value};

use super::{Args, Context, Method, Reply};
use crate::error::Rejection;
use crate::size;
use crate::store::Edit;

struct Set {
    key: String,
    value: Value,
}

pub(super) fn parse(args: &mut Args<'_>) -> Result<Box<dyn Method>, Rejection> {
    Ok(Box::new(Set {
        key: args.string("state")?,
        value: args.value("value")?,
    }))
}

impl Method for Set {
    fn run(self: Box<Self>, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        let Set { key, value } = *self;
        cx.check_writable(&key)?;
        let written = cx.shared.store.write(&key, |doc| {
            doc.admit(size::after_set(&value))?;
            let ops = diff(doc.value(), &value);
            let previous = std::mem::replace(doc.value_mut(), value);
            Ok(Edit::change(ops, Undo::Root(previous)))
        })?;
        Ok(Reply::Written(written))
    }
}
