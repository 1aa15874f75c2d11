//! WATCH, RESUME and UNWATCH: subscribing this session to keys (with the
//! per-session subscription limit and the watch rate limit), replaying
//! missed changes, and ending subscriptions.

use std::sync::Arc;

use sodp_auth::Access;
use sodp_proto::{Frame, Value};
use tracing::debug;

use super::Session;
use crate::access::Asker;
use crate::error::{ErrorCode, Rejection};
use crate::store::{parse_pattern, PatternWatch, ReadCheck};

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
        self.holdings.info().count_rate_limited();
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

    /// The read check a pattern subscription filters keys with: this
    /// session's identity at the time of each change (a refresh that adds
    /// or drops a role applies to later changes).
    fn read_check(&self) -> ReadCheck {
        let shared = self.shared.clone();
        let reader = self.reader.clone();
        let session = self.id;
        Arc::new(move |key: &str| {
            let identity = reader.read().unwrap_or_else(|p| p.into_inner());
            Asker {
                shared: &shared,
                session,
                identity: &identity,
            }
            .allows(key, Access::Read)
        })
    }

    /// WATCH (`since: None`) or RESUME of a pattern whose prefix is valid.
    fn subscribe_pattern(
        &mut self,
        pattern: &str,
        prefix: &str,
        params: Option<&Value>,
        since: Option<u64>,
    ) -> Result<Option<usize>, Rejection> {
        if !prefix.is_empty() {
            sodp_proto::key::validate_key(prefix, self.shared.config.limits.max_key_len)
                .map_err(|e| Rejection::bad_request(format!("bad pattern {pattern:?}: {e}")))?;
        }
        self.check_subscription_room(pattern)?;
        let seq = self.next_seq();
        let watch = PatternWatch {
            pattern,
            prefix,
            outbox: &self.outbox,
            seq,
            params,
            may_read: self.read_check(),
            max_bytes: self.shared.config.limits.max_value_bytes,
            since,
        };
        self.shared.store.watch_pattern(watch)
    }

    pub(super) fn on_watch(&mut self, frame: &Frame) {
        let keys = match Self::keys_of(frame) {
            Ok(keys) => keys,
            Err(e) => return self.send_error(frame.stream_id, &e),
        };
        let params = frame.body.get("params");
        for key in keys {
            // One rate-limit token per key, so a multi-key WATCH is no loophole.
            match parse_pattern(key) {
                Ok(None) => {}
                Ok(Some(prefix)) => {
                    let result = self
                        .check_watch_rate()
                        .and_then(|()| self.subscribe_pattern(key, prefix, params, None));
                    match result {
                        Ok(_) => self.holdings.hold_watch(key),
                        Err(e) => self.send_error(frame.stream_id, &e),
                    }
                    continue;
                }
                Err(e) => {
                    self.send_error(frame.stream_id, &e);
                    continue;
                }
            }
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
            if parse_pattern(key)?.is_none() {
                self.asker().check(key, Access::Read)?;
                self.check_subscription_room(key)?;
            }
            Ok((key, since))
        })();
        let (key, since) = match parsed {
            Ok(p) => p,
            Err(e) => return self.send_error(frame.stream_id, &e),
        };
        if let Ok(Some(prefix)) = parse_pattern(key) {
            return match self.subscribe_pattern(key, prefix, body.get("params"), Some(since)) {
                Ok(replayed) => {
                    debug!(
                        session = self.id,
                        key,
                        since,
                        ?replayed,
                        "resumed a pattern"
                    );
                    self.holdings.hold_watch(key);
                }
                Err(e) => self.send_error(frame.stream_id, &e),
            };
        }
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
            if let Err(e) = parse_pattern(key) {
                self.send_error(frame.stream_id, &e);
                continue;
            }
            self.holdings.release_watch(key);
        }
    }
}
