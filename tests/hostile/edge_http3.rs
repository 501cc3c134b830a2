//! Hostile `:path` spellings over HTTP/3, against an edge of the test's own.

use super::*;

/// `:path` spellings over HTTP/3, against an edge of the test's own serving HTTPS and QUIC in
/// front of the demo's packager, with a key of its own.
pub(super) fn spellings_over_http3(demo: &Demo, cases: &mut Cases) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "h3 000102030405060708090a0b0c0d0e0f\n").unwrap();
    let keycard = run_ok(
        estuary()
            .args(["keycard", "sign", "--key-file"])
            .arg(&keys)
            .args(["--acl", "/live/demo/*", "--ttl", "1h"]),
    );
    let keycard = keycard.trim().to_owned();
    let port = free_port();
    let _edge = Running(
        estuary()
            .args(["edge", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--upstream",
                &demo.origin,
                "--tls-self-signed",
                "--key-file",
            ])
            .arg(&keys)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting a TLS edge"),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ready = runtime.block_on(async {
        for _ in 0..100 {
            if h3_get(port, "/healthz")
                .await
                .is_ok_and(|(status, _)| status == 200)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    let rows: &[(&str, String, u16)] = &[
        (
            "edge_h3_master_without_keycard",
            "/live/demo/master.m3u8".into(),
            403,
        ),
        (
            "edge_h3_double_slash",
            "//live/demo/master.m3u8".into(),
            400,
        ),
        (
            "edge_h3_encoded_slash",
            "/live%2fdemo/master.m3u8".into(),
            400,
        ),
        ("edge_h3_dot_dot", "/live/demo/x/../master.m3u8".into(), 400),
        (
            "edge_h3_double_slash_with_keycard",
            format!("//live/demo/stream.mp3?keycard={keycard}"),
            400,
        ),
        (
            "edge_h3_admin",
            "/admin/metadata?mode=updinfo&song=x".into(),
            404,
        ),
    ];
    for (name, path, status) in rows {
        cases.case(name, || {
            if !ready {
                return Err("the TLS edge never answered over HTTP/3".into());
            }
            let (got, body) = runtime.block_on(h3_get(port, path))?;
            Answer {
                status: got,
                head: String::new(),
                body,
            }
            .refused(*status)
        });
    }
    cases.case("edge_h3_good_keycard_plays", || {
        let path = format!("/live/demo/master.m3u8?keycard={keycard}");
        let (status, body) = runtime.block_on(h3_get(port, &path))?;
        let text = String::from_utf8_lossy(&body);
        if status == 200 && text.starts_with("#EXTM3U") {
            Ok(())
        } else {
            Err(format!("{status}: {text:.200}"))
        }
    });
}

/// `GET path` over HTTP/3 from the edge on `port` (any certificate taken): status and body.
async fn h3_get(port: u16, path: &str) -> Result<(u16, Vec<u8>), String> {
    use bytes::Buf as _;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    crypto.alpn_protocols = vec![b"h3".to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(crypto).map_err(|e| e.to_string())?;
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    let connection = tokio::time::timeout(
        Duration::from_secs(5),
        endpoint
            .connect(address, "localhost")
            .map_err(|e| e.to_string())?,
    )
    .await
    .map_err(|_| "QUIC handshake timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let (mut driver, mut sender) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .map_err(|e| e.to_string())?;
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let request = http::Request::get(format!("https://localhost:{port}{path}"))
        .body(())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let mut stream = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        stream.finish().await.map_err(|e| e.to_string())?;
        let response = stream.recv_response().await.map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.map_err(|e| e.to_string())? {
            while chunk.has_remaining() {
                let piece = chunk.chunk().to_vec();
                chunk.advance(piece.len());
                body.extend_from_slice(&piece);
            }
            if body.len() > 1 << 20 {
                break;
            }
        }
        Ok::<_, String>((response.status().as_u16(), body))
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no HTTP/3 answer in 10 s".to_owned())?;
    drive.abort();
    endpoint.close(0u32.into(), b"done");
    answer
}

/// Takes any server certificate: the test's edge has a self-signed one.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &rustls::pki_types::CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &rustls::pki_types::CertificateDer<'_>,
        signature: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
