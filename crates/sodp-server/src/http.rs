//! The HTTP side of a connection: read the request head, then either answer
//! `GET /health` / `GET /ready` or complete the WebSocket upgrade ourselves.
//!
//! Doing the upgrade here (rather than inside tungstenite's `accept`) lets
//! one port serve both, and lets the server refuse an upgrade with a proper
//! HTTP status before any session exists.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Longest request head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What the client asked for.
#[derive(Debug)]
pub enum Request {
    Health,
    /// Readiness for load balancers and orchestrators.
    Ready,
    /// Prometheus scrape (answered on `--metrics-port` only).
    Metrics,
    /// A WebSocket upgrade. `leftover` holds bytes read past the head;
    /// `inspector`: on the web inspector's path (`/inspector/ws`);
    /// `cross_site`: a browser sent it from a page of another origin than
    /// this server (an `Origin` other than `http(s)://<Host>`).
    Upgrade {
        accept_key: String,
        origin: Option<String>,
        /// Every `X-Forwarded-For` value, comma-joined (see `proxy`).
        forwarded_for: Option<String>,
        leftover: Vec<u8>,
        inspector: bool,
        cross_site: bool,
    },
    /// `/inspector` or below (answered only with `--inspector`), with
    /// every `X-Forwarded-For` value (the page's loopback check, like the
    /// upgrade's, is of the client a trusted proxy names).
    Inspector {
        path: String,
        forwarded_for: Option<String>,
    },
    /// Anything else: answer with this status and message.
    Refuse(u16, &'static str),
}

/// Reads and classifies the request head within `timeout`.
/// `stream` is the TCP connection, or the TLS stream over it.
pub async fn read_request<S>(stream: &mut S, timeout: Duration) -> io::Result<Request>
where
    S: AsyncRead + Unpin,
{
    match time::timeout(timeout, read_head(stream)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request head timed out",
        )),
    }
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Request> {
    // Read straight into the heap buffer: a stack array here would be held
    // inside every connection's future for the connection's whole life.
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.reserve(1024);
        let n = stream.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the request head",
            ));
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => return Ok(classify(&req, buf[len..].to_vec())),
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => continue,
            Ok(httparse::Status::Partial) => {
                return Ok(Request::Refuse(431, "request head too large"))
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Ok(Request::Refuse(431, "too many headers"))
            }
            Err(_) => return Ok(Request::Refuse(400, "malformed HTTP request")),
        }
    }
}

fn classify(req: &httparse::Request<'_, '_>, leftover: Vec<u8>) -> Request {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if req.method != Some("GET") {
        return Request::Refuse(405, "only GET is supported");
    }
    let path = req.path.unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    if has_token("upgrade", "websocket") && has_token("connection", "upgrade") {
        if header("sec-websocket-version") != Some("13") {
            return Request::Refuse(426, "WebSocket version 13 required");
        }
        let Some(key) = header("sec-websocket-key") else {
            return Request::Refuse(400, "missing Sec-WebSocket-Key");
        };
        let origin = header("origin").map(str::to_owned);
        let cross_site = origin
            .as_deref()
            .is_some_and(|o| !same_origin(o, header("host")));
        return Request::Upgrade {
            accept_key: derive_accept_key(key.trim().as_bytes()),
            origin,
            forwarded_for: joined(req, "x-forwarded-for"),
            leftover,
            inspector: path == crate::inspector::WS_PATH,
            cross_site,
        };
    }
    if crate::inspector::is_inspector_path(path) {
        return Request::Inspector {
            path: path.to_owned(),
            forwarded_for: joined(req, "x-forwarded-for"),
        };
    }
    match path {
        "/health" => Request::Health,
        "/ready" => Request::Ready,
        "/metrics" => Request::Metrics,
        "/" => Request::Refuse(
            426,
            "this is a SODP WebSocket endpoint: connect with a WebSocket client",
        ),
        _ => Request::Refuse(404, "not found"),
    }
}

/// All values of a header that may repeat, comma-joined.
fn joined(req: &httparse::Request<'_, '_>, name: &str) -> Option<String> {
    let values: Vec<&str> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// Whether a browser's `Origin` is this server's own (`http://` or
/// `https://` followed by the request's `Host`).
pub fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
        return false;
    };
    let origin = origin.trim();
    ["http://", "https://"].iter().any(|scheme| {
        origin.len() == scheme.len() + host.len()
            && origin[..scheme.len()].eq_ignore_ascii_case(scheme)
            && origin[scheme.len()..].eq_ignore_ascii_case(host)
    })
}

/// Completes the upgrade (101 Switching Protocols).
pub async fn accept_upgrade<S>(stream: &mut S, accept_key: &str) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept_key}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    // A TLS stream holds what was written until flushed.
    stream.flush().await
}

/// Writes a complete HTTP response and closes the write side.
pub async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    content_type: &str,
    body: &str,
) -> io::Result<()> {
    respond_with(stream, status, content_type, "", body.as_bytes()).await
}

/// [`respond`] with extra header lines (each ending in CRLF) and a byte body.
pub async fn respond_with<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    content_type: &str,
    headers: &str,
    body: &[u8],
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::same_origin;

    #[test]
    fn same_origin_is_scheme_and_host() {
        let host = Some("127.0.0.1:7777");
        assert!(same_origin("http://127.0.0.1:7777", host));
        assert!(same_origin("HTTPS://127.0.0.1:7777", host));
        assert!(!same_origin("http://127.0.0.1:7778", host));
        assert!(!same_origin("http://evil.example", host));
        assert!(!same_origin("http://127.0.0.1:7777.evil", host));
        assert!(!same_origin("null", host));
        assert!(!same_origin("http://127.0.0.1:7777", None));
    }
}
