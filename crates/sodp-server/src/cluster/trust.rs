//! Which certificates a `rediss://` connection trusts: the system's CA
//! store (as for any TLS client), or — with `--redis-ca-file` — only the
//! certificates of one PEM file, for a Redis whose certificate a private
//! CA signed. The file is read and checked before the first connection,
//! so a missing, empty or malformed file stops the node at start with an
//! error naming it.

use std::path::{Path, PathBuf};

use redis::{Client, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Why the CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("--redis-ca-file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--redis-ca-file {path}: not a PEM certificate: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("--redis-ca-file {path}: no certificate in it (expected \"-----BEGIN CERTIFICATE-----\" blocks)")]
    Empty { path: PathBuf },
    #[error("--redis-ca-file {path}: certificate {index} is not usable as a CA: {reason}")]
    Anchor {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("--redis-ca-file is only for TLS: the Redis URL must start with rediss://")]
    NotTls,
}

/// A client for `url`; with `ca_file`, trusting only that file's
/// certificates. `Ok(Err)` is the redis crate's own refusal of the URL.
pub fn client(url: &str, ca_file: Option<&Path>) -> Result<redis::RedisResult<Client>, TrustError> {
    let Some(path) = ca_file else {
        return Ok(Client::open(url));
    };
    if !url.starts_with("rediss://") {
        return Err(TrustError::NotTls);
    }
    let pem = read_ca(path)?;
    Ok(Client::build_with_tls(
        url,
        TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        },
    ))
}

/// The TLS refusal of the server's certificate inside `e`, if that is
/// why the connection failed: rustls's error, which tokio-rustls wraps in
/// an `io::Error` and redis in an `Arc<dyn Error>` (its `source()`).
pub fn certificate_refusal(e: &redis::RedisError) -> Option<String> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let unwrapped = match err.downcast_ref::<Shared>() {
            Some(shared) => &**shared as &(dyn std::error::Error + 'static),
            None => err,
        };
        let inner = unwrapped
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for candidate in [Some(unwrapped), inner].into_iter().flatten() {
            if let Some(tls @ rustls::Error::InvalidCertificate(_)) = candidate.downcast_ref() {
                return Some(tls.to_string());
            }
        }
        next = err.source();
    }
    None
}

/// What a `rediss://` connection checks the server's certificate against,
/// as the refusal says it.
pub fn roots(ca_file: Option<&Path>) -> String {
    match ca_file {
        Some(path) => format!("--redis-ca-file {}", path.display()),
        None => "the system's CA certificates (for a private CA, give its certificate with --redis-ca-file)".to_owned(),
    }
}

/// The file's bytes, once every certificate in it parsed as a trust anchor.
fn read_ca(path: &Path) -> Result<Vec<u8>, TrustError> {
    let pem = std::fs::read(path).map_err(|source| TrustError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for (index, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| TrustError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| TrustError::Anchor {
            path: path.to_owned(),
            index: index + 1,
            reason: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(TrustError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("sodp-trust-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_file_without_a_certificate_is_refused_by_name() {
        let path = file(
            "key.pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        let e = client("rediss://127.0.0.1:1", Some(&path)).unwrap_err();
        assert!(matches!(e, TrustError::Empty { .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn garbage_in_a_certificate_block_is_refused() {
        let path = file(
            "bad.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        );
        let e = client("rediss://127.0.0.1:1", Some(&path)).unwrap_err();
        assert!(
            matches!(e, TrustError::Pem { .. } | TrustError::Anchor { .. }),
            "{e}"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_missing_file_and_a_plain_url_are_refused() {
        let missing = std::env::temp_dir().join("sodp-trust-no-such-file.pem");
        let e = client("rediss://127.0.0.1:1", Some(&missing)).unwrap_err();
        assert!(matches!(e, TrustError::Read { .. }), "{e}");
        let e = client("redis://127.0.0.1:1", Some(&missing)).unwrap_err();
        assert!(matches!(e, TrustError::NotTls), "{e}");
    }

    #[test]
    fn without_a_ca_file_the_url_alone_decides() {
        assert!(client("rediss://127.0.0.1:1", None).unwrap().is_ok());
        assert!(client("redis://127.0.0.1:1", None).unwrap().is_ok());
    }
}
