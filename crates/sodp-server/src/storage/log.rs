//! The on-disk format: files of framed, checksummed records.
//!
//! A file starts with an 8-byte magic (`SODPLOG1` for log segments,
//! `SODPCKP1` for checkpoints), then records:
//!
//! ```text
//! [len: u32 LE][crc32: u32 LE][payload: len bytes, MessagePack]
//! ```
//!
//! The CRC covers the payload. Reading stops at the first record that does
//! not check out and says where: the caller decides whether that is a torn
//! tail (the end of the newest segment, cut off and logged) or corruption
//! (anywhere else: the server refuses to start, naming file and offset).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sodp_proto::codec::{decode_value, write_value};
use sodp_proto::Value;

pub const LOG_MAGIC: &[u8; 8] = b"SODPLOG1";
pub const CHECKPOINT_MAGIC: &[u8; 8] = b"SODPCKP1";

/// Largest record accepted when reading (a key's value is at most the
/// value limit, plus its history in a checkpoint).
pub const MAX_RECORD_BYTES: usize = 1 << 30;

/// Nesting allowed when decoding a record: a value plus the record's own
/// levels. Values were checked against the server's limit when written.
const RECORD_DEPTH: usize = 1024;

/// Appends one framed record to `buf`.
pub fn frame(buf: &mut Vec<u8>, payload: &Value) {
    frame_with(buf, |b| write_value(b, payload));
}

/// Appends one framed record whose payload `encode` writes in place: the
/// header is reserved first and filled in after, so the payload needs no
/// buffer of its own (the durable engine frames every write this way).
pub fn frame_with(buf: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]);
    encode(buf);
    let payload = &buf[start + 8..];
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32fast::hash(payload).to_le_bytes();
    buf[start..start + 4].copy_from_slice(&len);
    buf[start + 4..start + 8].copy_from_slice(&crc);
}

/// Why reading a file stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the first record that does not check out.
    pub offset: u64,
    pub reason: &'static str,
}

/// Reads `path`, which must start with `magic`, handing each record to
/// `each` as it is decoded (one record in memory at a time, besides the
/// file's bytes). Returns where reading stopped early, if it did; an error
/// from `each` stops it too.
pub fn read_file<E>(
    path: &Path,
    magic: &[u8; 8],
    each: impl FnMut(usize, Value) -> Result<(), E>,
) -> io::Result<Result<Option<Damage>, E>> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    if data.len() < magic.len() || &data[..magic.len()] != magic {
        return Ok(Ok(Some(Damage {
            offset: 0,
            reason: "bad file header",
        })));
    }
    Ok(parse(&data, magic.len(), each))
}

fn parse<E>(
    data: &[u8],
    start: usize,
    mut each: impl FnMut(usize, Value) -> Result<(), E>,
) -> Result<Option<Damage>, E> {
    let damage = |offset: usize, reason| {
        Ok(Some(Damage {
            offset: offset as u64,
            reason,
        }))
    };
    let mut at = start;
    let mut index = 0;
    while at < data.len() {
        let Some(header) = data.get(at..at + 8) else {
            return damage(at, "truncated record header");
        };
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > MAX_RECORD_BYTES {
            return damage(at, "record length out of range");
        }
        let Some(payload) = data.get(at + 8..at + 8 + len) else {
            return damage(at, "truncated record");
        };
        if crc32fast::hash(payload) != crc {
            return damage(at, "checksum mismatch");
        }
        match decode_value(payload, RECORD_DEPTH) {
            Ok(v) => each(index, v)?,
            Err(_) => return damage(at, "undecodable record"),
        }
        index += 1;
        at += 8 + len;
    }
    Ok(None)
}

/// `log-00000000000000000007.sodp` and the like, sorted by number.
pub fn numbered(dir: &Path, prefix: &str) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(number) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(".sodp"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((number, path));
    }
    out.sort();
    Ok(out)
}

pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("log-{number:020}.sodp"))
}

pub fn checkpoint_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("checkpoint-{number:020}.sodp"))
}

/// Makes a file's creation or rename durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use sodp_proto::codec::encode_value;

    use super::*;

    /// The records and the damage, collected.
    fn read(data: &[u8]) -> (Vec<Value>, Option<Damage>) {
        let mut records = Vec::new();
        let damage = parse(data, 8, |_, v| {
            records.push(v);
            Ok::<(), ()>(())
        })
        .unwrap();
        (records, damage)
    }

    fn file_with(records: &[Value]) -> Vec<u8> {
        let mut buf = LOG_MAGIC.to_vec();
        for r in records {
            frame(&mut buf, r);
        }
        buf
    }

    #[test]
    fn a_record_is_its_length_its_checksum_and_its_payload() {
        let mut buf = b"before".to_vec();
        frame_with(&mut buf, |b| b.extend_from_slice(b"payload"));
        assert_eq!(&buf[..6], b"before");
        assert_eq!(buf[6..10], 7u32.to_le_bytes());
        assert_eq!(buf[10..14], crc32fast::hash(b"payload").to_le_bytes());
        assert_eq!(&buf[14..], b"payload");
        // `frame` encodes the value in place: the same bytes.
        let value = Value::from("x");
        let (mut direct, mut encoded) = (Vec::new(), Vec::new());
        frame(&mut direct, &value);
        frame_with(&mut encoded, |b| b.extend_from_slice(&encode_value(&value)));
        assert_eq!(direct, encoded);
    }

    #[test]
    fn reads_back_and_finds_damage() {
        let recs = [Value::from("a"), Value::Int(7), Value::from("ccc")];
        let data = file_with(&recs);
        let (all, damage) = read(&data);
        assert_eq!(all, recs);
        assert_eq!(damage, None);
        // A torn tail: the last record cut short.
        let (torn, damage) = read(&data[..data.len() - 2]);
        assert_eq!(torn.len(), 2);
        assert_eq!(damage.unwrap().reason, "truncated record");
        // A flipped byte in the middle record.
        let mut flipped = data.clone();
        let second = 8 + 8 + encode_value(&recs[0]).len();
        flipped[second + 8] ^= 0xff;
        let (bad, damage) = read(&flipped);
        assert_eq!(bad.len(), 1);
        let damage = damage.unwrap();
        assert_eq!(damage.offset, second as u64);
        assert_eq!(damage.reason, "checksum mismatch");
    }
}
