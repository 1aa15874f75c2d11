//! `state.set_in {state, path, value}`: set one location by JSON Pointer,
//! creating missing intermediates (`/-` appends, `/N` indexes an array).

use super::Args;
use crate::error::Rejection;
use crate::store::Mutation;

pub(super) fn parse(args: &mut Args<'_>) -> Result<Mutation, Rejection> {
    Ok(Mutation::SetIn {
        path: args.string("path")?,
        value: args.value("value")?,
    })
}
