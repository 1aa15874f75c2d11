//! Property tests: diff/apply agree, apply never mutates, codecs round-trip,
//! and the decoder never panics on arbitrary bytes.

use proptest::prelude::*;
use sodp_proto::codec::{decode_value, encode_value};
use sodp_proto::merge::merge_patch;
use sodp_proto::{apply, diff, Frame, Map, Value};

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (-1e9f64..1e9).prop_map(Value::Float),
        "[a-z/~]{0,6}".prop_map(Value::Str),
        prop::collection::vec(any::<u8>(), 0..4).prop_map(Value::Bin),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec(("[a-c/~]{1,3}", inner), 0..6)
                .prop_map(|kv| Value::from(kv.into_iter().collect::<Map>())),
        ]
    })
}

proptest! {
    #[test]
    fn apply_of_diff_gives_target(a in arb_value(), b in arb_value()) {
        let a_before = a.clone();
        let ops = diff(&a, &b);
        let got = apply(&a, &ops).unwrap();
        prop_assert_eq!(&got, &b);
        prop_assert_eq!(&a, &a_before);
    }

    #[test]
    fn diff_of_equal_values_is_empty(a in arb_value()) {
        prop_assert!(diff(&a, &a.clone()).is_empty());
    }

    #[test]
    fn patch_ops_replay_to_the_merged_value(a in arb_value(), p in prop::collection::vec(("[a-c]{1,2}", arb_value()), 0..4)) {
        let patch: Map = p.into_iter().collect();
        let (merged, ops) = merge_patch(&a, &patch);
        let replayed = apply(&a, &ops).unwrap();
        prop_assert_eq!(replayed, merged);
    }

    #[test]
    fn codec_round_trips(a in arb_value()) {
        prop_assert_eq!(decode_value(&encode_value(&a), 64).unwrap(), a);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_value(&bytes, 16);
        let _ = Frame::decode(&bytes, 16);
    }
}

fn arb_path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("0".to_owned()),
            Just("1".to_owned()),
            Just("2".to_owned()),
            Just("-".to_owned())
        ],
        1..5,
    )
    .prop_map(|segs| sodp_proto::pointer::format(&segs))
}

proptest! {
    #[test]
    fn check_write_agrees_with_apply(a in arb_value(), path in arb_path()) {
        let segments = sodp_proto::pointer::parse(&path).unwrap();
        let checked = sodp_proto::delta::check_write(&a, &segments).is_ok();
        let applied = apply(&a, &[sodp_proto::DeltaOp::add(path.clone(), Value::Int(7))]).is_ok();
        prop_assert_eq!(checked, applied, "path {}", path);
    }

    #[test]
    fn set_in_in_place_fails_without_changing_anything(a in arb_value(), path in arb_path()) {
        let mut target = a.clone();
        match sodp_proto::merge::set_in_in_place(&mut target, &path, Value::Int(7)) {
            Ok(_) => prop_assert_eq!(target, sodp_proto::merge::set_in(&a, &path, Value::Int(7)).unwrap().map_or(a.clone(), |(v, _)| v)),
            Err(_) => prop_assert_eq!(target, a),
        }
    }

    #[test]
    fn undo_restores_a_patched_value(a in arb_value(), p in prop::collection::vec(("[a-c]{1,2}", arb_value()), 0..4)) {
        let patch: Map = p.into_iter().collect();
        let mut target = a.clone();
        let undo = sodp_proto::merge::Undo::before_patch(&target, &patch);
        let _ = sodp_proto::merge::merge_patch_in_place(&mut target, &patch);
        undo.restore(&mut target);
        prop_assert_eq!(target, a);
    }
}

proptest! {
    #[test]
    fn encoded_len_is_exact(a in arb_value()) {
        prop_assert_eq!(sodp_proto::codec::encoded_len(&a), encode_value(&a).len());
    }
}
