//! Errors of IMAP sessions. `Display` names the server as `host:port`,
//! the mailbox where one is involved, and the fix when it is known. It
//! never contains a token or a SASL response.

use std::io;
use std::time::Duration;

use humantime::format_duration;

use crate::auth::{ProviderError, SaslError};
use crate::tls::TlsError;

/// Failure of a connection, sign-in or command.
///
/// Fields that recur: `server` is the server as `host:port`, `account` the
/// account name and `user` the mailbox address sent as the SASL user.
/// `mailbox` is a mailbox name in UTF-8, `text` the server's reply, `step`
/// the reply that the client waited for, and `source` the underlying error.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// The account cannot be used for IMAP as configured.
    #[error("invalid IMAP settings of account {account}: {reason}")]
    Config {
        account: String,
        /// The problem and its fix.
        reason: String,
    },
    /// The TLS client settings could not be built.
    #[error("failed to set up TLS for the IMAP server of account {account}: {source}")]
    TlsSettings {
        account: String,
        #[source]
        source: TlsError,
    },
    /// The TCP connection failed.
    #[error("failed to connect to IMAP server {server}: {source}; check host and port")]
    Connect {
        server: String,
        #[source]
        source: io::Error,
    },
    /// The server sent no reply in time.
    #[error("timed out after {} waiting for {step} from IMAP server {server}", format_duration(*after))]
    Timeout {
        server: String,
        step: String,
        /// The time limit that passed.
        after: Duration,
    },
    /// The TLS handshake failed, for example on an untrusted certificate,
    /// a certificate for another host name, or a plaintext port.
    #[error(
        "TLS handshake with IMAP server {server} failed: {source}; {}",
        crate::tls::handshake_fix(source)
    )]
    TlsHandshake {
        server: String,
        #[source]
        source: io::Error,
    },
    /// `tls = "starttls"` is set, but the server does not offer STARTTLS or
    /// rejected it. Nothing was sent after that, so no token left the process.
    #[error(
        "IMAP server {server} {reason}, and tls = \"starttls\" requires TLS before \
         sign-in; use tls = \"implicit\" with the server's TLS port (usually 993), or fix \
         the server or the network device that removes STARTTLS"
    )]
    TlsRequiredUnavailable {
        server: String,
        /// The server's behaviour, such as "does not offer STARTTLS".
        reason: String,
        /// Whether the server offered STARTTLS and then rejected it, which
        /// may be temporary.
        refused: bool,
    },
    /// The server's greeting was `BYE`, `PREAUTH` or unreadable.
    #[error("IMAP server {server} did not greet with OK: {text}")]
    Greeting { server: String, text: String },
    /// The server offers neither XOAUTH2 nor OAUTHBEARER.
    #[error(
        "IMAP server {server} offers no OAuth2 SASL mechanism (offered: {}); it needs \
         AUTH=XOAUTH2 or AUTH=OAUTHBEARER, so check that OAuth2 sign-in is enabled for IMAP",
        offered_list(offered)
    )]
    NoMechanism {
        server: String,
        /// The mechanisms that the server offered.
        offered: Vec<String>,
    },
    /// No access token could be obtained.
    #[error("failed to get an access token for the IMAP sign-in of account {account}: {source}")]
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
        "IMAP server {server} rejected the token of account {account} twice, the second \
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
    },
    /// The error challenge reported a bad request or a missing scope.
    #[error(
        "IMAP server {server} rejected the sign-in request of account {account} ({detail}); \
         check the scopes of the account, which must grant IMAP access, then run \
         `mailbridge authorize {account}`"
    )]
    AuthConfiguration {
        server: String,
        account: String,
        /// The error challenge's fields and the server's reply.
        detail: String,
    },
    /// `NO [UNAVAILABLE]`: the server could not check the token for now.
    #[error("IMAP server {server} could not check the token for now: {text}")]
    AuthUnavailable { server: String, text: String },
    /// AUTHENTICATE failed for another reason, such as `BAD`.
    #[error("AUTHENTICATE of account {account} failed on IMAP server {server}: {text}")]
    Authenticate {
        server: String,
        account: String,
        text: String,
    },
    /// Sign-in succeeded but the mailbox cannot be opened: Microsoft 365's
    /// "User is authenticated but not connected", or `BYE` right after
    /// sign-in. Retries should wait minutes, not seconds.
    #[error(
        "IMAP server {server} signed account {account} in but did not open {}: {text}; \
         the signed-in identity differs from the address {user}, lacks permission on the \
         mailbox, or IMAP is disabled for it. Check the token's user against address and \
         login_hint, the mailbox permissions and that IMAP is enabled for the mailbox, then \
         run `mailbridge authorize {account}` if the wrong identity signed in",
        mailbox_label(mailbox.as_deref())
    )]
    MailboxAccessDenied {
        server: String,
        account: String,
        user: String,
        mailbox: Option<String>,
        text: String,
    },
    /// The mailbox does not exist.
    #[error(
        "mailbox {mailbox:?} not found on IMAP server {server} ({text}); check the \
         name, which is given in UTF-8 as mail clients show it"
    )]
    MailboxNotFound {
        server: String,
        mailbox: String,
        text: String,
    },
    /// No mailbox carries the special-use attribute that a setting names.
    #[error(
        "no mailbox on IMAP server {server} carries the special-use attribute {attribute} \
         that {key} names, and mailbridge does not create one; give the attribute to a \
         mailbox on the server, or set {key} to a mailbox name"
    )]
    SpecialUseNotFound {
        server: String,
        /// The setting, such as `move_to`.
        key: &'static str,
        /// The attribute, such as `\Junk`.
        attribute: String,
    },
    /// A mailbox name that cannot be sent, such as one with a line break.
    #[error("invalid mailbox name {mailbox:?}: {reason}")]
    InvalidMailbox {
        mailbox: String,
        /// The reason that the name cannot be sent.
        reason: String,
    },
    /// SELECT failed for another reason.
    #[error("SELECT of mailbox {mailbox:?} failed on IMAP server {server}: {text}")]
    Select {
        server: String,
        mailbox: String,
        text: String,
    },
    /// SELECT returned no UIDVALIDITY, so UIDs cannot be checkpointed.
    #[error(
        "IMAP server {server} returned no UIDVALIDITY for mailbox {mailbox:?}, so its \
         UIDs cannot be checkpointed"
    )]
    NoUidValidity { server: String, mailbox: String },
    /// A command that needs a selected mailbox ran before SELECT.
    #[error("{command} needs a selected mailbox on IMAP server {server}; call select first")]
    NotSelected {
        server: String,
        /// The command that needs the mailbox.
        command: &'static str,
    },
    /// A command got `NO` or `BAD`.
    #[error("{command} failed on IMAP server {server}{}: {text}", in_mailbox(mailbox.as_deref()))]
    Command {
        server: String,
        /// The command, such as `UID FETCH`.
        command: &'static str,
        mailbox: Option<String>,
        /// Whether the reply was `BAD`, which a retry does not fix.
        bad: bool,
        text: String,
    },
    /// The server lacks an extension that the request needs.
    #[error("IMAP server {server} does not support {feature}; {fix}")]
    Unsupported {
        server: String,
        /// The missing extension and what needs it.
        feature: &'static str,
        /// The change to make in the configuration.
        fix: &'static str,
    },
    /// A keyword that is not an IMAP atom.
    #[error(
        "invalid IMAP keyword {keyword:?}: a keyword is an atom without spaces, \
         parentheses, braces, quotes, `\\`, `%`, `*`, `]` or control characters"
    )]
    InvalidKeyword {
        /// The keyword as configured.
        keyword: String,
    },
    /// The server ended the session with `BYE`.
    #[error("IMAP server {server} closed the session: BYE {text}")]
    Bye { server: String, text: String },
    /// Nothing arrived for the liveness time, and DONE or NOOP got no reply.
    #[error(
        "IMAP server {server} sent nothing for {}, and the check for a reply timed out; \
         the connection is dead and must be opened again",
        format_duration(*silent_for)
    )]
    DeadConnection {
        server: String,
        /// Time since the last server output.
        silent_for: Duration,
    },
    /// The connection closed without `BYE`.
    #[error("connection to IMAP server {server} closed while waiting for {step}")]
    ConnectionLost { server: String, step: String },
    /// Reading or writing failed.
    #[error("I/O error with IMAP server {server} during {step}: {source}")]
    Io {
        server: String,
        step: String,
        #[source]
        source: io::Error,
    },
    /// The server sent something that breaks the protocol.
    #[error("unexpected reply from IMAP server {server} during {step}: {detail}")]
    Protocol {
        server: String,
        step: String,
        /// The problem with the reply.
        detail: String,
    },
}

impl ImapError {
    /// Short stable name, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config { .. } => "config",
            Self::TlsSettings { .. } => "tls_settings",
            Self::Connect { .. } => "connect",
            Self::Timeout { .. } => "timeout",
            Self::TlsHandshake { .. } => "tls_handshake",
            Self::TlsRequiredUnavailable { .. } => "tls_required_unavailable",
            Self::Greeting { .. } => "greeting",
            Self::NoMechanism { .. } => "no_mechanism",
            Self::Token { .. } => "token",
            Self::Sasl { .. } => "sasl",
            Self::TokenRejected { .. } => "token_rejected",
            Self::AuthConfiguration { .. } => "auth_configuration",
            Self::AuthUnavailable { .. } => "auth_unavailable",
            Self::Authenticate { .. } => "authenticate",
            Self::MailboxAccessDenied { .. } => "mailbox_access_denied",
            Self::MailboxNotFound { .. } => "mailbox_not_found",
            Self::SpecialUseNotFound { .. } => "special_use_not_found",
            Self::InvalidMailbox { .. } => "invalid_mailbox",
            Self::Select { .. } => "select",
            Self::NoUidValidity { .. } => "no_uidvalidity",
            Self::NotSelected { .. } => "not_selected",
            Self::Command { .. } => "command",
            Self::Unsupported { .. } => "unsupported",
            Self::InvalidKeyword { .. } => "invalid_keyword",
            Self::Bye { .. } => "bye",
            Self::DeadConnection { .. } => "dead_connection",
            Self::ConnectionLost { .. } => "connection_lost",
            Self::Io { .. } => "io",
            Self::Protocol { .. } => "protocol",
        }
    }

    /// Returns whether a new connection may succeed without a change by an
    /// operator. [`ImapError::MailboxAccessDenied`] is not transient, but a
    /// watcher may still retry it after minutes, because Microsoft 365
    /// also sends it when it sheds load.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::Greeting { .. }
            | Self::AuthUnavailable { .. }
            | Self::Bye { .. }
            | Self::DeadConnection { .. }
            | Self::ConnectionLost { .. }
            | Self::Io { .. }
            | Self::Protocol { .. } => true,
            Self::TlsRequiredUnavailable { refused, .. } => *refused,
            Self::Token { source, .. } => source.is_transient(),
            Self::Command { bad, .. } => !bad,
            _ => false,
        }
    }

    /// Returns whether the server ended the session because its access
    /// token expired, as Exchange Online does with
    /// `BYE Session invalidated - AccessTokenExpired`. The cached token
    /// may still look valid by its `expires_in`, so it must be refreshed
    /// before the next sign-in.
    pub fn is_token_expired(&self) -> bool {
        let Self::Bye { text, .. } = self else {
            return false;
        };
        let text = text.to_ascii_lowercase();
        text.contains("token") && text.contains("expired")
    }
}

fn offered_list(offered: &[String]) -> String {
    match offered.is_empty() {
        true => "none".to_owned(),
        false => offered.join(", "),
    }
}

fn mailbox_label(mailbox: Option<&str>) -> String {
    match mailbox {
        Some(mailbox) => format!("mailbox {mailbox:?}"),
        None => "the mailbox".to_owned(),
    }
}

fn in_mailbox(mailbox: Option<&str>) -> String {
    match mailbox {
        Some(mailbox) => format!(" in mailbox {mailbox:?}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "imap.example.test:993";

    #[test]
    fn token_rejected_names_fix() {
        let error = ImapError::TokenRejected {
            server: SERVER.into(),
            account: "support".into(),
            user: "support@example.test".into(),
            detail: r#"status "401""#.into(),
        };

        let text = error.to_string();
        assert!(text.contains(SERVER), "{text}");
        assert!(text.contains("support@example.test"), "{text}");
        assert!(text.contains("mailbridge authorize support"), "{text}");
        assert!(!error.is_transient());
        assert_eq!(error.kind(), "token_rejected");
    }

    #[test]
    fn access_denied_names_mailbox_and_hint() {
        let error = ImapError::MailboxAccessDenied {
            server: SERVER.into(),
            account: "shared".into(),
            user: "shared-inbox@example.test".into(),
            mailbox: Some("Entwürfe".into()),
            text: "User is authenticated but not connected.".into(),
        };

        let text = error.to_string();
        assert!(text.contains("\"Entwürfe\""), "{text}");
        assert!(text.contains("IMAP is enabled"), "{text}");
        assert!(text.contains("login_hint"), "{text}");
        assert_eq!(error.kind(), "mailbox_access_denied");
    }

    #[test]
    fn starttls_refusal_transient_only_when_refused() {
        let missing = ImapError::TlsRequiredUnavailable {
            server: SERVER.into(),
            reason: "does not offer STARTTLS".into(),
            refused: false,
        };
        let refused = ImapError::TlsRequiredUnavailable {
            server: SERVER.into(),
            reason: "rejected STARTTLS".into(),
            refused: true,
        };

        assert!(!missing.is_transient());
        assert!(refused.is_transient());
        assert_eq!(missing.kind(), "tls_required_unavailable");
        assert!(missing.to_string().contains("tls = \"implicit\""));
    }

    #[test]
    fn no_mechanism_lists_offered() {
        let error = ImapError::NoMechanism {
            server: SERVER.into(),
            offered: vec!["PLAIN".into(), "LOGIN".into()],
        };

        assert!(error.to_string().contains("offered: PLAIN, LOGIN"));
    }

    #[test]
    fn command_bad_not_transient() {
        let command = |bad| ImapError::Command {
            server: SERVER.into(),
            command: "UID FETCH",
            mailbox: Some("INBOX".into()),
            bad,
            text: "Error in IMAP command".into(),
        };

        assert!(command(false).is_transient());
        assert!(!command(true).is_transient());
        assert!(command(true).to_string().contains("in mailbox \"INBOX\""));
    }

    #[test]
    fn special_use_not_found_names_key_and_attribute() {
        let error = ImapError::SpecialUseNotFound {
            server: SERVER.into(),
            key: "move_to",
            attribute: "\\Junk".into(),
        };

        let text = error.to_string();
        assert!(
            text.contains("attribute \\Junk that move_to names"),
            "{text}"
        );
        assert!(text.contains("does not create one"), "{text}");
        assert!(!error.is_transient());
        assert_eq!(error.kind(), "special_use_not_found");
    }

    #[test]
    fn dead_connection_transient() {
        let error = ImapError::DeadConnection {
            server: SERVER.into(),
            silent_for: Duration::from_secs(300),
        };

        assert!(error.is_transient());
        assert!(error.to_string().contains("5m"), "{error}");
    }

    #[test]
    fn token_expired_bye_recognised() {
        let bye = |text: &str| ImapError::Bye {
            server: SERVER.to_owned(),
            text: text.to_owned(),
        };

        assert!(bye("Session invalidated - AccessTokenExpired").is_token_expired());
        assert!(bye("Access token expired").is_token_expired());
        assert!(!bye("Autologout; idle for too long").is_token_expired());
        assert!(!bye("Connection closed. 14").is_token_expired());
        let timeout = ImapError::Timeout {
            server: SERVER.to_owned(),
            step: "token expired".to_owned(),
            after: std::time::Duration::from_secs(1),
        };
        assert!(!timeout.is_token_expired());
    }
}
