//! RFC 6901 JSON Pointers as SODP writes them: segments separated by `/`,
//! with `~1` for `/` and `~0` for `~`. The root is `"/"` (SODP's spelling);
//! `""` is accepted as the root too.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PointerError {
    #[error("JSON Pointer {0:?} must start with '/'")]
    NoLeadingSlash(String),
    #[error("JSON Pointer {0:?} has a '~' not followed by '0' or '1'")]
    BadEscape(String),
}

/// Splits a pointer into unescaped segments; the root gives no segments.
pub fn parse(pointer: &str) -> Result<Vec<String>, PointerError> {
    if pointer.is_empty() || pointer == "/" {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| PointerError::NoLeadingSlash(pointer.to_owned()))?;
    rest.split('/')
        .map(|seg| unescape(seg).ok_or_else(|| PointerError::BadEscape(pointer.to_owned())))
        .collect()
}

fn unescape(seg: &str) -> Option<String> {
    if !seg.contains('~') {
        return Some(seg.to_owned());
    }
    let mut out = String::with_capacity(seg.len());
    let mut chars = seg.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Appends `/segment`, escaped, to `pointer`.
pub fn push(pointer: &mut String, segment: &str) {
    pointer.reserve(segment.len() + 1);
    pointer.push('/');
    // Runs between escapes are copied whole (most segments have none).
    let mut rest = segment;
    // Both are ASCII, never part of another character: `i` is a boundary.
    while let Some(i) = rest.bytes().position(|b| b == b'~' || b == b'/') {
        pointer.push_str(&rest[..i]);
        pointer.push_str(if rest.as_bytes()[i] == b'~' {
            "~0"
        } else {
            "~1"
        });
        rest = &rest[i + 1..];
    }
    pointer.push_str(rest);
}

/// Formats segments as a pointer; no segments gives the root `"/"`.
pub fn format<S: AsRef<str>>(segments: &[S]) -> String {
    if segments.is_empty() {
        return "/".to_owned();
    }
    let mut p = String::new();
    for s in segments {
        push(&mut p, s.as_ref());
    }
    p
}

/// `pointer` extended by one segment (`"/"` + `x` gives `"/x"`).
pub fn child(pointer: &str, segment: &str) -> String {
    let base = if pointer == "/" { "" } else { pointer };
    let mut p = String::with_capacity(base.len() + 1 + segment.len());
    p.push_str(base);
    push(&mut p, segment);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_escapes() {
        assert_eq!(parse("/").unwrap(), Vec::<String>::new());
        assert_eq!(parse("").unwrap(), Vec::<String>::new());
        assert_eq!(parse("/a/0/-").unwrap(), vec!["a", "0", "-"]);
        assert_eq!(parse("/a~1b/c~0d").unwrap(), vec!["a/b", "c~d"]);
        assert_eq!(parse("/~01").unwrap(), vec!["~1"]);
        assert!(matches!(parse("a"), Err(PointerError::NoLeadingSlash(_))));
        assert!(matches!(parse("/a~2"), Err(PointerError::BadEscape(_))));
        assert_eq!(format(&["a/b", "c~d"]), "/a~1b/c~0d");
        assert_eq!(format::<&str>(&[]), "/");
        assert_eq!(child("/", "x"), "/x");
        assert_eq!(child("/x", "y/z"), "/x/y~1z");
    }

    /// The escaping of one character at a time, as RFC 6901 states it.
    fn escaped_char_by_char(segment: &str) -> String {
        segment
            .chars()
            .map(|c| match c {
                '~' => "~0".to_owned(),
                '/' => "~1".to_owned(),
                c => c.to_string(),
            })
            .collect()
    }

    #[test]
    fn push_escapes_every_run_and_round_trips() {
        for segment in [
            "",
            "a",
            "~",
            "/",
            "~~",
            "//",
            "~/",
            "/~",
            "a~b/c",
            "~a/",
            "é/~ü",
            "x~0y",
            "ß~1",
            "名前/値~",
            "/a/b/",
            "~~/~/",
        ] {
            let mut p = "/root".to_owned();
            push(&mut p, segment);
            assert_eq!(
                p,
                format!("/root/{}", escaped_char_by_char(segment)),
                "{segment:?}"
            );
            assert_eq!(parse(&p).unwrap(), vec!["root", segment], "{segment:?}");
            assert_eq!(
                child("/", segment),
                format!("/{}", escaped_char_by_char(segment))
            );
            assert_eq!(
                child(&child("/", "k"), segment),
                format!("/k/{}", escaped_char_by_char(segment))
            );
        }
    }
}
