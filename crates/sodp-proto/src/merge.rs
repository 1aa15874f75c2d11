//! Write operations that compute the new value and its delta ops in one
//! pass, touching only what the write names: a patch of one field of a
//! 10,000-entry map costs one field, not a diff of the whole map.

use std::sync::Arc;

use crate::delta::{self, ApplyError, DeltaOp, OpKind};
use crate::pointer;
use crate::value::{Map, Value};

/// Deep merge (`state.patch`): objects in `patch` merge recursively into
/// objects in `old`; arrays, scalars and nil in `patch` replace. A non-object
/// `old` is replaced by the patch (as `UPDATE "/"`).
///
/// Returns the new value and the ops; no ops means nothing changed.
pub fn merge_patch(old: &Value, patch: &Map) -> (Value, Vec<DeltaOp>) {
    let mut new = old.clone();
    let ops = merge_patch_in_place(&mut new, patch);
    (new, ops)
}

/// [`merge_patch`] applied to `target` itself. Containers are copied only
/// if someone else still holds them (`Arc::make_mut`), so when `target` is
/// the only holder a patch costs what it touches, however wide the value.
pub fn merge_patch_in_place(target: &mut Value, patch: &Map) -> Vec<DeltaOp> {
    let mut ops = Vec::new();
    match target {
        Value::Map(m) => merge_into(m, patch, "/", &mut ops),
        _ => {
            *target = Value::Map(Arc::new(patch.clone()));
            ops.push(DeltaOp::update("/", target.clone()));
        }
    }
    ops
}

fn merge_into(target: &mut Arc<Map>, patch: &Map, path: &str, ops: &mut Vec<DeltaOp>) {
    for (k, pv) in patch {
        match (target.get(k.as_str()), pv) {
            (Some(Value::Map(_)), Value::Map(pm)) => {
                let child_path = pointer::child(path, k);
                let t = Arc::make_mut(target);
                if let Some(Value::Map(child)) = t.get_mut(k.as_str()) {
                    merge_into(child, pm, &child_path, ops);
                }
            }
            (Some(ov), pv) if ov == pv => {}
            (Some(_), pv) => {
                ops.push(DeltaOp::update(pointer::child(path, k), pv.clone()));
                // The key is there: its value is replaced, the key kept.
                if let Some(slot) = Arc::make_mut(target).get_mut(k.as_str()) {
                    *slot = pv.clone();
                }
            }
            (None, pv) => {
                ops.push(DeltaOp::add(pointer::child(path, k), pv.clone()));
                Arc::make_mut(target).insert(k.clone(), pv.clone());
            }
        }
    }
}

/// `state.set_in`: sets one location by JSON Pointer, creating missing
/// intermediates with the same rules clients use to apply the op (so server
/// and clients cannot disagree). Returns `None` when the location already
/// holds `value`.
pub fn set_in(
    old: &Value,
    path: &str,
    value: Value,
) -> Result<Option<(Value, DeltaOp)>, ApplyError> {
    let mut new = old.clone();
    let op = set_in_in_place(&mut new, path, value)?;
    Ok(op.map(|op| (new, op)))
}

/// [`set_in`] applied to `target` itself: when `target` is the only holder
/// of its containers, only the containers on the path are written (a
/// presence entry in a 10,000-entry map costs one entry). On error `target`
/// is unchanged.
pub fn set_in_in_place(
    target: &mut Value,
    path: &str,
    value: Value,
) -> Result<Option<DeltaOp>, ApplyError> {
    let segments = pointer::parse(path)?;
    let existing = match segments.last().map(String::as_str) {
        Some("-") => None,
        _ => delta::lookup(target, &segments),
    };
    let kind = match existing {
        Some(cur) if *cur == value => return Ok(None),
        Some(_) => OpKind::Update,
        None => OpKind::Add,
    };
    let op = DeltaOp {
        kind,
        path: pointer::format(&segments),
        value: Some(value),
    };
    // Decided before anything changes, so the write cannot fail half-way.
    delta::check_write(target, &segments).map_err(|reason| ApplyError::BadPath {
        path: op.path.clone(),
        reason,
    })?;
    delta::apply_in_place(target, &op)?;
    Ok(Some(op))
}

/// Removes one location (presence cleanup), in place. `None` when it does
/// not exist.
pub fn remove_in_in_place(target: &mut Value, path: &str) -> Result<Option<DeltaOp>, ApplyError> {
    let segments = pointer::parse(path)?;
    if segments.is_empty() || delta::lookup(target, &segments).is_none() {
        return Ok(None);
    }
    let op = DeltaOp::remove(pointer::format(&segments));
    delta::apply_in_place(target, &op)?;
    Ok(Some(op))
}

/// What it takes to put back a value changed in place when the change turns
/// out to be refused after it was made (a schema violation). It holds the previous top-level entries only, so taking
/// it is cheap (`Arc` clones) however large the value.
#[derive(Debug, Clone)]
#[must_use]
pub enum Undo {
    /// Nothing was changed.
    Nothing,
    /// The whole previous value (it was not a map).
    Root(Value),
    /// The previous value of each top-level entry changed (`None`: the
    /// entry did not exist).
    Entries(Vec<(String, Option<Value>)>),
}

impl Undo {
    /// Records what a change below top-level entry `first` (or of the whole
    /// value, when `None`) will overwrite.
    pub fn before_change(target: &Value, first: Option<&str>) -> Undo {
        match (target, first) {
            (Value::Map(m), Some(key)) => {
                Undo::Entries(vec![(key.to_owned(), m.get(key).cloned())])
            }
            _ => Undo::Root(target.clone()),
        }
    }

    /// Records what [`merge_patch_in_place`] with `patch` will overwrite.
    pub fn before_patch(target: &Value, patch: &Map) -> Undo {
        match target {
            Value::Map(m) => Undo::Entries(
                patch
                    .keys()
                    .map(|k| (k.clone(), m.get(k.as_str()).cloned()))
                    .collect(),
            ),
            _ => Undo::Root(target.clone()),
        }
    }

    /// Puts `target` back as it was when this was taken.
    pub fn restore(self, target: &mut Value) {
        match self {
            Undo::Nothing => {}
            Undo::Root(previous) => *target = previous,
            Undo::Entries(entries) => {
                let Value::Map(m) = target else {
                    return; // A change below an entry keeps the root a map.
                };
                let m = Arc::make_mut(m);
                for (key, previous) in entries.into_iter().rev() {
                    match previous {
                        Some(v) => {
                            m.insert(key, v);
                        }
                        // New keys were appended: removing them restores the order.
                        None => {
                            m.shift_remove(&key);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(j: serde_json::Value) -> Value {
        j.into()
    }

    fn m(j: serde_json::Value) -> Map {
        match Value::from(j) {
            Value::Map(m) => (*m).clone(),
            _ => panic!("not a map"),
        }
    }

    #[test]
    fn deep_patch_emits_only_the_leaf() {
        let old = v(json!({"name": "A", "health": 100, "position": {"x": 0, "y": 0}}));
        let (new, ops) = merge_patch(&old, &m(json!({"position": {"x": 5}})));
        assert_eq!(ops, vec![DeltaOp::update("/position/x", Value::Int(5))]);
        assert_eq!(
            new,
            v(json!({"name": "A", "health": 100, "position": {"x": 5, "y": 0}}))
        );
        assert_eq!(
            old,
            v(json!({"name": "A", "health": 100, "position": {"x": 0, "y": 0}}))
        );
    }

    #[test]
    fn patch_replaces_arrays_and_nil_and_adds() {
        let old = v(json!({"a": [1, 2], "b": 1}));
        let (new, ops) = merge_patch(&old, &m(json!({"a": [3], "b": null, "c": {"d": 1}})));
        assert_eq!(new, v(json!({"a": [3], "b": null, "c": {"d": 1}})));
        assert_eq!(ops.len(), 3);
        assert_eq!(delta::apply(&old, &ops).unwrap(), new);
    }

    #[test]
    fn unchanged_patch_has_no_ops() {
        let old = v(json!({"a": {"b": 1}}));
        let (_, ops) = merge_patch(&old, &m(json!({"a": {"b": 1}})));
        assert!(ops.is_empty());
    }

    #[test]
    fn set_in_arrays_and_escapes() {
        let old = v(json!({"inventory": ["sword", "shield"]}));
        let (new, op) = set_in(&old, "/inventory/0", "axe".into()).unwrap().unwrap();
        assert_eq!(op.kind, OpKind::Update);
        assert_eq!(new, v(json!({"inventory": ["axe", "shield"]})));
        let (new, op) = set_in(&new, "/inventory/-", "bow".into()).unwrap().unwrap();
        assert_eq!(op.kind, OpKind::Add);
        assert_eq!(new, v(json!({"inventory": ["axe", "shield", "bow"]})));
        let (new, _) = set_in(&new, "/a~1b", 1i64.into()).unwrap().unwrap();
        assert_eq!(new.get("a/b"), Some(&Value::Int(1)));
        assert!(set_in(&new, "/inventory/9", 1i64.into()).is_err());
        assert!(set_in(&new, "/a~1b", 1i64.into()).unwrap().is_none());
    }

    #[test]
    fn set_in_creates_intermediates() {
        let (new, op) = set_in(&Value::Nil, "/a/0/b", 1i64.into()).unwrap().unwrap();
        assert_eq!(op.kind, OpKind::Add);
        assert_eq!(new, v(json!({"a": [{"b": 1}]})));
    }
}
