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
//! - Unknown attributes (a typo like `"nulable"`) are load errors.
//!
//! Only values are validated, not deletions: the server skips validation for
//! `state.delete`. `state.set` with nil is a value and is validated.
//!
//! Validation recurses along the *schema*, never deeper than the schema file
//! nests (which serde_json bounds at 128 levels), whatever the value.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde_json::Value as Json;
use sodp_proto::Value;
use thiserror::Error;

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
        let text = std::fs::read_to_string(path).map_err(|source| SchemaLoadError::Io {
            file: file.clone(),
            source,
        })?;
        Schema::parse(&text, &file)
    }

    /// Parses a schema from JSON text (errors name the source as `<inline>`).
    pub fn from_json_str(text: &str) -> Result<Schema, SchemaLoadError> {
        Schema::parse(text, "<inline>")
    }

    fn parse(text: &str, file: &str) -> Result<Schema, SchemaLoadError> {
        let invalid = |location: String, problem: String| SchemaLoadError::Invalid {
            file: file.to_owned(),
            location,
            problem,
        };
        let json: Json =
            serde_json::from_str(text).map_err(|e| invalid("JSON".into(), e.to_string()))?;
        let Some(top) = json.as_object() else {
            return Err(invalid(
                "top level".into(),
                "expected an object mapping keys to types".into(),
            ));
        };
        let mut schema = Schema::default();
        for (key, spec) in top {
            let at = |p: &str| {
                if p.is_empty() {
                    format!("key {key:?}")
                } else {
                    format!("key {key:?} at {p}")
                }
            };
            let ty = parse_type(spec, "").map_err(|(p, problem)| invalid(at(&p), problem))?;
            match parse_key(key) {
                Ok(KeySpec::Exact) => {
                    schema.exact.insert(key.clone(), ty);
                }
                Ok(KeySpec::Prefix(prefix)) => schema.patterns.push((prefix, ty)),
                Err(problem) => return Err(invalid(at(""), problem)),
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

enum KeySpec {
    Exact,
    Prefix(Vec<String>),
}

fn parse_key(key: &str) -> Result<KeySpec, String> {
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
        KeySpec::Prefix(body.iter().map(|s| s.to_string()).collect())
    } else {
        KeySpec::Exact
    })
}

type ParseError = (String, String);

/// Parses one type; `at` is the location within the key's spec, for errors.
fn parse_type(spec: &Json, at: &str) -> Result<Type, ParseError> {
    let fail = |problem: String| Err((at.to_owned(), problem));
    let (name, obj) = match spec {
        Json::String(name) => (name.as_str(), None),
        Json::Object(obj) => match obj.get("type") {
            Some(Json::String(name)) => (name.as_str(), Some(obj)),
            Some(_) => return fail("\"type\" must be a string".into()),
            None => return fail("missing \"type\"".into()),
        },
        _ => return fail("expected a type name or an object with \"type\"".into()),
    };
    let mut kind = match name {
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
            return fail(format!(
                "unknown type {other:?} (expected String, Int, Float, Bool, Object, Array or Any)"
            ))
        }
    };
    let Some(obj) = obj else {
        return Ok(Type {
            kind,
            nullable: false,
        });
    };
    let allowed: &[&str] = match kind {
        Kind::Object { .. } => &["type", "nullable", "fields", "required"],
        Kind::Array { .. } => &["type", "nullable", "items"],
        _ => &["type", "nullable"],
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return fail(format!(
            "attribute {k:?} not allowed on {name} (allowed: {})",
            allowed.join(", ")
        ));
    }
    let nullable = match obj.get("nullable") {
        None => false,
        Some(Json::Bool(b)) => *b,
        Some(_) => return fail("\"nullable\" must be true or false".into()),
    };
    let join = |child: &str| {
        if at.is_empty() {
            child.to_owned()
        } else {
            format!("{at}.{child}")
        }
    };
    match &mut kind {
        Kind::Object { fields, required } => {
            if let Some(f) = obj.get("fields") {
                let Some(f) = f.as_object() else {
                    return fail("\"fields\" must be an object".into());
                };
                for (name, spec) in f {
                    fields.push((
                        name.clone(),
                        parse_type(spec, &join(&format!("fields.{name}")))?,
                    ));
                }
            }
            if let Some(r) = obj.get("required") {
                let names = r.as_array().and_then(|a| {
                    a.iter()
                        .map(|n| n.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                });
                let Some(names) = names else {
                    return fail("\"required\" must be an array of field names".into());
                };
                *required = names;
            }
        }
        Kind::Array { items } => {
            if let Some(i) = obj.get("items") {
                *items = Some(Box::new(parse_type(i, &join("items"))?));
            }
        }
        _ => {}
    }
    Ok(Type { kind, nullable })
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
        assert!(matches!(parse_key("a.b"), Ok(KeySpec::Exact)));
        assert!(matches!(parse_key("a.*"), Ok(KeySpec::Prefix(p)) if p == ["a"]));
        assert!(matches!(parse_key("*"), Ok(KeySpec::Prefix(p)) if p.is_empty()));
        assert!(parse_key("a..b").is_err());
        assert!(parse_key("a.*.b").is_err());
        assert!(parse_key("").is_err());
        assert!(parse_key("a b").is_err());
    }
}
