//! Serde types of the inbound document, `schemas/inbound-mail.v1.json`.
//! Field order follows the schema, and `serde_json` keeps it on output.

use serde::{Deserialize, Serialize};

/// One fetched IMAP mail as published to the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundMail {
    /// Stable document id, see [`super::document_id`].
    pub id: String,
    /// Name of the configured account.
    pub account: String,
    /// Mailbox name in UTF-8.
    pub mailbox: String,
    /// UIDVALIDITY of the mailbox when the mail was fetched (RFC 9051).
    pub uidvalidity: u32,
    /// UID of the mail in that UIDVALIDITY.
    pub uid: u32,
    /// `Message-ID` without angle brackets, or `None` when absent.
    pub message_id: Option<String>,
    /// First message id of `In-Reply-To`, without angle brackets.
    pub in_reply_to: Option<String>,
    /// Message ids of `References`, oldest first, without angle brackets.
    pub references: Vec<String>,
    /// Decoded `Subject`.
    pub subject: Option<String>,
    /// `Date` in UTC as RFC 3339, or `None` when missing or unreadable.
    pub date: Option<String>,
    /// IMAP INTERNALDATE in UTC as RFC 3339.
    pub received_at: Option<String>,
    /// Mailboxes of `From`.
    pub from: Vec<Address>,
    /// Mailbox of `Sender`.
    pub sender: Vec<Address>,
    /// Mailboxes of `Reply-To`.
    pub reply_to: Vec<Address>,
    /// Mailboxes of `To`, groups flattened.
    pub to: Vec<Address>,
    /// Mailboxes of `Cc`, groups flattened.
    pub cc: Vec<Address>,
    /// Mailboxes of `Bcc`, groups flattened.
    pub bcc: Vec<Address>,
    /// Inline `text/plain` parts joined in MIME order.
    pub text: Option<String>,
    /// Inline `text/html` parts joined in MIME order.
    pub html: Option<String>,
    /// Top-level header fields in message order, values decoded.
    pub headers: Vec<Header>,
    /// IMAP flags and keywords as the server spells them.
    pub flags: Vec<String>,
    /// RFC822.SIZE, or the fetched length when the server sent none.
    pub size: u64,
    /// Lowercase hex SHA-256 of the fetched bytes.
    pub content_sha256: String,
    /// Parts that are not the text or HTML body, nested messages included.
    pub attachments: Vec<Attachment>,
    /// The whole fetched message in standard base64, when under the cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_base64: Option<String>,
    /// True when the message exceeded `max_message_bytes` and only its
    /// header section was read.
    pub truncated: bool,
    /// Problems met while reading the mail, and how each was handled.
    pub warnings: Vec<Warning>,
}

impl InboundMail {
    /// Serializes the document as compact UTF-8 JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // serde_json fails only on map keys that are not strings or on a
        // failing `Serialize` impl, and this type has neither.
        serde_json::to_vec(self).expect("inbound document serializes")
    }

    /// Returns true when the document carries a warning with `code`, for
    /// example [`WarningCode::ParsePanic`], after which a caller may want
    /// to keep the raw message elsewhere.
    pub fn has_warning(&self, code: WarningCode) -> bool {
        self.warnings.iter().any(|warning| warning.code == code)
    }

    /// Appends a warning.
    pub(crate) fn warn(&mut self, code: WarningCode, message: impl Into<String>) {
        self.warnings.push(Warning::new(code, message));
    }
}

/// One RFC 5322 mailbox: display name and addr-spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Decoded display name, `None` when absent or empty.
    pub name: Option<String>,
    /// The addr-spec, `local@domain`.
    pub address: String,
}

/// One header field of the top-level header section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Field name as spelled in the message.
    pub name: String,
    /// Unfolded value with RFC 2047 encoded words and RFC 2231 parameters
    /// decoded.
    pub value: String,
    /// Raw value bytes in base64, only for a value whose 8-bit bytes no
    /// charset could decode; `value` then contains U+FFFD in their place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_base64: Option<String>,
}

/// One MIME part that is not part of the text or HTML body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// Decoded `filename` of Content-Disposition, else `name` of
    /// Content-Type.
    pub filename: Option<String>,
    /// Lowercase `type/subtype` without parameters.
    pub content_type: String,
    /// Length of the content in bytes, after transfer decoding.
    pub size: u64,
    /// `Content-ID` without angle brackets, as HTML `cid:` URLs use it.
    pub content_id: Option<String>,
    /// Lowercase Content-Disposition type, such as `attachment`.
    pub disposition: Option<String>,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// The content in standard base64, when under the cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
}

/// A problem found while reading the mail; the document still carries
/// everything that could be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warning {
    /// Stable machine-readable code.
    pub code: WarningCode,
    /// Human-readable detail, such as the header or part concerned.
    pub message: String,
}

impl Warning {
    /// Creates a warning.
    pub fn new(code: WarningCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Warning codes. The schema lists and describes the same set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningCode {
    /// No header section was found, so no field could be read.
    ParseFailed,
    /// The parser panicked; only IMAP metadata was published.
    ParsePanic,
    /// The message exceeded `max_message_bytes`; only headers were read.
    MessageTruncated,
    /// The message has no `Date` header.
    DateMissing,
    /// The `Date` header is not a valid date.
    DateInvalid,
    /// The message has no `Message-ID` header.
    MessageIdMissing,
    /// An address-list entry has no addr-spec and was left out.
    AddressInvalid,
    /// Raw 8-bit header bytes were decoded with the body charset.
    HeaderCharsetGuessed,
    /// Raw 8-bit header bytes could not be decoded.
    HeaderUndecodable,
    /// A part declares a charset that neither encoding_rs nor mail-parser
    /// supports.
    CharsetUnknown,
    /// A part declares a 7-bit charset but contains UTF-8.
    CharsetMislabelled,
    /// A part contains bytes invalid in its charset.
    TextDecodeErrors,
    /// A MIME part is malformed; its raw bytes were kept.
    PartMalformed,
}

impl WarningCode {
    /// Every code, in schema order.
    pub const ALL: [WarningCode; 13] = [
        Self::ParseFailed,
        Self::ParsePanic,
        Self::MessageTruncated,
        Self::DateMissing,
        Self::DateInvalid,
        Self::MessageIdMissing,
        Self::AddressInvalid,
        Self::HeaderCharsetGuessed,
        Self::HeaderUndecodable,
        Self::CharsetUnknown,
        Self::CharsetMislabelled,
        Self::TextDecodeErrors,
        Self::PartMalformed,
    ];

    /// Returns the snake_case name that the JSON document uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ParseFailed => "parse_failed",
            Self::ParsePanic => "parse_panic",
            Self::MessageTruncated => "message_truncated",
            Self::DateMissing => "date_missing",
            Self::DateInvalid => "date_invalid",
            Self::MessageIdMissing => "message_id_missing",
            Self::AddressInvalid => "address_invalid",
            Self::HeaderCharsetGuessed => "header_charset_guessed",
            Self::HeaderUndecodable => "header_undecodable",
            Self::CharsetUnknown => "charset_unknown",
            Self::CharsetMislabelled => "charset_mislabelled",
            Self::TextDecodeErrors => "text_decode_errors",
            Self::PartMalformed => "part_malformed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_code_names_match_serde() {
        for code in WarningCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::from(code.as_str()));
        }
    }
}
