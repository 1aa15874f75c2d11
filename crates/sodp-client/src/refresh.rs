//! In-band token refresh: when the server advertises `token_refresh` and the
//! token is a JWT with `exp`, ask the provider for a new token shortly before
//! expiry and send AUTH again on the live connection, so long sessions never
//! hit the server's live expiry.
//!
//! Timers run on Tokio's clock; the token's `exp` is compared with the
//! injected wall clock (`Config::wall_clock`), so the schedule can be tested
//! on paused time.

use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::WallClock;
use crate::token::{jwt_expiry, refresh_delay, TokenSource};

/// How long to wait before asking a failing provider again.
const RETRY: Duration = Duration::from_secs(2);

/// The refresh schedule of one session.
pub struct TokenRefresh {
    source: Option<TokenSource>,
    /// When to fetch the next token.
    pub due: Option<Instant>,
    /// A fetch in progress, on its own task so the connection keeps reading.
    pub fetching: Option<JoinHandle<Result<Option<String>, String>>>,
    /// Expiry of the token sent in an AUTH that is not yet acknowledged.
    sent_exp: Option<u64>,
    /// Expiry of the token in force.
    exp: Option<u64>,
    clock: WallClock,
}

impl TokenRefresh {
    /// `enabled` when the server supports refresh and the token can change.
    pub fn new(
        enabled: bool,
        source: &TokenSource,
        token: Option<&str>,
        clock: WallClock,
    ) -> TokenRefresh {
        let mut r = TokenRefresh {
            source: enabled.then(|| source.clone()),
            due: None,
            fetching: None,
            sent_exp: None,
            exp: None,
            clock,
        };
        r.schedule(token.and_then(jwt_expiry));
        r
    }

    fn schedule(&mut self, exp: Option<u64>) {
        self.exp = exp;
        self.due = match (&self.source, exp) {
            (Some(_), Some(exp)) => Some(Instant::now() + refresh_delay(exp, (self.clock)())),
            _ => None,
        };
    }

    /// Starts fetching a token (the `due` time has come).
    pub fn start_fetch(&mut self) {
        self.due = None;
        if let Some(source) = self.source.clone() {
            self.fetching = Some(tokio::spawn(async move { source.fetch().await }));
        }
    }

    /// The fetch finished. Returns the token to send in AUTH, or the error to
    /// report (a retry is then scheduled while the current token is valid).
    pub fn fetched(
        &mut self,
        result: Result<Result<Option<String>, String>, tokio::task::JoinError>,
    ) -> Result<Option<String>, String> {
        self.fetching = None;
        let outcome = match result {
            Ok(Ok(token)) => Ok(token),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(format!("token provider panicked: {e}")),
        };
        match &outcome {
            Ok(Some(token)) => self.sent_exp = jwt_expiry(token),
            _ => {
                let now = (self.clock)()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                if self.exp.is_some_and(|exp| exp > now) {
                    self.due = Some(Instant::now() + RETRY);
                }
            }
        }
        outcome
    }

    /// The server acknowledged the new token (AUTH_OK).
    pub fn confirmed(&mut self) {
        if let Some(exp) = self.sent_exp.take() {
            self.schedule(Some(exp));
        }
    }
}

impl Drop for TokenRefresh {
    fn drop(&mut self) {
        if let Some(task) = &self.fetching {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A wall clock that starts at `start` seconds and moves with Tokio's
    /// (paused) clock.
    fn clock(start: u64) -> WallClock {
        let origin = Instant::now();
        Arc::new(move || {
            SystemTime::UNIX_EPOCH + Duration::from_secs(start) + (Instant::now() - origin)
        })
    }

    /// An unsigned JWT whose payload is `{"exp":EXP}` (the client never
    /// verifies signatures).
    fn jwt(exp: u64) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let payload = format!(r#"{{"exp":{exp}}}"#);
        let mut out = String::new();
        for chunk in payload.as_bytes().chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        format!("e30.{out}.sig")
    }

    fn provider(exps: Vec<u64>) -> (TokenSource, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let source = TokenSource::from_sync(move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            match exps.get(n) {
                Some(exp) => Ok(jwt(*exp)),
                None => Err("provider down"),
            }
        });
        (source, calls)
    }

    async fn fetch(r: &mut TokenRefresh) -> Result<Option<String>, String> {
        r.start_fetch();
        let result = r.fetching.as_mut().expect("a fetch started").await;
        r.fetched(result)
    }

    #[tokio::test(start_paused = true)]
    async fn schedules_halfway_then_from_each_confirmed_token() {
        let (source, calls) = provider(vec![1_000 + 100, 1_000 + 400]);
        let start = Instant::now();
        let mut r = TokenRefresh::new(true, &source, Some(&jwt(1_000 + 60)), clock(1_000));
        // 60 s left: refresh 30 s early (halfway, capped at 30 s).
        assert_eq!(r.due, Some(start + Duration::from_secs(30)));

        tokio::time::sleep_until(r.due.unwrap()).await;
        assert_eq!(fetch(&mut r).await, Ok(Some(jwt(1_100))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(r.due, None, "nothing due until the server confirms");
        r.confirmed();
        // At t = 1030 the new token has 70 s left: refresh at 1070.
        assert_eq!(r.due, Some(start + Duration::from_secs(70)));
        r.confirmed();
        assert_eq!(
            r.due,
            Some(start + Duration::from_secs(70)),
            "confirmed once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_provider_is_retried_only_while_the_token_is_valid() {
        let (source, calls) = provider(vec![]);
        let start = Instant::now();
        let mut r = TokenRefresh::new(true, &source, Some(&jwt(1_004)), clock(1_000));
        assert_eq!(r.due, Some(start + Duration::from_secs(2)));
        tokio::time::sleep_until(r.due.unwrap()).await;
        assert_eq!(fetch(&mut r).await, Err("provider down".into()));
        // Still valid (2 s left): ask again after RETRY.
        assert_eq!(r.due, Some(start + Duration::from_secs(2) + RETRY));
        tokio::time::sleep_until(r.due.unwrap()).await;
        assert!(fetch(&mut r).await.is_err());
        // At t = 1004 the token has expired: no more retries.
        assert_eq!(r.due, None);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_scheduled_without_support_or_expiry() {
        let (source, _) = provider(vec![]);
        let off = TokenRefresh::new(false, &source, Some(&jwt(2_000)), clock(1_000));
        assert_eq!(off.due, None, "the server does not support refresh");
        let no_exp = TokenRefresh::new(true, &source, Some("e30.e30.sig"), clock(1_000));
        assert_eq!(no_exp.due, None, "a token without exp");
    }
}
