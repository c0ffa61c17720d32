//! TLS client settings shared by every connection mailbridge opens:
//! platform roots plus an optional PEM bundle, with certificate and host
//! name checks always on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Failure to build a TLS client configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be read or holds no usable certificate.
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

/// Returns the root store: the platform's certificates plus those of
/// `ca_file`. Platform certificates that fail to parse are skipped, as
/// browsers do.
pub fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(file) = ca_file {
        for certificate in read_pem(file)? {
            roots.add(certificate).map_err(|err| TlsError::CaFile {
                file: file.to_owned(),
                reason: err.to_string(),
            })?;
        }
    }

    match roots.is_empty() {
        true => Err(TlsError::NoRoots),
        false => Ok(roots),
    }
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
