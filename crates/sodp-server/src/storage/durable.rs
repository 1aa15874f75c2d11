//! The durable engine: an append-only log in a data directory, written by
//! one committer thread, with checkpoints that bound the disk and the
//! start-up time.
//!
//! # Group commit
//! Writers never touch the disk. [`Storage::append_change`] frames the record
//! into a shared buffer (under a mutex, in commit order) and wakes the
//! committer. The committer takes everything pending, writes it with one
//! `write`, syncs once (`fsync = always`), then delivers every frame that
//! waited for those records — DELTAs, RESULTs, STATE_INITs — in order. While
//! it syncs, new writes gather for the next round: concurrent writers share
//! one sync, the pattern of Redis's `appendfsync always`. The committer
//! writes those frames to their sockets itself (an `outbox::FlushScope`
//! around the round's deliveries), so a durable write's RESULT costs no
//! wake-up of its session task.
//!
//! With `batch` and `never` frames are delivered at once and the committer
//! is not woken per write: it writes what gathered every 10 ms (sooner when
//! 1 MiB is pending); `batch` syncs at most every interval, `never` leaves
//! that to the OS. What a crash can take back then is in docs/PROTOCOL.md.
//!
//! # Failure
//! A failed write or sync marks the engine failed: the frames waiting for it
//! are dropped, their writers get RESULT 500, and every later write is
//! refused with 500 until the server is restarted (a failed fsync cannot be
//! retried safely: the kernel may have dropped the dirty pages).
//!
//! # Checkpoints
//! Once the log since the last checkpoint passes `checkpoint_bytes`, the
//! committer starts a new segment and takes an image of every key (values are
//! shared, so this is cheap); a background thread writes the images to
//! `checkpoint-N.sodp.tmp`, syncs, renames it into place and deletes the
//! segments and checkpoints before N. Recovery loads checkpoint N and replays
//! segments N and later.
//!
//! # Versions
//! The log reserves versions ahead (`Ceiling` records, a million at a time,
//! renewed half way), so a restarted server starts above every version the
//! previous run could have handed out, even one whose write was never
//! synced.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sodp_proto::codec::{write_array_len, write_int, write_str, write_uint};
use tracing::{error, info, warn};

use super::log::{self, CHECKPOINT_MAGIC, LOG_MAGIC};
use super::record;
use super::record::{CheckpointRecord, KeyImage, LogRecord};
use super::{Change, Delivery, Storage, Ticket};
use crate::error::{ErrorCode, Rejection};
use crate::idempotency::{Remembered, Tag};
use crate::outbox::FlushScope;

/// Versions reserved by one `Ceiling` record.
const CEILING_STEP: u64 = 1_000_000;

/// With `batch` and `never` nothing waits for the committer, so it is not
/// woken per write: it writes what gathered every `FLUSH_EVERY`, or as soon
/// as `FLUSH_BYTES` are pending (bounding the buffer).
const FLUSH_EVERY: Duration = Duration::from_millis(10);
const FLUSH_BYTES: usize = 1 << 20;

/// When versions are synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before the RESULT and the DELTAs of a write leave.
    Always,
    /// At most this long after the write; frames leave at once.
    Batch(Duration),
    /// When the OS writes its cache back.
    Never,
}

/// How the durable engine runs.
#[derive(Clone)]
pub struct DurableOptions {
    pub dir: PathBuf,
    pub fsync: Fsync,
    /// Log bytes after which a checkpoint is written.
    pub checkpoint_bytes: u64,
    /// Pending (unwritten) bytes beyond which writes are refused with 503.
    pub max_pending_bytes: usize,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Takes an image of every key, for a checkpoint (the store).
pub trait SnapshotSource: Send + Sync {
    fn images(&self) -> Vec<KeyImage>;
    /// The idempotent calls still remembered (taken after the images: a
    /// call whose commit is in the replaced segment is remembered by then,
    /// since its session holds its table while it runs).
    fn remembered(&self) -> Vec<Remembered> {
        Vec::new()
    }
}

/// What writers and the committer share.
struct Pending {
    /// Framed records not yet written.
    buf: Vec<u8>,
    /// Frames waiting for their ticket to be durable (`always` only).
    deliveries: Vec<(Ticket, Delivery)>,
    /// The last ticket handed out.
    last_ticket: Ticket,
    /// Every ticket up to this one is durable (`always`) or written.
    durable: Ticket,
    /// Versions up to this one are reserved on disk.
    ceiling: u64,
    /// Set when the engine can no longer make anything durable.
    failed: Option<String>,
    stop: bool,
    committer_waiting: bool,
    /// A checkpoint was asked for (after a start that replayed many
    /// segments), whatever the log size.
    checkpoint_requested: bool,
}

struct Inner {
    options: DurableOptions,
    pending: Mutex<Pending>,
    /// Wakes the committer.
    work: Condvar,
    /// Wakes whoever waits for `durable` to advance (`flush`).
    progress: Condvar,
    source: OnceLock<Weak<dyn SnapshotSource>>,
}

/// The durable engine (see the module docs).
pub struct Durable {
    inner: Arc<Inner>,
    committer: Mutex<Option<JoinHandle<()>>>,
    /// `DIR/LOCK`, held (an exclusive `flock`) while this process runs: a
    /// second server on the same directory would interleave two logs.
    _lock: File,
}

/// Takes the data directory's lock, creating the directory if needed.
pub fn lock_dir(dir: &std::path::Path) -> std::io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(std::io::Error::other(format!(
            "{} is in use by another sodp-server",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Durable {
    /// An engine that does not write yet: recovery runs first (it must see
    /// the newest segment of the previous run as the newest), then
    /// [`Durable::start`].
    pub fn new(options: DurableOptions) -> std::io::Result<Durable> {
        let lock = lock_dir(&options.dir)?;
        Ok(Durable {
            _lock: lock,
            inner: Arc::new(Inner {
                options,
                pending: Mutex::new(Pending {
                    buf: Vec::new(),
                    deliveries: Vec::new(),
                    last_ticket: 0,
                    durable: 0,
                    ceiling: 0,
                    failed: None,
                    stop: false,
                    committer_waiting: false,
                    checkpoint_requested: false,
                }),
                work: Condvar::new(),
                progress: Condvar::new(),
                source: OnceLock::new(),
            }),
            committer: Mutex::new(None),
        })
    }

    /// Starts writing after recovery: a fresh segment `segment` for this
    /// run's records, starting with a reservation of the versions above
    /// `version_floor` (synced before any is handed out).
    pub fn start(
        &self,
        segment: u64,
        version_floor: u64,
        replayed_bytes: u64,
    ) -> std::io::Result<()> {
        let options = &self.inner.options;
        let path = log::segment_path(&options.dir, segment);
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        let ceiling = version_floor.saturating_add(CEILING_STEP);
        let mut head = LOG_MAGIC.to_vec();
        log::frame(&mut head, &LogRecord::Ceiling(ceiling).to_value());
        file.write_all(&head)?;
        file.sync_all()?;
        log::sync_dir(&options.dir)?;
        lock(&self.inner.pending).ceiling = ceiling;
        let committer = Committer {
            inner: self.inner.clone(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            file,
            segment,
            since_checkpoint: replayed_bytes,
            checkpointing: None,
            spare_buf: Vec::new(),
            spare_deliveries: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name("sodp-committer".into())
            .spawn(move || committer.run())?;
        *lock(&self.committer) = Some(handle);
        Ok(())
    }

    /// Asks for a checkpoint now (a start that replayed many segments:
    /// restarts without writes would otherwise pile segments up).
    pub fn request_checkpoint(&self) {
        let mut p = lock(&self.inner.pending);
        p.checkpoint_requested = true;
        self.inner.work.notify_one();
    }

    /// Where checkpoints take their images from (set once the store exists).
    pub fn attach(&self, source: Weak<dyn SnapshotSource>) {
        let _ = self.inner.source.set(source);
    }

    /// The first version this run may hand out.
    pub fn first_version(&self) -> u64 {
        lock(&self.inner.pending).ceiling - CEILING_STEP + 1
    }

    fn append(&self, version: Option<u64>, encode: impl FnOnce(&mut Vec<u8>)) -> Ticket {
        let mut p = lock(&self.inner.pending);
        if let Some(v) = version {
            if v.saturating_add(CEILING_STEP / 2) > p.ceiling {
                p.ceiling = v.saturating_add(CEILING_STEP);
                let record = LogRecord::Ceiling(p.ceiling).to_value();
                log::frame(&mut p.buf, &record);
            }
        }
        log::frame_with(&mut p.buf, encode);
        p.last_ticket += 1;
        let ticket = p.last_ticket;
        // `committer_waiting` is set only while the committer waits with no
        // timeout; with `batch`/`never` a timed wait wakes by itself, unless
        // the buffer is full.
        let full = p.buf.len() >= FLUSH_BYTES;
        if p.committer_waiting || full {
            p.committer_waiting = false;
            self.inner.work.notify_one();
        }
        ticket
    }
}

/// `key, [ops...]`, then the deadline only when the change moved it.
fn write_change_body(buf: &mut Vec<u8>, change: &Change<'_>) {
    write_str(buf, change.key);
    write_array_len(buf, change.ops.len());
    for op in change.ops {
        record::write_op(buf, op);
    }
    if let Some(at) = change.expires {
        write_uint(buf, at);
    }
}

impl Durable {
    /// `[kind, key, path]`: a bind (2) or an unbind (3), see `record`.
    fn append_presence(&self, kind: i64, key: &str, path: &str) -> Ticket {
        self.append(None, |buf| {
            write_array_len(buf, 3);
            write_int(buf, kind);
            write_str(buf, key);
            write_str(buf, path);
        })
    }
}

/// Creates log segment `number` holding only a reservation of versions up
/// to `ceiling`, synced with its directory entry.
fn open_segment(dir: &std::path::Path, number: u64, ceiling: u64) -> std::io::Result<File> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(log::segment_path(dir, number))?;
    let mut head = LOG_MAGIC.to_vec();
    log::frame(&mut head, &LogRecord::Ceiling(ceiling).to_value());
    file.write_all(&head)?;
    file.sync_all()?;
    log::sync_dir(dir)?;
    Ok(file)
}

impl Storage for Durable {
    fn check_writable(&self) -> Result<(), Rejection> {
        let p = lock(&self.inner.pending);
        if let Some(why) = &p.failed {
            return Err(Rejection::new(
                ErrorCode::Internal,
                format!("storage failed ({why}); writes are refused until the server restarts"),
            ));
        }
        if p.buf.len() > self.inner.options.max_pending_bytes {
            return Err(Rejection::new(
                ErrorCode::Unavailable,
                "storage is behind: too many writes waiting for the disk; retry shortly",
            ));
        }
        Ok(())
    }

    fn append_commit(
        &self,
        version: u64,
        changes: &[Change<'_>],
        remembered: Option<&Tag>,
    ) -> Ticket {
        self.append(Some(version), |buf| match (changes, remembered) {
            // The common case keeps the compact one-change record.
            ([change], None) => {
                write_array_len(buf, if change.expires.is_some() { 5 } else { 4 });
                write_int(buf, record::CHANGE);
                write_uint(buf, version);
                write_change_body(buf, change);
            }
            _ => {
                write_array_len(buf, 4);
                write_int(buf, record::COMMIT);
                write_uint(buf, version);
                write_array_len(buf, changes.len());
                for change in changes {
                    write_array_len(buf, if change.expires.is_some() { 3 } else { 2 });
                    write_change_body(buf, change);
                }
                match remembered {
                    None => buf.push(0xc0),
                    Some(tag) => record::write_tag(buf, tag),
                }
            }
        })
    }

    fn append_bind(&self, key: &str, path: &str) -> Ticket {
        self.append_presence(2, key, path)
    }

    fn append_unbind(&self, key: &str, path: &str) -> Ticket {
        self.append_presence(3, key, path)
    }

    fn deliver(&self, ticket: Ticket, delivery: Delivery) {
        if self.inner.options.fsync != Fsync::Always {
            return delivery.deliver();
        }
        let mut p = lock(&self.inner.pending);
        if let Some(why) = p.failed.clone() {
            drop(p);
            return delivery.fail(&why);
        }
        if ticket <= p.durable {
            drop(p);
            return delivery.deliver();
        }
        p.deliveries.push((ticket, delivery));
        if p.committer_waiting {
            p.committer_waiting = false;
            self.inner.work.notify_one();
        }
    }

    fn is_visible(&self, ticket: Ticket) -> bool {
        self.inner.options.fsync != Fsync::Always || ticket <= lock(&self.inner.pending).durable
    }

    fn describe(&self) -> String {
        let fsync = match self.inner.options.fsync {
            Fsync::Always => "always".to_owned(),
            Fsync::Batch(d) => format!("batch ({} ms)", d.as_millis()),
            Fsync::Never => "never".to_owned(),
        };
        format!("{} (fsync {fsync})", self.inner.options.dir.display())
    }

    /// Writes and syncs everything pending, then stops the committer.
    fn flush(&self) {
        {
            let mut p = lock(&self.inner.pending);
            p.stop = true;
            self.inner.work.notify_one();
        }
        if let Some(handle) = lock(&self.committer).take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The committer thread's own state.
struct Committer {
    inner: Arc<Inner>,
    /// The server's runtime, entered while delivering so a large fanout's
    /// sends go to its tasks (see [`FlushScope`]); none when the engine was
    /// started outside one (tests), and then the committer writes them all.
    runtime: Option<tokio::runtime::Handle>,
    file: File,
    segment: u64,
    since_checkpoint: u64,
    checkpointing: Option<JoinHandle<()>>,
    /// Last round's buffers, emptied (see [`SPARE_BYTES`]).
    spare_buf: Vec<u8>,
    spare_deliveries: Vec<(Ticket, Delivery)>,
}

/// Largest emptied buffers the committer keeps for the next round; after a
/// burst larger ones are freed rather than held.
const SPARE_BYTES: usize = 1 << 20;
const SPARE_DELIVERIES: usize = 4096;

impl Committer {
    fn run(mut self) {
        let fsync = self.inner.options.fsync;
        let mut last_sync = Instant::now();
        let mut unsynced = false;
        loop {
            let (mut buf, mut deliveries, upto, stop, checkpoint_requested) = {
                let mut p = lock(&self.inner.pending);
                loop {
                    let idle = p.buf.is_empty() && p.deliveries.is_empty();
                    let due = fsync == Fsync::Always || p.buf.len() >= FLUSH_BYTES;
                    if p.stop || p.checkpoint_requested || (!idle && due) {
                        break;
                    }
                    // `batch`/`never`: wake every FLUSH_EVERY (or when the
                    // buffer fills); `batch` also when its sync is due.
                    let wait = match (fsync, idle) {
                        (Fsync::Always, _) => None,
                        (Fsync::Batch(every), true) if unsynced => {
                            Some(every.saturating_sub(last_sync.elapsed()))
                        }
                        (_, true) => None,
                        (_, false) => Some(FLUSH_EVERY),
                    };
                    // Only an untimed wait needs a writer's wake-up.
                    p.committer_waiting = wait.is_none();
                    match wait {
                        None => p = self.inner.work.wait(p).unwrap_or_else(|e| e.into_inner()),
                        Some(wait) => {
                            let (guard, timeout) = self
                                .inner
                                .work
                                .wait_timeout(p, wait)
                                .unwrap_or_else(|e| e.into_inner());
                            p = guard;
                            if timeout.timed_out() {
                                break;
                            }
                        }
                    }
                }
                p.committer_waiting = false;
                // The emptied buffers of the last round take their place,
                // so appends do not grow a fresh one every round.
                (
                    std::mem::replace(&mut p.buf, std::mem::take(&mut self.spare_buf)),
                    std::mem::replace(
                        &mut p.deliveries,
                        std::mem::take(&mut self.spare_deliveries),
                    ),
                    p.last_ticket,
                    p.stop,
                    std::mem::take(&mut p.checkpoint_requested),
                )
            };
            let mut result = Ok(());
            if !buf.is_empty() {
                result = self.file.write_all(&buf);
                self.since_checkpoint += buf.len() as u64;
                unsynced = true;
            }
            let sync_now = match fsync {
                Fsync::Always => unsynced,
                Fsync::Batch(every) => unsynced && (stop || last_sync.elapsed() >= every),
                Fsync::Never => stop && unsynced,
            };
            if result.is_ok() && sync_now {
                let started = Instant::now();
                result = self.file.sync_data();
                last_sync = Instant::now();
                unsynced = false;
                self.inner
                    .options
                    .metrics
                    .storage_sync_seconds
                    .observe((last_sync - started).as_secs_f64());
            }
            if let Err(e) = result {
                self.fail(
                    format!(
                        "{}: {e}",
                        log::segment_path(&self.inner.options.dir, self.segment).display()
                    ),
                    deliveries,
                );
                if stop {
                    return;
                }
                continue;
            }
            self.deliver(&mut deliveries);
            // Kept for the next round unless a burst made them large.
            buf.clear();
            if buf.capacity() <= SPARE_BYTES {
                self.spare_buf = buf;
            }
            if deliveries.capacity() <= SPARE_DELIVERIES {
                self.spare_deliveries = deliveries;
            }
            {
                let mut p = lock(&self.inner.pending);
                p.durable = p.durable.max(upto);
                self.inner.progress.notify_all();
            }
            if stop {
                if let Some(h) = self.checkpointing.take() {
                    let _ = h.join();
                }
                return;
            }
            if checkpoint_requested || self.since_checkpoint >= self.inner.options.checkpoint_bytes
            {
                self.checkpoint();
            }
        }
    }

    /// Hands out the frames that waited for the sync, writing them to their
    /// sockets from this thread (direct delivery, as a session task does
    /// for its own burst): the RESULT of a durable write leaves as soon as
    /// it is synced, without waking the writer's session task for it — on
    /// this VM a wake-up costs more than the send.
    fn deliver(&self, deliveries: &mut Vec<(Ticket, Delivery)>) {
        let _runtime = self.runtime.as_ref().map(|r| r.enter());
        let _flush = FlushScope::open(&self.inner.options.metrics.bytes_out, None);
        for (_, delivery) in deliveries.drain(..) {
            delivery.deliver();
        }
    }

    fn fail(&mut self, why: String, deliveries: Vec<(Ticket, Delivery)>) {
        error!(error = %why, "storage failed: writes are refused until restart");
        let mut p = lock(&self.inner.pending);
        p.failed.get_or_insert(why.clone());
        p.buf.clear();
        let mut waiting = std::mem::take(&mut p.deliveries);
        drop(p);
        waiting.splice(0..0, deliveries);
        for (_, delivery) in waiting {
            delivery.fail(&why);
        }
    }

    /// Starts segment N+1, takes the images and has them written as
    /// checkpoint N+1 in the background (one at a time).
    fn checkpoint(&mut self) {
        if self
            .checkpointing
            .as_ref()
            .is_some_and(|h| !h.is_finished())
        {
            return;
        }
        let Some(source) = self.inner.source.get().and_then(Weak::upgrade) else {
            return;
        };
        let dir = self.inner.options.dir.clone();
        let next = self.segment + 1;
        let ceiling = lock(&self.inner.pending).ceiling;
        let file = match open_segment(&dir, next, ceiling) {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "could not start a new log segment; checkpoint postponed");
                self.since_checkpoint = 0;
                return;
            }
        };
        // Everything appended from here on goes to the new segment; the
        // old one is complete (and synced, or will be with `never`).
        let _ = self.file.sync_data();
        self.file = file;
        self.segment = next;
        self.since_checkpoint = 0;
        let images = source.images();
        let remembered = source.remembered();
        let ceiling = lock(&self.inner.pending).ceiling;
        self.checkpointing = std::thread::Builder::new()
            .name("sodp-checkpoint".into())
            .spawn(
                move || match write_checkpoint(&dir, next, images, remembered, ceiling) {
                    Ok(n) => info!(checkpoint = next, keys = n, "checkpoint written"),
                    Err(e) => warn!(error = %e, "checkpoint failed; the log is kept"),
                },
            )
            .ok();
    }
}

/// Writes checkpoint `number`, then deletes what it replaces.
fn write_checkpoint(
    dir: &std::path::Path,
    number: u64,
    images: Vec<KeyImage>,
    remembered: Vec<Remembered>,
    ceiling: u64,
) -> std::io::Result<usize> {
    let path = log::checkpoint_path(dir, number);
    let tmp = path.with_extension("sodp.tmp");
    let mut file = File::create(&tmp)?;
    let mut buf = CHECKPOINT_MAGIC.to_vec();
    let n = images.len();
    for image in images {
        log::frame(&mut buf, &CheckpointRecord::Key(image).to_value());
        if buf.len() > 1 << 20 {
            file.write_all(&buf)?;
            buf.clear();
        }
    }
    for r in remembered {
        log::frame(&mut buf, &CheckpointRecord::Remembered(r).to_value());
        if buf.len() > 1 << 20 {
            file.write_all(&buf)?;
            buf.clear();
        }
    }
    log::frame(
        &mut buf,
        &CheckpointRecord::End {
            ceiling,
            keys: n as u64,
        }
        .to_value(),
    );
    file.write_all(&buf)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    log::sync_dir(dir)?;
    for (old, p) in log::numbered(dir, "log-")? {
        if old < number {
            std::fs::remove_file(p)?;
        }
    }
    for (old, p) in log::numbered(dir, "checkpoint-")? {
        if old < number {
            std::fs::remove_file(p)?;
        }
    }
    log::sync_dir(dir)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::outbox::tests::{attached, count, received, registered, two_workers};

    /// A fresh data directory under the system's temporary directory.
    fn data_dir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("sodp-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_synced_frame_is_sent_by_the_committer_without_waking_the_session_task() {
        let dir = data_dir("committer-sends");
        two_workers().block_on(async {
            let engine = Durable::new(DurableOptions {
                dir: dir.clone(),
                fsync: Fsync::Always,
                checkpoint_bytes: u64::MAX,
                max_pending_bytes: 1 << 20,
                metrics: Arc::new(crate::metrics::Metrics::default()),
            })
            .unwrap();
            engine.start(1, 0, 0).unwrap();
            let (_server, mut client, outbox) = attached(8).await;
            let (wakes, _waker) = registered(&outbox);
            let ticket = engine.append_bind("k", "/p");
            engine.deliver(
                ticket,
                Delivery::Frame(outbox.clone(), Bytes::from_static(b"synced")),
            );
            // Only the committer can have written it: the session task is a
            // counting waker that never runs.
            assert_eq!(received(&mut client).await, b"synced");
            assert!(engine.is_visible(ticket));
            assert_eq!(count(&wakes), 0, "the session task was woken");
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
