//! `admin.sessions {after?, limit?}` → `{sessions: [...], next?}`: the live
//! sessions in id order, each with its subject, remote address, start
//! time, counts of watched keys and presence paths, outbound queue depth,
//! CALLs and rate-limit refusals. `next` (pass it as `after`) when more
//! follow.

use serde_json::json;

use super::{data, summary, Args, Context, Method, Reply};
use crate::error::Rejection;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub(in crate::methods) struct Sessions {
    after: u64,
    limit: usize,
}

impl Method for Sessions {
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection> {
        Ok(Sessions {
            after: args.opt_u64("after")?.unwrap_or(0),
            limit: args.limit(DEFAULT_LIMIT, MAX_LIMIT)?,
        })
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        let (page, more) = cx.shared.sessions.page(self.after, self.limit);
        let mut out = json!({
            "sessions": page.iter().map(|s| summary(s)).collect::<Vec<_>>(),
            "total": cx.shared.connections(),
        });
        if let (true, Some(last)) = (more, page.last()) {
            out["next"] = json!(last.id);
        }
        data(out)
    }
}
