//! Runs the fuzz targets' bodies over the seeded corpora in
//! `fuzz/corpus/acl_file/` and `fuzz/corpus/schema_file/` (both ACL forms,
//! truncated files, wrong types, unknown fields, deep nesting, huge numbers,
//! invalid UTF-8), so every test run exercises what the fuzzer starts from.
//!
//! Seeds named `valid-*` must load, seeds named `bad-*` must be refused with
//! a located error; any other file (one a fuzzer added) must only not panic.

use std::path::{Path, PathBuf};

use sodp_auth::{Acl, AclError, Identity, Schema, SchemaLoadError};
use sodp_proto::Value;

fn corpus(name: &str) -> Vec<(String, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, path)
        })
        .collect();
    files.sort();
    files
}

/// What the `acl_file` fuzz target does with one input.
fn acl_target(data: &[u8]) -> Result<Acl, AclError> {
    let acl = Acl::from_json_slice(data)?;
    let who = Identity::new(
        "alice",
        serde_json::json!({"sub": "alice", "roles": ["admin"], "scope": "read write"}),
    );
    for key in [
        "",
        "a",
        "users.alice.x",
        "public.news",
        "a..b",
        "users.{sub}",
    ] {
        let _ = acl.can_read(key, &who);
        let _ = acl.can_write(key, &Identity::anonymous());
    }
    Ok(acl)
}

/// What the `schema_file` fuzz target does with one input.
fn schema_target(data: &[u8]) -> Result<Schema, SchemaLoadError> {
    let schema = Schema::from_json_slice(data)?;
    let value = Value::from(serde_json::json!({"a": [1, "x", null], "x": 1.5}));
    for key in ["", "k", "game.score", "users.alice", "a.b.c"] {
        let _ = schema.validate(key, &value);
        let _ = schema.validate(key, &Value::Nil);
    }
    Ok(schema)
}

#[test]
fn acl_corpus_never_panics_and_seeds_behave() {
    let files = corpus("acl_file");
    let (mut valid, mut bad) = (0, 0);
    for (name, path) in &files {
        let data = std::fs::read(path).expect("read seed");
        let result = acl_target(&data);
        if name.starts_with("valid-") {
            let acl = result.unwrap_or_else(|e| panic!("{name} must load: {e}"));
            assert!(!acl.is_empty(), "{name}");
            valid += 1;
        } else if name.starts_with("bad-") {
            match result {
                Ok(_) => panic!("{name} must be refused"),
                Err(AclError::Invalid { location, .. }) => {
                    assert!(!location.is_empty(), "{name}")
                }
                Err(e) => panic!("{name}: not a located error: {e}"),
            }
            bad += 1;
        }
        // Loading from the file reads the same bytes the same way.
        assert_eq!(
            Acl::load(path).map(|a| a.len()).map_err(|e| e
                .to_string()
                .replace(&path.display().to_string(), "<inline>")),
            Acl::from_json_slice(&data)
                .map(|a| a.len())
                .map_err(|e| e.to_string()),
            "{name}"
        );
    }
    assert!(valid >= 5, "only {valid} valid ACL seeds");
    assert!(bad >= 25, "only {bad} bad ACL seeds");
    for must in [
        "valid-string-form.json",
        "valid-list-form.json",
        "valid-mixed-forms.json",
        "bad-truncated.json",
        "bad-deep-nesting.json",
        "bad-huge-numbers.json",
        "bad-invalid-utf8.json",
        "bad-unknown-field-rule.json",
        "bad-read-number.json",
    ] {
        assert!(files.iter().any(|(n, _)| n == must), "seed {must} missing");
    }
}

#[test]
fn schema_corpus_never_panics_and_seeds_behave() {
    let files = corpus("schema_file");
    let (mut valid, mut bad) = (0, 0);
    for (name, path) in &files {
        let data = std::fs::read(path).expect("read seed");
        let result = schema_target(&data);
        if name.starts_with("valid-") {
            result.unwrap_or_else(|e| panic!("{name} must load: {e}"));
            valid += 1;
        } else if name.starts_with("bad-") {
            match result {
                Ok(_) => panic!("{name} must be refused"),
                Err(SchemaLoadError::Invalid { location, .. }) => {
                    assert!(!location.is_empty(), "{name}")
                }
                Err(e) => panic!("{name}: not a located error: {e}"),
            }
            bad += 1;
        }
    }
    assert!(valid >= 5, "only {valid} valid schema seeds");
    assert!(bad >= 20, "only {bad} bad schema seeds");
    for must in [
        "valid-doc-example.json",
        "valid-deep-items.json",
        "bad-truncated.json",
        "bad-deep-nesting.json",
        "bad-huge-numbers.json",
        "bad-invalid-utf8.json",
        "bad-unknown-attribute.json",
        "bad-wrong-type-number.json",
    ] {
        assert!(files.iter().any(|(n, _)| n == must), "seed {must} missing");
    }
}

#[test]
fn deep_but_legal_schemas_load_and_validate() {
    // 120 nested `items` (JSON depth ~121, under serde_json's 128) loads, and
    // validation follows it without overflowing the test thread's stack.
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/schema_file/valid-deep-items.json");
    let schema = Schema::load(&path).expect("loads");
    let mut ok = serde_json::json!(true);
    for _ in 0..120 {
        ok = serde_json::json!([ok]);
    }
    assert!(schema.validate("k", &Value::from(ok)).is_ok());
    let mut bad = serde_json::json!(1);
    for _ in 0..120 {
        bad = serde_json::json!([bad]);
    }
    let err = schema
        .validate("k", &Value::from(bad))
        .expect_err("Int is not Bool");
    assert!(
        err.to_string().ends_with(": expected Bool, got int"),
        "{err}"
    );
    assert_eq!(err.path(), "/0".repeat(120));
}
