//! Allocation-free reading of the few fields the generator needs from the
//! frames it receives most (DELTA during fanout, RESULT during writes).
//!
//! Decoding every DELTA into a `Value` tree (maps, strings, `Arc`s) cost a
//! quarter of the generator's CPU at 500,000 deliveries/s; these readers
//! walk the MessagePack bytes in place instead. They return `None` on
//! anything unexpected, and callers then fall back to the full decoder, so
//! a server that encodes differently is still measured correctly.

/// Nesting deeper than this is not walked (callers fall back).
const MAX_DEPTH: usize = 32;

/// A cursor over MessagePack bytes.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn byte(&mut self) -> Option<u8> {
        let x = *self.b.get(self.i)?;
        self.i += 1;
        Some(x)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.i..self.i.checked_add(n)?)?;
        self.i += n;
        Some(s)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, &x| (acc << 8) | x as u64),
        )
    }

    /// A non-negative integer.
    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(m as u64),
            0xcc => self.be(1),
            0xd0 => self.be(1).filter(|&v| v < 0x80),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            0xd1 => self.be(2).filter(|&v| v < 0x8000),
            0xd2 => self.be(4).filter(|&v| v < 0x8000_0000),
            0xd3 => self.be(8).filter(|&v| v < 0x8000_0000_0000_0000),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            m @ 0xa0..=0xbf => (m & 0x1f) as usize,
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return None,
        };
        self.take(n)
    }

    fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some((m & 0x0f) as usize),
            0xde => self.be(2).map(|n| n as usize),
            0xdf => self.be(4).map(|n| n as usize),
            _ => None,
        }
    }

    fn array_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x90..=0x9f => Some((m & 0x0f) as usize),
            0xdc => self.be(2).map(|n| n as usize),
            0xdd => self.be(4).map(|n| n as usize),
            _ => None,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Skips one value of any type.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        let m = self.byte()?;
        let (fixed, len_bytes, items) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0, 0),
            0x80..=0x8f => (0, 0, 2 * (m & 0x0f) as usize),
            0x90..=0x9f => (0, 0, (m & 0x0f) as usize),
            0xa0..=0xbf => ((m & 0x1f) as usize, 0, 0),
            0xcc | 0xd0 => (1, 0, 0),
            0xcd | 0xd1 => (2, 0, 0),
            0xca | 0xce | 0xd2 => (4, 0, 0),
            0xcb | 0xcf | 0xd3 => (8, 0, 0),
            0xc4 | 0xd9 => (0, 1, 0),
            0xc5 | 0xda => (0, 2, 0),
            0xc6 | 0xdb => (0, 4, 0),
            0xdc => {
                let n = self.be(2)? as usize;
                (0, 0, n)
            }
            0xdd => {
                let n = self.be(4)? as usize;
                (0, 0, n)
            }
            0xde => {
                let n = self.be(2)? as usize;
                (0, 0, 2 * n)
            }
            0xdf => {
                let n = self.be(4)? as usize;
                (0, 0, 2 * n)
            }
            _ => return None, // extensions and the unused marker
        };
        if len_bytes > 0 {
            let n = self.be(len_bytes)? as usize;
            self.take(n)?;
        } else if fixed > 0 {
            self.take(fixed)?;
        }
        for _ in 0..items {
            self.skip(depth + 1)?;
        }
        Some(())
    }
}

/// The start of a frame: type, stream id, and a cursor at the body.
fn head(bytes: &[u8]) -> Option<(u8, u32, Cur<'_>)> {
    let mut c = Cur { b: bytes, i: 0 };
    if c.array_len()? != 4 {
        return None;
    }
    let kind = u8::try_from(c.uint()?).ok()?;
    let stream = u32::try_from(c.uint()?).ok()?;
    c.uint()?; // seq
    Some((kind, stream, c))
}

/// What the fanout scenario reads from a DELTA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delta {
    pub stream_id: u32,
    pub version: u64,
    /// The value `field` takes in this DELTA, when an op sets it.
    pub field: Option<u64>,
}

/// Reads a DELTA frame; `None` when `bytes` is not a DELTA this reader
/// understands (the caller then decodes it fully).
pub fn delta(bytes: &[u8], field: &str) -> Option<Delta> {
    let (kind, stream_id, mut c) = head(bytes)?;
    if kind != 0x04 {
        return None;
    }
    let (mut version, mut found) = (None, None);
    for _ in 0..c.map_len()? {
        match c.str()? {
            b"version" => version = Some(c.uint()?),
            b"ops" => {
                for _ in 0..c.array_len()? {
                    if let Some(v) = op_field(&mut c, field)? {
                        found = Some(v);
                    }
                }
            }
            _ => c.skip(1)?,
        }
    }
    if c.i != bytes.len() {
        return None;
    }
    Some(Delta {
        stream_id,
        version: version?,
        field: found,
    })
}

/// One op map: `Some(Some(v))` when it sets `field` to the integer `v`
/// (at `/field`, or at the root with a map holding it), `Some(None)` for
/// any other op, `None` when unreadable.
fn op_field(c: &mut Cur<'_>, field: &str) -> Option<Option<u64>> {
    let (mut path, mut value_at) = (None, None);
    for _ in 0..c.map_len()? {
        match c.str()? {
            b"path" => path = Some(c.str()?),
            b"value" => {
                value_at = Some(c.i);
                c.skip(2)?;
            }
            _ => c.skip(2)?,
        }
    }
    let (Some(path), Some(at)) = (path, value_at) else {
        return Some(None);
    };
    let mut v = Cur { b: c.b, i: at };
    if path.strip_prefix(b"/") == Some(field.as_bytes()) {
        return Some(v.uint());
    }
    if (path == b"/" || path.is_empty())
        && v.peek()
            .is_some_and(|m| matches!(m, 0x80..=0x8f | 0xde | 0xdf))
    {
        for _ in 0..v.map_len()? {
            if v.str()? == field.as_bytes() {
                return Some(v.uint());
            }
            v.skip(3)?;
        }
    }
    Some(None)
}

/// What the writes scenario reads from a RESULT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Result {
    /// The number after `prefix` in the call id.
    pub call: u64,
    pub success: bool,
}

/// Reads a RESULT frame whose call id is `prefix` + decimal; `None` for
/// anything else.
pub fn result(bytes: &[u8], prefix: &str) -> Option<Result> {
    let (kind, _, mut c) = head(bytes)?;
    if kind != 0x06 {
        return None;
    }
    let (mut call, mut success) = (None, None);
    for _ in 0..c.map_len()? {
        match c.str()? {
            b"call_id" => {
                let id = std::str::from_utf8(c.str()?).ok()?;
                call = Some(id.strip_prefix(prefix)?.parse().ok()?);
            }
            b"success" => {
                success = Some(match c.byte()? {
                    0xc3 => true,
                    0xc2 => false,
                    _ => return None,
                })
            }
            _ => c.skip(1)?,
        }
    }
    if c.i != bytes.len() {
        return None;
    }
    Some(Result {
        call: call?,
        success: success?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;
    use sodp_proto::{Frame, FrameType, Value};

    fn frame(kind: FrameType, stream: u32, body: serde_json::Value) -> Vec<u8> {
        Frame::new(kind, stream, Value::from(body)).encode()
    }

    #[test]
    fn delta_agrees_with_the_full_decoder() {
        let bodies = [
            serde_json::json!({"version": 7, "ops": [
                {"op": "UPDATE", "path": "/n", "value": 300},
                {"op": "UPDATE", "path": "/t", "value": 123456789012u64}]}),
            serde_json::json!({"state": "a.b", "version": 1u64 << 40, "ops": [
                {"op": "ADD", "path": "/", "value": {"t": [1, {"x": null}], "n": 0}}]}),
            serde_json::json!({"ops": [{"value": 5, "op": "UPDATE", "path": "/n"}], "version": 2}),
            serde_json::json!({"version": 3, "ops": [{"op": "REMOVE", "path": "/n"}]}),
            serde_json::json!({"version": 4, "ops": [
                {"op": "UPDATE", "path": "/m", "value": {"n": 1}},
                {"op": "UPDATE", "path": "/s", "value": "x".repeat(300)}]}),
        ];
        for body in bodies {
            let bytes = frame(FrameType::Delta, 12, body.clone());
            let d = delta(&bytes, "n").expect("readable");
            let full = wire::decode(&bytes).unwrap();
            assert_eq!(d.stream_id, full.stream_id);
            assert_eq!(
                Some(d.version),
                full.body.get("version").and_then(Value::as_u64)
            );
            assert_eq!(d.field, wire::delta_field(&full.body, "n"), "{body}");
        }
    }

    #[test]
    fn other_frames_and_garbage_fall_back() {
        assert_eq!(
            delta(
                &frame(FrameType::Heartbeat, 0, serde_json::Value::Null),
                "n"
            ),
            None
        );
        let ok = frame(
            FrameType::Delta,
            10,
            serde_json::json!({"version": 1, "ops": []}),
        );
        for cut in 0..ok.len() {
            assert_eq!(delta(&ok[..cut], "n"), None);
        }
        assert!(delta(&ok, "n").is_some());
    }

    #[test]
    fn result_reads_call_id_and_success() {
        let bytes = frame(
            FrameType::Result,
            0,
            serde_json::json!({"call_id": "c77", "success": true, "data": {"version": 9}}),
        );
        assert_eq!(
            result(&bytes, "c"),
            Some(Result {
                call: 77,
                success: true
            })
        );
        assert_eq!(result(&bytes, "w"), None);
        let failed = frame(
            FrameType::Result,
            0,
            serde_json::json!({"call_id": "c1", "success": false, "data": "bad", "code": 400}),
        );
        assert_eq!(
            result(&failed, "c"),
            Some(Result {
                call: 1,
                success: false
            })
        );
    }
}
