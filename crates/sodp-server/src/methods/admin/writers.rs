//! `admin.writers {versions: [...]}` → `{writers: [{version, session,
//! subject, method, at}]}`: who made each of those changes, for the ones
//! still remembered (see `crate::writers`: only with `--inspector`, the
//! newest 4,096 changes, and only changes a session made). At most
//! [`MAX_VERSIONS`] versions per call.

use serde_json::json;
use sodp_proto::Value;

use super::{data, Args, Context, Method, Reply};
use crate::error::Rejection;

pub const MAX_VERSIONS: usize = 1000;

pub(in crate::methods) struct Writers {
    versions: Vec<u64>,
}

impl Method for Writers {
    fn parse(args: &mut Args<'_>) -> Result<Self, Rejection> {
        let bad = || {
            Rejection::bad_request(format!(
                "admin.writers: argument `versions` must be a list of at most {MAX_VERSIONS} integers ≥ 0"
            ))
        };
        let list = args.value("versions")?;
        let items = list.as_array().ok_or_else(bad)?;
        if items.len() > MAX_VERSIONS {
            return Err(bad());
        }
        let versions = items
            .iter()
            .map(Value::as_u64)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        Ok(Writers { versions })
    }

    fn run(self, cx: &mut Context<'_>) -> Result<Reply, Rejection> {
        let found = match &cx.shared.writers {
            Some(w) => w.lookup(&self.versions),
            None => Default::default(),
        };
        let mut records: Vec<_> = found.into_values().collect();
        records.sort_by_key(|r| r.version);
        let writers: Vec<_> = records
            .iter()
            .map(|r| {
                json!({
                    "version": r.version,
                    "session": r.session,
                    "subject": r.subject.as_deref(),
                    "method": r.method,
                    "at": r.at_ms,
                })
            })
            .collect();
        data(json!({ "writers": writers }))
    }
}
