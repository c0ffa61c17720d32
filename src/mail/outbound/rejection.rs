//! Why a send request cannot be sent: a stable reason code, the field at
//! fault and a short description. A rejection is final, so the pipeline
//! dead-letters the request instead of retrying it.

use std::fmt;

/// Reason a send request was rejected. [`RejectReason::as_str`] is stable:
/// it goes into dead-letter headers and status events and is the `reason`
/// label of metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The payload is not one UTF-8 JSON value.
    NotJson,
    /// A field is missing, unknown, of the wrong JSON type or conflicts
    /// with another field.
    InvalidField,
    /// An address is not an RFC 5322 addr-spec that SMTP can carry
    /// without SMTPUTF8.
    InvalidAddress,
    /// `to`, `cc` and `bcc` are all empty.
    NoRecipient,
    /// A value that becomes a header line contains CR, LF or another
    /// control character, or a header name or msg-id has invalid syntax.
    InvalidHeaderValue,
    /// An extra header is outside the allowed set.
    HeaderNotAllowed,
    /// An extra header is given twice.
    DuplicateHeader,
    /// An attachment has invalid base64, content type or content id.
    InvalidAttachment,
    /// The decoded attachments exceed the configured maximum.
    TooLarge,
    /// The account address or Message-ID domain handed to the MIME
    /// builder is invalid; the configuration must be fixed.
    InvalidConfig,
}

impl RejectReason {
    /// Returns the snake_case code, e.g. `"invalid_header_value"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotJson => "not_json",
            Self::InvalidField => "invalid_field",
            Self::InvalidAddress => "invalid_address",
            Self::NoRecipient => "no_recipient",
            Self::InvalidHeaderValue => "invalid_header_value",
            Self::HeaderNotAllowed => "header_not_allowed",
            Self::DuplicateHeader => "duplicate_header",
            Self::InvalidAttachment => "invalid_attachment",
            Self::TooLarge => "too_large",
            Self::InvalidConfig => "invalid_config",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A send request that failed validation or could not become a MIME
/// message.
///
/// `detail` never repeats a subject, body or header value, because those
/// may carry personal data or credentials. It quotes at most a short,
/// escaped preview of addresses, names of headers, content types and
/// message ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The machine-readable reason.
    pub reason: RejectReason,
    /// Description of the problem, in a few words.
    pub detail: String,
    /// Path of the field at fault, e.g. `to[1].address` or
    /// `headers.X-Ticket`; `None` when the whole request is at fault.
    pub field: Option<String>,
}

impl Rejection {
    /// Creates a rejection of the field at `field`.
    pub fn at(reason: RejectReason, field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            field: Some(field.into()),
        }
    }

    /// Creates a rejection of the request as a whole.
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            field: None,
        }
    }

    /// Always false: sending the same request again fails the same way.
    pub fn is_transient(&self) -> bool {
        false
    }

    /// Short label for metrics, the same as [`RejectReason::as_str`].
    pub fn kind(&self) -> &'static str {
        self.reason.as_str()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: field {field}: {}", self.reason, self.detail),
            None => write!(f, "{}: {}", self.reason, self.detail),
        }
    }
}

impl std::error::Error for Rejection {}

/// Maximum length of a value preview in a rejection, in characters.
const PREVIEW_CHARS: usize = 64;

/// Quotes `value` for a rejection: escaped like a Rust string literal, so
/// CR and LF show as `\r` and `\n`, and cut to [`PREVIEW_CHARS`].
pub(super) fn preview(value: &str) -> String {
    let mut out: String = value.chars().take(PREVIEW_CHARS).collect();
    if out.len() < value.len() {
        out.push('…');
    }

    format!("\"{}\"", out.escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_field_and_reason() {
        let rejection = Rejection::at(
            RejectReason::InvalidHeaderValue,
            "subject",
            "contains a line break",
        );

        assert_eq!(
            rejection.to_string(),
            "invalid_header_value: field subject: contains a line break"
        );
        assert_eq!(rejection.kind(), "invalid_header_value");
        assert!(!rejection.is_transient());
    }

    #[test]
    fn display_without_field() {
        let rejection = Rejection::new(RejectReason::NotJson, "expected value");

        assert_eq!(rejection.to_string(), "not_json: expected value");
    }

    #[test]
    fn preview_escapes_and_truncates() {
        assert_eq!(preview("a\r\nb"), "\"a\\r\\nb\"");

        let long = "x".repeat(500);
        let quoted = preview(&long);
        assert_eq!(quoted.chars().count(), PREVIEW_CHARS + 3);
        assert!(quoted.ends_with("…\""));
    }
}
