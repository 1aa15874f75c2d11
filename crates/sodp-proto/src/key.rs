//! Key rules: dot-separated segments of `[A-Za-z0-9_-]`, e.g. `game.player`
//! or `room.3f2a-91c0`. The published grammar has no `-`; we accept it inside
//! segments so UUIDs can be keys.

use thiserror::Error;

/// Default maximum key length in bytes.
pub const DEFAULT_MAX_KEY_LEN: usize = 256;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key is {len} bytes, over the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("key has an empty segment (leading, trailing or doubled '.')")]
    EmptySegment,
    #[error("key contains {0:?}; allowed are letters, digits, '_', '-' and '.' between segments")]
    BadChar(char),
}

/// Checks `key` against the grammar and the length limit.
pub fn validate_key(key: &str, max_len: usize) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > max_len {
        return Err(KeyError::TooLong {
            len: key.len(),
            max: max_len,
        });
    }
    // One branch-free pass (this runs on every CALL): each byte's class from
    // a table, with "a bad byte" and "a dot right after a dot (or at the
    // start)" folded into flags; the exact error is found only on failure.
    let bytes = key.as_bytes();
    let mut bad = false;
    let mut empty_segment = false;
    let mut after_dot = true; // The start counts as after a dot.
    for &b in bytes {
        let class = CLASS[b as usize];
        bad |= class == BAD;
        let dot = class == DOT;
        empty_segment |= dot & after_dot;
        after_dot = dot;
    }
    if bad {
        let i = bytes
            .iter()
            .position(|b| CLASS[*b as usize] == BAD)
            .unwrap_or(0);
        let c = key[i..].chars().next().unwrap_or('?');
        return Err(KeyError::BadChar(c));
    }
    if empty_segment || after_dot {
        return Err(KeyError::EmptySegment);
    }
    Ok(())
}

const BAD: u8 = 0;
const SEGMENT: u8 = 1;
const DOT: u8 = 2;

/// The class of every byte: a segment character (`[A-Za-z0-9_-]`), the
/// separator, or not allowed (every non-ASCII byte among them).
const CLASS: [u8; 256] = {
    let mut table = [BAD; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' {
            table[b] = SEGMENT;
        }
        b += 1;
    }
    table[b'.' as usize] = DOT;
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The grammar stated plainly: non-empty segments of allowed characters.
    fn reference(key: &str) -> bool {
        !key.is_empty()
            && key.split('.').all(|seg| {
                !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
    }

    #[test]
    fn agrees_with_the_grammar_on_every_short_string() {
        let alphabet = ['a', 'Z', '9', '_', '-', '.', ' ', '/', 'é'];
        let mut keys = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = keys
                .iter()
                .flat_map(|k| alphabet.iter().map(move |c| format!("{k}{c}")))
                .collect();
            for key in &longer {
                assert_eq!(validate_key(key, 256).is_ok(), reference(key), "{key:?}");
            }
            keys = longer;
        }
    }

    #[test]
    fn accepts_and_rejects() {
        for ok in ["game", "game.player", "a_b.C9", "room.3f2a-91c0"] {
            assert_eq!(validate_key(ok, 256), Ok(()), "{ok}");
        }
        assert_eq!(validate_key("", 256), Err(KeyError::Empty));
        assert_eq!(validate_key("a..b", 256), Err(KeyError::EmptySegment));
        assert_eq!(validate_key(".a", 256), Err(KeyError::EmptySegment));
        assert_eq!(validate_key("a b", 256), Err(KeyError::BadChar(' ')));
        assert_eq!(validate_key("a/b", 256), Err(KeyError::BadChar('/')));
        assert_eq!(validate_key("a.é", 256), Err(KeyError::BadChar('é')));
        assert_eq!(validate_key("a.", 256), Err(KeyError::EmptySegment));
        assert_eq!(
            validate_key("abcd", 3),
            Err(KeyError::TooLong { len: 4, max: 3 })
        );
    }
}
