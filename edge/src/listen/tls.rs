//! TLS (rustls, with ring like the rest of Estuary): a certificate chain and key from PEM
//! files, or a self-signed certificate made at start (for the demo and tests). ALPN offers
//! HTTP/2 and HTTP/1.1, so that browsers and players get HTTP/2 over TLS; the same certificate
//! serves HTTP/3 over QUIC, which is TLS 1.3 only and speaks ALPN `h3`.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use quinn::crypto::rustls::QuicServerConfig;
use ring::digest::{SHA256, digest};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// Where the certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files: the chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1).
    Files { certificate: PathBuf, key: PathBuf },
    /// Made at start for these names (DNS names or IP addresses).
    SelfSigned { names: Vec<String> },
}

/// Why a certificate cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("the certificate and key do not go together: {0}")]
    Mismatch(String),
    #[error("making a self-signed certificate: {0}")]
    SelfSigned(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The acceptors for TCP and QUIC, both presenting the certificate of the moment: a new one
/// (after a reload) is presented by every handshake from then on, while connections already
/// made keep theirs.
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub quic: Arc<QuicServerConfig>,
    current: Arc<Current>,
}

/// The certificate handshakes present now.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl Tls {
    pub fn new(source: &TlsSource) -> Result<Tls, TlsError> {
        let current = Arc::new(Current(RwLock::new(Arc::new(certified(source)?))));
        let config = |versions: &[&'static rustls::SupportedProtocolVersion], alpn: &[&[u8]]| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(versions)
                .map_err(|error| TlsError::Config(error.to_string()))?
                .with_no_client_auth()
                .with_cert_resolver(current.clone());
            config.alpn_protocols = alpn.iter().map(|name| name.to_vec()).collect();
            Ok::<_, TlsError>(config)
        };
        let tcp = config(rustls::DEFAULT_VERSIONS, &[b"h2", b"http/1.1"])?;
        let quic = config(&[&rustls::version::TLS13], &[b"h3"])?;
        let quic = QuicServerConfig::try_from(quic)
            .map_err(|error| TlsError::Config(error.to_string()))?;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(tcp)),
            quic: Arc::new(quic),
            current,
        })
    }

    /// Reads the certificate again: handshakes from now on present it. A certificate that
    /// cannot be used changes nothing.
    pub fn reload(&self, source: &TlsSource) -> Result<(), TlsError> {
        let fresh = Arc::new(certified(source)?);
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The leaf certificate presented now.
    fn certificate(&self) -> CertificateDer<'static> {
        self.current
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .cert[0]
            .clone()
    }

    /// The leaf certificate's SHA-256 fingerprint, as `openssl x509 -fingerprint -sha256` prints
    /// it.
    pub fn fingerprint(&self) -> String {
        digest(&SHA256, &self.certificate())
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The base64 SHA-256 of the leaf certificate's public key (its SubjectPublicKeyInfo): what
    /// Chromium's `--ignore-certificate-errors-spki-list` takes to trust a self-signed
    /// certificate, over TCP and over QUIC alike.
    pub fn spki_sha256(&self) -> Option<String> {
        let certificate = self.certificate();
        let spki = subject_public_key_info(&certificate)?;
        Some(base64(digest(&SHA256, spki).as_ref()))
    }
}

/// The chain and key of `source`, checked to go together.
fn certified(source: &TlsSource) -> Result<CertifiedKey, TlsError> {
    let (chain, key) = match source {
        TlsSource::Files { certificate, key } => {
            fn file(
                path: &std::path::Path,
            ) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError + '_ {
                move |error| TlsError::File {
                    path: path.to_owned(),
                    reason: error.to_string(),
                }
            }
            let chain = CertificateDer::pem_file_iter(certificate)
                .map_err(file(certificate))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(file(certificate))?;
            if chain.is_empty() {
                return Err(TlsError::NoCertificate(certificate.clone()));
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(file(key))?;
            (chain, key)
        }
        TlsSource::SelfSigned { names } => {
            let made = rcgen::generate_simple_self_signed(names.clone())
                .map_err(|error| TlsError::SelfSigned(error.to_string()))?;
            let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
            (vec![made.cert.der().clone()], key)
        }
    };
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| TlsError::Mismatch(error.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|error| TlsError::Mismatch(error.to_string()))?;
    Ok(certified)
}

/// One DER element: its tag, its contents, and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |length, &byte| length << 8 | usize::from(byte));
        (length, &rest[count..])
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

/// The whole SubjectPublicKeyInfo element (tag and length included) of an X.509 certificate:
/// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
/// signature, issuer, validity, subject, subjectPublicKeyInfo, … }, … } (RFC 5280, 4.1).
fn subject_public_key_info(certificate: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0;
    let (SEQUENCE, certificate, _) = der_element(certificate)? else {
        return None;
    };
    let (SEQUENCE, mut fields, _) = der_element(certificate)? else {
        return None;
    };
    if fields.first() == Some(&VERSION) {
        fields = der_element(fields)?.2;
    }
    // serialNumber, signature, issuer, validity, subject
    for _ in 0..5 {
        fields = der_element(fields)?.2;
    }
    let (SEQUENCE, _, after) = der_element(fields)? else {
        return None;
    };
    Some(&fields[..fields.len() - after.len()])
}

/// Standard base64 with padding (RFC 4648, section 4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk.iter().enumerate().fold(0u32, |group, (i, &byte)| {
            group | u32::from(byte) << (16 - 8 * i)
        });
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(char::from(ALPHABET[(group >> (18 - 6 * i) & 63) as usize]));
            } else {
                text.push('=');
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn the_public_key_is_found_inside_the_certificate() {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let found = subject_public_key_info(made.cert.der()).unwrap();
        assert_eq!(
            found,
            rcgen::PublicKeyData::subject_public_key_info(&made.signing_key)
        );
        let tls = Tls::new(&TlsSource::SelfSigned {
            names: vec!["localhost".into()],
        })
        .unwrap();
        assert_eq!(tls.spki_sha256().unwrap().len(), 44);
        assert_eq!(subject_public_key_info(&made.cert.der()[..40]), None);
    }
}
