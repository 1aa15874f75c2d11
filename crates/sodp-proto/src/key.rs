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
    // Every allowed character is ASCII, so bytes are enough (and a non-ASCII
    // byte is reported as the character it starts).
    let mut segment_len = 0;
    for (i, b) in key.bytes().enumerate() {
        match b {
            b'.' if segment_len == 0 => return Err(KeyError::EmptySegment),
            b'.' => segment_len = 0,
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' => segment_len += 1,
            _ => {
                let c = key[i..].chars().next().unwrap_or('?');
                return Err(KeyError::BadChar(c));
            }
        }
    }
    if segment_len == 0 {
        return Err(KeyError::EmptySegment);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
