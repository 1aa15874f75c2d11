//! The client's view of every watched key: cached value and version, the
//! stream ids that carry it, and the watchers to notify.
//!
//! This is the sans-I/O core of the client. The connection task feeds it the
//! STATE_INIT and DELTA bodies it reads and sends whatever frames it returns;
//! the public API registers and removes watchers. Each watcher is a bounded
//! mailbox (see `mailbox`: a full one conflates to the newest value rather
//! than growing or blocking), and updates are pushed into them while the
//! table's lock is held, so each watcher sees a key's updates in order and a
//! newly registered watcher's cache update always comes before any later
//! change.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::Error;
use crate::mailbox::Sender;
use crate::messages;
use crate::update::{Meta, Source, Update};
use sodp_proto::frame::FIRST_SUBSCRIPTION_STREAM;
use sodp_proto::{apply, DeltaOp, Frame, OpKind, Value};

/// Identifies one watcher of one key.
pub type WatcherId = u64;

struct Entry {
    key: Arc<str>,
    value: Value,
    version: u64,
    initialized: bool,
    /// A STATE_INIT has been seen, so `value`/`version` are meaningful (and a
    /// reconnect can RESUME from `version`).
    known: bool,
    /// A pattern (`game.*`, `*`, extension `prefix_watch`): the value is a
    /// map of full key → value.
    pattern: bool,
    /// The version of the last STATE_INIT.
    baseline: u64,
    /// The key's deadline (Unix ms), extension `ttl`; never for a pattern.
    expires_at: Option<u64>,
    /// The stream id this client suggests for the key.
    local_stream: u32,
    /// The first watcher's `params`, sent with every WATCH and RESUME of
    /// the key.
    params: Option<Value>,
    watchers: Vec<(WatcherId, Sender)>,
}

impl Entry {
    fn update(&self, source: Source, ops: Arc<[DeltaOp]>) -> Update {
        Update {
            key: self.key.clone(),
            value: self.value.clone(),
            meta: Meta {
                version: self.version,
                initialized: self.initialized,
                source,
                expires_at: self.expires_at,
            },
            ops,
            lagged: 0,
        }
    }

    fn broadcast(&mut self, update: Update) {
        self.watchers.retain(|(_, tx)| tx.send(update.clone()));
    }
}

/// What a DELTA did.
#[derive(Debug, PartialEq)]
pub enum DeltaOutcome {
    Applied,
    /// Already applied (a RESUME replay overlapping what we had), for a key
    /// nobody watches any more, or arriving before the key's first STATE_INIT.
    Ignored,
}

/// A DELTA that could not be applied: the key must be re-synchronised with a
/// fresh WATCH, and the error reported.
#[derive(Debug)]
pub struct DeltaFailure {
    pub resync: Frame,
    pub error: Error,
}

/// All watched keys.
#[derive(Default)]
pub struct Subscriptions {
    entries: HashMap<Arc<str>, Entry>,
    /// Stream id (ours or the server's) → key.
    streams: HashMap<u32, Arc<str>>,
    next_stream: u32,
    next_watcher: WatcherId,
}

impl Subscriptions {
    /// Registers a watcher of `key`. Replays the cached value to it when the
    /// key is known. Returns the watcher's id and, for the first watcher of
    /// the key, the WATCH frame to send, carrying `params`; a later
    /// watcher's `params` are not sent (it shares the subscription).
    pub fn add_watcher(
        &mut self,
        key: &str,
        params: Option<Value>,
        tx: Sender,
    ) -> (WatcherId, Option<Frame>) {
        self.next_watcher += 1;
        let id = self.next_watcher;
        if let Some(entry) = self.entries.get_mut(key) {
            if entry.known {
                tx.send(entry.update(Source::Cache, Arc::from([])));
            }
            entry.watchers.push((id, tx));
            return (id, None);
        }
        let stream = self.alloc_stream();
        let key: Arc<str> = Arc::from(key);
        let watch = messages::watch(stream, &key, params.as_ref());
        self.streams.insert(stream, key.clone());
        self.entries.insert(
            key.clone(),
            Entry {
                key: key.clone(),
                value: Value::Nil,
                version: 0,
                initialized: false,
                known: false,
                pattern: key.contains('*'),
                baseline: 0,
                expires_at: None,
                local_stream: stream,
                watchers: vec![(id, tx)],
                params,
            },
        );
        (id, Some(watch))
    }

    /// Removes one watcher. When it was the key's last, forgets the key and
    /// returns the UNWATCH frame to send.
    pub fn remove_watcher(&mut self, key: &str, id: WatcherId) -> Option<Frame> {
        let entry = self.entries.get_mut(key)?;
        entry.watchers.retain(|(w, _)| *w != id);
        if entry.watchers.is_empty() {
            self.remove_key(key)
        } else {
            None
        }
    }

    /// Forgets `key` and all its watchers (their streams end). Returns the
    /// UNWATCH frame to send, if the key was watched.
    pub fn remove_key(&mut self, key: &str) -> Option<Frame> {
        let entry = self.entries.remove(key)?;
        self.streams.retain(|_, k| **k != *key);
        Some(messages::unwatch(entry.local_stream, key))
    }

    pub fn is_watching(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The cached value and its metadata, once the key's STATE_INIT arrived.
    pub fn get(&self, key: &str) -> Option<(Value, Meta)> {
        let e = self.entries.get(key).filter(|e| e.known)?;
        Some((
            e.value.clone(),
            Meta {
                version: e.version,
                initialized: e.initialized,
                source: Source::Cache,
                expires_at: e.expires_at,
            },
        ))
    }

    /// The key a stream id stands for.
    pub fn key_of_stream(&self, stream_id: u32) -> Option<Arc<str>> {
        self.streams.get(&stream_id).cloned()
    }

    /// The frames that restore every subscription on a new connection:
    /// RESUME from the cached version for known keys, WATCH for the rest.
    pub fn resubscribe(&self) -> Vec<Frame> {
        let mut frames: Vec<Frame> = self
            .entries
            .values()
            .map(|e| {
                if e.known {
                    messages::resume(e.local_stream, &e.key, e.version, e.params.as_ref())
                } else {
                    messages::watch(e.local_stream, &e.key, e.params.as_ref())
                }
            })
            .collect();
        frames.sort_by_key(|f| f.stream_id);
        frames
    }

    /// Handles a STATE_INIT: the new baseline for its key.
    pub fn on_state_init(&mut self, stream_id: u32, body: &Value) -> Result<(), Error> {
        let key = body
            .get("state")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Protocol("STATE_INIT without `state`".into()))?;
        let version = body
            .get("version")
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::Protocol(format!("STATE_INIT for {key:?} without `version`")))?;
        let value = body.get("value").cloned().unwrap_or_default();
        let initialized = body
            .get("initialized")
            .and_then(Value::as_bool)
            .unwrap_or(!value.is_nil());
        let Some(entry) = self.entries.get_mut(key) else {
            return Ok(()); // unwatched meanwhile
        };
        if stream_id != 0 {
            self.streams.insert(stream_id, entry.key.clone());
        }
        entry.value = value;
        entry.version = version;
        entry.baseline = version;
        entry.expires_at = match entry.pattern {
            true => None,
            false => deadline(body).flatten(),
        };
        entry.initialized = initialized;
        entry.known = true;
        let update = entry.update(Source::Init, Arc::from([]));
        entry.broadcast(update);
        Ok(())
    }

    /// Handles a DELTA, routed by its `state` field when present and by the
    /// stream id otherwise.
    pub fn on_delta(&mut self, stream_id: u32, body: &Value) -> Result<DeltaOutcome, DeltaFailure> {
        let key = match body.get("state").and_then(Value::as_str) {
            Some(k) => self.entries.get_key_value(k).map(|(k, _)| k.clone()),
            None => self.key_of_stream(stream_id),
        };
        let Some(entry) = key.and_then(|k| self.entries.get_mut(&k)) else {
            return Ok(DeltaOutcome::Ignored);
        };
        let version = body.get("version").and_then(Value::as_u64);
        // A transaction gives each key it touched one DELTA with the same
        // version, so a pattern's stream can carry several DELTAs of one
        // version back to back; only those its STATE_INIT already covers
        // are stale.
        let stale = version.is_some_and(|v| match entry.pattern {
            true => v < entry.version || v <= entry.baseline,
            false => v <= entry.version,
        });
        if !entry.known || stale {
            return Ok(DeltaOutcome::Ignored);
        }
        let result = body
            .get("ops")
            .ok_or(sodp_proto::ApplyError::MalformedOp("DELTA without `ops`"))
            .and_then(DeltaOp::list_from_value)
            .and_then(|ops| apply(&entry.value, &ops).map(|v| (v, ops)));
        let (value, ops) = match result {
            Ok(ok) => ok,
            Err(e) => {
                // Our copy can no longer be trusted: drop it and ask again.
                entry.known = false;
                return Err(DeltaFailure {
                    resync: messages::watch(entry.local_stream, &entry.key, entry.params.as_ref()),
                    error: Error::Protocol(format!("DELTA for {:?}: {e}", entry.key)),
                });
            }
        };
        for op in &ops {
            if op.path == "/" || op.path.is_empty() {
                entry.initialized = op.kind != OpKind::Remove;
            } else {
                entry.initialized = true;
            }
        }
        entry.value = value;
        if let Some(v) = version {
            entry.version = v;
        }
        if !entry.pattern {
            if let Some(expires_at) = deadline(body) {
                entry.expires_at = expires_at;
            }
            if !entry.initialized {
                entry.expires_at = None; // a delete (or expiry) ends the deadline
            }
        }
        let update = entry.update(Source::Delta, Arc::from(ops));
        entry.broadcast(update);
        Ok(DeltaOutcome::Applied)
    }

    fn alloc_stream(&mut self) -> u32 {
        if self.next_stream < FIRST_SUBSCRIPTION_STREAM {
            self.next_stream = FIRST_SUBSCRIPTION_STREAM;
        }
        let id = self.next_stream;
        self.next_stream = self
            .next_stream
            .checked_add(1)
            .unwrap_or(FIRST_SUBSCRIPTION_STREAM);
        id
    }
}

/// A frame's `expires_at`: `None` when absent, `Some(None)` when 0 (the
/// deadline was removed), else `Some(Some(unix_ms))`.
fn deadline(body: &Value) -> Option<Option<u64>> {
    let at = body.get("expires_at").and_then(Value::as_u64)?;
    Some((at > 0).then_some(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::{mailbox, Receiver};
    use serde_json::json;
    use sodp_proto::FrameType;
    use std::task::{Context, Poll, Waker};

    /// A watcher whose buffer never fills in these tests.
    fn roomy() -> (Sender, Receiver) {
        mailbox(usize::MAX)
    }

    fn v(j: serde_json::Value) -> Value {
        Value::from(j)
    }

    fn drain(rx: &mut Receiver) -> Vec<(Source, u64, serde_json::Value)> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = vec![];
        while let Poll::Ready(Some(u)) = rx.poll_recv(&mut cx) {
            out.push((u.meta.source, u.meta.version, u.value.to_json()));
        }
        out
    }

    #[test]
    fn shared_subscription_sends_one_watch_and_replays_cache() {
        let mut subs = Subscriptions::default();
        let (tx1, mut rx1) = roomy();
        let (id1, watch) = subs.add_watcher("game.player", None, tx1);
        let watch = watch.expect("first watcher sends WATCH");
        assert_eq!(watch.kind, FrameType::Watch);
        assert!(watch.stream_id >= FIRST_SUBSCRIPTION_STREAM);

        subs.on_state_init(
            77,
            &v(json!({"state": "game.player", "version": 3, "value": {"hp": 1}, "initialized": true})),
        )
        .unwrap();
        assert_eq!(drain(&mut rx1), [(Source::Init, 3, json!({"hp": 1}))]);

        let (tx2, mut rx2) = roomy();
        let (id2, again) = subs.add_watcher("game.player", None, tx2);
        assert!(again.is_none(), "second watcher shares the subscription");
        assert_eq!(drain(&mut rx2), [(Source::Cache, 3, json!({"hp": 1}))]);

        // Routed by stream id alone (no `state` in the body).
        let out = subs
            .on_delta(
                77,
                &v(json!({"version": 5, "ops": [{"op": "UPDATE", "path": "/hp", "value": 2}]})),
            )
            .unwrap();
        assert_eq!(out, DeltaOutcome::Applied);
        assert_eq!(drain(&mut rx1), [(Source::Delta, 5, json!({"hp": 2}))]);
        assert_eq!(drain(&mut rx2), [(Source::Delta, 5, json!({"hp": 2}))]);

        assert!(subs.remove_watcher("game.player", id1).is_none());
        let unwatch = subs
            .remove_watcher("game.player", id2)
            .expect("last watcher");
        assert_eq!(unwatch.kind, FrameType::Unwatch);
        assert!(!subs.is_watching("game.player"));
        assert!(subs.key_of_stream(77).is_none());
    }

    #[test]
    fn watcher_added_before_state_init_gets_the_init_only() {
        let mut subs = Subscriptions::default();
        let (tx1, mut rx1) = roomy();
        let (tx2, mut rx2) = roomy();
        assert!(subs.add_watcher("k", None, tx1).1.is_some());
        // WATCH is out, STATE_INIT not back yet: nothing cached to replay.
        assert!(subs.add_watcher("k", None, tx2).1.is_none());
        assert!(drain(&mut rx2).is_empty());
        subs.on_state_init(10, &v(json!({"state": "k", "version": 0, "value": null})))
            .unwrap();
        assert_eq!(drain(&mut rx1), [(Source::Init, 0, json!(null))]);
        assert_eq!(drain(&mut rx2), [(Source::Init, 0, json!(null))]);
    }

    #[test]
    fn deltas_route_by_state_and_skip_replayed_versions() {
        let mut subs = Subscriptions::default();
        let (txa, mut rxa) = roomy();
        let (txb, mut rxb) = roomy();
        subs.add_watcher("a", None, txa);
        subs.add_watcher("b", None, txb);
        subs.on_state_init(
            10,
            &v(json!({"state": "a", "version": 1, "value": null, "initialized": false})),
        )
        .unwrap();
        subs.on_state_init(11, &v(json!({"state": "b", "version": 2, "value": [1]})))
            .unwrap();
        drain(&mut rxa);
        drain(&mut rxb);

        // Stream 10 but `state` says b: `state` wins.
        let d =
            json!({"state": "b", "version": 4, "ops": [{"op": "ADD", "path": "/-", "value": 2}]});
        assert_eq!(
            subs.on_delta(10, &v(d.clone())).unwrap(),
            DeltaOutcome::Applied
        );
        assert_eq!(subs.on_delta(10, &v(d)).unwrap(), DeltaOutcome::Ignored);
        assert_eq!(drain(&mut rxb), [(Source::Delta, 4, json!([1, 2]))]);
        assert!(drain(&mut rxa).is_empty());
        assert_eq!(subs.get("a").unwrap().0, Value::Nil);
        assert!(!subs.get("a").unwrap().1.initialized);

        // A delete makes the key uninitialized again.
        let del = json!({"state": "b", "version": 6, "ops": [{"op": "REMOVE", "path": "/"}]});
        subs.on_delta(0, &v(del)).unwrap();
        let (value, meta) = subs.get("b").unwrap();
        assert!(value.is_nil() && !meta.initialized && meta.version == 6);
    }

    #[test]
    fn resubscribe_resumes_known_keys_and_watches_the_rest() {
        let mut subs = Subscriptions::default();
        let (tx1, _rx1) = roomy();
        let (tx2, _rx2) = roomy();
        subs.add_watcher("known", None, tx1);
        subs.add_watcher("fresh", None, tx2);
        subs.on_state_init(0, &v(json!({"state": "known", "version": 9, "value": 1})))
            .unwrap();
        let frames = subs.resubscribe();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].kind, FrameType::Resume);
        assert_eq!(frames[0].body.get("since_version"), Some(&Value::Int(9)));
        assert_eq!(frames[1].kind, FrameType::Watch);
    }

    #[test]
    fn the_first_watchers_params_go_with_every_watch_and_resume_of_the_key() {
        let mut subs = Subscriptions::default();
        let params = v(json!({"view": "compact", "limit": 3}));
        let (tx1, _rx1) = roomy();
        let (tx2, _rx2) = roomy();
        let (tx3, _rx3) = roomy();
        let watch = subs.add_watcher("k", Some(params.clone()), tx1).1.unwrap();
        assert_eq!(watch.body.get("params"), Some(&params));
        assert_eq!(watch.body.get("state").and_then(Value::as_str), Some("k"));
        // A second watcher shares the subscription: nothing sent, first params kept.
        assert!(subs.add_watcher("k", Some(v(json!(1))), tx2).1.is_none());
        // A watch without params sends none.
        let plain = subs.add_watcher("p", None, tx3).1.unwrap();
        assert_eq!(plain.body.get("params"), None);

        // Before STATE_INIT a reconnect watches again, with the params.
        let frames = subs.resubscribe();
        assert_eq!(frames[0].kind, FrameType::Watch);
        assert_eq!(frames[0].body.get("params"), Some(&params));
        assert_eq!(frames[1].body.get("params"), None);

        subs.on_state_init(
            0,
            &v(json!({"state": "k", "version": 4, "value": {}, "params": params.to_json()})),
        )
        .unwrap();
        let resume = &subs.resubscribe()[0];
        assert_eq!(resume.kind, FrameType::Resume);
        assert_eq!(resume.body.get("since_version"), Some(&Value::Int(4)));
        assert_eq!(resume.body.get("params"), Some(&params));

        // A DELTA that cannot apply asks again with the same params.
        let bad = json!({"state": "k", "version": 5, "ops": [{"op": "MOVE", "path": "/a"}]});
        let failure = subs.on_delta(0, &v(bad)).unwrap_err();
        assert_eq!(failure.resync.body.get("params"), Some(&params));
    }

    #[test]
    fn unknown_op_fails_loudly_and_asks_for_resync() {
        let mut subs = Subscriptions::default();
        let (tx, mut rx) = roomy();
        subs.add_watcher("k", None, tx);
        subs.on_state_init(0, &v(json!({"state": "k", "version": 1, "value": {}})))
            .unwrap();
        drain(&mut rx);
        let bad = json!({"state": "k", "version": 2, "ops": [{"op": "MOVE", "path": "/a"}]});
        let failure = subs.on_delta(0, &v(bad)).unwrap_err();
        assert!(matches!(failure.error, Error::Protocol(_)));
        assert_eq!(failure.resync.kind, FrameType::Watch);
        assert!(drain(&mut rx).is_empty());
        assert!(
            subs.get("k").is_none(),
            "cache invalid until the next STATE_INIT"
        );
    }

    #[test]
    fn deltas_for_unwatched_or_unknown_keys_are_ignored() {
        let mut subs = Subscriptions::default();
        let d =
            v(json!({"state": "x", "version": 1, "ops": [{"op": "ADD", "path": "/", "value": 1}]}));
        assert_eq!(subs.on_delta(10, &d).unwrap(), DeltaOutcome::Ignored);
        let (tx, _rx) = roomy();
        subs.add_watcher("x", None, tx);
        assert_eq!(
            subs.on_delta(10, &d).unwrap(),
            DeltaOutcome::Ignored,
            "before STATE_INIT"
        );
    }

    #[test]
    fn a_slow_watcher_is_bounded_and_never_holds_back_a_fast_one() {
        let mut subs = Subscriptions::default();
        let (fast_tx, mut fast) = roomy();
        let (slow_tx, mut slow) = mailbox(8);
        let gauge = slow.gauge();
        subs.add_watcher("k", None, fast_tx);
        subs.add_watcher("k", None, slow_tx);
        subs.on_state_init(10, &v(json!({"state": "k", "version": 1, "value": 0})))
            .unwrap();
        assert_eq!(drain(&mut fast).len(), 1);
        for n in 1..=5_000u64 {
            let d = json!({"state": "k", "version": n + 1,
                           "ops": [{"op": "UPDATE", "path": "/", "value": n}]});
            assert_eq!(subs.on_delta(10, &v(d)).unwrap(), DeltaOutcome::Applied);
            assert!(gauge.queued() <= 8, "slow watcher bounded at delta {n}");
            // The fast one reads as it goes and sees every change.
            assert_eq!(drain(&mut fast), [(Source::Delta, n + 1, json!(n))]);
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut seen = vec![];
        while let Poll::Ready(Some(u)) = slow.poll_recv(&mut cx) {
            seen.push(u);
        }
        let last = seen.last().expect("something queued");
        assert_eq!(last.meta.version, 5_001);
        assert_eq!(last.value.to_json(), json!(5_000));
        // Init + 5000 deltas, each delivered or counted as skipped.
        assert_eq!(seen.iter().map(|u| 1 + u.lagged).sum::<u64>(), 5_001);
    }

    /// The shared vectors (`tests/vectors/*.json`), run through the client's
    /// own path: STATE_INIT with `before`/`old`, then a DELTA with `ops`; the
    /// watcher must see `after`/`new` (or the DELTA must fail loudly).
    #[test]
    fn shared_vectors_through_state_init_and_delta() {
        let load = |name: &str| -> Vec<serde_json::Value> {
            let path = format!("{}/../../tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            serde_json::from_str(&text).unwrap()
        };
        let mut cases: Vec<(serde_json::Value, &str, &str)> = vec![];
        cases.extend(
            load("apply.json")
                .into_iter()
                .map(|c| (c, "before", "after")),
        );
        cases.extend(load("diff.json").into_iter().map(|c| (c, "old", "new")));
        assert!(cases.len() > 30);
        for (case, from, to) in cases {
            let name = case["name"].as_str().unwrap();
            let mut subs = Subscriptions::default();
            let (tx, mut rx) = roomy();
            subs.add_watcher("k", None, tx);
            let init =
                json!({"state": "k", "version": 1, "value": case[from], "initialized": true});
            subs.on_state_init(10, &v(init)).unwrap();
            drain(&mut rx);
            let delta = json!({"state": "k", "version": 2, "ops": case["ops"]});
            match subs.on_delta(10, &v(delta)) {
                Ok(_) if case.get("error").is_none() => {
                    let got = drain(&mut rx);
                    assert_eq!(got, [(Source::Delta, 2, case[to].clone())], "{name}");
                }
                Err(f) if case.get("error").is_some() => {
                    assert!(matches!(f.error, Error::Protocol(_)), "{name}")
                }
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn a_pattern_applies_each_delta_of_one_transaction() {
        let mut subs = Subscriptions::default();
        let (tx, mut rx) = roomy();
        subs.add_watcher("game.*", None, tx);
        subs.on_state_init(
            10,
            &v(json!({"state": "game.*", "version": 5, "value": {"game.a": 1}, "initialized": true})),
        )
        .unwrap();
        // Covered by the STATE_INIT: stale.
        let old = json!({"state": "game.*", "version": 5, "ops": [{"op": "UPDATE", "path": "/game.a", "value": 9}]});
        assert_eq!(subs.on_delta(10, &v(old)).unwrap(), DeltaOutcome::Ignored);
        // One transaction (version 7) touching two matching keys.
        let a = json!({"state": "game.*", "version": 7, "ops": [{"op": "UPDATE", "path": "/game.a", "value": 2}]});
        let b = json!({"state": "game.*", "version": 7, "ops": [{"op": "ADD", "path": "/game.b", "value": 3}]});
        assert_eq!(subs.on_delta(10, &v(a)).unwrap(), DeltaOutcome::Applied);
        assert_eq!(subs.on_delta(10, &v(b)).unwrap(), DeltaOutcome::Applied);
        let older =
            json!({"state": "game.*", "version": 6, "ops": [{"op": "REMOVE", "path": "/game.a"}]});
        assert_eq!(subs.on_delta(10, &v(older)).unwrap(), DeltaOutcome::Ignored);
        let got = drain(&mut rx);
        assert_eq!(got.last().unwrap().2, json!({"game.a": 2, "game.b": 3}));
        assert!(subs.get("game.*").unwrap().1.initialized);

        // A plain key never takes two DELTAs of one version.
        let (tx, _rx) = roomy();
        subs.add_watcher("k", None, tx);
        subs.on_state_init(11, &v(json!({"state": "k", "version": 7, "value": 1})))
            .unwrap();
        let again =
            json!({"state": "k", "version": 7, "ops": [{"op": "UPDATE", "path": "/", "value": 2}]});
        assert_eq!(subs.on_delta(11, &v(again)).unwrap(), DeltaOutcome::Ignored);
    }

    #[test]
    fn deadlines_follow_state_init_and_deltas() {
        let mut subs = Subscriptions::default();
        let (tx, _rx) = roomy();
        subs.add_watcher("k", None, tx);
        let expires = |subs: &Subscriptions| subs.get("k").unwrap().1.expires_at;
        subs.on_state_init(
            10,
            &v(json!({"state": "k", "version": 1, "value": 1, "expires_at": 5000})),
        )
        .unwrap();
        assert_eq!(expires(&subs), Some(5000));
        let set = |version: u64, extra: serde_json::Value| {
            let mut d = json!({"state": "k", "version": version, "ops": [{"op": "UPDATE", "path": "/", "value": version}]});
            d.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v(d)
        };
        subs.on_delta(10, &set(2, json!({}))).unwrap();
        assert_eq!(expires(&subs), Some(5000), "a write without ttl keeps it");
        subs.on_delta(10, &set(3, json!({"expires_at": 9000})))
            .unwrap();
        assert_eq!(expires(&subs), Some(9000), "moved");
        subs.on_delta(10, &set(4, json!({"expires_at": 0})))
            .unwrap();
        assert_eq!(expires(&subs), None, "removed");
        subs.on_delta(10, &set(5, json!({"expires_at": 7000})))
            .unwrap();
        let del = json!({"state": "k", "version": 6, "ops": [{"op": "REMOVE", "path": "/"}]});
        subs.on_delta(10, &v(del)).unwrap();
        assert_eq!(expires(&subs), None, "a delete ends it");
    }
}
