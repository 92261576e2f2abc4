//! The TLS listener's certificate: loaded and checked when the config loads (so `flashgate
//! check`, start and reload refuse a bad pair and name the key at fault), then served through
//! a resolver that a reload swaps — new handshakes get the new certificate, connections
//! already open keep theirs.
//!
//! TLS is Pingora's `rustls` backend with the ring provider: pure Rust, no OpenSSL. Pingora
//! builds a listener's acceptor inside its service task and panics there on a bad certificate
//! file (a panic that would leave the process running without the listener). It never gets
//! file paths from us: it gets [`CertStore`], which only ever holds a validated pair.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Which of the two files a problem is in (`server.tls_cert` or `server.tls_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemFile {
    Cert,
    Key,
}

/// Why a certificate/key pair cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemError {
    pub file: PemFile,
    pub reason: String,
}

/// A certificate chain and its private key, checked to belong together.
#[derive(Clone)]
pub struct CertPair(Arc<CertifiedKey>);

impl fmt::Debug for CertPair {
    // Never print key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertPair({} certificates)", self.0.cert.len())
    }
}

impl PartialEq for CertPair {
    /// The same certificate chain (a key change comes with a certificate change).
    fn eq(&self, other: &Self) -> bool {
        self.0.cert == other.0.cert
    }
}

/// Reads a PEM certificate chain (leaf first) and its PEM private key (PKCS#8, PKCS#1 or
/// SEC1), and checks that the key is the certificate's.
pub fn load(cert: &Path, key: &Path) -> Result<CertPair, PemError> {
    let read = |path: &Path, file: PemFile| {
        std::fs::read(path).map_err(|e| PemError {
            file,
            reason: format!("cannot read {}: {e}", path.display()),
        })
    };
    let cert_pem = read(cert, PemFile::Cert)?;
    let key_pem = read(key, PemFile::Key)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError {
            file: PemFile::Cert,
            reason: format!("{}: not a PEM certificate chain ({e})", cert.display()),
        })?;
    if chain.is_empty() {
        return Err(PemError {
            file: PemFile::Cert,
            reason: format!("{}: no PEM certificate in the file", cert.display()),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| PemError {
        file: PemFile::Key,
        reason: format!(
            "{}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file ({e})",
            key.display()
        ),
    })?;
    // Pingora installs this same provider (ring) when it builds a listener; the first wins.
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default().ok_or_else(|| PemError {
        file: PemFile::Key,
        reason: "no TLS crypto provider is installed".to_owned(),
    })?;
    let certified = CertifiedKey::from_der(chain, private, provider).map_err(|e| PemError {
        file: PemFile::Key,
        reason: format!("{}: not the certificate's key ({e})", key.display()),
    })?;
    Ok(CertPair(Arc::new(certified)))
}

/// The certificate the TLS listeners serve; [`CertStore::replace`] swaps it on reload.
pub struct CertStore(ArcSwap<CertifiedKey>);

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertStore")
    }
}

impl CertStore {
    pub fn new(pair: &CertPair) -> Arc<Self> {
        Arc::new(Self(ArcSwap::new(pair.0.clone())))
    }

    /// Serves `pair` to every handshake from now on.
    pub fn replace(&self, pair: &CertPair) {
        self.0.store(pair.0.clone());
    }

    /// Pingora's listener settings: this store supplies the certificate; ALPN offers HTTP/2
    /// first, then HTTP/1.1.
    pub fn settings(self: &Arc<Self>) -> Result<TlsSettings, TlsSetupError> {
        // With a resolver set, Pingora ignores the (empty) paths and reads no file.
        let mut s = TlsSettings::intermediate("", "").map_err(TlsSetupError)?;
        s.set_cert_resolver(self.clone());
        s.enable_h2();
        Ok(s)
    }
}

/// Pingora refused the listener's TLS settings.
#[derive(Debug, thiserror::Error)]
#[error("TLS settings: {0}")]
pub struct TlsSetupError(pingora::BError);

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A fresh self-signed pair written to a temp dir: (dir, cert path, key path, key PEM).
    fn pair(tag: &str) -> (PathBuf, PathBuf, PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("flashgate-tls-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, c.cert.pem()).expect("write cert");
        let key_pem = c.signing_key.serialize_pem();
        std::fs::write(&key, &key_pem).expect("write key");
        (dir, cert, key, key_pem)
    }

    #[test]
    fn loads_a_pair_and_names_the_bad_file() {
        let (dir, cert, key, _) = pair("a");
        let p = load(&cert, &key).expect("a matching pair loads");
        assert_eq!(p, load(&cert, &key).expect("again"));
        assert_eq!(format!("{p:?}"), "CertPair(1 certificates)");

        let (dir2, cert2, _, other_key) = pair("b");
        let mixed = dir.join("other-key.pem");
        std::fs::write(&mixed, other_key).expect("write");
        let e = load(&cert, &mixed).expect_err("someone else's key");
        assert_eq!(e.file, PemFile::Key);
        assert!(
            e.reason.contains("not the certificate's key"),
            "{}",
            e.reason
        );

        let e = load(&cert, &cert2).expect_err("a certificate is not a key");
        assert_eq!(e.file, PemFile::Key);
        assert!(e.reason.contains("no PEM private key"), "{}", e.reason);

        let e = load(&key, &key).expect_err("a key is not a certificate");
        assert_eq!(e.file, PemFile::Cert);
        assert!(e.reason.contains("no PEM certificate"), "{}", e.reason);

        let e = load(&dir.join("missing.pem"), &key).expect_err("missing file");
        assert_eq!(e.file, PemFile::Cert);
        assert!(e.reason.starts_with("cannot read"), "{}", e.reason);
        for d in [dir, dir2] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
