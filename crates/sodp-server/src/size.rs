//! How large a key's value will be after a write, judged before the write
//! is made, so `--max-value-bytes` can refuse it with nothing changed.
//!
//! Sizes are MessagePack-encoded lengths. A write's effect is computed from
//! what it touches only (the patch, the replaced part), never by measuring
//! the whole value, so the check costs what the write costs. Map and array
//! headers growing by a few bytes are ignored: the figure is exact for
//! `state.set` and within a few bytes per write otherwise.

use sodp_proto::codec::encoded_len;
use sodp_proto::{delta, pointer, Map, Value};

/// Encoded length of a map key.
fn key_len(key: &str) -> usize {
    encoded_len(&Value::Str(String::new())) + key.len()
}

/// The size after deep-merging `patch` into `old` (of size `current`).
pub fn after_patch(current: usize, old: &Value, patch: &Map) -> usize {
    match old {
        Value::Map(_) => apply_change(current, patch_change(old, patch)),
        _ => encoded_len(&Value::Map(std::sync::Arc::new(patch.clone()))),
    }
}

/// The size after setting `path` to `new` in `old` (of size `current`).
pub fn after_set_in(current: usize, old: &Value, path: &str, new: &Value) -> usize {
    let Ok(segments) = pointer::parse(path) else {
        return current; // The write itself will be refused.
    };
    let change = match delta::lookup(old, &segments) {
        Some(existing) => encoded_len(new) as isize - encoded_len(existing) as isize,
        None => (encoded_len(new) + segments.last().map_or(0, |s| key_len(s))) as isize,
    };
    apply_change(current, change)
}

fn patch_change(old: &Value, patch: &Map) -> isize {
    let Value::Map(m) = old else {
        return encoded_len(&Value::Map(std::sync::Arc::new(patch.clone()))) as isize
            - encoded_len(old) as isize;
    };
    patch
        .iter()
        .map(|(k, pv)| match (m.get(k.as_str()), pv) {
            (Some(ov @ Value::Map(_)), Value::Map(pm)) => patch_change(ov, pm),
            (Some(ov), pv) => encoded_len(pv) as isize - encoded_len(ov) as isize,
            (None, pv) => (key_len(k) + encoded_len(pv)) as isize,
        })
        .sum()
}

fn apply_change(current: usize, change: isize) -> usize {
    current.saturating_add_signed(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sodp_proto::codec::encoded_len;
    use sodp_proto::merge;

    fn v(j: serde_json::Value) -> Value {
        j.into()
    }

    #[test]
    fn predictions_track_the_real_size() {
        let old = v(json!({"a": {"b": "x".repeat(100)}, "c": 1}));
        let current = encoded_len(&old);
        let patch = match v(json!({"a": {"b": "y"}, "d": [1, 2, 3]})) {
            Value::Map(m) => (*m).clone(),
            _ => unreachable!(),
        };
        let (merged, _) = merge::merge_patch(&old, &patch);
        let predicted = after_patch(current, &old, &patch);
        assert!(
            predicted.abs_diff(encoded_len(&merged)) <= 4,
            "{predicted} vs {}",
            encoded_len(&merged)
        );

        let new = v(json!("z".repeat(500)));
        let (set, _) = merge::set_in(&old, "/a/b", new.clone()).unwrap().unwrap();
        let predicted = after_set_in(current, &old, "/a/b", &new);
        assert!(predicted.abs_diff(encoded_len(&set)) <= 4);
        let (added, _) = merge::set_in(&old, "/e", new.clone()).unwrap().unwrap();
        let predicted = after_set_in(current, &old, "/e", &new);
        assert!(predicted.abs_diff(encoded_len(&added)) <= 4);
    }
}
