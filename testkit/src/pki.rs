//! Certificates for TLS tests: a test CA (rcgen), a server certificate it signed for 127.0.0.1
//! and localhost, and a client certificate, written as PEM files into a directory removed on
//! drop. [`TestPki::server`] is what [`RedisServer::start_tls`](crate::RedisServer::start_tls)
//! takes.

use std::path::PathBuf;

use crate::free_port;
use crate::redis::TlsFiles;

/// A test CA and the certificates it signed.
#[derive(Debug)]
pub struct TestPki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// A client certificate (for mutual TLS) and its key, PEM.
    pub client_cert: String,
    pub client_key: String,
    /// The server's files (certificate, key, CA).
    pub server: TlsFiles,
    /// Where the files are (`ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key`).
    pub dir: PathBuf,
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().expect("key");
    rcgen::CertifiedIssuer::self_signed(params, key).expect("CA")
}

/// A certificate for `names` signed by `ca`, for `usage`: (certificate PEM, key PEM).
fn leaf(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    names: &[&str],
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    params.extended_key_usages = vec![usage];
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, ca).expect("signed");
    (cert.pem(), key.serialize_pem())
}

impl TestPki {
    /// A fresh CA and certificates; the server refuses clients without a certificate when
    /// `require_client_cert`.
    pub fn new(require_client_cert: bool) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "flashgate-pki-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = ca("flashgate test CA");
        let (cert, key) = leaf(
            &ca,
            &["127.0.0.1", "localhost"],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            &ca,
            &["flashgate"],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, pem: &str| {
            let p = dir.join(name);
            std::fs::write(&p, pem).expect("write PEM");
            p
        };
        let server = TlsFiles {
            cert: write("server.pem", &cert),
            key: write("server.key", &key),
            ca: write("ca.pem", &ca.pem()),
            require_client_cert,
        };
        write("client.pem", &client_cert);
        write("client.key", &client_key);
        Self {
            ca_pem: ca.pem(),
            client_cert,
            client_key,
            server,
            dir,
        }
    }
}
