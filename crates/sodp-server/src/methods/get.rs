//! `state.get {state}` (extension `read`): the key's current state, once —
//! `{version, value, initialized}` (never written: version 0, nil, false).

use sodp_proto::Value;

use super::{Args, Context, Method, Reply};
use crate::error::Rejection;

struct Get {
    key: String,
}

pub(super) fn parse(args: &mut Args<'_>) -> Result<Box<dyn Method>, Rejection> {
    Ok(Box::new(Get {
        key: args.string("state")?,
    }))
}

impl Method for Get {
    fn run(self: Box<Self>, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        cx.check_readable(&self.key)?;
        let (snapshot, ticket) = cx.shared.store.read(&self.key);
        let data = Value::map_from([
            ("version", Value::from(snapshot.version)),
            ("value", snapshot.value),
            ("initialized", Value::Bool(snapshot.initialized)),
        ]);
        Ok(Reply::Data { data, ticket })
    }
}
