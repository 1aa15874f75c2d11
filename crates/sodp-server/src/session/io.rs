//! The connection's I/O loop: one tokio task per connection that waits for
//! whichever comes first — frames queued in the session's [`Outbox`] (or a
//! reason to close), bytes from the client, a timer — and hands it to the
//! protocol state machine ([`Session`]), which never touches the socket.
//!
//! Outgoing messages are written **raw**: `wire` built each frame as a
//! complete WebSocket message once, and everything queued leaves in one
//! system call (small messages gathered into one `send`, larger batches one
//! `sendmsg`: see `batch`); pongs and the close frame go the same way. Incoming bytes are read into a buffer shared by the
//! thread's connections and split into messages by `frames`, so an idle
//! connection holds no read buffer. Generic over the stream: a
//! `TcpStream`, or TLS over one (`server`), each its own monomorphized loop.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{self, Instant, MissedTickBehavior};
use tracing::debug;

use super::due::{self, Fired};
use super::frames::{self, FrameReader, Incoming, ReadError};
use super::Session;
use crate::batch::{self, Front};
use crate::outbox::{Close, FlushScope, Outbox, Wake};
use crate::shared::Shared;

/// What woke the session task.
enum Event {
    Outbox(Wake),
    /// Frames were read and handled; false: the session must end.
    Read(bool),
    Timer(Fired),
}

/// The connection as the loop reads it.
struct Reading<S> {
    io: S,
    frames: FrameReader,
    /// The peer's close frame arrived (with its code, if it gave one).
    peer_closed: Option<Option<u16>>,
}

/// Runs a session on an upgraded WebSocket connection until it ends;
/// `leftover` is what was read past the upgrade request.
///
/// One task does both directions: it waits for whichever comes first — frames
/// queued in the outbox (or a reason to close), a frame from the client, a
/// timer — and handles it. Queued frames are written as one batch and
/// flushed once. Keeping both directions in one task means a delivery wakes
/// exactly one task, needs no lock between reader and writer, and costs one
/// task's memory per connection.
pub async fn run<S>(io: S, leftover: Vec<u8>, shared: Arc<Shared>, outbox: Arc<Outbox>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    let id = outbox.id();
    let mut session = Session::new(shared.clone(), outbox.clone());
    let mut conn = Reading {
        io,
        frames: FrameReader::new(leftover, config.limits.max_message_bytes),
        peer_closed: None,
    };

    let period = config.heartbeat_interval;
    let mut heartbeat = time::interval_at(Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut batch = VecDeque::new();
    let mut batches_since_timers = 0;
    // The auth deadline (a pending AUTH, a token's `exp`) as one timer,
    // moved only when the deadline does: a live authenticated session has
    // one on every turn of the loop, and a timer made per turn would be
    // registered and removed each time.
    let deadline_timer = time::sleep_until(Instant::now() + period);
    tokio::pin!(deadline_timer);
    let mut armed: Option<Instant> = None;

    loop {
        let deadline = session.deadline();
        if deadline != armed {
            if let Some(at) = deadline {
                deadline_timer.as_mut().reset(at);
                outbox.rearm_timers();
            }
            armed = deadline;
        }
        // Outgoing first: when frames are waiting nothing else is polled,
        // which keeps a delivery cheap, and the socket is read whenever the
        // queue is empty. Reading cannot starve: every few batches it is
        // checked once without waiting (below).
        let event = tokio::select! {
            biased;
            wake = outbox.next_batch(&mut batch) => Event::Outbox(wake),
            go_on = poll_fn(|cx| conn.poll_frames(cx, &mut session, &outbox, &shared.metrics.bytes_out)) => Event::Read(go_on),
            // Both timers, polled only once one fired (see `due`).
            fired = poll_fn(|_| due::poll(&outbox, &mut heartbeat, armed.map(|_| deadline_timer.as_mut()))) => Event::Timer(fired),
        };
        match event {
            Event::Outbox(Wake::Frames) => {
                let written =
                    write_batch(&mut conn.io, &mut batch, &outbox, &shared.metrics.bytes_out).await;
                outbox.written();
                if !written {
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
                    let read = poll_fn(|cx| {
                        conn.poll_frames(cx, &mut session, &outbox, &shared.metrics.bytes_out)
                    });
                    if read.now_or_never() == Some(false) {
                        break;
                    }
                    let deadline = armed.map(|_| deadline_timer.as_mut());
                    if let Poll::Ready(fired) = due::poll(&outbox, &mut heartbeat, deadline) {
                        session.on_timer(fired, Instant::now());
                    }
                    // By the clock too (a busy worker may not have run the
                    // timer wheel yet), unless that just ended the session.
                    if outbox.closing().is_none()
                        && session.deadline().is_some_and(|d| d <= Instant::now())
                    {
                        session.on_deadline(Instant::now());
                    }
                }
            }
            Event::Outbox(Wake::Closing) | Event::Read(false) => break,
            Event::Read(true) => {}
            Event::Timer(fired) => session.on_timer(fired, Instant::now()),
        }
        if outbox.closing().is_some() {
            break;
        }
    }

    // No more direct deliveries: from here on only this task writes.
    outbox.detach();
    // Unsubscribes, releases presence, deregisters (also on a panic: the
    // session's `Holdings` is a drop guard).
    session.end();
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
        let goodbye = say_goodbye(&mut conn.io, &outbox, close, conn.peer_closed);
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

/// Writes the batch. Gives up (returns false) on a write error, or as soon as
/// the session is told to close without flushing (eviction): a peer that
/// stopped reading must not hold the task.
async fn write_batch<S>(
    io: &mut S,
    batch: &mut VecDeque<Bytes>,
    outbox: &Outbox,
    sent: &prometheus_client::metrics::counter::Counter,
) -> bool
where
    S: AsyncWrite + Unpin,
{
    let bytes: usize = batch.iter().map(|m| m.len()).sum();
    let ok = tokio::select! {
        result = write_raw(io, batch) => result.is_ok(),
        _ = outbox.abandoned() => false,
    };
    if ok {
        sent.inc_by(bytes as u64);
    }
    ok
}

/// Writes pre-framed WebSocket messages (see `wire`) straight to the socket,
/// as much of the batch per system call as [`batch::with_front`] gives: no
/// per-subscriber framing.
async fn write_raw<S>(io: &mut S, batch: &mut VecDeque<Bytes>) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    while !batch.is_empty() {
        let written = poll_fn(|cx| {
            // Built on each poll, so nothing borrowed lives in the future.
            batch::with_front(batch, |front| match front {
                Front::Contiguous(bytes) => Pin::new(&mut *io).poll_write(cx, bytes),
                Front::Slices(slices) => Pin::new(&mut *io).poll_write_vectored(cx, slices),
            })
        })
        .await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        batch::consume(batch, written);
    }
    // TLS holds the records it made until flushed; on a `TcpStream` this
    // is an immediate no-op (the plain path is unchanged).
    poll_fn(|cx| Pin::new(&mut *io).poll_flush(cx)).await
}

/// Sends what is still queued, then the close frame: the peer's own code
/// echoed when it closed first (RFC 6455 §5.5.1), else ours and its reason.
async fn say_goodbye<S>(io: &mut S, outbox: &Outbox, close: Close, peer: Option<Option<u16>>)
where
    S: AsyncWrite + Unpin,
{
    let mut rest = VecDeque::new();
    outbox.take_all(&mut rest);
    rest.push_back(match peer {
        Some(code) => frames::close_frame(code, ""),
        None => frames::close_frame(Some(close.code), close.reason),
    });
    let _ = write_raw(io, &mut rest).await;
}

/// Largest read from the socket: what pipelined frames a burst brings in
/// at once (see [`Reading::poll_frames`]).
const READ_BYTES: usize = 16 * 1024;

thread_local! {
    /// Every connection of the thread reads into this buffer, so an idle
    /// connection holds no read buffer at all (see `frames`).
    static READ_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BYTES].into_boxed_slice());
}

impl<S: AsyncRead + Unpin> Reading<S> {
    /// Handles frames kept from the last burst, or else reads what the
    /// socket has and handles the complete frames in it (at most
    /// [`READ_BURST`]). Ready(false) when the session must end.
    /// `own` is the session's outbox and `sent` the bytes-out counter.
    fn poll_frames(
        &mut self,
        cx: &mut Context<'_>,
        session: &mut Session,
        own: &Outbox,
        sent: &Counter,
    ) -> Poll<bool> {
        let Reading {
            io,
            frames,
            peer_closed,
        } = self;
        if frames.has_kept_frames() {
            let _flush = FlushScope::open(sent, Some(own));
            let on = |m: Incoming<'_>| on_message(session, peer_closed, m);
            let result = frames.feed_kept(READ_BURST, on);
            return Poll::Ready(read_outcome(result, session));
        }
        READ_SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut buf = ReadBuf::new(&mut scratch[..]);
            let n = match Pin::new(io).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    debug!(session = session.id(), error = %e, "read failed");
                    return Poll::Ready(false);
                }
                Poll::Ready(Ok(())) => buf.filled().len(),
            };
            if n == 0 {
                // The peer went away without a close frame.
                return Poll::Ready(false);
            }
            // Once per read, not per frame: a clock read is not free.
            session.mark_received(Instant::now());
            // Deliveries these frames cause are written when the burst is
            // over (see `outbox::FlushScope`), after every key lock is
            // released; so are the session's own replies.
            let _flush = FlushScope::open(sent, Some(own));
            let on = |m: Incoming<'_>| on_message(session, peer_closed, m);
            let result = frames.feed(&mut scratch[..n], READ_BURST, on);
            Poll::Ready(read_outcome(result, session))
        })
    }
}

/// Whether the session goes on after a read; a message over the limit is
/// answered (ERROR, close 1009) before it ends, broken framing with close
/// 1002 (1007 for text that is not UTF-8).
fn read_outcome(result: Result<bool, ReadError>, session: &mut Session) -> bool {
    match result {
        Ok(go_on) => go_on,
        Err(ReadError::TooBig { size, max }) => {
            session.on_too_big(size, max);
            false
        }
        Err(e @ (ReadError::Protocol(_) | ReadError::NotUtf8(_))) => {
            debug!(session = session.id(), error = %e, "read failed");
            session.on_broken_framing(&e);
            false
        }
    }
}

/// Hands one message to the state machine. Returns false when the session
/// must end.
fn on_message(
    session: &mut Session,
    peer_closed: &mut Option<Option<u16>>,
    msg: Incoming<'_>,
) -> bool {
    match msg {
        Incoming::Binary(bytes) => session.on_frame(bytes),
        Incoming::Text => session.on_text(),
        Incoming::Ping(payload) => session.send(frames::pong(payload)),
        Incoming::Pong => {}
        Incoming::Close(code) => {
            *peer_closed = Some(code);
            return false;
        }
    }
    true
}
