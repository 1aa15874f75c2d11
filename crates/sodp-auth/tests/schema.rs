//! The schema matrix: every type, nullable, nested fields, arrays, key
//! patterns, error paths, and malformed schema files.

use serde_json::{json, Value as Json};
use sodp_auth::schema::{Schema, SchemaError, SchemaLoadError};
use sodp_proto::Value;

fn schema(v: Json) -> Schema {
    Schema::from_json_str(&v.to_string()).expect("valid schema")
}

fn val(v: Json) -> Value {
    Value::from(v)
}

fn err(s: &Schema, key: &str, v: Value) -> String {
    s.validate(key, &v)
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn scalar_types() {
    let s = schema(json!({"s": "String", "i": "Int", "f": "Float", "b": "Bool", "a": "Any"}));
    assert!(s.validate("s", &val(json!("x"))).is_ok());
    assert!(s.validate("i", &val(json!(-3))).is_ok());
    assert!(s.validate("i", &Value::UInt(u64::MAX)).is_ok());
    assert!(s.validate("f", &val(json!(1.5))).is_ok());
    assert!(s.validate("f", &val(json!(2))).is_ok(), "Float accepts Int");
    assert!(s.validate("f", &Value::Float(f64::NAN)).is_ok());
    assert!(s.validate("b", &val(json!(false))).is_ok());
    for any in [
        json!(null),
        json!(1),
        json!("x"),
        json!([1]),
        json!({"a": 1}),
    ] {
        assert!(s.validate("a", &val(any)).is_ok());
    }
    assert_eq!(err(&s, "s", val(json!(1))), "/: expected String, got int");
    assert_eq!(err(&s, "i", val(json!(1.5))), "/: expected Int, got float");
    assert_eq!(err(&s, "i", val(json!("1"))), "/: expected Int, got string");
    assert_eq!(
        err(&s, "f", val(json!("1.5"))),
        "/: expected Float, got string"
    );
    assert_eq!(err(&s, "b", val(json!(0))), "/: expected Bool, got int");
    assert_eq!(
        err(&s, "s", Value::Bin(vec![1])),
        "/: expected String, got binary"
    );
}

#[test]
fn containers() {
    let s = schema(json!({"o": "Object", "a": "Array"}));
    assert!(s.validate("o", &val(json!({}))).is_ok());
    assert!(s.validate("o", &val(json!({"anything": [1, "x"]}))).is_ok());
    assert!(s.validate("a", &val(json!([]))).is_ok());
    assert!(s.validate("a", &val(json!([1, "x", null]))).is_ok());
    assert_eq!(
        err(&s, "o", val(json!([]))),
        "/: expected Object, got array"
    );
    assert_eq!(err(&s, "a", val(json!({}))), "/: expected Array, got map");
}

#[test]
fn null_needs_nullable() {
    let s = schema(json!({
        "strict": "Int",
        "loose": {"type": "Int", "nullable": true},
        "obj": {"type": "Object", "nullable": true},
    }));
    assert_eq!(err(&s, "strict", Value::Nil), "/: expected Int, got nil");
    assert!(s.validate("loose", &Value::Nil).is_ok());
    assert!(s.validate("loose", &val(json!(3))).is_ok());
    assert_eq!(
        err(&s, "loose", val(json!("3"))),
        "/: expected Int or null, got string"
    );
    assert!(s.validate("obj", &Value::Nil).is_ok());
}

#[test]
fn nested_fields_report_their_path() {
    let s = schema(json!({
        "player": {"type": "Object", "fields": {
            "name": "String",
            "position": {"type": "Object", "fields": {"x": "Int", "y": "Int"}},
            "tag": {"type": "String", "nullable": true},
        }},
    }));
    let ok = val(json!({"name": "p1", "position": {"x": 1, "y": 2}, "extra": true}));
    assert!(
        s.validate("player", &ok).is_ok(),
        "undeclared fields are allowed"
    );
    assert!(
        s.validate("player", &val(json!({}))).is_ok(),
        "absent fields are allowed"
    );
    assert!(s.validate("player", &val(json!({"tag": null}))).is_ok());
    assert_eq!(
        err(
            &s,
            "player",
            val(json!({"position": {"x": "left", "y": 2}}))
        ),
        "/position/x: expected Int, got string"
    );
    assert_eq!(
        err(&s, "player", val(json!({"position": [1, 2]}))),
        "/position: expected Object, got array"
    );
    assert_eq!(
        err(&s, "player", val(json!({"name": null}))),
        "/name: expected String, got nil"
    );
}

#[test]
fn required_fields() {
    let s = schema(json!({
        "pos": {"type": "Object", "required": ["x", "y"], "fields": {"x": "Float"}},
    }));
    assert!(s
        .validate("pos", &val(json!({"x": 1, "y": "anything"})))
        .is_ok());
    let e = s.validate("pos", &val(json!({"x": 1}))).unwrap_err();
    assert_eq!(e, SchemaError::MissingField { path: "/y".into() });
    assert_eq!(e.to_string(), "/y: required field missing");
    assert_eq!(e.path(), "/y");
}

#[test]
fn arrays_with_items() {
    let s = schema(json!({
        "scores": {"type": "Array", "items": "Int"},
        "moves": {"type": "Array", "items": {"type": "Object", "fields": {"n": "Int"}}},
        "maybe": {"type": "Array", "items": {"type": "String", "nullable": true}},
        "grid": {"type": "Array", "items": {"type": "Array", "items": "Bool"}},
    }));
    assert!(s.validate("scores", &val(json!([1, 2, 3]))).is_ok());
    assert_eq!(
        err(&s, "scores", val(json!([1, 2.5]))),
        "/1: expected Int, got float"
    );
    assert_eq!(
        err(&s, "moves", val(json!([{"n": 1}, {"n": "two"}]))),
        "/1/n: expected Int, got string"
    );
    assert!(s.validate("maybe", &val(json!(["a", null]))).is_ok());
    assert_eq!(
        err(&s, "grid", val(json!([[true], [false, 0]]))),
        "/1/1: expected Bool, got int"
    );
}

#[test]
fn paths_are_escaped_json_pointers() {
    let s = schema(json!({"k": {"type": "Object", "fields": {
        "a/b": "Int", "c~d": {"type": "Object", "fields": {"e": "Int"}},
    }}}));
    assert_eq!(
        err(&s, "k", val(json!({"a/b": "x"}))),
        "/a~1b: expected Int, got string"
    );
    assert_eq!(
        err(&s, "k", val(json!({"c~d": {"e": []}}))),
        "/c~0d/e: expected Int, got array"
    );
}

#[test]
fn undeclared_keys_accept_anything() {
    let s = schema(json!({"declared": "Int"}));
    assert!(s.validate("other", &val(json!("x"))).is_ok());
    assert!(s.validate("declared.child", &val(json!("x"))).is_ok());
    assert!(Schema::default().validate("any", &Value::Nil).is_ok());
    assert!(Schema::default().is_empty());
}

#[test]
fn key_patterns_precedence() {
    let s = schema(json!({
        "users.*": "Object",
        "users.admin": "String",
        "users.vip.*": "Array",
        "*": {"type": "Any"},
    }));
    assert!(s.validate("users.alice", &val(json!({}))).is_ok());
    assert!(s.validate("users.alice.deep", &val(json!({}))).is_ok());
    assert!(s.validate("users.alice", &val(json!(1))).is_err());
    assert!(
        s.validate("users.admin", &val(json!("x"))).is_ok(),
        "exact wins"
    );
    assert!(
        s.validate("users.vip.bob", &val(json!([]))).is_ok(),
        "longest prefix"
    );
    assert!(s.validate("users.vip.bob", &val(json!({}))).is_err());
    assert!(s.validate("users", &val(json!(1))).is_ok(), "falls to `*`");
}

#[test]
fn deep_values_are_checked_only_as_deep_as_the_schema() {
    let s = schema(json!({"k": {"type": "Object", "fields": {"a": "Any"}}}));
    let mut deep = json!(1);
    for _ in 0..60 {
        deep = json!({"a": deep});
    }
    assert!(s.validate("k", &val(deep)).is_ok());
}

// ---- loading ----

fn load_error(text: &str) -> String {
    match Schema::from_json_str(text) {
        Ok(_) => panic!("expected an error for {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_schemas_name_key_and_problem() {
    // Each needle is "location: problem".
    let cases: &[(&str, &str)] = &[
        ("nope", "JSON: expected ident at line 1 column 2"),
        (
            "[]",
            "top level: invalid type: sequence, expected an object mapping keys to types",
        ),
        (r#"{"k": "Integer"}"#, "key \"k\": unknown type \"Integer\""),
        (r#"{"k": "int"}"#, "key \"k\": unknown type \"int\""),
        (
            r#"{"k": 5}"#,
            "key \"k\": invalid type: integer `5`, expected a type name or an object with \"type\"",
        ),
        (
            r#"{"k": null}"#,
            "key \"k\": invalid type: null, expected a type name",
        ),
        (r#"{"k": {}}"#, "key \"k\": missing field `type`"),
        (
            r#"{"k": {"type": 1}}"#,
            "key \"k\" at type: invalid type: integer `1`, expected a type name",
        ),
        (
            r#"{"k": {"type": "Integer"}}"#,
            "key \"k\" at type: unknown type \"Integer\"",
        ),
        (
            r#"{"k": {"type": "Int", "nulable": true}}"#,
            "key \"k\" at nulable: unknown field `nulable`",
        ),
        (
            r#"{"k": {"type": "Int", "nullable": "yes"}}"#,
            "key \"k\" at nullable: invalid type: string \"yes\", expected a boolean",
        ),
        (
            r#"{"k": {"type": "Int", "nullable": null}}"#,
            "key \"k\" at nullable: invalid type: null, expected a boolean",
        ),
        (
            r#"{"k": {"type": "Int", "fields": {}}}"#,
            "key \"k\": attribute \"fields\" not allowed on Int (allowed: type, nullable)",
        ),
        (
            r#"{"k": {"type": "Object", "items": "Int"}}"#,
            "key \"k\": attribute \"items\" not allowed on Object",
        ),
        (
            r#"{"k": {"type": "Array", "fields": {}}}"#,
            "key \"k\": attribute \"fields\" not allowed on Array",
        ),
        (
            r#"{"k": {"type": "Array", "required": []}}"#,
            "key \"k\": attribute \"required\" not allowed on Array",
        ),
        (
            r#"{"k": {"type": "Object", "fields": []}}"#,
            "key \"k\" at fields: invalid type: sequence, expected an object mapping field names to types",
        ),
        (
            r#"{"k": {"type": "Object", "required": "x"}}"#,
            "key \"k\" at required: invalid type: string \"x\", expected a list of field names",
        ),
        (
            r#"{"k": {"type": "Object", "required": [1]}}"#,
            "key \"k\" at required[0]: invalid type: integer `1`, expected a string",
        ),
        (
            r#"{"k": {"type": "Object", "fields": {"p": {"type": "Object", "fields": {"x": "Num"}}}}}"#,
            "key \"k\" at fields.p.fields.x: unknown type \"Num\"",
        ),
        (
            r#"{"k": {"type": "Array", "items": "Nope"}}"#,
            "key \"k\" at items: unknown type \"Nope\"",
        ),
        (
            r#"{"k": {"type": "Array", "items": {"type": "Int", "x": 1}}}"#,
            "key \"k\" at items.x: unknown field `x`",
        ),
        (r#"{"a..b": "Int"}"#, "key \"a..b\": not a state key"),
        (r#"{"a.*.b": "Int"}"#, "key \"a.*.b\": not a state key"),
        (r#"{"": "Int"}"#, "key \"\": not a state key"),
        (r#"{"a b": "Int"}"#, "key \"a b\": not a state key"),
    ];

    for (text, needle) in cases {
        let msg = load_error(text);
        assert!(msg.contains(needle), "{text}: {msg:?} lacks {needle:?}");
        assert!(msg.starts_with("schema file <inline>: "), "{msg}");
    }
}

#[test]
fn invalid_utf8_is_a_located_json_error() {
    let err = Schema::from_json_slice(b"{\"k\xff\": \"Int\"}").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SchemaLoadError::Invalid { .. }), "{msg}");
    assert!(
        msg.contains("JSON: invalid unicode code point at line 1"),
        "{msg}"
    );
    let ok = Schema::from_json_slice(br#"{"k": "Int"}"#).expect("valid");
    assert!(ok.validate("k", &val(json!("x"))).is_err());
}

#[test]
fn long_and_short_forms_build_the_same_types() {
    let short = schema(json!({"k": "Int", "o": "Object", "a": "Array"}));
    let long = schema(json!({
        "k": {"type": "Int"},
        "o": {"type": "Object", "fields": {}, "required": []},
        "a": {"type": "Array", "nullable": false},
    }));
    for key in ["k", "o", "a"] {
        assert_eq!(short.type_of(key), long.type_of(key), "{key}");
    }
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = std::env::temp_dir().join(format!("sodp-auth-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("good.json");
    std::fs::write(&good, r#"{"game.score": "Int"}"#).expect("write");
    let s = Schema::load(&good).expect("loads");
    assert!(s.type_of("game.score").is_some());
    assert_eq!(
        s.type_of("game.score").map(|t| t.to_string()).as_deref(),
        Some("Int")
    );

    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"game.score": "Number"}"#).expect("write");
    let msg = Schema::load(&bad).unwrap_err().to_string();
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(msg.contains("game.score"), "{msg}");

    let err = Schema::load(dir.join("missing.json")).unwrap_err();
    assert!(matches!(err, SchemaLoadError::Io { .. }));
}
