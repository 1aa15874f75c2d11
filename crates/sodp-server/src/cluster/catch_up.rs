//! Catching a key up: `fetch.lua` reads, in one atomic step, either every
//! history entry after a version (when the history reaches back to it) or
//! the key's image and the changes since it, which [`current`] applies.
//! (An image's `later` may start before the version asked about.)

use redis::Script;
use sodp_proto::codec::decode_value;
use sodp_proto::Value;

use super::entry::{self, decimal};
use crate::store::remote::{CatchUp, Change, Image};

pub fn script() -> Script {
    Script::new(include_str!("fetch.lua"))
}

fn entries(raw: &[Vec<u8>]) -> Result<Vec<Change>, String> {
    raw.iter()
        .map(|e| entry::parse(e).map_err(|e| e.to_string()))
        .collect()
}

/// Redis's image of a key (MessagePack, empty: none) at `image_version`,
/// brought up to date by the changes after it among `changes` (each must
/// follow the one before).
pub fn current(image: &[u8], image_version: u64, changes: &[Change]) -> Result<Value, String> {
    let mut value = match image {
        [] => Value::Nil,
        bytes => decode_value(bytes, entry::MAX_DEPTH).map_err(|e| format!("bad value: {e}"))?,
    };
    let mut expected = image_version;
    for change in changes.iter().filter(|c| c.version > image_version) {
        if change.prev != expected {
            return Err(format!(
                "the change before {} is missing after the image",
                change.version
            ));
        }
        for op in &change.ops {
            sodp_proto::delta::apply_in_place(&mut value, op)
                .map_err(|e| format!("a change does not apply to the image: {e}"))?;
        }
        expected = change.version;
    }
    Ok(value)
}

/// Reads `fetch.lua`'s answer. A damaged entry or value is an error (the
/// caller answers 503 rather than guess).
pub fn parse(reply: &[Vec<u8>]) -> Result<CatchUp, String> {
    match reply.first().map(Vec::as_slice) {
        Some(b"current") => Ok(CatchUp::Current),
        Some(b"changes") => entries(&reply[1..]).map(CatchUp::Changes),
        Some(b"image") if reply.len() >= 6 => {
            let version = decimal(&reply[1]).ok_or("fetch.lua: bad version")?;
            let image_version = decimal(&reply[5]).ok_or("fetch.lua: bad image version")?;
            let changes = entries(&reply[6..])?;
            let value = current(&reply[3], image_version, &changes)
                .map_err(|e| format!("fetch.lua: {e}"))?;
            Ok(CatchUp::Image(Image {
                version,
                initialized: reply[2] == b"1",
                value,
                expires_at: decimal(&reply[4]),
                later: changes,
            }))
        }
        _ => Err(format!(
            "fetch.lua: unexpected answer of {} fields",
            reply.len()
        )),
    }
}
