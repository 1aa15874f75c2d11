//! A pattern's snapshot: `snapshot.lua` reads, in one atomic step, Redis's
//! version counter and every key below a prefix that has a value. Every
//! change after that version is published after the script ran, so a node
//! subscribed to the prefix's channels before running it receives each of
//! them: the snapshot plus those changes is the pattern stream, exact and in
//! version order (see `store/cluster_patterns.rs`).

use redis::Script;

use super::catch_up::current;
use super::entry::{self, decimal};
use super::Cluster;
use crate::error::{ErrorCode, Rejection};
use crate::store::remote::PatternSnapshot;

pub fn script() -> Script {
    Script::new(include_str!("snapshot.lua"))
}

/// The ZRANGEBYLEX bounds of the keys below `prefix` (`""`: every key):
/// from `prefix.` up to, not including, `prefix/` (`/` follows `.`, and no
/// key holds it).
fn bounds(prefix: &str) -> (String, String) {
    match prefix {
        "" => ("-".to_owned(), "+".to_owned()),
        p => (format!("[{p}."), format!("({p}/")),
    }
}

/// Reads `snapshot.lua`'s answer.
fn parse(reply: &[Vec<u8>], limit: Option<usize>) -> Result<PatternSnapshot, Rejection> {
    let bad = |what: &str| Rejection::new(ErrorCode::Internal, format!("snapshot.lua: {what}"));
    if reply.first().map(Vec::as_slice) == Some(b"toolarge") {
        let size = reply.get(1).and_then(|v| decimal(v)).unwrap_or(0);
        return Err(Rejection::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "the snapshot would be over {size} bytes, over the limit of {} bytes",
                limit.unwrap_or(0)
            ),
        ));
    }
    let version = reply
        .first()
        .and_then(|v| decimal(v))
        .ok_or_else(|| bad("no version"))?;
    let mut rest = &reply[1..];
    let mut keys = Vec::new();
    while !rest.is_empty() {
        let [name, at, image, image_at, count, ..] = rest else {
            return Err(bad("a key without its version, image or changes"));
        };
        let name = String::from_utf8(name.clone()).map_err(|_| bad("a key that is not UTF-8"))?;
        let at = decimal(at).ok_or_else(|| bad("a bad key version"))?;
        let image_at = decimal(image_at).ok_or_else(|| bad("a bad image version"))?;
        let count = decimal(count).ok_or_else(|| bad("a bad change count"))? as usize;
        let later = rest
            .get(5..5 + count)
            .ok_or_else(|| bad("fewer changes than counted"))?;
        let changes = later
            .iter()
            .map(|e| entry::parse(e).map_err(|e| bad(&e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let value = current(image, image_at, &changes).map_err(|e| bad(&format!("{name}: {e}")))?;
        keys.push((name, at, value));
        rest = &rest[5 + count..];
    }
    Ok(PatternSnapshot { version, keys })
}

impl Cluster {
    /// The snapshot of every key below `prefix`; 413 when the values would
    /// take more than `limit` bytes (judged before any ACL filter).
    pub(super) async fn snapshot(
        &self,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<PatternSnapshot, Rejection> {
        let (from, to) = bounds(prefix);
        let mut con = self.conn.manager();
        let reply: Vec<Vec<u8>> = self.conn.observe(
            self.snapshot
                .key(self.names.version())
                .key(self.names.keys())
                .arg(self.names.hash(""))
                .arg(from)
                .arg(to)
                .arg(limit.unwrap_or(0))
                .arg(self.names.history(""))
                .invoke_async(&mut con)
                .await,
        )?;
        parse(&reply, limit)
    }
}

#[cfg(test)]
mod tests {
    use sodp_proto::{DeltaOp, Value};

    use super::*;

    #[test]
    fn bounds_cover_whole_segments_only() {
        assert_eq!(bounds(""), ("-".into(), "+".into()));
        assert_eq!(bounds("a.b"), ("[a.b.".into(), "(a.b/".into()));
        // "a.b.c" and "a.b.zz" sort inside; "a.bc" and "a.b" outside.
        let (from, to) = bounds("a.b");
        let inside = |k: &str| k >= &from[1..] && k < &to[1..];
        assert!(inside("a.b.c") && inside("a.b.zz") && inside("a.b.c.d"));
        assert!(!inside("a.bc") && !inside("a.b") && !inside("a.c"));
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let v = |s: &str| s.as_bytes().to_vec();
        assert!(parse(&[], None).is_err());
        assert!(parse(&[v("x")], None).is_err());
        assert!(parse(&[v("5"), v("k")], None).is_err());
        // name, key version, image, image version, count of changes after it
        let key =
            |at: &str, image: Vec<u8>, count: &str| vec![v("k"), v(at), image, v("2"), v(count)];
        let snapshot = |fields: Vec<Vec<u8>>| [vec![v("5")], fields].concat();
        assert!(parse(&snapshot(key("x", vec![0x01], "0")), None).is_err());
        assert!(parse(&snapshot(key("3", vec![0xc1], "0")), None).is_err());
        assert!(parse(&snapshot(key("3", vec![0x01], "1")), None).is_err());
        let ok = parse(&snapshot(key("3", vec![0x01], "0")), None).unwrap();
        assert_eq!(ok.version, 5);
        assert_eq!(ok.keys, vec![("k".to_owned(), 3, Value::Int(1))]);
        // The image at 2, and the change 2 → 3 after it.
        let mut change = b"2 3 - 1 ".to_vec();
        change.extend(entry::encode_ops(&[DeltaOp::update("/", Value::Int(9))]));
        let with = |entry: Vec<u8>| snapshot([key("3", vec![0x01], "1"), vec![entry]].concat());
        let ok = parse(&with(change), None).unwrap();
        assert_eq!(ok.keys, vec![("k".to_owned(), 3, Value::Int(9))]);
        // A change that does not follow the image.
        let mut gap = b"1 3 - 1 ".to_vec();
        gap.extend(entry::encode_ops(&[]));
        assert!(parse(&with(gap), None).is_err());
        let refused = parse(&[v("toolarge"), v("99")], Some(10)).unwrap_err();
        assert_eq!(refused.code, ErrorCode::PayloadTooLarge);
    }
}
