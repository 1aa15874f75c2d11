//! Test harness: a real server on an ephemeral port and a raw protocol
//! client that speaks frames over a real WebSocket.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use sodp_proto::{DeltaOp, Frame, FrameType, Value};
use sodp_server::{Config, Server, Shared};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A server running in this process; stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    /// With `config.metrics_addr` set: where `/metrics` is served.
    pub metrics_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with(|_| {}).await
    }

    pub async fn with(configure: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        configure(&mut config);
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr().unwrap();
        let metrics_addr = server.metrics_addr();
        let shared = server.shared();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            metrics_addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub async fn client(&self) -> TestClient {
        TestClient::connect(&self.url()).await
    }

    /// Stops the server and waits until it has shut down.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol client with no smarts: it sends the frames it is told to and
/// returns what arrives.
pub struct TestClient {
    pub ws: Ws,
    next_call: u64,
    /// Frames that arrived while `call` waited for its RESULT.
    pending: std::collections::VecDeque<Frame>,
    pub hello: Frame,
}

pub fn v(j: serde_json::Value) -> Value {
    Value::from(j)
}

impl TestClient {
    pub async fn connect(url: &str) -> TestClient {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .expect("connect");
        TestClient::from_ws(ws).await
    }

    /// Wraps an already upgraded WebSocket (custom headers, source
    /// address...) and reads its HELLO.
    pub async fn from_ws(ws: Ws) -> TestClient {
        let mut c = TestClient {
            ws,
            next_call: 0,
            pending: Default::default(),
            hello: Frame::new(FrameType::Hello, 0, Value::Nil),
        };
        c.hello = c.recv().await;
        assert_eq!(c.hello.kind, FrameType::Hello);
        c
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    pub async fn send(&mut self, kind: FrameType, stream_id: u32, body: Value) {
        let bytes = Frame::new(kind, stream_id, body).encode();
        self.send_raw(Message::Binary(bytes.into())).await;
    }

    /// The next frame, skipping server HEARTBEATs.
    pub async fn recv(&mut self) -> Frame {
        match self.pending.pop_front() {
            Some(f) => f,
            None => self.next_from_socket().await,
        }
    }

    async fn next_from_socket(&mut self) -> Frame {
        loop {
            let f = self.recv_any().await;
            if f.kind != FrameType::Heartbeat {
                return f;
            }
        }
    }

    /// The next frame from the socket, whatever it is.
    pub async fn recv_any(&mut self) -> Frame {
        loop {
            let msg = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection ended")
                .expect("read failed");
            match msg {
                Message::Binary(b) => {
                    return Frame::decode(&b, 128).expect("server sent a bad frame")
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// Asserts that nothing but heartbeats arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        assert!(
            self.pending.is_empty(),
            "unexpected frames {:?}",
            self.pending
        );
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Binary(b)))) => {
                    let f = Frame::decode(&b, 128).unwrap();
                    assert_eq!(f.kind, FrameType::Heartbeat, "unexpected frame {f:?}");
                }
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Waits for the server to close the connection; returns the close code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for close")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    pub async fn watch(&mut self, key: &str) -> Frame {
        self.send(FrameType::Watch, 10, v(json!({"state": key})))
            .await;
        let f = self.recv().await;
        assert_eq!(f.kind, FrameType::StateInit, "{f:?}");
        f
    }

    /// Sends a CALL and returns its RESULT body (skipping other frames).
    pub async fn call(&mut self, method: &str, args: serde_json::Value) -> Value {
        self.call_value(method, v(args)).await
    }

    pub async fn call_value(&mut self, method: &str, args: Value) -> Value {
        self.call_with(method, args, []).await
    }

    /// A CALL with more fields in its body (e.g. `idempotency_key`).
    pub async fn call_with<const N: usize>(
        &mut self,
        method: &str,
        args: Value,
        extra: [(&str, Value); N],
    ) -> Value {
        self.next_call += 1;
        let call_id = format!("c{}", self.next_call);
        let mut fields = vec![
            ("call_id", Value::from(call_id.as_str())),
            ("method", Value::from(method)),
            ("args", args),
        ];
        fields.extend(extra);
        let body = Value::map_from(fields);
        self.send(FrameType::Call, 0, body).await;
        loop {
            let f = self.next_from_socket().await;
            if f.kind == FrameType::Result
                && f.body.get("call_id") == Some(&Value::from(call_id.as_str()))
            {
                return f.body;
            }
            self.pending.push_back(f);
        }
    }

    /// A CALL that must succeed; returns the new version.
    pub async fn ok(&mut self, method: &str, args: serde_json::Value) -> u64 {
        let r = self.call(method, args).await;
        assert_eq!(r.get("success"), Some(&Value::Bool(true)), "{r:?}");
        r.get("data")
            .and_then(|d| d.get("version"))
            .and_then(Value::as_u64)
            .unwrap()
    }

    /// The next frame must be a DELTA; returns (version, ops).
    pub async fn delta(&mut self) -> (u64, Vec<DeltaOp>) {
        let f = self.recv().await;
        assert_eq!(f.kind, FrameType::Delta, "{f:?}");
        let version = f.body.get("version").and_then(Value::as_u64).unwrap();
        let ops = DeltaOp::list_from_value(f.body.get("ops").unwrap()).unwrap();
        (version, ops)
    }
}

/// Result body helpers.
pub fn failure_code(result: &Value) -> Option<i64> {
    if result.get("success") == Some(&Value::Bool(false)) {
        result.get("code").and_then(Value::as_i64)
    } else {
        None
    }
}

/// Waits until `cond` holds (polling), or panics.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A `sodp-server` process started on port 0, with the addresses it
/// announced on stdout (`listening ws://…` or `wss://…`, `health http://…/health`);
/// killed on drop.
pub struct Launched {
    pub child: std::process::Child,
    pub port: u16,
    pub health_port: Option<u16>,
}

impl Launched {
    /// Spawns `cmd` (which must make the server listen on port 0) with stdout
    /// piped, and reads the announcement lines. Panics with the server's
    /// exit status if it stops first — and the child is killed then too
    /// (it is owned by the `Launched` from the start).
    pub fn spawn(mut cmd: std::process::Command, with_health: bool) -> Launched {
        use std::io::BufRead;
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sodp-server");
        let mut launched = Launched {
            child,
            port: 0,
            health_port: None,
        };
        let stdout = launched.child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let port_of = |line: &str| -> u16 {
            let rest = line.rsplit(':').next().unwrap_or_default();
            rest.trim_end_matches("/health").parse().expect("a port")
        };
        let next = |what: &str, child: &mut std::process::Child| match rx.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                panic!("sodp-server did not announce {what} (exit: {status:?})");
            }
        };
        let first = next("its address", &mut launched.child);
        assert!(
            first.starts_with("listening ws://") || first.starts_with("listening wss://"),
            "{first}"
        );
        launched.port = port_of(&first);
        if with_health {
            let line = next("its health port", &mut launched.child);
            assert!(line.starts_with("health http://"), "{line}");
            launched.health_port = Some(port_of(&line));
        }
        launched
    }

    /// Sends the server SIGTERM (it then drains and exits on its own).
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM: {status:?}");
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET of `path` on `addr`; the whole response.
pub async fn http_get(addr: impl tokio::net::ToSocketAddrs, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

/// A WebSocket upgrade to `url` carrying one extra header; `Err(status)`
/// when the server answers with an HTTP status instead of 101.
pub async fn connect_with_header(url: &str, name: &str, value: &str) -> Result<TestClient, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        HeaderName::from_bytes(name.as_bytes()).unwrap(),
        HeaderValue::from_str(value).unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(TestClient::from_ws(ws).await),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("unexpected connect error {e}"),
    }
}
