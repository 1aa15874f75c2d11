//! A lean client WebSocket for the generator's busy connections, so that
//! the generator's own cost per frame stays far below a server's and a
//! saturated point measures the server, not the generator.
//!
//! Over a plain `TcpStream`: the HTTP upgrade written by hand, outgoing
//! frames appended to one buffer and written with one `send` per flush,
//! incoming frames parsed in place from one read buffer (a read drains
//! whatever the socket holds; tokio clears the socket's readiness after a
//! short read, so there is no `recv` that only learns it would block).
//! Client frames carry the mask bit with an all-zero masking key: RFC 6455
//! requires the bit, and a zero key leaves the payload as it is, so no
//! per-byte XOR. Pings are answered on the next flush; fragmented messages
//! (which no SODP server sends for frames this size) are refused as an
//! error, never misread.
//!
//! `tokio-tungstenite` (`wire::Ws`) stays for the scenarios where the
//! generator is not the limit; it allocates per message and masks every
//! byte, which at 1,000 small writers was most of the generator's core.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_util::Stream;
use sodp_proto::{Frame, FrameType, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::wire::{self, Error};

/// The largest message accepted (the benchmarks' frames are < 1 KB).
const MAX_MESSAGE: usize = 16 << 20;

/// The read buffer's initial size, and the room a read is given at least.
const READ_BUFFER: usize = 16 * 1024;
const MIN_FREE: usize = 4 * 1024;

/// The `Sec-WebSocket-Key` every connection sends, and the accept value a
/// server must answer with (RFC 6455 §1.3's example nonce).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// One client connection.
pub struct RawWs {
    tcp: TcpStream,
    /// Received bytes are `rbuf[..end]`; `rbuf[start..end]` are not yet
    /// parsed.
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
    /// Frames queued for the next flush.
    wbuf: Vec<u8>,
}

/// A complete message taken from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Binary(&'a [u8]),
    /// The server closed the WebSocket.
    Close,
}

impl RawWs {
    /// Connects, upgrades and reads HELLO; authenticates with the
    /// `--token` when the server asks (as [`wire::connect`]).
    pub async fn connect(url: &str) -> Result<RawWs, Error> {
        let host_port = wire::host_port(url)?;
        let tcp = TcpStream::connect(&host_port).await?;
        tcp.set_nodelay(true)?;
        let path = url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
            .unwrap_or("/");
        let mut ws = RawWs {
            tcp,
            rbuf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            wbuf: Vec::with_capacity(4096),
        };
        ws.upgrade(&host_port, path).await?;
        let hello = ws.next_frame().await?;
        if hello.kind != FrameType::Hello {
            return Err(format!("expected HELLO, got {:?}", hello.kind).into());
        }
        if hello.body.get("auth").and_then(Value::as_bool) == Some(true) {
            let token =
                wire::token().ok_or("server requires auth: pass --token (a JWT it accepts)")?;
            ws.queue(&wire::auth_frame(token));
            ws.flush().await?;
            let answer = ws.next_frame().await?;
            if answer.kind != FrameType::AuthOk {
                return Err(format!("AUTH refused: {:?}", answer.body.to_json()).into());
            }
        }
        Ok(ws)
    }

    async fn upgrade(&mut self, host: &str, path: &str) -> Result<(), Error> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        self.tcp.write_all(request.as_bytes()).await?;
        let end = loop {
            if let Some(i) = self.rbuf[..self.end]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
            {
                break i + 4;
            }
            if self.end > 8 * 1024 {
                return Err("the upgrade response has no end".into());
            }
            self.read().await?;
        };
        let head = String::from_utf8_lossy(&self.rbuf[..end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 101") {
            let status = head.lines().next().unwrap_or("").to_string();
            return Err(format!("upgrade refused: {status}").into());
        }
        let accepted = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(name, value)| {
                name.trim() == "sec-websocket-accept" && value.trim() == ACCEPT.to_ascii_lowercase()
            })
        });
        if !accepted {
            return Err("upgrade response without the right Sec-WebSocket-Accept".into());
        }
        self.start = end;
        Ok(())
    }

    /// Appends one binary message (masked, zero key) for the next flush.
    pub fn queue(&mut self, payload: &[u8]) {
        self.queue_frame(0x2, payload);
    }

    fn queue_frame(&mut self, opcode: u8, payload: &[u8]) {
        let b = &mut self.wbuf;
        b.push(0x80 | opcode);
        match payload.len() {
            n @ 0..=125 => b.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                b.push(0x80 | 126);
                b.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                b.push(0x80 | 127);
                b.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(payload);
    }

    /// Whether frames (or pongs) wait for a flush.
    pub fn has_queued(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.tcp.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Writes what is queued as far as the socket takes it now, without
    /// waiting (for replies sent from inside [`Incoming`]).
    fn try_flush(&mut self) -> io::Result<()> {
        while !self.wbuf.is_empty() {
            match self.tcp.try_write(&self.wbuf) {
                Ok(n) => drop(self.wbuf.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Makes room for a read: drops parsed bytes, keeps at least
    /// [`MIN_FREE`] bytes free (growing only for a message larger than the
    /// buffer).
    fn make_room(&mut self) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.rbuf.len() - self.end < MIN_FREE {
            self.rbuf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
            if self.rbuf.len() - self.end < MIN_FREE {
                self.rbuf.resize(self.rbuf.len() * 2, 0);
            }
        }
    }

    fn received(&mut self, n: usize) -> Result<(), Error> {
        if n == 0 {
            return Err(closed().into());
        }
        self.end += n;
        Ok(())
    }

    /// One read of whatever the socket holds (waits until it holds
    /// something). Cancel-safe: nothing is lost if the future is dropped.
    pub async fn read(&mut self) -> Result<(), Error> {
        self.make_room();
        let n = self.tcp.read(&mut self.rbuf[self.end..]).await?;
        self.received(n)
    }

    /// [`RawWs::read`] as a poll, for [`Incoming`].
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.make_room();
        let mut buf = ReadBuf::new(&mut self.rbuf[self.end..]);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        Poll::Ready(self.received(n))
    }

    /// The next complete message already received, if any. Pings are
    /// answered (queued) and skipped, pongs skipped.
    pub fn next_message(&mut self) -> Result<Option<Message<'_>>, Error> {
        loop {
            let Some((opcode, payload)) = parse(&self.rbuf[self.start..self.end])? else {
                return Ok(None);
            };
            let at = self.start;
            self.start += payload.end;
            let body = at + payload.start..at + payload.end;
            match opcode {
                0x2 => return Ok(Some(Message::Binary(&self.rbuf[body]))),
                0x8 => return Ok(Some(Message::Close)),
                0x9 => {
                    let ping = self.rbuf[body].to_vec();
                    self.queue_frame(0xA, &ping);
                }
                0xA => {}
                0x1 => return Err("server sent a text message".into()),
                op => return Err(format!("unexpected WebSocket opcode {op:#x}").into()),
            }
        }
    }

    /// The next binary message decoded as a frame, reading as needed.
    pub async fn next_frame(&mut self) -> Result<Frame, Error> {
        loop {
            match self.next_message()? {
                Some(Message::Binary(b)) => return wire::decode(b),
                Some(Message::Close) => return Err("connection closed by the server".into()),
                None => self.read().await?,
            }
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "closed by the server")
}

/// What a stream of [`Incoming`] messages yields: read from a message's
/// bytes in place, with the frame (if any) to answer it with.
pub trait Inbound: Sized {
    fn read(bytes: &[u8]) -> Self;
    /// A frame to send back on the same connection (a heartbeat's echo).
    fn reply(&self) -> Option<Vec<u8>> {
        None
    }
}

/// A connection's messages as a `Stream` of batches of `T`: everything
/// one read brought, for driving many connections from one task
/// (`SelectAll`) at one poll per read rather than per message. Replies go
/// out from inside the poll, without waiting. A close or a failure is
/// yielded as an error (after the messages before it), and then the stream
/// ends.
pub struct Incoming<T> {
    ws: RawWs,
    /// The close or failure to yield next.
    failure: Option<Error>,
    ended: bool,
    _item: std::marker::PhantomData<fn() -> T>,
}

impl<T> Incoming<T> {
    pub fn new(ws: RawWs) -> Incoming<T> {
        Incoming {
            ws,
            failure: None,
            ended: false,
            _item: std::marker::PhantomData,
        }
    }
}

impl<T: Inbound> Stream for Incoming<T> {
    type Item = Result<Vec<T>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(e) = this.failure.take() {
            this.ended = true;
            return Poll::Ready(Some(Err(e)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let ws = &mut this.ws;
        let mut batch = Vec::new();
        loop {
            match ws.next_message() {
                Ok(Some(Message::Binary(bytes))) => {
                    let item = T::read(bytes);
                    if let Some(reply) = item.reply() {
                        ws.queue(&reply);
                    }
                    batch.push(item);
                    continue;
                }
                Ok(Some(Message::Close)) => {
                    this.failure = Some("connection closed by the server".into())
                }
                Err(e) => this.failure = Some(e),
                Ok(None) if batch.is_empty() => match ws.poll_read(cx) {
                    Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(e)) => this.failure = Some(e),
                    Poll::Pending => return Poll::Pending,
                },
                Ok(None) => {}
            }
            break;
        }
        if let Err(e) = ws.try_flush() {
            this.failure.get_or_insert(e.into());
        }
        if batch.is_empty() {
            this.ended = true;
            return Poll::Ready(this.failure.take().map(Err));
        }
        Poll::Ready(Some(Ok(batch)))
    }
}

impl wire::FrameLink for RawWs {
    async fn send_frame(&mut self, frame: &[u8]) -> Result<(), Error> {
        self.queue(frame);
        Ok(self.flush().await?)
    }
    async fn next_frame(&mut self) -> Result<Frame, Error> {
        RawWs::next_frame(self).await
    }
}

/// Connects and watches `key` (as [`wire::connect_watching`]): the
/// connection and the stream id its STATE_INIT announced.
pub async fn connect_watching(url: &str, key: &str) -> Result<(RawWs, u32), Error> {
    let mut ws = RawWs::connect(url).await?;
    let stream_id = wire::watch(&mut ws, key).await?;
    Ok((ws, stream_id))
}

/// Parses one frame at the front of `buf`: its opcode and the range of its
/// payload (whose end is the frame's length), or `None` when incomplete.
fn parse(buf: &[u8]) -> Result<Option<(u8, std::ops::Range<usize>)>, Error> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x80 == 0 || b0 & 0x0f == 0 {
        return Err("fragmented WebSocket messages are not supported here".into());
    }
    if b0 & 0x70 != 0 {
        return Err("WebSocket frame with reserved bits set".into());
    }
    if b1 & 0x80 != 0 {
        return Err("the server masked a frame".into());
    }
    let (head, len) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (4, u16::from_be_bytes([b[0], b[1]]) as usize),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let n = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                (10, usize::try_from(n).unwrap_or(usize::MAX))
            }
            None => return Ok(None),
        },
        n => (2, n as usize),
    };
    if len > MAX_MESSAGE {
        return Err(format!("WebSocket message of {len} bytes is over the limit").into());
    }
    if buf.len() < head + len {
        return Ok(None);
    }
    Ok(Some((b0 & 0x0f, head..head + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n @ 0..=125 => f.push(n as u8),
            n @ 126..=0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn parses_every_length_form_and_waits_for_the_rest() {
        for n in [0, 1, 125, 126, 300, 0xffff, 0x10000] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let f = server_frame(0x2, &payload);
            let (op, range) = parse(&f).unwrap().unwrap();
            assert_eq!(op, 0x2);
            assert_eq!(&f[range.clone()], &payload[..]);
            assert_eq!(range.end, f.len());
            for cut in [0, 1, f.len() / 2, f.len() - 1] {
                if cut < f.len() {
                    assert_eq!(parse(&f[..cut]).unwrap(), None, "n={n} cut={cut}");
                }
            }
        }
    }

    #[test]
    fn refuses_fragments_masks_and_oversize() {
        assert!(parse(&[0x02, 0x01, 0]).is_err(), "FIN clear");
        assert!(parse(&[0x80, 0x01, 0]).is_err(), "continuation");
        assert!(parse(&[0x82, 0x81, 0, 0, 0, 0, 7]).is_err(), "masked");
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(MAX_MESSAGE as u64 + 1).to_be_bytes());
        assert!(parse(&huge).is_err());
    }

    #[tokio::test]
    async fn round_trips_frames_and_answers_pings_over_a_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            while !req.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await.unwrap();
                req.push(b[0]);
            }
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
            )
            .into_bytes();
            let mut hello = Vec::new();
            sodp_proto::frame::write_header(&mut hello, FrameType::Hello, 0, 0);
            sodp_proto::codec::write_map_len(&mut hello, 0);
            out.extend(server_frame(0x2, &hello));
            out.extend(server_frame(0x9, b"pi"));
            out.extend(server_frame(0x2, b"one"));
            s.write_all(&out).await.unwrap();
            // The pong (masked, zero key) and the client's message.
            let mut got = vec![0u8; 8 + 4 + 4];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(&server_frame(0x8, b"")).await.unwrap();
            got
        });
        let mut ws = RawWs::connect(&format!("ws://{addr}")).await.unwrap();
        loop {
            match ws.next_message().unwrap() {
                Some(Message::Binary(b)) => {
                    assert_eq!(b, b"one");
                    break;
                }
                Some(Message::Close) => panic!("closed early"),
                None => ws.read().await.unwrap(),
            }
        }
        assert!(ws.has_queued(), "the ping's pong waits for the flush");
        ws.queue(b"hi");
        ws.flush().await.unwrap();
        let got = server.await.unwrap();
        assert_eq!(
            got,
            [0x8A, 0x82, 0, 0, 0, 0, b'p', b'i', 0x82, 0x82, 0, 0, 0, 0, b'h', b'i']
        );
        loop {
            match ws.next_message().unwrap() {
                Some(m) => {
                    assert_eq!(m, Message::Close);
                    break;
                }
                None => ws.read().await.unwrap(),
            }
        }
    }
}
