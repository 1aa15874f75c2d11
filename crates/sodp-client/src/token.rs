//! Where the AUTH token comes from, and when it needs refreshing.
//!
//! A token is either a fixed string or a provider called on every connect (and
//! before expiry when the server supports in-band refresh). Providers may be
//! sync or async closures; both are stored as one boxed async function.
//!
//! The expiry is read from the JWT payload *without* verifying the signature:
//! the client only uses it to decide when to ask for a fresh token, and the
//! server is the one that checks it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ProviderFn = dyn Fn() -> BoxFuture<Result<String, String>> + Send + Sync;

/// The configured source of tokens.
#[derive(Clone, Default)]
pub enum TokenSource {
    #[default]
    None,
    Static(String),
    Provider(Arc<ProviderFn>),
}

impl fmt::Debug for TokenSource {
    // Never print the token itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenSource::None => "None",
            TokenSource::Static(_) => "Static(<redacted>)",
            TokenSource::Provider(_) => "Provider(..)",
        })
    }
}

impl TokenSource {
    /// Wraps an async provider.
    pub fn from_async<F, Fut, E>(f: F) -> TokenSource
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: fmt::Display,
    {
        TokenSource::Provider(Arc::new(move || {
            let fut = f();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        }))
    }

    /// Wraps a sync provider.
    pub fn from_sync<F, E>(f: F) -> TokenSource
    where
        F: Fn() -> Result<String, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        TokenSource::Provider(Arc::new(move || {
            let result = f().map_err(|e| e.to_string());
            Box::pin(std::future::ready(result))
        }))
    }

    /// The token to send now: `Ok(None)` when none is configured.
    pub async fn fetch(&self) -> Result<Option<String>, String> {
        match self {
            TokenSource::None => Ok(None),
            TokenSource::Static(t) => Ok(Some(t.clone())),
            TokenSource::Provider(p) => p().await.map(Some),
        }
    }

    /// True when asking again can yield a different token.
    pub fn can_refresh(&self) -> bool {
        matches!(self, TokenSource::Provider(_))
    }
}

/// The `exp` claim of a JWT, in seconds since the epoch, if it has one.
pub fn jwt_expiry(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64url_decode(payload)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    exp.as_u64()
        .or_else(|| exp.as_f64().map(|f| f.max(0.0) as u64))
}

/// How long from `now` until a token expiring at `exp` should be replaced:
/// halfway through the remaining lifetime, but never more than 30 s early.
pub fn refresh_delay(exp: u64, now: SystemTime) -> Duration {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let left = Duration::from_secs(exp).saturating_sub(now);
    left.saturating_sub((left / 2).min(Duration::from_secs(30)))
}

/// Decodes unpadded (or padded) base64url.
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url() {
        assert_eq!(base64url_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64url_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert!(base64url_decode("a b").is_none());
    }

    #[test]
    fn reads_exp_without_verifying() {
        // {"alg":"HS256","typ":"JWT"} . {"sub":"alice","exp":1700000000} . sig
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                     eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0.c2ln";
        assert_eq!(jwt_expiry(token), Some(1_700_000_000));
        assert_eq!(jwt_expiry("not-a-jwt"), None);
        // {"sub":"alice"}: no exp
        assert_eq!(jwt_expiry("e30.eyJzdWIiOiJhbGljZSJ9.x"), None);
    }

    #[test]
    fn refreshes_before_expiry() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(refresh_delay(1002, now), Duration::from_secs(1));
        assert_eq!(refresh_delay(1000 + 3600, now), Duration::from_secs(3570));
        assert_eq!(refresh_delay(900, now), Duration::ZERO);
    }

    #[tokio::test]
    async fn providers_sync_and_async() {
        let s = TokenSource::from_sync(|| Ok::<_, String>("a".into()));
        assert_eq!(s.fetch().await, Ok(Some("a".into())));
        let a = TokenSource::from_async(|| async { Err::<String, _>("down") });
        assert_eq!(a.fetch().await, Err("down".into()));
        assert_eq!(TokenSource::None.fetch().await, Ok(None));
        assert!(!format!("{:?}", TokenSource::Static("secret".into())).contains("secret"));
    }
}
