//! `state.set {state, value}`: replace the whole value.

use super::Args;
use crate::error::Rejection;
use crate::store::Mutation;

pub(super) fn parse(args: &mut Args<'_>) -> Result<Mutation, Rejection> {
    Ok(Mutation::Set(args.value("value")?))
}
