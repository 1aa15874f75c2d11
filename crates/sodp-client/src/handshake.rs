//! Opening a session: WebSocket upgrade, HELLO, and AUTH when the server
//! asks for it.

use sodp_proto::FrameType;

use crate::config::Config;
use crate::error::Error;
use crate::messages::{self, Hello};
use crate::socket::{Connection, Incoming};

/// An authenticated connection, ready for WATCH and CALL.
pub struct Session {
    pub conn: Connection,
    pub hello: Hello,
    /// The token AUTH succeeded with, if any.
    pub token: Option<String>,
}

/// Connects and authenticates within the configured timeout.
pub async fn connect(config: &Config) -> Result<Session, Error> {
    tokio::time::timeout(config.connect_timeout, open(config))
        .await
        .unwrap_or_else(|_| {
            Err(Error::Connection(format!(
                "cannot connect to {}: no HELLO/AUTH_OK within {:?}",
                config.url, config.connect_timeout
            )))
        })
}

async fn open(config: &Config) -> Result<Session, Error> {
    let mut conn = Connection::open(config).await?;
    let first = next_frame(&mut conn).await?;
    if first.kind != FrameType::Hello {
        return Err(Error::Protocol(format!(
            "expected HELLO first, got {:?}",
            first.kind
        )));
    }
    let hello = Hello::parse(&first.body)?;
    if !hello.auth {
        return Ok(Session {
            conn,
            hello,
            token: None,
        });
    }

    let token = config
        .token
        .fetch()
        .await
        .map_err(|e| Error::Connection(format!("token provider failed: {e}")))?
        .ok_or_else(|| Error::Auth("the server requires a token and none is configured".into()))?;
    conn.send(messages::auth(&token)).await?;
    loop {
        let frame = next_frame(&mut conn).await?;
        match frame.kind {
            FrameType::AuthOk => break,
            FrameType::Heartbeat => conn.send(messages::heartbeat()).await?,
            FrameType::Error => {
                let (code, message) = messages::parse_error(&frame.body);
                return Err(if code == 401 {
                    Error::Auth(message)
                } else {
                    Error::Server { code, message }
                });
            }
            other => return Err(Error::Protocol(format!("expected AUTH_OK, got {other:?}"))),
        }
    }
    Ok(Session {
        conn,
        hello,
        token: Some(token),
    })
}

async fn next_frame(conn: &mut Connection) -> Result<sodp_proto::Frame, Error> {
    match conn.recv().await {
        Incoming::Frame(f) => Ok(f),
        Incoming::Invalid(e) => Err(e),
        Incoming::Closed(why) => Err(Error::Connection(format!(
            "connection to {} closed during the handshake{}",
            conn.url(),
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            }
        ))),
    }
}
