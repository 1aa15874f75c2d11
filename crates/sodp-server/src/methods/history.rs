//! `state.history {state, since_version?, limit?}` (extension `read`): the
//! key's retained changes after `since_version`, oldest first, as
//! `{entries: [{version, ops}], complete}`; a client pages by passing the
//! last version it got.

use sodp_proto::Value;

use super::{Args, Context, Method, Reply};
use crate::error::Rejection;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub(super) struct History {
    key: String,
    since: u64,
    limit: usize,
}

impl Method for History {
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection> {
        Ok(History {
            key: args.string("state")?,
            since: args.opt_u64("since_version")?.unwrap_or(0),
            limit: args.limit(DEFAULT_LIMIT, MAX_LIMIT)?,
        })
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        cx.check_readable(&self.key)?;
        let page = cx.shared.store.history(&self.key, self.since, self.limit);
        let entries = page
            .entries
            .into_iter()
            .map(|(version, ops)| {
                Value::map_from([("version", Value::from(version)), ("ops", ops)])
            })
            .collect();
        let data = Value::map_from([
            ("entries", Value::Array(std::sync::Arc::new(entries))),
            ("complete", Value::Bool(page.complete)),
        ]);
        Ok(Reply::Data {
            data,
            ticket: page.ticket,
        })
    }
}
