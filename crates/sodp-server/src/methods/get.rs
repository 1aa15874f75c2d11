//! `state.get {state}` (extension `read`): the key's current state, once —
//! `{version, value, initialized}` (never written: version 0, nil, false).

use sodp_proto::Value;

use super::{Args, Context, Method, Reply};
use crate::error::Rejection;

pub(super) struct Get {
    key: String,
}

impl Method for Get {
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection> {
        Ok(Get {
            key: args.string("state")?,
        })
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
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
