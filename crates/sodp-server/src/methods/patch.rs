//! `state.patch {state, patch}`: deep merge. Objects merge recursively;
//! arrays, scalars and nil in the patch replace what they land on.

use super::Args;
use crate::error::Rejection;
use crate::store::Mutation;

pub(super) fn parse(args: &mut Args<'_>) -> Result<Mutation, Rejection> {
    Ok(Mutation::Patch(args.map("patch")?))
}
