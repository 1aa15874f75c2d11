//! What cluster mode is told: where the shared engine is, and how fast a
//! dead node's presence goes away.

use std::time::Duration;

/// `--redis-url` and the options beside it.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://host:port[/db]` (or `rediss://` with TLS), Redis or Valkey.
    pub url: String,
    /// A node that has not renewed its lease for this long is dead: the
    /// survivors remove its presence paths. Renewed every third of it.
    pub lease: Duration,
    /// Prefix of every Redis key and channel this cluster uses (several
    /// clusters may share one Redis with different prefixes).
    pub prefix: String,
}

impl ClusterConfig {
    pub fn new(url: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            url: url.into(),
            lease: Duration::from_secs(10),
            prefix: "sodp:".into(),
        }
    }
}
