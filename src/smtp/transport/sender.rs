//! [`Sender`]: the SMTP submission client of one account, with its
//! connection pool.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::extension::ClientId;

use super::auth;
use super::connect::{Connection, Settings, tls_settings};
use super::error::SmtpError;
use super::pool::Pool;
use super::reply::Reply;
use super::transaction::{self, Envelope, Failure};
use crate::auth::TokenProvider;
use crate::config::{Account, Tls};
use crate::telemetry::Metrics;

/// Limits of a [`Sender`]'s connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Maximum signed-in connections, idle and busy together. Microsoft
    /// 365 rejects more than a few parallel submissions per mailbox with
    /// `432 4.3.2`. Default: 4.
    pub max_connections: usize,
    /// Time after which an idle connection is closed instead of reused.
    /// Servers close idle sessions after a few minutes (postfix after
    /// 300 s by default), so this stays below that. Default: 60s.
    pub idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 4,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Time limits of SMTP replies, beyond `connect_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Maximum wait for writing a command and for its reply. RFC 5321
    /// section 4.5.3.2 suggests up to 5 minutes, but a server silent for
    /// this long is taken as stalled. Default: 60s.
    pub reply: Duration,
    /// Maximum time for writing the message data, and then for the reply
    /// to it while the server scans and queues the message. Default: 600s,
    /// the wait that RFC 5321 section 4.5.3.2.6 suggests for that reply.
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            reply: Duration::from_secs(60),
            data_end: Duration::from_secs(600),
        }
    }
}

/// A message that the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Code of the server's final reply to the message data, such as 250.
    pub code: u16,
    /// Enhanced status code of that reply, such as `2.0.0`.
    pub enhanced: Option<String>,
    /// Text of that reply, which often contains the server's queue ID.
    pub text: String,
    /// Recipients that the server rejected at RCPT TO, with its reply.
    /// The message went to all others.
    pub rejected_recipients: Vec<(String, Reply)>,
}

/// Submits messages for one account over SMTP, signing in with its
/// OAuth2 token. Clones share the connection pool.
#[derive(Clone)]
pub struct Sender {
    settings: Arc<Settings>,
    pool: Arc<Pool>,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("account", &self.settings.account)
            .field("server", &self.settings.label)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// Builds the sender of account `account_name` from its `smtp` table,
    /// loading the TLS trust store now. No connection is opened yet.
    ///
    /// # Errors
    ///
    /// [`SmtpError::Config`] when the account has no `smtp` table, sets
    /// `tls = "none"` without `allow_plaintext`, has a host that is not a
    /// valid TLS name, or `pool.max_connections` is 0, and
    /// [`SmtpError::TlsSettings`] when `ca_file` cannot be used.
    pub fn new(
        account_name: &str,
        account: &Account,
        tokens: TokenProvider,
        metrics: Option<Metrics>,
        pool: PoolSettings,
    ) -> Result<Sender, SmtpError> {
        let config_error = |reason: &str| SmtpError::Config {
            account: account_name.to_owned(),
            reason: reason.to_owned(),
        };
        let server = account
            .smtp
            .clone()
            .ok_or_else(|| config_error("no [accounts.NAME.smtp] table; add host, port and tls"))?;
        if server.tls == Tls::None && !server.allow_plaintext {
            return Err(config_error(
                "tls = \"none\" needs allow_plaintext = true, because the token is sent unencrypted",
            ));
        }
        if pool.max_connections == 0 {
            return Err(config_error(
                "max_connections is 0; allow at least 1 connection",
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
            hello: ClientId::default(),
        };
        Ok(Sender {
            settings: Arc::new(settings),
            pool: Arc::new(Pool::new(pool)),
        })
    }

    /// Replaces the reply timeouts. Call it before cloning the sender.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Sender {
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

    /// Returns the number of idle connections in the pool.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_count()
    }

    /// Sends one message from `envelope_from` (empty for the null sender
    /// `<>`) to `recipients`. Ok carries the server's final reply to the
    /// message data and the recipients it rejected.
    ///
    /// The message goes over a pooled connection when one is idle, else
    /// over a new one. When the server closes a reused
    /// connection before the message data is complete, the message is
    /// sent once more on a new connection, and that is not an error.
    ///
    /// # Errors
    ///
    /// Any [`SmtpError`]; see [`SmtpError::is_transient`] for which ones a
    /// later retry may fix. [`SmtpError::Ambiguous`] means that the server
    /// may have accepted the message.
    pub async fn send(
        &self,
        envelope_from: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Result<Accepted, SmtpError> {
        let envelope = Envelope::new(envelope_from, recipients)?;
        let _permit = self.pool.acquire().await;

        let (mut connection, reused) = self.checkout().await?;
        let outcome =
            transaction::submit(&mut connection, &self.settings, &envelope, message).await;
        match outcome {
            Err(Failure::Closed(error)) if reused => {
                tracing::info!(
                    account = %self.settings.account,
                    server = %self.settings.label,
                    connection = connection.id,
                    error = %error,
                    "Pooled SMTP connection closed by the server, sending on a new connection"
                );
                let mut connection = auth::sign_in(&self.settings).await?;
                let outcome =
                    transaction::submit(&mut connection, &self.settings, &envelope, message).await;
                self.finish(connection, outcome)
            }
            outcome => self.finish(connection, outcome),
        }
    }

    /// Opens a new connection, signs in and closes it with QUIT without
    /// sending mail, for `mailbridge check`. Returns the AUTH mechanisms
    /// and the SIZE limit (RFC 1870) that EHLO listed after TLS started.
    ///
    /// # Errors
    ///
    /// Any [`SmtpError`] of connecting, TLS, EHLO or AUTH.
    pub async fn sign_in_only(&self) -> Result<(Vec<String>, Option<u64>), SmtpError> {
        let connection = auth::sign_in(&self.settings).await?;
        let mechanisms = connection.capabilities.mechanisms().to_vec();
        let size = connection.capabilities.max_message_bytes();
        connection.quit().await;

        Ok((mechanisms, size))
    }

    /// Closes every idle connection with QUIT, for a clean shutdown.
    /// Connections in use stay open until their send ends.
    pub async fn close_idle(&self) {
        self.pool.close_idle().await;
    }

    /// Returns a pooled connection, or a new one, with whether the
    /// connection was reused. A pooled connection is not checked first:
    /// a server that closed it shows that in the replies before the
    /// message data, and [`Sender::send`] then uses a new connection.
    async fn checkout(&self) -> Result<(Connection, bool), SmtpError> {
        match self.pool.take() {
            Some(connection) => Ok((connection, true)),
            None => Ok((auth::sign_in(&self.settings).await?, false)),
        }
    }

    /// Gives a usable connection back to the pool and returns the result.
    fn finish(
        &self,
        connection: Connection,
        outcome: Result<Accepted, Failure>,
    ) -> Result<Accepted, SmtpError> {
        match outcome {
            Ok(accepted) => {
                self.pool.put(connection);
                Ok(accepted)
            }
            Err(Failure::Rejected(error)) => {
                self.pool.put(connection);
                Err(error)
            }
            Err(Failure::Closed(error) | Failure::Broken(error)) => {
                if let SmtpError::Ambiguous { .. } = &error {
                    tracing::warn!(
                        account = %self.settings.account,
                        server = %self.settings.label,
                        connection = connection.id,
                        error = %error,
                        "SMTP outcome unknown after the message data"
                    );
                }
                Err(error)
            }
        }
    }
}
