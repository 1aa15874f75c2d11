//! `state.delete {state}`: remove the key; watchers get `REMOVE "/"`.

use super::Args;
use crate::error::Rejection;
use crate::store::Mutation;

pub(super) fn parse(_args: &Args<'_>) -> Result<Mutation, Rejection> {
    Ok(Mutation::Delete)
}
