//! `state.keys {prefix?, after?, limit?}` (extension `read`): a page of the
//! keys that hold a value, `prefix` or below it by whole segments, in byte
//! order, strictly after `after`; only keys the session may read. `next` is
//! present when more may follow (pass it as `after`).

use sodp_proto::Value;

use super::{Args, Context, Method, Reply};
use crate::error::Rejection;
use crate::store::KeysPage;

/// Page size when `limit` is absent, and the most one page holds.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// `{prefix?, after?, limit?}`: the arguments of a page of keys, here and
/// in `admin.keys`.
pub(super) struct KeyQuery {
    prefix: Option<String>,
    after: Option<String>,
    limit: usize,
}

impl KeyQuery {
    /// `limit` defaults to `default` and is capped at `max`.
    pub(super) fn parse(
        args: &mut Args<'_>,
        default: usize,
        max: usize,
    ) -> Result<KeyQuery, Rejection> {
        Ok(KeyQuery {
            prefix: args.opt_string("prefix")?,
            after: args.opt_string("after")?,
            limit: args.limit(default, max)?,
        })
    }

    /// Checks `prefix` (400 naming `method`), then reads the page of keys
    /// the session may read.
    pub(super) fn page(&self, cx: &Context<'_>, method: &str) -> Result<KeysPage, Rejection> {
        if let Some(prefix) = &self.prefix {
            sodp_proto::key::validate_key(prefix, cx.shared.config.limits.max_key_len).map_err(
                |e| Rejection::bad_request(format!("{method}: argument `prefix` {prefix:?}: {e}")),
            )?;
        }
        Ok(cx.shared.store.keys(
            self.prefix.as_deref().unwrap_or(""),
            self.after.as_deref(),
            self.limit,
            |key| cx.may_read(key),
        ))
    }
}

pub(super) struct Keys(KeyQuery);

impl Method for Keys {
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection> {
        KeyQuery::parse(args, DEFAULT_LIMIT, MAX_LIMIT).map(Keys)
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        let page = self.0.page(cx, "state.keys")?;
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
