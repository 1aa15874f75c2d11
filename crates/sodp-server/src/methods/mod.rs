//! The CALL methods: each file parses one method's `args` into a
//! [`Mutation`]; the store applies it. Adding a method means adding a file
//! and a line in [`parse`].

mod delete;
mod patch;
mod presence;
mod set;
mod set_in;

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

/// Parses `method` and its `args`. Unknown methods are 404.
pub fn parse(method: &str, args: &Value, session: SessionId) -> Result<Call, Rejection> {
    let args = Args::new(method, args)?;
    let key = args.str("state")?.to_owned();
    let mutation = match method {
        "state.set" => set::parse(&args)?,
        "state.patch" => patch::parse(&args)?,
        "state.set_in" => set_in::parse(&args)?,
        "state.delete" => delete::parse(&args)?,
        "state.presence" => presence::parse(&args, session)?,
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

/// Typed access to a CALL's `args` map, with errors naming the method.
struct Args<'a> {
    method: &'a str,
    map: &'a Map,
}

impl<'a> Args<'a> {
    fn new(method: &'a str, args: &'a Value) -> Result<Args<'a>, Rejection> {
        if !METHODS.contains(&method) {
            return Err(Rejection::new(
                ErrorCode::NotFound,
                format!("unknown method {method:?}; known: {}", METHODS.join(", ")),
            ));
        }
        let map = args
            .as_map()
            .ok_or_else(|| Rejection::bad_request(format!("{method}: `args` must be a map")))?;
        Ok(Args { method, map })
    }

    fn value(&self, name: &str) -> Result<&'a Value, Rejection> {
        self.map.get(name).ok_or_else(|| {
            Rejection::bad_request(format!("{}: missing argument `{name}`", self.method))
        })
    }

    fn str(&self, name: &str) -> Result<&'a str, Rejection> {
        self.value(name)?.as_str().ok_or_else(|| {
            Rejection::bad_request(format!(
                "{}: argument `{name}` must be a string",
                self.method
            ))
        })
    }

    fn map(&self, name: &str) -> Result<&'a Map, Rejection> {
        self.value(name)?.as_map().ok_or_else(|| {
            Rejection::bad_request(format!("{}: argument `{name}` must be a map", self.method))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(j: serde_json::Value) -> Value {
        j.into()
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
            let call = parse(method, &args(a), 1).unwrap();
            assert_eq!(call.key, "k");
        }
    }

    #[test]
    fn rejections_name_the_problem() {
        let e = parse("state.nope", &args(json!({})), 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        let e = parse("state.set", &args(json!({"state": "k"})), 1).unwrap_err();
        assert_eq!(e.message, "state.set: missing argument `value`");
        let e = parse("state.patch", &args(json!({"state": "k", "patch": [1]})), 1).unwrap_err();
        assert_eq!(e.message, "state.patch: argument `patch` must be a map");
        let e = parse("state.set", &args(json!({"state": 5, "value": 1})), 1).unwrap_err();
        assert_eq!(e.message, "state.set: argument `state` must be a string");
        let e = parse("state.set", &Value::Int(1), 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
    }
}
