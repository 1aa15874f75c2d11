//! One session's outbound side: a bounded queue of encoded frames, the
//! signal that ends the session, and — for a plain TCP connection — the
//! socket itself, so a frame can be written by whoever queued it.
//!
//! Frames are `Bytes`, so a DELTA encoded once is shared by every
//! subscriber's queue without copying. `push` never blocks: a session whose
//! queue is full has fallen too far behind and is evicted, so a slow reader
//! can never slow the writer or other subscribers, and its memory is bounded
//! by the queue length.
//!
//! The queue is a `std::sync::Mutex` around a `VecDeque` plus one
//! `AtomicWaker` for the session task, not a channel: a delivery is one
//! uncontended lock and a push, and the session takes everything queued in
//! one swap. The close signal travels through the same waker, so the
//! session task has one thing to wait on for "something to send or a
//! reason to stop".
//!
//! **Direct delivery.** Waking a subscriber's task to send one DELTA costs a
//! scheduling round and a poll of that task — more than the send itself in
//! user space. So while a session task handles a burst of frames it read,
//! the thread is inside a [`FlushScope`]: a push that finds the queue idle
//! only notes the outbox, and when the burst is over (every key lock
//! released) the scope writes each noted queue straight to its socket with
//! one non-blocking `send` (several frames gathered, see [`crate::batch`]). Only what the
//! socket does not take at once (it would block, or the connection is TLS)
//! is left queued, and then the session task is woken to write it as
//! before. At most one writer —
//! the session task or one flush — owns a queue's socket at a time
//! ([`Writer`]), and both take frames from the front, so frames leave in
//! the order they were queued.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Poll, Waker};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;

use crate::batch::{self, Front};

/// Identifies a session for subscriptions and presence ownership.
pub type SessionId = u64;

/// Why and how a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// WebSocket close code.
    pub code: u16,
    pub reason: &'static str,
    /// Send what is already queued before the close frame.
    pub flush: bool,
}

impl Close {
    /// Every way a session is closed (for metrics).
    pub const ALL: [Close; 9] = [
        Close::EVICTED,
        Close::PROTOCOL_ERROR,
        Close::NOT_UTF8,
        Close::SHUTDOWN,
        Close::HEARTBEAT_TIMEOUT,
        Close::TOO_BIG,
        Close::UNAUTHORIZED,
        Close::NORMAL,
        Close::DISCONNECTED,
    ];

    /// The reason as a label: `normal` for a plain close.
    pub fn label(&self) -> &'static str {
        if self.reason.is_empty() {
            "normal"
        } else {
            self.reason
        }
    }

    pub const EVICTED: Close = Close {
        code: 1008,
        reason: "outbound queue full",
        flush: false,
    };
    pub const SHUTDOWN: Close = Close {
        code: 1001,
        reason: "server shutting down",
        flush: true,
    };
    pub const HEARTBEAT_TIMEOUT: Close = Close {
        code: 1001,
        reason: "heartbeat timeout",
        flush: false,
    };
    pub const TOO_BIG: Close = Close {
        code: 1009,
        reason: "message too big",
        flush: true,
    };
    pub const UNAUTHORIZED: Close = Close {
        code: 1008,
        reason: "unauthorized",
        flush: true,
    };
    /// `admin.disconnect`.
    pub const DISCONNECTED: Close = Close {
        code: 1008,
        reason: "disconnected by an administrator",
        flush: true,
    };
    /// A frame that breaks RFC 6455 (unmasked, reserved bits, a bad
    /// fragment sequence, …).
    pub const PROTOCOL_ERROR: Close = Close {
        code: 1002,
        reason: "WebSocket protocol error",
        flush: true,
    };
    /// A text message or close reason that is not UTF-8 (RFC 6455 §8.1).
    pub const NOT_UTF8: Close = Close {
        code: 1007,
        reason: "text is not valid UTF-8",
        flush: true,
    };
    pub const NORMAL: Close = Close {
        code: 1000,
        reason: "",
        flush: true,
    };
}

/// What the session task was woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Frames were moved into the caller's batch.
    Frames,
    /// The session must end (see [`Outbox::closing`]).
    Closing,
}

/// Who is writing a queue's frames to the socket right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Nobody,
    /// The session task took a batch and has not finished writing it.
    SessionTask,
    /// A [`FlushScope`] on some thread is sending frames it took.
    Flush,
}

/// What the lock guards.
struct Queue {
    frames: VecDeque<Bytes>,
    writer: Writer,
    /// The connection's socket when it is plain TCP, for direct delivery;
    /// `None` for TLS, in tests, and once the session has ended.
    socket: Option<Arc<TcpStream>>,
}

/// How a frame was queued.
enum Queued {
    /// Refused: the session is ending, or has just been evicted.
    No,
    /// Behind frames someone is already going to write.
    Behind,
    /// Into an idle queue: somebody must be told to write it.
    First,
}

/// Shared by the session and every key it watches.
pub struct Outbox {
    id: SessionId,
    capacity: usize,
    queue: Mutex<Queue>,
    closing: OnceLock<Close>,
    session_task: AtomicWaker,
    /// A timer of the session fired (see [`Outbox::timers_waker`]); set at
    /// first, so that the timers are polled once to register.
    timers_fired: AtomicBool,
}

/// An outbox is its session's timers' waker (`session::due`).
impl std::task::Wake for Outbox {
    fn wake(self: Arc<Self>) {
        std::task::Wake::wake_by_ref(&self);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.rearm_timers();
        self.session_task.wake();
    }
}

impl Outbox {
    pub fn new(id: SessionId, capacity: usize) -> Outbox {
        Outbox {
            id,
            capacity: capacity.max(1),
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                writer: Writer::Nobody,
                socket: None,
            }),
            closing: OnceLock::new(),
            session_task: AtomicWaker::new(),
            timers_fired: AtomicBool::new(true),
        }
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Frames queued now (for an administrator: one lock).
    pub fn len(&self) -> usize {
        self.queue().frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets frames be written straight to this plain TCP socket by whoever
    /// queued them (see the module doc). The session task calls this once,
    /// after the upgrade, and [`Outbox::detach`] before it closes.
    pub fn attach(&self, socket: Arc<TcpStream>) {
        self.queue().socket = Some(socket);
    }

    /// Ends direct delivery: waits for a flush in progress to finish, so the
    /// session's own last writes (its goodbye) cannot interleave with one.
    /// Only the session task calls this.
    pub fn detach(&self) {
        loop {
            {
                let mut queue = self.queue();
                if queue.writer != Writer::Flush {
                    queue.socket = None;
                    return;
                }
            }
            // A flush is one non-blocking send on another thread.
            std::thread::yield_now();
        }
    }

    /// Queues a frame. Returns false if the session is ending, or has just
    /// been evicted because its queue was full.
    pub fn push(self: &Arc<Self>, frame: Bytes) -> bool {
        let queued = self.enqueue(1, |frames| frames.push_back(frame));
        self.hand_off(queued)
    }

    /// [`Outbox::push`] for the session task itself (its RESULTs, ERRORs,
    /// heartbeats and pongs): no wake-up, because that task looks at the
    /// queue before it next waits (`session::io::run`), and a burst's own
    /// frames are flushed with everything else its [`FlushScope`] noted.
    /// Waking a task from inside its own poll only makes the runtime poll it
    /// once more for nothing. Any other thread or task must use `push`.
    pub fn push_own(&self, frame: Bytes) -> bool {
        !matches!(
            self.enqueue(1, |frames| frames.push_back(frame)),
            Queued::No
        )
    }

    /// Queues several frames back to back, with nothing in between (the
    /// DELTAs of one transaction). All or none: a queue without room for
    /// them all is evicted, as by [`Outbox::push`].
    pub fn push_all(self: &Arc<Self>, frames: &[Bytes]) -> bool {
        let queued = self.enqueue(frames.len(), |queue| queue.extend(frames.iter().cloned()));
        self.hand_off(queued)
    }

    fn enqueue(&self, n: usize, add: impl FnOnce(&mut VecDeque<Bytes>)) -> Queued {
        if self.closing.get().is_some() {
            return Queued::No;
        }
        let mut queue = self.queue();
        if queue.frames.len() + n > self.capacity {
            drop(queue);
            self.close(Close::EVICTED);
            return Queued::No;
        }
        let first = queue.frames.is_empty() && queue.writer == Writer::Nobody;
        add(&mut queue.frames);
        if first {
            Queued::First
        } else {
            Queued::Behind
        }
    }

    /// Makes sure a frame just queued gets written: noted for the thread's
    /// [`FlushScope`] when there is one, else the session task is woken.
    /// Frames queued behind others need nothing: whoever writes those (the
    /// session task, a flush, or a scope that noted this outbox) takes them
    /// too.
    fn hand_off(self: &Arc<Self>, queued: Queued) -> bool {
        match queued {
            Queued::No => false,
            Queued::Behind => true,
            Queued::First => {
                if !FlushScope::note(self) {
                    self.session_task.wake();
                }
                true
            }
        }
    }

    /// Writes what is queued straight to the socket, as much as it takes
    /// without blocking; what is left stays queued, in order, for the
    /// session task, which is woken for it — unless `running`: the flush
    /// runs inside that task, which writes its queue before it waits.
    /// Without a socket (TLS), or when somebody else is writing, this
    /// leaves the queue to them.
    fn flush(&self, batch: &mut VecDeque<Bytes>, sent: &Counter, running: bool) {
        let wake = || {
            if !running {
                self.session_task.wake();
            }
        };
        // Two rounds: frames queued while the first was being sent go in a
        // second; after that the session task takes over.
        for _ in 0..2 {
            let socket = {
                let mut queue = self.queue();
                if queue.writer != Writer::Nobody || queue.frames.is_empty() {
                    return;
                }
                if self.closing.get().is_some() {
                    // `close` woke the session task; it decides what is sent.
                    return;
                }
                let Some(socket) = queue.socket.clone() else {
                    drop(queue);
                    wake();
                    return;
                };
                queue.writer = Writer::Flush;
                std::mem::swap(&mut queue.frames, batch);
                socket
            };
            let (finished, written) = write_now(&socket, batch);
            sent.inc_by(written as u64);
            let mut queue = self.queue();
            queue.writer = Writer::Nobody;
            if !finished {
                put_back(&mut queue.frames, batch);
                drop(queue);
                wake();
                return;
            }
            if queue.frames.is_empty() {
                return;
            }
        }
        wake();
    }

    /// Asks the session to end. The first reason wins.
    pub fn close(&self, close: Close) {
        if self.closing.set(close).is_ok() {
            self.session_task.wake();
        }
    }

    /// The waker of the session's timers (`session::due`): a timer that
    /// fires marks this outbox and wakes the session task.
    pub fn timers_waker(self: &Arc<Self>) -> Waker {
        Waker::from(self.clone())
    }

    /// Whether a timer of the session fired (or was moved) since the last
    /// call; clears the mark.
    pub fn take_timers_mark(&self) -> bool {
        self.timers_fired.load(Ordering::Acquire) && self.timers_fired.swap(false, Ordering::AcqRel)
    }

    /// Makes the next [`Outbox::take_timers_mark`] say yes: a timer was
    /// moved, or one is ready and must be polled again.
    pub fn rearm_timers(&self) {
        self.timers_fired.store(true, Ordering::Release);
    }

    /// The reason the session is ending, if it is.
    pub fn closing(&self) -> Option<Close> {
        self.closing.get().copied()
    }

    /// Waits until there are frames (moved into `batch`) or the session is
    /// closing. Only the session task calls this; until it calls
    /// [`Outbox::written`], nobody else writes to the socket.
    pub async fn next_batch(&self, batch: &mut VecDeque<Bytes>) -> Wake {
        poll_fn(|cx| {
            self.session_task.register(cx.waker());
            if self.closing.get().is_some() {
                return Poll::Ready(Wake::Closing);
            }
            let mut queue = self.queue();
            // A flush in progress wakes the task if it leaves anything.
            if queue.frames.is_empty() || queue.writer == Writer::Flush {
                return Poll::Pending;
            }
            queue.writer = Writer::SessionTask;
            std::mem::swap(&mut queue.frames, batch);
            Poll::Ready(Wake::Frames)
        })
        .await
    }

    /// The session task has written the batch [`Outbox::next_batch`] gave
    /// it.
    pub fn written(&self) {
        self.queue().writer = Writer::Nobody;
    }

    /// Resolves once the session is closing without a flush (eviction, dead
    /// peer): a write to a peer that stopped reading is abandoned then.
    pub async fn abandoned(&self) {
        poll_fn(|cx| {
            self.session_task.register(cx.waker());
            match self.closing() {
                Some(close) if !close.flush => Poll::Ready(()),
                _ => Poll::Pending,
            }
        })
        .await
    }

    /// Moves everything queued into `batch` (for the goodbye flush).
    pub fn take_all(&self, batch: &mut VecDeque<Bytes>) {
        batch.append(&mut self.queue().frames);
    }
}

/// Sends the batch without blocking, front first, one system call per
/// round (see [`crate::batch`]). Returns whether all of it went (false: the
/// socket would block or failed; what is left stays in `batch`, and the
/// session task's own write then waits for room or meets the error) and
/// how many bytes did.
fn write_now(socket: &TcpStream, batch: &mut VecDeque<Bytes>) -> (bool, usize) {
    let mut total = 0;
    while !batch.is_empty() {
        let written = batch::with_front(batch, |front| match front {
            Front::Contiguous(bytes) => socket.try_write(bytes),
            Front::Slices(slices) => crate::tcp::try_send_vectored(socket, slices),
        });
        match written {
            Ok(0) | Err(_) => return (false, total),
            Ok(n) => {
                batch::consume(batch, n);
                total += n;
            }
        }
    }
    (true, total)
}

/// Returns what a flush could not send to the front of the queue, before
/// what was queued while it was sending. The queue may then hold more than
/// its capacity for a moment (at most twice: what was in flight was taken
/// from a queue within it); the next push into it evicts, as any push into
/// a full queue does.
fn put_back(queue: &mut VecDeque<Bytes>, left: &mut VecDeque<Bytes>) {
    while let Some(frame) = left.pop_back() {
        queue.push_front(frame);
    }
}

/// The largest fanout a scope writes itself; a larger one is written by
/// tasks of this many queues each (see [`FlushScope`]'s drop).
const FLUSH_CHUNK: usize = 128;

/// A flush task yields before each slice of this many queues, so the
/// runtime polls for I/O between slices (see [`FlushScope`]'s drop).
const FLUSH_SLICE: usize = 16;

/// Outboxes noted on this thread while a [`FlushScope`] is open.
struct Noted {
    open: bool,
    outboxes: Vec<Arc<Outbox>>,
    /// Kept between flushes so a flush allocates nothing.
    spare: VecDeque<Bytes>,
}

thread_local! {
    static NOTED: RefCell<Noted> = const {
        RefCell::new(Noted {
            open: false,
            outboxes: Vec::new(),
            spare: VecDeque::new(),
        })
    };
}

/// While it lives, frames pushed on this thread into idle queues are
/// noted instead of waking their session tasks; when it is dropped, each
/// noted queue is written straight to its socket (see the module doc).
///
/// Open it only where no key lock is held at its end — around a burst of
/// incoming frames — so no subscriber's system call runs inside a key's
/// critical section. Scopes nest: the outermost one flushes. A panic
/// flushes too (the scope is a drop guard), so nothing noted is stranded.
pub struct FlushScope<'a> {
    sent: &'a Counter,
    /// Also flushed at the end: the session's own outbox, whose replies
    /// are queued without a note (`push_own`).
    own: Option<&'a Outbox>,
    outermost: bool,
}

impl<'a> FlushScope<'a> {
    /// Opens a scope; `sent` counts the bytes its flushes write.
    pub fn open(sent: &'a Counter, own: Option<&'a Outbox>) -> FlushScope<'a> {
        let outermost = NOTED.with(|noted| !std::mem::replace(&mut noted.borrow_mut().open, true));
        FlushScope {
            sent,
            own,
            outermost,
        }
    }

    /// Notes `outbox` for the open scope; false when none is open.
    fn note(outbox: &Arc<Outbox>) -> bool {
        NOTED.with(|noted| {
            let mut noted = noted.borrow_mut();
            if noted.open {
                noted.outboxes.push(outbox.clone());
            }
            noted.open
        })
    }
}

impl Drop for FlushScope<'_> {
    fn drop(&mut self) {
        if !self.outermost {
            return;
        }
        let (mut outboxes, mut batch) = NOTED.with(|noted| {
            let mut noted = noted.borrow_mut();
            noted.open = false;
            (
                std::mem::take(&mut noted.outboxes),
                std::mem::take(&mut noted.spare),
            )
        });
        // The session's own replies first: a writer learns its write was
        // applied without waiting for a thousand subscribers' sends, and
        // can send the next one meanwhile.
        if let Some(own) = self.own {
            own.flush(&mut batch, self.sent, true);
        }
        // A large fanout is not written by this thread alone, nor at once:
        // tasks of a chunk each write it, which idle worker threads take,
        // and each yields before every slice, which lets the runtime poll
        // for I/O. On a busy thread the writer then reads the CALLs its
        // client sent meanwhile before the rest of the fanout goes out, and
        // the DELTAs of those writes join the sends not yet made instead of
        // needing sends of their own: the fanout coalesces as the load
        // rises, and costs a poll per slice when it does not.
        if outboxes.len() > FLUSH_CHUNK {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                // Drained, not taken: the list keeps its buffer for the next scope.
                let mut all = outboxes.drain(..);
                loop {
                    let chunk: Vec<_> = all.by_ref().take(FLUSH_CHUNK).collect();
                    if chunk.is_empty() {
                        break;
                    }
                    let sent = self.sent.clone();
                    runtime.spawn(async move {
                        let mut batch = VecDeque::new();
                        for slice in chunk.chunks(FLUSH_SLICE) {
                            tokio::task::yield_now().await;
                            for outbox in slice {
                                outbox.flush(&mut batch, &sent, false);
                            }
                        }
                    });
                }
            }
        }
        for outbox in outboxes.drain(..) {
            outbox.flush(&mut batch, self.sent, false);
        }
        NOTED.with(|noted| {
            let mut noted = noted.borrow_mut();
            // Keep the larger buffers for the next scope, not a burst's.
            if outboxes.capacity() <= 1024 {
                noted.outboxes = outboxes;
            }
            if batch.capacity() <= 256 {
                noted.spare = batch;
            }
        });
    }
}

/// Also the helpers of other modules' tests that need an attached outbox.
#[cfg(test)]
pub(crate) mod tests {
    use std::future::Future;

    use super::*;

    #[test]
    fn full_queue_evicts() {
        let outbox = Arc::new(Outbox::new(1, 2));
        assert!(outbox.push(Bytes::from_static(b"a")));
        assert!(outbox.push(Bytes::from_static(b"b")));
        assert!(!outbox.push(Bytes::from_static(b"c")));
        assert_eq!(outbox.closing(), Some(Close::EVICTED));
        let mut batch = VecDeque::new();
        outbox.take_all(&mut batch);
        assert_eq!(batch, [Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        assert!(
            !outbox.push(Bytes::from_static(b"d")),
            "nothing queues after a close"
        );
    }

    /// Counts the wake-ups of the task that waits on the outbox.
    pub(crate) struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    pub(crate) fn count(wakes: &Wakes) -> usize {
        wakes.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A counting waker, and the outbox's task registered with it.
    pub(crate) fn registered(outbox: &Outbox) -> (Arc<Wakes>, std::task::Waker) {
        let wakes = Arc::new(Wakes(Default::default()));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut batch = VecDeque::new();
        let waiting = std::pin::pin!(outbox.next_batch(&mut batch));
        assert!(waiting.poll(&mut cx).is_pending());
        (wakes, waker)
    }

    /// Polls `next_batch` once: the frames it hands the session task.
    pub(crate) fn take(outbox: &Outbox, waker: &std::task::Waker) -> Option<Vec<Bytes>> {
        let mut cx = std::task::Context::from_waker(waker);
        let mut batch = VecDeque::new();
        let ready = std::pin::pin!(outbox.next_batch(&mut batch)).poll(&mut cx);
        match ready {
            Poll::Ready(Wake::Frames) => Some(batch.into()),
            _ => None,
        }
    }

    #[test]
    fn own_frames_queue_without_a_wake_up_and_obey_the_same_bounds() {
        let outbox = Arc::new(Outbox::new(1, 2));
        let (wakes, waker) = registered(&outbox);
        assert!(outbox.push_own(Bytes::from_static(b"a")));
        assert_eq!(count(&wakes), 0);
        // Behind the task's own frame: the task, which is running, writes both.
        assert!(outbox.push(Bytes::from_static(b"b")));
        assert_eq!(count(&wakes), 0);
        assert_eq!(take(&outbox, &waker).unwrap(), [&b"a"[..], b"b"]);
        outbox.written();
        // Into an idle queue from elsewhere: the task must be woken.
        assert!(outbox.push(Bytes::from_static(b"c")));
        assert_eq!(count(&wakes), 1);
        assert!(outbox.push_own(Bytes::from_static(b"d")));
        assert!(
            !outbox.push_own(Bytes::from_static(b"e")),
            "a full queue evicts"
        );
        assert_eq!(outbox.closing(), Some(Close::EVICTED));
        assert!(take(&outbox, &waker).is_none(), "closing, not frames");
        assert!(!outbox.push_own(Bytes::from_static(b"f")));
        let mut rest = VecDeque::new();
        outbox.take_all(&mut rest);
        assert_eq!(rest, [Bytes::from_static(b"c"), Bytes::from_static(b"d")]);
    }

    /// A connected pair — the server side as a session holds it, and the
    /// client — and an outbox of `capacity` with the server side attached.
    pub(crate) async fn attached(
        capacity: usize,
    ) -> (crate::tcp::SharedTcp, tokio::net::TcpStream, Arc<Outbox>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let server = crate::tcp::SharedTcp::new(accepted.unwrap().0);
        let outbox = Arc::new(Outbox::new(1, capacity));
        outbox.attach(server.direct_socket().unwrap());
        (server, client.unwrap(), outbox)
    }

    /// `n` attached outboxes (capacity 8) and their connections (server
    /// side, client), for fanout tests.
    async fn subscribers(
        n: usize,
    ) -> (
        Vec<(crate::tcp::SharedTcp, tokio::net::TcpStream)>,
        Vec<Arc<Outbox>>,
    ) {
        let mut connections = Vec::with_capacity(n);
        let mut outboxes = Vec::with_capacity(n);
        for _ in 0..n {
            let (server, client, outbox) = attached(8).await;
            connections.push((server, client));
            outboxes.push(outbox);
        }
        (connections, outboxes)
    }

    /// Two worker threads, as deliveries from several sessions need.
    pub(crate) fn two_workers() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Reads what arrives within a short while.
    pub(crate) async fn received(client: &mut tokio::net::TcpStream) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let mut buf = [0; 4096];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(100), client.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    use crate::tcp::DirectSocket;
    use std::time::Duration;

    #[tokio::test]
    async fn a_scope_writes_what_it_noted_to_the_socket_without_waking_the_task() {
        let (_server, mut client, outbox) = attached(8).await;
        let (wakes, _waker) = registered(&outbox);
        let sent = Counter::default();
        {
            let _scope = FlushScope::open(&sent, None);
            assert!(outbox.push(Bytes::from_static(b"one,")));
            assert!(outbox.push_all(&[Bytes::from_static(b"two,"), Bytes::from_static(b"three")]));
            assert_eq!(outbox.len(), 3, "nothing is written before the scope ends");
        }
        assert_eq!(count(&wakes), 0, "the session task was not woken");
        assert!(outbox.is_empty());
        assert_eq!(sent.get(), 13);
        assert_eq!(received(&mut client).await, b"one,two,three");

        // Without a scope, a push wakes the task as it always did.
        assert!(outbox.push(Bytes::from_static(b"four")));
        assert_eq!(count(&wakes), 1);
        assert_eq!(outbox.len(), 1);
    }

    #[tokio::test]
    async fn without_a_socket_a_scope_wakes_the_task_instead() {
        let outbox = Arc::new(Outbox::new(1, 8));
        let (wakes, waker) = registered(&outbox);
        let sent = Counter::default();
        {
            let _scope = FlushScope::open(&sent, None);
            outbox.push(Bytes::from_static(b"a"));
            outbox.push(Bytes::from_static(b"b"));
            assert_eq!(count(&wakes), 0);
        }
        assert_eq!(count(&wakes), 1, "TLS: the session task writes");
        assert_eq!(take(&outbox, &waker).unwrap(), [&b"a"[..], b"b"]);
    }

    /// The session's own replies on a TLS connection (no socket to write
    /// directly): its task, which is the one running the scope, writes
    /// them — no wake-up of itself for nothing.
    #[tokio::test]
    async fn a_scope_does_not_wake_its_own_task() {
        let outbox = Arc::new(Outbox::new(1, 8));
        let (wakes, waker) = registered(&outbox);
        let sent = Counter::default();
        {
            let _scope = FlushScope::open(&sent, Some(&outbox));
            assert!(outbox.push_own(Bytes::from_static(b"result")));
        }
        assert_eq!(count(&wakes), 0);
        assert_eq!(take(&outbox, &waker).unwrap(), [&b"result"[..]]);
    }

    #[tokio::test]
    async fn a_scope_leaves_a_queue_the_session_task_is_writing() {
        let (_server, mut client, outbox) = attached(8).await;
        let (_wakes, waker) = registered(&outbox);
        outbox.push(Bytes::from_static(b"a"));
        let in_flight = take(&outbox, &waker).unwrap();
        let sent = Counter::default();
        {
            let _scope = FlushScope::open(&sent, Some(&outbox));
            outbox.push(Bytes::from_static(b"b"));
        }
        assert!(
            received(&mut client).await.is_empty(),
            "b must not overtake a"
        );
        assert_eq!(outbox.len(), 1);
        assert_eq!(in_flight, [&b"a"[..]]);
        outbox.written();
        assert_eq!(take(&outbox, &waker).unwrap(), [&b"b"[..]]);
    }

    /// A peer gone (reset) while a DELTA is flushed: nothing is counted as
    /// sent, the frame stays queued and the session task is woken, so its
    /// own write meets the error and ends the session.
    #[tokio::test]
    async fn a_failed_send_leaves_the_frame_to_the_session_task() {
        let (_server, client, outbox) = attached(8).await;
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (wakes, _waker) = registered(&outbox);
        let sent = Counter::default();
        {
            let _scope = FlushScope::open(&sent, None);
            assert!(outbox.push(Bytes::from_static(b"delta")));
        }
        assert_eq!(sent.get(), 0);
        assert_eq!(outbox.len(), 1, "the frame is not lost");
        assert_eq!(count(&wakes), 1, "the session task is told");
    }

    /// Frames the socket does not take stay queued, in order, for the
    /// session task; what it then writes follows what the flush sent.
    #[tokio::test]
    async fn what_the_socket_does_not_take_stays_queued_in_order() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut server, mut client, outbox) = attached(64).await;
        let (wakes, waker) = registered(&outbox);
        let frames: Vec<Bytes> = (0..32u8)
            .map(|i| Bytes::from(vec![i; 256 * 1024]))
            .collect();
        let sent = Counter::default();
        {
            let _scope = FlushScope::open(&sent, None);
            for frame in &frames {
                assert!(outbox.push(frame.clone()));
            }
        }
        assert!(!outbox.is_empty(), "8 MiB do not fit a loopback socket");
        assert!(sent.get() > 0, "but some went directly");
        assert_eq!(count(&wakes), 1, "the session task takes over");
        let rest = take(&outbox, &waker).unwrap();
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        for frame in rest {
            server.write_all(&frame).await.unwrap();
        }
        outbox.written();
        server.shutdown().await.unwrap();
        let all = reader.await.unwrap();
        assert_eq!(all, frames.concat());
    }

    #[test]
    fn what_a_flush_left_goes_before_what_was_queued_meanwhile() {
        let frames = |names: &[&'static str]| -> VecDeque<Bytes> {
            names
                .iter()
                .map(|n| Bytes::from_static(n.as_bytes()))
                .collect()
        };
        let mut queue = frames(&["c", "d"]);
        let mut left = frames(&["a", "b"]);
        put_back(&mut queue, &mut left);
        assert_eq!(queue, frames(&["a", "b", "c", "d"]));
        assert!(left.is_empty());
    }

    /// A fanout larger than one chunk is written by tasks; every
    /// subscriber gets its frame without its session task being woken.
    #[test]
    fn a_large_fanout_is_written_in_chunks_by_tasks() {
        use tokio::io::AsyncReadExt;
        const SUBSCRIBERS: usize = 2 * FLUSH_CHUNK + 44;
        two_workers().block_on(async {
            let (mut connections, outboxes) = subscribers(SUBSCRIBERS).await;
            let outboxes: Vec<_> = outboxes
                .into_iter()
                .map(|outbox| {
                    let (wakes, waker) = registered(&outbox);
                    (outbox, wakes, waker)
                })
                .collect();
            let sent = Counter::default();
            // On a worker thread, as a session's burst is.
            let outboxes = tokio::spawn(async move {
                {
                    let _scope = FlushScope::open(&sent, None);
                    for (outbox, _, _) in &outboxes {
                        assert!(outbox.push(Bytes::from_static(b"delta")));
                    }
                }
                outboxes
            })
            .await
            .unwrap();
            for (_, client) in &mut connections {
                let mut got = [0; 5];
                tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut got))
                    .await
                    .expect("every subscriber gets the frame")
                    .unwrap();
                assert_eq!(&got, b"delta");
            }
            for (outbox, wakes, _) in &outboxes {
                assert!(outbox.is_empty());
                assert_eq!(count(wakes), 0, "no session task was woken");
            }
        });
    }

    /// A large fanout gives the runtime back after every slice of queues
    /// it writes, so other tasks — the writer reading its client's next
    /// CALLs — run between slices, and what they queue joins the sends not
    /// yet made. Watched from a task that yields in a loop on a
    /// current-thread runtime: it sees the fanout advance a few slices at
    /// a time, never from nothing to done in one step.
    #[test]
    fn a_large_fanout_yields_between_slices() {
        const SUBSCRIBERS: usize = 2 * FLUSH_CHUNK + 44;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (_connections, outboxes) = subscribers(SUBSCRIBERS).await;
            let outboxes = Arc::new(outboxes);
            // How much of each task's chunk is written.
            let written = |outboxes: &[Arc<Outbox>]| -> Vec<usize> {
                outboxes
                    .chunks(FLUSH_CHUNK)
                    .map(|chunk| chunk.iter().filter(|o| o.is_empty()).count())
                    .collect()
            };
            let sent = Counter::default();
            {
                let _scope = FlushScope::open(&sent, None);
                for outbox in outboxes.iter() {
                    assert!(outbox.push(Bytes::from_static(b"delta")));
                }
            }
            assert!(
                written(&outboxes).iter().all(|&n| n == 0),
                "a large fanout is left to tasks"
            );
            let watcher = tokio::spawn({
                let outboxes = outboxes.clone();
                async move {
                    let mut seen = vec![written(&outboxes)];
                    while seen.last().unwrap().iter().sum::<usize>() < SUBSCRIBERS {
                        tokio::task::yield_now().await;
                        seen.push(written(&outboxes));
                    }
                    seen
                }
            });
            let seen = watcher.await.unwrap();
            // Between two turns of the watcher a task writes a slice or
            // two (the scheduler may run it twice), never its whole chunk.
            let largest_step = seen
                .windows(2)
                .flat_map(|w| w[0].iter().zip(&w[1]).map(|(a, b)| b - a))
                .max()
                .unwrap();
            assert!(
                largest_step <= 2 * FLUSH_SLICE,
                "a task wrote {largest_step} queues without giving the runtime back (seen {seen:?})"
            );
            assert_eq!(sent.get(), (SUBSCRIBERS * 5) as u64);
        });
    }

    /// Writers on several threads, each committing under one lock (a key's)
    /// and flushing after it, while the session task writes what flushes
    /// leave: the subscriber sees every frame once, in commit order.
    #[test]
    fn concurrent_committers_deliver_in_commit_order() {
        use tokio::io::AsyncReadExt;
        const WRITERS: u64 = 4;
        const EACH: u64 = 5_000;
        const FRAME: usize = 64;
        two_workers().block_on(async {
            let (mut server, mut client, outbox) = attached(1 << 20).await;
            // A small send buffer, so that flushes often leave frames to
            // the session task and the two take turns.
            socket2::SockRef::from(&*server.direct_socket().unwrap())
                .set_send_buffer_size(4096)
                .unwrap();
            // The session task: writes whatever flushes leave to it.
            let task = {
                let outbox = outbox.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let mut batch = VecDeque::new();
                    while outbox.next_batch(&mut batch).await == Wake::Frames {
                        for frame in batch.drain(..) {
                            server.write_all(&frame).await.unwrap();
                        }
                        outbox.written();
                    }
                    outbox.detach();
                    let mut rest = VecDeque::new();
                    outbox.take_all(&mut rest);
                    for frame in rest {
                        server.write_all(&frame).await.unwrap();
                    }
                    server.shutdown().await.unwrap();
                })
            };
            let key = Arc::new(Mutex::new(0u64));
            let writers: Vec<_> = (0..WRITERS)
                .map(|_| {
                    let (outbox, key) = (outbox.clone(), key.clone());
                    std::thread::spawn(move || {
                        let sent = Counter::default();
                        for _ in 0..EACH {
                            let _scope = FlushScope::open(&sent, None);
                            let mut version = key.lock().unwrap();
                            *version += 1;
                            let mut frame = [0; FRAME];
                            frame[..8].copy_from_slice(&version.to_be_bytes());
                            assert!(outbox.push(Bytes::copy_from_slice(&frame)));
                        }
                    })
                })
                .collect();
            // A slow reader: sends would block, flushes leave frames
            // behind while other writers queue more.
            let reader = tokio::spawn(async move {
                let mut all = Vec::new();
                let mut buf = [0; 4096];
                loop {
                    let n = client.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break all;
                    }
                    all.extend_from_slice(&buf[..n]);
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            });
            for writer in writers {
                writer.join().unwrap();
            }
            outbox.close(Close::NORMAL);
            task.await.unwrap();
            let all = reader.await.unwrap();
            let versions: Vec<u64> = all
                .chunks(FRAME)
                .map(|c| u64::from_be_bytes(c[..8].try_into().unwrap()))
                .collect();
            assert_eq!(versions, (1..=WRITERS * EACH).collect::<Vec<_>>());
        });
    }

    #[test]
    fn first_close_reason_wins() {
        let outbox = Outbox::new(1, 2);
        outbox.close(Close::SHUTDOWN);
        outbox.close(Close::EVICTED);
        assert_eq!(outbox.closing(), Some(Close::SHUTDOWN));
    }

    #[tokio::test]
    async fn next_batch_takes_everything_queued() {
        let outbox = std::sync::Arc::new(Outbox::new(1, 8));
        let mut batch = VecDeque::new();
        let waiter = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let wake = outbox.next_batch(&mut batch).await;
                (wake, batch.len())
            })
        };
        tokio::task::yield_now().await;
        outbox.push(Bytes::from_static(b"a"));
        outbox.push(Bytes::from_static(b"b"));
        let (wake, n) = waiter.await.unwrap();
        assert_eq!(wake, Wake::Frames);
        assert!(n >= 1);
        outbox.close(Close::NORMAL);
        let mut batch = VecDeque::new();
        assert_eq!(outbox.next_batch(&mut batch).await, Wake::Closing);
    }
}
