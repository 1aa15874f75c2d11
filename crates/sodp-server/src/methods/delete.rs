//! `state.delete {state, if_version?}`: remove the key; watchers get
//! `REMOVE "/"`. The key keeps its slot (its version is the delete's
//! version); deleting a key that holds no value changes nothing and takes no
//! version.

use sodp_proto::Value;

use super::{Args, Context, EditFn, Method, Reply, Target};
use crate::error::Rejection;
use crate::size;
use crate::store::{Doc, Edit};

pub(super) struct Delete {
    target: Target,
}

pub(super) fn parse_op(args: &mut Args<'_>) -> Result<(Target, EditFn), Rejection> {
    Ok((Target::parse(args)?, Box::new(edit)))
}

fn edit(doc: &mut Doc<'_>) -> Result<Edit, Rejection> {
    if !doc.initialized() {
        return Ok(Edit::delete());
    }
    doc.admit(size::after_set(&Value::Nil))?;
    *doc.value_mut() = Value::Nil;
    Ok(Edit::delete())
}

impl Method for Delete {
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection> {
        Ok(Delete {
            target: Target::parse(args)?,
        })
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        let written = self.target.write(cx, edit)?;
        Ok(Reply::Written(written))
    }
}
