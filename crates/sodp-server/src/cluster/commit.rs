//! The commit path: one `commit.lua` call per mutation (all keys of a
//! transaction in one call), acknowledged only once Redis has run it.
//!
//! The script checks that every key is still at the version this node
//! drafted on (else `stale`: the node catches up and redrafts), checks a
//! presence release's ownership and an expiry's deadline, assigns the
//! version — the persisted counter + 1, and at least Redis's clock in
//! microseconds when the counter is missing or the node was cut off since
//! its last commit — stores each value, appends each history entry (bounded)
//! and publishes it on the key's channel.
//!
//! A small change to a large value does not ship the value: Redis keeps an
//! image and the ops since (readers apply them), and the script asks for
//! the value (`needvalue`, nothing changed) once the ops since the image
//! outweigh it or the history could trim one of them; the call is then
//! made again with every value. An idempotent call's record is
//! checked first and written in the same step, so a node dying right after
//! the commit cannot leave a change without its record.

use redis::Script;
use sodp_proto::codec::encode_value;

use super::entry::{decimal, encode_deadline, encode_ops};
use super::names::Names;
use crate::store::remote::{Binding, Outcome, Proposal, Remember};

/// The script (loaded once per Redis by SHA; re-sent after a restart).
pub fn script() -> Script {
    Script::new(include_str!("commit.lua"))
}

/// One commit to make: the proposals (all or nothing), an idempotent
/// call's record, whether the node was cut off since its last commit (the
/// version then takes Redis's clock as its floor), and whether every value
/// must be shipped (the script asked for them).
#[derive(Clone, Copy)]
pub struct Call<'c, 'p> {
    pub proposals: &'c [Proposal<'p>],
    pub remember: Option<Remember<'c>>,
    pub refloor: bool,
    pub every_value: bool,
}

/// Builds the script call for `call`, made by `node`.
pub fn invocation<'s>(
    script: &'s Script,
    names: &Names,
    node: &str,
    history_len: usize,
    call: Call<'_, '_>,
) -> redis::ScriptInvocation<'s> {
    let Call {
        proposals,
        remember,
        refloor,
        every_value,
    } = call;
    let mut inv = script.prepare_invoke();
    let registry = proposals
        .iter()
        .find_map(|p| match p.binding {
            Binding::Reap(_, dead) => Some(names.registry(dead.trim_end_matches(':'))),
            _ => None,
        })
        .unwrap_or_else(|| names.registry(node));
    inv.key(names.version())
        .key(registry)
        .key(names.keys())
        .key(names.deadlines());
    inv.arg(proposals.len())
        .arg(history_len.max(1))
        .arg(names.channel_prefix())
        .arg(if refloor { "1" } else { "0" });
    match remember {
        Some(Remember { tag, window }) => inv
            .arg(format!("{} {}", tag.fingerprint.0, tag.fingerprint.1))
            .arg(window.as_millis().max(1) as u64),
        None => inv.arg("").arg(0),
    };
    for p in proposals {
        inv.key(names.hash(p.key))
            .key(names.history(p.key))
            .key(names.owners(p.key));
        let binding = match p.binding {
            Binding::None => String::new(),
            Binding::Bind(path, session) => format!("+{node}:{session}\n{path}"),
            Binding::Unbind(path, session) => format!("-{node}:{session}\n{path}"),
            Binding::Reap(path, dead) => format!("~{dead}\n{path}"),
        };
        let ops = encode_ops(p.ops);
        let value = match every_value || ships_value(p.size, ops.len()) {
            true => encode_value(p.value),
            false => Vec::new(),
        };
        inv.arg(p.key)
            .arg(p.base)
            .arg(if p.initialized { "1" } else { "0" })
            .arg(value)
            .arg(encode_deadline(p.expires))
            .arg(ops)
            .arg(binding)
            .arg(p.expiring_at.map(|at| at.to_string()).unwrap_or_default())
            .arg(p.size);
    }
    if let Some(Remember { tag, .. }) = remember {
        inv.key(names.idempotency(tag.identity.as_deref(), &tag.key));
    }
    inv
}

/// Whether a change sends its whole value along: unless its ops are under
/// a quarter of it (a small change to a large value).
fn ships_value(value_bytes: usize, ops_bytes: usize) -> bool {
    ops_bytes.saturating_mul(4) >= value_bytes
}

/// An idempotency record: the fingerprint and the version answered
/// (`"<a> <b> <version>"`).
pub fn parse_record(raw: &[u8]) -> Option<(crate::idempotency::Fingerprint, u64)> {
    let mut fields = std::str::from_utf8(raw)
        .ok()?
        .split(' ')
        .map(str::parse::<u64>);
    match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(version)), None) => Some(((a, b), version)),
        _ => None,
    }
}

/// Reads the script's answer; `None`: call again with every value.
pub fn outcome(reply: &[Vec<u8>]) -> Result<Option<Outcome>, String> {
    match reply.first().map(Vec::as_slice) {
        Some(b"needvalue") => Ok(None),
        other => known_outcome(other, reply).map(Some),
    }
}

fn known_outcome(first: Option<&[u8]>, reply: &[Vec<u8>]) -> Result<Outcome, String> {
    match first {
        Some(b"ok") => reply
            .get(1)
            .and_then(|v| decimal(v))
            .map(Outcome::Committed)
            .ok_or_else(|| "commit.lua: no version in its answer".to_owned()),
        Some(b"seen") => reply
            .get(1)
            .and_then(|raw| parse_record(raw))
            .map(|(print, version)| Outcome::Remembered(print, version))
            .ok_or_else(|| format!("commit.lua: a malformed idempotency record {reply:?}")),
        Some(b"stale") => Ok(Outcome::Stale),
        Some(b"notowner") => Ok(Outcome::NotOwner),
        _ => Err(format!("commit.lua: unexpected answer {reply:?}")),
    }
}
