//! Extension `idempotency` across nodes: the outcome of an idempotent write
//! is also kept in Redis (`<p>idem:<len>:<identity>:<key>`, with the window
//! as its TTL), so a client that reconnects to another node and repeats the
//! write gets the original outcome there too.
//!
//! A write that changes something records its outcome inside the commit
//! script (`commit.lua`), which also refuses to commit a call whose record
//! exists: the change and its record land in one step, and two nodes
//! running the same call at once apply it once. [`Cluster::recall`] is the
//! fast path before a write is drafted; [`Cluster::remember`] records the
//! outcome of a write that changed nothing (no commit to carry it), or
//! finds the record of the node that committed the same call meanwhile.

use std::time::Duration;

use super::commit::parse_record;
use super::Cluster;
use crate::error::Rejection;
use crate::idempotency::Fingerprint;

impl Cluster {
    /// The outcome remembered for `key` by any node: its fingerprint and
    /// the version it answered.
    pub fn recall(
        &self,
        identity: Option<&str>,
        key: &str,
    ) -> Result<Option<(Fingerprint, u64)>, Rejection> {
        let mut con = self.conn.manager();
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.names.idempotency(identity, key));
        let raw: Option<Vec<u8>> = self
            .conn
            .observe(self.conn.block(cmd.query_async(&mut con)))?;
        Ok(raw.and_then(|raw| parse_record(&raw)))
    }

    /// Remembers the outcome of an idempotent write that changed nothing,
    /// for `window` — unless a record exists: the first outcome stands and
    /// is returned.
    pub fn remember(
        &self,
        identity: Option<&str>,
        key: &str,
        print: Fingerprint,
        version: u64,
        window: Duration,
    ) -> Result<Option<(Fingerprint, u64)>, Rejection> {
        let mut con = self.conn.manager();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.names.idempotency(identity, key))
            .arg(format!("{} {} {version}", print.0, print.1))
            .arg("PX")
            .arg(window.as_millis().max(1) as u64)
            .arg("NX")
            .arg("GET");
        let prior: Option<Vec<u8>> = self
            .conn
            .observe(self.conn.block(cmd.query_async(&mut con)))?;
        Ok(prior.and_then(|raw| parse_record(&raw)))
    }
}
