//! The exact encoded size of a key's value after a write, computed before
//! the write is made, so `--max-value-bytes` and `--max-memory` can refuse
//! it with nothing changed.
//!
//! Sizes are MessagePack-encoded lengths. A write's effect is computed from
//! what it touches only — the containers on its path (their entry counts,
//! since a header grows at 16 and 65,536 entries), the part it replaces and
//! the part it adds — never by measuring the whole value, so the check costs
//! what the write costs. Every function here mirrors the rules of
//! `sodp_proto::delta::apply_in_place` (missing intermediates and
//! non-containers on the path become containers of the kind the next
//! segment implies); the property test in `tests/size_exact.rs` holds the
//! two together: after any sequence of writes the recorded size equals
//! `encoded_len` of the value.

use sodp_proto::codec::{container_header_len, encoded_len, str_encoded_len};
use sodp_proto::{Map, Value};

/// The size after a write that changes it by `change` (from `current`).
fn apply(current: usize, change: isize) -> usize {
    current.saturating_add_signed(change)
}

fn len(value: &Value) -> isize {
    encoded_len(value) as isize
}

/// How much a container's header grows when its entry count goes from `n`
/// to `n + 1` (or shrinks, for `n` to `n - 1` with `grow = false`).
fn header_change(n: usize, grow: bool) -> isize {
    let after = if grow { n + 1 } else { n.saturating_sub(1) };
    container_header_len(after) as isize - container_header_len(n) as isize
}

/// Cost of a map key in the encoding.
fn key_len(key: &str) -> isize {
    str_encoded_len(key.len()) as isize
}

/// True when `segment` makes the container it indexes an array (`-` or
/// digits), as `apply_in_place` decides.
fn is_array_segment(segment: &str) -> bool {
    segment == "-" || (!segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()))
}

fn index(segment: &str) -> Option<usize> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

/// Size of the chain of new one-entry containers that `segments` creates
/// around `value` (each container's kind is implied by the segment that
/// indexes it).
fn created_len(segments: &[String], value: &Value) -> isize {
    segments
        .iter()
        .map(|seg| {
            1 + if is_array_segment(seg) {
                0
            } else {
                key_len(seg)
            }
        })
        .sum::<isize>()
        + len(value)
}

/// The size after `state.set` to `value`.
pub fn after_set(value: &Value) -> usize {
    encoded_len(value)
}

/// The size after deep-merging `patch` into `old` (of size `current`).
pub fn after_patch(current: usize, old: &Value, patch: &Map) -> usize {
    apply(current, patch_change(old, patch))
}

fn patch_change(old: &Value, patch: &Map) -> isize {
    let Value::Map(m) = old else {
        // Replaced by the patch itself.
        return len(&Value::Map(std::sync::Arc::new(patch.clone()))) - len(old);
    };
    let mut added = 0;
    let mut change = 0;
    for (k, pv) in patch {
        change += match (m.get(k.as_str()), pv) {
            (Some(ov @ Value::Map(_)), Value::Map(pm)) => patch_change(ov, pm),
            (Some(ov), pv) => len(pv) - len(ov),
            (None, pv) => {
                added += 1;
                key_len(k) + len(pv)
            }
        };
    }
    change + container_header_len(m.len() + added) as isize - container_header_len(m.len()) as isize
}

/// The size after setting `segments` to `new` in `old` (of size `current`).
/// A write that will be refused (bad path) may get any figure: nothing is
/// stored then.
pub fn after_set_in(current: usize, old: &Value, segments: &[String], new: &Value) -> usize {
    apply(current, set_in_change(old, segments, new))
}

fn set_in_change(root: &Value, segments: &[String], new: &Value) -> isize {
    let Some(last_index) = segments.len().checked_sub(1) else {
        return len(new) - len(root);
    };
    if !root.is_container() {
        return created_len(segments, new) - len(root);
    }
    let mut node = root;
    for (i, seg) in segments.iter().enumerate() {
        let last = i == last_index;
        // What goes at `seg` when it is new: the value, or new containers
        // holding the rest of the path.
        let fresh = || {
            if last {
                len(new)
            } else {
                created_len(&segments[i + 1..], new)
            }
        };
        let (child, entry_key, count) = match node {
            Value::Map(m) => (m.get(seg.as_str()), key_len(seg), m.len()),
            Value::Array(a) => {
                let idx = if last && seg == "-" {
                    Some(a.len())
                } else {
                    index(seg)
                };
                match idx {
                    Some(idx) if idx <= a.len() => (a.get(idx), 0, a.len()),
                    _ => return 0, // Refused by the write itself.
                }
            }
            _ => unreachable!("only containers are walked"),
        };
        match child {
            None => return entry_key + fresh() + header_change(count, true),
            Some(child) if last => return len(new) - len(child),
            Some(child) if child.is_container() => node = child,
            // A scalar in the way becomes a container for the rest.
            Some(child) => return fresh() - len(child),
        }
    }
    unreachable!("the last segment returns")
}

/// The size after removing `segments` from `old` (of size `current`), as
/// presence release does; unchanged if the location does not exist.
pub fn after_remove(current: usize, old: &Value, segments: &[String]) -> usize {
    let Some((last, parents)) = segments.split_last() else {
        return encoded_len(&Value::Nil);
    };
    let Some(parent) = sodp_proto::delta::lookup(old, parents) else {
        return current;
    };
    let change = match parent {
        Value::Map(m) => match m.get(last.as_str()) {
            Some(v) => -(key_len(last) + len(v)) + header_change(m.len(), false),
            None => 0,
        },
        Value::Array(a) => match index(last).and_then(|i| a.get(i)) {
            Some(v) => -len(v) + header_change(a.len(), false),
            None => 0,
        },
        _ => 0,
    };
    apply(current, change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sodp_proto::merge;
    use sodp_proto::pointer;

    fn map_of(n: usize) -> Value {
        Value::from(serde_json::Value::Object(
            (0..n)
                .map(|i| (format!("k{i}"), serde_json::json!(i)))
                .collect(),
        ))
    }

    fn segs(path: &str) -> Vec<String> {
        pointer::parse(path).unwrap()
    }

    /// Adding and removing entries across the 16-entry header boundary
    /// (and with long keys across the 32-byte string boundary).
    #[test]
    fn header_and_string_boundaries_are_exact() {
        for n in 13..19 {
            for key in ["x", &"y".repeat(31), &"z".repeat(33)] {
                let old = map_of(n);
                let current = encoded_len(&old);
                let path = format!("/{key}");
                let new = Value::from("v");
                let mut added = old.clone();
                merge::set_in_in_place(&mut added, &path, new.clone()).unwrap();
                assert_eq!(
                    after_set_in(current, &old, &segs(&path), &new),
                    encoded_len(&added),
                    "add {key} to {n}"
                );
                let mut removed = added.clone();
                merge::remove_in_in_place(&mut removed, &path).unwrap();
                assert_eq!(
                    after_remove(encoded_len(&added), &added, &segs(&path)),
                    encoded_len(&removed),
                    "remove {key} from {}",
                    n + 1
                );
                let list = Value::from(serde_json::json!(vec![1; n]));
                let mut appended = list.clone();
                merge::set_in_in_place(&mut appended, "/-", new.clone()).unwrap();
                assert_eq!(
                    after_set_in(encoded_len(&list), &list, &segs("/-"), &new),
                    encoded_len(&appended)
                );
                let mut popped = appended.clone();
                merge::remove_in_in_place(&mut popped, "/0").unwrap();
                assert_eq!(
                    after_remove(encoded_len(&appended), &appended, &segs("/0")),
                    encoded_len(&popped)
                );
            }
        }
    }
}
