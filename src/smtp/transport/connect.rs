//! Opening SMTP connections: TCP, TLS per the `tls` setting, the greeting
//! and EHLO (RFC 5321 sections 3.1 and 4.1.1.1), with mandatory STARTTLS
//! (RFC 3207) for `tls = "starttls"`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lettre::transport::smtp::commands::{Ehlo, Quit, Starttls};
use lettre::transport::smtp::extension::ClientId;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::capabilities::Capabilities;
use super::error::{SmtpError, TlsProblem};
use super::reply::Reply;
use super::sender::Timeouts;
use super::wire::{Io, Wire, WireError};
use crate::auth::TokenProvider;
use crate::config::{Mechanism, Server, Tls};
use crate::telemetry::Metrics;

/// Time allowed for the reply to QUIT before the connection is dropped.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings shared by every connection of an account.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) account: String,
    /// The mailbox address, sent as the SASL user.
    pub(crate) address: String,
    pub(crate) mechanism: Mechanism,
    pub(crate) server: Server,
    /// `host:port`, for messages.
    pub(crate) label: String,
    pub(crate) tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    pub(crate) tokens: TokenProvider,
    pub(crate) metrics: Option<Metrics>,
    pub(crate) timeouts: Timeouts,
    /// The domain or address literal sent with EHLO.
    pub(crate) hello: ClientId,
}

/// A connection after EHLO, encrypted unless `tls = "none"`, and not yet
/// signed in.
pub(crate) struct Connection {
    wire: Wire<Box<dyn Io>>,
    /// The extensions listed after TLS started. Those from before are
    /// dropped, because a man in the middle could have forged them.
    pub(crate) capabilities: Capabilities,
    /// Number of the connection since the process started, for logs.
    pub(crate) id: u64,
}

impl Connection {
    /// Sends `line`, which ends with CRLF, and reads the reply. A `421`,
    /// or a `221` to anything but QUIT, means that the server is closing
    /// the connection (RFC 5321 section 3.8) and is returned as
    /// [`SmtpError::ConnectionClosed`].
    pub(crate) async fn command(
        &mut self,
        settings: &Settings,
        line: &str,
        step: &str,
    ) -> Result<Reply, SmtpError> {
        exchange(
            &mut self.wire,
            settings,
            line,
            step,
            settings.timeouts.reply,
        )
        .await
    }

    /// Writes `lines`, several commands that each end with CRLF, at once,
    /// for a server that announced PIPELINING (RFC 2920). The replies are
    /// read with [`Connection::reply`].
    pub(crate) async fn send_group(
        &mut self,
        settings: &Settings,
        lines: &str,
        step: &str,
    ) -> Result<(), SmtpError> {
        self.wire
            .send(lines, settings.timeouts.reply)
            .await
            .map_err(|error| wire_error(settings, step, error))
    }

    /// Reads the reply to a command sent before, classified as by
    /// [`Connection::command`].
    pub(crate) async fn reply(
        &mut self,
        settings: &Settings,
        step: &str,
    ) -> Result<Reply, SmtpError> {
        receive(&mut self.wire, settings, step, settings.timeouts.reply).await
    }

    /// Writes the message data and its end line, for
    /// [`super::transaction`], which reads the reply.
    pub(crate) fn wire(&mut self) -> &mut Wire<Box<dyn Io>> {
        &mut self.wire
    }

    /// Sends QUIT and waits briefly for its reply, ignoring failures,
    /// because the connection is given up either way.
    pub(crate) async fn quit(mut self) {
        let _ = quit(&mut self.wire).await;
    }
}

/// Opens a connection up to the point where AUTH may be sent.
pub(crate) async fn open(settings: &Settings) -> Result<Connection, SmtpError> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);

    let deadline = Instant::now() + settings.server.connect_timeout;
    let tcp: Box<dyn Io> = Box::new(tcp(settings, deadline).await?);

    let (wire, capabilities) = match settings.server.tls {
        Tls::Implicit => {
            let tls = handshake(settings, tcp, deadline).await;
            let tls = tls.map_err(|error| error.implicit(settings))?;
            greet(settings, Wire::new(tls)).await?
        }
        Tls::Starttls => {
            let starttls =
                tokio::time::timeout_at(deadline.into(), starttls(settings, tcp, deadline));
            starttls
                .await
                .map_err(|_| connect_timeout(settings, "STARTTLS"))??
        }
        Tls::None => greet(settings, Wire::new(tcp)).await?,
    };

    Ok(Connection {
        wire,
        capabilities,
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
    })
}

async fn tcp(settings: &Settings, deadline: Instant) -> Result<TcpStream, SmtpError> {
    let server = &settings.server;
    let connect = TcpStream::connect((server.host.as_str(), server.port));
    let tcp = tokio::time::timeout_at(deadline.into(), connect)
        .await
        .map_err(|_| connect_timeout(settings, "the TCP connection"))?
        .map_err(|source| SmtpError::Connect {
            server: settings.label.clone(),
            source,
        })?;
    // Commands are short lines, which Nagle's algorithm would only delay.
    let _ = tcp.set_nodelay(true);

    Ok(tcp)
}

/// Failure of a TLS handshake, which the TLS mode turns into an error.
enum HandshakeError {
    Timeout(SmtpError),
    Failed(std::io::Error),
}

impl HandshakeError {
    fn implicit(self, settings: &Settings) -> SmtpError {
        match self {
            Self::Timeout(error) => error,
            Self::Failed(source) => SmtpError::TlsHandshake {
                server: settings.label.clone(),
                source,
            },
        }
    }
}

async fn handshake(
    settings: &Settings,
    stream: Box<dyn Io>,
    deadline: Instant,
) -> Result<Box<dyn Io>, HandshakeError> {
    let Some((config, name)) = &settings.tls else {
        unreachable!("TLS settings exist unless tls = \"none\"");
    };
    if settings.server.danger_accept_invalid_certs {
        crate::tls::warn_unverified(&settings.account, "smtp", &settings.label);
    }
    let connector = TlsConnector::from(Arc::clone(config));
    let handshake = connector.connect(name.clone(), stream);
    let tls = tokio::time::timeout_at(deadline.into(), handshake)
        .await
        .map_err(|_| HandshakeError::Timeout(connect_timeout(settings, "the TLS handshake")))?
        .map_err(HandshakeError::Failed)?;

    Ok(Box::new(tls))
}

/// Reads the greeting and sends EHLO.
async fn greet(
    settings: &Settings,
    mut wire: Wire<Box<dyn Io>>,
) -> Result<(Wire<Box<dyn Io>>, Capabilities), SmtpError> {
    let step = "the greeting";
    let greeting = wire.reply(settings.timeouts.reply).await;
    let greeting = greeting.map_err(|error| wire_error(settings, step, error))?;
    if greeting.code != 220 {
        let _ = quit(&mut wire).await;
        return Err(SmtpError::Greeting {
            server: settings.label.clone(),
            reply: Box::new(greeting),
        });
    }

    let capabilities = ehlo(settings, &mut wire).await?;
    Ok((wire, capabilities))
}

async fn ehlo(
    settings: &Settings,
    wire: &mut Wire<Box<dyn Io>>,
) -> Result<Capabilities, SmtpError> {
    let line = Ehlo::new(settings.hello.clone()).to_string();
    let timeout = settings.timeouts.reply;
    let reply = exchange(wire, settings, &line, "the reply to EHLO", timeout).await?;
    if reply.code != 250 {
        let _ = quit(wire).await;
        return Err(SmtpError::Ehlo {
            server: settings.label.clone(),
            reply: Box::new(reply),
        });
    }

    Ok(Capabilities::from_reply(&reply))
}

/// Runs mandatory STARTTLS. When the server does not offer it, rejects it
/// or fails the handshake, nothing but QUIT is sent after EHLO.
async fn starttls(
    settings: &Settings,
    tcp: Box<dyn Io>,
    deadline: Instant,
) -> Result<(Wire<Box<dyn Io>>, Capabilities), SmtpError> {
    let (mut wire, before) = greet(settings, Wire::new(tcp)).await?;
    if !before.starttls() {
        let _ = quit(&mut wire).await;
        let detail = format!("offered: {}", before.keywords().join(" "));
        return Err(tls_required(settings, TlsProblem::NotOffered, detail, None));
    }

    let timeout = settings.timeouts.reply;
    let line = Starttls.to_string();
    let reply = exchange(&mut wire, settings, &line, "the reply to STARTTLS", timeout).await?;
    if reply.code != 220 {
        let _ = quit(&mut wire).await;
        let detail = format!("server replied {reply}");
        return Err(tls_required(
            settings,
            TlsProblem::Refused,
            detail,
            Some(reply),
        ));
    }

    // Bytes that arrived after the 220 are dropped with the plaintext
    // reader, so that a man in the middle cannot inject replies.
    let tls = match handshake(settings, wire.into_inner(), deadline).await {
        Ok(tls) => tls,
        Err(HandshakeError::Timeout(error)) => return Err(error),
        Err(HandshakeError::Failed(error)) => {
            let detail = error.to_string();
            return Err(tls_required(settings, TlsProblem::Handshake, detail, None));
        }
    };
    let mut wire = Wire::new(tls);
    let capabilities = ehlo(settings, &mut wire).await?;

    Ok((wire, capabilities))
}

fn tls_required(
    settings: &Settings,
    problem: TlsProblem,
    detail: String,
    reply: Option<Reply>,
) -> SmtpError {
    tracing::error!(
        account = %settings.account,
        server = %settings.label,
        problem = %problem,
        detail = %detail,
        "STARTTLS unavailable, not signing in"
    );
    SmtpError::TlsRequiredUnavailable {
        server: settings.label.clone(),
        problem,
        detail,
        reply: reply.map(Box::new),
    }
}

/// Sends `line` and reads the reply, turning a closing reply into
/// [`SmtpError::ConnectionClosed`].
async fn exchange(
    wire: &mut Wire<Box<dyn Io>>,
    settings: &Settings,
    line: &str,
    step: &str,
    timeout: Duration,
) -> Result<Reply, SmtpError> {
    wire.send(line, timeout)
        .await
        .map_err(|error| wire_error(settings, step, error))?;
    receive(wire, settings, step, timeout).await
}

/// Reads one reply. A `421`, or a `221`, means that the server is closing
/// the connection and is returned as [`SmtpError::ConnectionClosed`].
async fn receive(
    wire: &mut Wire<Box<dyn Io>>,
    settings: &Settings,
    step: &str,
    timeout: Duration,
) -> Result<Reply, SmtpError> {
    let reply = wire
        .reply(timeout)
        .await
        .map_err(|error| wire_error(settings, step, error))?;

    match reply.code {
        221 | 421 => Err(SmtpError::ConnectionClosed {
            server: settings.label.clone(),
            step: step.to_owned(),
            reply: Some(Box::new(reply)),
        }),
        _ => Ok(reply),
    }
}

async fn quit(wire: &mut Wire<Box<dyn Io>>) -> Result<Reply, WireError> {
    wire.send(&Quit.to_string(), QUIT_TIMEOUT).await?;
    wire.reply(QUIT_TIMEOUT).await
}

/// Turns a failed exchange into an error that names the server and step.
pub(crate) fn wire_error(settings: &Settings, step: &str, error: WireError) -> SmtpError {
    let server = settings.label.clone();
    let step = step.to_owned();
    match error {
        WireError::Timeout(after) => SmtpError::Timeout {
            server,
            step,
            after,
        },
        WireError::Closed => SmtpError::ConnectionClosed {
            server,
            step,
            reply: None,
        },
        WireError::Io(source) => SmtpError::Io {
            server,
            step,
            source,
        },
        WireError::Protocol(detail) => SmtpError::Protocol {
            server,
            step,
            detail,
        },
    }
}

fn connect_timeout(settings: &Settings, step: &str) -> SmtpError {
    SmtpError::Timeout {
        server: settings.label.clone(),
        step: format!("{step} (connect_timeout)"),
        after: settings.server.connect_timeout,
    }
}

/// Builds the TLS client settings and the name that the server's
/// certificate must carry, a DNS name or an IP address.
pub(crate) fn tls_settings(
    account: &str,
    server: &Server,
) -> Result<(Arc<ClientConfig>, ServerName<'static>), SmtpError> {
    let config = match server.danger_accept_invalid_certs {
        true => crate::tls::unverified_client_config(),
        false => crate::tls::client_config(server.ca_file.as_deref()).map_err(|source| {
            SmtpError::TlsSettings {
                account: account.to_owned(),
                source,
            }
        })?,
    };
    let name = ServerName::try_from(server.host.clone()).map_err(|_| SmtpError::Config {
        account: account.to_owned(),
        reason: format!("host {:?} is not a valid TLS server name", server.host),
    })?;

    Ok((config, name))
}
