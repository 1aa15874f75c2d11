//! A change as the cluster records and publishes it: one history entry,
//! the same bytes in the key's history list and on its channel.
//!
//! `<prev> <version> <deadline> <size> <ops>`: four decimal fields (the
//! deadline `-` when kept, `0` when removed, else Unix ms; the value's
//! encoded size after the change, so receivers need not walk the value to
//! count it) and the ops as a MessagePack array. Built by `commit.lua`
//! (which assigns the version), so the text header is what Lua can write
//! without a MessagePack library. Entries of earlier builds have no size
//! (a MessagePack array never starts with an ASCII digit, so the two forms
//! are told apart).

use sodp_proto::codec::{decode_value, encode_value};
use sodp_proto::{DeltaOp, Value};

use crate::store::remote::Change;

/// Deepest nesting accepted when reading back ops and values (they were
/// written by nodes that checked the configured limit; this only keeps a
/// damaged entry from recursing without bound).
pub const MAX_DEPTH: usize = 1024;

/// Why an entry could not be read (a damaged or foreign entry: the key is
/// then caught up from its image instead).
#[derive(Debug, thiserror::Error)]
#[error("malformed cluster entry: {0}")]
pub struct EntryError(&'static str);

/// The ops of a change, as the entry carries them.
pub fn encode_ops(ops: &[DeltaOp]) -> Vec<u8> {
    encode_value(&Value::Array(std::sync::Arc::new(
        ops.iter().map(DeltaOp::to_value).collect(),
    )))
}

/// The deadline field of an entry (and of `commit.lua`'s arguments).
pub fn encode_deadline(expires: Option<u64>) -> String {
    match expires {
        None => "-".into(),
        Some(at) => at.to_string(),
    }
}

/// Reads an entry back.
pub fn parse(entry: &[u8]) -> Result<Change, EntryError> {
    let mut fields = entry.splitn(4, |b| *b == b' ');
    let mut number =
        |what: &'static str| -> Result<&[u8], EntryError> { fields.next().ok_or(EntryError(what)) };
    let prev = decimal(number("prev")?).ok_or(EntryError("prev"))?;
    let version = decimal(number("version")?).ok_or(EntryError("version"))?;
    let deadline = number("deadline")?;
    let expires = match deadline {
        b"-" => None,
        d => Some(decimal(d).ok_or(EntryError("deadline"))?),
    };
    let rest = fields.next().ok_or(EntryError("ops"))?;
    let (size, ops) = match rest.first() {
        Some(b'0'..=b'9') => {
            let space = rest
                .iter()
                .position(|b| *b == b' ')
                .ok_or(EntryError("size"))?;
            let size = decimal(&rest[..space]).ok_or(EntryError("size"))?;
            (Some(size as usize), &rest[space + 1..])
        }
        _ => (None, rest),
    };
    let ops = decode_value(ops, MAX_DEPTH).map_err(|_| EntryError("ops"))?;
    let ops = DeltaOp::list_from_value(&ops).map_err(|_| EntryError("ops"))?;
    Ok(Change {
        prev,
        version,
        ops,
        expires,
        size,
    })
}

/// A decimal number as Redis and Lua write it.
pub fn decimal(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back() {
        let ops = vec![DeltaOp::add("/a", Value::Int(1)), DeltaOp::remove("/b")];
        let mut entry = b"5 9 - ".to_vec();
        entry.extend(encode_ops(&ops));
        let change = parse(&entry).unwrap();
        assert_eq!((change.prev, change.version, change.expires), (5, 9, None));
        assert_eq!(change.ops, ops);
        let mut entry = b"0 1 0 ".to_vec();
        entry.extend(encode_ops(&[]));
        assert_eq!(parse(&entry).unwrap().expires, Some(0));
        let mut sized = b"5 9 - 42 ".to_vec();
        sized.extend(encode_ops(&ops));
        let change = parse(&sized).unwrap();
        assert_eq!((change.size, change.ops), (Some(42), ops));
        assert_eq!(parse(&entry).unwrap().size, None);
        assert!(parse(b"1 2 - 42").is_err());
        assert!(parse(b"1 2 - 4x \x90").is_err());
        assert!(parse(b"1 x - \x90").is_err());
        assert!(parse(b"1 2 -").is_err());
        assert!(parse(b"1 2 - \xc1").is_err());
    }
}
