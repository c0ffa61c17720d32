//! Errors of SMTP submission. `Display` names the server as `host:port`
//! and the fix when it is known, and [`SmtpError::hint`] gives the fix
//! alone. Neither ever contains a token or a SASL response.

use std::fmt;
use std::io;
use std::time::Duration;

use humantime::format_duration;

use super::reply::Reply;
use crate::auth::{ProviderError, SaslError};
use crate::tls::TlsError;

/// Cause of a failed mandatory STARTTLS (RFC 3207).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProblem {
    /// The EHLO reply does not list STARTTLS.
    NotOffered,
    /// The server replied to STARTTLS with an error, such as `454 4.7.0`.
    Refused,
    /// The TLS handshake after the server's `220` failed.
    Handshake,
}

impl TlsProblem {
    /// Returns the fix, as [`SmtpError::hint`] gives it.
    fn fix(self) -> &'static str {
        match self {
            Self::NotOffered => {
                "use tls = \"implicit\" with the server's TLS port (usually 465), or fix the \
                 server or the network device that removes STARTTLS"
            }
            Self::Refused => "retry later; if it persists, fix the server's TLS settings",
            Self::Handshake => HANDSHAKE_FIX,
        }
    }
}

impl fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotOffered => "does not offer STARTTLS",
            Self::Refused => "rejected STARTTLS",
            Self::Handshake => "failed the TLS handshake after STARTTLS",
        })
    }
}

const HANDSHAKE_FIX: &str = crate::tls::CERTIFICATE_FIX;
const TOKEN_USER_FIX: &str = "the token's user must match the account address, which is sent as \
     the SASL user; check address and login_hint, then run `mailbridge authorize ACCOUNT`";
const AUTH_DISABLED_FIX: &str = "SMTP AUTH is disabled for the tenant or the mailbox; enable it \
     with `Set-CASMailbox -Identity ADDRESS -SmtpClientAuthenticationDisabled $false`";

/// Failure to connect, sign in or submit a message.
///
/// Fields that recur: `server` is the server as `host:port`, `account` the
/// account name, `user` the mailbox address sent as the SASL user, `reply`
/// the server's reply, `step` the reply that the client waited for, and
/// `source` the underlying error.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// The account cannot be used for SMTP as configured.
    #[error("invalid SMTP settings of account {account}: {reason}")]
    Config {
        account: String,
        /// The problem and its fix.
        reason: String,
    },
    /// The TLS client settings could not be built.
    #[error("failed to set up TLS for the SMTP server of account {account}: {source}")]
    TlsSettings {
        account: String,
        #[source]
        source: TlsError,
    },
    /// An envelope address that cannot be sent.
    #[error("invalid envelope address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// The reason that it cannot be sent.
        reason: String,
    },
    /// The TCP connection failed.
    #[error("failed to connect to SMTP server {server}: {source}; check host and port")]
    Connect {
        server: String,
        #[source]
        source: io::Error,
    },
    /// The server sent no reply in time.
    #[error("timed out after {} waiting for {step} from SMTP server {server}", format_duration(*after))]
    Timeout {
        server: String,
        step: String,
        /// The time limit that passed.
        after: Duration,
    },
    /// The TLS handshake of `tls = "implicit"` failed.
    #[error(
        "TLS handshake with SMTP server {server} failed: {source}; {}",
        crate::tls::handshake_fix(source)
    )]
    TlsHandshake {
        server: String,
        #[source]
        source: io::Error,
    },
    /// `tls = "starttls"` is set and TLS could not be started. The
    /// connection was closed before AUTH, MAIL FROM or message data, so no
    /// token left the process.
    #[error(
        "SMTP server {server} {problem} ({detail}), and tls = \"starttls\" requires TLS \
         before sign-in, so the connection was closed; {}",
        problem.fix()
    )]
    TlsRequiredUnavailable {
        server: String,
        problem: TlsProblem,
        /// The offered extensions, the server's reply or the TLS error.
        detail: String,
        /// The reply to STARTTLS, when it was refused.
        reply: Option<Box<Reply>>,
    },
    /// The server's greeting was not `220`.
    #[error("SMTP server {server} did not greet with 220: {reply}")]
    Greeting { server: String, reply: Box<Reply> },
    /// EHLO got an error reply.
    #[error("EHLO failed on SMTP server {server}: {reply}")]
    Ehlo { server: String, reply: Box<Reply> },
    /// The server offers neither XOAUTH2 nor OAUTHBEARER.
    #[error(
        "SMTP server {server} offers no OAuth2 SASL mechanism (offered: {}); it needs \
         AUTH XOAUTH2 or OAUTHBEARER, so check that OAuth2 sign-in is enabled for SMTP",
        offered_list(offered)
    )]
    NoMechanism {
        server: String,
        /// The mechanisms that the server offered.
        offered: Vec<String>,
    },
    /// No access token could be obtained.
    #[error("failed to get an access token for the SMTP sign-in of account {account}: {source}")]
    Token {
        account: String,
        #[source]
        source: ProviderError,
    },
    /// The SASL response could not be built from the address and token.
    #[error("failed to build the SASL response of account {account}: {source}")]
    Sasl {
        account: String,
        #[source]
        source: SaslError,
    },
    /// The token was rejected, then rejected again after a forced refresh.
    #[error(
        "SMTP server {server} rejected the token of account {account} twice, the second \
         time right after a forced refresh ({detail}); the token's user must match the \
         account address {user}, which is sent as the SASL user, so check address and \
         login_hint and run `mailbridge authorize {account}` to sign in as that user"
    )]
    TokenRejected {
        server: String,
        account: String,
        user: String,
        /// The error challenge's fields and the server's last reply.
        detail: String,
        reply: Box<Reply>,
    },
    /// The error challenge reported a bad request or a missing scope.
    #[error(
        "SMTP server {server} rejected the sign-in request of account {account} ({detail}); \
         check the scopes of the account, which must grant SMTP access, then run \
         `mailbridge authorize {account}`"
    )]
    AuthConfiguration {
        server: String,
        account: String,
        /// The error challenge's fields and the server's reply.
        detail: String,
        reply: Box<Reply>,
    },
    /// `535 5.7.139`: Microsoft 365 has SMTP AUTH disabled for the tenant
    /// or the mailbox. A new token does not help.
    #[error(
        "SMTP server {server} has SMTP AUTH disabled for account {account} ({reply}); an \
         Exchange Online administrator enables it with `Set-CASMailbox -Identity {user} \
         -SmtpClientAuthenticationDisabled $false`, or for the whole tenant with \
         `Set-TransportConfig -SmtpClientAuthenticationDisabled $false`"
    )]
    AuthDisabled {
        server: String,
        account: String,
        user: String,
        reply: Box<Reply>,
    },
    /// A 4xx reply to AUTH, such as `454 4.7.0` while the server cannot
    /// check tokens.
    #[error("SMTP server {server} could not check the token for now: {reply}")]
    AuthUnavailable { server: String, reply: Box<Reply> },
    /// AUTH failed for another reason, such as `501 5.5.124` for a SASL
    /// user that is not a mailbox address.
    #[error("AUTH of account {account} failed on SMTP server {server}: {reply}")]
    Authenticate {
        server: String,
        account: String,
        reply: Box<Reply>,
    },
    /// `530 5.7.57`: the server took the session as not signed in.
    #[error(
        "SMTP server {server} rejected the mail because the session is not authenticated \
         ({reply}); mailbridge signs in before every transaction, so check that the server \
         accepts AUTH on this port"
    )]
    NotAuthenticated { server: String, reply: Box<Reply> },
    /// `554 5.2.252 SendAsDenied`: the signed-in mailbox may not use this
    /// sender. Only this message fails, and the connection stays usable.
    #[error(
        "SMTP server {server} does not allow the signed-in mailbox to send as {from} \
         ({reply}); grant it the Send As permission for that address, or send from the \
         account address"
    )]
    SendAsDenied {
        server: String,
        /// The envelope sender.
        from: String,
        reply: Box<Reply>,
    },
    /// `432 4.3.2`: too many parallel submissions from one mailbox.
    #[error(
        "SMTP server {server} limits parallel submissions from this mailbox ({reply}); \
         retry later, and lower the pipeline's max_in_flight if it repeats"
    )]
    ConcurrencyLimit { server: String, reply: Box<Reply> },
    /// Microsoft 365's `SubmissionQuotaExceeded`: the mailbox reached its
    /// sending limit for the day.
    #[error(
        "SMTP server {server} rejected the mail because the mailbox reached its sending \
         quota ({reply}); pause sending from this account until the quota resets"
    )]
    QuotaExceeded { server: String, reply: Box<Reply> },
    /// Every recipient was rejected, so nothing was sent.
    #[error(
        "SMTP server {server} rejected every recipient: {}",
        recipient_list(rejected)
    )]
    RecipientsRejected {
        server: String,
        /// Each recipient and the reply to its RCPT TO.
        rejected: Vec<(String, Reply)>,
    },
    /// MAIL FROM or the message got another error reply.
    #[error("SMTP server {server} rejected {command}: {reply}")]
    Rejected {
        server: String,
        /// The command, such as `MAIL FROM` or `DATA`.
        command: &'static str,
        reply: Box<Reply>,
    },
    /// The message exceeds the SIZE that the server announced (RFC 1870).
    #[error(
        "the message of {size} bytes exceeds the maximum of {limit} bytes that SMTP \
         server {server} accepts"
    )]
    MessageTooLarge {
        server: String,
        /// Size of the message in bytes.
        size: usize,
        /// The server's maximum in bytes.
        limit: u64,
    },
    /// The message needs an extension that the server lacks.
    #[error("SMTP server {server} does not support {feature}, which {reason}")]
    Unsupported {
        server: String,
        /// The extension, such as `SMTPUTF8`.
        feature: &'static str,
        /// The part of the message that needs it.
        reason: &'static str,
    },
    /// The server closed the connection, with `421` or `221` or without a
    /// reply, before the message data was complete. Nothing was delivered.
    #[error("SMTP server {server} closed the connection during {step}{}", with_reply(reply.as_deref()))]
    ConnectionClosed {
        server: String,
        step: String,
        /// The server's last reply, when it sent one.
        reply: Option<Box<Reply>>,
    },
    /// Reading or writing failed before the message data was complete.
    #[error("I/O error with SMTP server {server} during {step}: {source}")]
    Io {
        server: String,
        step: String,
        #[source]
        source: io::Error,
    },
    /// The server sent something that is not an SMTP reply.
    #[error("unexpected reply from SMTP server {server} during {step}: {detail}")]
    Protocol {
        server: String,
        step: String,
        /// The problem with the reply.
        detail: String,
    },
    /// The connection failed after the message data and its final `.`
    /// were sent and before the reply arrived. The server may have
    /// accepted the message.
    #[error(
        "the connection to SMTP server {server} failed after the message data was sent and \
         before the reply ({detail}), so the server may have accepted the message; resend \
         it with the same Message-ID so that receivers can drop the duplicate"
    )]
    Ambiguous {
        server: String,
        /// What failed.
        detail: String,
    },
}

impl SmtpError {
    /// Short stable name, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config { .. } => "config",
            Self::TlsSettings { .. } => "tls_settings",
            Self::InvalidAddress { .. } => "invalid_address",
            Self::Connect { .. } => "connect",
            Self::Timeout { .. } => "timeout",
            Self::TlsHandshake { .. } => "tls_handshake",
            Self::TlsRequiredUnavailable { .. } => "tls_required_unavailable",
            Self::Greeting { .. } => "greeting",
            Self::Ehlo { .. } => "ehlo",
            Self::NoMechanism { .. } => "no_mechanism",
            Self::Token { .. } => "token",
            Self::Sasl { .. } => "sasl",
            Self::TokenRejected { .. } => "token_rejected",
            Self::AuthConfiguration { .. } => "auth_configuration",
            Self::AuthDisabled { .. } => "smtp_auth_disabled",
            Self::AuthUnavailable { .. } => "auth_unavailable",
            Self::Authenticate { .. } => "authenticate",
            Self::NotAuthenticated { .. } => "not_authenticated",
            Self::SendAsDenied { .. } => "send_as_denied",
            Self::ConcurrencyLimit { .. } => "concurrency_limit",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::RecipientsRejected { .. } => "recipients_rejected",
            Self::Rejected { .. } => "rejected",
            Self::MessageTooLarge { .. } => "message_too_large",
            Self::Unsupported { .. } => "unsupported",
            Self::ConnectionClosed { .. } => "connection_closed",
            Self::Io { .. } => "io",
            Self::Protocol { .. } => "protocol",
            Self::Ambiguous { .. } => "ambiguous",
        }
    }

    /// Returns whether sending the same message later may succeed without
    /// a change by an operator: 4xx replies, network failures, timeouts,
    /// unreadable replies and [`SmtpError::Ambiguous`].
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::AuthUnavailable { .. }
            | Self::ConcurrencyLimit { .. }
            | Self::ConnectionClosed { .. }
            | Self::Io { .. }
            | Self::Protocol { .. }
            | Self::Ambiguous { .. } => true,
            Self::TlsRequiredUnavailable { reply, .. } => {
                reply.as_deref().is_some_and(Reply::is_transient)
            }
            Self::Greeting { reply, .. }
            | Self::Ehlo { reply, .. }
            | Self::Rejected { reply, .. } => reply.is_transient(),
            Self::RecipientsRejected { rejected, .. } => {
                rejected.iter().all(|(_, reply)| reply.is_transient())
            }
            Self::Token { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// Returns whether sending the same message again fails the same way
    /// until something changes: the opposite of [`SmtpError::is_transient`].
    pub fn is_permanent(&self) -> bool {
        !self.is_transient()
    }

    /// Returns whether the failure concerns the account rather than one
    /// message, so that every further message would fail the same way
    /// until an operator acts: configuration, TLS, sign-in and quota.
    pub fn affects_account(&self) -> bool {
        match self {
            Self::Config { .. }
            | Self::TlsSettings { .. }
            | Self::TlsHandshake { .. }
            | Self::NoMechanism { .. }
            | Self::Sasl { .. }
            | Self::TokenRejected { .. }
            | Self::AuthConfiguration { .. }
            | Self::AuthDisabled { .. }
            | Self::Authenticate { .. }
            | Self::NotAuthenticated { .. }
            | Self::QuotaExceeded { .. } => true,
            Self::TlsRequiredUnavailable { problem, .. } => *problem != TlsProblem::Refused,
            Self::Token { source, .. } => source.needs_authorization(),
            _ => false,
        }
    }

    /// Returns the server reply that caused the error, if one did. For
    /// [`SmtpError::RecipientsRejected`] it is the first recipient's.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Self::Greeting { reply, .. }
            | Self::Ehlo { reply, .. }
            | Self::TokenRejected { reply, .. }
            | Self::AuthConfiguration { reply, .. }
            | Self::AuthDisabled { reply, .. }
            | Self::AuthUnavailable { reply, .. }
            | Self::Authenticate { reply, .. }
            | Self::NotAuthenticated { reply, .. }
            | Self::SendAsDenied { reply, .. }
            | Self::ConcurrencyLimit { reply, .. }
            | Self::QuotaExceeded { reply, .. }
            | Self::Rejected { reply, .. } => Some(reply.as_ref()),
            Self::TlsRequiredUnavailable { reply, .. } | Self::ConnectionClosed { reply, .. } => {
                reply.as_deref()
            }
            Self::RecipientsRejected { rejected, .. } => rejected.first().map(|(_, reply)| reply),
            _ => None,
        }
    }

    /// Returns the reply code, such as 535, when a reply caused the error.
    pub fn code(&self) -> Option<u16> {
        self.reply().map(|reply| reply.code)
    }

    /// Returns the enhanced status code, such as `5.7.139`, when the reply
    /// that caused the error has one.
    pub fn enhanced(&self) -> Option<&str> {
        self.reply()?.enhanced.as_deref()
    }

    /// Returns the fix in one line, when one is known. `ACCOUNT` and
    /// `ADDRESS` stand for the account name and its address, which
    /// `Display` fills in.
    pub fn hint(&self) -> Option<&str> {
        let hint = match self {
            Self::TlsHandshake { source, .. } => crate::tls::handshake_fix(source),
            Self::TlsRequiredUnavailable { problem, .. } => problem.fix(),
            Self::NoMechanism { .. } => {
                "the server must offer AUTH XOAUTH2 or OAUTHBEARER; enable OAuth2 sign-in for SMTP"
            }
            Self::Token { source, .. } if source.needs_authorization() => {
                "run `mailbridge authorize ACCOUNT` to sign the account in again"
            }
            Self::TokenRejected { .. } => TOKEN_USER_FIX,
            Self::AuthConfiguration { .. } => {
                "the account's scopes must grant SMTP access, such as \
                 https://outlook.office.com/SMTP.Send; then run `mailbridge authorize ACCOUNT`"
            }
            Self::AuthDisabled { .. } => AUTH_DISABLED_FIX,
            Self::NotAuthenticated { .. } => {
                "the server did not take the sign-in; check that it accepts AUTH on this port"
            }
            Self::SendAsDenied { .. } => {
                "grant the signed-in mailbox Send As permission for the sender, or send from \
                 the account address"
            }
            Self::ConcurrencyLimit { .. } => "retry later with fewer parallel connections",
            Self::QuotaExceeded { .. } => "pause sending from this account until its quota resets",
            Self::Ambiguous { .. } => {
                "resend with the same Message-ID; the server may have accepted the message"
            }
            _ => return None,
        };
        Some(hint)
    }
}

fn offered_list(offered: &[String]) -> String {
    match offered.is_empty() {
        true => "none".to_owned(),
        false => offered.join(", "),
    }
}

fn recipient_list(rejected: &[(String, Reply)]) -> String {
    let each: Vec<String> = rejected
        .iter()
        .map(|(recipient, reply)| format!("{recipient} ({reply})"))
        .collect();
    each.join(", ")
}

fn with_reply(reply: Option<&Reply>) -> String {
    match reply {
        Some(reply) => format!(" with {reply}"),
        None => " without a reply".to_owned(),
    }
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
