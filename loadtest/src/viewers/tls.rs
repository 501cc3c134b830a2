//! TLS for viewers of `https://` URLs: the certificates they trust, read from a PEM bundle
//! (the system's, or an operator's own CA for a test deployment), and the connection made.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Where Debian (and most distributions) keep the system's trusted certificates.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What a viewer trusts for `https://`.
pub type Trust = Arc<rustls::ClientConfig>;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    Bundle { path: PathBuf, reason: String },
    #[error("{path}: no certificate in it")]
    Empty { path: PathBuf },
}

/// Trusts the certificates of the PEM bundle at `path`.
pub fn trust(path: &Path) -> Result<Trust, TlsError> {
    let bundle = |reason: String| TlsError::Bundle {
        path: path.to_owned(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(path).map_err(|e| bundle(e.to_string()))?;
    for certificate in certificates {
        let certificate = certificate.map_err(|e| bundle(e.to_string()))?;
        // A bundle may hold certificates this library cannot use; the rest still count.
        let _ = roots.add(certificate);
    }
    if roots.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_owned(),
        });
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bundle(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A TLS connection over `socket` to `host`, its certificate checked against `trust`.
pub async fn connect(
    trust: &Trust,
    host: &str,
    socket: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    tokio_rustls::TlsConnector::from(trust.clone())
        .connect(name, socket)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_a_usable_certificate_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(matches!(trust(&missing), Err(TlsError::Bundle { path, .. }) if path == missing));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(trust(&empty), Err(TlsError::Empty { .. })));
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(trust(&garbage).is_err());
        // A PEM of something else (a key) holds no certificate.
        let key = dir.path().join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(matches!(trust(&key), Err(TlsError::Empty { .. })));
    }
}
