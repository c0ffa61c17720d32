//! The certificate step: the subject, issuer and validity of each
//! certificate the server sent (RFC 5280 section 4.1), whether the chain
//! verifies against the platform roots plus `ca_file`, and which root
//! anchors it.

use std::path::Path;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use super::{Steps, diagnosis, probe};
use crate::config::Server;

/// The root certificate that a verified chain ends at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anchor {
    /// Distinguished name of the root, such as `CN=ISRG Root X1, O=…`.
    pub subject: String,
    /// Trust store that contains the root: the platform roots or `ca_file`.
    pub source: AnchorSource,
}

/// Origin of a trust anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnchorSource {
    /// The platform's root certificates.
    Platform,
    /// The `ca_file` of the endpoint.
    CaFile,
}

impl AnchorSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Platform => "platform roots",
            Self::CaFile => "ca_file",
        }
    }
}

/// Records one step with the chain and its verification. Returns whether
/// the chain verified, or failed to verify on a server that sets
/// `danger_accept_invalid_certs`.
pub(crate) fn check(
    server: &Server,
    name: &ServerName<'_>,
    chain: &[CertificateDer<'static>],
    steps: &mut Steps<'_>,
) -> bool {
    let described: Vec<String> = chain.iter().map(|c| describe(c)).collect();
    let listing = described.join("; ");

    match probe::verify(server, name, chain) {
        Ok(()) => {
            let anchor = find_anchor(server.ca_file.as_deref(), chain);
            let root = match &anchor {
                Some(anchor) => format!("anchor={} ({})", anchor.subject, anchor.source.as_str()),
                None => "anchor=unknown".to_owned(),
            };
            steps.pass_certificate(format!("verified: {root}; {listing}"), anchor);
            true
        }
        Err(reason) if server.danger_accept_invalid_certs => {
            let detail = format!(
                "not verified ({reason}), accepted because danger_accept_invalid_certs = true; \
                 {listing}"
            );
            steps.pass("certificate", detail);
            true
        }
        Err(reason) => {
            let fix = match reason.contains("UnknownIssuer") || reason.contains("unknown issuer") {
                true => diagnosis::UNKNOWN_ISSUER,
                false => crate::tls::CERTIFICATE_FIX,
            };
            steps.fail(
                "certificate",
                format!("{reason}: {listing}"),
                fix.to_owned(),
            );
            false
        }
    }
}

/// Returns the root that `chain` verifies up to, looking in `ca_file`
/// first and then in the platform roots. Returns `None` when no path
/// verifies, which [`probe::verify`] has ruled out before.
fn find_anchor(ca_file: Option<&Path>, chain: &[CertificateDer<'static>]) -> Option<Anchor> {
    let (end_entity, intermediates) = chain.split_first()?;
    let end_entity = webpki::EndEntityCert::try_from(end_entity).ok()?;
    let mut stores = Vec::new();
    if let Some(file) = ca_file {
        stores.push((AnchorSource::CaFile, crate::tls::ca_file_store(file).ok()?));
    }
    stores.push((AnchorSource::Platform, crate::tls::platform_store()));
    let algorithms = probe::provider().signature_verification_algorithms.all;

    stores.into_iter().find_map(|(source, store)| {
        let path = end_entity
            .verify_for_usage(
                algorithms,
                &store.roots,
                intermediates,
                UnixTime::now(),
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .ok()?;
        let subject = distinguished_name(&path.anchor().subject);
        Some(Anchor { subject, source })
    })
}

/// Returns the text form of a Name whose DER content, without its
/// SEQUENCE tag and length, is `content`: the form webpki keeps of a
/// trust anchor's subject.
fn distinguished_name(content: &[u8]) -> String {
    let mut der = vec![0x30];
    let length = content.len().to_be_bytes();
    let significant = length.iter().skip_while(|byte| **byte == 0).count();
    match content.len() {
        // Short form of a DER length (X.690 section 8.1.3.4).
        short @ 0..0x80 => der.push(short as u8),
        _ => {
            der.push(0x80 | significant as u8);
            der.extend_from_slice(&length[length.len() - significant..]);
        }
    }
    der.extend_from_slice(content);

    match X509Name::from_der(&der) {
        Ok((_, name)) => name.to_string(),
        Err(err) => format!("unparsable name: {err}"),
    }
}

/// Returns `subject=… issuer=… valid … to …` of a DER certificate.
fn describe(der: &CertificateDer<'_>) -> String {
    match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok((_, certificate)) => {
            let validity = certificate.validity();
            format!(
                "subject={} issuer={} valid {} to {}",
                certificate.subject(),
                certificate.issuer(),
                validity.not_before,
                validity.not_after,
            )
        }
        Err(err) => format!("unparsable certificate: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns the DER content of a Name with one common name `value`:
    /// a SET of one SEQUENCE of the OID 2.5.4.3 and a UTF8String.
    fn common_name(value: &str) -> Vec<u8> {
        fn tagged(tag: u8, content: &[u8]) -> Vec<u8> {
            let mut der = vec![tag];
            match content.len() {
                short @ 0..0x80 => der.push(short as u8),
                long => der.extend_from_slice(&[0x82, (long >> 8) as u8, long as u8]),
            }
            der.extend_from_slice(content);
            der
        }
        let mut attribute = vec![0x06, 0x03, 0x55, 0x04, 0x03];
        attribute.extend(tagged(0x0c, value.as_bytes()));
        tagged(0x31, &tagged(0x30, &attribute))
    }

    #[test]
    fn anchor_short_name_decoded() {
        assert_eq!(distinguished_name(&common_name("Test CA")), "CN=Test CA");
    }

    #[test]
    fn anchor_long_name_decoded() {
        let value = "x".repeat(300);

        assert_eq!(
            distinguished_name(&common_name(&value)),
            format!("CN={value}")
        );
    }

    #[test]
    fn anchor_platform_root_named() {
        let store = crate::tls::platform_store();
        let anchor = store.roots.first().expect("a platform root");

        let name = distinguished_name(&anchor.subject);

        assert!(name.contains('='), "{name}");
        assert!(!name.starts_with("unparsable"), "{name}");
    }
}
