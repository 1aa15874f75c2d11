//! `admin.session {id}` → one live session in full: the `admin.sessions`
//! fields plus the keys (and patterns) it watches, the presence paths it
//! holds per key, and its queue capacity. Lists are capped at
//! [`MAX_LISTED`] entries (`truncated: true` then). An id that is not live
//! is 404.

use serde_json::{json, Map as JsonMap, Value as Json};

use super::{data, no_session, session_id, summary, Args, Context, Method, Reply};
use crate::error::Rejection;

/// Most watched keys, and presence paths, listed.
pub const MAX_LISTED: usize = 1000;

pub(in crate::methods) struct Session {
    id: u64,
}

impl Method for Session {
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection> {
        Ok(Session {
            id: session_id(args)?,
        })
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        let info = cx
            .shared
            .sessions
            .get(self.id)
            .ok_or_else(|| no_session("admin.session", self.id))?;
        let mut out = summary(&info);
        let (watched, presence, truncated) = {
            let held = info.held();
            let mut watched: Vec<&String> = held.watched.iter().collect();
            watched.sort();
            let truncated = watched.len() > MAX_LISTED || held.presence_count > MAX_LISTED;
            watched.truncate(MAX_LISTED);
            let mut keys: Vec<_> = held.presence.iter().collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            let mut presence = JsonMap::new();
            let mut listed = 0;
            for (key, paths) in keys {
                let mut paths: Vec<&String> = paths.iter().collect();
                paths.sort();
                paths.truncate(MAX_LISTED - listed);
                listed += paths.len();
                presence.insert(key.clone(), json!(paths));
                if listed >= MAX_LISTED {
                    break;
                }
            }
            (json!(watched), Json::Object(presence), truncated)
        };
        out["watched"] = watched;
        out["presence_paths"] = presence;
        out["queue_capacity"] = json!(info.outbox.capacity());
        out["truncated"] = json!(truncated);
        data(out)
    }
}
