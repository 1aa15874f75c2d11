//! `admin.keys {prefix?, after?, limit?}` → `{keys: [{key, version, size,
//! written_at?, writer?}], next?}`: `state.keys` with what the inspector
//! shows per key — the version, the exact encoded size in bytes, and when
//! and by which session the last change was made if that is still
//! remembered (see `crate::writers`). Keys the session may not read are
//! left out, as in `state.keys`; at most 200 per page.

use serde_json::json;

use super::{data_at, Args, Context, Method, Reply};
use crate::error::Rejection;
use crate::methods::keys::KeyQuery;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

pub(in crate::methods) struct Keys(KeyQuery);

impl Method for Keys {
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection> {
        KeyQuery::parse(args, DEFAULT_LIMIT, MAX_LIMIT).map(Keys)
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        let store = &cx.shared.store;
        let page = self.0.page(cx, "admin.keys")?;
        let reads: Vec<_> = page.keys.iter().map(|k| store.read(k)).collect();
        let ticket = reads
            .iter()
            .map(|r| r.1)
            .max()
            .unwrap_or(0)
            .max(page.ticket);
        let snapshots: Vec<_> = reads.into_iter().map(|r| r.0).collect();
        let versions: Vec<u64> = snapshots.iter().map(|s| s.version).collect();
        let writers = match &cx.shared.writers {
            Some(w) => w.lookup(&versions),
            None => Default::default(),
        };
        let keys: Vec<_> = page
            .keys
            .iter()
            .zip(&snapshots)
            .map(|(key, snap)| {
                let w = writers.get(&snap.version);
                json!({
                    "key": key,
                    "version": snap.version,
                    "size": sodp_proto::codec::encoded_len(&snap.value),
                    "written_at": w.map(|w| w.at_ms),
                    "writer": w.map(|w| w.session),
                })
            })
            .collect();
        let mut out = json!({ "keys": keys });
        if let Some(next) = page.next {
            out["next"] = json!(next);
        }
        data_at(out, ticket)
    }
}
