//! CALLs with an `idempotency_key` (extension `idempotency`): a write whose
//! key this identity already used for the same method + args is answered
//! with the remembered outcome and changes nothing; the same key with other
//! content is 409. See `crate::idempotency` for what is remembered and how
//! long.

use sodp_proto::call::CallArgs;

use super::Session;
use crate::error::Rejection;
use crate::idempotency::{fingerprint, reused, Fingerprint, Seen, Tag, MAX_KEY_BYTES};
use crate::methods::Reply;
use crate::store::Written;

impl Session {
    /// Cluster mode: what another node remembers for `key` — its outcome
    /// (same fingerprint), 409 (another call), `None` (nothing: run it).
    fn recall_in_cluster(&self, key: &str, print: Fingerprint) -> Option<Result<Reply, Rejection>> {
        let cluster = self.shared.cluster.get()?;
        match cluster.recall(self.identity.sub(), key) {
            Ok(recorded) => recorded.map(|recorded| outcome_of(key, print, recorded)),
            Err(e) => Some(Err(e)),
        }
    }

    /// Cluster mode: records the outcome of a call that changed nothing (a
    /// change's record is written by its commit). If a node committed the
    /// same call meanwhile — which is why this copy already held its
    /// change — that node's outcome is the answer.
    fn share_in_cluster(
        &self,
        key: &str,
        print: Fingerprint,
        written: Written,
    ) -> Result<Reply, Rejection> {
        let unchanged = Ok(Reply::Written(written));
        let Some(cluster) = self.shared.cluster.get() else {
            return unchanged;
        };
        let window = self.shared.store.idempotency.window();
        match cluster.remember(self.identity.sub(), key, print, written.version, window) {
            Ok(Some(recorded)) => outcome_of(key, print, recorded),
            Ok(None) => unchanged,
            Err(e) => {
                tracing::warn!(key, error = %e, "idempotency record not shared with the other nodes");
                unchanged
            }
        }
    }

    pub(super) fn on_idempotent_call(
        &mut self,
        call_id: &str,
        method: Option<&str>,
        args: CallArgs<'_>,
        key: &str,
    ) {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            let refusal = Rejection::bad_request(format!(
                "`idempotency_key` must be 1 to {MAX_KEY_BYTES} bytes, not {}",
                key.len()
            ));
            return self.answer(call_id, method, Err(refusal));
        }
        // A repeat is a CALL like any other for the rate limit.
        if let Err(refusal) = self.check_rate() {
            return self.answer(call_id, method, Err(refusal));
        }
        let Some(name) = method else {
            // No method: the ordinary refusal.
            let result = self.run(method, args);
            return self.answer(call_id, method, result);
        };
        let print = fingerprint(name, &args);
        let table = self.shared.store.idempotency.table(self.identity.sub());
        // Held while the call runs: a duplicate from another session of
        // this identity waits here, then finds the outcome.
        let mut records = table.lock();
        let result = match records.seen(key, print) {
            // A replay changes nothing now (the writer of record stays the
            // original call's).
            Seen::Same(written) => Ok(Reply::Written(Written {
                changed: false,
                ..written
            })),
            Seen::Reused => Err(reused(key)),
            Seen::New => match records.reserve(key) {
                Err(refusal) => Err(refusal),
                Ok(()) => {
                    let tag = Tag {
                        identity: self.identity.sub().map(str::to_owned),
                        key: key.to_owned(),
                        fingerprint: print,
                        at_ms: self.shared.clock.since_epoch().as_millis() as u64,
                    };
                    let result = match self.recall_in_cluster(key, print) {
                        // Another node applied it: its outcome, remembered here too.
                        Some(recalled) => recalled,
                        None => match self.run_tagged(method, args, Some(&tag)) {
                            Ok(Reply::Written(written)) if !written.changed => {
                                self.share_in_cluster(key, print, written)
                            }
                            result => result,
                        },
                    };
                    // Only writes are remembered; a read repeated reads again.
                    match &result {
                        Ok(Reply::Written(written)) => {
                            records.remember(&tag, *written, table.max_keys)
                        }
                        _ => records.unreserve(key),
                    }
                    result
                }
            },
        };
        drop(records);
        self.answer(call_id, method, result);
    }
}

/// The answer a remembered outcome gives a call with fingerprint `print`.
fn outcome_of(
    key: &str,
    print: Fingerprint,
    (seen, version): (Fingerprint, u64),
) -> Result<Reply, Rejection> {
    match seen == print {
        true => Ok(Reply::Written(Written {
            version,
            ticket: 0,
            changed: false,
        })),
        false => Err(reused(key)),
    }
}
