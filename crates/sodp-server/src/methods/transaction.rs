//! `state.transaction {ops: [{method, args}, ...]}` (extension
//! `transaction`): 1 to 64 `state.set` / `state.patch` / `state.set_in` /
//! `state.delete` ops on any keys, applied all or nothing with one version
//! (see `Store::write_many`). Each op is parsed by its own method's parser,
//! so its arguments, limits and messages are those of the method; the ACL
//! is checked for every key before anything is locked.

use std::sync::Arc;

use sodp_proto::{Map, Value};

use super::{Args, Context, EditFn, Method, Reply, Target, TX_METHODS};
use crate::error::Rejection;
use crate::store::TxOp;

/// The most ops one transaction may hold.
pub const MAX_OPS: usize = 64;

const NAME: &str = "state.transaction";

pub(super) struct Transaction {
    ops: Vec<(Target, EditFn)>,
}

fn bad(i: usize, message: impl std::fmt::Display) -> Rejection {
    Rejection::bad_request(format!("{NAME}: ops[{i}]: {message}")).at_op(i)
}

/// Parses op `i`, `{method, args}`, with its method's own parser.
fn parse_one(i: usize, entry: Value) -> Result<(Target, EditFn), Rejection> {
    let Some(mut entry) = entry.into_map() else {
        return Err(bad(i, "must be a map {method, args}"));
    };
    let method = match entry.get("method") {
        Some(Value::Str(m)) => m.clone(),
        Some(_) => return Err(bad(i, "`method` must be a string")),
        None => return Err(bad(i, "missing `method`")),
    };
    let Some((_, parse)) = TX_METHODS.iter().find(|(name, _)| *name == method) else {
        let allowed: Vec<_> = TX_METHODS.iter().map(|(name, _)| *name).collect();
        return Err(bad(
            i,
            format!(
                "method {method:?} cannot be part of a transaction (allowed: {})",
                allowed.join(", ")
            ),
        ));
    };
    let args: Map = match entry.shift_remove("args") {
        Some(Value::Map(args)) => Arc::try_unwrap(args).unwrap_or_else(|a| (*a).clone()),
        _ => return Err(bad(i, "`args` must be a map")),
    };
    let (names, values): (Vec<String>, Vec<Value>) = args.into_iter().unzip();
    let label = format!("{NAME}: ops[{i}]: {method}");
    let mut args = Args {
        method: &label,
        fields: names.iter().map(String::as_str).zip(values).collect(),
    };
    parse(&mut args).map_err(|mut refusal| {
        // Argument errors name the op already; others (a bad path) get it.
        if !refusal.message.starts_with(&label) {
            refusal.message = format!("{label}: {}", refusal.message);
        }
        refusal.at_op(i)
    })
}

impl Method for Transaction {
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection> {
        let ops = match args.value("ops")? {
            Value::Array(ops) => Arc::try_unwrap(ops).unwrap_or_else(|a| (*a).clone()),
            _ => {
                return Err(Rejection::bad_request(format!(
                    "{NAME}: argument `ops` must be an array"
                )))
            }
        };
        if ops.is_empty() || ops.len() > MAX_OPS {
            return Err(Rejection::bad_request(format!(
                "{NAME}: argument `ops` must hold 1 to {MAX_OPS} ops, not {}",
                ops.len()
            )));
        }
        let ops = ops
            .into_iter()
            .enumerate()
            .map(|(i, entry)| parse_one(i, entry))
            .collect::<Result<_, _>>()?;
        Ok(Transaction { ops })
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        for (i, (target, _)) in self.ops.iter().enumerate() {
            cx.check_writable(&target.key).map_err(|refusal| {
                let mut refusal = refusal.at_op(i);
                refusal.message = format!("ops[{i}]: {}", refusal.message);
                refusal
            })?;
        }
        let mut ops = Vec::with_capacity(self.ops.len());
        for (i, (target, edit)) in self.ops.into_iter().enumerate() {
            let deadline = target.deadline(cx.shared).map_err(|r| r.at_op(i))?;
            let edit: EditFn = match deadline {
                None => edit,
                Some(_) => Box::new(move |doc| edit(doc).map(|e| e.with_deadline(deadline))),
            };
            ops.push(TxOp {
                key: target.key,
                if_version: target.if_version,
                edit,
            });
        }
        let written = cx.shared.store.write_many_tagged(ops, cx.tag)?;
        Ok(Reply::Written(written))
    }
}
