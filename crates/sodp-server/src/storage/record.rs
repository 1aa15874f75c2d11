//! The records the durable engine writes, and their MessagePack form.
//!
//! Log segments hold [`LogRecord`]s in commit order; checkpoints hold one
//! [`KeyImage`] per key and an end marker. Every record is an array whose
//! first element says what it is, so the format can grow new kinds. Ops
//! are stored compact (`[code, path, value]`, see [`write_op`]); the wire's
//! `{op, path, value}` maps of records written before that still read. So
//! are idempotency tags ([`write_tag`]); their first, longer form still reads.

use sodp_proto::codec::{write_array_len, write_bin, write_str, write_uint};
use sodp_proto::{DeltaOp, OpKind, Value};

use crate::idempotency::{Remembered, Tag};

/// One key's part of a [`LogRecord::Commit`].
#[derive(Debug, Clone, PartialEq)]
pub struct KeyChange {
    pub key: String,
    pub ops: Vec<DeltaOp>,
    /// The key's new deadline (Unix ms; 0 = removed); `None` = unchanged.
    pub expires: Option<u64>,
}

/// One entry of a log segment.
#[derive(Debug, Clone, PartialEq)]
pub enum LogRecord {
    /// A committed change: the ops that turn the key's previous value into
    /// its new one (`ADD "/"` for a first write, `REMOVE "/"` for a delete).
    Change {
        version: u64,
        key: String,
        ops: Vec<DeltaOp>,
        /// The key's new deadline (Unix ms; 0 = removed); `None` = unchanged.
        expires: Option<u64>,
    },
    /// A presence path bound by a session (of this run).
    Bind { key: String, path: String },
    /// A presence path released by its session.
    Unbind { key: String, path: String },
    /// Versions up to this one may be handed out: the next run starts above.
    Ceiling(u64),
    /// Several changes with one version (a transaction), and/or the outcome
    /// of an idempotent call made durable with them: all or nothing.
    Commit {
        version: u64,
        changes: Vec<KeyChange>,
        remembered: Option<Tag>,
    },
}

/// A key as a checkpoint holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyImage {
    pub key: String,
    pub version: u64,
    pub initialized: bool,
    pub value: Value,
    /// The RESUME window: the key's last changes, oldest first.
    pub history: Vec<(u64, Vec<DeltaOp>)>,
    /// Presence paths bound when the checkpoint was taken.
    pub binds: Vec<String>,
    /// The key's deadline (Unix ms), if it has one.
    pub expires_at: Option<u64>,
    /// The newest version of the key no longer in `history` (0: nothing
    /// was dropped): a RESUME from below it cannot be replayed. `None` in
    /// checkpoints written before it was recorded.
    pub history_floor: Option<u64>,
}

/// One entry of a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckpointRecord {
    Key(KeyImage),
    /// An idempotent call still remembered.
    Remembered(Remembered),
    /// Written last: a checkpoint without it is incomplete.
    End {
        ceiling: u64,
        keys: u64,
    },
}

pub const CHANGE: i64 = 1;
const BIND: i64 = 2;
const UNBIND: i64 = 3;
const CEILING: i64 = 4;
pub const COMMIT: i64 = 5;
const KEY: i64 = 10;
const END: i64 = 11;
const REMEMBERED: i64 = 12;

/// `[identity or nil, idempotency key, fingerprint (16 bytes), at (Unix
/// seconds, rounded up)]`, 20 bytes less than the first form (below) for a
/// Python client's key. A key of lowercase hex digits (even in number, as
/// Python's client makes them) is stored as the bytes it spells, half its
/// length; any other key as its string, so reading is unambiguous. The time
/// is rounded up so that a remembered outcome is never forgotten early after a
/// restart (it may be kept up to a second longer).
///
/// Still read: the first form, `[identity or nil, key, fingerprint (2 × u64),
/// at_ms]`, five elements where this one has four.
pub fn write_tag(buf: &mut Vec<u8>, tag: &Tag) {
    write_array_len(buf, 4);
    match &tag.identity {
        Some(identity) => write_str(buf, identity),
        None => buf.push(0xc0),
    }
    match hex_bytes(&tag.key) {
        Some(bytes) => write_bin(buf, &bytes),
        None => write_str(buf, &tag.key),
    }
    write_bin(buf, &fingerprint_bytes(tag.fingerprint));
    write_uint(buf, tag.at_ms.div_ceil(1000));
}

/// The tag as a `Value` (for records and checkpoints built as values):
/// what [`write_tag`] writes, read back, so the two forms cannot differ.
fn tag_value(tag: &Tag) -> Value {
    let mut buf = Vec::with_capacity(64);
    write_tag(&mut buf, tag);
    sodp_proto::codec::decode_value(&buf, 2).expect("write_tag writes one flat array")
}

fn tag_from(v: &Value) -> Option<Tag> {
    let items = v.as_array()?;
    let identity = match items.first()? {
        Value::Nil => None,
        other => Some(other.as_str()?.to_owned()),
    };
    let u = |i: usize| items.get(i).and_then(Value::as_u64);
    let (key, fingerprint, at_ms) = match items.len() {
        4 => {
            let key = match items.get(1)? {
                Value::Bin(bytes) if !bytes.is_empty() => hex_string(bytes),
                other => other.as_str()?.to_owned(),
            };
            let fingerprint = match items.get(2)? {
                Value::Bin(bytes) => fingerprint_from(bytes)?,
                _ => return None,
            };
            (key, fingerprint, u(3)?.checked_mul(1000)?)
        }
        5 => (items.get(1)?.as_str()?.to_owned(), (u(2)?, u(3)?), u(4)?),
        _ => return None,
    };
    Some(Tag {
        identity,
        key,
        fingerprint,
        at_ms,
    })
}

/// The bytes a key of lowercase hex digits spells (`None` for any other key,
/// and for the empty one, so that the string round-trips exactly).
fn hex_bytes(key: &str) -> Option<Vec<u8>> {
    let digits = key.as_bytes();
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    digits
        .chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

fn hex_string(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

fn fingerprint_bytes((high, low): (u64, u64)) -> [u8; 16] {
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&high.to_be_bytes());
    bytes[8..].copy_from_slice(&low.to_be_bytes());
    bytes
}

fn fingerprint_from(bytes: &[u8]) -> Option<(u64, u64)> {
    let (high, low) = bytes.split_at_checked(8)?;
    Some((
        u64::from_be_bytes(high.try_into().ok()?),
        u64::from_be_bytes(low.try_into().ok()?),
    ))
}

/// A deadline field: absent = unchanged.
fn expires_from(v: Option<&Value>) -> Option<Option<u64>> {
    match v {
        None => Some(None),
        Some(v) => Some(Some(v.as_u64()?)),
    }
}

/// The codes of the compact op form (see [`write_op`]).
const OP_ADD: i64 = 0;
const OP_UPDATE: i64 = 1;
const OP_REMOVE: i64 = 2;

fn op_code(kind: OpKind) -> i64 {
    match kind {
        OpKind::Add => OP_ADD,
        OpKind::Update => OP_UPDATE,
        OpKind::Remove => OP_REMOVE,
    }
}

/// Writes one op as the log and checkpoints hold it: `[code, path, value]`
/// (`[2, path]` for REMOVE; codes ADD 0, UPDATE 1, REMOVE 2) — 20 bytes less
/// per op than the wire's `{op, path, value}` map. Records written before
/// this form hold the map, which still reads ([`ops_from`]).
pub fn write_op(buf: &mut Vec<u8>, op: &DeltaOp) {
    write_array_len(buf, if op.value.is_some() { 3 } else { 2 });
    sodp_proto::codec::write_int(buf, op_code(op.kind));
    write_str(buf, &op.path);
    if let Some(v) = &op.value {
        sodp_proto::codec::write_value(buf, v);
    }
}

fn op_value(op: &DeltaOp) -> Value {
    let mut items = vec![Value::Int(op_code(op.kind)), Value::from(op.path.as_str())];
    items.extend(op.value.clone());
    list(items)
}

fn ops_value(ops: &[DeltaOp]) -> Value {
    list(ops.iter().map(op_value).collect())
}

/// One op in either form: compact (`[code, path, value]`) or the wire's map.
pub(crate) fn op_from(v: &Value) -> Option<DeltaOp> {
    let Some(items) = v.as_array() else {
        return DeltaOp::from_value(v).ok();
    };
    let path = items.get(1)?.as_str()?.to_owned();
    let kind = match (items.first()?.as_i64()?, items.len()) {
        (OP_ADD, 3) => OpKind::Add,
        (OP_UPDATE, 3) => OpKind::Update,
        (OP_REMOVE, 2) => OpKind::Remove,
        _ => return None,
    };
    Some(DeltaOp {
        kind,
        path,
        value: items.get(2).cloned(),
    })
}

fn ops_from(v: &Value) -> Option<Vec<DeltaOp>> {
    v.as_array()?.iter().map(op_from).collect()
}

fn list(items: Vec<Value>) -> Value {
    Value::from(items)
}

impl LogRecord {
    pub fn to_value(&self) -> Value {
        match self {
            LogRecord::Change {
                version,
                key,
                ops,
                expires,
            } => {
                let mut items = vec![
                    Value::Int(CHANGE),
                    Value::from(*version),
                    Value::from(key.as_str()),
                    ops_value(ops),
                ];
                items.extend(expires.map(Value::from));
                list(items)
            }
            LogRecord::Bind { key, path } => list(vec![
                Value::Int(BIND),
                Value::from(key.as_str()),
                Value::from(path.as_str()),
            ]),
            LogRecord::Unbind { key, path } => list(vec![
                Value::Int(UNBIND),
                Value::from(key.as_str()),
                Value::from(path.as_str()),
            ]),
            LogRecord::Ceiling(v) => list(vec![Value::Int(CEILING), Value::from(*v)]),
            LogRecord::Commit {
                version,
                changes,
                remembered,
            } => list(vec![
                Value::Int(COMMIT),
                Value::from(*version),
                list(
                    changes
                        .iter()
                        .map(|c| {
                            let mut items = vec![Value::from(c.key.as_str()), ops_value(&c.ops)];
                            items.extend(c.expires.map(Value::from));
                            list(items)
                        })
                        .collect(),
                ),
                remembered.as_ref().map_or(Value::Nil, tag_value),
            ]),
        }
    }

    pub fn from_value(v: &Value) -> Option<LogRecord> {
        let items = v.as_array()?;
        let s = |i: usize| items.get(i).and_then(Value::as_str).map(str::to_owned);
        let u = |i: usize| items.get(i).and_then(Value::as_u64);
        Some(match items.first()?.as_i64()? {
            CHANGE => LogRecord::Change {
                version: u(1)?,
                key: s(2)?,
                ops: ops_from(items.get(3)?)?,
                expires: expires_from(items.get(4))?,
            },
            COMMIT => LogRecord::Commit {
                version: u(1)?,
                changes: items
                    .get(2)?
                    .as_array()?
                    .iter()
                    .map(|c| {
                        let c = c.as_array()?;
                        Some(KeyChange {
                            key: c.first()?.as_str()?.to_owned(),
                            ops: ops_from(c.get(1)?)?,
                            expires: expires_from(c.get(2))?,
                        })
                    })
                    .collect::<Option<Vec<_>>>()?,
                remembered: match items.get(3)? {
                    Value::Nil => None,
                    tag => Some(tag_from(tag)?),
                },
            },
            BIND => LogRecord::Bind {
                key: s(1)?,
                path: s(2)?,
            },
            UNBIND => LogRecord::Unbind {
                key: s(1)?,
                path: s(2)?,
            },
            CEILING => LogRecord::Ceiling(u(1)?),
            _ => return None,
        })
    }
}

impl CheckpointRecord {
    pub fn to_value(&self) -> Value {
        match self {
            CheckpointRecord::Key(k) => {
                let mut items = vec![
                    Value::Int(KEY),
                    Value::from(k.key.as_str()),
                    Value::from(k.version),
                    Value::Bool(k.initialized),
                    k.value.clone(),
                    list(
                        k.history
                            .iter()
                            .map(|(v, ops)| list(vec![Value::from(*v), ops_value(ops)]))
                            .collect(),
                    ),
                    list(k.binds.iter().map(|p| Value::from(p.as_str())).collect()),
                ];
                items.push(k.expires_at.map_or(Value::Nil, Value::from));
                items.extend(k.history_floor.map(Value::from));
                list(items)
            }
            CheckpointRecord::Remembered(r) => list(vec![
                Value::Int(REMEMBERED),
                tag_value(&r.tag),
                Value::from(r.version),
            ]),
            CheckpointRecord::End { ceiling, keys } => list(vec![
                Value::Int(END),
                Value::from(*ceiling),
                Value::from(*keys),
            ]),
        }
    }

    pub fn from_value(v: &Value) -> Option<CheckpointRecord> {
        let items = v.as_array()?;
        let u = |i: usize| items.get(i).and_then(Value::as_u64);
        Some(match items.first()?.as_i64()? {
            KEY => {
                let history = items
                    .get(5)?
                    .as_array()?
                    .iter()
                    .map(|entry| {
                        let pair = entry.as_array()?;
                        let version = pair.first()?.as_u64()?;
                        let ops = ops_from(pair.get(1)?)?;
                        Some((version, ops))
                    })
                    .collect::<Option<Vec<_>>>()?;
                let binds = items
                    .get(6)?
                    .as_array()?
                    .iter()
                    .map(|p| p.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()?;
                CheckpointRecord::Key(KeyImage {
                    key: items.get(1)?.as_str()?.to_owned(),
                    version: u(2)?,
                    initialized: items.get(3)?.as_bool()?,
                    value: items.get(4)?.clone(),
                    history,
                    binds,
                    expires_at: match items.get(7) {
                        None | Some(Value::Nil) => None,
                        Some(v) => Some(v.as_u64()?),
                    },
                    history_floor: match items.get(8) {
                        None => None,
                        Some(v) => Some(v.as_u64()?),
                    },
                })
            }
            END => CheckpointRecord::End {
                ceiling: u(1)?,
                keys: u(2)?,
            },
            REMEMBERED => CheckpointRecord::Remembered(Remembered {
                tag: tag_from(items.get(1)?)?,
                version: u(2)?,
            }),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let logs = [
            LogRecord::Change {
                version: 9,
                key: "k".into(),
                ops: vec![DeltaOp::add("/", Value::Int(1)), DeltaOp::remove("/a")],
                expires: None,
            },
            LogRecord::Change {
                version: 10,
                key: "k".into(),
                ops: vec![DeltaOp::update("/", Value::Int(2))],
                expires: Some(1_800_000_000_000),
            },
            LogRecord::Bind {
                key: "k".into(),
                path: "/me".into(),
            },
            LogRecord::Unbind {
                key: "k".into(),
                path: "/me".into(),
            },
            LogRecord::Ceiling(u64::MAX),
            LogRecord::Commit {
                version: 11,
                changes: vec![
                    KeyChange {
                        key: "a".into(),
                        ops: vec![DeltaOp::add("/", Value::Int(1))],
                        expires: None,
                    },
                    KeyChange {
                        key: "b".into(),
                        ops: vec![DeltaOp::remove("/")],
                        expires: Some(0),
                    },
                ],
                remembered: Some(tag()),
            },
            LogRecord::Commit {
                version: 12,
                changes: vec![],
                remembered: None,
            },
        ];
        for r in logs {
            assert_eq!(LogRecord::from_value(&r.to_value()), Some(r));
        }
        let image = CheckpointRecord::Key(KeyImage {
            key: "k".into(),
            version: 3,
            initialized: true,
            value: Value::from("v"),
            history: vec![(3, vec![DeltaOp::update("/", Value::from("v"))])],
            binds: vec!["/me".into()],
            expires_at: Some(1_800_000_000_000),
            history_floor: Some(2),
        });
        let bare = CheckpointRecord::Key(KeyImage {
            key: "k".into(),
            version: 3,
            initialized: false,
            value: Value::Nil,
            history: vec![],
            binds: vec![],
            expires_at: None,
            history_floor: None,
        });
        assert_eq!(CheckpointRecord::from_value(&bare.to_value()), Some(bare));
        assert_eq!(CheckpointRecord::from_value(&image.to_value()), Some(image));
        let remembered = CheckpointRecord::Remembered(Remembered {
            tag: tag(),
            version: 4,
        });
        assert_eq!(
            CheckpointRecord::from_value(&remembered.to_value()),
            Some(remembered)
        );
        let anonymous = CheckpointRecord::Remembered(Remembered {
            tag: Tag {
                identity: None,
                ..tag()
            },
            version: 4,
        });
        assert_eq!(
            CheckpointRecord::from_value(&anonymous.to_value()),
            Some(anonymous)
        );
    }

    fn tag() -> Tag {
        Tag {
            identity: Some("alice".into()),
            key: "retry-1".into(),
            fingerprint: (u64::MAX, 3),
            at_ms: 1_800_000_000_000,
        }
    }

    /// Ops read in both forms: the compact one written now, and the wire's
    /// map that records written before it hold; anything else is refused.
    #[test]
    fn ops_read_in_the_compact_form_and_the_old_map_form() {
        let ops = vec![
            DeltaOp::add("/a", Value::Int(1)),
            DeltaOp::update("/b", Value::Nil),
            DeltaOp::remove("/c"),
        ];
        let old = Value::from(ops.iter().map(DeltaOp::to_value).collect::<Vec<_>>());
        assert_eq!(ops_from(&old), Some(ops.clone()));
        assert_eq!(ops_from(&ops_value(&ops)), Some(ops.clone()));
        // A pre-compact record, as an older server wrote it, still recovers.
        let record = Value::from(vec![
            Value::Int(CHANGE),
            Value::from(7u64),
            Value::from("k"),
            old,
        ]);
        assert_eq!(
            LogRecord::from_value(&record),
            Some(LogRecord::Change {
                version: 7,
                key: "k".into(),
                ops: ops.clone(),
                expires: None,
            })
        );
        // The engine's direct encoding is the same compact form.
        let mut buf = Vec::new();
        write_array_len(&mut buf, ops.len());
        for op in &ops {
            write_op(&mut buf, op);
        }
        let direct = sodp_proto::codec::decode_value(&buf, 8).unwrap();
        assert_eq!(
            direct,
            ops_value(&ops),
            "the two writers of the form differ"
        );
        assert_eq!(ops_from(&direct), Some(ops));
        // Shorter than the map form: 20 bytes for an UPDATE of a short path.
        let one = DeltaOp::update("/f00001", Value::UInt(256));
        let (mut compact, mut map) = (Vec::new(), Vec::new());
        write_op(&mut compact, &one);
        one.write(&mut map);
        assert_eq!(map.len() - compact.len(), 20);
        let bad = |items: Vec<Value>| Value::from(vec![Value::from(items)]);
        for wrong in [
            bad(vec![
                Value::Int(OP_REMOVE),
                Value::from("/a"),
                Value::Int(1),
            ]), // REMOVE with a value
            bad(vec![Value::Int(OP_ADD), Value::from("/a")]), // ADD without one
            bad(vec![Value::Int(3), Value::from("/a"), Value::Int(1)]), // unknown code
            bad(vec![Value::Int(OP_ADD), Value::Int(5), Value::Int(1)]), // path not a string
            Value::from("not a list"),
        ] {
            assert_eq!(ops_from(&wrong), None, "{wrong:?}");
        }
    }

    /// A commit record that is not what the engine writes is not a record
    /// (recovery then reports corruption, or skips it when salvaging).
    #[test]
    fn malformed_commit_records_are_refused() {
        let good = LogRecord::Commit {
            version: 11,
            changes: vec![],
            remembered: Some(tag()),
        }
        .to_value();
        let items: Vec<Value> = good.as_array().unwrap().to_vec();
        let with = |i: usize, v: Value| {
            let mut items = items.clone();
            items[i] = v;
            Value::from(items)
        };
        for bad in [
            with(1, Value::from("eleven")),            // version not a number
            with(2, Value::from("not a list")),        // changes not a list
            with(2, Value::from(vec![Value::Int(1)])), // a change not a list
            with(3, Value::from(vec![Value::Nil])),    // a tag too short
            Value::from(items[..3].to_vec()),          // no tag field at all
        ] {
            assert_eq!(LogRecord::from_value(&bad), None, "{bad:?}");
        }
    }

    /// A tag is written compact — a hex key as its bytes, the fingerprint as
    /// 16 bytes, the time in seconds rounded up — and the first form, five
    /// elements with the time in ms, still reads.
    #[test]
    fn tags_are_stored_compact_and_the_first_form_still_reads() {
        let python_key = "0123456789abcdef0123456789abcdef";
        let tag = Tag {
            identity: None,
            key: python_key.into(),
            fingerprint: (u64::MAX - 1, 1 << 63),
            at_ms: 1_800_000_000_001,
        };
        let mut buf = Vec::new();
        write_tag(&mut buf, &tag);
        let value = sodp_proto::codec::decode_value(&buf, 8).unwrap();
        let mut fingerprint = (u64::MAX - 1).to_be_bytes().to_vec();
        fingerprint.extend((1u64 << 63).to_be_bytes());
        assert_eq!(
            value,
            list(vec![
                Value::Nil,
                Value::Bin(
                    (0..16)
                        .map(|i| [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef][i % 8])
                        .collect()
                ),
                Value::Bin(fingerprint),
                Value::from(1_800_000_001u64),
            ])
        );
        let read = tag_from(&value).unwrap();
        assert_eq!(
            (read.key.as_str(), read.fingerprint),
            (python_key, tag.fingerprint)
        );
        // Rounded up to the second: never remembered for less than its window.
        assert_eq!(read.at_ms, 1_800_000_001_000);

        // The first form, as servers before this one wrote it.
        let first = list(vec![
            Value::Nil,
            Value::from(python_key),
            Value::from(tag.fingerprint.0),
            Value::from(tag.fingerprint.1),
            Value::from(tag.at_ms),
        ]);
        assert_eq!(tag_from(&first), Some(tag.clone()));
        let first_len = sodp_proto::codec::encode_value(&first).len();
        assert_eq!(first_len - buf.len(), 20, "{first_len} vs {}", buf.len());

        // Only keys that round-trip as bytes are stored as bytes.
        for key in ["ABCDEF01", "abc", "rs-0a1b", "", "0x12", "été"] {
            let tag = Tag {
                key: key.into(),
                at_ms: 5_000,
                ..tag.clone()
            };
            assert!(
                !matches!(tag_value(&tag).as_array().unwrap()[1], Value::Bin(_)),
                "{key}"
            );
            assert_eq!(tag_from(&tag_value(&tag)), Some(tag.clone()), "{key}");
        }

        // Malformed compact tags are refused.
        let fingerprint = Value::Bin(fingerprint_bytes(tag.fingerprint).to_vec());
        for bad in [
            list(vec![
                Value::Nil,
                Value::Bin(vec![1]),
                Value::Bin(vec![0; 15]),
                Value::from(1u64),
            ]),
            list(vec![
                Value::Nil,
                Value::Bin(vec![1]),
                Value::from(7u64),
                Value::from(1u64),
            ]),
            list(vec![
                Value::Nil,
                Value::Bin(vec![]),
                fingerprint.clone(),
                Value::from(1u64),
            ]),
            list(vec![
                Value::Nil,
                Value::from("k"),
                fingerprint.clone(),
                Value::from(u64::MAX),
            ]),
            list(vec![Value::Nil, Value::from("k"), fingerprint]),
        ] {
            assert_eq!(tag_from(&bad), None, "{bad:?}");
        }
    }

    /// What the engine writes without building a `LogRecord` reads back as one.
    #[test]
    fn the_engines_direct_encoding_of_a_tag_decodes() {
        let mut buf = Vec::new();
        write_tag(&mut buf, &tag());
        let value = sodp_proto::codec::decode_value(&buf, 8).unwrap();
        assert_eq!(tag_from(&value), Some(tag()));
    }
}
