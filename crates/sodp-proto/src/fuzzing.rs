//! The body of the `frame_apply` fuzz target, shared with the test suite's
//! hostile corpus (`tests/hostile_corpus.rs`) so both exercise the same code.

use crate::delta::{self, DeltaOp};
use crate::frame::Frame;
use crate::merge;
use crate::value::Value;

/// Decodes `data` as a frame; if it carries `ops`, applies them; if it
/// carries a `patch` map or a `path`, runs the write operations too.
/// Must return for every input without panicking.
pub fn frame_and_apply(data: &[u8]) {
    let Ok(frame) = Frame::decode(data, 32) else {
        return;
    };
    let base = frame.body.get("value").cloned().unwrap_or(Value::Nil);
    if let Some(ops) = frame.body.get("ops") {
        if let Ok(ops) = DeltaOp::list_from_value(ops) {
            if let Ok(after) = delta::apply(&base, &ops) {
                // Round-trip the result and diff back to the base.
                let back = delta::diff(&after, &base);
                let again = delta::apply(&after, &back).expect("diff output always applies");
                assert_eq!(again, base);
            }
        }
    }
    if let Some(patch) = frame.body.get("patch").and_then(Value::as_map) {
        let (merged, ops) = merge::merge_patch(&base, patch);
        assert_eq!(delta::apply(&base, &ops).expect("patch ops apply"), merged);
    }
    if let Some(path) = frame.body.get("path").and_then(Value::as_str) {
        // An in-place write either succeeds or leaves the value untouched.
        let mut target = base.clone();
        if merge::set_in_in_place(&mut target, path, Value::Int(1)).is_err() {
            assert_eq!(target, base);
        }
        let mut target = base.clone();
        let _ = merge::remove_in_in_place(&mut target, path);
    }
    let _ = frame.encode();
}
