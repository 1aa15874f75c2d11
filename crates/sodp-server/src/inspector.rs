//! The web inspector's page and script, embedded in the binary
//! (`include_bytes!` of `assets/inspector/`, built from
//! `js/packages/inspector` and committed, so building the server needs no
//! Node). Served at `/inspector` only with `--inspector`, to the peers
//! `admin::serves_inspector` admits; the page talks to the server over
//! `/inspector/ws` with the project's own TypeScript client.

use std::io;
use std::net::SocketAddr;

use crate::http;
use crate::shared::Shared;

/// One embedded file.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../assets/inspector/index.html"),
};

const SCRIPT: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("../assets/inspector/app.js"),
};

/// The WebSocket path of inspector sessions.
pub const WS_PATH: &str = "/inspector/ws";

/// Headers sent with every asset: no framing by other sites, no sniffing,
/// scripts and connections to this origin only.
pub const HEADERS: &str = "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\nContent-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n";

/// Whether `path` (without its query) is the inspector's.
pub fn is_inspector_path(path: &str) -> bool {
    path == "/inspector" || path.starts_with("/inspector/")
}

/// The asset at `path`, if there is one.
pub fn asset(path: &str) -> Option<&'static Asset> {
    match path {
        "/inspector" | "/inspector/" | "/inspector/index.html" => Some(&INDEX),
        "/inspector/app.js" => Some(&SCRIPT),
        _ => None,
    }
}

/// Bytes the embedded assets add to the binary.
pub fn embedded_bytes() -> usize {
    INDEX.body.len() + SCRIPT.body.len()
}

/// Answers a GET below `/inspector`: the asset, or 404 when the inspector
/// is off (nothing of it is served then), or 403 to a peer it is not
/// served to.
pub async fn serve<S: tokio::io::AsyncWrite + Unpin>(
    tcp: &mut S,
    shared: &Shared,
    peer: SocketAddr,
    path: &str,
) -> io::Result<()> {
    if let Err((status, message)) = crate::admin::serves_inspector(shared, peer) {
        return http::respond(tcp, status, "text/plain", message).await;
    }
    match asset(path) {
        Some(a) => http::respond_with(tcp, 200, a.content_type, HEADERS, a.body).await,
        None => http::respond(tcp, 404, "text/plain", "not found").await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget for what the inspector adds to the binary.
    const BUDGET: usize = 300 * 1024;

    #[test]
    fn the_embedded_assets_fit_the_budget() {
        let n = embedded_bytes();
        assert!(n <= BUDGET, "{n} bytes embedded, budget {BUDGET}");
    }

    #[test]
    fn paths() {
        assert!(asset("/inspector").is_some() && asset("/inspector/app.js").is_some());
        assert!(asset("/inspector/../etc/passwd").is_none());
        assert!(is_inspector_path("/inspector/x") && !is_inspector_path("/inspectorx"));
    }
}
