//! A fast path for the frame a server decodes most often: CALL.
//!
//! [`Frame::decode`](crate::Frame::decode) builds a whole value tree — a map
//! for the body, strings for every field name, the call id and method, a map
//! for `args`. [`CallFrame::decode`] reads the same bytes but borrows every
//! string from the input and builds only the argument values, which is what
//! a write actually keeps. It accepts exactly the well-formed CALLs; for
//! anything else it returns `None` and the caller decodes the ordinary way,
//! which classifies the error precisely.

use crate::codec::{utf8, Decoder};
use crate::frame::FrameType;
use crate::value::Value;

/// A CALL frame with borrowed strings.
#[derive(Debug, PartialEq)]
pub struct CallFrame<'a> {
    pub stream_id: u32,
    pub seq: u64,
    pub call_id: &'a str,
    pub method: Option<&'a str>,
    pub args: CallArgs<'a>,
    /// `idempotency_key` (extension `idempotency`), when it is a string.
    pub idempotency_key: Option<&'a str>,
}

/// The `args` of a CALL.
#[derive(Debug, Clone, PartialEq)]
pub enum CallArgs<'a> {
    /// No `args` field.
    Absent,
    /// `args` is not a map.
    NotAMap,
    /// The fields of the `args` map, in order (a repeated name: last wins).
    Fields(Vec<(&'a str, Value)>),
}

impl<'a> CallArgs<'a> {
    /// The `args` of an ordinarily decoded CALL body (the slow path).
    pub fn of_body(body: &'a Value) -> CallArgs<'a> {
        match body.get("args") {
            None => CallArgs::Absent,
            Some(Value::Map(m)) => {
                CallArgs::Fields(m.iter().map(|(k, v)| (k.as_str(), v.clone())).collect())
            }
            Some(_) => CallArgs::NotAMap,
        }
    }
}

impl<'a> CallFrame<'a> {
    /// Decodes `bytes` if they are a well-formed CALL with a string
    /// `call_id` and nothing nested deeper than `max_depth` (counted as
    /// [`Frame::decode`](crate::Frame::decode) counts it).
    pub fn decode(bytes: &'a [u8], max_depth: usize) -> Option<CallFrame<'a>> {
        let mut dec = Decoder::new(bytes, max_depth).skipping_too_deep();
        let frame = Self::read(&mut dec).ok()??;
        if dec.finish().is_err() || dec.skipped_too_deep() {
            return None;
        }
        Some(frame)
    }

    fn read(dec: &mut Decoder<'a>) -> Result<Option<CallFrame<'a>>, crate::codec::DecodeError> {
        if dec.array_len()? != Some(4) {
            return Ok(None);
        }
        if dec.uint()? != Some(FrameType::Call as u64) {
            return Ok(None);
        }
        let Some(stream_id) = dec.uint()?.and_then(|s| u32::try_from(s).ok()) else {
            return Ok(None);
        };
        let Some(seq) = dec.uint()? else {
            return Ok(None);
        };
        let Some(fields) = dec.map_len()? else {
            return Ok(None);
        };
        let (mut call_id, mut method, mut args) = (None, None, CallArgs::Absent);
        let mut idempotency_key = None;
        for _ in 0..fields {
            // The envelope's names are matched as bytes (a match is valid
            // UTF-8); only other names are checked. This runs on every CALL.
            let Some(name) = dec.str_bytes()? else {
                return Ok(None);
            };
            // A call_id, method or idempotency key of another type: let the
            // slow path say so.
            match name {
                b"call_id" => match dec.str_ref()? {
                    Some(s) => call_id = Some(s),
                    None => return Ok(None),
                },
                b"method" => match dec.str_bytes()? {
                    Some(bytes) => method = Some(method_name(bytes)?),
                    None => return Ok(None),
                },
                b"args" => args = Self::read_args(dec)?,
                b"idempotency_key" => match dec.str_ref()? {
                    Some(s) => idempotency_key = Some(s),
                    None => return Ok(None),
                },
                other => {
                    utf8(other)?;
                    dec.skip()?;
                }
            }
        }
        Ok(call_id.map(|call_id| CallFrame {
            stream_id,
            seq,
            call_id,
            method,
            args,
            idempotency_key,
        }))
    }

    fn read_args(dec: &mut Decoder<'a>) -> Result<CallArgs<'a>, crate::codec::DecodeError> {
        let Some(n) = dec.map_len()? else {
            dec.skip()?;
            return Ok(CallArgs::NotAMap);
        };
        let mut fields = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(name) = dec.str_bytes()? else {
                return Err(crate::codec::DecodeError::NonStringKey);
            };
            // body (depth 1) → args (2) → argument values (3).
            fields.push((arg_name(name)?, dec.value(3)?));
        }
        Ok(CallArgs::Fields(fields))
    }
}

/// A method's name: the protocol's own matched as bytes (no UTF-8 check
/// needed for a match), any other checked.
fn method_name(bytes: &[u8]) -> Result<&str, crate::codec::DecodeError> {
    Ok(match bytes {
        b"state.set" => "state.set",
        b"state.patch" => "state.patch",
        b"state.set_in" => "state.set_in",
        b"state.delete" => "state.delete",
        b"state.presence" => "state.presence",
        b"state.get" => "state.get",
        b"state.transaction" => "state.transaction",
        other => utf8(other)?,
    })
}

/// An argument's name: the common ones matched as bytes (no UTF-8 check
/// needed for a match), any other checked.
fn arg_name(bytes: &[u8]) -> Result<&str, crate::codec::DecodeError> {
    Ok(match bytes {
        b"state" => "state",
        b"value" => "value",
        b"patch" => "patch",
        b"path" => "path",
        b"ops" => "ops",
        b"ttl_ms" => "ttl_ms",
        b"if_version" => "if_version",
        other => utf8(other)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Frame;

    fn call(body: serde_json::Value) -> Vec<u8> {
        Frame::new(FrameType::Call, 3, Value::from(body)).encode()
    }

    #[test]
    fn reads_a_call_borrowing_its_strings() {
        let bytes = call(serde_json::json!({
            "call_id": "c1", "method": "state.set", "args": {"state": "k", "value": {"a": [1]}}
        }));
        let f = CallFrame::decode(&bytes, 16).unwrap();
        assert_eq!(
            (f.call_id, f.method, f.stream_id),
            ("c1", Some("state.set"), 3)
        );
        assert_eq!(
            f.args,
            CallArgs::Fields(vec![
                ("state", Value::from("k")),
                ("value", Value::from(serde_json::json!({"a": [1]}))),
            ])
        );
    }

    #[test]
    fn leaves_everything_else_to_the_slow_path() {
        let cases = [
            call(serde_json::json!({"method": "state.set"})),
            call(serde_json::json!({"call_id": 5, "method": "state.set"})),
            call(serde_json::json!({"call_id": "c", "method": 5})),
            Frame::new(
                FrameType::Watch,
                0,
                Value::from(serde_json::json!({"call_id": "c"})),
            )
            .encode(),
            Frame::new(FrameType::Call, 0, Value::Nil).encode(),
            vec![0xc1],
        ];
        for bytes in cases {
            assert_eq!(CallFrame::decode(&bytes, 16), None, "{bytes:?}");
        }
        let mut trailing = call(serde_json::json!({"call_id": "c"}));
        trailing.push(0xc0);
        assert_eq!(CallFrame::decode(&trailing, 16), None);
        let mut deep = Value::Int(1);
        for _ in 0..20 {
            deep = Value::from(vec![deep]);
        }
        let body = Value::map_from([
            ("call_id", Value::from("c")),
            ("args", Value::map_from([("v", deep)])),
        ]);
        assert_eq!(
            CallFrame::decode(&Frame::new(FrameType::Call, 0, body).encode(), 16),
            None
        );
    }

    #[test]
    fn names_are_still_checked_to_be_utf8() {
        let kind = FrameType::Call as u8;
        // {"call_id": "c", <0xff 0xfe>: nil}
        let mut envelope = vec![0x94, kind, 0, 0, 0x82, 0xa7];
        envelope.extend_from_slice(b"call_id");
        envelope.extend_from_slice(&[0xa1, b'c', 0xa2, 0xff, 0xfe, 0xc0]);
        assert_eq!(CallFrame::decode(&envelope, 16), None);
        // {"call_id": "c", "args": {<0xff 0xfe>: 1}}
        let mut args = vec![0x94, kind, 0, 0, 0x82, 0xa7];
        args.extend_from_slice(b"call_id");
        args.extend_from_slice(&[0xa1, b'c', 0xa4]);
        args.extend_from_slice(b"args");
        args.extend_from_slice(&[0x81, 0xa2, 0xff, 0xfe, 0x01]);
        assert_eq!(CallFrame::decode(&args, 16), None);
        // The same frames with valid names are read.
        let valid = |mut b: Vec<u8>, at: usize| {
            b[at..at + 2].copy_from_slice(b"zz");
            b
        };
        let fixed = valid(envelope.clone(), envelope.len() - 3);
        assert_eq!(CallFrame::decode(&fixed, 16).map(|f| f.call_id), Some("c"));
        let fixed = valid(args.clone(), args.len() - 3);
        let ok = CallFrame::decode(&fixed, 16).unwrap();
        assert_eq!(ok.args, CallArgs::Fields(vec![("zz", Value::Int(1))]));
        // Known argument names come back as themselves.
        let bytes = call(serde_json::json!({
            "call_id": "c", "args": {"state": "k", "path": "/a", "ops": [], "ttl_ms": 1,
                "if_version": 2, "patch": {}, "value": 0, "other": 3}
        }));
        let CallArgs::Fields(fields) = CallFrame::decode(&bytes, 16).unwrap().args else {
            panic!("fields");
        };
        let mut names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        let want = [
            "if_version",
            "ops",
            "other",
            "patch",
            "path",
            "state",
            "ttl_ms",
            "value",
        ];
        assert_eq!(names, want);
    }

    #[test]
    fn method_names_come_back_as_themselves_and_others_are_checked() {
        for method in [
            "state.set",
            "state.patch",
            "state.set_in",
            "state.delete",
            "state.presence",
            "state.get",
            "state.transaction",
            "state.keys",
            "state.sett",
            "admin.stats",
            "é",
            "",
        ] {
            let bytes = call(serde_json::json!({"call_id": "c", "method": method}));
            assert_eq!(CallFrame::decode(&bytes, 16).unwrap().method, Some(method));
        }
        // {"call_id": "c", "method": <0xff 0xfe>}: not UTF-8, so left to the slow
        // path, which reports it.
        let kind = FrameType::Call as u8;
        let mut bad = vec![0x94, kind, 0, 0, 0x82, 0xa7];
        bad.extend_from_slice(b"call_id");
        bad.extend_from_slice(&[0xa1, b'c', 0xa6]);
        bad.extend_from_slice(b"method");
        bad.extend_from_slice(&[0xa2, 0xff, 0xfe]);
        assert_eq!(CallFrame::decode(&bad, 16), None);
    }

    #[test]
    fn args_that_are_not_a_map_are_reported() {
        let bytes = call(serde_json::json!({"call_id": "c", "method": "m", "args": [1]}));
        assert_eq!(
            CallFrame::decode(&bytes, 16).unwrap().args,
            CallArgs::NotAMap
        );
        let bytes = call(serde_json::json!({"call_id": "c", "method": "m"}));
        assert_eq!(
            CallFrame::decode(&bytes, 16).unwrap().args,
            CallArgs::Absent
        );
    }
}
