//! The connection steps of an endpoint: name resolution, TCP, STARTTLS
//! (RFC 2595 for IMAP, RFC 3207 for SMTP), the TLS handshake and the
//! certificate chain.
//!
//! The probe connection accepts any certificate during the handshake so
//! that the chain can be shown even when it does not verify. It is closed
//! right after the handshake and never carries a token or a command
//! beyond STARTTLS; the verification against the platform roots plus
//! `ca_file` then runs on the recorded chain.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConnectionData, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{Steps, diagnosis};
use crate::config::{Server, Tls};

/// The protocol whose STARTTLS exchange the probe speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Imap,
    Smtp,
}

/// Runs the connection steps. Returns false after a failed step.
pub(crate) async fn run(server: &Server, dialect: Dialect, steps: &mut Steps<'_>) -> bool {
    let timeout = server.connect_timeout;
    let Some(addresses) = resolve(server, steps).await else {
        return false;
    };
    let Some(mut tcp) = connect(&addresses, timeout, steps).await else {
        return false;
    };

    match server.tls {
        Tls::None => {
            steps.pass("tls", "none: tls = \"none\" with allow_plaintext");
            return true;
        }
        Tls::Starttls => {
            if let Err(detail) = within(timeout, starttls(&mut tcp, dialect)).await {
                let fix = "the server offers no STARTTLS on this port: use tls = \"implicit\" \
                           or the submission port";
                steps.fail("starttls", detail, fix.to_owned());
                return false;
            }
            steps.pass("starttls", "offered and accepted");
        }
        Tls::Implicit => {}
    }
    handshake(server, tcp, steps).await
}

async fn resolve(server: &Server, steps: &mut Steps<'_>) -> Option<Vec<SocketAddr>> {
    let lookup = tokio::net::lookup_host((server.host.as_str(), server.port)).await;
    match lookup.map(Iterator::collect::<Vec<_>>) {
        Ok(addresses) if !addresses.is_empty() => {
            let list: Vec<String> = addresses.iter().map(|a| a.ip().to_string()).collect();
            steps.pass("resolve", format!("{} -> {}", server.host, list.join(", ")));
            Some(addresses)
        }
        Ok(_) => {
            steps.fail(
                "resolve",
                format!("{}: no address", server.host),
                fix_host(),
            );
            None
        }
        Err(err) => {
            steps.fail("resolve", format!("{}: {err}", server.host), fix_host());
            None
        }
    }
}

fn fix_host() -> String {
    "check the host name and the DNS settings".to_owned()
}

async fn connect(
    addresses: &[SocketAddr],
    timeout: Duration,
    steps: &mut Steps<'_>,
) -> Option<TcpStream> {
    let started = Instant::now();
    let address = addresses[0];
    let outcome = tokio::time::timeout(timeout, TcpStream::connect(address)).await;

    let err = match outcome {
        Ok(Ok(tcp)) => {
            let millis = started.elapsed().as_millis();
            steps.pass("tcp", format!("connected to {address} in {millis} ms"));
            return Some(tcp);
        }
        Ok(Err(err)) => err,
        Err(_) => std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("timed out after {}", humantime::format_duration(timeout)),
        ),
    };
    let fix = match err.kind() {
        std::io::ErrorKind::ConnectionRefused => format!(
            "nothing listens on port {} of {}: check the port, and that the server runs",
            address.port(),
            address.ip()
        ),
        std::io::ErrorKind::TimedOut => "no answer to the connection request: a firewall \
             may drop it, or the host or port is wrong; check both, and connect_timeout"
            .to_owned(),
        _ => "check the host and port, and that a firewall or proxy lets the connection \
              through"
            .to_owned(),
    };
    steps.fail("tcp", format!("{address}: {err}"), fix);
    None
}

/// Runs `future` with `timeout`, turning a timeout into an error text.
async fn within<T>(
    timeout: Duration,
    future: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(timeout, future)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            ))
        })
}

/// Speaks the plaintext part up to the TLS handshake.
async fn starttls(tcp: &mut TcpStream, dialect: Dialect) -> Result<(), String> {
    let mut reader = BufReader::new(tcp);
    let (probe, command, done) = match dialect {
        Dialect::Imap => ("c1 CAPABILITY\r\n", "c2 STARTTLS\r\n", "c2 "),
        Dialect::Smtp => ("EHLO localhost\r\n", "STARTTLS\r\n", "220 "),
    };
    let greeting = read_reply(&mut reader, dialect, "").await?;
    let offered = exchange(&mut reader, dialect, probe, "c1 ").await?;
    // An IMAP greeting may list the capabilities (RFC 3501 section
    // 7.1); an SMTP greeting is free text, so only EHLO counts there.
    let in_greeting =
        dialect == Dialect::Imap && greeting.to_ascii_uppercase().contains("STARTTLS");
    if !in_greeting && !offered.to_ascii_uppercase().contains("STARTTLS") {
        return Err("the server does not offer STARTTLS".to_owned());
    }

    let reply = exchange(&mut reader, dialect, command, done).await?;
    let accepted = match dialect {
        Dialect::Imap => reply.to_ascii_uppercase().contains("C2 OK"),
        Dialect::Smtp => reply.starts_with("220") || reply.contains("\n220 "),
    };
    match accepted {
        true => Ok(()),
        false => Err(format!("STARTTLS rejected: {}", reply.trim())),
    }
}

async fn exchange(
    reader: &mut BufReader<&mut TcpStream>,
    dialect: Dialect,
    line: &str,
    tag: &str,
) -> Result<String, String> {
    reader
        .get_mut()
        .write_all(line.as_bytes())
        .await
        .map_err(|err| err.to_string())?;
    read_reply(reader, dialect, tag).await
}

/// Reads lines up to the last line of a reply: the tagged line in IMAP
/// (an untagged greeting when `tag` is empty), a line with a space after
/// the code in SMTP (RFC 5321 section 4.2.1).
async fn read_reply(
    reader: &mut BufReader<&mut TcpStream>,
    dialect: Dialect,
    tag: &str,
) -> Result<String, String> {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        let read = reader
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("the server closed the connection".to_owned());
        }
        reply.push_str(&line);
        let last = match dialect {
            Dialect::Imap if tag.is_empty() => line.starts_with("* "),
            Dialect::Imap => line.starts_with(tag),
            Dialect::Smtp => line.as_bytes().get(3) != Some(&b'-'),
        };
        if last {
            return Ok(reply);
        }
    }
}

/// Runs the handshake and the certificate step.
async fn handshake(server: &Server, tcp: TcpStream, steps: &mut Steps<'_>) -> bool {
    let Ok(name) = ServerName::try_from(server.host.clone()) else {
        steps.fail("tls", "the host is no valid TLS name", fix_host());
        return false;
    };
    let recorder = Arc::new(Recorder::default());
    let connector = TlsConnector::from(recorder_config(Arc::clone(&recorder)));
    let outcome =
        tokio::time::timeout(server.connect_timeout, connector.connect(name.clone(), tcp));

    let stream = match outcome.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            let fix = match crate::tls::handshake_fix(&err) {
                crate::tls::PLAINTEXT_FIX => diagnosis::PLAINTEXT,
                _ => crate::tls::CERTIFICATE_FIX,
            };
            steps.fail("tls", format!("handshake failed: {err}"), fix.to_owned());
            return false;
        }
        Err(_) => {
            steps.fail(
                "tls",
                "handshake timed out",
                diagnosis::SEE_ERROR.to_owned(),
            );
            return false;
        }
    };
    steps.pass("tls", describe_session(stream.get_ref().1));

    let chain = recorder.chain.lock().expect("chain lock").clone();
    super::certificate::check(server, &name, &chain, steps)
}

fn describe_session(connection: &rustls::ConnectionCommon<ClientConnectionData>) -> String {
    let version = connection
        .protocol_version()
        .map_or("unknown".to_owned(), |v| format!("{v:?}"));
    let cipher = connection
        .negotiated_cipher_suite()
        .map_or("unknown".to_owned(), |s| format!("{:?}", s.suite()));
    format!("{version}, {cipher}")
}

/// Verifies `chain` for `name` against the platform roots plus `ca_file`.
pub(crate) fn verify(
    server: &Server,
    name: &ServerName<'_>,
    chain: &[CertificateDer<'static>],
) -> Result<(), String> {
    let roots = crate::tls::root_store(server.ca_file.as_deref()).map_err(|e| e.to_string())?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|err| err.to_string())?;
    let (end_entity, intermediates) = chain.split_first().ok_or("no certificate")?;

    verifier
        .verify_server_cert(end_entity, intermediates, name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|err| err.to_string())
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn recorder_config(recorder: Arc<Recorder>) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(recorder)
        .with_no_client_auth();
    Arc::new(config)
}

/// A verifier that records the chain and accepts it; see the module doc.
/// Handshake signatures are still checked.
#[derive(Debug, Default)]
struct Recorder {
    chain: Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.chain.lock().expect("chain lock") = chain;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
