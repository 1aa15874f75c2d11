//! `admin.disconnect {id}` → `{id, disconnected: true}`: ends a live
//! session as any other close would — what it had queued is sent, then a
//! WebSocket close (1008, "disconnected by an administrator"); its
//! subscriptions end and its presence paths are removed (versioned changes
//! every watcher sees). An id that is not live is 404. Its client may
//! reconnect: this is not a ban.

use serde_json::json;

use super::{data, no_session, session_id, Args, Context, Method, Reply};
use crate::error::Rejection;
use crate::outbox::Close;

pub(in crate::methods) struct Disconnect {
    id: u64,
}

impl Method for Disconnect {
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection> {
        Ok(Disconnect {
            id: session_id(args)?,
        })
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        let info = cx
            .shared
            .sessions
            .get(self.id)
            .ok_or_else(|| no_session("admin.disconnect", self.id))?;
        info.outbox.close(Close::DISCONNECTED);
        tracing::info!(
            session = self.id,
            by = cx.session,
            "session disconnected by an administrator"
        );
        data(json!({"id": self.id, "disconnected": true}))
    }
}
