//! The value type carried by SODP: anything JSON-compatible, plus binary.
//!
//! Containers sit behind `Arc`, so cloning a value is O(1) and a new version of
//! a value shares every untouched subtree with the previous one. Writers use
//! `Arc::make_mut`, which copies a container only when someone else (a
//! subscriber's snapshot, the history, a caller) still holds it. This is what
//! lets `apply` promise never to mutate its input while copying only the
//! containers on the changed path, and lets `diff` skip shared subtrees by
//! pointer comparison.

use std::sync::Arc;

pub use crate::map::Map;

/// A state value.
///
/// Integers are kept as `Int` unless they only fit an unsigned 64-bit integer
/// (`UInt`), so equal numbers always have one representation.
#[derive(Clone, Debug, Default)]
pub enum Value {
    #[default]
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Arc<Vec<Value>>),
    Map(Arc<Map>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Nil, Value::Nil) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::UInt(a), Value::UInt(b)) => a == b,
            // Bitwise, so NaN equals itself and a rewrite of NaN is not a change.
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Bin(a), Value::Bin(b)) => a == b,
            (Value::Array(a), Value::Array(b)) => Arc::ptr_eq(a, b) || a == b,
            (Value::Map(a), Value::Map(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }
}

impl Value {
    /// An empty object.
    pub fn empty_map() -> Value {
        Value::Map(Arc::new(Map::default()))
    }

    /// An empty array.
    pub fn empty_array() -> Value {
        Value::Array(Arc::new(Vec::new()))
    }

    /// A map value built from `(key, value)` pairs.
    pub fn map_from<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Map(Arc::new(
            pairs.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        ))
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Int(i) => u64::try_from(i).ok(),
            Value::UInt(u) => Some(u),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The map inside, owned: free when this value is its only holder (a
    /// freshly decoded frame), a copy otherwise.
    pub fn into_map(self) -> Option<Map> {
        match self {
            Value::Map(m) => Some(Arc::try_unwrap(m).unwrap_or_else(|shared| (*shared).clone())),
            _ => None,
        }
    }

    /// The string inside, owned.
    pub fn into_string(self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The field `name` of a map value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.as_map()?.get(name)
    }

    pub fn is_array(&self) -> bool {
        matches!(self, Value::Array(_))
    }

    /// True for arrays and maps.
    pub fn is_container(&self) -> bool {
        matches!(self, Value::Array(_) | Value::Map(_))
    }

    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::UInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Bin(_) => "binary",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
        }
    }

    /// Nesting depth: 0 for a scalar, 1 for a flat container, and so on.
    /// Iterative, so it is safe on any value this crate can build.
    pub fn depth(&self) -> usize {
        let mut max = 0;
        let mut stack = vec![(self, 0usize)];
        while let Some((v, d)) = stack.pop() {
            match v {
                Value::Array(a) => {
                    max = max.max(d + 1);
                    stack.extend(a.iter().map(|c| (c, d + 1)));
                }
                Value::Map(m) => {
                    max = max.max(d + 1);
                    stack.extend(m.values().map(|c| (c, d + 1)));
                }
                _ => {}
            }
        }
        max
    }

    /// Converts to JSON. Binary becomes an array of byte values; non-finite
    /// floats become `null` (JSON has no spelling for them).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Nil => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Bin(b) => J::Array(b.iter().map(|x| J::from(*x)).collect()),
            Value::Array(a) => J::Array(a.iter().map(Value::to_json).collect()),
            Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }
}

impl From<serde_json::Value> for Value {
    fn from(j: serde_json::Value) -> Self {
        use serde_json::Value as J;
        match j {
            J::Null => Value::Nil,
            J::Bool(b) => Value::Bool(b),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            J::String(s) => Value::Str(s),
            J::Array(a) => Value::Array(Arc::new(a.into_iter().map(Value::from).collect())),
            J::Object(o) => Value::Map(Arc::new(
                o.into_iter().map(|(k, v)| (k, Value::from(v))).collect(),
            )),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<u64> for Value {
    fn from(u: u64) -> Self {
        i64::try_from(u).map_or(Value::UInt(u), Value::Int)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Self {
        Value::Array(Arc::new(a))
    }
}

impl From<Map> for Value {
    fn from(m: Map) -> Self {
        Value::Map(Arc::new(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_integers_normalise() {
        assert_eq!(Value::from(5u64), Value::Int(5));
        assert_eq!(Value::from(u64::MAX), Value::UInt(u64::MAX));
    }

    #[test]
    fn nan_equals_itself() {
        assert_eq!(Value::Float(f64::NAN), Value::Float(f64::NAN));
    }

    #[test]
    fn depth_counts_containers() {
        let v: Value = serde_json::json!({"a": [1, {"b": 2}]}).into();
        assert_eq!(v.depth(), 3);
        assert_eq!(Value::Int(1).depth(), 0);
    }

    #[test]
    fn json_round_trip() {
        let j = serde_json::json!({"a": [1, -2, 2.5, "x", null, true], "b": {}});
        assert_eq!(Value::from(j.clone()).to_json(), j);
    }
}
