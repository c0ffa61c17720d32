//! Classification of error replies: a failed AUTH by its reply code,
//! enhanced status code (RFC 3463) and the XOAUTH2 or OAUTHBEARER error
//! challenge, and a rejected MAIL FROM, RCPT TO or message by its reply.
//! The enhanced codes with their own meaning are Microsoft 365's.

use super::error::SmtpError;
use super::reply::Reply;
use crate::auth::{ChallengeClass, ErrorChallenge};

/// Category of a rejected AUTH, which decides the retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// The token expired, was revoked or belongs to another user: one
    /// forced refresh and one retry.
    Token,
    /// The challenge reported a bad request or a missing scope.
    Configuration,
    /// `535 5.7.139`: SMTP AUTH is disabled for the tenant or mailbox.
    Disabled,
    /// A 4xx reply: the server could not check the token for now.
    Unavailable,
    /// Anything else, such as `501 5.5.124` for an invalid SASL user.
    Other,
}

impl Rejection {
    /// Returns the `reason` label of `mailbridge_auth_failures_total`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Token => "token_rejected",
            Self::Configuration => "auth_configuration",
            Self::Disabled => "smtp_auth_disabled",
            Self::Unavailable => "auth_unavailable",
            Self::Other => "authenticate",
        }
    }
}

/// Classifies the final reply to AUTH and the error challenge, if one came.
pub(crate) fn classify(reply: &Reply, challenge: Option<&ErrorChallenge>) -> Rejection {
    if reply.is_transient() {
        return Rejection::Unavailable;
    }
    if reply.has_enhanced("5.7.139") {
        return Rejection::Disabled;
    }
    let class = challenge.map(ErrorChallenge::class);
    if class == Some(ChallengeClass::Configuration) {
        return Rejection::Configuration;
    }

    // 535 is "authentication credentials invalid" (RFC 4954 section 6):
    // postfix sends 535 5.7.8, Microsoft 365 535 5.7.3, both for an expired
    // or revoked token as well as for a token of another user.
    let token = reply.code == 535 || class == Some(ChallengeClass::TokenRejected);
    match token {
        true => Rejection::Token,
        false => Rejection::Other,
    }
}

/// Describes a rejected AUTH by its challenge and the server's reply.
/// Both come from the server, so neither contains the token.
pub(crate) fn detail(challenge: Option<&ErrorChallenge>, reply: &Reply) -> String {
    match challenge {
        Some(challenge) => format!("challenge {challenge}; server replied {reply}"),
        None => format!("server replied {reply}"),
    }
}

/// Returns the error for an error reply to `command` (MAIL FROM, RCPT TO,
/// DATA or the end of the message data) other than 421. `from` is the
/// envelope sender.
pub(crate) fn transaction_error(
    server: &str,
    command: &'static str,
    from: &str,
    reply: Reply,
) -> SmtpError {
    let server = server.to_owned();
    let reply = Box::new(reply);
    if reply.has_enhanced("5.7.57") || reply.code == 530 {
        return SmtpError::NotAuthenticated { server, reply };
    }
    if reply.has_enhanced("5.2.252") || reply.text().contains("SendAsDenied") {
        let from = from.to_owned();
        return SmtpError::SendAsDenied {
            server,
            from,
            reply,
        };
    }
    if reply.is_transient() && (reply.code == 432 || reply.has_enhanced("4.3.2")) {
        return SmtpError::ConcurrencyLimit { server, reply };
    }
    if reply.is_permanent() && reply.text().contains("QuotaExceeded") {
        return SmtpError::QuotaExceeded { server, reply };
    }

    SmtpError::Rejected {
        server,
        command,
        reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"status":"401","schemes":"bearer","scope":"mail"}`, Dovecot's challenge.
    const DOVECOT_401: &str =
        "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=";
    /// `{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`, Gmail's.
    const GMAIL_400: &str = "eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==";
    const SERVER: &str = "smtp.example.test:587";

    fn reply(code: u16, enhanced: Option<&str>, text: &str) -> Reply {
        Reply {
            code,
            enhanced: enhanced.map(str::to_owned),
            lines: vec![text.to_owned()],
        }
    }

    #[test]
    fn postfix_535_after_challenge_is_token() {
        let challenge = ErrorChallenge::parse(DOVECOT_401);
        let reply = reply(535, Some("5.7.8"), "Error: authentication failed");

        assert_eq!(classify(&reply, Some(&challenge)), Rejection::Token);
    }

    #[test]
    fn microsoft_535_5_7_3_is_token() {
        let reply = reply(535, Some("5.7.3"), "Authentication unsuccessful");

        assert_eq!(classify(&reply, None), Rejection::Token);
    }

    #[test]
    fn auth_disabled_not_retried() {
        let reply = reply(535, Some("5.7.139"), "SmtpClientAuthentication is disabled");

        let rejection = classify(&reply, None);

        assert_eq!(rejection, Rejection::Disabled);
        assert_eq!(rejection.reason(), "smtp_auth_disabled");
    }

    #[test]
    fn gmail_400_is_configuration() {
        let challenge = ErrorChallenge::parse(GMAIL_400);
        let reply = reply(535, Some("5.7.8"), "Username and Password not accepted.");

        assert_eq!(classify(&reply, Some(&challenge)), Rejection::Configuration);
    }

    #[test]
    fn temporary_failures_are_unavailable() {
        let dovecot = reply(454, Some("4.7.0"), "Temporary authentication failure.");
        let microsoft = reply(451, Some("4.7.0"), "Temporary server error.");

        assert_eq!(classify(&dovecot, None), Rejection::Unavailable);
        assert_eq!(classify(&microsoft, None), Rejection::Unavailable);
    }

    #[test]
    fn invalid_user_is_other() {
        let reply = reply(501, Some("5.5.124"), "Invalid XOAUTH2 auth data");

        assert_eq!(classify(&reply, None), Rejection::Other);
    }

    #[test]
    fn detail_has_challenge_and_reply() {
        let challenge = ErrorChallenge::parse(DOVECOT_401);

        let text = detail(Some(&challenge), &reply(535, Some("5.7.8"), "failed"));

        assert!(text.contains(r#"status "401""#), "{text}");
        assert!(text.contains("535 5.7.8 failed"), "{text}");
    }

    #[test]
    fn transaction_replies_classified() {
        let cases = [
            (
                reply(530, Some("5.7.57"), "Client not authenticated"),
                "not_authenticated",
            ),
            (
                reply(554, Some("5.2.252"), "SendAsDenied; not allowed"),
                "send_as_denied",
            ),
            (
                reply(432, Some("4.3.2"), "sender thread limit exceeded"),
                "concurrency_limit",
            ),
            (
                reply(554, Some("5.2.0"), "SubmissionQuotaExceededException"),
                "quota_exceeded",
            ),
            (
                reply(451, Some("4.7.0"), "Temporary server error"),
                "rejected",
            ),
            (
                reply(553, Some("5.7.1"), "Sender address rejected"),
                "rejected",
            ),
        ];

        for (reply, kind) in cases {
            let text = reply.to_string();
            let error = transaction_error(SERVER, "DATA", "ceo@example.test", reply);
            assert_eq!(error.kind(), kind, "{text}");
        }
    }

    #[test]
    fn temporary_reply_is_transient() {
        let error = transaction_error(SERVER, "DATA", "a@example.test", reply(451, None, "later"));

        assert!(error.is_transient());
        assert_eq!(error.code(), Some(451));
    }
}
