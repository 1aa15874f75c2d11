//! Command-line flags and `SODP_*` environment variables → [`Config`].
//!
//! Accepts the reference server's positional form
//! `sodp-server ADDR [LOG_DIR] [SCHEMA_FILE]` as well as flags; a flag or
//! variable for a feature this build does not have yet is refused with a
//! clear message rather than silently ignored.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sodp_auth::env::{self as vars, read_secret};
use sodp_auth::jwt::JwtConfig;
use sodp_auth::SecurityConfig;

use sodp_server::config::{
    default_max_memory, AdminClaim, Config, InspectorConfig, Limits, StorageConfig,
};
use sodp_server::proxy::TrustedProxies;
use sodp_server::storage::durable::Fsync;
use sodp_server::tls::TlsConfig;

/// SODP state-synchronisation server (WebSocket + MessagePack).
#[derive(Debug, Parser)]
#[command(
    name = "sodp-server",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SODP_COMMIT"), ")"),
    about,
    long_about = None
)]
pub struct Args {
    /// Address to listen on (host:port, or just a port).
    #[arg(value_name = "ADDR")]
    pub addr_positional: Option<String>,
    /// Data directory for durable state (the reference's LOG_DIR; "" = in memory).
    #[arg(value_name = "LOG_DIR")]
    pub log_dir_positional: Option<String>,
    /// Schema file validating values per key (see docs/SECURITY.md).
    #[arg(value_name = "SCHEMA_FILE")]
    pub schema_positional: Option<String>,

    /// Address to listen on; the positional ADDR wins if both are given.
    #[arg(long, env = "SODP_ADDR", default_value = "127.0.0.1:7777")]
    pub addr: String,
    /// Port to listen on, overriding the port of --addr.
    #[arg(long, env = "SODP_PORT")]
    pub port: Option<u16>,
    /// Extra port (on the same host) answering only GET /health.
    #[arg(long, env = "SODP_HEALTH_PORT")]
    pub health_port: Option<u16>,

    /// Serve wss:// with this certificate chain (PEM, server certificate
    /// first); needs --tls-key. Reloaded when the file changes or on SIGHUP.
    #[arg(long, env = "SODP_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SODP_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<String>,
    /// Seconds between checks of the certificate files for a renewal.
    #[arg(long, env = "SODP_TLS_RELOAD_SECS", default_value_t = 30.0)]
    pub tls_reload_secs: f64,
    /// Comma-separated IPs/CIDRs of reverse proxies whose X-Forwarded-For
    /// names the client (per-IP caps and logs use it); others' is ignored.
    #[arg(long, env = "SODP_TRUSTED_PROXIES", value_name = "LIST")]
    pub trusted_proxies: Option<String>,

    /// Largest accepted WebSocket message, in bytes.
    #[arg(long, env = "SODP_MAX_FRAME_BYTES", default_value_t = Limits::default().max_message_bytes)]
    pub max_message_bytes: usize,
    /// Deepest nesting of a value.
    #[arg(long, env = "SODP_MAX_DEPTH", default_value_t = Limits::default().max_depth)]
    pub max_depth: usize,
    /// Longest key, in bytes.
    #[arg(long, env = "SODP_MAX_KEY_LEN", default_value_t = Limits::default().max_key_len)]
    pub max_key_len: usize,
    /// Most keys one session may watch.
    #[arg(long, env = "SODP_MAX_SUBSCRIPTIONS", default_value_t = Limits::default().max_subscriptions)]
    pub max_subscriptions: usize,
    /// Most presence paths one session may hold.
    #[arg(long, env = "SODP_MAX_PRESENCE_PATHS", default_value_t = Limits::default().max_presence_paths)]
    pub max_presence_paths: usize,
    /// Most keys the server holds (unlimited if unset).
    #[arg(long, env = "SODP_MAX_KEYS")]
    pub max_keys: Option<usize>,
    /// Largest value one key may hold, in encoded bytes (0 = unlimited).
    #[arg(long, env = "SODP_MAX_VALUE_BYTES", default_value_t = 16 << 20)]
    pub max_value_bytes: usize,
    /// Bytes the store may hold in all (values, key slots, presence,
    /// history); beyond it growing writes get 507. Default: a quarter of the
    /// machine's (or cgroup's) memory.
    #[arg(long, env = "SODP_MAX_MEMORY")]
    pub max_memory: Option<usize>,
    /// Changes kept per key for RESUME.
    #[arg(long, env = "SODP_HISTORY", default_value_t = Config::default().history_len)]
    pub history: usize,
    /// Total bytes of RESUME history across all keys.
    #[arg(long, env = "SODP_HISTORY_BYTES", default_value_t = Config::default().history_bytes)]
    pub history_bytes: usize,
    /// Outbound queue per session, in frames; a subscriber this far behind is evicted.
    #[arg(long, env = "SODP_BACKPRESSURE_LIMIT", default_value_t = Config::default().outbound_queue)]
    pub outbound_queue: usize,
    /// Seconds between server HEARTBEATs; two silent intervals close a connection.
    #[arg(long, env = "SODP_WS_PING_INTERVAL", default_value_t = 30.0)]
    pub heartbeat_secs: f64,
    /// Let the kernel back the heap with transparent huge pages (off by
    /// default: each one faulted in is 2 MiB zeroed on a worker thread).
    #[arg(long, env = "SODP_HUGE_PAGES")]
    pub huge_pages: bool,
    /// TOML file holding any of these options by their long names
    /// (`max_memory = 1000000`); flags and SODP_* variables take precedence.
    #[arg(long, env = "SODP_CONFIG", value_name = "FILE")]
    pub config: Option<String>,
    /// Print the effective configuration (with where each value came from,
    /// secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log lines as `text` (for people) or `json` (one object per line, for
    /// collectors). The level comes from RUST_LOG (default info).
    #[arg(long, env = "SODP_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Seconds SIGTERM waits for sessions to flush and close before exiting.
    #[arg(long, env = "SODP_SHUTDOWN_GRACE_SECS", default_value_t = 5.0)]
    pub shutdown_grace_secs: f64,
    /// Seconds a client has to send its HTTP upgrade request.
    #[arg(long, env = "SODP_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10.0)]
    pub handshake_timeout_secs: f64,

    /// Data directory: keys, values, versions and history survive restarts.
    /// Unset or "": in memory.
    #[arg(long, visible_alias = "log-dir", env = "SODP_LOG_DIR")]
    pub data_dir: Option<String>,
    /// When writes reach stable storage: `always` (before the RESULT and the
    /// DELTAs leave; concurrent writes share one sync), `batch` (within
    /// --fsync-interval-ms; a crash may take back what watchers saw), `never`
    /// (the OS decides).
    #[arg(long, env = "SODP_FSYNC", default_value = "always", value_parser = ["always", "batch", "never"])]
    pub fsync: String,
    /// With --fsync batch: the longest a write waits for its sync.
    #[arg(long, env = "SODP_FSYNC_INTERVAL_MS", default_value_t = 100)]
    pub fsync_interval_ms: u64,
    /// Log bytes after which a checkpoint is written and older log deleted.
    #[arg(long, env = "SODP_CHECKPOINT_BYTES", default_value_t = 64 << 20)]
    pub checkpoint_bytes: u64,
    /// Start even if the data directory is damaged, keeping what can be read
    /// (what was skipped is logged).
    #[arg(long, env = "SODP_RECOVER")]
    pub recover: bool,
    /// JSON schema file: value types per key (see docs/SECURITY.md).
    #[arg(long, env = "SODP_SCHEMA_FILE")]
    pub schema_file: Option<String>,
    /// HS256 shared secret; enables JWT authentication.
    #[arg(long, env = "SODP_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// File holding the HS256 secret.
    #[arg(long, env = "SODP_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<String>,
    /// RS256 public key, inline PEM.
    #[arg(long, env = "SODP_JWT_PUBLIC_KEY", hide_env_values = true)]
    pub jwt_public_key: Option<String>,
    /// RS256 public key file (PEM).
    #[arg(long, env = "SODP_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<String>,
    /// ES256 (P-256) public key, inline PEM.
    #[arg(long, env = "SODP_JWT_ES256_PUBLIC_KEY", hide_env_values = true)]
    pub jwt_es256_public_key: Option<String>,
    /// ES256 public key file (PEM).
    #[arg(long, env = "SODP_JWT_ES256_PUBLIC_KEY_FILE")]
    pub jwt_es256_public_key_file: Option<String>,
    /// Required `iss` claim.
    #[arg(long, env = "SODP_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "SODP_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock-skew allowance for `exp`/`nbf`, seconds (default 0).
    #[arg(long, env = "SODP_JWT_LEEWAY_SECS", default_value_t = 0)]
    pub jwt_leeway_secs: u64,
    /// Seconds a client has to authenticate after HELLO (default 10).
    #[arg(long, env = "SODP_AUTH_TIMEOUT_SECS", default_value_t = vars::DEFAULT_AUTH_TIMEOUT_SECS)]
    pub auth_timeout_secs: u64,
    /// ACL file: per-key read/write rules (see docs/SECURITY.md).
    #[arg(long, env = "SODP_ACL_FILE")]
    pub acl_file: Option<String>,
    /// Writes per second per session (beyond: 429).
    #[arg(long, env = "SODP_RATE_WRITES_PER_SEC", default_value_t = 0)]
    pub rate_writes_per_sec: u32,
    /// WATCH/RESUME frames per second per session (beyond: 429).
    #[arg(long, env = "SODP_RATE_WATCHES_PER_SEC", default_value_t = 0)]
    pub rate_watches_per_sec: u32,
    /// Comma-separated allowed WebSocket `Origin`s (`*` = any; unset = any).
    #[arg(long, env = "SODP_ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,
    /// Maximum concurrent connections (0 or unset = unlimited).
    #[arg(long, env = "SODP_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
    /// Maximum concurrent connections per client IP.
    #[arg(long, env = "SODP_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,
    /// Cluster mode: several nodes share one state in this Redis (or
    /// Valkey), `redis://host:port[/db]`. Requires `appendfsync always` on
    /// the Redis side for acknowledged writes to survive its crash.
    #[arg(long, env = "SODP_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Cluster mode over `rediss://`: trust only the CA certificates in
    /// this PEM file (a private CA) instead of the system's.
    #[arg(long, env = "SODP_REDIS_CA_FILE")]
    pub redis_ca_file: Option<String>,
    /// Cluster mode: a node silent this long is dead and the others remove
    /// its sessions' presence paths (renewed every third of it).
    #[arg(long, env = "SODP_CLUSTER_LEASE_MS", default_value_t = 10_000)]
    pub cluster_lease_ms: u64,
    /// Cluster mode: prefix of every Redis key and channel.
    #[arg(long, env = "SODP_CLUSTER_PREFIX", default_value = "sodp:")]
    pub cluster_prefix: String,
    /// Port (on the listen address's host) serving Prometheus metrics at
    /// GET /metrics, plus /health and /ready.
    #[arg(long, env = "SODP_METRICS_PORT")]
    pub metrics_port: Option<u16>,

    /// Serve the web inspector at /inspector on the main port (loopback
    /// peers only unless --inspector-public, or tokens with
    /// --inspector-admin-claim decide). Read-only unless --inspector-writes.
    #[arg(long, env = "SODP_INSPECTOR")]
    pub inspector: bool,
    /// Serve the inspector to any address; without authentication every
    /// client is then an administrator (admin.* methods).
    #[arg(long, env = "SODP_INSPECTOR_PUBLIC")]
    pub inspector_public: bool,
    /// Let the inspector write (set/patch/set_in/delete, still under the ACL).
    #[arg(long, env = "SODP_INSPECTOR_WRITES")]
    pub inspector_writes: bool,
    /// With JWT authentication: the claim that makes a token an
    /// administrator's, CLAIM:VALUE (e.g. role:admin; a list claim must
    /// contain VALUE). Without it, nobody is an administrator.
    #[arg(long, env = "SODP_INSPECTOR_ADMIN_CLAIM", value_name = "CLAIM:VALUE")]
    pub inspector_admin_claim: Option<String>,
}

impl Args {
    /// Parses the command line, the `SODP_*` variables and the config file.
    /// With `--print-config`, prints the effective configuration and exits.
    pub fn load() -> Args {
        use clap::{CommandFactory, FromArgMatches};
        let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let (cmd, from_file) = match crate::config_file::apply(Args::command(), &argv) {
            Ok(applied) => applied,
            Err(message) => {
                eprintln!("sodp-server: {message}");
                std::process::exit(2);
            }
        };
        let matches = cmd.clone().get_matches_from(argv);
        let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if args.print_config {
            print!("{}", crate::config_file::render(&matches, &cmd, &from_file));
            std::process::exit(0);
        }
        args
    }

    /// Builds the configuration, or explains what is wrong.
    pub fn into_config(self) -> Result<Config, String> {
        if self.cluster_lease_ms < 100 {
            return Err(format!(
                "--cluster-lease-ms must be at least 100, got {}",
                self.cluster_lease_ms
            ));
        }
        let cluster = self
            .redis_url
            .as_ref()
            .map(|url| sodp_server::cluster::ClusterConfig {
                url: url.clone(),
                lease: Duration::from_millis(self.cluster_lease_ms),
                prefix: self.cluster_prefix.clone(),
                ca_file: non_empty(self.redis_ca_file.as_deref()).map(Into::into),
            });
        if cluster.is_none() && non_empty(self.redis_ca_file.as_deref()).is_some() {
            return Err("--redis-ca-file needs --redis-url (a rediss:// URL)".into());
        }

        let security = self.security_config()?;
        let mut addr = resolve(self.addr_positional.as_deref().unwrap_or(&self.addr))?;
        if let Some(port) = self.port {
            addr.set_port(port);
        }
        let health_addr = self.health_port.map(|p| SocketAddr::new(addr.ip(), p));
        let metrics_addr = self.metrics_port.map(|p| SocketAddr::new(addr.ip(), p));
        let secs = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(format!(
                    "{name} must be a positive number of seconds, got {v}"
                ))
            }
        };
        if self.max_depth == 0 || self.max_message_bytes == 0 || self.outbound_queue == 0 {
            return Err(
                "--max-depth, --max-message-bytes and --outbound-queue must be positive".into(),
            );
        }
        let data_dir =
            non_empty(self.data_dir.as_deref()).or(non_empty(self.log_dir_positional.as_deref()));
        let storage = data_dir.map(|dir| StorageConfig {
            fsync: match self.fsync.as_str() {
                "batch" => Fsync::Batch(Duration::from_millis(self.fsync_interval_ms.max(1))),
                "never" => Fsync::Never,
                _ => Fsync::Always,
            },
            checkpoint_bytes: self.checkpoint_bytes.max(1),
            salvage: self.recover,
            ..StorageConfig::new(dir)
        });
        let tls = match (
            non_empty(self.tls_cert.as_deref()),
            non_empty(self.tls_key.as_deref()),
        ) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                reload_interval: secs("--tls-reload-secs", self.tls_reload_secs)?,
                ..TlsConfig::new(cert, key)
            }),
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together: give both or neither".into()),
        };
        let trusted_proxies = TrustedProxies::parse(self.trusted_proxies.as_deref().unwrap_or(""))
            .map_err(|e| e.to_string())?;
        Ok(Config {
            addr,
            health_addr,
            metrics_addr,
            tls,
            trusted_proxies,
            storage,
            cluster,
            limits: Limits {
                max_message_bytes: self.max_message_bytes,
                max_depth: self.max_depth,
                max_key_len: self.max_key_len,
                max_subscriptions: self.max_subscriptions,
                max_presence_paths: self.max_presence_paths,
                max_keys: self.max_keys,
                max_value_bytes: (self.max_value_bytes > 0).then_some(self.max_value_bytes),
                max_memory: self.max_memory.unwrap_or_else(default_max_memory),
            },
            heartbeat_interval: secs("--heartbeat-secs", self.heartbeat_secs)?,
            history_len: self.history,
            history_bytes: self.history_bytes,
            outbound_queue: self.outbound_queue,
            handshake_timeout: secs("--handshake-timeout-secs", self.handshake_timeout_secs)?,
            shutdown_grace: secs("--shutdown-grace-secs", self.shutdown_grace_secs)?,
            security,
            inspector: InspectorConfig {
                enabled: self.inspector,
                public: self.inspector_public,
                writes: self.inspector_writes,
                admin_claim: non_empty(self.inspector_admin_claim.as_deref())
                    .map(AdminClaim::parse)
                    .transpose()
                    .map_err(|e| format!("--inspector-admin-claim: {e}"))?,
            },
            ..Config::default()
        })
    }
}

impl Args {
    /// The security options, read once by clap (flag or variable) and
    /// validated when the server builds its policy.
    fn security_config(&self) -> Result<SecurityConfig, String> {
        let secret = |var, inline: &Option<String>, file_var, file: &Option<String>| {
            read_secret(var, inline.as_deref(), file_var, file.as_deref())
                .map_err(|e| e.to_string())
        };
        let schema =
            non_empty(self.schema_file.as_deref()).or(non_empty(self.schema_positional.as_deref()));
        Ok(SecurityConfig {
            jwt: JwtConfig {
                hs256_secret: secret(
                    vars::SODP_JWT_SECRET,
                    &self.jwt_secret,
                    vars::SODP_JWT_SECRET_FILE,
                    &self.jwt_secret_file,
                )?,
                rs256_public_key_pem: secret(
                    vars::SODP_JWT_PUBLIC_KEY,
                    &self.jwt_public_key,
                    vars::SODP_JWT_PUBLIC_KEY_FILE,
                    &self.jwt_public_key_file,
                )?,
                es256_public_key_pem: secret(
                    vars::SODP_JWT_ES256_PUBLIC_KEY,
                    &self.jwt_es256_public_key,
                    vars::SODP_JWT_ES256_PUBLIC_KEY_FILE,
                    &self.jwt_es256_public_key_file,
                )?,
                issuer: non_empty(self.jwt_issuer.as_deref()).map(str::to_owned),
                audience: non_empty(self.jwt_audience.as_deref()).map(str::to_owned),
                leeway_secs: self.jwt_leeway_secs,
            },
            auth_timeout_secs: self.auth_timeout_secs,
            acl_file: non_empty(self.acl_file.as_deref()).map(PathBuf::from),
            schema_file: schema.map(PathBuf::from),
            rate_writes_per_sec: self.rate_writes_per_sec,
            rate_watches_per_sec: self.rate_watches_per_sec,
            allowed_origins: non_empty(self.allowed_origins.as_deref()).map(str::to_owned),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
        })
    }
}

/// An option given as the empty string counts as not given (the reference's
/// `sodp-server ADDR "" SCHEMA_FILE` form) — except secrets, where empty is
/// an error (`read_secret`).
fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

/// `host:port`, `:port` or a bare port (on 127.0.0.1).
fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = addr.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let addr = if addr.starts_with(':') {
        format!("127.0.0.1{addr}")
    } else {
        addr.to_owned()
    };
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve listen address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("listen address {addr:?} resolves to nothing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["sodp-server"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .into_config()
    }

    #[test]
    fn defaults_serve_localhost_7777() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.addr, "127.0.0.1:7777".parse().unwrap());
        assert_eq!(c.history_len, 1000);
        assert_eq!(c.outbound_queue, 1024);
    }

    #[test]
    fn positional_and_flags() {
        assert_eq!(
            parse(&["0.0.0.0:9000"]).unwrap().addr,
            "0.0.0.0:9000".parse().unwrap()
        );
        assert_eq!(parse(&["9001"]).unwrap().addr.port(), 9001);
        assert_eq!(
            parse(&["--addr", "127.0.0.1:1", "--port", "2"])
                .unwrap()
                .addr
                .port(),
            2
        );
        let c = parse(&["127.0.0.1:1", "/tmp/log"]).unwrap();
        assert_eq!(
            c.storage.unwrap().dir,
            std::path::PathBuf::from("/tmp/log"),
            "the positional LOG_DIR is the data directory"
        );
        let c = parse(&[
            "--data-dir",
            "/d",
            "--fsync",
            "batch",
            "--fsync-interval-ms",
            "20",
        ])
        .unwrap();
        let sc = c.storage.unwrap();
        assert_eq!(sc.fsync, Fsync::Batch(Duration::from_millis(20)));
        assert!(parse(&["--data-dir", "/d", "--fsync", "sometimes"]).is_err());
        assert_eq!(
            parse(&["--fsync", "never"]).unwrap().storage.map(|s| s.dir),
            None
        );
        assert!(parse(&["--heartbeat-secs", "0"]).is_err());
    }

    #[test]
    fn an_empty_log_dir_means_in_memory() {
        let dir = std::env::temp_dir().join(format!("sodp-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let schema = dir.join("schema.json");
        std::fs::write(&schema, "{}").unwrap();
        let c = parse(&["127.0.0.1:7001", "", schema.to_str().unwrap()]).unwrap();
        assert_eq!(c.addr.port(), 7001);
        assert_eq!(c.security.schema_file.as_deref(), Some(schema.as_path()));
        let c = parse(&["127.0.0.1:7001", ""]).unwrap();
        assert_eq!(c.security.schema_file, None);
    }

    #[test]
    fn security_flags_are_typed_once() {
        let c = parse(&[
            "--jwt-secret",
            "s3cret",
            "--jwt-issuer",
            "https://issuer",
            "--jwt-leeway-secs",
            "5",
            "--auth-timeout-secs",
            "3",
            "--rate-writes-per-sec",
            "50",
            "--max-connections-per-ip",
            "20",
            "--acl-file",
            "",
        ])
        .unwrap();
        let s = &c.security;
        assert_eq!(s.jwt.hs256_secret.as_deref(), Some("s3cret"));
        assert_eq!(s.jwt.issuer.as_deref(), Some("https://issuer"));
        assert_eq!((s.jwt.leeway_secs, s.auth_timeout_secs), (5, 3));
        assert_eq!((s.rate_writes_per_sec, s.max_connections_per_ip), (50, 20));
        assert_eq!(s.acl_file, None, "empty = not given");
        let e = parse(&["--rate-writes-per-sec", "ten"]).unwrap_err();
        assert!(e.contains("rate-writes-per-sec"), "{e}");
        let e = parse(&["--jwt-secret", ""]).unwrap_err();
        assert!(e.contains("SODP_JWT_SECRET"), "{e}");
    }

    #[test]
    fn a_redis_ca_file_goes_with_a_redis_url() {
        assert_eq!(parse(&[]).unwrap().cluster.map(|c| c.ca_file), None);
        let c = parse(&[
            "--redis-url",
            "rediss://r:6380",
            "--redis-ca-file",
            "ca.pem",
        ])
        .unwrap();
        let ca = c.cluster.unwrap().ca_file.unwrap();
        assert_eq!(ca.to_str(), Some("ca.pem"));
        let e = parse(&["--redis-ca-file", "ca.pem"]).unwrap_err();
        assert!(e.contains("--redis-url"), "{e}");
    }

    #[test]
    fn tls_needs_both_files_and_proxies_must_parse() {
        assert_eq!(parse(&[]).unwrap().tls, None);
        let c = parse(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-reload-secs",
            "5",
        ])
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(
            (tls.cert.to_str(), tls.key.to_str()),
            (Some("c.pem"), Some("k.pem"))
        );
        assert_eq!(tls.reload_interval, Duration::from_secs(5));
        let e = parse(&["--tls-cert", "c.pem"]).unwrap_err();
        assert!(e.contains("--tls-key"), "{e}");
        let c = parse(&["--trusted-proxies", "127.0.0.1, 10.0.0.0/8"]).unwrap();
        assert!(c.trusted_proxies.trusts("10.9.9.9".parse().unwrap()));
        let e = parse(&["--trusted-proxies", "10.0.0.0/40"]).unwrap_err();
        assert!(e.contains("10.0.0.0/40"), "{e}");
    }

    #[test]
    fn inspector_flags() {
        let c = parse(&[]).unwrap();
        assert!(!c.inspector.enabled && !c.inspector.writes && !c.inspector.public);
        let c = parse(&[
            "--inspector",
            "--inspector-writes",
            "--inspector-admin-claim",
            "cognito:groups:admin",
        ])
        .unwrap();
        assert!(c.inspector.enabled && c.inspector.writes && !c.inspector.public);
        let claim = c.inspector.admin_claim.unwrap();
        assert_eq!(
            (claim.claim.as_str(), claim.value.as_str()),
            ("cognito:groups", "admin")
        );
        let e = parse(&["--inspector-admin-claim", "role"]).unwrap_err();
        assert!(e.contains("CLAIM:VALUE"), "{e}");
    }

    #[test]
    fn the_default_nesting_limit_is_128_and_memory_has_a_budget() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.limits.max_depth, 128);
        assert!(c.limits.max_memory > 0);
        let c = parse(&["--max-memory", "1000000"]).unwrap();
        assert_eq!(c.limits.max_memory, 1_000_000);
    }
}
