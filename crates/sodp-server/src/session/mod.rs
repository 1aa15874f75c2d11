//! The protocol state machine of one session: frames in, frames out.
//!
//! [`Session`] never touches a socket. Its caller (`io`, or a test, or a
//! fuzz target) hands it each frame's bytes and each timer event; everything
//! it produces goes into the session's [`Outbox`], so STATE_INIT, RESULT and
//! DELTA keep the order in which they were produced. What the session holds
//! in the store lives in its [`Holdings`], which releases it all when the
//! session is dropped — however that happens.
//!
//! The parts: `hello` (the first frame and its capabilities), `auth` (AUTH,
//! refresh, token expiry), `watch` (WATCH, RESUME, UNWATCH), `io` (the
//! connection's I/O loop); CALLs are dispatched here to `methods`.

mod auth;
mod due;
mod frames;
mod hello;
mod idempotent;
mod io;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sodp_auth::{Identity, RateLimiter};
use sodp_proto::call::{CallArgs, CallFrame};
use sodp_proto::frame::FrameError;
use sodp_proto::{Frame, FrameType, Value};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::access::Asker;
use crate::error::{ErrorCode, Rejection};
use crate::holdings::Holdings;
use crate::idempotency::Tag;
use crate::methods::{self, Context, Reply};
use crate::outbox::{Close, Outbox, SessionId};
use crate::shared::Shared;
use crate::storage::Delivery;
use crate::wire;
use frames::ReadError;

use auth::AuthState;
pub use io::run;

/// Levels the frame adds around a state value: frame array → body → args →
/// value. The decoder's limit is the value limit plus these.
const FRAME_NESTING: usize = 3;

/// Cluster mode: how many times a CALL runs when other nodes keep
/// writing its key first.
const STALE_RETRIES: usize = 32;

/// The per-connection protocol state.
pub struct Session {
    id: SessionId,
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    auth: AuthState,
    identity: Identity,
    /// The identity pattern subscriptions filter keys with: the same as
    /// `identity`, shared with the store's pattern streams so that a token
    /// refresh changes what they let through at once.
    reader: Arc<std::sync::RwLock<Identity>>,
    write_limit: RateLimiter,
    watch_limit: RateLimiter,
    /// Sequence number of the last frame this session numbered.
    seq: u64,
    /// Subscriptions and presence bindings; released when dropped.
    holdings: Holdings,
    /// A server HEARTBEAT is waiting for its echo.
    awaiting_echo: bool,
    /// When the CALL being answered arrived, if it is one sampled for the
    /// latency metric; and how many CALLs this session has answered.
    call_started: Option<Instant>,
    calls: u32,
    last_received: Instant,
}

impl Session {
    /// A session for a connection registered as `outbox`; queues HELLO.
    pub fn new(shared: Arc<Shared>, outbox: Arc<Outbox>) -> Session {
        let now = Instant::now();
        let policy = &shared.policy;
        let auth = AuthState::initial(
            policy.jwt.is_some(),
            Duration::from_secs(policy.auth_timeout_secs),
            now,
        );
        let id = outbox.id();
        let mut session = Session {
            auth,
            identity: Identity::anonymous(),
            reader: Arc::new(std::sync::RwLock::new(Identity::anonymous())),
            write_limit: RateLimiter::new(policy.rate_writes_per_sec),
            watch_limit: RateLimiter::new(policy.rate_watches_per_sec),
            holdings: Holdings::new(shared.clone(), shared.session_info(&outbox)),
            id,
            shared,
            outbox,
            seq: 0,
            awaiting_echo: false,
            call_started: None,
            calls: 0,
            last_received: now,
        };
        session.send_hello();
        session
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The session is over: it lets go of its subscriptions and presence
    /// paths now, from its own task, and leaves the registry.
    pub fn end(mut self) {
        self.holdings.release_all();
    }

    /// Something arrived from the client at `now` (liveness).
    pub fn mark_received(&mut self, now: Instant) {
        self.last_received = now;
    }

    fn asker(&self) -> Asker<'_> {
        Asker {
            shared: &self.shared,
            session: self.id,
            identity: &self.identity,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Queues a frame of this session's own (the session task runs this:
    /// it writes the queue out before it waits, so no wake-up).
    fn send(&self, frame: Bytes) {
        self.outbox.push_own(frame);
    }

    fn send_error(&mut self, stream_id: u32, rejection: &Rejection) {
        debug!(session = self.id, stream_id, code = rejection.code as u16, reason = %rejection.message, "error sent");
        let seq = self.next_seq();
        self.send(wire::error(stream_id, seq, rejection));
    }

    /// A text message: not part of SODP (the connection stays open).
    pub fn on_text(&mut self) {
        self.send_error(
            0,
            &Rejection::bad_request(
                "text messages are not part of SODP: send binary MessagePack frames",
            ),
        );
    }

    /// A message over the size limit: ERROR 400, then close 1009.
    pub fn on_too_big(&mut self, size: usize, max_size: usize) {
        self.send_error(
            0,
            &Rejection::bad_request(format!(
                "message of {size} bytes exceeds the limit of {max_size} bytes"
            )),
        );
        self.outbox.close(Close::TOO_BIG);
    }

    /// Framing the WebSocket layer cannot read on from: close 1002, or
    /// 1007 for text that is not UTF-8. No ERROR frame: a peer that breaks
    /// the framing cannot be trusted to parse one.
    pub fn on_broken_framing(&mut self, error: &ReadError) {
        self.outbox.close(match error {
            ReadError::NotUtf8(_) => Close::NOT_UTF8,
            _ => Close::PROTOCOL_ERROR,
        });
    }

    /// One of the I/O loop's timers fired (`due`).
    pub fn on_timer(&mut self, fired: due::Fired, now: Instant) {
        match fired {
            due::Fired::Heartbeat => self.on_heartbeat_tick(now),
            due::Fired::Deadline => self.on_deadline(now),
        }
    }

    pub fn on_heartbeat_tick(&mut self, now: Instant) {
        let interval = self.shared.config.heartbeat_interval;
        if now.saturating_duration_since(self.last_received) >= interval * 2 {
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

    pub fn on_frame(&mut self, bytes: &[u8]) {
        let metrics = &self.shared.metrics;
        metrics.frames_rx.inc();
        metrics.bytes_in.inc_by(bytes.len() as u64);
        let max_depth = self.shared.config.limits.max_depth + FRAME_NESTING;
        // Writes are most of the traffic: a well-formed CALL is read without
        // building its envelope. Anything else takes the general path below.
        if let (true, Some(call)) = (self.auth.is_live(), CallFrame::decode(bytes, max_depth)) {
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

    /// A CALL the fast path declined: answer exactly what is wrong with it
    /// (no string `call_id`: ERROR; otherwise a RESULT).
    fn on_slow_call(&mut self, frame: &Frame) {
        let Some(call_id) = frame.body.get("call_id").and_then(Value::as_str) else {
            return self.send_error(
                frame.stream_id,
                &Rejection::bad_request("CALL needs `call_id` (a string)"),
            );
        };
        let idempotency_key = match frame.body.get("idempotency_key") {
            None => None,
            Some(Value::Str(key)) => Some(key.as_str()),
            Some(_) => {
                let seq = self.next_seq();
                let refusal = Rejection::bad_request("`idempotency_key` must be a string");
                return self.send(wire::result_err(seq, call_id, &refusal));
            }
        };
        self.on_call(CallFrame {
            stream_id: frame.stream_id,
            seq: frame.seq,
            call_id,
            method: frame.body.get("method").and_then(Value::as_str),
            args: CallArgs::of_body(&frame.body),
            idempotency_key,
        });
    }

    fn on_call(&mut self, call: CallFrame<'_>) {
        self.calls = self.calls.wrapping_add(1);
        self.holdings.info().count_call();
        self.call_started = (self.calls % crate::metrics::LATENCY_SAMPLE == 1).then(Instant::now);
        if let Some(key) = call.idempotency_key {
            return self.on_idempotent_call(call.call_id, call.method, call.args, key);
        }
        let result = self.call(call.method, call.args);
        self.answer(call.call_id, call.method, result);
    }

    /// Sends a CALL's RESULT: at once, or once what it shows is durable.
    fn answer(&mut self, call_id: &str, method: Option<&str>, result: Result<Reply, Rejection>) {
        self.shared.metrics.call(
            method,
            result.as_ref().err().map(|e| e.code as u16),
            self.call_started.take().map(|t| t.elapsed().as_secs_f64()),
        );
        let seq = self.next_seq();
        let reply = match result {
            Ok(Reply::Written(written)) => {
                self.record_writer(&written, method);
                let storage = self.shared.store.storage();
                if !storage.is_visible(written.ticket) {
                    // The RESULT leaves once the write is durable.
                    return storage.deliver(
                        written.ticket,
                        Delivery::Result {
                            outbox: self.outbox.clone(),
                            seq,
                            call_id: call_id.to_owned(),
                            version: written.version,
                        },
                    );
                }
                wire::result_version(seq, call_id, written.version)
            }
            Ok(Reply::Data { data, ticket }) => {
                let frame = wire::result_data(seq, call_id, &data);
                let storage = self.shared.store.storage();
                if !storage.is_visible(ticket) {
                    // It shows a change that is not durable yet.
                    return storage.deliver(
                        ticket,
                        Delivery::Reply {
                            outbox: self.outbox.clone(),
                            seq,
                            call_id: call_id.to_owned(),
                            frame,
                        },
                    );
                }
                frame
            }
            Err(e) => {
                debug!(session = self.id, method, code = e.code as u16, reason = %e.message, "call refused");
                wire::result_err(seq, call_id, &e)
            }
        };
        self.send(reply);
    }

    fn call(&mut self, method: Option<&str>, args: CallArgs<'_>) -> Result<Reply, Rejection> {
        self.check_rate()?;
        self.run(method, args)
    }

    /// The per-session CALL rate limit.
    fn check_rate(&mut self) -> Result<(), Rejection> {
        if !self.write_limit.is_unlimited()
            && !self.write_limit.try_acquire(Instant::now().into_std())
        {
            self.shared.metrics.rate_limited.inc();
            self.holdings.info().count_rate_limited();
            return Err(Rejection::new(
                ErrorCode::TooManyRequests,
                format!(
                    "rate limit: at most {} writes per second",
                    self.write_limit.per_sec()
                ),
            ));
        }
        Ok(())
    }

    /// Parses and runs a CALL. In cluster mode a CALL whose key changed on
    /// another node while it was drafted is run again on the caught-up
    /// copy (a few times; then 503).
    fn run(&mut self, method: Option<&str>, args: CallArgs<'_>) -> Result<Reply, Rejection> {
        self.run_tagged(method, args, None)
    }

    /// [`Session::run`] of an idempotent call: its writes carry `tag` to the
    /// commit.
    fn run_tagged(
        &mut self,
        method: Option<&str>,
        args: CallArgs<'_>,
        tag: Option<&Tag>,
    ) -> Result<Reply, Rejection> {
        let method =
            method.ok_or_else(|| Rejection::bad_request("CALL needs `method` (a string)"))?;
        crate::admin::check_inspector_call(
            &self.shared,
            self.holdings.info(),
            &self.identity,
            method,
        )?;
        if self.shared.store.remote().is_none() {
            return self.run_once(method, args, tag);
        }
        let mut args = args;
        for _ in 1..STALE_RETRIES {
            let spare = args.clone();
            match self.run_once(method, args, tag) {
                Err(e) if e.stale => args = spare,
                result => return result,
            }
        }
        self.run_once(method, args, tag)
    }

    fn run_once(
        &mut self,
        method: &str,
        args: CallArgs<'_>,
        tag: Option<&Tag>,
    ) -> Result<Reply, Rejection> {
        methods::call(
            method,
            args,
            &mut Context {
                shared: &self.shared,
                session: self.id,
                identity: &self.identity,
                holdings: &mut self.holdings,
                tag,
            },
        )
    }

    /// Remembers that this session made the change (only with the
    /// inspector on: see `writers`).
    fn record_writer(&self, written: &crate::store::Written, method: Option<&str>) {
        let (Some(writers), true) = (&self.shared.writers, written.changed) else {
            return;
        };
        let method = method
            .and_then(|m| methods::names().find(|n| *n == m))
            .unwrap_or("?");
        writers.record(crate::writers::WriteRecord {
            version: written.version,
            session: self.id,
            subject: self.holdings.info().subject(),
            method,
            at_ms: self.shared.clock.since_epoch().as_millis() as u64,
        });
    }
}

#[cfg(test)]
mod tests;
