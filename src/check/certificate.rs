//! The certificate step: the subject, issuer and validity of each
//! certificate the server sent (RFC 5280 section 4.1), and whether the
//! chain verifies against the platform roots plus `ca_file`.

use rustls_pki_types::{CertificateDer, ServerName};

use super::{Steps, diagnosis, probe};
use crate::config::Server;

/// Records one step with the chain and its verification. Returns whether
/// the chain verified.
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
            steps.pass("certificate", format!("verified: {listing}"));
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
