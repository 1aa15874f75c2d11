//! The `admin.*` methods: what an administrator may ask that an ordinary
//! client cannot (see `crate::admin` for who that is). Each file owns one
//! method. Every one is wrapped in [`AdminOnly`], which checks the
//! permission *before* the parsed arguments are looked at: a
//! non-administrator gets the same 403 for any method and any arguments,
//! and so learns nothing (not even whether a session id exists).

pub(super) mod disconnect;
pub(super) mod keys;
pub(super) mod session;
pub(super) mod sessions;
pub(super) mod stats;
pub(super) mod writers;

use serde_json::{json, Value as Json};
use sodp_proto::Value;

use super::{Args, Context, Method, Reply};
use crate::error::{ErrorCode, Rejection};
use crate::registry::SessionInfo;

/// A parsed admin method, or why its arguments were refused — revealed
/// only to an administrator.
pub(super) struct AdminOnly<M>(Result<M, Rejection>);

impl<M: Method> Method for AdminOnly<M> {
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection> {
        Ok(AdminOnly(M::parse(args)))
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        crate::admin::require_admin(cx.shared, cx.holdings.info(), cx.identity)?;
        self.0?.run(cx)
    }
}

pub(super) type Sessions = AdminOnly<sessions::Sessions>;
pub(super) type Session = AdminOnly<session::Session>;
pub(super) type Disconnect = AdminOnly<disconnect::Disconnect>;
pub(super) type Stats = AdminOnly<stats::Stats>;
pub(super) type Writers = AdminOnly<writers::Writers>;
pub(super) type Keys = AdminOnly<keys::Keys>;

/// An admin method's answer (not hot: built through JSON for clarity).
fn data(json: Json) -> Result<Reply, Rejection> {
    data_at(json, 0)
}

/// An answer that shows changes up to storage `ticket` (it leaves once
/// they are durable, like any read's).
fn data_at(json: Json, ticket: crate::storage::Ticket) -> Result<Reply, Rejection> {
    Ok(Reply::Data {
        data: Value::from(json),
        ticket,
    })
}

/// The required `id` argument: a session id.
fn session_id(args: &mut Args<'_>) -> Result<u64, Rejection> {
    args.opt_u64("id")?
        .ok_or_else(|| Rejection::bad_request(format!("{}: missing argument `id`", args.method)))
}

/// 404 for a session id that is not live.
fn no_session(method: &str, id: u64) -> Rejection {
    Rejection::new(
        ErrorCode::NotFound,
        format!("{method}: no live session {id}"),
    )
}

/// What `admin.sessions` lists per session (and `admin.session` extends).
fn summary(info: &SessionInfo) -> Json {
    let (watching, presence) = {
        let held = info.held();
        (held.watched.len(), held.presence_count)
    };
    json!({
        "id": info.id,
        "subject": info.subject().as_deref(),
        "remote": info.peer.map(|p| p.to_string()),
        "connected_at": info.connected_at_ms,
        "inspector": info.inspector,
        "watching": watching,
        "presence": presence,
        "queue": info.outbox.len(),
        "calls": info.calls(),
        "rate_limited": info.rate_limited(),
    })
}
