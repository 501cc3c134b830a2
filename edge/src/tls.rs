//! TLS (rustls, with ring like the rest of Estuary): a certificate chain and key from PEM
//! files, or a self-signed certificate made at start (for the demo and tests). ALPN offers
//! HTTP/2 and HTTP/1.1, so that browsers and players get HTTP/2 over TLS.

use std::path::PathBuf;
use std::sync::Arc;

use ring::digest::{SHA256, digest};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Where the certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// PEM files: the chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1).
    Files { certificate: PathBuf, key: PathBuf },
    /// Made at start for these names (DNS names or IP addresses).
    SelfSigned { names: Vec<String> },
}

/// The acceptor, and the leaf certificate (DER) for whoever wants to pin or print it.
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub certificate: CertificateDer<'static>,
}

impl Tls {
    pub fn new(source: &TlsSource) -> Result<Tls, String> {
        let (chain, key) = match source {
            TlsSource::Files { certificate, key } => {
                let chain = CertificateDer::pem_file_iter(certificate)
                    .map_err(|error| format!("{}: {error}", certificate.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error| format!("{}: {error}", certificate.display()))?;
                if chain.is_empty() {
                    return Err(format!("{} holds no certificate", certificate.display()));
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|error| format!("{}: {error}", key.display()))?;
                (chain, key)
            }
            TlsSource::SelfSigned { names } => {
                let made = rcgen::generate_simple_self_signed(names.clone())
                    .map_err(|error| format!("making a self-signed certificate: {error}"))?;
                let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
                (vec![made.cert.der().clone()], key)
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key)
            .map_err(|error| format!("the certificate and key do not go together: {error}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate: chain[0].clone(),
        })
    }

    /// The leaf certificate's SHA-256 fingerprint, as `openssl x509 -fingerprint -sha256` prints
    /// it.
    pub fn fingerprint(&self) -> String {
        digest(&SHA256, &self.certificate)
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}
