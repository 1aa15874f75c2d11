//! Property: after any sequence of writes — set, patch, set_in, delete,
//! presence binds and the releases that follow sessions ending — the size the
//! store records for a key equals the real MessagePack size of its value.
//! Values cross the encoding's boundaries (16-entry containers, 32-byte
//! strings) so header growth is exercised.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value as Json};
use sodp_proto::codec::encoded_len;
use sodp_proto::{FrameType, Value};
use sodp_server::session::Session;
use sodp_server::{wire, Config, Shared};

#[derive(Debug, Clone)]
enum Step {
    Set(Json),
    Patch(Json),
    SetIn(String, Json),
    Delete,
    /// Session `n` binds a presence path.
    Presence(usize, String, Json),
    /// Session `n` ends (its presence is released).
    End(usize),
}

fn leaf() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        (0..300i64).prop_map(Json::from),
        "[a-z]{0,40}".prop_map(Json::from),
    ]
}

fn value() -> impl Strategy<Value = Json> {
    leaf().prop_recursive(3, 64, 20, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..20).prop_map(Json::from),
            prop::collection::btree_map("[a-d]{1,2}", inner, 0..20)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof!["[a-d]", Just("0".to_owned()), Just("-".to_owned())],
        1..4,
    )
    .prop_map(|segs| segs.iter().map(|s| format!("/{s}")).collect())
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        value().prop_map(Step::Set),
        prop::collection::btree_map("[a-e]{1,2}", value(), 0..20)
            .prop_map(|m| Step::Patch(Json::Object(m.into_iter().collect()))),
        (path(), value()).prop_map(|(p, v)| Step::SetIn(p, v)),
        Just(Step::Delete),
        (0..3usize, "/[a-z]{1,12}", leaf()).prop_map(|(n, p, v)| Step::Presence(n, p, v)),
        (0..3usize).prop_map(Step::End),
    ]
}

fn call(session: &mut Session, method: &str, args: Json) {
    let body = json!({"call_id": "c", "method": method, "args": args});
    let message = wire::encode(FrameType::Call, 1, 1, Value::from(body));
    session.on_frame(wire::ws_payload(&message));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn recorded_size_is_the_encoded_size(steps in prop::collection::vec(step(), 1..40)) {
        let shared = Arc::new(Shared::new(Config::default()).unwrap());
        let open = || Session::new(shared.clone(), shared.open_session());
        let mut sessions: Vec<Option<Session>> = vec![None, None, None];
        let mut writer = open();
        for step in steps {
            match step {
                Step::Set(v) => call(&mut writer, "state.set", json!({"state": "k", "value": v})),
                Step::Patch(p) => call(&mut writer, "state.patch", json!({"state": "k", "patch": p})),
                Step::SetIn(path, v) => {
                    call(&mut writer, "state.set_in", json!({"state": "k", "path": path, "value": v}))
                }
                Step::Delete => call(&mut writer, "state.delete", json!({"state": "k"})),
                Step::Presence(n, path, v) => {
                    let s = sessions[n].get_or_insert_with(open);
                    call(s, "state.presence", json!({"state": "k", "path": path, "value": v}));
                }
                Step::End(n) => sessions[n] = None,
            }
            let snap = shared.store.snapshot("k");
            if snap.version > 0 {
                prop_assert_eq!(shared.store.recorded_size("k"), encoded_len(&snap.value));
            }
        }
    }
}
