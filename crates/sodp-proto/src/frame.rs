//! Frames: a MessagePack array of exactly four elements,
//! `[type, stream_id, seq, body]`, one per WebSocket binary message.

use thiserror::Error;

use crate::codec::{self, DecodeError, Decoder};
use crate::value::Value;

/// The frame types of SODP v1.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    Hello = 0x01,
    Watch = 0x02,
    StateInit = 0x03,
    Delta = 0x04,
    Call = 0x05,
    Result = 0x06,
    Error = 0x07,
    Heartbeat = 0x09,
    Resume = 0x0A,
    Auth = 0x0B,
    AuthOk = 0x0C,
    Unwatch = 0x0D,
}

impl FrameType {
    pub fn from_u8(b: u8) -> Option<FrameType> {
        use FrameType::*;
        Some(match b {
            0x01 => Hello,
            0x02 => Watch,
            0x03 => StateInit,
            0x04 => Delta,
            0x05 => Call,
            0x06 => Result,
            0x07 => Error,
            0x09 => Heartbeat,
            0x0A => Resume,
            0x0B => Auth,
            0x0C => AuthOk,
            0x0D => Unwatch,
            _ => return None,
        })
    }
}

/// Stream 0 carries control frames; subscription streams start at this id.
pub const FIRST_SUBSCRIPTION_STREAM: u32 = 10;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub kind: FrameType,
    pub stream_id: u32,
    pub seq: u64,
    /// A map or nil.
    pub body: Value,
}

/// Why a message is not a valid frame. Each variant is a 400 on the wire.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum FrameError {
    #[error("not MessagePack: {0}")]
    Decode(#[from] DecodeError),
    #[error("a frame must be a MessagePack array")]
    NotArray,
    #[error("a frame must have exactly 4 elements, got {0}")]
    WrongArity(usize),
    #[error("frame field `{field}` must be {expected}")]
    BadField {
        field: &'static str,
        expected: &'static str,
    },
    #[error("unknown frame type 0x{kind:02x}")]
    UnknownType { kind: u8, stream_id: u32 },
    /// The frame is well formed but nests deeper than allowed. The shallow
    /// parts are kept so a CALL can still be answered by its `call_id`.
    #[error("value nested deeper than the limit")]
    TooDeep {
        kind: u8,
        stream_id: u32,
        call_id: Option<String>,
    },
}

impl FrameError {
    /// The stream the offending frame named, when it could be read.
    pub fn stream_id(&self) -> u32 {
        match self {
            FrameError::UnknownType { stream_id, .. } | FrameError::TooDeep { stream_id, .. } => {
                *stream_id
            }
            _ => 0,
        }
    }
}

impl Frame {
    pub fn new(kind: FrameType, stream_id: u32, body: Value) -> Frame {
        Frame {
            kind,
            stream_id,
            seq: 0,
            body,
        }
    }

    /// Decodes one frame. `max_depth` bounds the nesting of the whole frame
    /// (the frame array itself is level 1).
    pub fn decode(bytes: &[u8], max_depth: usize) -> Result<Frame, FrameError> {
        let mut dec = Decoder::new(bytes, max_depth).skipping_too_deep();
        let len = match dec.array_len()? {
            Some(len) => len,
            None => {
                // Distinguish "valid MessagePack, wrong shape" from garbage.
                codec::decode_value(bytes, max_depth)?;
                return Err(FrameError::NotArray);
            }
        };
        if len != 4 {
            return Err(FrameError::WrongArity(len));
        }
        let kind = dec.value(1)?;
        let stream_id = dec.value(1)?;
        let seq = dec.value(1)?;
        let body = dec.value(1)?;
        dec.finish()?;

        let kind =
            kind.as_u64()
                .and_then(|k| u8::try_from(k).ok())
                .ok_or(FrameError::BadField {
                    field: "type",
                    expected: "an integer 0-255",
                })?;
        let stream_id = stream_id
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            .ok_or(FrameError::BadField {
                field: "stream_id",
                expected: "an unsigned 32-bit integer",
            })?;
        let seq = seq.as_u64().ok_or(FrameError::BadField {
            field: "seq",
            expected: "an unsigned integer",
        })?;
        if !matches!(body, Value::Nil | Value::Map(_)) {
            return Err(FrameError::BadField {
                field: "body",
                expected: "a map or nil",
            });
        }
        if dec.skipped_too_deep() {
            return Err(FrameError::TooDeep {
                kind,
                stream_id,
                call_id: body
                    .get("call_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
        }
        let kind = FrameType::from_u8(kind).ok_or(FrameError::UnknownType { kind, stream_id })?;
        Ok(Frame {
            kind,
            stream_id,
            seq,
            body,
        })
    }

    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(32);
        write_header(&mut buf, self.kind, self.stream_id, self.seq);
        codec::write_value(&mut buf, &self.body);
        buf
    }
}

/// Writes the first three elements of a frame; the caller writes the body.
pub fn write_header(buf: &mut Vec<u8>, kind: FrameType, stream_id: u32, seq: u64) {
    buf.push(0x94);
    buf.push(kind as u8);
    codec::write_uint(buf, stream_id as u64);
    codec::write_uint(buf, seq);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_value;

    fn frame_bytes(items: Vec<Value>) -> Vec<u8> {
        encode_value(&Value::from(items))
    }

    #[test]
    fn round_trip() {
        let f = Frame {
            kind: FrameType::Call,
            stream_id: 12,
            seq: 99,
            body: Value::map_from([("call_id", Value::from("a"))]),
        };
        assert_eq!(Frame::decode(&f.encode(), 64).unwrap(), f);
    }

    #[test]
    fn too_deep_call_keeps_its_call_id() {
        let mut deep = Value::Int(1);
        for _ in 0..10 {
            deep = Value::from(vec![deep]);
        }
        let body = Value::map_from([("call_id", Value::from("c1")), ("args", deep)]);
        let bytes = Frame::new(FrameType::Call, 0, body).encode();
        assert_eq!(
            Frame::decode(&bytes, 5),
            Err(FrameError::TooDeep {
                kind: 5,
                stream_id: 0,
                call_id: Some("c1".into())
            })
        );
    }

    #[test]
    fn heartbeat_is_compact() {
        let f = Frame::new(FrameType::Heartbeat, 0, Value::Nil);
        assert_eq!(f.encode(), vec![0x94, 0x09, 0x00, 0x00, 0xc0]);
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        assert!(matches!(
            Frame::decode(&[0xc1], 64),
            Err(FrameError::Decode(_))
        ));
        assert_eq!(
            Frame::decode(&encode_value(&Value::Int(1)), 64),
            Err(FrameError::NotArray)
        );
        assert_eq!(
            Frame::decode(&frame_bytes(vec![Value::Int(1), Value::Int(0)]), 64),
            Err(FrameError::WrongArity(2))
        );
        let bad_type = frame_bytes(vec!["x".into(), 0i64.into(), 0i64.into(), Value::Nil]);
        assert!(matches!(
            Frame::decode(&bad_type, 64),
            Err(FrameError::BadField { field: "type", .. })
        ));
        let bad_body = frame_bytes(vec![2i64.into(), 0i64.into(), 0i64.into(), 5i64.into()]);
        assert!(matches!(
            Frame::decode(&bad_body, 64),
            Err(FrameError::BadField { field: "body", .. })
        ));
        let unknown = frame_bytes(vec![0x08i64.into(), 11i64.into(), 0i64.into(), Value::Nil]);
        assert_eq!(
            Frame::decode(&unknown, 64),
            Err(FrameError::UnknownType {
                kind: 8,
                stream_id: 11
            })
        );
    }
}
