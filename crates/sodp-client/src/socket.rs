//! A WebSocket carrying SODP frames: one binary message per frame, `seq`
//! numbered per direction, everything else (pings, pongs) handled below.

use futures_util::{SinkExt, StreamExt};
use sodp_proto::Frame;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, protocol::CloseFrame, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::config::Config;
use crate::error::Error;

/// Nesting limit for incoming frames (the frame array is level 1). Above
/// the server's default value limit, so anything it accepts gets through.
const MAX_DEPTH: usize = 128;

/// What reading the socket produced.
pub enum Incoming {
    Frame(Frame),
    /// A message that is not a frame. Reported; the connection stays up.
    Invalid(Error),
    /// The connection is over; the text says why (may be empty).
    Closed(String),
}

pub struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    url: String,
    seq: u64,
}

impl Connection {
    /// Opens the WebSocket (TCP_NODELAY on), over TLS for `wss://` (with
    /// the configured CA, if any).
    pub async fn open(config: &Config) -> Result<Connection, Error> {
        let url = config.url.as_str();
        #[cfg(feature = "tls")]
        let connecting = tokio_tungstenite::connect_async_tls_with_config(
            url,
            None,
            true,
            config.tls.clone().map(tokio_tungstenite::Connector::Rustls),
        );
        #[cfg(not(feature = "tls"))]
        let connecting = tokio_tungstenite::connect_async_with_config(url, None, true);
        let (ws, _response) = connecting
            .await
            .map_err(|e| Error::Connection(format!("cannot connect to {url}: {}", describe(&e))))?;
        Ok(Connection {
            ws,
            url: url.to_owned(),
            seq: 0,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one frame, numbering it.
    pub async fn send(&mut self, mut frame: Frame) -> Result<(), Error> {
        self.seq += 1;
        frame.seq = self.seq;
        self.ws
            .send(Message::Binary(frame.encode().into()))
            .await
            .map_err(|e| {
                Error::Connection(format!("connection to {} lost: {}", self.url, describe(&e)))
            })
    }

    /// Reads the next frame. Cancel-safe.
    pub async fn recv(&mut self) -> Incoming {
        loop {
            let message = match self.ws.next().await {
                None => return Incoming::Closed(String::new()),
                Some(Err(e)) => return Incoming::Closed(describe(&e)),
                Some(Ok(m)) => m,
            };
            return match message {
                Message::Binary(bytes) => match Frame::decode(&bytes, MAX_DEPTH) {
                    Ok(frame) => Incoming::Frame(frame),
                    Err(e) => Incoming::Invalid(Error::Protocol(format!("bad frame: {e}"))),
                },
                Message::Text(_) => Incoming::Invalid(Error::Protocol(
                    "the server sent a text message; SODP frames are binary".into(),
                )),
                Message::Close(frame) => Incoming::Closed(close_reason(frame.as_ref())),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
        }
    }

    /// Sends a close frame; errors are irrelevant at this point.
    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn close_reason(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(f) if f.reason.is_empty() => {
            format!("closed by the server (code {})", u16::from(f.code))
        }
        Some(f) => format!(
            "closed by the server (code {}: {})",
            u16::from(f.code),
            f.reason
        ),
        None => "closed by the server".into(),
    }
}

/// A short, lower-case cause for messages like "cannot connect to URL: CAUSE".
pub fn describe(e: &tungstenite::Error) -> String {
    use std::io::ErrorKind;
    use tungstenite::Error as E;
    match e {
        E::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused => "connection refused".into(),
            ErrorKind::ConnectionReset => "connection reset".into(),
            ErrorKind::ConnectionAborted => "connection aborted".into(),
            ErrorKind::TimedOut => "timed out".into(),
            ErrorKind::UnexpectedEof => "connection closed".into(),
            _ if is_tls_error(io) => format!("TLS: {io}"),
            _ => io.to_string(),
        },
        E::Http(response) => format!(
            "the server answered HTTP {} instead of upgrading to WebSocket",
            response.status()
        ),
        E::ConnectionClosed | E::AlreadyClosed => "connection closed".into(),
        E::Url(u) => format!("bad URL: {u}"),
        other => other.to_string(),
    }
}

/// rustls errors (an untrusted or mismatched certificate) arrive wrapped in
/// an `io::Error`.
fn is_tls_error(io: &std::io::Error) -> bool {
    #[cfg(feature = "tls")]
    if let Some(inner) = io.get_ref() {
        return inner.is::<rustls::Error>();
    }
    let _ = io;
    false
}
