//! One client connection, from HELLO to the last close frame.
//!
//! One task per connection reads frames, runs the state machine, and drains
//! the session's [`Outbox`] into the socket, batching whatever is queued
//! into one flush. Every frame the session produces goes through the outbox
//! too, so STATE_INIT, RESULT and DELTA keep the order in which they were
//! produced.
//!
//! When the session ends — client close, network error, heartbeat timeout,
//! eviction, shutdown — `finish` unsubscribes every key and releases every
//! presence path this session still owns.

use std::collections::{HashSet, VecDeque};
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{FutureExt, SinkExt, StreamExt};
use sodp_auth::{Access, Identity, RateLimiter};
use sodp_proto::call::{CallArgs, CallFrame};
use sodp_proto::frame::FrameError;
use sodp_proto::key::validate_key;
use sodp_proto::{pointer, Frame, FrameType, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{self, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info};

use crate::error::{ErrorCode, Rejection};
use crate::methods;
use crate::outbox::{Close, Outbox, SessionId, Wake};
use crate::server::Shared;
use crate::store::Mutation;
use crate::wire;

/// Levels the frame adds around a state value: frame array → body → args →
/// value. The decoder's limit is the value limit plus these.
const FRAME_NESTING: usize = 3;

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
    let mut session = Session::new(id, shared.clone(), outbox.clone());
    session.send_hello();

    let period = config.heartbeat_interval;
    let mut heartbeat = time::interval_at(Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut batch = VecDeque::new();
    let mut batches_since_timers = 0;

    loop {
        let deadline = session.deadline();
        // Outgoing first: when frames are waiting nothing else is polled,
        // which keeps a delivery cheap. Reading cannot starve: after each
        // batch the socket is checked once without waiting (below).
        let event = tokio::select! {
            biased;
            wake = outbox.next_batch(&mut batch) => Event::Outbox(wake),
            msg = ws.next() => Event::Incoming(msg),
            _ = heartbeat.tick() => Event::HeartbeatTick,
            _ = sleep_until_some(deadline) => Event::Deadline,
        };
        match event {
            Event::Outbox(Wake::Frames) => {
                if !write_batch(&mut ws, &mut batch, &outbox).await {
                    break;
                }
                // The batch and the queue trade buffers; after a burst, do
                // not keep room for a thousand frames per idle connection.
                if batch.capacity() > 256 {
                    batch.shrink_to(16);
                }
                if !drain_readable(&mut ws, &mut session) {
                    break;
                }
                // Under a continuous stream of deliveries the biased select
                // may never reach the timers: every few batches check them
                // here too, so token expiry and heartbeats are never
                // postponed by traffic (and a lone delivery stays cheap).
                batches_since_timers += 1;
                if batches_since_timers >= TIMER_CHECK_EVERY {
                    batches_since_timers = 0;
                    if heartbeat.tick().now_or_never().is_some() {
                        session.on_heartbeat_tick();
                    }
                    if session.deadline().is_some_and(|d| d <= Instant::now()) {
                        session.on_deadline();
                    }
                }
            }
            Event::Outbox(Wake::Closing) => break,
            Event::Incoming(msg) => {
                // Once per wake, not per frame: a clock read is not free.
                session.last_received = Instant::now();
                if !session.on_message(msg) || !drain_readable(&mut ws, &mut session) {
                    break;
                }
            }
            Event::HeartbeatTick => session.on_heartbeat_tick(),
            Event::Deadline => session.on_deadline(),
        }
        if outbox.closing().is_some() {
            break;
        }
    }

    session.finish();
    outbox.close(Close::NORMAL);
    let close = outbox.closing().unwrap_or(Close::NORMAL);
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
                    session.last_received = Instant::now();
                }
                if !session.on_message(msg) {
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
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let write = async {
        // Whatever tungstenite queued itself (a pong, a close reply) goes
        // first, so raw messages never interleave with its frames.
        ws.flush().await.map_err(io::Error::other)?;
        write_raw(ws.get_mut(), batch).await
    };
    tokio::select! {
        result = write => result.is_ok(),
        _ = outbox.abandoned() => false,
    }
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
    Ok(())
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

/// Where the session stands with authentication.
enum AuthState {
    /// HELLO said `auth: true`; only AUTH and HEARTBEAT until `deadline`.
    Pending { deadline: Instant },
    /// Authenticated (or no auth configured). `expires_at` is the token's
    /// `exp`: the session is closed then unless a refresh moves it.
    Live {
        sub: Option<String>,
        expires_at: Option<Instant>,
    },
}

/// The per-connection protocol state.
struct Session {
    id: SessionId,
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    auth: AuthState,
    identity: Identity,
    write_limit: RateLimiter,
    watch_limit: RateLimiter,
    /// Sequence number of the last frame this session numbered.
    seq: u64,
    watched: HashSet<String>,
    /// (key, normalised path) bound by `state.presence`.
    presence: HashSet<(String, String)>,
    /// A server HEARTBEAT is waiting for its echo.
    awaiting_echo: bool,
    last_received: Instant,
}

type Incoming = Option<Result<Message, WsError>>;

impl Session {
    fn new(id: SessionId, shared: Arc<Shared>, outbox: Arc<Outbox>) -> Session {
        let policy = &shared.policy;
        let auth = match policy.jwt {
            Some(_) => AuthState::Pending {
                deadline: Instant::now() + Duration::from_secs(policy.auth_timeout_secs),
            },
            None => AuthState::Live {
                sub: None,
                expires_at: None,
            },
        };
        Session {
            auth,
            identity: Identity::anonymous(),
            write_limit: RateLimiter::new(policy.rate_writes_per_sec),
            watch_limit: RateLimiter::new(policy.rate_watches_per_sec),
            id,
            shared,
            outbox,
            seq: 0,
            watched: HashSet::new(),
            presence: HashSet::new(),
            awaiting_echo: false,
            last_received: Instant::now(),
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn send(&self, frame: Bytes) {
        self.outbox.push(frame);
    }

    fn send_error(&mut self, stream_id: u32, rejection: &Rejection) {
        debug!(session = self.id, stream_id, code = rejection.code as u16, message = %rejection.message, "error sent");
        let seq = self.next_seq();
        self.send(wire::error(stream_id, seq, rejection));
    }

    fn send_hello(&mut self) {
        let config = &self.shared.config;
        let policy = &self.shared.policy;
        let mut capabilities = sodp_proto::Map::default();
        for (name, value) in [
            ("multi_watch", Value::Bool(true)),
            ("params", Value::Bool(true)),
            ("resume", Value::Bool(true)),
            ("unwatch", Value::Bool(true)),
            ("presence", Value::Bool(true)),
            (
                "backpressure_limit",
                Value::from(config.outbound_queue as u64),
            ),
            ("history_limit", Value::from(config.history_len as u64)),
            (
                "max_message_bytes",
                Value::from(config.limits.max_message_bytes as u64),
            ),
            (
                "heartbeat_interval_ms",
                Value::from(config.heartbeat_interval.as_millis() as u64),
            ),
            ("token_refresh", Value::Bool(policy.jwt.is_some())),
            (
                "max_value_bytes",
                Value::from(config.limits.max_value_bytes.unwrap_or(0) as u64),
            ),
        ] {
            capabilities.insert(name.into(), value);
        }
        if policy.rate_writes_per_sec > 0 {
            let n = u64::from(policy.rate_writes_per_sec);
            capabilities.insert("rate_limit_writes".into(), Value::from(n));
        }
        if policy.rate_watches_per_sec > 0 {
            let n = u64::from(policy.rate_watches_per_sec);
            capabilities.insert("rate_limit_watches".into(), Value::from(n));
        }
        let capabilities = Value::from(capabilities);
        let body = Value::map_from([
            ("protocol", Value::from("sodp")),
            ("version", Value::from("1.0")),
            (
                "server",
                Value::from(concat!("sodp-server/", env!("CARGO_PKG_VERSION"))),
            ),
            ("auth", Value::Bool(policy.jwt.is_some())),
            ("capabilities", capabilities),
        ]);
        let seq = self.next_seq();
        self.send(wire::encode(FrameType::Hello, 0, seq, body));
    }

    /// Handles one read from the socket. Returns false when the session
    /// must end.
    fn on_message(&mut self, msg: Incoming) -> bool {
        match msg {
            Some(Ok(Message::Binary(bytes))) => self.on_frame(&bytes),
            Some(Ok(Message::Text(_))) => {
                self.send_error(
                    0,
                    &Rejection::bad_request(
                        "text messages are not part of SODP: send binary MessagePack frames",
                    ),
                );
            }
            Some(Ok(Message::Close(_))) | None => return false,
            Some(Ok(_)) => {} // Ping/Pong: tungstenite answers pings itself.
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                self.send_error(
                    0,
                    &Rejection::bad_request(format!(
                        "message of {size} bytes exceeds the limit of {max_size} bytes"
                    )),
                );
                self.outbox.close(Close::TOO_BIG);
                return false;
            }
            Some(Err(e)) => {
                debug!(session = self.id, error = %e, "read failed");
                return false;
            }
        }
        true
    }

    fn on_heartbeat_tick(&mut self) {
        let interval = self.shared.config.heartbeat_interval;
        if self.last_received.elapsed() >= interval * 2 {
            info!(
                session = self.id,
                "no frame for two heartbeat intervals; closing"
            );
            self.outbox.close(Close::HEARTBEAT_TIMEOUT);
            return;
        }
        self.awaiting_echo = true;
        self.send(wire::heartbeat());
    }

    fn on_frame(&mut self, bytes: &[u8]) {
        let max_depth = self.shared.config.limits.max_depth + FRAME_NESTING;
        // Writes are most of the traffic: a well-formed CALL is read without
        // building its envelope. Anything else takes the general path below.
        if let (AuthState::Live { .. }, Some(call)) =
            (&self.auth, CallFrame::decode(bytes, max_depth))
        {
            return self.on_call(call);
        }
        let frame = match Frame::decode(bytes, max_depth) {
            Ok(frame) => frame,
            Err(e) => return self.on_bad_frame(e),
        };
        if let AuthState::Pending { .. } = self.auth {
            return match frame.kind {
                FrameType::Auth => self.on_auth(&frame),
                FrameType::Heartbeat => self.on_heartbeat(),
                _ => self.refuse_auth(
                    frame.stream_id,
                    "authenticate first: only AUTH and HEARTBEAT are accepted before AUTH_OK",
                ),
            };
        }
        match frame.kind {
            FrameType::Heartbeat => self.on_heartbeat(),
            FrameType::Watch => self.on_watch(&frame),
            FrameType::Resume => self.on_resume(&frame),
            FrameType::Unwatch => self.on_unwatch(&frame),
            FrameType::Call => self.on_slow_call(&frame),
            FrameType::Auth => self.on_auth(&frame),
            kind @ (FrameType::Hello
            | FrameType::StateInit
            | FrameType::Delta
            | FrameType::Result
            | FrameType::Error
            | FrameType::AuthOk) => self.send_error(
                frame.stream_id,
                &Rejection::bad_request(format!(
                    "frame type {kind:?} is sent by servers, not clients"
                )),
            ),
        }
    }

    /// The next moment something must happen without a frame arriving: the
    /// end of the authentication window, or the token's expiry.
    fn deadline(&self) -> Option<Instant> {
        match self.auth {
            AuthState::Pending { deadline } => Some(deadline),
            AuthState::Live { expires_at, .. } => expires_at,
        }
    }

    fn on_deadline(&mut self) {
        let message = match self.auth {
            AuthState::Pending { .. } => "authentication timed out",
            AuthState::Live { .. } => "token expired",
        };
        info!(session = self.id, "{message}; closing");
        self.refuse_auth(0, message);
    }

    /// ERROR 401, then close: every authentication failure ends the session.
    fn refuse_auth(&mut self, stream_id: u32, message: &str) {
        self.send_error(stream_id, &Rejection::new(ErrorCode::Unauthorized, message));
        self.outbox.close(Close::UNAUTHORIZED);
    }

    /// AUTH: the first token on a pending session, or a refresh (same
    /// `sub`) on a live one. Tokens never reach the logs.
    fn on_auth(&mut self, frame: &Frame) {
        let Some(verifier) = &self.shared.policy.jwt else {
            return self.send_error(
                frame.stream_id,
                &Rejection::bad_request("this server does not require authentication"),
            );
        };
        let Some(token) = frame.body.get("token").and_then(Value::as_str) else {
            return self.refuse_auth(frame.stream_id, "AUTH needs `token` (a string)");
        };
        let verified = match &self.auth {
            AuthState::Live { sub: Some(sub), .. } => verifier.verify_refresh(token, sub),
            _ => verifier.verify(token),
        };
        let claims = match verified {
            Ok(claims) => claims,
            Err(e) => {
                info!(session = self.id, reason = %e, "authentication refused");
                return self.refuse_auth(frame.stream_id, &e.to_string());
            }
        };
        let refreshed = matches!(self.auth, AuthState::Live { .. });
        debug!(session = self.id, sub = %claims.sub, refreshed, "authenticated");
        self.identity = Identity::from_claims(&claims);
        self.auth = AuthState::Live {
            sub: Some(claims.sub.clone()),
            // Checked: an `exp` beyond what `Instant` can hold means no timer.
            expires_at: Instant::now()
                .checked_add(claims.expires_in_precise(sodp_auth::jwt::unix_now_precise())),
        };
        let seq = self.next_seq();
        let body = Value::map_from([("sub", Value::from(claims.sub))]);
        self.send(wire::encode(FrameType::AuthOk, frame.stream_id, seq, body));
    }

    /// ACL read check. The message never says whether the key exists.
    fn check_read(&self, key: &str) -> Result<(), Rejection> {
        self.check_access(key, Access::Read)
    }

    fn check_write(&self, key: &str) -> Result<(), Rejection> {
        self.check_access(key, Access::Write)
    }

    /// The ACL decision for `key`. A denial is logged (at debug level, with
    /// the deciding rule) but the client only hears "access denied", which
    /// never reveals whether the key exists.
    fn check_access(&self, key: &str, access: Access) -> Result<(), Rejection> {
        let Some(acl) = &self.shared.policy.acl else {
            return Ok(());
        };
        let decision = acl.decide(key, access, &self.identity);
        if decision.allowed {
            return Ok(());
        }
        debug!(
            session = self.id,
            key,
            ?access,
            rule = ?decision.rule,
            sub = self.identity.sub().unwrap_or("(anonymous)"),
            "access denied"
        );
        Err(Rejection::new(ErrorCode::Forbidden, "access denied"))
    }

    fn check_watch_rate(&mut self) -> Result<(), Rejection> {
        if self.watch_limit.is_unlimited()
            || self.watch_limit.try_acquire(std::time::Instant::now())
        {
            return Ok(());
        }
        Err(Rejection::new(
            ErrorCode::TooManyRequests,
            format!(
                "rate limit: at most {} WATCH/RESUME frames per second",
                self.watch_limit.per_sec()
            ),
        ))
    }

    fn on_bad_frame(&mut self, error: FrameError) {
        let max_depth = self.shared.config.limits.max_depth;
        let rejection = match &error {
            FrameError::TooDeep { .. } => {
                Rejection::bad_request(format!("value nested deeper than the limit of {max_depth}"))
            }
            e => Rejection::bad_request(format!("malformed frame: {e}")),
        };
        match error {
            FrameError::TooDeep {
                kind: 0x05,
                call_id: Some(call_id),
                ..
            } => {
                let seq = self.next_seq();
                self.send(wire::result_err(seq, &call_id, &rejection));
            }
            e => self.send_error(e.stream_id(), &rejection),
        }
    }

    /// A client HEARTBEAT is the echo of ours if we are waiting for one;
    /// otherwise it is a ping and gets an answer. (Echoing an echo would
    /// make the two sides ping-pong forever.)
    fn on_heartbeat(&mut self) {
        if self.awaiting_echo {
            self.awaiting_echo = false;
        } else {
            self.send(wire::heartbeat());
        }
    }

    /// The keys a WATCH/UNWATCH names: `{state}` or `{states: [...]}`.
    fn keys_of(frame: &Frame) -> Result<Vec<&str>, Rejection> {
        if let Some(key) = frame.body.get("state") {
            return key
                .as_str()
                .map(|k| vec![k])
                .ok_or_else(|| Rejection::bad_request("`state` must be a string"));
        }
        let keys = frame
            .body
            .get("states")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                Rejection::bad_request("expected `state` (a key) or `states` (a list of keys)")
            })?;
        if keys.is_empty() {
            return Err(Rejection::bad_request("`states` is empty"));
        }
        keys.iter()
            .map(|k| {
                k.as_str()
                    .ok_or_else(|| Rejection::bad_request("`states` must hold strings"))
            })
            .collect()
    }

    fn check_key(&self, key: &str) -> Result<(), Rejection> {
        validate_key(key, self.shared.config.limits.max_key_len)
            .map_err(|e| Rejection::bad_request(format!("bad key {key:?}: {e}")))
    }

    /// Checks that one more key may be watched.
    fn check_subscription_room(&self, key: &str) -> Result<(), Rejection> {
        let max = self.shared.config.limits.max_subscriptions;
        if !self.watched.contains(key) && self.watched.len() >= max {
            return Err(Rejection::bad_request(format!(
                "subscription limit reached: a session may watch at most {max} keys"
            )));
        }
        Ok(())
    }

    fn on_watch(&mut self, frame: &Frame) {
        let keys = match Self::keys_of(frame) {
            Ok(keys) => keys,
            Err(e) => return self.send_error(frame.stream_id, &e),
        };
        let params = frame.body.get("params");
        for key in keys {
            // One rate-limit token per key, so a multi-key WATCH is no loophole.
            let result = self
                .check_watch_rate()
                .and_then(|()| self.check_key(key))
                .and_then(|()| self.check_read(key))
                .and_then(|()| self.check_subscription_room(key))
                .and_then(|()| {
                    let seq = self.next_seq();
                    self.shared.store.watch(key, &self.outbox, seq, params)
                });
            match result {
                Ok(()) => {
                    self.watched.insert(key.to_owned());
                }
                Err(e) => self.send_error(frame.stream_id, &e),
            }
        }
    }

    fn on_resume(&mut self, frame: &Frame) {
        if let Err(e) = self.check_watch_rate() {
            return self.send_error(frame.stream_id, &e);
        }
        let body = &frame.body;
        let parsed = (|| {
            let key = body
                .get("state")
                .and_then(Value::as_str)
                .ok_or_else(|| Rejection::bad_request("RESUME needs `state` (a key)"))?;
            let since = body
                .get("since_version")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    Rejection::bad_request("RESUME needs `since_version` (an unsigned integer)")
                })?;
            self.check_key(key)?;
            self.check_read(key)?;
            self.check_subscription_room(key)?;
            Ok((key, since))
        })();
        let (key, since) = match parsed {
            Ok(p) => p,
            Err(e) => return self.send_error(frame.stream_id, &e),
        };
        let seq = self.next_seq();
        match self
            .shared
            .store
            .resume(key, since, &self.outbox, seq, body.get("params"))
        {
            Ok(replayed) => {
                debug!(session = self.id, key, since, ?replayed, "resumed");
                self.watched.insert(key.to_owned());
            }
            Err(e) => self.send_error(frame.stream_id, &e),
        }
    }

    fn on_unwatch(&mut self, frame: &Frame) {
        let keys = match Self::keys_of(frame) {
            Ok(keys) => keys,
            Err(e) => return self.send_error(frame.stream_id, &e),
        };
        for key in keys {
            if self.watched.remove(key) {
                self.shared.store.unwatch(key, self.id);
            }
        }
    }

    /// A CALL the fast path declined: answer exactly what is wrong with it
    /// (no string `call_id`: ERROR; otherwise a RESULT).
    fn on_slow_call(&mut self, frame: &Frame) {
        let Some(call_id) = frame.body.get("call_id").and_then(Value::as_str) else {
            return self.send_error(
                frame.stream_id,
                &Rejection::bad_request("CALL needs `call_id` (a string)"),
            );
        };
        self.on_call(CallFrame {
            stream_id: frame.stream_id,
            seq: frame.seq,
            call_id,
            method: frame.body.get("method").and_then(Value::as_str),
            args: CallArgs::of_body(&frame.body),
        });
    }

    fn on_call(&mut self, call: CallFrame<'_>) {
        let result = self.call(call.method, call.args);
        let seq = self.next_seq();
        let reply = match result {
            Ok(version) => wire::result_version(seq, call.call_id, version),
            Err(e) => {
                debug!(session = self.id, method = call.method, code = e.code as u16, message = %e.message, "call refused");
                wire::result_err(seq, call.call_id, &e)
            }
        };
        self.send(reply);
    }

    fn call(&mut self, method: Option<&str>, args: CallArgs<'_>) -> Result<u64, Rejection> {
        if !self.write_limit.is_unlimited()
            && !self.write_limit.try_acquire(std::time::Instant::now())
        {
            return Err(Rejection::new(
                ErrorCode::TooManyRequests,
                format!(
                    "rate limit: at most {} writes per second",
                    self.write_limit.per_sec()
                ),
            ));
        }
        let method =
            method.ok_or_else(|| Rejection::bad_request("CALL needs `method` (a string)"))?;
        let call = methods::parse(method, args, self.id)?;
        self.check_key(&call.key)?;
        self.check_write(&call.key)?;
        let presence_path = match &call.mutation {
            Mutation::Presence { path, .. } => {
                pointer::parse(path).ok().map(|s| pointer::format(&s))
            }
            _ => None,
        };
        if let Some(path) = &presence_path {
            let max = self.shared.config.limits.max_presence_paths;
            let held = self.presence.contains(&(call.key.clone(), path.clone()));
            if !held && self.presence.len() >= max {
                return Err(Rejection::bad_request(format!(
                    "presence limit reached: a session may hold at most {max} presence paths"
                )));
            }
        }
        let version = self.shared.store.write(&call.key, call.mutation)?;
        if let Some(path) = presence_path {
            self.presence.insert((call.key, path));
        }
        Ok(version)
    }

    /// Releases everything the session holds in the store.
    fn finish(&mut self) {
        let store = &self.shared.store;
        for key in self.watched.drain() {
            store.unwatch(&key, self.id);
        }
        for (key, path) in self.presence.drain() {
            store.release_presence(&key, &path, self.id);
        }
    }
}
