//! The CALL methods: each file parses one method's `args` into a
//! [`Mutation`]; the store applies it. Adding a method means adding a file
//! and a line in [`parse`].

mod delete;
mod patch;
mod presence;
mod set;
mod set_in;

use sodp_proto::call::CallArgs;
use sodp_proto::{Map, Value};

use crate::error::{ErrorCode, Rejection};
use crate::outbox::SessionId;
use crate::store::Mutation;

/// A parsed CALL: which key it writes and how.
#[derive(Debug)]
pub struct Call {
    pub key: String,
    pub mutation: Mutation,
}

/// Parses `method` and its `args`, taking ownership so that values and
/// patches move into the mutation instead of being copied. Unknown methods
/// are 404.
pub fn parse(method: &str, args: CallArgs<'_>, session: SessionId) -> Result<Call, Rejection> {
    let mut args = Args::new(method, args)?;
    let key = args.string("state")?;
    let mutation = match method {
        "state.set" => set::parse(&mut args)?,
        "state.patch" => patch::parse(&mut args)?,
        "state.set_in" => set_in::parse(&mut args)?,
        "state.delete" => delete::parse(&mut args)?,
        "state.presence" => presence::parse(&mut args, session)?,
        _ => unreachable!("Args::new rejects unknown methods"),
    };
    Ok(Call { key, mutation })
}

/// The methods this server implements.
pub const METHODS: [&str; 5] = [
    "state.set",
    "state.patch",
    "state.set_in",
    "state.delete",
    "state.presence",
];

/// Typed access to a CALL's `args`, with errors naming the method. Each
/// argument is taken out (moved, not cloned); the handful of fields is
/// searched linearly, which beats hashing at this size.
struct Args<'a> {
    method: &'a str,
    fields: Vec<(&'a str, Value)>,
}

impl<'a> Args<'a> {
    fn new(method: &'a str, args: CallArgs<'a>) -> Result<Args<'a>, Rejection> {
        if !METHODS.contains(&method) {
            return Err(Rejection::new(
                ErrorCode::NotFound,
                format!("unknown method {method:?}; known: {}", METHODS.join(", ")),
            ));
        }
        match args {
            CallArgs::Fields(fields) => Ok(Args { method, fields }),
            CallArgs::Absent | CallArgs::NotAMap => Err(Rejection::bad_request(format!(
                "{method}: `args` must be a map"
            ))),
        }
    }

    fn value(&mut self, name: &str) -> Result<Value, Rejection> {
        // The last occurrence wins, as when a map is decoded.
        match self.fields.iter().rposition(|(n, _)| *n == name) {
            Some(i) => Ok(self.fields.swap_remove(i).1),
            None => Err(Rejection::bad_request(format!(
                "{}: missing argument `{name}`",
                self.method
            ))),
        }
    }

    fn string(&mut self, name: &str) -> Result<String, Rejection> {
        self.value(name)?.into_string().ok_or_else(|| {
            Rejection::bad_request(format!(
                "{}: argument `{name}` must be a string",
                self.method
            ))
        })
    }

    fn map(&mut self, name: &str) -> Result<Map, Rejection> {
        self.value(name)?.into_map().ok_or_else(|| {
            Rejection::bad_request(format!("{}: argument `{name}` must be a map", self.method))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(j: serde_json::Value) -> CallArgs<'static> {
        match Value::from(j) {
            Value::Map(m) => CallArgs::Fields(
                m.iter()
                    .map(|(k, v)| (&*Box::leak(k.clone().into_boxed_str()), v.clone()))
                    .collect(),
            ),
            _ => CallArgs::NotAMap,
        }
    }

    #[test]
    fn parses_each_method() {
        for (method, a) in [
            ("state.set", json!({"state": "k", "value": 1})),
            ("state.patch", json!({"state": "k", "patch": {"a": 1}})),
            (
                "state.set_in",
                json!({"state": "k", "path": "/a", "value": 1}),
            ),
            ("state.delete", json!({"state": "k"})),
            (
                "state.presence",
                json!({"state": "k", "path": "/a", "value": 1}),
            ),
        ] {
            let call = parse(method, args(a), 1).unwrap();
            assert_eq!(call.key, "k");
        }
    }

    #[test]
    fn rejections_name_the_problem() {
        let e = parse("state.nope", args(json!({})), 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        let e = parse("state.set", args(json!({"state": "k"})), 1).unwrap_err();
        assert_eq!(e.message, "state.set: missing argument `value`");
        let e = parse("state.patch", args(json!({"state": "k", "patch": [1]})), 1).unwrap_err();
        assert_eq!(e.message, "state.patch: argument `patch` must be a map");
        let e = parse("state.set", args(json!({"state": 5, "value": 1})), 1).unwrap_err();
        assert_eq!(e.message, "state.set: argument `state` must be a string");
        let e = parse("state.set", CallArgs::NotAMap, 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
    }
}
