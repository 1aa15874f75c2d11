//! Delta operations: how a value changes between two versions.
//!
//! A DELTA carries ops `{op: ADD|UPDATE|REMOVE, path, value?}` applied in
//! order. [`apply`] is what every client runs; [`diff`] is what the server
//! runs for a whole-value `state.set`. `apply(a, &diff(a, b)) == b` for all
//! values (property-tested), and `apply` never mutates its input.

use std::sync::Arc;

use thiserror::Error;

use crate::codec;
use crate::pointer::{self, PointerError};
use crate::value::{Map, Value};

/// What an op does at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// The location did not exist.
    Add,
    /// The location existed and changed.
    Update,
    /// The location is gone.
    Remove,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Add => "ADD",
            OpKind::Update => "UPDATE",
            OpKind::Remove => "REMOVE",
        }
    }

    pub fn parse(s: &str) -> Option<OpKind> {
        match s {
            "ADD" => Some(OpKind::Add),
            "UPDATE" => Some(OpKind::Update),
            "REMOVE" => Some(OpKind::Remove),
            _ => None,
        }
    }
}

/// One delta operation. `value` is `Some` for ADD/UPDATE, `None` for REMOVE.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaOp {
    pub kind: OpKind,
    pub path: String,
    pub value: Option<Value>,
}

impl DeltaOp {
    pub fn add(path: impl Into<String>, value: Value) -> DeltaOp {
        DeltaOp {
            kind: OpKind::Add,
            path: path.into(),
            value: Some(value),
        }
    }

    pub fn update(path: impl Into<String>, value: Value) -> DeltaOp {
        DeltaOp {
            kind: OpKind::Update,
            path: path.into(),
            value: Some(value),
        }
    }

    pub fn remove(path: impl Into<String>) -> DeltaOp {
        DeltaOp {
            kind: OpKind::Remove,
            path: path.into(),
            value: None,
        }
    }

    /// The op as a wire map.
    pub fn to_value(&self) -> Value {
        let mut m = Map::with_capacity(3);
        m.insert("op".into(), self.kind.as_str().into());
        m.insert("path".into(), self.path.to_owned().into());
        if let Some(v) = &self.value {
            m.insert("value".into(), v.clone());
        }
        m.into()
    }

    /// Appends the op's MessagePack encoding without building a map first.
    pub fn write(&self, buf: &mut Vec<u8>) {
        codec::write_map_len(buf, if self.value.is_some() { 3 } else { 2 });
        codec::write_str(buf, "op");
        codec::write_str(buf, self.kind.as_str());
        codec::write_str(buf, "path");
        codec::write_str(buf, &self.path);
        if let Some(v) = &self.value {
            codec::write_str(buf, "value");
            codec::write_value(buf, v);
        }
    }

    /// Reads an op from its wire map. An unknown `op` is an error, never
    /// skipped: ignoring it would silently diverge from the server.
    pub fn from_value(v: &Value) -> Result<DeltaOp, ApplyError> {
        let m = v
            .as_map()
            .ok_or(ApplyError::MalformedOp("an op must be a map"))?;
        let kind = m
            .get("op")
            .and_then(Value::as_str)
            .ok_or(ApplyError::MalformedOp("`op` must be a string"))?;
        let kind = OpKind::parse(kind).ok_or_else(|| ApplyError::UnknownOp(kind.to_owned()))?;
        let path = m
            .get("path")
            .and_then(Value::as_str)
            .ok_or(ApplyError::MalformedOp("`path` must be a string"))?
            .to_owned();
        let value = match kind {
            OpKind::Remove => None,
            _ => Some(m.get("value").cloned().unwrap_or(Value::Nil)),
        };
        Ok(DeltaOp { kind, path, value })
    }

    /// Reads a list of ops.
    pub fn list_from_value(v: &Value) -> Result<Vec<DeltaOp>, ApplyError> {
        v.as_array()
            .ok_or(ApplyError::MalformedOp("`ops` must be an array"))?
            .iter()
            .map(DeltaOp::from_value)
            .collect()
    }
}

/// Why ops could not be applied.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ApplyError {
    #[error("unknown delta op {0:?}; expected ADD, UPDATE or REMOVE")]
    UnknownOp(String),
    #[error("malformed delta op: {0}")]
    MalformedOp(&'static str),
    #[error(transparent)]
    Pointer(#[from] PointerError),
    #[error("path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
}

/// Applies `ops` in order and returns the new value. `value` is untouched;
/// only the containers on each op's path are copied.
pub fn apply(value: &Value, ops: &[DeltaOp]) -> Result<Value, ApplyError> {
    let mut out = value.clone();
    for op in ops {
        apply_in_place(&mut out, op)?;
    }
    Ok(out)
}

/// Applies one op to `target`, copying shared containers on its path
/// (copy-on-write through `Arc::make_mut`).
pub fn apply_in_place(target: &mut Value, op: &DeltaOp) -> Result<(), ApplyError> {
    let segments = pointer::parse(&op.path)?;
    let Some((last, parents)) = segments.split_last() else {
        *target = match op.kind {
            OpKind::Remove => Value::Nil,
            _ => op.value.clone().unwrap_or(Value::Nil),
        };
        return Ok(());
    };
    let bad = |reason| ApplyError::BadPath {
        path: op.path.to_owned(),
        reason,
    };

    let mut node = target;
    for (i, seg) in parents.iter().enumerate() {
        let next = &segments[i + 1];
        if !node.is_container() {
            // Only the root can get here: children are made containers below.
            *node = container_for(seg);
        }
        node = match node {
            Value::Map(m) => {
                let m = Arc::make_mut(m);
                let child = m.get_or_insert_with(seg, || Value::Nil);
                if !child.is_container() {
                    *child = container_for(next);
                }
                child
            }
            Value::Array(a) => {
                let a = Arc::make_mut(a);
                let idx = index(seg).ok_or_else(|| bad("array index must be a number"))?;
                // A missing intermediate one past the end is created, like an append.
                if idx == a.len() {
                    a.push(container_for(next));
                }
                let child = a
                    .get_mut(idx)
                    .ok_or_else(|| bad("array index out of range"))?;
                if !child.is_container() {
                    *child = container_for(next);
                }
                child
            }
            _ => unreachable!("node was made a container above"),
        };
    }

    if !node.is_container() {
        *node = container_for(last);
    }
    match node {
        Value::Map(m) => {
            let m = Arc::make_mut(m);
            match op.kind {
                OpKind::Remove => {
                    m.shift_remove(last.as_str());
                }
                _ => {
                    m.insert(last.clone(), op.value.clone().unwrap_or(Value::Nil));
                }
            }
        }
        Value::Array(a) => {
            let a = Arc::make_mut(a);
            let idx = if last == "-" {
                None
            } else {
                Some(index(last).ok_or_else(|| bad("array index must be a number or '-'"))?)
            };
            match (op.kind, idx) {
                (OpKind::Remove, None) => {
                    a.pop();
                }
                (OpKind::Remove, Some(i)) => {
                    if i < a.len() {
                        a.remove(i);
                    }
                }
                (_, None) => a.push(op.value.clone().unwrap_or(Value::Nil)),
                (_, Some(i)) if i < a.len() => a[i] = op.value.clone().unwrap_or(Value::Nil),
                (_, Some(i)) if i == a.len() => a.push(op.value.clone().unwrap_or(Value::Nil)),
                (_, Some(_)) => return Err(bad("array index out of range")),
            }
        }
        _ => unreachable!("node was made a container above"),
    }
    Ok(())
}

/// Whether an ADD or UPDATE at `segments` would apply to `target`, decided
/// without changing anything (so a write can then be applied in place with
/// no way to fail half-way). Mirrors [`apply_in_place`]; a property test
/// holds the two together.
pub fn check_write(target: &Value, segments: &[String]) -> Result<(), &'static str> {
    let Some((last, parents)) = segments.split_last() else {
        return Ok(());
    };
    // `None`: a container this write creates, of the kind implied by the
    // segment that indexes it (`container_for`), hence empty.
    let mut node = Some(target).filter(|v| v.is_container());
    for seg in parents {
        node = match node {
            Some(Value::Map(m)) => m.get(seg.as_str()).filter(|c| c.is_container()),
            Some(Value::Array(a)) => {
                let idx = index(seg).ok_or("array index must be a number")?;
                match idx.cmp(&a.len()) {
                    std::cmp::Ordering::Less => a.get(idx).filter(|c| c.is_container()),
                    std::cmp::Ordering::Equal => None,
                    std::cmp::Ordering::Greater => return Err("array index out of range"),
                }
            }
            // A container this write creates (non-containers are never kept).
            _ => {
                if container_for(seg).is_array() {
                    match index(seg) {
                        Some(0) => {}
                        Some(_) => return Err("array index out of range"),
                        None => return Err("array index must be a number"),
                    }
                }
                None
            }
        };
    }
    match node {
        Some(Value::Array(a)) => match last.as_str() {
            "-" => Ok(()),
            seg => match index(seg) {
                Some(i) if i <= a.len() => Ok(()),
                Some(_) => Err("array index out of range"),
                None => Err("array index must be a number or '-'"),
            },
        },
        Some(_) => Ok(()),
        // Created by this write: a map takes any name, an empty array only
        // an append.
        None if container_for(last).is_array() => match last.as_str() {
            "-" | "0" => Ok(()),
            _ => Err("array index out of range"),
        },
        None => Ok(()),
    }
}

/// The container implied by the segment that will index it: `-` or digits
/// mean an array, anything else an object.
fn container_for(segment: &str) -> Value {
    if segment == "-" || (!segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit())) {
        Value::empty_array()
    } else {
        Value::empty_map()
    }
}

fn index(segment: &str) -> Option<usize> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

/// Looks up the value at `segments`, if that location exists.
pub fn lookup<'v>(value: &'v Value, segments: &[String]) -> Option<&'v Value> {
    let mut node = value;
    for seg in segments {
        node = match node {
            Value::Map(m) => m.get(seg.as_str())?,
            Value::Array(a) => a.get(index(seg)?)?,
            _ => return None,
        };
    }
    Some(node)
}

/// The ops that turn `old` into `new`, both values of an existing key. The
/// caller handles a key's first write (`ADD "/"`) and its deletion.
///
/// Objects recurse; unchanged subtrees shared between the two values are
/// skipped by pointer comparison. Arrays that only grew or only shrank at
/// the end become per-element ADD/REMOVE; equal-length arrays recurse per
/// index; anything else is one UPDATE of the whole array.
pub fn diff(old: &Value, new: &Value) -> Vec<DeltaOp> {
    let mut ops = Vec::new();
    PATH.with(|path| match path.try_borrow_mut() {
        Ok(mut path) => {
            path.clear();
            diff_at(old, new, &mut path, &mut ops);
            if path.capacity() > MAX_KEPT_PATH {
                *path = String::new();
            }
        }
        // Not reached (a diff does not start another), but never a panic.
        Err(_) => diff_at(old, new, &mut String::new(), &mut ops),
    });
    ops
}

thread_local! {
    /// The path buffer of [`diff`], kept between calls: a diff allocates
    /// only the ops it returns.
    static PATH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// A path buffer grown beyond this by a deep diff is not kept.
const MAX_KEPT_PATH: usize = 1024;

/// The pointer in `path` (a buffer: `""` is the root, written `"/"`).
fn at(path: &str) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else {
        path.to_owned()
    }
}

/// Compares each pair of nodes once: containers are skipped when shared
/// (pointer-equal) and otherwise descended into, scalars compared. The path
/// lives in one buffer extended and truncated on the way, so unchanged
/// entries cost no allocation.
fn diff_at(old: &Value, new: &Value, path: &mut String, ops: &mut Vec<DeltaOp>) {
    match (old, new) {
        (Value::Map(a), Value::Map(b)) => {
            if Arc::ptr_eq(a, b) {
                return;
            }
            let len = path.len();
            for k in a.keys() {
                if !b.contains_key(k.as_str()) {
                    pointer::push(path, k);
                    ops.push(DeltaOp::remove(path.clone()));
                    path.truncate(len);
                }
            }
            for (k, nv) in b.iter() {
                pointer::push(path, k);
                match a.get(k.as_str()) {
                    None => ops.push(DeltaOp::add(path.clone(), nv.clone())),
                    Some(ov) => diff_at(ov, nv, path, ops),
                }
                path.truncate(len);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if !Arc::ptr_eq(a, b) {
                diff_arrays(a, b, path, ops);
            }
        }
        _ => {
            if old != new {
                ops.push(DeltaOp::update(at(path), new.clone()));
            }
        }
    }
}

fn diff_arrays(a: &[Value], b: &[Value], path: &mut String, ops: &mut Vec<DeltaOp>) {
    let len = path.len();
    let element = |path: &mut String, i: usize| {
        path.truncate(len);
        pointer::push(path, &i.to_string());
    };
    let common = a.len().min(b.len());
    let prefix_equal = a[..common] == b[..common];
    if b.len() > a.len() && prefix_equal {
        for (i, v) in b.iter().enumerate().skip(a.len()) {
            element(path, i);
            ops.push(DeltaOp::add(path.clone(), v.clone()));
        }
    } else if b.len() < a.len() && prefix_equal {
        for i in (b.len()..a.len()).rev() {
            element(path, i);
            ops.push(DeltaOp::remove(path.clone()));
        }
    } else if a.len() == b.len() {
        let changed = a.iter().zip(b).filter(|(x, y)| x != y).count();
        if changed == 0 {
            return;
        }
        if changed * 2 > a.len() {
            ops.push(DeltaOp::update(at(path), Value::from(b.to_vec())));
            return;
        }
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            if x != y {
                element(path, i);
                diff_at(x, y, path, ops);
            }
        }
    } else {
        ops.push(DeltaOp::update(at(path), Value::from(b.to_vec())));
    }
    path.truncate(len);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(j: serde_json::Value) -> Value {
        j.into()
    }

    #[test]
    fn deep_change_is_one_update() {
        let old = v(json!({"name": "a", "health": 100, "position": {"x": 0, "y": 0}}));
        let new = v(json!({"name": "a", "health": 100, "position": {"x": 5, "y": 0}}));
        assert_eq!(
            diff(&old, &new),
            vec![DeltaOp::update("/position/x", Value::Int(5))]
        );
    }

    #[test]
    fn apply_does_not_mutate_input() {
        let old = v(json!({"a": {"b": [1, 2]}, "c": {"d": 1}}));
        let snapshot = old.clone();
        let new = apply(&old, &[DeltaOp::add("/a/b/-", Value::Int(3))]).unwrap();
        assert_eq!(old, snapshot);
        assert_eq!(new, v(json!({"a": {"b": [1, 2, 3]}, "c": {"d": 1}})));
        // The untouched subtree is shared, not copied.
        let (Value::Map(o), Value::Map(n)) = (&old, &new) else {
            panic!()
        };
        let (Value::Map(oc), Value::Map(nc)) = (&o["c"], &n["c"]) else {
            panic!()
        };
        assert!(Arc::ptr_eq(oc, nc));
    }

    #[test]
    fn unknown_op_fails_loudly() {
        let op = Value::map_from([("op", Value::from("MOVE")), ("path", Value::from("/a"))]);
        assert_eq!(
            DeltaOp::from_value(&op),
            Err(ApplyError::UnknownOp("MOVE".into()))
        );
    }
}
