//! WebSocket frames in (RFC 6455 §5, server side): bytes read from the
//! socket become the messages the session handles, with no buffer kept per
//! connection while it is idle.
//!
//! The I/O loop reads into a scratch buffer it shares with every connection
//! of its thread and hands the bytes to [`FrameReader::feed`]; complete
//! frames are unmasked in place and handled from there. Only what cannot be
//! handled yet — the start of a frame still arriving, frames beyond one
//! burst, the fragments of an unfinished message — is copied into the
//! reader, and that memory is let go as soon as it is handled. Client frames
//! must be masked, no extension is negotiated (reserved bits must be 0),
//! control frames are final and at most 125 bytes, and no message (nor any
//! frame) may exceed the message size limit: the length is checked from the
//! header, before the payload is waited for. A text message and a close
//! reason must be UTF-8 (§8.1; checked on the whole message, so a character
//! split across fragments is fine). Any of these broken is a [`ReadError`],
//! on which the session closes (1009, 1002 or 1007).

/// A message or control frame, as the session sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    Binary(&'a [u8]),
    /// A text message, valid UTF-8 (not part of SODP: its content is not
    /// needed).
    Text,
    Ping(&'a [u8]),
    Pong,
    /// The peer's close frame, with its status code if it gave one.
    Close(Option<u16>),
}

/// Why the connection cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    TooBig { size: usize, max: usize },
    #[error("WebSocket protocol violation: {0}")]
    Protocol(&'static str),
    /// A text message or a close reason that is not UTF-8 (RFC 6455 §8.1).
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
}

/// What the caller's handler says after each message.
pub type Proceed = bool;

/// The fragments of a message still arriving.
#[derive(Debug)]
struct Fragments {
    text: bool,
    data: Vec<u8>,
}

/// Incoming frames of one connection.
#[derive(Debug)]
pub struct FrameReader {
    /// Bytes not handled yet: the start of a frame still arriving, or
    /// frames left over from a burst. Empty (no allocation) when idle.
    kept: Vec<u8>,
    /// `kept` starts with a complete frame (a burst stopped early).
    kept_ready: bool,
    /// Boxed: rare, and every connection would carry its room.
    fragments: Option<Box<Fragments>>,
    max_message: usize,
}

/// How a frame starts.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header bytes (2 to 14).
    len: usize,
    payload: u64,
}

/// Parses the header at the start of `buf`; `None` when it is not all there.
fn header(buf: &[u8]) -> Result<Option<Header>, ReadError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(ReadError::Protocol("reserved bits set"));
    }
    if b1 & 0x80 == 0 {
        return Err(ReadError::Protocol("unmasked frame from a client"));
    }
    let (payload, at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        mask: mask.try_into().expect("4 bytes"),
        len: at + 4,
        payload,
    }))
}

/// Unmasks in place (RFC 6455 §5.3), eight bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// Close codes a peer may send (RFC 6455 §7.4).
fn allowed_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// What parsing a buffer came to.
enum Parsed {
    /// Everything complete was handled; `usize` bytes were consumed.
    Consumed(usize),
    /// The burst limit was reached after `usize` bytes.
    Limit(usize),
    /// The handler asked to stop.
    Stopped,
}

impl FrameReader {
    /// A reader for a connection whose first bytes (read with the upgrade
    /// request) are `leftover`.
    pub fn new(leftover: Vec<u8>, max_message: usize) -> FrameReader {
        FrameReader {
            kept_ready: !leftover.is_empty(),
            kept: leftover,
            fragments: None,
            max_message,
        }
    }

    /// Frames are waiting that need no read from the socket (they may turn
    /// out to be incomplete: then [`FrameReader::feed_kept`] just returns).
    pub fn has_kept_frames(&self) -> bool {
        self.kept_ready
    }

    /// Memory the reader holds (nothing while idle).
    #[cfg(test)]
    pub fn held_bytes(&self) -> usize {
        self.kept.capacity() + self.fragments.as_ref().map_or(0, |f| f.data.capacity())
    }

    /// Handles up to `limit` messages from what was kept.
    pub fn feed_kept(
        &mut self,
        limit: usize,
        on: impl FnMut(Incoming<'_>) -> Proceed,
    ) -> Result<Proceed, ReadError> {
        self.feed(&mut [], limit, on)
    }

    /// Handles the complete frames of what was kept followed by `input` (a
    /// fresh read, unmasked in place), at most `limit` messages; keeps the
    /// rest. Returns false when `on` asked to stop.
    pub fn feed(
        &mut self,
        input: &mut [u8],
        limit: usize,
        mut on: impl FnMut(Incoming<'_>) -> Proceed,
    ) -> Result<Proceed, ReadError> {
        self.kept_ready = false;
        if self.kept.is_empty() {
            let parsed = self.parse(input, limit, &mut on)?;
            return Ok(match parsed {
                Parsed::Consumed(n) => {
                    self.kept.extend_from_slice(&input[n..]);
                    true
                }
                Parsed::Limit(n) => {
                    self.kept.extend_from_slice(&input[n..]);
                    self.kept_ready = true;
                    true
                }
                Parsed::Stopped => false,
            });
        }
        self.kept.extend_from_slice(input);
        let mut kept = std::mem::take(&mut self.kept);
        let parsed = self.parse(&mut kept, limit, &mut on);
        let (n, ready) = match parsed? {
            Parsed::Consumed(n) => (n, false),
            Parsed::Limit(n) => (n, true),
            Parsed::Stopped => return Ok(false),
        };
        if n < kept.len() {
            kept.drain(..n);
            // A large frame's room is not kept once it is handled.
            if kept.capacity() > 4 * kept.len().max(1024) {
                kept.shrink_to(kept.len());
            }
            self.kept = kept;
            self.kept_ready = ready;
        }
        Ok(true)
    }

    /// Handles the complete frames at the start of `buf`.
    fn parse(
        &mut self,
        buf: &mut [u8],
        limit: usize,
        on: &mut impl FnMut(Incoming<'_>) -> Proceed,
    ) -> Result<Parsed, ReadError> {
        let mut at = 0;
        let mut handled = 0;
        while handled < limit {
            let Some(h) = header(&buf[at..])? else {
                break;
            };
            self.check(&h)?;
            // Checked against the limit above, so it fits a usize.
            let end = at + h.len + h.payload as usize;
            if end > buf.len() {
                break;
            }
            let payload = &mut buf[at + h.len..end];
            unmask(payload, h.mask);
            at = end;
            let Some(message) = self.message(h.fin, h.opcode, payload)? else {
                continue;
            };
            handled += 1;
            let proceed = match message {
                Assembled::Here(incoming) => on(incoming),
                Assembled::Fragments(f) => on(if f.text {
                    Incoming::Text
                } else {
                    Incoming::Binary(&f.data)
                }),
            };
            if !proceed {
                return Ok(Parsed::Stopped);
            }
        }
        Ok(if handled == limit && at < buf.len() {
            Parsed::Limit(at)
        } else {
            Parsed::Consumed(at)
        })
    }

    /// Checks a header before its payload is waited for.
    fn check(&self, h: &Header) -> Result<(), ReadError> {
        let max = self.max_message;
        if h.opcode >= 8 {
            if !h.fin {
                return Err(ReadError::Protocol("fragmented control frame"));
            }
            if h.payload > 125 {
                return Err(ReadError::Protocol("control frame over 125 bytes"));
            }
            return Ok(());
        }
        let before = match (&self.fragments, h.opcode) {
            (Some(f), 0) => f.data.len() as u64,
            _ => 0,
        };
        let size = before.saturating_add(h.payload);
        if size > max as u64 {
            return Err(ReadError::TooBig {
                size: usize::try_from(size).unwrap_or(usize::MAX),
                max,
            });
        }
        Ok(())
    }

    /// One frame's part in a message: a whole message to handle, or
    /// nothing yet (a fragment kept).
    fn message<'a>(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: &'a [u8],
    ) -> Result<Option<Assembled<'a>>, ReadError> {
        let message = match opcode {
            0 => {
                let Some(f) = &mut self.fragments else {
                    return Err(ReadError::Protocol("continuation frame without a message"));
                };
                f.data.extend_from_slice(payload);
                if !fin {
                    return Ok(None);
                }
                let f = self.fragments.take().expect("checked above");
                if f.text && std::str::from_utf8(&f.data).is_err() {
                    return Err(ReadError::NotUtf8("a text message"));
                }
                Assembled::Fragments(*f)
            }
            1 | 2 if self.fragments.is_some() => {
                return Err(ReadError::Protocol("new message inside a fragmented one"));
            }
            1 | 2 if !fin => {
                self.fragments = Some(Box::new(Fragments {
                    text: opcode == 1,
                    data: payload.to_vec(),
                }));
                return Ok(None);
            }
            1 if std::str::from_utf8(payload).is_err() => {
                return Err(ReadError::NotUtf8("a text message"));
            }
            1 => Assembled::Here(Incoming::Text),
            2 => Assembled::Here(Incoming::Binary(payload)),
            8 => Assembled::Here(Incoming::Close(match *payload {
                [] => None,
                [_] => return Err(ReadError::Protocol("close frame of one byte")),
                [_, _, ref reason @ ..] if std::str::from_utf8(reason).is_err() => {
                    return Err(ReadError::NotUtf8("a close reason"));
                }
                [a, b, ..] => {
                    let code = u16::from_be_bytes([a, b]);
                    Some(if allowed_close_code(code) { code } else { 1002 })
                }
            })),
            9 => Assembled::Here(Incoming::Ping(payload)),
            10 => Assembled::Here(Incoming::Pong),
            _ => return Err(ReadError::Protocol("unknown opcode")),
        };
        Ok(Some(message))
    }
}

/// A message ready to handle.
enum Assembled<'a> {
    /// In the read buffer.
    Here(Incoming<'a>),
    /// Put together from fragments.
    Fragments(Fragments),
}

/// A server's close frame (unmasked): `code` and `reason` (cut to fit a
/// control frame), or an empty one without a code.
pub fn close_frame(code: Option<u16>, reason: &str) -> bytes::Bytes {
    let Some(code) = code else {
        return bytes::Bytes::from_static(&[0x88, 0]);
    };
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut out = Vec::with_capacity(4 + reason.len());
    out.extend_from_slice(&[0x88, 2 + reason.len() as u8]);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
    out.into()
}

/// A server's pong (unmasked) answering a ping's payload (≤ 125 bytes).
pub fn pong(payload: &[u8]) -> bytes::Bytes {
    let mut out = Vec::with_capacity(2 + payload.len());
    out.extend_from_slice(&[0x8a, payload.len() as u8]);
    out.extend_from_slice(payload);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with a fixed key.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[derive(Debug, PartialEq)]
    enum Got {
        Binary(Vec<u8>),
        Text,
        Ping(Vec<u8>),
        Pong,
        Close(Option<u16>),
    }

    fn collect(into: &mut Vec<Got>) -> impl FnMut(Incoming<'_>) -> Proceed + '_ {
        |m| {
            into.push(match m {
                Incoming::Binary(b) => Got::Binary(b.to_vec()),
                Incoming::Text => Got::Text,
                Incoming::Ping(p) => Got::Ping(p.to_vec()),
                Incoming::Pong => Got::Pong,
                Incoming::Close(c) => Got::Close(c),
            });
            true
        }
    }

    /// Feeds `bytes` in pieces of `step`, returning what was handled.
    fn feed_in_steps(bytes: &[u8], step: usize) -> (Vec<Got>, FrameReader) {
        let mut reader = FrameReader::new(Vec::new(), 1 << 20);
        let mut got = Vec::new();
        for piece in bytes.chunks(step) {
            let mut piece = piece.to_vec();
            assert!(reader.feed(&mut piece, 64, collect(&mut got)).unwrap());
        }
        (got, reader)
    }

    #[test]
    fn frames_split_anywhere_are_read_whole_and_nothing_is_kept_after() {
        let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let medium = vec![7u8; 300];
        let mut bytes = frame(true, 2, b"hello");
        bytes.extend(frame(true, 2, &medium));
        bytes.extend(frame(true, 2, &big));
        bytes.extend(frame(true, 9, b"p"));
        bytes.extend(frame(true, 10, b""));
        bytes.extend(frame(true, 1, b"text"));
        bytes.extend(frame(true, 8, &1000u16.to_be_bytes()));
        let want = vec![
            Got::Binary(b"hello".to_vec()),
            Got::Binary(medium.clone()),
            Got::Binary(big.clone()),
            Got::Ping(b"p".to_vec()),
            Got::Pong,
            Got::Text,
            Got::Close(Some(1000)),
        ];
        for step in [1, 2, 3, 7, 100, 4096, bytes.len()] {
            let (got, reader) = feed_in_steps(&bytes, step);
            assert_eq!(got, want, "in steps of {step}");
            assert_eq!(reader.held_bytes(), 0, "in steps of {step}");
        }
    }

    #[test]
    fn fragments_are_joined_around_control_frames() {
        let mut bytes = frame(false, 2, b"ab");
        bytes.extend(frame(true, 9, b"x"));
        bytes.extend(frame(false, 0, b"cd"));
        bytes.extend(frame(true, 0, b"e"));
        bytes.extend(frame(false, 1, b"t"));
        bytes.extend(frame(true, 0, b"u"));
        for step in [1, 5, bytes.len()] {
            let (got, reader) = feed_in_steps(&bytes, step);
            let want = vec![
                Got::Ping(b"x".to_vec()),
                Got::Binary(b"abcde".to_vec()),
                Got::Text,
            ];
            assert_eq!(got, want);
            assert_eq!(reader.held_bytes(), 0);
        }
    }

    #[test]
    fn a_burst_stops_at_the_limit_and_the_rest_is_handled_without_a_read() {
        let mut bytes = Vec::new();
        for i in 0..10u8 {
            bytes.extend(frame(true, 2, &[i]));
        }
        bytes.extend(&frame(true, 2, b"partial")[..4]);
        let mut reader = FrameReader::new(Vec::new(), 1024);
        let mut got = Vec::new();
        assert!(reader.feed(&mut bytes, 4, collect(&mut got)).unwrap());
        assert_eq!(got.len(), 4);
        assert!(reader.has_kept_frames());
        assert!(reader.feed_kept(4, collect(&mut got)).unwrap());
        assert!(reader.feed_kept(4, collect(&mut got)).unwrap());
        assert_eq!(got.len(), 10);
        assert_eq!(got[9], Got::Binary(vec![9]));
        // Only the incomplete frame is left, and it needs a read.
        assert!(!reader.has_kept_frames());
        let mut rest = frame(true, 2, b"partial")[4..].to_vec();
        assert!(reader.feed(&mut rest, 4, collect(&mut got)).unwrap());
        assert_eq!(got[10], Got::Binary(b"partial".to_vec()));
        assert_eq!(reader.held_bytes(), 0);
    }

    #[test]
    fn leftover_from_the_upgrade_is_read_first() {
        let mut reader = FrameReader::new(frame(true, 2, b"early"), 1024);
        assert!(reader.has_kept_frames());
        let mut got = Vec::new();
        assert!(reader.feed_kept(64, collect(&mut got)).unwrap());
        assert_eq!(got, vec![Got::Binary(b"early".to_vec())]);
        assert_eq!(reader.held_bytes(), 0);
    }

    #[test]
    fn a_handler_that_stops_stops_the_reading() {
        let mut bytes = frame(true, 2, b"a");
        bytes.extend(frame(true, 2, b"b"));
        let mut reader = FrameReader::new(Vec::new(), 1024);
        let mut n = 0;
        let stop = |_: Incoming<'_>| {
            n += 1;
            false
        };
        assert!(!reader.feed(&mut bytes, 64, stop).unwrap());
        assert_eq!(n, 1);
    }

    #[test]
    fn too_big_is_refused_from_the_header_alone() {
        let mut reader = FrameReader::new(Vec::new(), 100);
        let mut head = frame(true, 2, &[0; 101])[..8].to_vec();
        let err = reader.feed(&mut head, 64, |_| true).unwrap_err();
        assert_eq!(
            err,
            ReadError::TooBig {
                size: 101,
                max: 100
            }
        );
        // A 2^63-byte header does not overflow anything.
        let mut huge = vec![
            0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
        ];
        let err = FrameReader::new(Vec::new(), 100).feed(&mut huge, 64, |_| true);
        assert!(matches!(err, Err(ReadError::TooBig { max: 100, .. })));
        // Fragments count together.
        let mut reader = FrameReader::new(Vec::new(), 100);
        let mut bytes = frame(false, 2, &[0; 60]);
        bytes.extend(frame(true, 0, &[0; 60]));
        let err = reader.feed(&mut bytes, 64, |_| true).unwrap_err();
        assert_eq!(
            err,
            ReadError::TooBig {
                size: 120,
                max: 100
            }
        );
    }

    #[test]
    fn protocol_violations_are_refused() {
        let unmasked = vec![0x82, 1, 0];
        let mut reserved = frame(true, 2, b"x");
        reserved[0] |= 0x40;
        let mut bad_close = frame(true, 8, b"1");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (unmasked, "unmasked frame from a client"),
            (reserved, "reserved bits set"),
            (frame(true, 3, b""), "unknown opcode"),
            (frame(true, 0, b"x"), "continuation frame without a message"),
            (frame(false, 9, b""), "fragmented control frame"),
            (frame(true, 9, &[0; 126]), "control frame over 125 bytes"),
            (std::mem::take(&mut bad_close), "close frame of one byte"),
            (
                [frame(false, 2, b"a"), frame(true, 2, b"b")].concat(),
                "new message inside a fragmented one",
            ),
        ];
        for (mut bytes, why) in cases {
            let err = FrameReader::new(Vec::new(), 1024).feed(&mut bytes, 64, |_| true);
            assert_eq!(err, Err(ReadError::Protocol(why)));
        }
    }

    #[test]
    fn text_that_is_not_utf8_is_refused_and_valid_text_is_not() {
        let bad = [0x61, 0xff, 0x62];
        let mut close_reason = 1000u16.to_be_bytes().to_vec();
        close_reason.extend(bad);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (frame(true, 1, &bad), "a text message"),
            // Split inside the bad sequence: judged on the whole message.
            (
                [frame(false, 1, &bad[..2]), frame(true, 0, &bad[2..])].concat(),
                "a text message",
            ),
            (frame(true, 8, &close_reason), "a close reason"),
        ];
        for (mut bytes, what) in cases {
            let err = FrameReader::new(Vec::new(), 1024).feed(&mut bytes, 64, |_| true);
            assert_eq!(err, Err(ReadError::NotUtf8(what)));
        }
        // A character split across fragments is still one valid character.
        let euro = "€".as_bytes();
        let mut got = Vec::new();
        let mut bytes = [frame(false, 1, &euro[..1]), frame(true, 0, &euro[1..])].concat();
        bytes.extend(frame(true, 1, "ok".as_bytes()));
        let mut reader = FrameReader::new(Vec::new(), 1024);
        assert!(reader.feed(&mut bytes, 64, collect(&mut got)).unwrap());
        assert_eq!(got, vec![Got::Text, Got::Text]);
    }

    #[test]
    fn a_close_code_outside_the_allowed_ranges_becomes_1002() {
        let mut got = Vec::new();
        let mut bytes = frame(true, 8, &1006u16.to_be_bytes());
        bytes.extend(frame(true, 8, b""));
        bytes.extend(frame(true, 8, &4001u16.to_be_bytes()));
        let mut reader = FrameReader::new(Vec::new(), 1024);
        assert!(reader.feed(&mut bytes, 64, collect(&mut got)).unwrap());
        assert_eq!(
            got,
            vec![
                Got::Close(Some(1002)),
                Got::Close(None),
                Got::Close(Some(4001))
            ]
        );
    }

    #[test]
    fn server_control_frames_are_well_formed() {
        assert_eq!(&close_frame(Some(1000), "")[..], [0x88, 2, 0x03, 0xe8]);
        assert_eq!(
            &close_frame(Some(1001), "bye")[..],
            [0x88, 5, 0x03, 0xe9, b'b', b'y', b'e']
        );
        assert_eq!(&close_frame(None, "ignored")[..], [0x88, 0]);
        let long = "é".repeat(100);
        let frame = close_frame(Some(1000), &long);
        assert_eq!(frame.len(), 2 + 2 + 122, "cut at a character boundary");
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
        assert_eq!(&pong(b"hi")[..], [0x8a, 2, b'h', b'i']);
    }
}
