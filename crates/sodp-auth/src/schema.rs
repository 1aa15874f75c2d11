//! Schema validation: the shape a key's value must keep.
//!
//! # File format (JSON)
//!
//! An object mapping state keys to types:
//!
//! ```json
//! {
//!   "game.score":  "Int",
//!   "game.title":  { "type": "String", "nullable": true },
//!   "player.pos":  { "type": "Object", "required": ["x", "y"],
//!                    "fields": { "x": "Float", "y": "Float",
//!                                "meta": { "type": "Object", "fields": { "tag": "String" } } } },
//!   "game.moves":  { "type": "Array", "items": { "type": "Object", "fields": { "n": "Int" } } },
//!   "users.*":     "Object"
//! }
//! ```
//!
//! - Types: `String`, `Int`, `Float` (also accepts an Int), `Bool`, `Object`
//!   (a map; optional typed `fields`, optional `required` field names),
//!   `Array` (optional `items` type for every element), `Any`.
//! - Short form: `"key": "Type"`. Long form: `{"type": …, "nullable": bool,
//!   "fields": {…}, "items": …, "required": […]}`; `fields` and `required`
//!   only on `Object`, `items` only on `Array`. `nullable` (default false)
//!   also admits nil.
//! - Declared fields may be absent unless listed in `required`; undeclared
//!   fields are allowed. Undeclared keys accept any value.
//! - A key ending in `.*` covers every key below that prefix (one or more
//!   segments), and `"*"` covers every key. An exact entry wins over
//!   patterns; among patterns the longest prefix wins.
//! - Unknown attributes (a typo like `"nulable"`) are load errors, and so is
//!   `null` for an attribute (leave it out instead).
//! - Errors name the file, the key, the place inside its type and the
//!   problem: `schema file s.json: key "player.pos" at fields.x: unknown type
//!   "Num" (…)`. The file is read by serde (`deny_unknown_fields` on the long
//!   form); the private `tracked` module supplies the locations.
//!
//! Only values are validated, not deletions: the server skips validation for
//! `state.delete`. `state.set` with nil is a value and is validated.
//!
//! Validation recurses along the *schema*, never deeper than the schema file
//! nests (which serde_json bounds at 128 levels), whatever the value.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value as Json;
use sodp_proto::Value;
use thiserror::Error;

use crate::tracked;

/// A malformed or unreadable schema file.
#[derive(Debug, Error)]
pub enum SchemaLoadError {
    #[error("cannot read schema file {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("schema file {file}: {location}: {problem}")]
    Invalid {
        file: String,
        /// Where: `JSON`, `top level`, `key "player.pos" at fields.x`, …
        location: String,
        problem: String,
    },
}

/// A value that does not fit its key's schema. `path` is a JSON Pointer into
/// the value (`/` is the root), as in DELTA paths.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SchemaError {
    #[error("{path}: expected {expected}, got {got}")]
    TypeMismatch {
        path: String,
        expected: String,
        got: &'static str,
    },
    #[error("{path}: required field missing")]
    MissingField { path: String },
}

impl SchemaError {
    /// The JSON Pointer of the offending location.
    pub fn path(&self) -> &str {
        match self {
            SchemaError::TypeMismatch { path, .. } | SchemaError::MissingField { path } => path,
        }
    }
}

/// A type in the schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Type {
    kind: Kind,
    nullable: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    String,
    Int,
    Float,
    Bool,
    Any,
    Object {
        fields: Vec<(String, Type)>,
        required: Vec<String>,
    },
    Array {
        items: Option<Box<Type>>,
    },
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::String => "String",
            Kind::Int => "Int",
            Kind::Float => "Float",
            Kind::Bool => "Bool",
            Kind::Any => "Any",
            Kind::Object { .. } => "Object",
            Kind::Array { .. } => "Array",
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())?;
        if self.nullable {
            f.write_str(" or null")?;
        }
        Ok(())
    }
}

/// A loaded schema. Immutable; share it behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    exact: HashMap<String, Type>,
    /// `(prefix segments, type)` for `prefix.*` entries, longest prefix first.
    patterns: Vec<(Vec<String>, Type)>,
}

impl Schema {
    /// Loads and checks a schema file.
    pub fn load(path: impl AsRef<Path>) -> Result<Schema, SchemaLoadError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| SchemaLoadError::Io {
            file: file.clone(),
            source,
        })?;
        Schema::parse(&bytes, &file)
    }

    /// Parses a schema from JSON text (errors name the source as `<inline>`).
    pub fn from_json_str(text: &str) -> Result<Schema, SchemaLoadError> {
        Schema::parse(text.as_bytes(), "<inline>")
    }

    /// Parses a schema from the bytes of a file (errors name the source as
    /// `<inline>`); invalid UTF-8 is a `JSON` error with its position.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Schema, SchemaLoadError> {
        Schema::parse(bytes, "<inline>")
    }

    fn parse(bytes: &[u8], file: &str) -> Result<Schema, SchemaLoadError> {
        let invalid = |location: String, problem: String| SchemaLoadError::Invalid {
            file: file.to_owned(),
            location,
            problem,
        };
        let json: Json =
            serde_json::from_slice(bytes).map_err(|e| invalid("JSON".into(), e.to_string()))?;
        let entries: SchemaFile = tracked::from_value(&json)
            .map_err(|e| invalid(location(e.path()), e.problem().to_owned()))?;
        let mut schema = Schema::default();
        for (key, ty) in entries.0 {
            match key {
                SchemaKey::Exact(key) => {
                    schema.exact.insert(key, ty);
                }
                SchemaKey::Prefix(prefix) => schema.patterns.push((prefix, ty)),
            }
        }
        schema
            .patterns
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(schema)
    }

    /// True when no key is declared.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.patterns.is_empty()
    }

    /// The type declared for `key`, if any.
    pub fn type_of(&self, key: &str) -> Option<&Type> {
        if let Some(t) = self.exact.get(key) {
            return Some(t);
        }
        let segments: Vec<&str> = key.split('.').collect();
        self.patterns
            .iter()
            .find(|(prefix, _)| {
                segments.len() > prefix.len() && prefix.iter().zip(&segments).all(|(p, s)| p == s)
            })
            .map(|(_, t)| t)
    }

    /// Checks the value `key` would hold. Undeclared keys accept anything.
    pub fn validate(&self, key: &str, value: &Value) -> Result<(), SchemaError> {
        match self.type_of(key) {
            Some(ty) => check(ty, value, &mut Vec::new()),
            None => Ok(()),
        }
    }
}

// ---- the file, as serde reads it ----
//
// The shapes and unknown attributes are serde's (`deny_unknown_fields` on the
// long form); type names, key grammar and which attributes a type admits are
// checked in the `Deserialize` impls below, so `crate::tracked` locates every
// error: `key "player.pos" at fields.x`.

/// Where an error is, as written in messages.
fn location(path: &[tracked::Segment]) -> String {
    match path.split_first() {
        None => "top level".into(),
        Some((tracked::Segment::Key(key), [])) => format!("key {key:?}"),
        Some((tracked::Segment::Key(key), rest)) => {
            format!("key {key:?} at {}", tracked::dotted(rest))
        }
        // The top level is an object: its children are keys.
        Some((tracked::Segment::Index(_), _)) => tracked::dotted(path),
    }
}

/// The whole file: `(key, type)` in file order.
struct SchemaFile(Vec<(SchemaKey, Type)>);

impl<'de> Deserialize<'de> for SchemaFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SchemaFile, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SchemaFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object mapping keys to types")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SchemaFile, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<SchemaKey>()? {
                    entries.push((key, map.next_value::<Type>()?));
                }
                Ok(SchemaFile(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// A declared key: exact, or `prefix.*` (`*` alone: an empty prefix).
enum SchemaKey {
    Exact(String),
    Prefix(Vec<String>),
}

impl<'de> Deserialize<'de> for SchemaKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SchemaKey, D::Error> {
        tracked::parsed_str(d, "a state key", parse_key)
    }
}

fn parse_key(key: &str) -> Result<SchemaKey, String> {
    let parts: Vec<&str> = key.split('.').collect();
    let (last, prefix) = parts.split_last().unwrap_or((&"", &[]));
    let body: &[&str] = if *last == "*" { prefix } else { &parts };
    for seg in body {
        if seg.is_empty()
            || !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(
                "not a state key: segments of letters, digits, `_` and `-` joined by `.`, optionally ending in `.*`"
                    .into(),
            );
        }
    }
    Ok(if *last == "*" {
        SchemaKey::Prefix(body.iter().map(|s| s.to_string()).collect())
    } else {
        SchemaKey::Exact(key.to_owned())
    })
}

/// A type name, as the short form or the long form's `type`.
struct TypeName(Kind);

impl<'de> Deserialize<'de> for TypeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TypeName, D::Error> {
        tracked::parsed_str(d, "a type name", parse_type_name)
    }
}

fn parse_type_name(name: &str) -> Result<TypeName, String> {
    Ok(TypeName(match name {
        "String" => Kind::String,
        "Int" => Kind::Int,
        "Float" => Kind::Float,
        "Bool" => Kind::Bool,
        "Any" => Kind::Any,
        "Object" => Kind::Object {
            fields: Vec::new(),
            required: Vec::new(),
        },
        "Array" => Kind::Array { items: None },
        other => {
            return Err(format!(
                "unknown type {other:?} (expected String, Int, Float, Bool, Object, Array or Any)"
            ))
        }
    }))
}

/// The long form, before the per-type check of its attributes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LongForm {
    #[serde(rename = "type")]
    name: TypeName,
    #[serde(default)]
    nullable: bool,
    fields: Option<Fields>,
    items: Option<Box<Type>>,
    #[serde(default, deserialize_with = "field_names")]
    required: Option<Vec<String>>,
}

fn field_names<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    tracked::list_of(d, "a list of field names").map(Some)
}

/// `fields`: field names to types, in file order.
struct Fields(Vec<(String, Type)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object mapping field names to types")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    fields.push((name, map.next_value::<Type>()?));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Type {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Type, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Type;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a type name or an object with \"type\"")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Type, E> {
                let TypeName(kind) = parse_type_name(name).map_err(E::custom)?;
                Ok(Type {
                    kind,
                    nullable: false,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Type, A::Error> {
                let long = LongForm::deserialize(de::value::MapAccessDeserializer::new(map))?;
                long.check().map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl LongForm {
    /// `fields` and `required` only on Object, `items` only on Array.
    fn check(self) -> Result<Type, String> {
        let TypeName(mut kind) = self.name;
        let allowed: &[&str] = match kind {
            Kind::Object { .. } => &["type", "nullable", "fields", "required"],
            Kind::Array { .. } => &["type", "nullable", "items"],
            _ => &["type", "nullable"],
        };
        for (attr, present) in [
            ("fields", self.fields.is_some()),
            ("items", self.items.is_some()),
            ("required", self.required.is_some()),
        ] {
            if present && !allowed.contains(&attr) {
                return Err(format!(
                    "attribute {attr:?} not allowed on {} (allowed: {})",
                    kind.name(),
                    allowed.join(", ")
                ));
            }
        }
        match &mut kind {
            Kind::Object { fields, required } => {
                *fields = self.fields.map(|f| f.0).unwrap_or_default();
                *required = self.required.unwrap_or_default();
            }
            Kind::Array { items } => *items = self.items,
            _ => {}
        }
        Ok(Type {
            kind,
            nullable: self.nullable,
        })
    }
}

/// One step of the path from the root of the value, for error messages.
enum Step<'a> {
    Field(&'a str),
    Index(usize),
}

fn pointer(path: &[Step<'_>]) -> String {
    if path.is_empty() {
        return "/".into();
    }
    let mut out = String::new();
    for step in path {
        out.push('/');
        match step {
            Step::Field(f) => out.push_str(&f.replace('~', "~0").replace('/', "~1")),
            Step::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

fn check<'a>(ty: &'a Type, value: &'a Value, path: &mut Vec<Step<'a>>) -> Result<(), SchemaError> {
    let mismatch = |path: &[Step<'_>]| SchemaError::TypeMismatch {
        path: pointer(path),
        expected: ty.to_string(),
        got: value.type_name(),
    };
    if value.is_nil() {
        return if ty.nullable || ty.kind == Kind::Any {
            Ok(())
        } else {
            Err(mismatch(path))
        };
    }
    match (&ty.kind, value) {
        (Kind::Any, _)
        | (Kind::String, Value::Str(_))
        | (Kind::Bool, Value::Bool(_))
        | (Kind::Int, Value::Int(_) | Value::UInt(_))
        | (Kind::Float, Value::Float(_) | Value::Int(_) | Value::UInt(_)) => Ok(()),
        (Kind::Object { fields, required }, Value::Map(map)) => {
            for name in required {
                if !map.contains_key(name) {
                    path.push(Step::Field(name));
                    let e = SchemaError::MissingField {
                        path: pointer(path),
                    };
                    path.pop();
                    return Err(e);
                }
            }
            for (name, field_ty) in fields {
                if let Some(v) = map.get(name) {
                    path.push(Step::Field(name));
                    check(field_ty, v, path)?;
                    path.pop();
                }
            }
            Ok(())
        }
        (Kind::Array { items }, Value::Array(arr)) => {
            if let Some(item_ty) = items {
                for (i, v) in arr.iter().enumerate() {
                    path.push(Step::Index(i));
                    check(item_ty, v, path)?;
                    path.pop();
                }
            }
            Ok(())
        }
        _ => Err(mismatch(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_escapes_segments() {
        assert_eq!(pointer(&[]), "/");
        assert_eq!(
            pointer(&[Step::Field("a/b"), Step::Field("c~d"), Step::Index(3)]),
            "/a~1b/c~0d/3"
        );
    }

    #[test]
    fn key_forms() {
        assert!(matches!(parse_key("a.b"), Ok(SchemaKey::Exact(k)) if k == "a.b"));
        assert!(matches!(parse_key("a.*"), Ok(SchemaKey::Prefix(p)) if p == ["a"]));
        assert!(matches!(parse_key("*"), Ok(SchemaKey::Prefix(p)) if p.is_empty()));
        assert!(parse_key("a..b").is_err());
        assert!(parse_key("a.*.b").is_err());
        assert!(parse_key("").is_err());
        assert!(parse_key("a b").is_err());
    }
}
