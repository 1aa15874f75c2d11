//! Server URLs: `ws://` and `wss://`, plus the aliases `sodp://` (= ws) and
//! `sodps://` (= wss).

use crate::error::Error;

/// Returns the WebSocket URL to dial for `url`, or a configuration error for
/// anything that is not one of the four accepted schemes.
pub fn normalize(url: &str) -> Result<String, Error> {
    let url = url.trim();
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::Config(format!("{url:?} is not a URL (expected ws://host:port)")))?;
    let secure = match scheme.to_ascii_lowercase().as_str() {
        "ws" | "sodp" => false,
        "wss" | "sodps" => true,
        other => {
            return Err(Error::Config(format!(
                "unsupported URL scheme {other:?} in {url:?} (use ws, wss, sodp or sodps)"
            )))
        }
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(Error::Config(format!("{url:?} has no host")));
    }
    if secure && !cfg!(feature = "tls") {
        return Err(Error::Config(format!(
            "{url:?}: wss is not supported in this build (enable the `tls` feature of sodp-client)"
        )));
    }
    Ok(format!("{}://{rest}", if secure { "wss" } else { "ws" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_map_to_websocket() {
        assert_eq!(normalize("ws://h:1").unwrap(), "ws://h:1");
        assert_eq!(normalize("sodp://h:1/x").unwrap(), "ws://h:1/x");
        assert_eq!(normalize(" SODP://h ").unwrap(), "ws://h");
        if cfg!(feature = "tls") {
            assert_eq!(normalize("wss://h").unwrap(), "wss://h");
            assert_eq!(normalize("sodps://h").unwrap(), "wss://h");
        } else {
            assert!(matches!(normalize("wss://h"), Err(Error::Config(_))));
        }
    }

    #[test]
    fn rejects_other_urls() {
        for bad in ["http://h", "h:7777", "ws://", "ws:///x", ""] {
            assert!(matches!(normalize(bad), Err(Error::Config(_))), "{bad}");
        }
    }
}
