//! A certificate authority made for one test run (rcgen): its certificate
//! to trust, and server certificates it issues for `localhost` and
//! `127.0.0.1`, written as PEM files into a temp directory removed on drop.
//! Shared by the server's, the client's and the CLI's TLS tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM): what clients trust.
    pub ca_pem: String,
    /// Where the files live.
    pub dir: PathBuf,
}

/// A server certificate and its key, as PEM files.
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate (DER), to compare with what a handshake served.
    pub der: Vec<u8>,
}

impl TestCa {
    /// A new CA named `name`, with its own temp directory.
    pub fn new(name: &str) -> TestCa {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sodp-test-ca-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("SODP test CA {name}"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).expect("CA");
        let ca_pem = issuer.pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        TestCa {
            issuer,
            ca_pem,
            dir,
        }
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a server certificate for localhost/127.0.0.1 and writes it
    /// (atomically: written aside, then renamed, as certbot does) to
    /// `server.pem` / `server.key` in the CA's directory.
    pub fn issue_server(&self) -> ServerFiles {
        self.issue_into(&self.dir)
    }

    /// Like [`issue_server`](Self::issue_server), into `dir`.
    pub fn issue_into(&self, dir: &Path) -> ServerFiles {
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("names");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).expect("issue");
        let files = ServerFiles {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            der: cert.der().to_vec(),
        };
        let replace = |path: &Path, text: String| {
            let aside = path.with_extension("new");
            std::fs::write(&aside, text).unwrap();
            std::fs::rename(&aside, path).unwrap();
        };
        replace(&files.key, key.serialize_pem());
        replace(&files.cert, cert.pem());
        files
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
