//! Builders for the frames the server sends.
//!
//! Every builder returns a complete WebSocket binary message — the
//! WebSocket header followed by the MessagePack frame — so sessions write
//! these bytes to the socket as they are (`session::write_raw`), with no
//! per-subscriber framing or copying, several at once with one vectored send.
//!
//! DELTA is written straight to bytes from the ops (no intermediate map),
//! once per mutation; the same bytes go to every subscriber and into the
//! key's history for RESUME. That is why DELTAs carry seq 0 and the key's
//! server-wide stream id: nothing in them is per-session. A live DELTA
//! leaves out the key's name (the stream says it); a replay adds it.

use std::cell::RefCell;

use bytes::Bytes;
use sodp_proto::codec::{self, write_map_len, write_str, write_uint};
use sodp_proto::frame::{write_header, FrameType};
use sodp_proto::{DeltaOp, Frame, Value};

use crate::error::Rejection;

thread_local! {
    /// Reused encoding buffer: frames are built here, then copied once into
    /// an exactly-sized `Bytes` (no reallocation while encoding, and no spare
    /// capacity kept alive in queues and history).
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

/// Encodes a frame with the thread's scratch buffer and returns it as one
/// WebSocket binary message.
fn build(encode: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    SCRATCH.with(|scratch| {
        let mut buf = scratch.borrow_mut();
        buf.clear();
        encode(&mut buf);
        let message = ws_message(&buf);
        if buf.capacity() > 1 << 20 {
            // Do not keep a huge buffer around after one huge frame.
            *buf = Vec::with_capacity(4096);
        }
        message
    })
}

/// Wraps `payload` in a final, unmasked, binary WebSocket frame (RFC 6455
/// §5.2; servers never mask).
pub fn ws_message(payload: &[u8]) -> Bytes {
    let n = payload.len();
    // Exactly sized: `Bytes::from` a `Vec` with spare room allocates a
    // second, shared header for it (one more malloc and free per frame).
    let mut out = Vec::with_capacity(ws_header_len(n) + n);
    out.push(0x82);
    if n < 126 {
        out.push(n as u8);
    } else if n <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// The WebSocket header's length for a payload of `n` bytes.
fn ws_header_len(n: usize) -> usize {
    match n {
        0..126 => 2,
        126..=0xffff => 4,
        _ => 10,
    }
}

/// The MessagePack frame inside a message built here (tests and tools).
pub fn ws_payload(message: &[u8]) -> &[u8] {
    match message.get(1) {
        Some(127) => &message[10..],
        Some(126) => &message[4..],
        _ => &message[2..],
    }
}

/// `[DELTA, stream_id, 0, {version, ops}]`: a key's DELTA as its
/// subscribers are sent it live. It does not name the key: a client maps
/// the stream to the key from the STATE_INIT that came first (PROTOCOL.md,
/// "Subscriptions"), and the name would be most of a small DELTA's bytes —
/// copied, checksummed and parsed once per delivery. A RESUME replays it
/// with `state` ([`with_state`]), since a replay comes before its STATE_INIT.
pub fn delta(stream_id: u32, version: u64, ops: &[DeltaOp]) -> Bytes {
    delta_expiring(stream_id, version, ops, None)
}

/// A live DELTA that also says the key's new deadline (extension `ttl`):
/// `expires_at` in Unix ms, 0 when the deadline was removed.
pub fn delta_expiring(
    stream_id: u32,
    version: u64,
    ops: &[DeltaOp],
    expires_at: Option<u64>,
) -> Bytes {
    build(|buf| write_delta(buf, stream_id, None, version, ops, expires_at))
}

/// A DELTA that names what it belongs to: `state` is the key of a replayed
/// change, or the pattern of a pattern subscription's DELTA.
pub fn delta_naming(
    stream_id: u32,
    state: &str,
    version: u64,
    ops: &[DeltaOp],
    expires_at: Option<u64>,
) -> Bytes {
    build(|buf| write_delta(buf, stream_id, Some(state), version, ops, expires_at))
}

fn write_delta(
    buf: &mut Vec<u8>,
    stream_id: u32,
    state: Option<&str>,
    version: u64,
    ops: &[DeltaOp],
    expires_at: Option<u64>,
) {
    write_header(buf, FrameType::Delta, stream_id, 0);
    write_map_len(
        buf,
        2 + usize::from(state.is_some()) + usize::from(expires_at.is_some()),
    );
    write_str(buf, "version");
    write_uint(buf, version);
    write_str(buf, "ops");
    codec::write_array_len(buf, ops.len());
    for op in ops {
        op.write(buf);
    }
    if let Some(at) = expires_at {
        write_str(buf, "expires_at");
        write_uint(buf, at);
    }
    if let Some(state) = state {
        write_str(buf, "state");
        write_str(buf, state);
    }
}

/// A live DELTA built by [`delta`] or [`delta_expiring`], with `state: key`
/// added — how a RESUME replays a change kept as the frame it was sent as.
/// The body is the frame's last element, so the field is appended after
/// the map's length is raised by one; nothing else is re-encoded.
pub fn with_state(message: &[u8], key: &str) -> Bytes {
    let payload = ws_payload(message);
    let mut d = codec::Decoder::new(payload, 1);
    let header = (d.array_len(), d.uint(), d.uint(), d.uint());
    let map_start = d.position();
    let fields = d.map_len();
    let (Ok(Some(4)), Ok(Some(_)), Ok(Some(_)), Ok(Some(_)), Ok(Some(fields))) =
        (header.0, header.1, header.2, header.3, fields)
    else {
        // Only this module's DELTAs are kept for replay; should another
        // shape ever get here, it is sent as it is rather than mangled.
        debug_assert!(false, "not a frame built by wire::delta");
        return Bytes::copy_from_slice(message);
    };
    let body = &payload[d.position()..];
    build(|buf| {
        buf.extend_from_slice(&payload[..map_start]);
        write_map_len(buf, fields + 1);
        buf.extend_from_slice(body);
        write_str(buf, "state");
        write_str(buf, key);
    })
}

/// `STATE_INIT {state, version, value, initialized, params?, expires_at?}`.
#[allow(clippy::too_many_arguments)]
pub fn state_init(
    stream_id: u32,
    seq: u64,
    key: &str,
    version: u64,
    value: &Value,
    initialized: bool,
    params: Option<&Value>,
    expires_at: Option<u64>,
) -> Bytes {
    build(|buf| {
        write_header(buf, FrameType::StateInit, stream_id, seq);
        let fields = 4 + usize::from(params.is_some()) + usize::from(expires_at.is_some());
        write_map_len(buf, fields);
        write_str(buf, "state");
        write_str(buf, key);
        write_str(buf, "version");
        write_uint(buf, version);
        write_str(buf, "value");
        codec::write_value(buf, value);
        write_str(buf, "initialized");
        codec::write_bool(buf, initialized);
        if let Some(p) = params {
            write_str(buf, "params");
            codec::write_value(buf, p);
        }
        if let Some(at) = expires_at {
            write_str(buf, "expires_at");
            write_uint(buf, at);
        }
    })
}

/// The reply to a write: `RESULT {call_id, success: true, data: {version}}`,
/// written straight to bytes (it is sent once per CALL).
pub fn result_version(seq: u64, call_id: &str, version: u64) -> Bytes {
    result_ok(seq, call_id, |buf| {
        write_map_len(buf, 1);
        write_str(buf, "version");
        write_uint(buf, version);
    })
}

/// `RESULT {call_id, success: true, data: …}` with `data` written by
/// `write_data`.
fn result_ok(seq: u64, call_id: &str, write_data: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    build(|buf| {
        write_header(buf, FrameType::Result, 0, seq);
        write_map_len(buf, 3);
        write_str(buf, "call_id");
        write_str(buf, call_id);
        write_str(buf, "success");
        codec::write_bool(buf, true);
        write_str(buf, "data");
        write_data(buf);
    })
}

/// A failed `RESULT {call_id, success: false, data: "CODE message", code}`.
/// The message starts with its code (`"404 unknown method …"`): the
/// published clients show users only `data`.
/// A 409 also carries the key's current `version`, and a failed transaction
/// op its index as `op` (extensions `conditional`, `transaction`).
pub fn result_err(seq: u64, call_id: &str, rejection: &Rejection) -> Bytes {
    let mut body = sodp_proto::Map::default();
    body.insert("call_id".into(), Value::from(call_id));
    body.insert("success".into(), Value::Bool(false));
    body.insert("data".into(), Value::from(rejection.to_string()));
    body.insert("code".into(), Value::Int(rejection.code as i64));
    if let Some(version) = rejection.version {
        body.insert("version".into(), Value::from(version));
    }
    if let Some(op) = rejection.op {
        body.insert("op".into(), Value::from(op as u64));
    }
    encode(FrameType::Result, 0, seq, Value::from(body))
}

/// `RESULT {call_id, success: true, data}` (reads and remembered replies).
pub fn result_data(seq: u64, call_id: &str, data: &Value) -> Bytes {
    result_ok(seq, call_id, |buf| codec::write_value(buf, data))
}

/// `ERROR {code, message}` on `stream_id`.
pub fn error(stream_id: u32, seq: u64, rejection: &Rejection) -> Bytes {
    let body = Value::map_from([
        ("code", Value::Int(rejection.code as i64)),
        ("message", Value::from(rejection.message.as_str())),
    ]);
    encode(FrameType::Error, stream_id, seq, body)
}

/// `HEARTBEAT` with seq 0 (it needs no acknowledgement).
pub fn heartbeat() -> Bytes {
    Bytes::from_static(&[0x82, 5, 0x94, FrameType::Heartbeat as u8, 0, 0, 0xc0])
}

pub fn encode(kind: FrameType, stream_id: u32, seq: u64, body: Value) -> Bytes {
    let frame = Frame {
        kind,
        stream_id,
        seq,
        body,
    };
    ws_message(&frame.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_decodes_to_the_contract_shape() {
        let bytes = delta(12, 7, &[DeltaOp::update("/x", Value::Int(5))]);
        let f = Frame::decode(ws_payload(&bytes), 16).unwrap();
        assert_eq!(f.kind, FrameType::Delta);
        assert_eq!(f.stream_id, 12);
        assert_eq!(f.body.get("version"), Some(&Value::Int(7)));
        assert_eq!(
            f.body.get("state"),
            None,
            "a live DELTA does not name its key"
        );
        let ops = DeltaOp::list_from_value(f.body.get("ops").unwrap()).unwrap();
        assert_eq!(ops, vec![DeltaOp::update("/x", Value::Int(5))]);
    }

    #[test]
    fn a_replayed_delta_names_its_key_and_keeps_everything_else() {
        let ops = [DeltaOp::update("/x", Value::Int(5)), DeltaOp::remove("/y")];
        // Stream ids of every encoded length, with and without a deadline,
        // and values whose WebSocket header grows when `state` is added.
        let long = DeltaOp::add("/s", Value::from("v".repeat(100)));
        for stream_id in [10, 200, 70_000, u32::MAX] {
            for expires in [None, Some(0), Some(1 << 41)] {
                for ops in [&ops[..], std::slice::from_ref(&long)] {
                    let live = delta_expiring(stream_id, 1 << 40, ops, expires);
                    let replayed = with_state(&live, "game.player");
                    let naming = delta_naming(stream_id, "game.player", 1 << 40, ops, expires);
                    assert_eq!(replayed, naming, "stream {stream_id}, expires {expires:?}");
                    let f = Frame::decode(ws_payload(&replayed), 16).unwrap();
                    assert_eq!(f.stream_id, stream_id);
                    assert_eq!(f.body.get("state"), Some(&Value::from("game.player")));
                    assert_eq!(f.body.get("version"), Some(&Value::from(1u64 << 40)));
                    let back = DeltaOp::list_from_value(f.body.get("ops").unwrap()).unwrap();
                    assert_eq!(back, ops);
                    let at = f.body.get("expires_at").and_then(Value::as_u64);
                    assert_eq!(at, expires);
                }
            }
        }
    }

    /// The generic form, to check the hand-written one against.
    fn result_ok(seq: u64, call_id: &str, data: Value) -> Bytes {
        let body = Value::map_from([
            ("call_id", Value::from(call_id)),
            ("success", Value::Bool(true)),
            ("data", data),
        ]);
        encode(FrameType::Result, 0, seq, body)
    }

    #[test]
    fn result_version_matches_the_generic_encoder() {
        let data = Value::map_from([("version", Value::from(1u64 << 40))]);
        assert_eq!(result_version(3, "c1", 1 << 40), result_ok(3, "c1", data));
    }

    #[test]
    fn websocket_headers_for_every_length_class() {
        for n in [0usize, 1, 125, 126, 127, 65_535, 65_536] {
            let payload = vec![7u8; n];
            let message = ws_message(&payload);
            assert_eq!(message[0], 0x82);
            assert_eq!(ws_payload(&message), &payload[..], "length {n}");
            // The buffer was sized exactly (see `ws_message`).
            assert_eq!(message.len(), ws_header_len(n) + n, "length {n}");
        }
    }

    #[test]
    fn heartbeat_matches_the_encoder() {
        assert_eq!(heartbeat(), encode(FrameType::Heartbeat, 0, 0, Value::Nil));
    }
}
