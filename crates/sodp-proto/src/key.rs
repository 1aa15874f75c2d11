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
    let bytes = key.as_bytes();
    if !well_formed(bytes) {
        if let Some(i) = bytes.iter().position(|&b| !allowed(b)) {
            let c = key[i..].chars().next().unwrap_or('?');
            return Err(KeyError::BadChar(c));
        }
        return Err(KeyError::EmptySegment);
    }
    Ok(())
}

/// Every byte allowed, no dot right after a dot, no dot at either end. This
/// runs on every CALL: a key is checked in windows of 17 bytes (16 bytes and
/// the one after, for the pair test) without early exits or table lookups,
/// which the compiler turns into SIMD compares; the last window overlaps the
/// one before it instead of leaving a tail for a byte-by-byte loop. Which
/// rule failed is found only on failure.
fn well_formed(bytes: &[u8]) -> bool {
    const LANE: usize = 16;
    let n = bytes.len();
    let ends = n > 0 && bytes[0] != b'.' && bytes[n - 1] != b'.';
    if n <= LANE {
        let allowed_all = bytes.iter().fold(true, |ok, &b| ok & allowed(b));
        let pairs = bytes
            .iter()
            .zip(&bytes[1.min(n)..])
            .fold(false, |found, (&a, &b)| found | ((a == b'.') & (b == b'.')));
        return ends & allowed_all & !pairs;
    }
    // Windows start at 0, 16, 32, … and the last at n - 17; each checks its
    // first 16 bytes and the pairs they start, so together they cover every
    // byte and every pair.
    let window = |at: usize| {
        let w: &[u8; LANE + 1] = bytes[at..at + LANE + 1].try_into().expect("in range");
        let mut bad = false;
        for j in 0..LANE {
            bad |= !allowed(w[j]) | ((w[j] == b'.') & (w[j + 1] == b'.'));
        }
        bad
    };
    let last = n - (LANE + 1);
    let mut bad = !allowed(bytes[n - 1]);
    let mut at = 0;
    while at < last {
        bad |= window(at);
        at += LANE;
    }
    bad |= window(last);
    ends & !bad
}

/// A segment character (`[A-Za-z0-9_-]`) or the separator.
#[inline]
fn allowed(b: u8) -> bool {
    // Folding the case bit maps `a-z` onto `A-Z` (and nothing else there).
    let upper = b & !0x20;
    upper.is_ascii_uppercase() | b.is_ascii_digit() | (b == b'_') | (b == b'-') | (b == b'.')
}

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
    fn agrees_with_the_grammar_on_long_strings_and_every_byte() {
        // Every byte value in every position of keys longer than a SIMD lane.
        let base = "bench.writes.p12345t1796134825028541000.k12-x_Y";
        for at in 0..base.len() {
            for b in 0..=127u8 {
                let mut key = base.as_bytes().to_vec();
                key[at] = b;
                let key = String::from_utf8(key).unwrap();
                assert_eq!(validate_key(&key, 256).is_ok(), reference(&key), "{key:?}");
            }
            let mut key = base.to_owned();
            key.replace_range(at..at + 1, "é");
            assert_eq!(validate_key(&key, 256), Err(KeyError::BadChar('é')));
        }
        let long = "a.".repeat(100) + "b";
        assert_eq!(validate_key(&long, 256), Ok(()));
        assert_eq!(
            validate_key(&(long.clone() + "."), 256),
            Err(KeyError::EmptySegment)
        );
        let doubled = long.replacen("a.a", "a..", 1);
        assert_eq!(validate_key(&doubled, 256), Err(KeyError::EmptySegment));
    }

    #[test]
    fn finds_a_doubled_dot_or_a_bad_byte_anywhere_in_keys_of_every_length() {
        for len in 1..=70 {
            let plain = "a".repeat(len);
            assert_eq!(validate_key(&plain, 256), Ok(()), "{len}");
            for at in 0..len {
                let mut bad = plain.clone().into_bytes();
                bad[at] = b' ';
                let bad = String::from_utf8(bad).unwrap();
                assert_eq!(
                    validate_key(&bad, 256),
                    Err(KeyError::BadChar(' ')),
                    "{bad:?}"
                );
                if at + 1 < len {
                    let mut dots = plain.clone().into_bytes();
                    dots[at] = b'.';
                    dots[at + 1] = b'.';
                    let dots = String::from_utf8(dots).unwrap();
                    assert_eq!(
                        validate_key(&dots, 256),
                        Err(KeyError::EmptySegment),
                        "{dots:?}"
                    );
                    let mut one = plain.clone().into_bytes();
                    one[at] = b'.';
                    let one = String::from_utf8(one).unwrap();
                    assert_eq!(validate_key(&one, 256).is_ok(), reference(&one), "{one:?}");
                }
            }
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
