//! Browser `Origin` allow-list, checked on the WebSocket upgrade (refused
//! with HTTP 403 before a session exists).
//!
//! Configured as a comma-separated list: `https://app.example.com,
//! http://localhost:3000, https://*.example.org`, or `*` for any origin.
//! - Scheme and host compare case-insensitively; a default port (`:80` for
//!   http, `:443` for https) is the same as none; a trailing `/` is ignored.
//! - `https://*.example.org` matches any subdomain (not the bare
//!   `example.org`) on that scheme and port.
//! - `null` (what sandboxed frames and `file:` pages send) cannot be listed:
//!   any page can produce it. `*` admits it.
//! - **A missing `Origin` header is allowed**: browsers always send one on a
//!   WebSocket upgrade, so its absence means a non-browser client (the Python
//!   and Rust clients, curl), which an Origin check could not stop anyway.
//!
//! Why this is a browser-safety measure and not authentication: SODP tokens
//! travel in-band (AUTH frame), not in cookies, so a hostile page cannot ride
//! a user's credentials; the allow-list limits which web apps may connect at
//! all.

use thiserror::Error;

/// A malformed allow-list entry.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OriginError {
    #[error("allowed origins: the list is empty")]
    Empty,
    #[error("allowed origins: {entry:?}: {problem}")]
    Invalid {
        entry: String,
        problem: &'static str,
    },
}

/// Which browser origins may open a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPolicy {
    any: bool,
    allowed: Vec<Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    /// Lowercase host; for a wildcard entry, the suffix after `*.`.
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl OriginPolicy {
    /// Every origin allowed (the default when nothing is configured).
    pub fn allow_all() -> OriginPolicy {
        OriginPolicy {
            any: true,
            allowed: Vec::new(),
        }
    }

    /// Parses a comma-separated allow-list (see the module doc).
    pub fn parse(list: &str) -> Result<OriginPolicy, OriginError> {
        let mut policy = OriginPolicy {
            any: false,
            allowed: Vec::new(),
        };
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                policy.any = true;
                continue;
            }
            let invalid = |problem| OriginError::Invalid {
                entry: entry.to_owned(),
                problem,
            };
            if entry.eq_ignore_ascii_case("null") {
                return Err(invalid("the null origin cannot be allow-listed (any sandboxed page sends it); use * if you must"));
            }
            policy
                .allowed
                .push(parse_origin(entry, true).map_err(invalid)?);
        }
        if !policy.any && policy.allowed.is_empty() {
            return Err(OriginError::Empty);
        }
        Ok(policy)
    }

    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// May an upgrade with this `Origin` header proceed? `None` (no header)
    /// is a non-browser client and is allowed.
    pub fn allows(&self, origin_header: Option<&str>) -> bool {
        let Some(header) = origin_header else {
            return true;
        };
        if self.any {
            return true;
        }
        let Ok(origin) = parse_origin(header.trim(), false) else {
            return false;
        };
        self.allowed.iter().any(|a| a.admits(&origin))
    }
}

impl Origin {
    fn admits(&self, o: &Origin) -> bool {
        if self.scheme != o.scheme || self.port != o.port {
            return false;
        }
        if self.wildcard {
            o.host
                .strip_suffix(self.host.as_str())
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty())
        } else {
            self.host == o.host
        }
    }
}

/// `scheme://host[:port][/]`, nothing else. `allow_wildcard` lets the host
/// start with `*.` (config entries, not headers).
fn parse_origin(s: &str, allow_wildcard: bool) -> Result<Origin, &'static str> {
    let (scheme, rest) = s.split_once("://").ok_or("expected scheme://host[:port]")?;
    let scheme = scheme.to_ascii_lowercase();
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err("invalid scheme");
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err("an origin has no path, query, fragment or user info");
    }
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 literal's own colons sit inside brackets.
        Some((h, p)) if !p.contains(']') => {
            let port: u16 = p.parse().map_err(|_| "invalid port")?;
            (h, Some(port))
        }
        _ => (rest, None),
    };
    let host = host.to_ascii_lowercase();
    let (wildcard, host) = match host.strip_prefix("*.") {
        Some(suffix) if allow_wildcard => (true, suffix.to_owned()),
        Some(_) => return Err("wildcard in an Origin header"),
        None => (false, host),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'));
    if !host_ok {
        return Err("invalid host");
    }
    let default_port = match scheme.as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    };
    let port = port.filter(|p| Some(*p) != default_port);
    Ok(Origin {
        scheme,
        host,
        wildcard,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(s: &str) -> OriginPolicy {
        OriginPolicy::parse(s).expect("valid list")
    }

    #[test]
    fn exact_origins() {
        let p = policy("https://app.example.com, http://localhost:3000");
        assert!(p.allows(Some("https://app.example.com")));
        assert!(p.allows(Some("http://localhost:3000")));
        assert!(!p.allows(Some("https://evil.example.com")));
        assert!(!p.allows(Some("http://app.example.com")));
        assert!(!p.allows(Some("http://localhost:3001")));
        assert!(!p.allows(Some("https://app.example.com.evil.net")));
    }

    #[test]
    fn missing_header_is_a_non_browser_client() {
        assert!(policy("https://a.example").allows(None));
    }

    #[test]
    fn case_default_port_and_trailing_slash_normalise() {
        let p = policy("HTTPS://App.Example.com:443/");
        assert!(p.allows(Some("https://app.example.com")));
        assert!(p.allows(Some("https://APP.example.com:443")));
        assert!(!p.allows(Some("https://app.example.com:8443")));
    }

    #[test]
    fn wildcard_subdomains() {
        let p = policy("https://*.example.org");
        assert!(p.allows(Some("https://a.example.org")));
        assert!(p.allows(Some("https://a.b.example.org")));
        assert!(!p.allows(Some("https://example.org")));
        assert!(!p.allows(Some("https://badexample.org")));
        assert!(!p.allows(Some("http://a.example.org")));
    }

    #[test]
    fn star_allows_everything() {
        let p = policy("*");
        assert!(p.allows_any());
        assert!(p.allows(Some("null")));
        assert!(p.allows(Some("https://anything")));
        assert!(OriginPolicy::allow_all().allows(Some("garbage")));
    }

    #[test]
    fn odd_headers_are_refused() {
        let p = policy("https://a.example");
        for h in [
            "null",
            "",
            "a.example",
            "https://a.example/path",
            "https://*.a.example",
            "https://u@a.example",
            "https://a.example:99999",
            "https://a.example\u{0}",
        ] {
            assert!(!p.allows(Some(h)), "{h:?}");
        }
    }

    #[test]
    fn ipv6_hosts() {
        let p = policy("http://[::1]:8080");
        assert!(p.allows(Some("http://[::1]:8080")));
        assert!(!p.allows(Some("http://[::1]")));
    }

    #[test]
    fn bad_lists_are_config_errors() {
        assert_eq!(OriginPolicy::parse(""), Err(OriginError::Empty));
        assert_eq!(OriginPolicy::parse(" , "), Err(OriginError::Empty));
        assert!(OriginPolicy::parse("null").is_err());
        assert!(OriginPolicy::parse("app.example.com").is_err());
        assert!(OriginPolicy::parse("https://a.example/app").is_err());
        assert!(OriginPolicy::parse("https://a.example:http").is_err());
    }
}
