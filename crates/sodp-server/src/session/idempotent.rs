//! CALLs with an `idempotency_key` (extension `idempotency`): a write whose
//! key this identity already used for the same method + args is answered
//! with the remembered outcome and changes nothing; the same key with other
//! content is 409. See `crate::idempotency` for what is remembered and how
//! long.

use sodp_proto::call::CallArgs;

use super::Session;
use crate::error::{ErrorCode, Rejection};
use crate::idempotency::{fingerprint, Seen, MAX_KEY_BYTES};
use crate::methods::Reply;

impl Session {
    /// Cluster mode: what another node remembers for `key` — its outcome
    /// (same fingerprint), 409 (another call), `None` (nothing: run it).
    fn recall_in_cluster(
        &self,
        key: &str,
        print: crate::idempotency::Fingerprint,
    ) -> Option<Result<Reply, Rejection>> {
        let cluster = self.shared.cluster.get()?;
        match cluster.recall(self.identity.sub(), key) {
            Ok(None) => None,
            Ok(Some((seen, version))) if seen == print => {
                Some(Ok(Reply::Written(crate::store::Written {
                    version,
                    ticket: 0,
                })))
            }
            Ok(Some(_)) => Some(Err(reused(key))),
            Err(e) => Some(Err(e)),
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
        let table = self.shared.idempotency.table(self.identity.sub());
        // Held while the call runs: a duplicate from another session of
        // this identity waits here, then finds the outcome.
        let mut records = table.lock();
        let result = match records.seen(key, print) {
            Seen::Same(written) => Ok(Reply::Written(written)),
            Seen::Reused => Err(reused(key)),
            Seen::New => match self.recall_in_cluster(key, print) {
                // Another node applied it: its outcome, remembered here too.
                Some(Ok(Reply::Written(written))) => {
                    records.remember(key.to_owned(), print, written, table.max_keys);
                    Ok(Reply::Written(written))
                }
                Some(refused @ Err(_)) => refused,
                _ => {
                    let result = self.run(method, args);
                    // Only writes are remembered; a read repeated reads again.
                    if let Ok(Reply::Written(written)) = &result {
                        records.remember(key.to_owned(), print, *written, table.max_keys);
                        if let Some(cluster) = self.shared.cluster.get() {
                            let window = self.shared.idempotency.window();
                            let sub = self.identity.sub();
                            if let Err(e) =
                                cluster.remember(sub, key, print, written.version, window)
                            {
                                tracing::warn!(key, error = %e, "idempotency record not shared with the other nodes");
                            }
                        }
                    }
                    result
                }
            },
        };
        drop(records);
        self.answer(call_id, method, result);
    }
}

/// 409: the key was used for another call.
fn reused(key: &str) -> Rejection {
    Rejection::new(
        ErrorCode::Conflict,
        format!("idempotency key reused: {key:?} was used for another call"),
    )
}
