//! The client side of the protocol as the load generator needs it:
//! connecting (TCP_NODELAY, WebSocket upgrade, HELLO, AUTH when asked), building request
//! frames from pre-encoded pieces, and reading the few fields of server
//! frames the scenarios look at.

use std::io;

use futures_util::{SinkExt, StreamExt};
use sodp_proto::codec::{self, DEFAULT_MAX_DEPTH};
use sodp_proto::frame::write_header;
use sodp_proto::{Frame, FrameType, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

/// One client connection.
pub type Ws = WebSocketStream<TcpStream>;

/// Any failure of a scenario's connection.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// `host:port` of a `ws://` (or `sodp://`) URL; TLS schemes are refused
/// (the benchmark is loopback only).
pub fn host_port(url: &str) -> Result<String, Error> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("sodp://"))
        .ok_or("only ws:// and sodp:// URLs are supported")?;
    let hp = rest.split('/').next().unwrap_or(rest);
    Ok(if hp.contains(':') {
        hp.to_string()
    } else {
        format!("{hp}:7777")
    })
}

/// The token every connection authenticates with when the server asks
/// (`--token`; set once, before any connection).
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Authenticate with `token` when a server asks for it (HELLO `auth: true`).
pub fn use_token(token: String) {
    let _ = TOKEN.set(token);
}

/// The `--token`, when one was given.
pub fn token() -> Option<&'static str> {
    TOKEN.get().map(String::as_str)
}

/// Opens a connection and reads HELLO; when the server requires auth, sends
/// the `--token` and waits for AUTH_OK (refused without one).
/// `read_buffer` sizes the WebSocket read buffer (small for many idle
/// connections, larger for busy ones).
pub async fn connect(url: &str, read_buffer: usize) -> Result<Ws, Error> {
    let tcp = TcpStream::connect(host_port(url)?).await?;
    tcp.set_nodelay(true)?;
    let request = url.replacen("sodp://", "ws://", 1);
    let config = WebSocketConfig::default().read_buffer_size(read_buffer);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, tcp, Some(config)).await?;
    let hello = next_frame(&mut ws).await?;
    if hello.kind != FrameType::Hello {
        return Err(format!("expected HELLO, got {:?}", hello.kind).into());
    }
    if hello.body.get("auth").and_then(Value::as_bool) == Some(true) {
        let token = token().ok_or("server requires auth: pass --token (a JWT it accepts)")?;
        send(&mut ws, auth_frame(token)).await?;
        let answer = next_frame(&mut ws).await?;
        if answer.kind != FrameType::AuthOk {
            return Err(format!("AUTH refused: {:?}", answer.body.to_json()).into());
        }
    }
    Ok(ws)
}

/// `AUTH {token}`.
pub fn auth_frame(token: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + token.len());
    write_header(&mut buf, FrameType::Auth, 0, 0);
    codec::write_map_len(&mut buf, 1);
    codec::write_str(&mut buf, "token");
    codec::write_str(&mut buf, token);
    buf
}

/// The two things connection set-up needs from a client WebSocket, whichever
/// one a scenario uses (tungstenite's [`Ws`] or the lean `rawws::RawWs`):
/// send one frame now, read the next frame.
pub trait FrameLink {
    /// Sends one encoded frame and flushes it.
    async fn send_frame(&mut self, frame: &[u8]) -> Result<(), Error>;
    /// The next frame the server sent.
    async fn next_frame(&mut self) -> Result<Frame, Error>;
}

impl FrameLink for Ws {
    async fn send_frame(&mut self, frame: &[u8]) -> Result<(), Error> {
        send(self, frame.to_vec()).await
    }
    async fn next_frame(&mut self) -> Result<Frame, Error> {
        next_frame(self).await
    }
}

/// Watches `key` on an open connection and returns the stream id the server
/// assigned (announced in STATE_INIT); heartbeats that arrive first are echoed.
pub async fn watch(link: &mut impl FrameLink, key: &str) -> Result<u32, Error> {
    link.send_frame(&watch_frame(key, 0)).await?;
    loop {
        let f = link.next_frame().await?;
        match f.kind {
            FrameType::StateInit => return Ok(f.stream_id),
            FrameType::Heartbeat => link.send_frame(&heartbeat_frame()).await?,
            FrameType::Error => return Err(format!("WATCH refused: {:?}", f.body.to_json()).into()),
            _ => {}
        }
    }
}

/// Connects and watches `key`; returns the connection and its stream id.
pub async fn connect_watching(
    url: &str,
    key: &str,
    read_buffer: usize,
) -> Result<(Ws, u32), Error> {
    let mut ws = connect(url, read_buffer).await?;
    let stream_id = watch(&mut ws, key).await?;
    Ok((ws, stream_id))
}

/// Runs `open` `count` times, at most `concurrency` at a time (a burst of
/// thousands of connects would overflow the server's accept backlog), and
/// collects the results in no particular order; the first error wins.
pub async fn open_many<T, Fut>(
    count: usize,
    concurrency: usize,
    mut open: impl FnMut() -> Fut,
) -> Result<Vec<T>, Error>
where
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    use futures_util::stream::{self, TryStreamExt};
    stream::iter((0..count).map(|_| open()))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// Reads the next binary message as a frame, answering nothing itself.
pub async fn next_frame(ws: &mut Ws) -> Result<Frame, Error> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return decode(&b),
            Some(Ok(Message::Close(_))) | None => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed").into())
            }
            Some(Ok(Message::Text(_))) => return Err("server sent a text message".into()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// Decodes one server frame.
pub fn decode(bytes: &[u8]) -> Result<Frame, Error> {
    Ok(Frame::decode(bytes, DEFAULT_MAX_DEPTH)?)
}

/// Sends one frame and flushes.
pub async fn send(ws: &mut Ws, frame: Vec<u8>) -> Result<(), Error> {
    ws.send(Message::Binary(Bytes::from(frame))).await?;
    Ok(())
}

/// A binary message around encoded frame bytes.
pub fn message(frame: Vec<u8>) -> Message {
    Message::Binary(Bytes::from(frame))
}

/// `WATCH {state}` with a suggested stream id (0: let the server pick).
pub fn watch_frame(key: &str, stream_id: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + key.len());
    write_header(&mut buf, FrameType::Watch, stream_id, 0);
    codec::write_map_len(&mut buf, 1);
    codec::write_str(&mut buf, "state");
    codec::write_str(&mut buf, key);
    buf
}

/// `HEARTBEAT` (also the echo of a server heartbeat).
pub fn heartbeat_frame() -> Vec<u8> {
    let mut buf = Vec::with_capacity(5);
    write_header(&mut buf, FrameType::Heartbeat, 0, 0);
    codec::write_nil(&mut buf);
    buf
}

/// A CALL of one method on one key, pre-encoded except for the call id and
/// the argument value: building a frame is two memcpys and two small writes.
pub struct CallTemplate {
    /// `{call_id:` (map header and key).
    head: Vec<u8>,
    /// `, method: M, args: {state: K, ARG:` up to the argument value.
    middle: Vec<u8>,
}

impl CallTemplate {
    /// `method` is e.g. `state.set` with `arg` `value`, or `state.patch`
    /// with `patch`.
    pub fn new(method: &str, key: &str, arg: &str) -> CallTemplate {
        let mut head = Vec::with_capacity(16);
        codec::write_map_len(&mut head, 3);
        codec::write_str(&mut head, "call_id");
        let mut middle = Vec::with_capacity(48 + key.len());
        codec::write_str(&mut middle, "method");
        codec::write_str(&mut middle, method);
        codec::write_str(&mut middle, "args");
        codec::write_map_len(&mut middle, 2);
        codec::write_str(&mut middle, "state");
        codec::write_str(&mut middle, key);
        codec::write_str(&mut middle, arg);
        CallTemplate { head, middle }
    }

    /// The frame for call `call_id`; `write_arg` appends the argument value.
    pub fn frame(&self, seq: u64, call_id: &str, write_arg: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.head.len() + self.middle.len() + 48);
        write_header(&mut buf, FrameType::Call, 0, seq);
        buf.extend_from_slice(&self.head);
        codec::write_str(&mut buf, call_id);
        buf.extend_from_slice(&self.middle);
        write_arg(&mut buf);
        buf
    }
}

/// Writes a small map of unsigned integer fields (the benchmark's values).
pub fn write_uint_map(buf: &mut Vec<u8>, fields: &[(&str, u64)]) {
    codec::write_map_len(buf, fields.len());
    for (k, v) in fields {
        codec::write_str(buf, k);
        codec::write_uint(buf, *v);
    }
}

/// The call number encoded in a call id written as `PREFIX` + decimal.
pub fn call_number(body: &Value, prefix: &str) -> Option<u64> {
    body.get("call_id")?
        .as_str()?
        .strip_prefix(prefix)?
        .parse()
        .ok()
}

/// The value of field `field` after a DELTA, when the DELTA sets it: an op
/// at `/field`, or an op at the root whose value is a map holding it.
pub fn delta_field(body: &Value, field: &str) -> Option<u64> {
    let ops = body.get("ops")?.as_array()?;
    let mut found = None;
    for op in ops {
        let path = op.get("path").and_then(Value::as_str);
        let value = op.get("value");
        match path {
            Some("/") | Some("") => {
                if let Some(v) = value.and_then(|v| v.get(field)).and_then(Value::as_u64) {
                    found = Some(v);
                }
            }
            Some(p) if p.strip_prefix('/') == Some(field) => {
                if let Some(v) = value.and_then(Value::as_u64) {
                    found = Some(v);
                }
            }
            _ => {}
        }
    }
    found
}

/// A key name unique to this run, so repeated runs against one server
/// never see each other's state.
pub fn run_key(scenario: &str, suffix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("bench.{scenario}.p{}t{t}{suffix}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_template_round_trips() {
        let t = CallTemplate::new("state.patch", "a.b", "patch");
        let bytes = t.frame(7, "w42", |b| {
            write_uint_map(b, &[("n", 42), ("t", 1 << 40)])
        });
        let f = decode(&bytes).unwrap();
        assert_eq!(f.kind, FrameType::Call);
        assert_eq!(f.seq, 7);
        assert_eq!(call_number(&f.body, "w"), Some(42));
        assert_eq!(f.body.get("method").unwrap().as_str(), Some("state.patch"));
        let args = f.body.get("args").unwrap();
        assert_eq!(args.get("state").unwrap().as_str(), Some("a.b"));
        assert_eq!(
            args.get("patch").unwrap().get("n").unwrap().as_u64(),
            Some(42)
        );
    }

    #[test]
    fn delta_field_reads_leaf_and_root_ops() {
        let leaf: Value = serde_json::json!({"version": 3, "ops": [
            {"op": "UPDATE", "path": "/t", "value": 9},
            {"op": "UPDATE", "path": "/n", "value": 5}]})
        .into();
        assert_eq!(delta_field(&leaf, "n"), Some(5));
        let root: Value = serde_json::json!({"version": 1, "ops": [
            {"op": "ADD", "path": "/", "value": {"n": 0, "t": 1}}]})
        .into();
        assert_eq!(delta_field(&root, "n"), Some(0));
        assert_eq!(delta_field(&root, "x"), None);
    }

    #[test]
    fn urls() {
        assert_eq!(host_port("ws://127.0.0.1:7790").unwrap(), "127.0.0.1:7790");
        assert_eq!(host_port("sodp://localhost/x").unwrap(), "localhost:7777");
        assert!(host_port("wss://x").is_err());
    }
}
