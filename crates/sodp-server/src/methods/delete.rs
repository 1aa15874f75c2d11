//! `state.delete {state}`: remove the key; watchers get `REMOVE "/"`.

use super::Args;
use crate::error::Rejection;
use crate::store::Mutation;

pub(super) fn parse(_args: &mut Args<'_>) -> Result<Mutation, Rejection> {
    Ok(Mutation::Delete)
}
