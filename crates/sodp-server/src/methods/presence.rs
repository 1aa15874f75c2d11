//! `state.presence {state, path, value}`: `set_in`, and bind the path to the
//! calling session. When the session ends, for any reason, the store removes
//! the path — unless a newer session has bound it since.

use super::Args;
use crate::error::Rejection;
use crate::outbox::SessionId;
use crate::store::Mutation;

pub(super) fn parse(args: &mut Args<'_>, session: SessionId) -> Result<Mutation, Rejection> {
    Ok(Mutation::Presence {
        path: args.string("path")?,
        value: args.value("value")?,
        session,
    })
}
