//! Classification of a rejected AUTHENTICATE by its tagged reply, its
//! response code (RFC 5530) and the error challenge of XOAUTH2 or
//! OAUTHBEARER.

use crate::auth::{ChallengeClass, ErrorChallenge};

/// Category of a rejected AUTHENTICATE, which decides the retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// The token expired, was revoked or belongs to another user: one
    /// forced refresh and one retry.
    Token,
    /// The challenge reported a bad request or a missing scope.
    Configuration,
    /// The server could not check the token for now (`[UNAVAILABLE]`).
    Unavailable,
    /// Anything else, such as `BAD`.
    Other,
}

impl Rejection {
    /// Returns the `reason` label of `mailbridge_auth_failures_total`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Token => "token_rejected",
            Self::Configuration => "auth_configuration",
            Self::Unavailable => "auth_unavailable",
            Self::Other => "authenticate",
        }
    }
}

/// Classifies a rejection from the tagged reply's status and response
/// code (RFC 5530) and the error challenge, if one came.
pub(crate) fn classify(
    bad: bool,
    code: Option<&str>,
    challenge: Option<&ErrorChallenge>,
) -> Rejection {
    if matches!(code, Some("UNAVAILABLE" | "LIMIT" | "INUSE" | "SERVERBUG")) {
        return Rejection::Unavailable;
    }
    if challenge.is_some_and(|challenge| challenge.class() == ChallengeClass::Configuration) {
        return Rejection::Configuration;
    }

    // `AUTHENTICATIONFAILED`, `AUTHORIZATIONFAILED`, `EXPIRED` or a plain
    // `NO`, as Exchange sends for an expired token, may all be a stale token.
    let other = matches!(code, Some("PRIVACYREQUIRED" | "CONTACTADMIN"));
    match bad || other {
        true => Rejection::Other,
        false => Rejection::Token,
    }
}

/// Describes a rejection by its challenge and the server's reply. Both
/// come from the server, so neither contains the token.
pub(crate) fn detail(challenge: Option<&ErrorChallenge>, reply: &str) -> String {
    match challenge {
        Some(challenge) => format!("challenge {challenge}; server replied {reply}"),
        None => format!("server replied {reply}"),
    }
}

/// Extracts the server's text from async-imap's `NO`/`BAD` message, which
/// reads `code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")`.
pub(crate) fn reply_text(raw: &str) -> String {
    let Some(start) = raw.find("info: Some(\"") else {
        return raw.to_owned();
    };
    let quoted = &raw[start + "info: Some(\"".len()..];
    let quoted = quoted.strip_suffix("\")").unwrap_or(quoted);

    quoted.replace("\\\"", "\"").replace("\\\\", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"status":"401","schemes":"bearer","scope":"mail"}`, Dovecot's challenge.
    const DOVECOT_401: &str =
        "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=";
    /// `{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`, Gmail's.
    const GMAIL_400: &str = "eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==";

    #[test]
    fn authenticationfailed_with_401_is_token() {
        let challenge = ErrorChallenge::parse(DOVECOT_401);

        let rejection = classify(false, Some("AUTHENTICATIONFAILED"), Some(&challenge));

        assert_eq!(rejection, Rejection::Token);
    }

    #[test]
    fn plain_no_is_token() {
        // Exchange: `NO AUTHENTICATE failed.` after reusing an expired token.
        assert_eq!(classify(false, None, None), Rejection::Token);
    }

    #[test]
    fn unavailable_is_transient_without_refresh() {
        assert_eq!(
            classify(false, Some("UNAVAILABLE"), None),
            Rejection::Unavailable
        );
    }

    #[test]
    fn gmail_400_is_configuration() {
        let challenge = ErrorChallenge::parse(GMAIL_400);

        let rejection = classify(false, Some("AUTHENTICATIONFAILED"), Some(&challenge));

        assert_eq!(rejection, Rejection::Configuration);
    }

    #[test]
    fn bad_is_other() {
        assert_eq!(classify(true, None, None), Rejection::Other);
        assert_eq!(
            classify(false, Some("PRIVACYREQUIRED"), None),
            Rejection::Other
        );
    }

    #[test]
    fn reply_text_unwrapped() {
        let raw = r#"code: None, info: Some("[AUTHENTICATIONFAILED] Authentication \"failed\".")"#;

        assert_eq!(
            reply_text(raw),
            r#"[AUTHENTICATIONFAILED] Authentication "failed"."#
        );
    }

    #[test]
    fn reply_text_without_info_kept() {
        assert_eq!(
            reply_text("code: None, info: None"),
            "code: None, info: None"
        );
    }

    #[test]
    fn detail_has_status_and_scope() {
        let challenge = ErrorChallenge::parse(DOVECOT_401);

        let text = detail(
            Some(&challenge),
            "NO [AUTHENTICATIONFAILED] Authentication failed.",
        );

        assert!(text.contains(r#"status "401""#), "{text}");
        assert!(text.contains(r#"scope "mail""#), "{text}");
        assert!(text.contains("NO [AUTHENTICATIONFAILED]"), "{text}");
    }
}
