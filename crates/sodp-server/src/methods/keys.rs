//! `state.keys {prefix?, after?, limit?}` (extension `read`): a page of the
//! keys that hold a value, `prefix` or below it by whole segments, in byte
//! order, strictly after `after`; only keys the session may read. `next` is
//! present when more may follow (pass it as `after`).

use sodp_proto::Value;

use super::{Args, Context, Method, Reply};
use crate::error::Rejection;

/// Page size when `limit` is absent, and the most one page holds.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub(super) struct Keys {
    prefix: Option<String>,
    after: Option<String>,
    limit: usize,
}

impl Method for Keys {
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection> {
        Ok(Keys {
            prefix: args.opt_string("prefix")?,
            after: args.opt_string("after")?,
            limit: args.limit(DEFAULT_LIMIT, MAX_LIMIT)?,
        })
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        let max_key_len = cx.shared.config.limits.max_key_len;
        if let Some(prefix) = &self.prefix {
            sodp_proto::key::validate_key(prefix, max_key_len).map_err(|e| {
                Rejection::bad_request(format!("state.keys: argument `prefix` {prefix:?}: {e}"))
            })?;
        }
        let page = cx.shared.store.keys(
            self.prefix.as_deref().unwrap_or(""),
            self.after.as_deref(),
            self.limit,
            |key| cx.may_read(key),
        );
        let keys = Value::Array(std::sync::Arc::new(
            page.keys.into_iter().map(Value::from).collect(),
        ));
        let mut data = sodp_proto::Map::default();
        data.insert("keys".into(), keys);
        if let Some(next) = page.next {
            data.insert("next".into(), Value::from(next));
        }
        Ok(Reply::Data {
            data: Value::from(data),
            ticket: page.ticket,
        })
    }
}
