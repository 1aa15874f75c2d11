//! The CALL methods. Each file owns one method whole: parsing its `args`,
//! the checks it needs (key, ACL), and what it does under the key lock —
//! the new value, the exact size it will have, and the ops it produces.
//! Adding a method means adding a file and a row in [`METHODS`].

mod admin;
mod delete;
mod get;
mod history;
mod keys;
mod patch;
mod presence;
mod set;
mod set_in;
mod transaction;

use sodp_auth::{Access, Identity};
use sodp_proto::call::CallArgs;
use sodp_proto::{pointer, Map, Value};

use crate::access::Asker;
use crate::error::{ErrorCode, Rejection};
use crate::holdings::Holdings;
use crate::idempotency::Tag;
use crate::outbox::SessionId;
use crate::shared::Shared;
use crate::storage::Ticket;
use crate::store::{Deadline, Doc, Edit, Written};

/// What a successful CALL answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `data: {version}` — every write; sent once its ticket is durable.
    Written(Written),
    /// `data` of a read, sent once the storage `ticket` of the newest
    /// change it shows is durable.
    Data { data: Value, ticket: Ticket },
}

/// A CALL method: how its `args` are parsed, and what it then does.
pub trait Method: Sized {
    /// Takes the arguments out of `args` (moved, not copied).
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection>;

    /// Runs the parsed call on behalf of the session in `cx`.
    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection>;
}

/// One row of [`METHODS`]: a method's name and its parse-then-run,
/// dispatched statically (nothing is boxed per call).
pub struct Entry {
    pub name: &'static str,
    call: fn(&mut Args<'_>, &mut Context<'_>) -> Result<Reply, Rejection>,
    #[cfg(test)]
    parse_only: fn(&mut Args<'_>) -> Result<(), Rejection>,
}

const fn entry<M: Method>(name: &'static str) -> Entry {
    Entry {
        name,
        call: parse_and_run::<M>,
        #[cfg(test)]
        parse_only: |args| M::parse(args).map(drop),
    }
}

fn parse_and_run<M: Method>(args: &mut Args<'_>, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
    M::parse(args)?.run(cx)
}

/// Every method this server implements.
pub const METHODS: &[Entry] = &[
    entry::<set::Set>("state.set"),
    entry::<patch::Patch>("state.patch"),
    entry::<set_in::SetIn>("state.set_in"),
    entry::<delete::Delete>("state.delete"),
    entry::<presence::Presence>("state.presence"),
    entry::<get::Get>("state.get"),
    entry::<keys::Keys>("state.keys"),
    entry::<history::History>("state.history"),
    entry::<transaction::Transaction>("state.transaction"),
    entry::<admin::Sessions>("admin.sessions"),
    entry::<admin::Session>("admin.session"),
    entry::<admin::Disconnect>("admin.disconnect"),
    entry::<admin::Stats>("admin.stats"),
    entry::<admin::Writers>("admin.writers"),
    entry::<admin::Keys>("admin.keys"),
];

/// The method names, for messages and HELLO.
pub fn names() -> impl Iterator<Item = &'static str> {
    METHODS.iter().map(|entry| entry.name)
}

/// The row of `method`; unknown methods are 404.
fn lookup(method: &str) -> Result<&'static Entry, Rejection> {
    METHODS
        .iter()
        .find(|entry| entry.name == method)
        .ok_or_else(|| {
            Rejection::new(
                ErrorCode::NotFound,
                format!(
                    "unknown method {method:?}; known: {}",
                    names().collect::<Vec<_>>().join(", ")
                ),
            )
        })
}

/// Parses `method`'s `args`, taking ownership so that values and patches
/// move into the method instead of being copied, and runs it.
pub fn call(method: &str, args: CallArgs<'_>, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
    let entry = lookup(method)?;
    (entry.call)(&mut Args::new(method, args)?, cx)
}

/// Only parses (for the tests of the parsers).
#[cfg(test)]
fn parse(method: &str, args: CallArgs<'_>) -> Result<(), Rejection> {
    let entry = lookup(method)?;
    (entry.parse_only)(&mut Args::new(method, args)?)
}

/// What a method may see and touch of the server and of the calling
/// session.
pub struct Context<'a> {
    pub shared: &'a Shared,
    pub session: SessionId,
    pub identity: &'a Identity,
    pub holdings: &'a mut Holdings,
    /// Set for an idempotent call: what the commit must make durable with
    /// the change (extension `idempotency`).
    pub tag: Option<&'a Tag>,
}

impl Context<'_> {
    fn asker(&self) -> Asker<'_> {
        Asker {
            shared: self.shared,
            session: self.session,
            identity: self.identity,
        }
    }

    /// Checks that `key` is well-formed and that this session may write it.
    pub fn check_writable(&self, key: &str) -> Result<(), Rejection> {
        self.asker().check(key, Access::Write)
    }

    /// Whether the ACL lets this session read `key` (a key already known
    /// to be well-formed; a denial is logged, never revealed).
    pub fn may_read(&self, key: &str) -> bool {
        self.asker().allows(key, Access::Read)
    }

    /// Checks that `key` is well-formed and that this session may read it.
    pub fn check_readable(&self, key: &str) -> Result<(), Rejection> {
        self.asker().check(key, Access::Read)
    }
}

/// What a write targets: its key, the version it requires the key to be
/// at (extension `conditional`: `if_version`, 0 = "has no value"), and the
/// key's new time to live (extension `ttl`: `ttl_ms`, 0 = none).
pub struct Target {
    pub key: String,
    pub if_version: Option<u64>,
    pub ttl_ms: Option<u64>,
}

impl Target {
    /// A write that cannot set a deadline (`ttl_ms` there is 400).
    fn parse(args: &mut Args<'_>) -> Result<Target, Rejection> {
        if args.has("ttl_ms") {
            return Err(Rejection::bad_request(format!(
                "{}: argument `ttl_ms` is not accepted here (only set, patch and set_in)",
                args.method
            )));
        }
        Ok(Target {
            key: args.string("state")?,
            if_version: args.opt_u64("if_version")?,
            ttl_ms: None,
        })
    }

    /// A write that may set a deadline (`state.set`, `patch`, `set_in`).
    fn parse_with_ttl(args: &mut Args<'_>) -> Result<Target, Rejection> {
        let ttl_ms = args.opt_u64("ttl_ms")?;
        Ok(Target {
            ttl_ms,
            ..Target::parse(args)?
        })
    }

    /// The deadline change `ttl_ms` asks for, as of now.
    pub fn deadline(&self, shared: &Shared) -> Result<Option<Deadline>, Rejection> {
        match self.ttl_ms {
            None => Ok(None),
            Some(0) => Ok(Some(Deadline::Clear)),
            Some(ms) => {
                let now = shared.clock.since_epoch().as_millis() as u64;
                Ok(Some(Deadline::At(now.saturating_add(ms))))
            }
        }
    }

    /// Checks the key and the ACL, then runs `edit` under the key lock once
    /// the condition holds (a failed one is 409 and changes nothing).
    fn write(
        &self,
        cx: &Context<'_>,
        edit: impl FnOnce(&mut Doc<'_>) -> Result<Edit, Rejection>,
    ) -> Result<Written, Rejection> {
        cx.check_writable(&self.key)?;
        self.write_checked(cx, edit)
    }

    /// [`Target::write`] for a caller that has checked the key and ACL.
    fn write_checked(
        &self,
        cx: &Context<'_>,
        edit: impl FnOnce(&mut Doc<'_>) -> Result<Edit, Rejection>,
    ) -> Result<Written, Rejection> {
        let if_version = self.if_version;
        let deadline = self.deadline(cx.shared)?;
        cx.shared.store.write_tagged(&self.key, cx.tag, |doc| {
            doc.require(if_version)?;
            edit(doc).map(|edit| edit.with_deadline(deadline))
        })
    }
}

/// A write's change, to run under its key's lock (a transaction op).
pub type EditFn = crate::store::EditFn<'static>;

type ParseOp = fn(&mut Args<'_>) -> Result<(Target, EditFn), Rejection>;

/// The methods a transaction may contain, with their op parsers.
const TX_METHODS: &[(&str, ParseOp)] = &[
    ("state.set", set::parse_op),
    ("state.patch", patch::parse_op),
    ("state.set_in", set_in::parse_op),
    ("state.delete", delete::parse_op),
];

/// A JSON Pointer argument, parsed, and its normalised form.
fn parse_path(path: &str) -> Result<Vec<String>, Rejection> {
    pointer::parse(path).map_err(|e| Rejection::bad_request(e.to_string()))
}

/// Refuses a value that would nest deeper than the limit once placed at
/// `path_depth` levels below the root.
fn check_depth(path_depth: usize, value: &Value, max_depth: usize) -> Result<(), Rejection> {
    if path_depth + value.depth() > max_depth {
        return Err(Rejection::bad_request(format!(
            "path and value together nest deeper than the limit of {max_depth}"
        )));
    }
    Ok(())
}

/// Typed access to a CALL's `args`, with errors naming the method. Each
/// argument is taken out (moved, not cloned); the handful of fields is
/// searched linearly, which beats hashing at this size.
pub struct Args<'a> {
    method: &'a str,
    fields: Vec<(&'a str, Value)>,
}

impl<'a> Args<'a> {
    fn new(method: &'a str, args: CallArgs<'a>) -> Result<Args<'a>, Rejection> {
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

    /// Whether `name` is present.
    fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|(n, _)| *n == name)
    }

    /// An optional unsigned integer argument (absent: `None`; present and
    /// not an integer ≥ 0: 400 naming it).
    fn opt_u64(&mut self, name: &str) -> Result<Option<u64>, Rejection> {
        if !self.has(name) {
            return Ok(None);
        }
        let value = self.value(name)?;
        value.as_u64().map(Some).ok_or_else(|| {
            Rejection::bad_request(format!(
                "{}: argument `{name}` must be an integer ≥ 0",
                self.method
            ))
        })
    }

    /// An optional string argument.
    fn opt_string(&mut self, name: &str) -> Result<Option<String>, Rejection> {
        if !self.has(name) {
            return Ok(None);
        }
        self.string(name).map(Some)
    }

    /// An optional `limit`: at least 1 (else 400), `max` at most.
    fn limit(&mut self, default: usize, max: usize) -> Result<usize, Rejection> {
        match self.opt_u64("limit")? {
            None => Ok(default),
            Some(0) => Err(Rejection::bad_request(format!(
                "{}: argument `limit` must be at least 1",
                self.method
            ))),
            Some(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX).min(max)),
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
            assert!(parse(method, args(a)).is_ok(), "{method}");
        }
    }

    #[test]
    fn rejections_name_the_problem() {
        let e = parse("state.nope", args(json!({}))).err().unwrap();
        assert_eq!(e.code, ErrorCode::NotFound);
        let e = parse("state.set", args(json!({"state": "k"})))
            .err()
            .unwrap();
        assert_eq!(e.message, "state.set: missing argument `value`");
        let e = parse("state.patch", args(json!({"state": "k", "patch": [1]})))
            .err()
            .unwrap();
        assert_eq!(e.message, "state.patch: argument `patch` must be a map");
        let e = parse("state.set", args(json!({"state": 5, "value": 1})))
            .err()
            .unwrap();
        assert_eq!(e.message, "state.set: argument `state` must be a string");
        let e = parse("state.set", CallArgs::NotAMap).err().unwrap();
        assert_eq!(e.code, ErrorCode::BadRequest);
    }
}
