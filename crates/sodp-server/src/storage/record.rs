//! The records the durable engine writes, and their MessagePack form.
//!
//! Log segments hold [`LogRecord`]s in commit order; checkpoints hold one
//! [`KeyImage`] per key and an end marker. Every record is an array whose
//! first element says what it is, so the format can grow new kinds.

use sodp_proto::{DeltaOp, Value};

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
}

/// One entry of a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckpointRecord {
    Key(KeyImage),
    /// Written last: a checkpoint without it is incomplete.
    End {
        ceiling: u64,
        keys: u64,
    },
}

const CHANGE: i64 = 1;
const BIND: i64 = 2;
const UNBIND: i64 = 3;
const CEILING: i64 = 4;
const KEY: i64 = 10;
const END: i64 = 11;

fn ops_value(ops: &[DeltaOp]) -> Value {
    Value::from(ops.iter().map(DeltaOp::to_value).collect::<Vec<_>>())
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
                ops: DeltaOp::list_from_value(items.get(3)?).ok()?,
                expires: match items.get(4) {
                    None => None,
                    Some(v) => Some(v.as_u64()?),
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
                items.extend(k.expires_at.map(Value::from));
                list(items)
            }
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
                        let ops = DeltaOp::list_from_value(pair.get(1)?).ok()?;
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
                        None => None,
                        Some(v) => Some(v.as_u64()?),
                    },
                })
            }
            END => CheckpointRecord::End {
                ceiling: u(1)?,
                keys: u(2)?,
            },
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
        });
        assert_eq!(CheckpointRecord::from_value(&image.to_value()), Some(image));
    }
}
