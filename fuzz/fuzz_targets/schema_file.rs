//! Schema file parsing on arbitrary bytes must never panic or overflow the
//! stack; a schema that loads must validate values without panicking. The
//! seeded corpus (`corpus/schema_file/`) is also run by
//! `cargo test -p sodp-auth` (crates/sodp-auth/tests/file_corpus.rs).
#![no_main]

use sodp_auth::Schema;
use sodp_proto::Value;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(schema) = Schema::from_json_slice(data) {
        let value = Value::from(serde_json::json!({"a": [1, "x", null], "x": 1.5}));
        for key in ["", "k", "game.score", "users.alice", "a.b.c"] {
            let _ = schema.validate(key, &value);
            let _ = schema.validate(key, &Value::Nil);
        }
    }
});
