//! Start-up: rebuilding the state from the data directory.
//!
//! The newest complete checkpoint is loaded, then every log segment from its
//! number on is replayed in order. A change already in the checkpoint (its
//! version is not above the key's) is skipped; presence binds and releases
//! are replayed as set operations (the last one for a path wins), which gives
//! the paths still bound when the previous run ended.
//!
//! Damage: a record that does not check out at the end of the newest segment
//! is a torn write — the file is cut there and the cut logged. Anywhere else
//! it is corruption: recovery stops with the file and offset, unless the
//! operator asked to salvage (`--recover`), which keeps what reads and says
//! what was skipped.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use sodp_proto::{ApplyError, DeltaOp};

use super::log::{self, Damage, CHECKPOINT_MAGIC, LOG_MAGIC};
use super::record::{CheckpointRecord, KeyChange, KeyImage, LogRecord};
use crate::idempotency::Remembered;

/// Why the state could not be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("data directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt at byte offset {offset}: {reason} (start with --recover to salvage what can be read)")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "{path} is missing: the log has a gap (start with --recover to salvage what can be read)"
    )]
    Missing { path: PathBuf },
}

/// Where recovered state goes: the store, key by key, as it is read — no
/// second copy of the state is built.
pub trait Sink {
    /// A key as a checkpoint holds it.
    fn image(&mut self, image: KeyImage);
    /// The version `key` holds so far (0: none), to skip what a checkpoint
    /// already contains.
    fn version(&mut self, key: &str) -> u64;
    /// Applies a logged change to `key` (and records it in the key's RESUME
    /// window). An error means the record does not fit the value.
    /// `expires`: the deadline the change set (0: removed), if any.
    fn change(
        &mut self,
        version: u64,
        key: &str,
        ops: Vec<DeltaOp>,
        expires: Option<u64>,
    ) -> Result<(), ApplyError>;
    /// An idempotent call remembered by the previous run.
    fn remembered(&mut self, remembered: Remembered);
}

/// What recovery learnt besides the keys themselves.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Keys loaded from the checkpoint, changes replayed from the log.
    pub images: usize,
    pub changes: usize,
    /// Presence paths bound by sessions of the previous run.
    pub binds: HashSet<(String, String)>,
    /// The highest version seen or reserved: the new run starts above it.
    pub version_floor: u64,
    /// The number the next log segment gets.
    pub next_segment: u64,
    /// Log bytes replayed (a checkpoint is due when this is large).
    pub replayed_bytes: u64,
    /// Log segments replayed (each start adds one: many restarts without a
    /// checkpoint make a checkpoint due too).
    pub replayed_segments: usize,
    /// What was cut or skipped, for the start-up log.
    pub notes: Vec<String>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RecoveryError + '_ {
    move |source| RecoveryError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads the data directory `dir` (created if missing) into `sink`.
pub fn recover(dir: &Path, salvage: bool, sink: &mut dyn Sink) -> Result<Recovered, RecoveryError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut out = Recovered::default();
    let checkpoints = log::numbered(dir, "checkpoint-").map_err(io_error(dir))?;
    let mut start = 0;
    if let Some((number, path)) = checkpoints.last() {
        load_checkpoint(path, &mut out, salvage, sink)?;
        start = *number;
    }
    let segments: Vec<_> = log::numbered(dir, "log-")
        .map_err(io_error(dir))?
        .into_iter()
        .filter(|(n, _)| *n >= start)
        .collect();
    let mut expected = segments.first().map_or(start, |(n, _)| *n);
    if !checkpoints.is_empty() && expected != start && !salvage {
        return Err(RecoveryError::Missing {
            path: log::segment_path(dir, start),
        });
    }
    for (i, (number, path)) in segments.iter().enumerate() {
        if *number != expected {
            if !salvage {
                return Err(RecoveryError::Missing {
                    path: log::segment_path(dir, expected),
                });
            }
            out.notes.push(format!(
                "salvage: segments {expected}..{number} are missing"
            ));
        }
        expected = number + 1;
        let newest = i + 1 == segments.len();
        let bytes = std::fs::metadata(path).map_err(io_error(path))?.len();
        out.replayed_bytes += bytes;
        out.replayed_segments += 1;
        let damage = log::read_file(path, LOG_MAGIC, |i, record| {
            replay(path, i, &record, salvage, sink, &mut out)
        })
        .map_err(io_error(path))??;
        handle_damage(path, damage, newest, salvage, &mut out)?;
    }
    out.next_segment = expected.max(start);
    Ok(out)
}

fn load_checkpoint(
    path: &Path,
    out: &mut Recovered,
    salvage: bool,
    sink: &mut dyn Sink,
) -> Result<(), RecoveryError> {
    let mut complete = false;
    let damage = log::read_file(path, CHECKPOINT_MAGIC, |i, record| {
        match CheckpointRecord::from_value(&record) {
            Some(CheckpointRecord::Key(k)) => {
                for p in &k.binds {
                    out.binds.insert((k.key.clone(), p.clone()));
                }
                out.version_floor = out.version_floor.max(k.version);
                out.images += 1;
                sink.image(k);
            }
            Some(CheckpointRecord::Remembered(r)) => sink.remembered(r),
            Some(CheckpointRecord::End { ceiling, .. }) => {
                out.version_floor = out.version_floor.max(ceiling);
                complete = true;
            }
            None if salvage => out.notes.push(format!(
                "salvage: {}: record {i} is not a checkpoint record; skipped",
                path.display()
            )),
            None => {
                return Err(RecoveryError::Corrupt {
                    path: path.to_owned(),
                    offset: 0,
                    reason: format!("record {i} is not a checkpoint record"),
                })
            }
        }
        Ok(())
    })
    .map_err(io_error(path))??;
    let problem = match (damage, complete) {
        (Some(Damage { offset, reason }), _) => Some((offset, reason.to_owned())),
        (None, false) => Some((
            std::fs::metadata(path).map_or(0, |m| m.len()),
            "no end record".to_owned(),
        )),
        (None, true) => None,
    };
    match problem {
        None => Ok(()),
        Some((offset, reason)) if salvage => {
            out.notes.push(format!(
                "salvage: {}: {reason} at byte {offset}; kept what was read",
                path.display()
            ));
            Ok(())
        }
        Some((offset, reason)) => Err(RecoveryError::Corrupt {
            path: path.to_owned(),
            offset,
            reason,
        }),
    }
}

/// One key's change of a log record at `version`, unless the checkpoint
/// already has it.
fn apply(
    path: &Path,
    i: usize,
    version: u64,
    change: KeyChange,
    salvage: bool,
    sink: &mut dyn Sink,
    out: &mut Recovered,
) -> Result<(), RecoveryError> {
    out.version_floor = out.version_floor.max(version);
    if version <= sink.version(&change.key) {
        return Ok(()); // Already in the checkpoint.
    }
    match sink.change(version, &change.key, change.ops, change.expires) {
        Ok(()) => out.changes += 1,
        Err(e) if salvage => out.notes.push(format!(
            "salvage: {}: record {i} does not apply ({e}); skipped",
            path.display()
        )),
        Err(e) => {
            return Err(RecoveryError::Corrupt {
                path: path.to_owned(),
                offset: 0,
                reason: format!("record {i}: does not apply: {e}"),
            })
        }
    }
    Ok(())
}

/// One log record.
fn replay(
    path: &Path,
    i: usize,
    record: &sodp_proto::Value,
    salvage: bool,
    sink: &mut dyn Sink,
    out: &mut Recovered,
) -> Result<(), RecoveryError> {
    let corrupt = |reason: String| RecoveryError::Corrupt {
        path: path.to_owned(),
        offset: 0,
        reason: format!("record {i}: {reason}"),
    };
    match LogRecord::from_value(record) {
        Some(LogRecord::Change {
            version,
            key,
            ops,
            expires,
        }) => {
            let change = KeyChange { key, ops, expires };
            apply(path, i, version, change, salvage, sink, out)?;
        }
        Some(LogRecord::Commit {
            version,
            changes,
            remembered,
        }) => {
            for change in changes {
                apply(path, i, version, change, salvage, sink, out)?;
            }
            if let Some(tag) = remembered {
                sink.remembered(Remembered { tag, version });
            }
        }
        Some(LogRecord::Bind { key, path: p }) => {
            out.binds.insert((key, p));
        }
        Some(LogRecord::Unbind { key, path: p }) => {
            out.binds.remove(&(key, p));
        }
        Some(LogRecord::Ceiling(v)) => out.version_floor = out.version_floor.max(v),
        None if salvage => out.notes.push(format!(
            "salvage: {}: record {i} is not a log record; skipped",
            path.display()
        )),
        None => return Err(corrupt("not a log record".into())),
    }
    Ok(())
}

/// Where a segment stopped reading early: a torn tail of the newest one is
/// cut; anything else is corruption (or skipped, when salvaging).
fn handle_damage(
    path: &Path,
    damage: Option<Damage>,
    newest: bool,
    salvage: bool,
    out: &mut Recovered,
) -> Result<(), RecoveryError> {
    let Some(damage) = damage else {
        return Ok(());
    };
    if newest {
        // A torn tail: the write that was in progress when the process
        // died. Nothing after it was acknowledged; cut it off.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_error(path))?;
        file.set_len(damage.offset).map_err(io_error(path))?;
        file.sync_all().map_err(io_error(path))?;
        out.notes.push(format!(
            "{}: cut a torn tail at byte {} ({})",
            path.display(),
            damage.offset,
            damage.reason
        ));
        return Ok(());
    }
    if salvage {
        out.notes.push(format!(
            "salvage: {}: {} at byte {}; the rest of this file is skipped",
            path.display(),
            damage.reason,
            damage.offset
        ));
        return Ok(());
    }
    Err(RecoveryError::Corrupt {
        path: path.to_owned(),
        offset: damage.offset,
        reason: damage.reason.into(),
    })
}
