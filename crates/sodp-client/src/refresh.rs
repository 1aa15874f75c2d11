//! In-band token refresh: when the server advertises `token_refresh` and the
//! token is a JWT with `exp`, ask the provider for a new token shortly before
//! expiry and send AUTH again on the live connection, so long sessions never
//! hit the server's live expiry.

use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::Instant;

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
}

impl TokenRefresh {
    /// `enabled` when the server supports refresh and the token can change.
    pub fn new(enabled: bool, source: &TokenSource, token: Option<&str>) -> TokenRefresh {
        let mut r = TokenRefresh {
            source: enabled.then(|| source.clone()),
            due: None,
            fetching: None,
            sent_exp: None,
            exp: None,
        };
        r.schedule(token.and_then(jwt_expiry));
        r
    }

    fn schedule(&mut self, exp: Option<u64>) {
        self.exp = exp;
        self.due = match (&self.source, exp) {
            (Some(_), Some(exp)) => Some(Instant::now() + refresh_delay(exp, SystemTime::now())),
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
                let now = SystemTime::now()
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
