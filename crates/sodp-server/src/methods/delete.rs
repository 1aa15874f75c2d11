//! `state.delete {state}`: remove the key; watchers get `REMOVE "/"`. The
//! key keeps its slot (its version is the delete's version); deleting a key
//! that holds no value changes nothing and takes no version.

use sodp_proto::Value;

use super::{Args, Context, Method, Reply};
use crate::error::Rejection;
use crate::size;
use crate::store::Edit;

struct Delete {
    key: String,
}

pub(super) fn parse(args: &mut Args<'_>) -> Result<Box<dyn Method>, Rejection> {
    Ok(Box::new(Delete {
        key: args.string("state")?,
    }))
}

impl Method for Delete {
    fn run(self: Box<Self>, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        cx.check_writable(&self.key)?;
        let written = cx.shared.store.write(&self.key, |doc| {
            if !doc.initialized() {
                return Ok(Edit::delete());
            }
            doc.admit(size::after_set(&Value::Nil))?;
            *doc.value_mut() = Value::Nil;
            Ok(Edit::delete())
        })?;
        Ok(Reply::Written(written))
    }
}
