//! Catching a key up: `fetch.lua` reads, in one atomic step, either every
//! history entry after a version (when the history reaches back to it) or
//! the key's current image.

use redis::Script;
use sodp_proto::codec::decode_value;
use sodp_proto::Value;

use super::entry::{self, decimal};
use crate::store::remote::{CatchUp, Image};

pub fn script() -> Script {
    Script::new(include_str!("fetch.lua"))
}

fn entries(raw: &[Vec<u8>]) -> Result<Vec<crate::store::remote::Change>, String> {
    raw.iter()
        .map(|e| entry::parse(e).map_err(|e| e.to_string()))
        .collect()
}

/// Reads `fetch.lua`'s answer. A damaged entry or value is an error (the
/// caller answers 503 rather than guess).
pub fn parse(reply: &[Vec<u8>]) -> Result<CatchUp, String> {
    match reply.first().map(Vec::as_slice) {
        Some(b"current") => Ok(CatchUp::Current),
        Some(b"changes") => entries(&reply[1..]).map(CatchUp::Changes),
        Some(b"image") if reply.len() >= 5 => {
            let version = decimal(&reply[1]).ok_or("fetch.lua: bad version")?;
            let value = match reply[3].as_slice() {
                [] => Value::Nil,
                bytes => decode_value(bytes, entry::MAX_DEPTH)
                    .map_err(|e| format!("fetch.lua: bad value: {e}"))?,
            };
            Ok(CatchUp::Image(Image {
                version,
                initialized: reply[2] == b"1",
                value,
                expires_at: decimal(&reply[4]),
                later: entries(&reply[5..])?,
            }))
        }
        _ => Err(format!(
            "fetch.lua: unexpected answer of {} fields",
            reply.len()
        )),
    }
}
