//! Serde deserialization of the JSON policy files (ACL, schema) that knows
//! *where* it is, so that an error says `rules[3].write` and not only "at
//! line 1 column 212".
//!
//! The file is parsed into a [`serde_json::Value`] first (syntax errors keep
//! serde_json's line and column; its recursion limit of 128 bounds the depth).
//! The serde-derived structs are then deserialized from that tree through
//! [`Tracked`], a `Deserializer` over `&Value` that carries the path from the
//! root. The first error raised anywhere below a node is stamped with that
//! node's path (the innermost one, since errors travel outwards), so every
//! derived message — type mismatch, unknown or missing field, or a custom
//! check in a `Deserialize` impl — comes with its location. An error raised
//! while reading an object's *key* is located at that key.
//!
//! JSON `null` is a value here, not "absent": an `Option<T>` field is `None`
//! only when the field is missing, and `"field": null` must be a valid `T`.
//! (A typo'd or nulled-out setting is refused rather than silently defaulted.)

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// One step from the root: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// A deserialization error and where it happened (`[]` = the root).
#[derive(Debug)]
pub(crate) struct Error {
    path: Option<Vec<Segment>>,
    problem: String,
}

impl Error {
    pub(crate) fn path(&self) -> &[Segment] {
        self.path.as_deref().unwrap_or(&[])
    }

    pub(crate) fn problem(&self) -> &str {
        &self.problem
    }

    /// Stamps `path` on an error that has none yet.
    fn at(mut self, path: &Path<'_>) -> Error {
        if self.path.is_none() {
            self.path = Some(path.segments());
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Error {
        Error {
            path: None,
            problem: msg.to_string(),
        }
    }

    /// Says `null` where serde would say "unit value" (JSON's only unit).
    fn invalid_type(unexpected: de::Unexpected<'_>, expected: &dyn de::Expected) -> Error {
        match unexpected {
            de::Unexpected::Unit => {
                de::Error::custom(format_args!("invalid type: null, expected {expected}"))
            }
            other => de::Error::custom(format_args!("invalid type: {other}, expected {expected}")),
        }
    }
}

/// The path to a node, as a linked list up to the root (no allocation while
/// all goes well).
#[derive(Clone, Copy)]
struct Path<'p> {
    parent: Option<&'p Path<'p>>,
    segment: Option<Seg<'p>>,
}

#[derive(Clone, Copy)]
enum Seg<'p> {
    Key(&'p str),
    Index(usize),
}

impl<'p> Path<'p> {
    const ROOT: Path<'static> = Path {
        parent: None,
        segment: None,
    };

    fn child(&'p self, segment: Seg<'p>) -> Path<'p> {
        Path {
            parent: Some(self),
            segment: Some(segment),
        }
    }

    fn segments(&self) -> Vec<Segment> {
        let mut out = Vec::new();
        let mut node = Some(self);
        while let Some(n) = node {
            match n.segment {
                Some(Seg::Key(k)) => out.push(Segment::Key(k.to_owned())),
                Some(Seg::Index(i)) => out.push(Segment::Index(i)),
                None => {}
            }
            node = n.parent;
        }
        out.reverse();
        out
    }
}

/// Deserializes a `T` from a parsed JSON document, with located errors.
pub(crate) fn from_value<'de, T: Deserialize<'de>>(value: &'de Value) -> Result<T, Error> {
    T::deserialize(Tracked {
        value,
        path: Path::ROOT,
    })
}

/// A `Deserializer` over one node of the tree.
struct Tracked<'de, 'p> {
    value: &'de Value,
    path: Path<'p>,
}

impl<'de> de::Deserializer<'de> for Tracked<'de, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path;
        let result = match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    // Without serde_json's arbitrary_precision every number
                    // is one of the three.
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visitor.visit_seq(Seq {
                items: items.iter().enumerate(),
                path: &path,
            }),
            Value::Object(map) => visitor.visit_map(Obj {
                entries: map.iter(),
                pending: None,
                path: &path,
            }),
        };
        result.map_err(|e| e.at(&path))
    }

    /// `null` is a value, not "absent" (see the module doc).
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let path = self.path;
        visitor.visit_some(self).map_err(|e| e.at(&path))
    }

    /// Structs are JSON objects only: serde's derive would also take an
    /// array of the fields in order, which no policy file means.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.value.is_object() {
            return self.deserialize_any(visitor);
        }
        let e: Error = de::Error::invalid_type(unexpected(self.value), &visitor);
        Err(e.at(&self.path))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        let path = self.path;
        visitor.visit_newtype_struct(self).map_err(|e| e.at(&path))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct enum
        identifier ignored_any
    }
}

fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => de::Unexpected::Unsigned(u),
            (None, Some(i)) => de::Unexpected::Signed(i),
            _ => de::Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

struct Seq<'de, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'de, Value>>,
    path: &'p Path<'p>,
}

impl<'de> de::SeqAccess<'de> for Seq<'de, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.items.next() {
            None => Ok(None),
            Some((i, value)) => seed
                .deserialize(Tracked {
                    value,
                    path: self.path.child(Seg::Index(i)),
                })
                .map(Some),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Obj<'de, 'p> {
    entries: serde_json::map::Iter<'de>,
    /// The entry whose key was just read, waiting for its value.
    pending: Option<(&'de str, &'de Value)>,
    path: &'p Path<'p>,
}

impl<'de> de::MapAccess<'de> for Obj<'de, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.pending = Some((key.as_str(), value));
        let key_path = self.path.child(Seg::Key(key));
        let de = de::value::BorrowedStrDeserializer::<Error>::new(key.as_str());
        seed.deserialize(de).map(Some).map_err(|e| e.at(&key_path))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((key, value)) = self.pending.take() else {
            return Err(de::Error::custom("value asked for before its key"));
        };
        seed.deserialize(Tracked {
            value,
            path: self.path.child(Seg::Key(key)),
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// `path` as written in messages: `rules[3].write`; the root is `top level`.
pub(crate) fn dotted(path: &[Segment]) -> String {
    if path.is_empty() {
        return "top level".into();
    }
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(k) if out.is_empty() => out.push_str(k),
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// Deserializes a value written as one JSON string and checked by `parse`
/// (its `Err` is the message). For `Deserialize` impls of parsed types.
pub(crate) fn parsed_str<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: de::Deserializer<'de>,
{
    struct V<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            (self.parse)(s).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(V { expecting, parse })
}

/// Deserializes a list of `T`, saying `expecting` (not serde's "a
/// sequence") when it is something else. For `deserialize_with` wrappers.
pub(crate) fn list_of<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
) -> Result<Vec<T>, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T> {
        expecting: &'static str,
        item: std::marker::PhantomData<fn() -> T>,
    }
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            collect(seq)
        }
    }
    deserializer.deserialize_seq(V {
        expecting,
        item: std::marker::PhantomData,
    })
}

fn collect<'de, A: de::SeqAccess<'de>, T: Deserialize<'de>>(
    mut seq: A,
) -> Result<Vec<T>, A::Error> {
    // The hint is the real length of a parsed array; capped all the same.
    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
    while let Some(item) = seq.next_element()? {
        out.push(item);
    }
    Ok(out)
}

/// Deserializes "one `T` or a list of them": `"*"` and `["*", "role:x"]`
/// both work. `T` must itself be written as a string. For
/// `#[serde(deserialize_with)]` wrappers that name what is expected.
pub(crate) fn one_or_many<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
) -> Result<Vec<T>, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T> {
        expecting: &'static str,
        item: std::marker::PhantomData<fn() -> T>,
    }
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<T>, E> {
            T::deserialize(s.into_deserializer()).map(|one| vec![one])
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            collect(seq)
        }
    }
    deserializer.deserialize_any(V {
        expecting,
        item: std::marker::PhantomData,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
        name: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    fn err(v: Value) -> (Vec<Segment>, String) {
        let e = from_value::<Outer>(&v).expect_err("must fail");
        (e.path().to_vec(), e.problem().to_owned())
    }

    fn key(k: &str) -> Segment {
        Segment::Key(k.into())
    }

    #[test]
    fn errors_carry_the_innermost_path() {
        let (path, problem) = err(json!({"items": [{"n": 1}, {"n": "x"}]}));
        assert_eq!(path, [key("items"), Segment::Index(1), key("n")]);
        assert!(problem.contains("invalid type: string \"x\""), "{problem}");

        let (path, problem) = err(json!({"items": [{"m": 1}]}));
        assert_eq!(path, [key("items"), Segment::Index(0), key("m")]);
        assert!(problem.contains("unknown field `m`"), "{problem}");

        let (path, problem) = err(json!({"items": [{}]}));
        assert_eq!(path, [key("items"), Segment::Index(0)]);
        assert_eq!(problem, "missing field `n`");

        let (path, problem) = err(json!([]));
        assert_eq!(path, []);
        assert!(problem.contains("invalid type: sequence"), "{problem}");

        // A struct is never read from an array of its fields.
        let (path, problem) = err(json!({"items": [[1]]}));
        assert_eq!(path, [key("items"), Segment::Index(0)]);
        assert!(problem.contains("invalid type: sequence"), "{problem}");
    }

    #[test]
    fn dotted_paths() {
        assert_eq!(dotted(&[]), "top level");
        assert_eq!(
            dotted(&[key("rules"), Segment::Index(3), key("write")]),
            "rules[3].write"
        );
        assert_eq!(dotted(&[key("a"), key("b"), Segment::Index(0)]), "a.b[0]");
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Perms {
        #[serde(deserialize_with = "strings")]
        p: Vec<String>,
    }

    fn strings<'de, D: de::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        one_or_many(d, "a string or a list of strings")
    }

    #[test]
    fn one_or_many_takes_a_string_or_a_list() {
        let one = from_value::<Perms>(&json!({"p": "x"})).expect("one");
        assert_eq!(one.p, ["x"]);
        let many = from_value::<Perms>(&json!({"p": ["x", "y"]})).expect("many");
        assert_eq!(many.p, ["x", "y"]);
        let e = from_value::<Perms>(&json!({"p": 5})).expect_err("number");
        assert_eq!(e.path(), [key("p")]);
        assert_eq!(
            e.problem(),
            "invalid type: integer `5`, expected a string or a list of strings"
        );
        let e = from_value::<Perms>(&json!({"p": ["x", 5]})).expect_err("item");
        assert_eq!(e.path(), [key("p"), Segment::Index(1)]);
    }

    #[test]
    fn null_is_not_absent() {
        assert!(from_value::<Outer>(&json!({"items": []}))
            .expect("absent = None")
            .name
            .is_none());
        let (path, _) = err(json!({"items": [], "name": null}));
        assert_eq!(path, [key("name")]);
    }
}
