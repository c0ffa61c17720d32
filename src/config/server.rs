//! `[accounts.NAME.imap]` and `[accounts.NAME.smtp]`: where and how to
//! connect to a mail server.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::reader::Table;
use super::values::{Invalid, Port, check_ca_file, choice};

choice! {
    /// Transport security of a mail server connection.
    pub enum Tls {
        /// TLS from the first byte (IMAP 993, SMTP 465).
        Implicit = "implicit",
        /// Mandatory STARTTLS: a server that does not offer it is an
        /// error, never a plaintext fallback.
        Starttls = "starttls",
        /// Plaintext; needs `allow_plaintext = true`.
        None = "none",
    }
}

/// The protocol of a server table, which sets its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Imap,
    Smtp,
}

impl Protocol {
    /// Name of the table inside an account.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Imap => "imap",
            Self::Smtp => "smtp",
        }
    }

    fn default_tls(self) -> Tls {
        match self {
            Self::Imap => Tls::Implicit,
            Self::Smtp => Tls::Starttls,
        }
    }

    /// IANA-registered ports: 993 (imaps) and 143 (imap), 465
    /// (submissions, RFC 8314) and 587 (submission, RFC 6409).
    fn default_port(self, tls: Tls) -> u16 {
        match (self, tls) {
            (Self::Imap, Tls::Implicit) => 993,
            (Self::Imap, _) => 143,
            (Self::Smtp, Tls::Implicit) => 465,
            (Self::Smtp, _) => 587,
        }
    }
}

/// Connection settings of an IMAP or SMTP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Server {
    /// Host name or IP address. Required.
    pub host: String,
    /// TCP port. Default: 993 for IMAP with implicit TLS, else 143; 465
    /// for SMTP with implicit TLS, else 587.
    pub port: u16,
    /// Transport security. Default: `implicit` for IMAP, `starttls` for SMTP.
    pub tls: Tls,
    /// Whether `tls = "none"` is allowed. Default: false.
    pub allow_plaintext: bool,
    /// PEM file of CA certificates trusted in addition to the platform
    /// roots, relative to the working directory. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Whether any server certificate is accepted, without checking its
    /// issuer, validity or host name. Each connection that uses it logs a
    /// warning. Default: false.
    pub danger_accept_invalid_certs: bool,
    /// Time allowed for the TCP connection and the TLS handshake. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

pub(crate) fn read(mut table: Table<'_>, protocol: Protocol) -> Option<Server> {
    let host = table.require_checked("host", |host: &String| check_host(host));
    let tls = table.get::<Tls>("tls").unwrap_or(protocol.default_tls());
    let port = table.get::<Port>("port");
    let allow_plaintext = table.get::<bool>("allow_plaintext").unwrap_or(false);
    let (ca_file, danger_accept_invalid_certs) = match tls {
        Tls::None => check_plaintext(&mut table, allow_plaintext),
        _ => (
            table.get_checked("ca_file", |file: &PathBuf| check_ca_file(file)),
            table
                .get::<bool>("danger_accept_invalid_certs")
                .unwrap_or(false),
        ),
    };
    let connect_timeout = table.get::<Duration>("connect_timeout");
    table.finish();

    Some(Server {
        host: host?,
        port: port.map_or(protocol.default_port(tls), |port| port.0),
        tls,
        allow_plaintext,
        ca_file,
        danger_accept_invalid_certs,
        connect_timeout: connect_timeout.unwrap_or(Duration::from_secs(30)),
    })
}

/// Checks a plaintext server table. Returns no CA file and no certificate
/// exception, because no certificate is used.
fn check_plaintext(table: &mut Table<'_>, allow_plaintext: bool) -> (Option<PathBuf>, bool) {
    if !allow_plaintext {
        let reason = "plaintext connections are disabled";
        let fix = "set allow_plaintext = true to send the token unencrypted, or use starttls";
        table.reject("tls", Invalid::new(reason).with_fix(Some(fix.into())));
    }

    let reason = "has no effect with tls = \"none\"";
    let no_effect = || Invalid::new(reason).with_fix(Some("remove it".into()));
    table.reject("ca_file", no_effect());
    // `mailbridge config` prints the default `false`, and its output must
    // load again, so only `true` is rejected.
    let _ = table.get_checked("danger_accept_invalid_certs", |accept: &bool| {
        if *accept { Err(no_effect()) } else { Ok(()) }
    });
    (None, false)
}

/// Rejects a URL or a `host:port` pair given as a host.
fn check_host(host: &str) -> Result<(), Invalid> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let bad = |c: char| c == ':' || c == '/' || c.is_whitespace();
    if !host.contains(bad) {
        return Ok(());
    }

    let fix = "give the host name alone and set port and tls separately";
    Err(Invalid::new("expected a host name or IP address").with_fix(Some(fix.into())))
}
