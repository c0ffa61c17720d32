//! The error challenge of XOAUTH2 and OAUTHBEARER. After a rejected
//! initial response the server sends base64 of a JSON object (RFC 7628
//! section 3.2.2) in an IMAP `+ ` continuation or an SMTP `334 ` reply.
//! It then waits for the client's reply from [`super::sasl::error_reply`]
//! and only then sends the final `NO` or `535`.
//!
//! XOAUTH2 servers put an HTTP status in `status`, such as
//! `{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`.
//! OAUTHBEARER servers put an RFC 6750 error code there, such as
//! `{"status":"invalid_token"}`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::GeneralPurpose;
use base64::engine::{DecodePaddingMode, GeneralPurposeConfig};
use serde::Deserialize;

use super::error::excerpt;

/// Maximum characters kept of each challenge field and of an undecodable
/// challenge, so that a hostile or broken server cannot flood the log.
const MAX_FIELD_CHARS: usize = 200;

/// Standard alphabet that accepts the challenge with or without padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Category of a failed authentication, decided from the challenge's
/// `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeClass {
    /// `401` or `invalid_token`: the token expired or was revoked. One
    /// forced token refresh and one retry are allowed, never more.
    TokenRejected,
    /// `400`/`invalid_request` (malformed request) or
    /// `403`/`insufficient_scope` (token lacks the mail scope): a
    /// configuration error that a retry does not fix.
    Configuration,
    /// Any other status, or no readable challenge.
    Unknown,
}

impl ChallengeClass {
    /// Short stable name, for metric labels.
    pub fn kind(self) -> &'static str {
        match self {
            Self::TokenRejected => "token_rejected",
            Self::Configuration => "configuration",
            Self::Unknown => "unknown",
        }
    }

    /// Returns whether one forced token refresh and one retry may follow.
    pub fn allows_retry(self) -> bool {
        self == Self::TokenRejected
    }
}

/// Decoded error challenge. Every text is cut after 200 characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorChallenge {
    /// `status`: an HTTP status such as `401` or an error code such as
    /// `invalid_token`. A JSON number is kept as its decimal text.
    pub status: Option<String>,
    /// `schemes`: the accepted authorization schemes, such as `bearer`.
    pub schemes: Option<String>,
    /// `scope`: a scope that grants access to the server.
    pub scope: Option<String>,
    /// `openid-configuration`: URL of the provider's discovery document.
    pub openid_configuration: Option<String>,
    /// The challenge as received, when it is not base64 of a JSON object.
    pub undecoded: Option<String>,
}

#[derive(Deserialize)]
struct Fields {
    status: Option<serde_json::Value>,
    schemes: Option<String>,
    scope: Option<String>,
    #[serde(rename = "openid-configuration")]
    openid_configuration: Option<String>,
}

impl ErrorChallenge {
    /// Parses `text`, the base64 that follows `+ ` in IMAP or `334 ` in
    /// SMTP, ignoring surrounding whitespace and line endings. Text that
    /// is not base64 of a JSON object still yields a challenge, with only
    /// [`ErrorChallenge::undecoded`] set, because the exchange has failed
    /// either way.
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        let fields = LENIENT
            .decode(text)
            .ok()
            .and_then(|json| serde_json::from_slice::<Fields>(&json).ok());

        match fields {
            Some(fields) => Self::from_fields(fields),
            None => Self {
                undecoded: Some(excerpt(text, MAX_FIELD_CHARS)),
                ..Self::default()
            },
        }
    }

    fn from_fields(fields: Fields) -> Self {
        let status = fields.status.and_then(|status| match status {
            serde_json::Value::String(text) => Some(text),
            serde_json::Value::Number(number) => Some(number.to_string()),
            _ => None,
        });
        let shorten = |text: Option<String>| text.map(|text| excerpt(&text, MAX_FIELD_CHARS));

        Self {
            status: shorten(status),
            schemes: shorten(fields.schemes),
            scope: shorten(fields.scope),
            openid_configuration: shorten(fields.openid_configuration),
            undecoded: None,
        }
    }

    /// Classifies the failure by its `status`.
    pub fn class(&self) -> ChallengeClass {
        let status = self.status.as_deref().unwrap_or_default();
        match status.trim().to_ascii_lowercase().as_str() {
            "401" | "invalid_token" => ChallengeClass::TokenRejected,
            "400" | "invalid_request" | "403" | "insufficient_scope" => {
                ChallengeClass::Configuration
            }
            _ => ChallengeClass::Unknown,
        }
    }
}

/// Writes the fields for a log line, such as
/// `status "401", schemes "bearer", scope "https://mail.google.com/"`.
impl fmt::Display for ErrorChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(raw) = &self.undecoded {
            return write!(f, "challenge is not base64 JSON: {raw:?}");
        }
        let fields = [
            ("status", &self.status),
            ("schemes", &self.schemes),
            ("scope", &self.scope),
            ("openid-configuration", &self.openid_configuration),
        ];
        let present: Vec<String> = fields
            .iter()
            .filter_map(|(name, value)| value.as_ref().map(|value| format!("{name} {value:?}")))
            .collect();

        match present.is_empty() {
            true => f.write_str("challenge without fields"),
            false => f.write_str(&present.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gmail IMAP's challenge after an XOAUTH2 response without its 0x01
    /// separators.
    const GMAIL_IMAP_400: &str = "eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==";
    /// Gmail SMTP's challenge after an XOAUTH2 response with an expired token.
    const GMAIL_SMTP_401: &str = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==";
    /// Dovecot's XOAUTH2 challenge after a bad, expired or revoked token.
    const DOVECOT_XOAUTH2: &str =
        "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=";
    /// Dovecot's OAUTHBEARER challenge: `{"status":"invalid_token"}`.
    const DOVECOT_OAUTHBEARER: &str = "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=";

    #[test]
    fn gmail_imap_400_is_configuration() {
        let challenge = ErrorChallenge::parse(GMAIL_IMAP_400);

        assert_eq!(challenge.status.as_deref(), Some("400"));
        assert_eq!(challenge.schemes.as_deref(), Some("Bearer"));
        assert_eq!(challenge.scope.as_deref(), Some("https://mail.google.com/"));
        assert_eq!(challenge.class(), ChallengeClass::Configuration);
        assert!(!challenge.class().allows_retry());
    }

    #[test]
    fn gmail_smtp_401_is_token_rejected() {
        let challenge = ErrorChallenge::parse(GMAIL_SMTP_401);

        assert_eq!(challenge.status.as_deref(), Some("401"));
        assert_eq!(challenge.schemes.as_deref(), Some("bearer"));
        assert_eq!(challenge.class(), ChallengeClass::TokenRejected);
        assert!(challenge.class().allows_retry());
    }

    #[test]
    fn dovecot_xoauth2_is_token_rejected() {
        let challenge = ErrorChallenge::parse(DOVECOT_XOAUTH2);

        assert_eq!(challenge.scope.as_deref(), Some("mail"));
        assert_eq!(challenge.class(), ChallengeClass::TokenRejected);
    }

    #[test]
    fn dovecot_oauthbearer_is_token_rejected() {
        let challenge = ErrorChallenge::parse(DOVECOT_OAUTHBEARER);

        assert_eq!(challenge.status.as_deref(), Some("invalid_token"));
        assert_eq!(challenge.scope, None);
        assert_eq!(challenge.class(), ChallengeClass::TokenRejected);
    }

    #[test]
    fn openid_configuration_kept() {
        // {"status":"invalid_token","scope":"mail","openid-configuration":"https://idp.example.test/..."}
        let text = "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJtYWlsIiwib3BlbmlkLWNvbmZpZ3VyYXRpb24iOiJodHRwczovL2lkcC5leGFtcGxlLnRlc3QvLndlbGwta25vd24vb3BlbmlkLWNvbmZpZ3VyYXRpb24ifQ==";

        let challenge = ErrorChallenge::parse(text);

        let url = "https://idp.example.test/.well-known/openid-configuration";
        assert_eq!(challenge.openid_configuration.as_deref(), Some(url));
    }

    #[test]
    fn insufficient_scope_is_configuration() {
        // {"status":"insufficient_scope","scope":"https://mail.example.test/"}
        let text = "eyJzdGF0dXMiOiJpbnN1ZmZpY2llbnRfc2NvcGUiLCJzY29wZSI6Imh0dHBzOi8vbWFpbC5leGFtcGxlLnRlc3QvIn0=";

        assert_eq!(
            ErrorChallenge::parse(text).class(),
            ChallengeClass::Configuration
        );
    }

    #[test]
    fn numeric_status_accepted() {
        // {"status":401}
        let challenge = ErrorChallenge::parse("eyJzdGF0dXMiOjQwMX0=");

        assert_eq!(challenge.status.as_deref(), Some("401"));
        assert_eq!(challenge.class(), ChallengeClass::TokenRejected);
    }

    #[test]
    fn trailing_newline_in_json_accepted() {
        // {"status":"401","schemes":"bearer","scope":"https://mail.example.test/"} and "\n"
        let text = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZXhhbXBsZS50ZXN0LyJ9Cg==";

        assert_eq!(
            ErrorChallenge::parse(text).class(),
            ChallengeClass::TokenRejected
        );
    }

    #[test]
    fn line_ending_and_missing_padding_accepted() {
        let unpadded = DOVECOT_XOAUTH2.trim_end_matches('=');

        let challenge = ErrorChallenge::parse(&format!("  {unpadded}\r\n"));

        assert_eq!(challenge.class(), ChallengeClass::TokenRejected);
    }

    #[test]
    fn non_base64_kept_raw() {
        let challenge = ErrorChallenge::parse("Go ahead!\r\n");

        assert_eq!(challenge.undecoded.as_deref(), Some("Go ahead!"));
        assert_eq!(challenge.status, None);
        assert_eq!(challenge.class(), ChallengeClass::Unknown);
    }

    #[test]
    fn base64_of_non_json_kept_raw() {
        let challenge = ErrorChallenge::parse("bm90IGpzb24gYXQgYWxs");

        assert_eq!(challenge.undecoded.as_deref(), Some("bm90IGpzb24gYXQgYWxs"));
        assert_eq!(challenge.class(), ChallengeClass::Unknown);
    }

    #[test]
    fn empty_challenge_is_unknown() {
        let challenge = ErrorChallenge::parse("");

        assert_eq!(challenge.class(), ChallengeClass::Unknown);
        assert_eq!(challenge.undecoded.as_deref(), Some(""));
    }

    #[test]
    fn raw_text_truncated() {
        let challenge = ErrorChallenge::parse(&"x".repeat(5000));

        let raw = challenge.undecoded.unwrap();
        assert!(raw.chars().count() <= MAX_FIELD_CHARS + 1, "{}", raw.len());
    }

    #[test]
    fn unknown_status_is_unknown() {
        // {"status":"500"}
        let challenge = ErrorChallenge::parse("eyJzdGF0dXMiOiI1MDAifQ==");

        assert_eq!(challenge.class(), ChallengeClass::Unknown);
        assert_eq!(challenge.class().kind(), "unknown");
    }

    #[test]
    fn display_lists_fields() {
        let text = ErrorChallenge::parse(GMAIL_SMTP_401).to_string();

        let expected = r#"status "401", schemes "bearer", scope "https://mail.google.com/""#;
        assert_eq!(text, expected);
    }

    #[test]
    fn display_escapes_raw_text() {
        let text = ErrorChallenge::parse("bad\x01text").to_string();

        assert_eq!(text, r#"challenge is not base64 JSON: "bad\u{1}text""#);
    }

    #[test]
    fn class_kinds() {
        assert_eq!(ChallengeClass::TokenRejected.kind(), "token_rejected");
        assert_eq!(ChallengeClass::Configuration.kind(), "configuration");
    }
}
