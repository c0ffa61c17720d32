//! TLS client settings shared by every connection mailbridge opens:
//! platform roots plus an optional PEM bundle, with certificate and host
//! name checks on unless a server table sets
//! `danger_accept_invalid_certs = true`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Failure to build a TLS client configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be read or contains no usable certificate.
    #[error("failed to load CA file {}: {reason}; check ca_file", file.display())]
    CaFile { file: PathBuf, reason: String },
    /// Neither the platform nor `ca_file` supplied a root certificate.
    #[error("no trusted root certificates: install the platform CA bundle or set ca_file")]
    NoRoots,
}

impl TlsError {
    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CaFile { .. } => "ca_file",
            Self::NoRoots => "no_roots",
        }
    }
}

/// Fix for a failed handshake whose cause is most often the certificate.
pub const CERTIFICATE_FIX: &str =
    "check that the certificate is valid for the host, or set ca_file to the CA that issued it";

/// Fix for a server that sent plaintext during the handshake.
pub const PLAINTEXT_FIX: &str = "the port may expect STARTTLS: set tls = \"starttls\", or use \
     the implicit-TLS port (993 for IMAP, 465 for SMTP)";

/// Returns the fix for a failed client handshake. A server that speaks
/// plaintext on the port sends its greeting (`* OK` in IMAP, `220` in
/// SMTP) where a TLS record is expected. Its first byte is no TLS content
/// type (RFC 8446 section 5.1), so rustls rejects it with
/// `InvalidContentType`.
pub fn handshake_fix(err: &io::Error) -> &'static str {
    let rustls_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
            PLAINTEXT_FIX
        }
        _ => CERTIFICATE_FIX,
    }
}

/// Returns the root store: the platform's certificates plus those of
/// `ca_file`. Platform certificates that fail to parse are skipped, as
/// browsers do.
pub fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = platform_store();
    if let Some(file) = ca_file {
        roots.roots.extend(ca_file_store(file)?.roots);
    }

    match roots.is_empty() {
        true => Err(TlsError::NoRoots),
        false => Ok(roots),
    }
}

/// Returns the platform's root certificates, skipping those that fail to
/// parse. The bundle is read and parsed once per process, because every
/// IMAP, SMTP, AMQP and token client needs it. A changed bundle takes
/// effect at the next start.
pub fn platform_store() -> RootCertStore {
    static PLATFORM: OnceLock<RootCertStore> = OnceLock::new();
    PLATFORM
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            roots
        })
        .clone()
}

/// Returns the certificates of the PEM file `file` as trust anchors.
///
/// # Errors
///
/// [`TlsError::CaFile`] when the file cannot be read, is not PEM, has no
/// certificate or has one that cannot be a trust anchor.
pub fn ca_file_store(file: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_pem(file)? {
        roots.add(certificate).map_err(|err| TlsError::CaFile {
            file: file.to_owned(),
            reason: err.to_string(),
        })?;
    }
    Ok(roots)
}

/// Returns a client configuration that verifies servers against
/// [`root_store`].
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(root_store(ca_file)?)
        .with_no_client_auth();

    Ok(Arc::new(config))
}

/// Returns a client configuration that accepts any server certificate,
/// for `danger_accept_invalid_certs = true`. It still checks the
/// handshake signatures, so the peer must hold the key of the certificate
/// it sent, but anyone can make such a certificate for any name.
pub fn unverified_client_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
        .with_no_client_auth();

    Arc::new(config)
}

/// Connections opened so far without certificate verification.
static UNVERIFIED_CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// Logs the warning that a connection to `server` (`host:port`) skips
/// certificate verification. Each call carries a new `connection` number,
/// so the log's repeat limit keeps one line for every connection.
pub fn warn_unverified(account: &str, protocol: &str, server: &str) {
    let connection = UNVERIFIED_CONNECTIONS.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::warn!(
        account,
        protocol,
        server,
        connection,
        "Certificate verification is off for this connection because \
         danger_accept_invalid_certs = true, so anyone on the network path can read the \
         token. Set ca_file to the CA that issued the server's certificate instead"
    );
}

/// The verifier of [`unverified_client_config`].
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn read_pem(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let failed = |reason: String| TlsError::CaFile {
        file: file.to_owned(),
        reason,
    };
    let pem = std::fs::read(file).map_err(|err| failed(err.to_string()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| failed(format!("invalid PEM: {err}")))?;

    match certificates.is_empty() {
        true => Err(failed("no PEM certificate in the file".into())),
        false => Ok(certificates),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns the error of a handshake whose peer sends `reply` instead
    /// of a TLS record.
    async fn handshake_error(reply: &'static [u8]) -> io::Error {
        use tokio::io::AsyncWriteExt;

        let (client, mut server) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let _ = server.write_all(reply).await;
            // A server that sent a greeting waits for the client's command.
            if !reply.is_empty() {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        });
        let config = client_config(None).unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let connector = tokio_rustls::TlsConnector::from(config);

        connector.connect(name, client).await.unwrap_err()
    }

    #[tokio::test]
    async fn plaintext_greeting_suggests_starttls() {
        for greeting in [
            &b"* OK IMAP4rev1 ready\r\n"[..],
            b"220 mail.example.test ESMTP\r\n",
        ] {
            let err = handshake_error(greeting).await;

            assert_eq!(handshake_fix(&err), PLAINTEXT_FIX, "{err}");
        }
    }

    #[tokio::test]
    async fn closed_connection_suggests_certificate_check() {
        let err = handshake_error(b"").await;

        assert_eq!(handshake_fix(&err), CERTIFICATE_FIX, "{err}");
    }

    #[test]
    fn empty_ca_file_names_the_file() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = client_config(Some(file.path())).unwrap_err();

        assert!(matches!(err, TlsError::CaFile { .. }));
        assert!(err.to_string().contains(&file.path().display().to_string()));
        assert!(err.to_string().contains("ca_file"));
    }

    #[test]
    fn missing_ca_file_is_an_error() {
        let err = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();

        assert_eq!(err.kind(), "ca_file");
    }
}
