//! `wss://` with a private CA ([`ClientBuilder::tls_ca_pem`](crate::ClientBuilder::tls_ca_pem)):
//! the rustls client configuration that trusts exactly the given
//! certificates instead of the built-in webpki roots.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::error::Error;

/// A client configuration trusting the CA certificates in `pem` (one or
/// more `BEGIN CERTIFICATE` blocks), on the ring provider.
pub(crate) fn trusting(pem: &[u8]) -> Result<Arc<ClientConfig>, Error> {
    let bad = |why: String| Error::Config(format!("TLS CA certificates: {why}"));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate found".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_without_certificates_is_a_config_error() {
        for pem in [
            &b""[..],
            b"hello",
            b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        ] {
            let e = trusting(pem).unwrap_err();
            assert!(
                matches!(&e, Error::Config(m) if m.starts_with("TLS CA")),
                "{e}"
            );
        }
    }
}
