//! The connection's I/O loop: one tokio task per connection that waits for
//! whichever comes first — frames queued in the session's [`Outbox`] (or a
//! reason to close), a frame from the client, a timer — and hands it to the
//! protocol state machine ([`Session`]), which never touches the socket.
//!
//! Outgoing messages are written **raw**: `wire` built each frame as a
//! complete WebSocket message once, and everything queued leaves in one
//! `writev` (one `send` for a single message). tungstenite reads frames and
//! answers control frames itself; it is flushed before raw writes so the two
//! never interleave. Generic over the stream: a `TcpStream`, or TLS over one
//! (`server`), each its own monomorphized loop.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{self, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use super::Session;
use crate::outbox::{Close, Outbox, Wake};
use crate::shared::Shared;

type Incoming = Option<Result<Message, WsError>>;

/// What woke the session task.
enum Event {
    Outbox(Wake),
    Incoming(Incoming),
    HeartbeatTick,
    Deadline,
}

/// Runs a session on an upgraded WebSocket until it ends.
///
/// One task does both directions: it waits for whichever comes first — frames
/// queued in the outbox (or a reason to close), a frame from the client, a
/// timer — and handles it. Queued frames are written as one batch and
/// flushed once. Keeping both directions in one task means a delivery wakes
/// exactly one task, needs no lock between reader and writer, and costs one
/// task's memory per connection.
pub async fn run<S>(mut ws: WebSocketStream<S>, shared: Arc<Shared>, outbox: Arc<Outbox>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    let id = outbox.id();
    let mut session = Session::new(shared.clone(), outbox.clone());

    let period = config.heartbeat_interval;
    let mut heartbeat = time::interval_at(Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut batch = VecDeque::new();
    let mut batches_since_timers = 0;

    loop {
        let deadline = session.deadline();
        // Outgoing first: when frames are waiting nothing else is polled,
        // which keeps a delivery cheap — a read attempt through tungstenite
        // is not free (it zero-fills its buffer and builds an error for
        // WouldBlock), and the socket is read whenever the queue is empty.
        // Reading cannot starve: every few batches it is checked once
        // without waiting (below).
        let event = tokio::select! {
            biased;
            wake = outbox.next_batch(&mut batch) => Event::Outbox(wake),
            msg = ws.next() => Event::Incoming(msg),
            _ = heartbeat.tick() => Event::HeartbeatTick,
            _ = sleep_until_some(deadline) => Event::Deadline,
        };
        match event {
            Event::Outbox(Wake::Frames) => {
                if !write_batch(&mut ws, &mut batch, &outbox, &shared.metrics.bytes_out).await {
                    break;
                }
                // The batch and the queue trade buffers; after a burst, do
                // not keep room for a thousand frames per idle connection.
                if batch.capacity() > 256 {
                    batch.shrink_to(16);
                }
                // Under a continuous stream of deliveries the biased select
                // may never reach the socket or the timers: every few
                // batches check them here, so reading, token expiry and
                // heartbeats are never postponed by traffic (and a lone
                // delivery stays cheap).
                batches_since_timers += 1;
                if batches_since_timers >= TIMER_CHECK_EVERY {
                    batches_since_timers = 0;
                    if !drain_readable(&mut ws, &mut session) {
                        break;
                    }
                    if heartbeat.tick().now_or_never().is_some() {
                        session.on_heartbeat_tick(Instant::now());
                    }
                    if session.deadline().is_some_and(|d| d <= Instant::now()) {
                        session.on_deadline(Instant::now());
                    }
                }
            }
            Event::Outbox(Wake::Closing) => break,
            Event::Incoming(msg) => {
                // Once per wake, not per frame: a clock read is not free.
                session.mark_received(Instant::now());
                if !on_message(&mut session, msg) || !drain_readable(&mut ws, &mut session) {
                    break;
                }
            }
            Event::HeartbeatTick => session.on_heartbeat_tick(Instant::now()),
            Event::Deadline => session.on_deadline(Instant::now()),
        }
        if outbox.closing().is_some() {
            break;
        }
    }

    // Unsubscribes, releases presence, deregisters (also on a panic: the
    // session's `Holdings` is a drop guard).
    drop(session);
    outbox.close(Close::NORMAL);
    let close = outbox.closing().unwrap_or(Close::NORMAL);
    shared
        .metrics
        .sessions_closed
        .get_or_create(&crate::metrics::Reason {
            reason: close.label(),
        })
        .inc();
    if close.flush {
        let goodbye = say_goodbye(&mut ws, &outbox, close);
        let _ = time::timeout(config.shutdown_grace, goodbye).await;
    }
    // Evicted or dead connections are simply dropped: nothing useful can be
    // flushed to a peer that stopped reading.
    debug!(
        session = id,
        code = close.code,
        reason = close.reason,
        "session ended"
    );
}

/// Outgoing batches between explicit timer checks (see `run`).
const TIMER_CHECK_EVERY: u32 = 16;

/// Most frames handled in one go before replies are written.
const READ_BURST: usize = 64;

/// Handles frames that are already readable without waiting, so that the
/// replies to a burst of pipelined CALLs leave in one write instead of one
/// write each. Returns false when the session must end.
fn drain_readable<S>(ws: &mut WebSocketStream<S>, session: &mut Session) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for n in 0..READ_BURST {
        match ws.next().now_or_never() {
            Some(msg) => {
                if n == 0 {
                    session.mark_received(Instant::now());
                }
                if !on_message(session, msg) {
                    return false;
                }
            }
            None => break,
        }
    }
    true
}

/// Sleeps until `deadline`, or forever when there is none (no timer is
/// registered then).
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Writes the batch. Gives up (returns false) on a write error, or as soon as
/// the session is told to close without flushing (eviction): a peer that
/// stopped reading must not hold the task.
async fn write_batch<S>(
    ws: &mut WebSocketStream<S>,
    batch: &mut VecDeque<Bytes>,
    outbox: &Outbox,
    sent: &prometheus_client::metrics::counter::Counter,
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let bytes: usize = batch.iter().map(|m| m.len()).sum();
    let write = async {
        // Whatever tungstenite queued itself (a pong, a close reply) goes
        // first, so raw messages never interleave with its frames.
        ws.flush().await.map_err(io::Error::other)?;
        write_raw(ws.get_mut(), batch).await
    };
    let ok = tokio::select! {
        result = write => result.is_ok(),
        _ = outbox.abandoned() => false,
    };
    if ok {
        sent.inc_by(bytes as u64);
    }
    ok
}

/// Most messages handed to one `writev`.
const MAX_IOVECS: usize = 64;

/// Writes pre-framed WebSocket messages (see `wire`) straight to the socket,
/// as many per `writev` as are queued: no per-subscriber framing, no copy.
async fn write_raw<S>(io: &mut S, batch: &mut VecDeque<Bytes>) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    while !batch.is_empty() {
        let written = poll_fn(|cx| {
            // One message: a plain send. writev goes through the VFS layer
            // (file-position lock and all), which costs more for a single
            // buffer than it saves.
            if batch.len() == 1 {
                return Pin::new(&mut *io).poll_write(cx, &batch[0]);
            }
            // Built on each poll so the slices never live in the future.
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = batch
                .iter()
                .zip(slices.iter_mut())
                .map(|(message, slice)| *slice = IoSlice::new(message))
                .count();
            Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n])
        })
        .await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut left = written;
        while left > 0 {
            let Some(front) = batch.front_mut() else {
                break;
            };
            if left >= front.len() {
                left -= front.len();
                batch.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
    }
    // TLS holds the records it made until flushed; on a `TcpStream` this
    // is an immediate no-op (the plain path is unchanged).
    poll_fn(|cx| Pin::new(&mut *io).poll_flush(cx)).await
}

/// Sends what is still queued, then the close frame.
async fn say_goodbye<S>(ws: &mut WebSocketStream<S>, outbox: &Outbox, close: Close)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut rest = VecDeque::new();
    outbox.take_all(&mut rest);
    if ws.flush().await.is_err() || write_raw(ws.get_mut(), &mut rest).await.is_err() {
        return;
    }
    let frame = CloseFrame {
        code: CloseCode::from(close.code),
        reason: close.reason.into(),
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
    let _ = ws.close(None).await;
}

/// Hands one read from the socket to the state machine. Returns false
/// when the session must end.
fn on_message(session: &mut Session, msg: Incoming) -> bool {
    match msg {
        Some(Ok(Message::Binary(bytes))) => session.on_frame(&bytes),
        Some(Ok(Message::Text(_))) => session.on_text(),
        Some(Ok(Message::Close(_))) | None => return false,
        Some(Ok(_)) => {} // Ping/Pong: tungstenite answers pings itself.
        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
            session.on_too_big(size, max_size);
            return false;
        }
        Some(Err(e)) => {
            debug!(session = session.id(), error = %e, "read failed");
            return false;
        }
    }
    true
}
