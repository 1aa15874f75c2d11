//! Native TLS (`--tls-cert` / `--tls-key`): the rustls server configuration
//! and the certificate it serves, reloadable while the server runs.
//!
//! rustls asks a resolver for the certificate on every handshake;
//! [`Certificates`] is that resolver, holding the current chain and key
//! behind a lock that a reload swaps. A reload therefore affects only new
//! handshakes: established connections keep the keys they negotiated.
//! Reloads come from SIGHUP (the binary calls [`Certificates::reload`]) and
//! from [`watch_files`], which polls the files' metadata on tokio's clock
//! (paused in tests). A reload that fails keeps the old certificate and
//! reports why; at start the same failure stops the server.
//!
//! The served certificate's `notAfter` is kept beside it, for the
//! `sodp_tls_certificate_expiry_timestamp_seconds` gauge and a warning when
//! an expired certificate is loaded.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::asn1::{GeneralizedTime, UtcTime};
use der::{Decode, Reader, SliceReader, Tag, TagNumber};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tracing::{info, warn};

use crate::metrics::{Metrics, Outcome};

/// Where the certificate and key are, and how often to look for changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM: the server certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// How often the files' metadata is checked for a renewal.
    pub reload_interval: Duration,
}

/// How often the certificate files are checked by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

impl TlsConfig {
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig {
            cert: cert.into(),
            key: key.into(),
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }
}

/// Why a certificate and key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("TLS certificate file {0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    #[error("TLS certificate file {path}: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error("TLS key file {path}: no PEM private key in it ({message})")]
    NoKey { path: PathBuf, message: String },
    #[error("TLS key file {key} does not fit certificate {cert}: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

/// The crypto provider the whole workspace uses (sodp-client too).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What identifies a version of a file: a renewal changes at least one of
/// these (an atomic rename or a symlink swap, as cert-manager does, changes
/// the inode; rewriting in place changes the time or length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// Largest certificate or key file read: a long chain is a few KiB; this
/// keeps a wrong path (a log, a device) from being read into memory.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Reads a whole file of at most [`MAX_PEM_BYTES`].
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_PEM_BYTES} bytes: not a PEM file"),
        ));
    }
    Ok(bytes)
}

/// Reads and checks a certificate chain and its key.
fn load(config: &TlsConfig, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |what, path: &Path| {
        read_bounded(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read("certificate", &config.cert)?;
    let key_pem = read("key", &config.key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: config.cert.clone(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(config.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
        path: config.key.clone(),
        message: e.to_string(),
    })?;
    // Parses the key and checks it against the certificate's public key.
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Mismatch {
        cert: config.cert.clone(),
        key: config.key.clone(),
        message: e.to_string(),
    })
}

/// When an X.509 certificate (DER) stops being valid: the `notAfter` of
/// its validity (Certificate → tbsCertificate → validity).
fn not_after(cert: &[u8]) -> der::Result<SystemTime> {
    let mut reader = SliceReader::new(cert)?;
    let at = reader.sequence(|certificate| {
        let at = certificate.sequence(|tbs| {
            let version = Tag::ContextSpecific {
                constructed: true,
                number: TagNumber::N0,
            };
            if tbs.peek_tag()? == version {
                tbs.tlv_bytes()?;
            }
            for _serial_signature_issuer in 0..3 {
                tbs.tlv_bytes()?;
            }
            let at = tbs.sequence(|validity| {
                let _not_before = x509_time(validity)?;
                x509_time(validity)
            })?;
            skip_rest(tbs)?;
            Ok(at)
        })?;
        skip_rest(certificate)?;
        Ok(at)
    })?;
    reader.finish(at)
}

/// An X.509 `Time`: UTCTime, or GeneralizedTime from 2050 on.
fn x509_time<'r>(reader: &mut impl Reader<'r>) -> der::Result<SystemTime> {
    Ok(match reader.peek_tag()? {
        Tag::UtcTime => UtcTime::decode(reader)?.to_system_time(),
        _ => GeneralizedTime::decode(reader)?.to_system_time(),
    })
}

fn skip_rest<'r>(reader: &mut impl Reader<'r>) -> der::Result<()> {
    while !reader.is_finished() {
        reader.tlv_bytes()?;
    }
    Ok(())
}

/// The served certificate's expiry in Unix seconds (0: unreadable), with a
/// warning when it has passed already.
fn expiry_of(key: &CertifiedKey, path: &Path) -> u64 {
    let Some(leaf) = key.cert.first() else {
        return 0;
    };
    match not_after(leaf) {
        Ok(at) => {
            if at <= SystemTime::now() {
                warn!(cert = %path.display(), "the TLS certificate has expired: clients will refuse it");
            }
            at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
        }
        Err(e) => {
            warn!(cert = %path.display(), error = %e, "cannot read the TLS certificate's expiry");
            0
        }
    }
}

/// The certificate being served, and the files it came from.
pub struct Certificates {
    config: TlsConfig,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The current certificate's `notAfter`, Unix seconds (0: unreadable).
    expiry: AtomicU64,
    /// The files' stamps when last loaded (or last tried).
    seen: Mutex<(Option<Stamp>, Option<Stamp>)>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Loads the certificate and key; a failure here stops the server.
    pub fn load(config: TlsConfig) -> Result<Arc<Certificates>, TlsError> {
        let provider = provider();
        let seen = (stamp(&config.cert), stamp(&config.key));
        let key = load(&config, &provider)?;
        let expiry = expiry_of(&key, &config.cert);
        Ok(Arc::new(Certificates {
            config,
            provider,
            current: RwLock::new(Arc::new(key)),
            expiry: AtomicU64::new(expiry),
            seen: Mutex::new(seen),
        }))
    }

    /// When the certificate served now expires (its `notAfter`); `None` when
    /// it could not be read from the certificate.
    pub fn expiry(&self) -> Option<SystemTime> {
        match self.expiry.load(Ordering::Relaxed) {
            0 => None,
            secs => Some(UNIX_EPOCH + Duration::from_secs(secs)),
        }
    }

    /// Sets `sodp_tls_certificate_expiry_timestamp_seconds` to the served
    /// certificate's expiry.
    pub fn publish_expiry(&self, metrics: &Metrics) {
        let secs = self.expiry.load(Ordering::Relaxed);
        metrics
            .tls_certificate_expiry
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    /// The rustls configuration serving the current certificate (HTTP/1.1
    /// only: the WebSocket upgrade needs it).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The end-entity certificate served now (DER).
    pub fn current_der(&self) -> Vec<u8> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }

    /// Reads the files again and serves them from the next handshake on.
    /// On failure the old certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let seen = (stamp(&self.config.cert), stamp(&self.config.key));
        // Remembered even when the load fails: a half-written renewal is
        // retried when the files change again, not logged every interval.
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        let key = load(&self.config, &self.provider)?;
        let expiry = expiry_of(&key, &self.config.cert);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        self.expiry.store(expiry, Ordering::Relaxed);
        Ok(())
    }

    /// Reloads if either file changed since the last load. `Ok(true)`: a new
    /// certificate is served.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = (stamp(&self.config.cert), stamp(&self.config.key));
        if *self.seen.lock().unwrap_or_else(|e| e.into_inner()) == now {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// Reloads, logs and counts the outcome (SIGHUP).
    pub fn reload_and_log(&self, why: &str, metrics: &Metrics) {
        let result = self.reload();
        count(metrics, result.is_ok());
        self.publish_expiry(metrics);
        match result {
            Ok(()) => info!(cert = %self.config.cert.display(), why, "TLS certificate reloaded"),
            Err(e) => {
                warn!(error = %e, why, "TLS certificate reload failed; still serving the previous one")
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Counts a reload in `sodp_tls_reloads_total`.
fn count(metrics: &Metrics, ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    metrics.tls_reloads.get_or_create(&Outcome { result }).inc();
}

/// Checks the files every `reload_interval` (tokio's clock) and reloads
/// them when they change. Runs until aborted.
pub async fn watch_files(certs: Arc<Certificates>, metrics: Arc<Metrics>) {
    let period = certs.config.reload_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = certs.reload_if_changed();
        if !matches!(result, Ok(false)) {
            count(&metrics, result.is_ok());
            certs.publish_expiry(&metrics);
        }
        match result {
            Ok(true) => {
                info!(cert = %certs.config.cert.display(), "TLS certificate files changed; reloaded")
            }
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "TLS certificate files changed but do not load; still serving the previous certificate")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair {
        cert: String,
        key: String,
    }

    fn self_signed(name: &str) -> Pair {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        Pair {
            cert: c.cert.pem(),
            key: c.signing_key.serialize_pem(),
        }
    }

    /// A self-signed certificate for `name` valid until midnight UTC of
    /// the given day.
    fn valid_until(name: &str, year: i32, month: u8, day: u8) -> Pair {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn unix(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn not_after_is_read_from_utc_and_generalized_times() {
        // 2031-05-17 is encoded as UTCTime, 2051-01-02 as GeneralizedTime.
        let utc = valid_until("a", 2031, 5, 17);
        assert_eq!(not_after(&der(&utc.cert)), Ok(unix(1_936_742_400)));
        let generalized = valid_until("a", 2051, 1, 2);
        assert_eq!(not_after(&der(&generalized.cert)), Ok(unix(2_556_230_400)));
        // Not a certificate, a truncated one, trailing bytes: errors, no panic.
        let good = der(&utc.cert);
        assert!(not_after(b"").is_err());
        assert!(not_after(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
        assert!(not_after(&good[..good.len() / 2]).is_err());
        assert!(not_after(&[good.as_slice(), &[0]].concat()).is_err());
        for cut in 0..good.len() {
            let _ = not_after(&good[..cut]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_expiry_gauge_follows_the_served_certificate() {
        let d = dir("expiry");
        let mut config = write(&d, &valid_until("a", 2031, 5, 17));
        config.reload_interval = Duration::from_secs(60);
        let certs = Certificates::load(config.clone()).unwrap();
        assert_eq!(certs.expiry(), Some(unix(1_936_742_400)));
        let metrics = Arc::new(Metrics::default());
        let gauge = "sodp_tls_certificate_expiry_timestamp_seconds";
        let rendered = || metrics.render(crate::metrics::StateReading::default());
        assert!(!rendered().contains(gauge), "not exposed before it is set");
        certs.publish_expiry(&metrics);
        assert!(
            rendered().contains(&format!("{gauge} 1936742400")),
            "{}",
            rendered()
        );

        let watcher = tokio::spawn(watch_files(certs.clone(), metrics.clone()));
        let renewed = valid_until("a", 2051, 1, 2);
        std::fs::write(d.join("new-cert"), &renewed.cert).unwrap();
        std::fs::write(d.join("new-key"), &renewed.key).unwrap();
        std::fs::rename(d.join("new-cert"), &config.cert).unwrap();
        std::fs::rename(d.join("new-key"), &config.key).unwrap();
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(certs.expiry(), Some(unix(2_556_230_400)));
        assert!(rendered().contains(&format!("{gauge} 2556230400")));
        watcher.abort();
        let _ = std::fs::remove_dir_all(d);
    }

    /// What `f` logs at WARN and above, as plain text.
    fn warnings_of(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = buffer.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn loading_an_expired_certificate_warns_and_still_serves_it() {
        let d = dir("expired");
        let config = write(&d, &valid_until("a", 2001, 1, 1));
        let mut loaded = None;
        let logs = warnings_of(|| loaded = Some(Certificates::load(config.clone()).unwrap()));
        assert!(logs.contains("WARN"), "{logs}");
        assert!(logs.contains("the TLS certificate has expired"), "{logs}");
        assert!(
            logs.contains(&config.cert.display().to_string()),
            "names the file: {logs}"
        );
        // Served all the same (refusing to start would take the service
        // down for a renewal that may be minutes away), and the gauge says
        // when it ran out, so an alert fires.
        assert_eq!(loaded.unwrap().expiry(), Some(unix(978_307_200)));

        let valid = write(&d, &valid_until("a", 2051, 1, 2));
        let logs = warnings_of(|| drop(Certificates::load(valid).unwrap()));
        assert_eq!(logs, "", "a valid certificate loads quietly");
        let _ = std::fs::remove_dir_all(d);
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sodp-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write(d: &Path, p: &Pair) -> TlsConfig {
        std::fs::write(d.join("cert.pem"), &p.cert).unwrap();
        std::fs::write(d.join("key.pem"), &p.key).unwrap();
        TlsConfig::new(d.join("cert.pem"), d.join("key.pem"))
    }

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let d = dir("bad");
        let good = self_signed("a");
        let config = write(&d, &good);
        std::fs::write(&config.cert, "not a certificate").unwrap();
        let e = Certificates::load(config.clone()).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate(_)), "{e}");
        assert!(e.to_string().contains("cert.pem"), "{e}");

        std::fs::write(&config.cert, &good.cert).unwrap();
        std::fs::write(&config.key, "garbage").unwrap();
        let e = Certificates::load(config.clone()).unwrap_err();
        assert!(matches!(e, TlsError::NoKey { .. }), "{e}");

        std::fs::write(&config.key, self_signed("b").key).unwrap();
        let e = Certificates::load(config.clone()).unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");

        let missing = TlsConfig::new(d.join("nope.pem"), &config.key);
        let e = Certificates::load(missing).unwrap_err();
        assert!(matches!(e, TlsError::Read { .. }), "{e}");

        // A path to something endless is refused, not read into memory.
        let endless = TlsConfig::new("/dev/zero", &config.key);
        let e = Certificates::load(endless).unwrap_err();
        assert!(e.to_string().contains("not a PEM file"), "{e}");
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test(start_paused = true)]
    async fn changed_files_are_picked_up_on_the_next_poll_and_bad_ones_are_not() {
        let d = dir("poll");
        let first = self_signed("first");
        let mut config = write(&d, &first);
        config.reload_interval = Duration::from_secs(60);
        let certs = Certificates::load(config.clone()).unwrap();
        assert_eq!(certs.current_der(), der(&first.cert));
        let metrics = Arc::new(Metrics::default());
        let watcher = tokio::spawn(watch_files(certs.clone(), metrics.clone()));
        let reloads = |result| metrics.tls_reloads.get_or_create(&Outcome { result }).get();

        // A renewal: new files, renamed into place.
        let second = self_signed("second");
        std::fs::write(d.join("new-cert"), &second.cert).unwrap();
        std::fs::write(d.join("new-key"), &second.key).unwrap();
        std::fs::rename(d.join("new-cert"), &config.cert).unwrap();
        std::fs::rename(d.join("new-key"), &config.key).unwrap();
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(certs.current_der(), der(&first.cert), "not before the poll");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(certs.current_der(), der(&second.cert));
        assert_eq!((reloads("ok"), reloads("failed")), (1, 0));

        // A broken renewal (a key that does not fit): the old one stays.
        std::fs::write(d.join("new-key"), self_signed("x").key).unwrap();
        std::fs::rename(d.join("new-key"), &config.key).unwrap();
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(certs.current_der(), der(&second.cert));
        assert_eq!((reloads("ok"), reloads("failed")), (1, 1));
        // Counted (and logged) once, not at every poll.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(reloads("failed"), 1);
        assert!(certs.reload().is_err());
        assert_eq!(certs.current_der(), der(&second.cert));
        watcher.abort();
        let _ = std::fs::remove_dir_all(d);
    }
}
