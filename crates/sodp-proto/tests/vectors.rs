//! Runs the shared JSON vectors in `tests/vectors/` (the Python client runs
//! the same files, so the two implementations cannot drift).

use serde_json::Value as Json;
use sodp_proto::{apply, diff, DeltaOp, Value};

fn load(name: &str) -> Vec<Json> {
    let path = format!("{}/../../tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn ops(j: &Json) -> Result<Vec<DeltaOp>, sodp_proto::ApplyError> {
    DeltaOp::list_from_value(&Value::from(j.clone()))
}

#[test]
fn apply_vectors() {
    let cases = load("apply.json");
    assert!(cases.len() >= 30);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let before = Value::from(case["before"].clone());
        let result = ops(&case["ops"]).and_then(|ops| apply(&before, &ops));
        if case.get("error").is_some() {
            assert!(result.is_err(), "{name}: expected an error, got {result:?}");
        } else {
            let after = Value::from(case["after"].clone());
            assert_eq!(result.as_ref().ok(), Some(&after), "{name}");
        }
        assert_eq!(
            before,
            Value::from(case["before"].clone()),
            "{name}: input mutated"
        );
    }
}

#[test]
fn diff_vectors() {
    for case in load("diff.json") {
        let name = case["name"].as_str().unwrap();
        let old = Value::from(case["old"].clone());
        let new = Value::from(case["new"].clone());
        let got = diff(&old, &new);
        assert_eq!(got, ops(&case["ops"]).unwrap(), "{name}: ops");
        assert_eq!(apply(&old, &got).unwrap(), new, "{name}: apply(old, ops)");
    }
}
