//! Extension `idempotency` across nodes: the outcome of a successful
//! idempotent write is also kept in Redis (`<p>idem:<identity>:<key>`, with
//! the window as its TTL), so a client that reconnects to another node and
//! repeats the write gets the original outcome there too.
//!
//! The record is written right after the commit script returns, before the
//! RESULT leaves: a node that dies in that instant (after the commit, before
//! the record) leaves a write whose RESULT never left, which a retry on
//! another node applies again — the one window left (documented).

use std::time::Duration;

use super::Cluster;
use crate::error::Rejection;
use crate::idempotency::Fingerprint;

impl Cluster {
    fn idempotency_name(&self, identity: Option<&str>, key: &str) -> String {
        // The identity is length-prefixed so that no (identity, key) pair
        // can spell another's name.
        let identity = identity.unwrap_or("");
        format!(
            "{}idem:{}:{identity}:{key}",
            self.names.prefix(),
            identity.len()
        )
    }

    /// The outcome remembered for `key` by any node: its fingerprint and
    /// the version it answered.
    pub fn recall(
        &self,
        identity: Option<&str>,
        key: &str,
    ) -> Result<Option<(Fingerprint, u64)>, Rejection> {
        let mut con = self.conn.manager();
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.idempotency_name(identity, key));
        let raw: Option<String> = self
            .conn
            .observe(self.conn.block(cmd.query_async(&mut con)))?;
        Ok(raw.and_then(|raw| {
            let mut fields = raw.split(' ').map(str::parse::<u64>);
            match (fields.next(), fields.next(), fields.next()) {
                (Some(Ok(a)), Some(Ok(b)), Some(Ok(version))) => Some(((a, b), version)),
                _ => None,
            }
        }))
    }

    /// Remembers a successful idempotent write for `window`.
    pub fn remember(
        &self,
        identity: Option<&str>,
        key: &str,
        print: Fingerprint,
        version: u64,
        window: Duration,
    ) -> Result<(), Rejection> {
        let mut con = self.conn.manager();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.idempotency_name(identity, key))
            .arg(format!("{} {} {version}", print.0, print.1))
            .arg("PX")
            .arg(window.as_millis().max(1) as u64);
        self.conn
            .observe(self.conn.block(cmd.query_async::<()>(&mut con)))
    }
}
