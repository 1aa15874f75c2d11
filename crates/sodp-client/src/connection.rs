//! The background task that owns the connection: connects, authenticates,
//! restores subscriptions, sends calls (checking the capabilities they
//! need, giving writes an idempotency key when the server supports it),
//! routes incoming frames, and reconnects with backoff until the client is
//! closed or a fatal error stops it. Writes with an idempotency key that
//! were in flight when a connection ended are resent first on the next.
//!
//! One task per client does all socket I/O, so frames go out in the order
//! the API produced them and no lock is ever held across an `.await`.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use sodp_proto::{Frame, FrameType, Value};
use tokio::time::Instant;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::handshake::{self, Session};
use crate::messages;
use crate::random;
use crate::refresh::TokenRefresh;
use crate::shared::{
    exactly_once, supports, Command, CommandReceiver, PendingCall, Shared, Status,
};
use crate::socket::{Connection, Incoming};
use crate::subscriptions::Subscriptions;

/// How a session ended.
enum End {
    /// `close()` or the last handle dropped.
    Closed,
    /// Worth reconnecting.
    Lost(Error),
    /// Not worth reconnecting (a rejected token).
    Fatal(Error),
}

impl From<Error> for End {
    fn from(e: Error) -> End {
        End::Lost(e)
    }
}

/// Calls in flight by call id, oldest first (the order to resend them in).
type Replies = BTreeMap<u64, PendingCall>;

pub(crate) struct Driver {
    shared: Arc<Shared>,
    config: Config,
    commands: CommandReceiver,
    /// Calls waiting for a connection (at most `config.max_pending`).
    queued: VecDeque<PendingCall>,
    next_call: u64,
    /// HELLO `capabilities` of the current (or last) session.
    capabilities: Value,
}

impl Driver {
    pub fn new(shared: Arc<Shared>, config: Config, commands: CommandReceiver) -> Self {
        Driver {
            shared,
            config,
            commands,
            queued: VecDeque::new(),
            next_call: 0,
            capabilities: Value::Nil,
        }
    }

    pub async fn run(mut self) {
        let error = self.connect_loop().await;
        self.shared
            .status
            .send_replace(Status::Closed(error.clone()));
        let error = error.unwrap_or(Error::Closed);
        self.commands.close();
        while let Ok(cmd) = self.commands.try_recv() {
            if let Command::Call(call) = cmd {
                self.queued.push_back(call);
            }
        }
        for call in self.queued.drain(..) {
            let _ = call.reply.send(Err(error.clone()));
        }
        // Dropping every watcher's sender ends all streams and callback tasks.
        *self.shared.subs() = Subscriptions::default();
    }

    /// Returns `None` when closed on request, else the error that stopped it.
    async fn connect_loop(&mut self) -> Option<Error> {
        let mut attempt = 0u32;
        let mut ever_connected = false;
        loop {
            self.shared.status.send_if_modified(|s| {
                let changed = *s != Status::Connecting;
                *s = Status::Connecting;
                changed
            });
            let connected = tokio::select! {
                r = handshake::connect(&self.config) => r,
                () = idle(&mut self.commands, &mut self.queued, self.config.max_pending) => return None,
            };
            match connected {
                Ok(session) => {
                    ever_connected = true;
                    attempt = 0;
                    match self.serve(session).await {
                        End::Closed => return None,
                        End::Fatal(e) => return Some(e),
                        // The final error goes to `ready()` and the status;
                        // `on_error` hears about the ones retried.
                        End::Lost(e) if !self.config.reconnect => return Some(e),
                        End::Lost(e) => self.config.report(&e),
                    }
                }
                Err(e) => {
                    let give_up = e.is_fatal()
                        || !self.config.reconnect
                        || (!ever_connected && !self.config.retry_first_connect);
                    if give_up {
                        return Some(e);
                    }
                    self.config.report(&e);
                }
            }
            let delay = self.config.backoff.delay(attempt);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = idle(&mut self.commands, &mut self.queued, self.config.max_pending) => return None,
            }
        }
    }

    /// Runs one authenticated session until it ends.
    async fn serve(&mut self, session: Session) -> End {
        let Session {
            mut conn,
            hello,
            token,
        } = session;
        self.capabilities = hello.capabilities.clone();
        *self
            .shared
            .capabilities
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = hello.capabilities.clone();
        let mut replies = Replies::new();
        let refresh = TokenRefresh::new(
            hello.token_refresh,
            &self.config.token,
            token.as_deref(),
            self.config.wall_clock.clone(),
        );
        // Three missed server heartbeats: the peer is gone even if TCP has
        // not noticed (a silent network drop can take minutes to surface).
        let silence_limit = hello.heartbeat_interval.map(|h| h * 3);
        let end = match self
            .session_loop(&mut conn, &mut replies, refresh, silence_limit)
            .await
        {
            Ok(never) => match never {},
            Err(end) => end,
        };

        let error = match &end {
            End::Closed => Error::Closed,
            End::Lost(e) | End::Fatal(e) => e.clone(),
        };
        self.requeue_or_fail(&mut replies, matches!(end, End::Lost(_)), &error);
        // Only a session that was announced with on_connect ends with
        // on_disconnect (it can fail while restoring subscriptions).
        let was_connected = *self.shared.status.borrow() == Status::Connected;
        if matches!(end, End::Closed) {
            conn.close().await;
        } else {
            self.shared.status.send_replace(Status::Connecting);
        }
        if let (true, Some(hook)) = (was_connected, &self.config.on_disconnect) {
            hook();
        }
        end
    }

    async fn session_loop(
        &mut self,
        conn: &mut Connection,
        replies: &mut Replies,
        mut refresh: TokenRefresh,
        silence_limit: Option<Duration>,
    ) -> Result<std::convert::Infallible, End> {
        // Keys with a WATCH/RESUME out on this connection: a watch registered
        // while the subscriptions were being restored must not go out twice.
        let mut subscribed = HashSet::new();
        let resubscribe = self.shared.subs().resubscribe();
        for frame in resubscribe {
            if self.refuse_pattern(&frame) {
                continue;
            }
            subscribed.insert(key_of(&frame));
            conn.send(frame).await?;
        }
        while let Some(call) = self.queued.pop_front() {
            self.send_call(conn, replies, call).await?;
        }
        self.shared.status.send_replace(Status::Connected);
        if let Some(hook) = &self.config.on_connect {
            hook();
        }
        let mut silent_until = silence_limit.map(|l| Instant::now() + l);
        loop {
            tokio::select! {
                incoming = conn.recv() => {
                    silent_until = silence_limit.map(|l| Instant::now() + l);
                    match incoming {
                        Incoming::Frame(frame) => {
                            self.on_frame(conn, replies, &mut refresh, frame).await?
                        }
                        Incoming::Invalid(e) => self.config.report(&e),
                        Incoming::Closed(why) => {
                            let why = if why.is_empty() { why } else { format!(": {why}") };
                            return Err(End::Lost(Error::Connection(format!(
                                "connection to {} lost{why}",
                                conn.url()
                            ))));
                        }
                    }
                }
                () = sleep_until(silent_until), if silent_until.is_some() => {
                    return Err(End::Lost(Error::Connection(format!(
                        "connection to {} lost: nothing from the server for {:?}",
                        conn.url(),
                        silence_limit.unwrap_or_default()
                    ))));
                }
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Close) => return Err(End::Closed),
                    Some(Command::Send(frame)) => {
                        if self.refuse_pattern(&frame) {
                            continue;
                        }
                        let fresh = match frame.kind {
                            FrameType::Unwatch => subscribed.remove(&key_of(&frame)),
                            _ => subscribed.insert(key_of(&frame)),
                        };
                        if fresh {
                            conn.send(frame).await?;
                        }
                    }
                    Some(Command::Call(call)) => self.send_call(conn, replies, call).await?,
                },
                () = sleep_until(refresh.due), if refresh.due.is_some() => refresh.start_fetch(),
                result = join(&mut refresh.fetching), if refresh.fetching.is_some() => {
                    match refresh.fetched(result) {
                        Ok(Some(token)) => conn.send(messages::auth(&token)).await?,
                        Ok(None) => {}
                        Err(e) => self.config.report(&Error::Connection(format!(
                            "token refresh failed: {e}"
                        ))),
                    }
                }
            }
        }
    }

    async fn send_call(
        &mut self,
        conn: &mut Connection,
        replies: &mut Replies,
        mut call: PendingCall,
    ) -> Result<(), End> {
        if call.abandoned() {
            return Ok(()); // timed out while queued
        }
        if let Some(missing) = call.requires.iter().find(|c| !self.supports(c)) {
            let _ = call
                .reply
                .send(Err(Error::Unsupported((*missing).to_owned())));
            return Ok(());
        }
        let idempotent = self.supports("idempotency");
        if call.resent && !idempotent {
            let _ = call.reply.send(Err(Error::Connection(format!(
                "connection to {} lost with the call in flight; the server it reconnected to \
                 does not support idempotency, so resending it could apply it twice",
                conn.url()
            ))));
            return Ok(());
        }
        if idempotent && call.idempotency_key.is_none() && exactly_once(&call.method) {
            call.idempotency_key = Some(random::idempotency_key());
        }
        self.next_call += 1;
        let id = self.next_call;
        let frame = messages::call(
            &id.to_string(),
            &call.method,
            call.args.clone(),
            call.idempotency_key.as_deref(),
        );
        if call.resent {
            // A CALL over the server's message limit made it close the
            // connection; resending it would only do that again.
            let limit = self
                .capabilities
                .get("max_message_bytes")
                .and_then(Value::as_u64);
            let size = frame.encode().len() as u64;
            if let Some(limit) = limit.filter(|l| *l > 0 && size > *l) {
                let _ = call.reply.send(Err(Error::Connection(format!(
                    "connection to {} lost with the call in flight; not resent: the call is \
                     {size} bytes, over the server's max_message_bytes of {limit}",
                    conn.url()
                ))));
                return Ok(());
            }
        }
        // Forget calls whose caller gave up, so a silent server cannot grow this.
        replies.retain(|_, c| !c.abandoned());
        replies.insert(id, call);
        conn.send(frame).await?;
        Ok(())
    }

    /// At the end of a session: a call in flight with an idempotency key
    /// goes back to the front of the queue (oldest first, within
    /// `max_pending`) when the client will reconnect — the server answers
    /// its resend with the original RESULT if it had applied it. The others
    /// fail now rather than at their timeout: nobody can tell whether the
    /// server applied them, and the caller should decide.
    fn requeue_or_fail(&mut self, replies: &mut Replies, reconnecting: bool, error: &Error) {
        let mut resend = VecDeque::new();
        for (_, mut call) in std::mem::take(replies) {
            if call.abandoned() {
                continue;
            }
            let fits = resend.len() + self.queued.len() < self.config.max_pending;
            if reconnecting && call.idempotency_key.is_some() && fits {
                call.resent = true;
                resend.push_back(call);
            } else {
                let _ = call.reply.send(Err(error.clone()));
            }
        }
        resend.append(&mut self.queued);
        self.queued = resend;
    }

    fn supports(&self, capability: &str) -> bool {
        supports(&self.capabilities, capability)
    }

    /// A WATCH/RESUME of a pattern the server cannot serve (no
    /// `prefix_watch`): not sent; the pattern's watchers end and `on_error`
    /// hears why. True when the frame was refused.
    fn refuse_pattern(&self, frame: &Frame) -> bool {
        let subscribing = matches!(frame.kind, FrameType::Watch | FrameType::Resume);
        let key = key_of(frame);
        if !subscribing || !key.contains('*') || self.supports("prefix_watch") {
            return false;
        }
        self.shared.subs().remove_key(&key);
        self.config
            .report(&Error::Unsupported("prefix_watch".into()));
        true
    }

    async fn on_frame(
        &mut self,
        conn: &mut Connection,
        replies: &mut Replies,
        refresh: &mut TokenRefresh,
        frame: Frame,
    ) -> Result<(), End> {
        match frame.kind {
            FrameType::Heartbeat => conn.send(messages::heartbeat()).await?,
            FrameType::StateInit => {
                let result = self
                    .shared
                    .subs()
                    .on_state_init(frame.stream_id, &frame.body);
                if let Err(e) = result {
                    self.config.report(&e);
                }
            }
            FrameType::Delta => {
                let result = self.shared.subs().on_delta(frame.stream_id, &frame.body);
                if let Err(failure) = result {
                    self.config.report(&failure.error);
                    conn.send(failure.resync).await?;
                }
            }
            FrameType::Result => match messages::parse_result(&frame.body) {
                Ok((id, outcome)) => {
                    let call = id.parse().ok().and_then(|id| replies.remove(&id));
                    if let Some(call) = call {
                        let _ = call.reply.send(outcome);
                    }
                }
                Err(e) => self.config.report(&e),
            },
            FrameType::Error => {
                let (code, message) = messages::parse_error(&frame.body);
                if code == 401 {
                    // The server closes after this. A live expiry with a token
                    // provider is worth a reconnect (the provider can mint a
                    // new token); a static token will not get better.
                    let e = Error::Auth(message);
                    return Err(if self.config.token.can_refresh() {
                        End::Lost(e)
                    } else {
                        End::Fatal(e)
                    });
                }
                let key = self.shared.subs().key_of_stream(frame.stream_id);
                let message = match key {
                    Some(key) => format!("{key}: {message}"),
                    None => message,
                };
                self.config.report(&Error::Server { code, message });
            }
            FrameType::AuthOk => refresh.confirmed(),
            FrameType::Hello => {}
            other => self.config.report(&Error::Protocol(format!(
                "unexpected {other:?} frame from the server"
            ))),
        }
        Ok(())
    }
}

/// While not connected: queue calls (at most `max_pending`; beyond, they
/// fail at once), drop subscription frames (the table replays them on
/// connect), and return only when asked to close.
async fn idle(
    commands: &mut CommandReceiver,
    queued: &mut VecDeque<PendingCall>,
    max_pending: usize,
) {
    loop {
        match commands.recv().await {
            None | Some(Command::Close) => return,
            Some(Command::Call(call)) => {
                queued.retain(|c| !c.abandoned());
                if queued.len() < max_pending {
                    queued.push_back(call);
                } else {
                    let _ = call.reply.send(Err(Error::QueueFull(max_pending)));
                }
            }
            Some(Command::Send(_)) => {}
        }
    }
}

/// The `state` of a WATCH/RESUME/UNWATCH frame.
fn key_of(frame: &Frame) -> String {
    frame
        .body
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn join<T>(
    task: &mut Option<tokio::task::JoinHandle<T>>,
) -> std::result::Result<T, tokio::task::JoinError> {
    match task {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}
