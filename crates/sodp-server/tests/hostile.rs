//! Bad input: each malformed frame gets a clear error, the connection stays
//! usable, and nothing is lost. Limits refuse with errors, not crashes.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use sodp_proto::codec::encode_value;
use sodp_proto::{Frame, FrameType, Value};
use tokio_tungstenite::tungstenite::Message;

fn frame_of(items: Vec<Value>) -> Vec<u8> {
    encode_value(&Value::from(items))
}

async fn expect_error(c: &mut TestClient, code: i64, needle: &str) {
    let f = c.recv().await;
    assert_eq!(f.kind, FrameType::Error, "{f:?}");
    assert_eq!(
        f.body.get("code").and_then(Value::as_i64),
        Some(code),
        "{f:?}"
    );
    let message = f.body.get("message").and_then(Value::as_str).unwrap();
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
}

#[tokio::test]
async fn malformed_frames_each_get_an_error_and_the_connection_survives() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.ok("state.set", json!({"state": "survivor", "value": 0}))
        .await;
    let cases: Vec<(&str, Message, &str)> = vec![
        (
            "not msgpack",
            Message::Binary(vec![0xc1].into()),
            "MessagePack",
        ),
        (
            "truncated",
            Message::Binary(vec![0x94, 0x01].into()),
            "truncated",
        ),
        (
            "not an array",
            Message::Binary(encode_value(&Value::Int(5)).into()),
            "array",
        ),
        (
            "wrong arity",
            Message::Binary(frame_of(vec![2i64.into(), 0i64.into()]).into()),
            "4 elements",
        ),
        ("text message", Message::Text("hello".into()), "binary"),
        (
            "type not an int",
            Message::Binary(
                frame_of(vec!["x".into(), 0i64.into(), 0i64.into(), Value::Nil]).into(),
            ),
            "type",
        ),
        (
            "negative stream id",
            Message::Binary(
                frame_of(vec![2i64.into(), (-1i64).into(), 0i64.into(), Value::Nil]).into(),
            ),
            "stream_id",
        ),
        (
            "body not a map",
            Message::Binary(
                frame_of(vec![2i64.into(), 0i64.into(), 0i64.into(), 5i64.into()]).into(),
            ),
            "body",
        ),
        (
            "unknown frame type",
            Message::Binary(
                frame_of(vec![0x08i64.into(), 0i64.into(), 0i64.into(), Value::Nil]).into(),
            ),
            "unknown frame type",
        ),
        (
            "extension type",
            Message::Binary(vec![0x94, 0x02, 0x00, 0x00, 0xd4, 0x01, 0x01].into()),
            "extension",
        ),
        (
            "non-string map key",
            Message::Binary(vec![0x94, 0x02, 0x00, 0x00, 0x81, 0x01, 0x01].into()),
            "map keys",
        ),
        (
            "server-only frame",
            Message::Binary(Frame::new(FrameType::Delta, 0, Value::Nil).encode().into()),
            "sent by servers",
        ),
        (
            "WATCH without state",
            Message::Binary(
                Frame::new(FrameType::Watch, 10, v(json!({})))
                    .encode()
                    .into(),
            ),
            "state",
        ),
        (
            "WATCH of a bad key",
            Message::Binary(
                Frame::new(FrameType::Watch, 10, v(json!({"state": "a..b"})))
                    .encode()
                    .into(),
            ),
            "bad key",
        ),
        (
            "RESUME without since_version",
            Message::Binary(
                Frame::new(FrameType::Resume, 10, v(json!({"state": "a"})))
                    .encode()
                    .into(),
            ),
            "since_version",
        ),
        (
            "CALL without call_id",
            Message::Binary(
                Frame::new(FrameType::Call, 0, v(json!({"method": "state.set"})))
                    .encode()
                    .into(),
            ),
            "call_id",
        ),
    ];
    for (name, msg, needle) in cases {
        c.send_raw(msg).await;
        expect_error(&mut c, 400, needle).await;
        // Still usable, and nothing was lost.
        let r = c
            .call("state.set", json!({"state": "survivor", "value": 0}))
            .await;
        assert_eq!(
            r.get("success"),
            Some(&Value::Bool(true)),
            "after {name}: {r:?}"
        );
    }
    assert_eq!(server.shared.store.snapshot("survivor").value, v(json!(0)));
}

#[tokio::test]
async fn wrong_argument_types_fail_the_call_only() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for (method, args) in [
        ("state.set", json!({"state": "k"})),
        ("state.set", json!({"state": ["k"], "value": 1})),
        ("state.patch", json!({"state": "k", "patch": [1, 2]})),
        ("state.set_in", json!({"state": "k", "path": 5, "value": 1})),
        ("state.presence", json!({"state": "k", "path": "/p"})),
    ] {
        let r = c.call(method, args.clone()).await;
        assert_eq!(failure_code(&r), Some(400), "{method} {args}");
    }
    let r = c.call_value("state.set", Value::Int(3)).await;
    assert_eq!(failure_code(&r), Some(400), "args not a map");
    c.ok("state.set", json!({"state": "k", "value": 1})).await;
}

#[tokio::test]
async fn hostile_nesting_is_refused_and_answered_by_call_id() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    // A 100,000-deep array as the value of a CALL.
    let mut bytes = vec![0x94, 0x05, 0x00, 0x01];
    bytes.extend_from_slice(
        &encode_value(&v(json!({"call_id": "deep", "method": "state.set"})))[..],
    );
    // Rewrite: body map with 4 entries, the last being args.value = deep array.
    let mut body = vec![0x83];
    body.extend_from_slice(&encode_value(&Value::from("call_id")));
    body.extend_from_slice(&encode_value(&Value::from("deep")));
    body.extend_from_slice(&encode_value(&Value::from("method")));
    body.extend_from_slice(&encode_value(&Value::from("state.set")));
    body.extend_from_slice(&encode_value(&Value::from("args")));
    body.push(0x82);
    body.extend_from_slice(&encode_value(&Value::from("state")));
    body.extend_from_slice(&encode_value(&Value::from("k")));
    body.extend_from_slice(&encode_value(&Value::from("value")));
    body.extend(std::iter::repeat_n(0x91, 100_000));
    body.push(0xc0);
    let mut frame = vec![0x94, 0x05, 0x00, 0x01];
    frame.extend(body);
    drop(bytes);
    c.send_raw(Message::Binary(frame.into())).await;
    let f = c.recv().await;
    assert_eq!(f.kind, FrameType::Result, "{f:?}");
    assert_eq!(f.body.get("call_id"), Some(&Value::from("deep")));
    assert_eq!(failure_code(&f.body), Some(400));
    assert!(f
        .body
        .get("data")
        .and_then(Value::as_str)
        .unwrap()
        .contains("nested deeper"));
    // Deep but within the default limit (128) is fine — 120 levels, which
    // the old limit of 64 refused; deep via a long set_in path is not.
    let mut ok = json!(1);
    for _ in 0..120 {
        ok = json!([ok]);
    }
    c.ok("state.set", json!({"state": "k", "value": ok})).await;
    let long_path = "/a".repeat(200);
    let r = c
        .call(
            "state.set_in",
            json!({"state": "k2", "path": long_path, "value": 1}),
        )
        .await;
    assert_eq!(failure_code(&r), Some(400));
    assert_eq!(server.shared.connections(), 1);
}

#[tokio::test]
async fn oversized_message_gets_400_then_close_1009() {
    let server = TestServer::with(|c| c.limits.max_message_bytes = 64 * 1024).await;
    let mut bystander = server.client().await;
    let mut c = server.client().await;
    let big = "x".repeat(100 * 1024);
    let body =
        v(json!({"call_id": "big", "method": "state.set", "args": {"state": "k", "value": big}}));
    c.send(FrameType::Call, 0, body).await;
    expect_error(&mut c, 400, "exceeds the limit").await;
    assert_eq!(c.expect_close().await, Some(1009));
    // The server and other sessions carry on.
    bystander
        .ok("state.set", json!({"state": "k", "value": 1}))
        .await;
}

#[tokio::test]
async fn key_and_subscription_limits() {
    let server = TestServer::with(|c| {
        c.limits.max_subscriptions = 2;
        c.limits.max_key_len = 16;
        c.limits.max_keys = Some(3);
    })
    .await;
    let mut c = server.client().await;
    c.watch("a").await;
    c.send(FrameType::Watch, 10, v(json!({"states": ["b", "c"]})))
        .await;
    assert_eq!(c.recv().await.kind, FrameType::StateInit);
    expect_error(&mut c, 400, "subscription limit").await;
    // Watching an already-watched key is not a new subscription.
    c.watch("a").await;

    let r = c
        .call("state.set", json!({"state": "k".repeat(17), "value": 1}))
        .await;
    assert_eq!(failure_code(&r), Some(400));
    c.ok("state.set", json!({"state": "c", "value": 1})).await;
    let r = c.call("state.set", json!({"state": "d", "value": 1})).await;
    assert_eq!(failure_code(&r), Some(400), "max keys");
    assert!(r
        .get("data")
        .and_then(Value::as_str)
        .unwrap()
        .contains("maximum of 3 keys"));
    c.expect_silence(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_value_cannot_be_grown_past_the_size_limit() {
    let server = TestServer::with(|c| c.limits.max_value_bytes = Some(10_000)).await;
    let mut watcher = server.client().await;
    let mut c = server.client().await;
    watcher.watch("big").await;
    let chunk = "x".repeat(3000);
    for field in ["a", "b", "c"] {
        c.ok(
            "state.patch",
            json!({"state": "big", "patch": {field: chunk}}),
        )
        .await;
        watcher.delta().await;
    }
    let r = c
        .call(
            "state.patch",
            json!({"state": "big", "patch": {"d": chunk}}),
        )
        .await;
    assert_eq!(failure_code(&r), Some(400));
    assert!(r
        .get("data")
        .and_then(Value::as_str)
        .unwrap()
        .contains("over the limit of 10000 bytes"));
    watcher.expect_silence(Duration::from_millis(100)).await;
    assert_eq!(
        c.hello
            .body
            .get("capabilities")
            .and_then(|c| c.get("max_value_bytes")),
        Some(&Value::Int(10_000))
    );
}

#[tokio::test]
async fn presence_paths_per_session_are_limited() {
    let server = TestServer::with(|c| c.limits.max_presence_paths = 2).await;
    let mut c = server.client().await;
    for p in ["/a", "/b", "/a"] {
        c.ok(
            "state.presence",
            json!({"state": "room", "path": p, "value": 1}),
        )
        .await;
    }
    let r = c
        .call(
            "state.presence",
            json!({"state": "room", "path": "/c", "value": 1}),
        )
        .await;
    assert_eq!(failure_code(&r), Some(400));
    assert!(r
        .get("data")
        .and_then(Value::as_str)
        .unwrap()
        .contains("presence limit"));
    assert_eq!(
        server.shared.store.snapshot("room").value,
        v(json!({"a": 1, "b": 1}))
    );
}

#[tokio::test]
async fn watching_random_keys_does_not_grow_the_store() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for i in 0..200 {
        let key = format!("tmp.k{i}");
        c.watch(&key).await;
        c.send(FrameType::Unwatch, 0, v(json!({"state": key})))
            .await;
    }
    c.ok("state.set", json!({"state": "kept", "value": 1}))
        .await;
    assert_eq!(server.shared.store.key_count(), 1);
}

#[tokio::test]
async fn http_health_and_non_websocket_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let _c = server.client().await;
    let get = |path: &'static str| http_get(server.addr, path);
    let health = get("/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let body: serde_json::Value =
        serde_json::from_str(health.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["connections"], 1);
    assert!(body["version"].is_string());
    assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
    assert!(get("/").await.starts_with("HTTP/1.1 426"));
    // Garbage instead of HTTP.
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"\x00\x01\x02 nonsense\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
}

#[tokio::test]
async fn an_oversized_message_is_refused_from_its_header_alone() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Raw TCP, so the client can claim a 100 MB message and send 4 bytes of
    // it: the server must answer at once, not wait for (or buffer) the rest.
    let server = TestServer::start().await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(UPGRADE_REQUEST).await.unwrap();
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(100u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]); // mask
    frame.extend_from_slice(&[0, 0, 0, 0]); // a little payload, then silence
    s.write_all(&frame).await.unwrap();

    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // Read until the close frame (0x88) has arrived.
    while !received
        .windows(2)
        .any(|w| w == [0x88, 0x02] || w == [0x88, 0x11])
    {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("the server waited for the rest of the message")
            .unwrap();
        assert!(n > 0, "closed without a close frame: {received:?}");
        received.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.contains("exceeds the limit"),
        "ERROR 400 before the close: {text}"
    );
    let close = received.windows(2).position(|w| w[0] == 0x88).unwrap();
    let code = u16::from_be_bytes([received[close + 2], received[close + 3]]);
    assert_eq!(code, 1009);
}

#[tokio::test]
async fn a_connection_that_never_sends_its_request_is_closed() {
    use tokio::io::AsyncReadExt;
    let server = TestServer::with(|c| c.handshake_timeout = Duration::from_millis(200)).await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the server kept a silent connection open")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a response");
    assert_eq!(server.shared.connections(), 0);
}

/// A WebSocket upgrade request, for tests that speak raw TCP.
const UPGRADE_REQUEST: &[u8] =
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A client frame as raw bytes: masked (with a fixed key), as clients must.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x9c, 0x01, 0x5e, 0xa7];
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Splits the server's unmasked frames off the front of `buf`:
/// (opcode, payload) for each complete one.
fn server_frames(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let [b0, b1, ..] = buf[..] {
        let (len, at) = match b1 & 0x7f {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            127 if buf.len() >= 10 => (
                u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if buf.len() < at + len {
            break;
        }
        out.push((b0 & 0x0f, buf[at..at + len].to_vec()));
        buf.drain(..at + len);
    }
    out
}

#[tokio::test]
async fn websocket_framing_pings_fragments_and_pipelined_bursts_over_a_raw_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The server reads WebSocket frames itself: everything a client may do
    // at the framing level, sent in awkward pieces, must come out right.
    let server = TestServer::start().await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let call = |i: usize| {
        let body = Value::map_from(vec![
            ("call_id", Value::from(format!("c{i}").as_str())),
            ("method", Value::from("state.set")),
            ("args", v(json!({"state": "raw.k", "value": i}))),
        ]);
        Frame::new(FrameType::Call, 0, body).encode()
    };
    // The upgrade request and the first frames in one write (the frames are
    // read along with the request), a ping among them.
    let mut first = UPGRADE_REQUEST.to_vec();
    first.extend(client_frame(true, 9, b"early"));
    first.extend(client_frame(true, 2, &call(0)));
    s.write_all(&first).await.unwrap();
    // A CALL in three fragments with a ping between them, then 150 CALLs
    // in one write (more than one read burst), all sent a few bytes at a
    // time at an odd boundary.
    let one = call(1);
    let mut rest = client_frame(false, 2, &one[..5]);
    rest.extend(client_frame(true, 9, b"mid"));
    rest.extend(client_frame(false, 0, &one[5..9]));
    rest.extend(client_frame(true, 0, &one[9..]));
    for i in 2..152 {
        rest.extend(client_frame(true, 2, &call(i)));
    }
    for piece in rest.chunks(997) {
        s.write_all(piece).await.unwrap();
    }

    let (mut buf, mut got) = (Vec::new(), Vec::new());
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let results = |got: &Vec<(u8, Vec<u8>)>| {
        got.iter()
            .filter(|(op, p)| *op == 2 && Frame::decode(p, 64).unwrap().kind == FrameType::Result)
            .count()
    };
    let mut upgraded = false;
    while !upgraded || results(&got) < 152 {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .expect("every CALL answered in time")
            .unwrap();
        assert!(n > 0, "closed early");
        buf.extend_from_slice(&chunk[..n]);
        if !upgraded {
            // Skip the HTTP response head.
            let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            assert!(buf.starts_with(b"HTTP/1.1 101"), "{buf:?}");
            buf.drain(..head + 4);
            upgraded = true;
        }
        got.extend(server_frames(&mut buf));
    }
    let pongs: Vec<&[u8]> = got
        .iter()
        .filter(|(op, _)| *op == 10)
        .map(|(_, p)| p.as_slice())
        .collect();
    assert_eq!(pongs, [b"early".as_slice(), b"mid"], "each ping answered");
    let answered: Vec<Value> = got
        .iter()
        .filter(|(op, _)| *op == 2)
        .map(|(_, p)| Frame::decode(p, 64).unwrap())
        .filter(|f| f.kind == FrameType::Result)
        .map(|f| f.body.get("call_id").cloned().unwrap())
        .collect();
    let want: Vec<Value> = (0..152)
        .map(|i| Value::from(format!("c{i}").as_str()))
        .collect();
    assert_eq!(answered, want, "every CALL answered, in order");

    // A close frame is answered with the same code.
    s.write_all(&client_frame(true, 8, &4001u16.to_be_bytes()))
        .await
        .unwrap();
    let mut tail = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut tail))
        .await
        .expect("closed after the close frame")
        .unwrap();
    buf.extend(tail);
    let last = server_frames(&mut buf).pop().expect("a close frame");
    assert_eq!(last, (8, 4001u16.to_be_bytes().to_vec()));
}

/// A raw connection past the upgrade and the HELLO frame.
async fn raw_upgraded(server: &TestServer) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(UPGRADE_REQUEST).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("the upgrade and HELLO arrive")
            .unwrap();
        assert!(n > 0, "closed during the upgrade");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let mut frames = buf[head + 4..].to_vec();
            let got = server_frames(&mut frames);
            if let Some((2, hello)) = got.first() {
                assert_eq!(Frame::decode(hello, 64).unwrap().kind, FrameType::Hello);
                return (s, frames);
            }
        }
    }
}

/// Everything the server sends until it closes the connection.
async fn frames_until_closed(
    s: &mut tokio::net::TcpStream,
    mut buf: Vec<u8>,
) -> Vec<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut tail = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut tail))
        .await
        .expect("the server closes the connection")
        .unwrap();
    buf.extend(tail);
    server_frames(&mut buf)
}

#[tokio::test]
async fn broken_framing_is_closed_with_1002_and_text_that_is_not_utf8_with_1007() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;

    // An unmasked client frame: close 1002 with a reason, no ERROR frame.
    let (mut s, buf) = raw_upgraded(&server).await;
    s.write_all(&[0x82, 1, 0]).await.unwrap();
    let got = frames_until_closed(&mut s, buf).await;
    let (op, payload) = got.last().expect("a close frame").clone();
    assert_eq!(op, 8, "{got:?}");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);
    assert_eq!(&payload[2..], b"WebSocket protocol error");
    assert!(
        got.iter().all(|(op, _)| *op != 2),
        "no frame but the close: {got:?}"
    );

    // A text message that is not UTF-8, split inside the bad sequence: 1007.
    let (mut s, buf) = raw_upgraded(&server).await;
    let bad = [0x61, 0xff, 0x62];
    let mut bytes = client_frame(false, 1, &bad[..2]);
    bytes.extend(client_frame(true, 0, &bad[2..]));
    s.write_all(&bytes).await.unwrap();
    let got = frames_until_closed(&mut s, buf).await;
    let (op, payload) = got.last().expect("a close frame").clone();
    assert_eq!(op, 8, "{got:?}");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1007);

    // A valid text message is only refused: ERROR 400, and the connection
    // goes on to answer a CALL.
    let (mut s, mut buf) = raw_upgraded(&server).await;
    s.write_all(&client_frame(true, 1, "héllo".as_bytes()))
        .await
        .unwrap();
    let call = Frame::new(
        FrameType::Call,
        0,
        Value::map_from(vec![
            ("call_id", Value::from("after-text")),
            ("method", Value::from("state.set")),
            ("args", v(json!({"state": "raw.text", "value": 1}))),
        ]),
    )
    .encode();
    s.write_all(&client_frame(true, 2, &call)).await.unwrap();
    let mut decoded = Vec::new();
    let mut chunk = [0u8; 4096];
    while decoded.len() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("the ERROR and the RESULT arrive")
            .unwrap();
        assert!(n > 0, "closed after a valid text message");
        buf.extend_from_slice(&chunk[..n]);
        for (op, payload) in server_frames(&mut buf) {
            assert_eq!(op, 2, "only binary frames");
            decoded.push(Frame::decode(&payload, 64).unwrap());
        }
    }
    assert_eq!(decoded[0].kind, FrameType::Error);
    assert_eq!(
        decoded[0].body.get("code").and_then(Value::as_i64),
        Some(400)
    );
    assert_eq!(decoded[1].kind, FrameType::Result);
    assert_eq!(
        decoded[1].body.get("call_id").and_then(Value::as_str),
        Some("after-text")
    );
}
