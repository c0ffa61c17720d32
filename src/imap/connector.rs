//! Opening IMAP connections: TCP, TLS per the `tls` setting, the greeting
//! and the capabilities that the sign-in needs (RFC 3501 sections 6.1 and
//! 6.2.1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_imap::Client;
use async_imap::imap_proto::{Response, ResponseCode, Status};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::authenticate;
use super::capabilities::Capabilities;
use super::error::ImapError;
use super::session::Session;
use super::transport::{Activity, Transport};
use super::wire::{self, Tags, WireError};
use crate::auth::TokenProvider;
use crate::config::{Account, Mechanism, Server, Tls};
use crate::telemetry::Metrics;

/// Opens signed-in sessions for one account. Clones share the settings
/// and the token provider.
#[derive(Debug, Clone)]
pub struct Connector {
    settings: Arc<Settings>,
}

/// Settings shared by every connection and session of an account.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) account: String,
    /// The mailbox address, sent as the SASL user.
    pub(crate) address: String,
    pub(crate) mechanism: Mechanism,
    pub(crate) server: Server,
    /// `host:port`, for messages.
    pub(crate) label: String,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    pub(crate) tokens: TokenProvider,
    pub(crate) metrics: Option<Metrics>,
    pub(crate) timeouts: Timeouts,
}

/// A connection that greeted and is ready for AUTHENTICATE.
pub(crate) struct Greeted {
    pub(crate) client: Client<Transport>,
    pub(crate) capabilities: Capabilities,
    pub(crate) tags: Tags,
}

impl Connector {
    /// Builds the connector of account `account_name` from its
    /// configuration, loading the TLS trust store now.
    ///
    /// # Errors
    ///
    /// [`ImapError::Config`] when the account has no `imap` table or sets
    /// `tls = "none"` without `allow_plaintext`, [`ImapError::TlsSettings`]
    /// when `ca_file` cannot be used, or the host is not a valid TLS name.
    pub fn new(
        account_name: &str,
        account: &Account,
        tokens: TokenProvider,
        metrics: Option<Metrics>,
    ) -> Result<Connector, ImapError> {
        let config_error = |reason: &str| ImapError::Config {
            account: account_name.to_owned(),
            reason: reason.to_owned(),
        };
        let server = account
            .imap
            .clone()
            .ok_or_else(|| config_error("no [accounts.NAME.imap] table; add host, port and tls"))?;
        if server.tls == Tls::None && !server.allow_plaintext {
            return Err(config_error(
                "tls = \"none\" needs allow_plaintext = true, because the token is sent unencrypted",
            ));
        }
        let tls = match server.tls {
            Tls::None => None,
            Tls::Implicit | Tls::Starttls => Some(tls_settings(account_name, &server)?),
        };

        let settings = Settings {
            account: account_name.to_owned(),
            address: account.address.clone(),
            mechanism: account.oauth2.mechanism,
            label: format!("{}:{}", server.host, server.port),
            server,
            tls,
            tokens,
            metrics,
            timeouts: Timeouts::default(),
        };
        Ok(Connector {
            settings: Arc::new(settings),
        })
    }

    /// Replaces the response and DONE timeouts.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Connector {
        Arc::make_mut(&mut self.settings).timeouts = timeouts;
        self
    }

    /// Returns the name of the account.
    pub fn account(&self) -> &str {
        &self.settings.account
    }

    /// Returns the server as `host:port`.
    pub fn server(&self) -> &str {
        &self.settings.label
    }

    /// Connects, signs in with a token of the account's provider and reads
    /// the capabilities. A token that the server rejects is refreshed once
    /// and tried once more.
    ///
    /// The session is signed in but not yet healthy: Microsoft 365 accepts
    /// AUTHENTICATE for identities that cannot open the mailbox, so only a
    /// successful [`Session::select`] proves the session usable.
    ///
    /// # Errors
    ///
    /// Any [`ImapError`] of connecting, TLS, sign-in or the first command;
    /// see [`ImapError::is_transient`] for which ones a retry may fix.
    pub async fn connect(&self) -> Result<Session, ImapError> {
        let greeted = self.open().await?;
        let signed_in = authenticate::sign_in(self, greeted).await?;

        Session::start(Arc::clone(&self.settings), signed_in).await
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Opens a connection up to the point where AUTHENTICATE may be sent.
    pub(crate) async fn open(&self) -> Result<Greeted, ImapError> {
        let settings = &self.settings;
        let deadline = Instant::now() + settings.server.connect_timeout;
        let tcp = self.tcp(deadline).await?;
        let mut tags = Tags::default();

        let (client, capabilities) = match settings.server.tls {
            Tls::Implicit => {
                let transport = self.handshake(tcp, None, deadline).await?;
                self.greet(Client::new(transport), &mut tags).await?
            }
            Tls::Starttls => self.starttls(tcp, &mut tags, deadline).await?,
            Tls::None => {
                self.greet(Client::new(Transport::plain(tcp)), &mut tags)
                    .await?
            }
        };
        Ok(Greeted {
            client,
            capabilities,
            tags,
        })
    }

    async fn tcp(&self, deadline: Instant) -> Result<TcpStream, ImapError> {
        let server = &self.settings.server;
        let connect = TcpStream::connect((server.host.as_str(), server.port));
        let tcp = tokio::time::timeout_at(deadline.into(), connect)
            .await
            .map_err(|_| self.connect_timeout("the TCP connection"))?
            .map_err(|source| ImapError::Connect {
                server: self.settings.label.clone(),
                source,
            })?;
        // Commands are short lines, which Nagle's algorithm would only delay.
        let _ = tcp.set_nodelay(true);

        Ok(tcp)
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        activity: Option<Activity>,
        deadline: Instant,
    ) -> Result<Transport, ImapError> {
        let Some((config, name)) = &self.settings.tls else {
            unreachable!("TLS settings exist unless tls = \"none\"");
        };
        if self.settings.server.danger_accept_invalid_certs {
            crate::tls::warn_unverified(&self.settings.account, "imap", &self.settings.label);
        }
        let connector = TlsConnector::from(Arc::clone(config));
        let handshake = connector.connect(name.clone(), tcp);
        let tls = tokio::time::timeout_at(deadline.into(), handshake)
            .await
            .map_err(|_| self.connect_timeout("the TLS handshake"))?
            .map_err(|source| ImapError::TlsHandshake {
                server: self.settings.label.clone(),
                source,
            })?;

        Ok(Transport::tls(tls, activity))
    }

    /// Reads the greeting and the capabilities, from the greeting's
    /// response code when it has one.
    async fn greet(
        &self,
        mut client: Client<Transport>,
        tags: &mut Tags,
    ) -> Result<(Client<Transport>, Capabilities), ImapError> {
        let timeout = self.settings.timeouts.response;
        let greeting = wire::next(&mut client, timeout, |response| match response {
            Response::Data {
                status: Status::Ok,
                code,
                ..
            } => match code {
                Some(ResponseCode::Capabilities(list)) => Ok(Some(Capabilities::from_list(list))),
                _ => Ok(None),
            },
            other => Err(wire::describe_response(other)),
        });
        let listed = greeting
            .await
            .map_err(|error| match error {
                WireError::Bye(text) => self.greeting_error(format!("BYE {text}")),
                other => self.wire_error("the greeting", other),
            })?
            .map_err(|text| self.greeting_error(text))?;

        let capabilities = match listed {
            Some(capabilities) => capabilities,
            None => self.capability(&mut client, tags).await?,
        };
        Ok((client, capabilities))
    }

    /// Sends CAPABILITY before sign-in.
    pub(crate) async fn capability(
        &self,
        client: &mut Client<Transport>,
        tags: &mut Tags,
    ) -> Result<Capabilities, ImapError> {
        let mut capabilities = None;
        let timeout = self.settings.timeouts.response;
        let completion = wire::run(
            client,
            &tags.next_tag(),
            "CAPABILITY",
            timeout,
            |response| {
                if let Response::Capabilities(list) = response {
                    capabilities = Some(Capabilities::from_list(list));
                }
            },
        )
        .await
        .map_err(|error| self.wire_error("the reply to CAPABILITY", error))?;

        match (completion.is_ok(), capabilities) {
            (true, Some(capabilities)) => Ok(capabilities),
            _ => Err(ImapError::Protocol {
                server: self.settings.label.clone(),
                step: "CAPABILITY".to_owned(),
                detail: completion.describe(),
            }),
        }
    }

    /// Runs mandatory STARTTLS. When the server does not offer it or
    /// rejects it, the connection is dropped and nothing else is sent.
    async fn starttls(
        &self,
        tcp: TcpStream,
        tags: &mut Tags,
        deadline: Instant,
    ) -> Result<(Client<Transport>, Capabilities), ImapError> {
        let greeted = tokio::time::timeout_at(
            deadline.into(),
            self.greet(Client::new(Transport::plain(tcp)), tags),
        );
        let (mut client, capabilities) = greeted
            .await
            .map_err(|_| self.connect_timeout("the greeting before STARTTLS"))??;
        if !capabilities.starttls() {
            let reason = "does not offer STARTTLS".to_owned();
            return Err(self.tls_required(reason, false));
        }

        let timeout = self.settings.timeouts.response;
        let tag = tags.next_tag();
        let command = wire::run(&mut client, &tag, "STARTTLS", timeout, |_| {});
        let completion = tokio::time::timeout_at(deadline.into(), command)
            .await
            .map_err(|_| self.connect_timeout("the reply to STARTTLS"))?
            .map_err(|error| self.wire_error("the reply to STARTTLS", error))?;
        if !completion.is_ok() {
            let reason = format!("rejected STARTTLS ({})", completion.describe());
            return Err(self.tls_required(reason, true));
        }

        // Bytes that arrived after the OK are dropped with the plaintext
        // client, so that a man in the middle cannot inject responses.
        let plain = client.into_inner();
        let (tcp, activity) = plain
            .into_tcp()
            .expect("the connection before STARTTLS is plaintext");
        let transport = self.handshake(tcp, Some(activity), deadline).await?;

        // Capabilities from before TLS may have been forged, so they are read again.
        let mut client = Client::new(transport);
        let capabilities = self.capability(&mut client, tags).await?;
        Ok((client, capabilities))
    }

    fn tls_required(&self, reason: String, refused: bool) -> ImapError {
        tracing::error!(
            account = %self.settings.account,
            server = %self.settings.label,
            reason = %reason,
            "STARTTLS unavailable, not signing in"
        );
        ImapError::TlsRequiredUnavailable {
            server: self.settings.label.clone(),
            reason,
            refused,
        }
    }

    fn connect_timeout(&self, step: &str) -> ImapError {
        ImapError::Timeout {
            server: self.settings.label.clone(),
            step: format!("{step} (connect_timeout)"),
            after: self.settings.server.connect_timeout,
        }
    }

    fn greeting_error(&self, text: String) -> ImapError {
        ImapError::Greeting {
            server: self.settings.label.clone(),
            text,
        }
    }

    pub(crate) fn wire_error(&self, step: &str, error: WireError) -> ImapError {
        error.into_imap(&self.settings.label, step)
    }
}

/// Builds the TLS client settings and the name that the server's
/// certificate must carry, a DNS name or an IP address.
fn tls_settings(
    account: &str,
    server: &Server,
) -> Result<(Arc<ClientConfig>, ServerName<'static>), ImapError> {
    let config = match server.danger_accept_invalid_certs {
        true => crate::tls::unverified_client_config(),
        false => crate::tls::client_config(server.ca_file.as_deref()).map_err(|source| {
            ImapError::TlsSettings {
                account: account.to_owned(),
                source,
            }
        })?,
    };
    let name = ServerName::try_from(server.host.clone()).map_err(|_| ImapError::Config {
        account: account.to_owned(),
        reason: format!("host {:?} is not a valid TLS server name", server.host),
    })?;

    Ok((config, name))
}

/// Time limits of a session's commands, beyond `connect_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Maximum silence of the server while a reply is due, such as the
    /// rest of a FETCH or the tagged reply to AUTHENTICATE. A reply that
    /// keeps arriving, such as a large message, does not time out.
    /// Default: 60s.
    pub response: Duration,
    /// Maximum wait for the tagged OK after IDLE's DONE, after which the
    /// connection counts as dead. Default: 10s.
    pub done: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            response: Duration::from_secs(60),
            done: Duration::from_secs(10),
        }
    }
}
