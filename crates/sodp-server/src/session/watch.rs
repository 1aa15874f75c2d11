//! WATCH, RESUME and UNWATCH: subscribing this session to keys (with the
//! per-session subscription limit and the watch rate limit), replaying
//! missed changes, and ending subscriptions.

use sodp_auth::Access;
use sodp_proto::{Frame, Value};
use tracing::debug;

use super::Session;
use crate::error::{ErrorCode, Rejection};

impl Session {
    fn check_watch_rate(&mut self) -> Result<(), Rejection> {
        if self.watch_limit.is_unlimited()
            || self
                .watch_limit
                .try_acquire(tokio::time::Instant::now().into_std())
        {
            return Ok(());
        }
        self.shared.metrics.rate_limited.inc();
        Err(Rejection::new(
            ErrorCode::TooManyRequests,
            format!(
                "rate limit: at most {} WATCH/RESUME frames per second",
                self.watch_limit.per_sec()
            ),
        ))
    }

    /// The keys a WATCH/UNWATCH names: `{state}` or `{states: [...]}`.
    fn keys_of(frame: &Frame) -> Result<Vec<&str>, Rejection> {
        if let Some(key) = frame.body.get("state") {
            return key
                .as_str()
                .map(|k| vec![k])
                .ok_or_else(|| Rejection::bad_request("`state` must be a string"));
        }
        let keys = frame
            .body
            .get("states")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                Rejection::bad_request("expected `state` (a key) or `states` (a list of keys)")
            })?;
        if keys.is_empty() {
            return Err(Rejection::bad_request("`states` is empty"));
        }
        keys.iter()
            .map(|k| {
                k.as_str()
                    .ok_or_else(|| Rejection::bad_request("`states` must hold strings"))
            })
            .collect()
    }

    /// Checks that one more key may be watched.
    fn check_subscription_room(&self, key: &str) -> Result<(), Rejection> {
        let max = self.shared.config.limits.max_subscriptions;
        if !self.holdings.is_watching(key) && self.holdings.watch_count() >= max {
            return Err(Rejection::bad_request(format!(
                "subscription limit reached: a session may watch at most {max} keys"
            )));
        }
        Ok(())
    }

    pub(super) fn on_watch(&mut self, frame: &Frame) {
        let keys = match Self::keys_of(frame) {
            Ok(keys) => keys,
            Err(e) => return self.send_error(frame.stream_id, &e),
        };
        let params = frame.body.get("params");
        for key in keys {
            // One rate-limit token per key, so a multi-key WATCH is no loophole.
            let result = self
                .check_watch_rate()
                .and_then(|()| self.asker().check(key, Access::Read))
                .and_then(|()| self.check_subscription_room(key))
                .and_then(|()| {
                    let seq = self.next_seq();
                    self.shared.store.watch(key, &self.outbox, seq, params)
                });
            match result {
                Ok(()) => {
                    self.holdings.hold_watch(key);
                }
                Err(e) => self.send_error(frame.stream_id, &e),
            }
        }
    }

    pub(super) fn on_resume(&mut self, frame: &Frame) {
        if let Err(e) = self.check_watch_rate() {
            return self.send_error(frame.stream_id, &e);
        }
        let body = &frame.body;
        let parsed = (|| {
            let key = body
                .get("state")
                .and_then(Value::as_str)
                .ok_or_else(|| Rejection::bad_request("RESUME needs `state` (a key)"))?;
            let since = body
                .get("since_version")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    Rejection::bad_request("RESUME needs `since_version` (an unsigned integer)")
                })?;
            self.asker().check(key, Access::Read)?;
            self.check_subscription_room(key)?;
            Ok((key, since))
        })();
        let (key, since) = match parsed {
            Ok(p) => p,
            Err(e) => return self.send_error(frame.stream_id, &e),
        };
        let seq = self.next_seq();
        match self
            .shared
            .store
            .resume(key, since, &self.outbox, seq, body.get("params"))
        {
            Ok(replayed) => {
                debug!(session = self.id, key, since, ?replayed, "resumed");
                self.holdings.hold_watch(key);
            }
            Err(e) => self.send_error(frame.stream_id, &e),
        }
    }

    pub(super) fn on_unwatch(&mut self, frame: &Frame) {
        let keys = match Self::keys_of(frame) {
            Ok(keys) => keys,
            Err(e) => return self.send_error(frame.stream_id, &e),
        };
        for key in keys {
            self.holdings.release_watch(key);
        }
    }
}
