//! ACL file parsing on arbitrary bytes must never panic or overflow the
//! stack; an ACL that loads must decide any key for any identity without
//! panicking. The seeded corpus (`corpus/acl_file/`) is also run by
//! `cargo test -p sodp-auth` (crates/sodp-auth/tests/file_corpus.rs).
#![no_main]

use sodp_auth::{Acl, Identity};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(acl) = Acl::from_json_slice(data) {
        let who = Identity::new(
            "alice",
            serde_json::json!({"sub": "alice", "roles": ["admin"], "scope": "read write"}),
        );
        for key in ["", "a", "users.alice.x", "public.news", "a..b", "users.{sub}"] {
            let _ = acl.can_read(key, &who);
            let _ = acl.can_write(key, &Identity::anonymous());
        }
    }
});
