//! What cluster mode is told: where the shared engine is (and which CA
//! vouches for it over TLS), and how fast a dead node's presence goes away.

use std::path::PathBuf;
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
    /// With a `rediss://` URL: trust only the CA certificates in this PEM
    /// file (a private CA) instead of the system's.
    pub ca_file: Option<PathBuf>,
}

impl ClusterConfig {
    pub fn new(url: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            url: url.into(),
            lease: Duration::from_secs(10),
            prefix: "sodp:".into(),
            ca_file: None,
        }
    }
}
