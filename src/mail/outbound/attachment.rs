//! Attachments of a send request: base64 decoding, MIME type, file name,
//! Content-ID (RFC 2392) and the cap on their total decoded size.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::Limits;
use super::document::Attachment;
use super::rejection::{RejectReason, Rejection, preview};
use super::syntax::{is_dot_atom_text, single_line};

/// MIME type of an attachment that does not give one.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Maximum file name length, in characters, the limit of common file
/// systems.
const MAX_FILENAME: usize = 255;

/// Maximum length of a MIME type with parameters, in octets. It keeps the
/// Content-Type line, which folds only at spaces, under 998 octets.
const MAX_CONTENT_TYPE: usize = 256;

/// Standard alphabet (RFC 4648 section 4); padding may be left out.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A checked attachment with its content decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedAttachment {
    filename: String,
    content_type: String,
    content: Vec<u8>,
    content_id: Option<String>,
}

impl DecodedAttachment {
    /// Returns the file name in UTF-8, one line.
    pub fn filename(&self) -> &str {
        &self.filename
    }

    /// Returns the MIME type, which parses as RFC 2045
    /// `type/subtype; parameters`.
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// Returns the decoded bytes.
    pub fn content(&self) -> &[u8] {
        &self.content
    }

    /// Returns the Content-ID without angle brackets; `Some` marks an
    /// inline part.
    pub fn content_id(&self) -> Option<&str> {
        self.content_id.as_deref()
    }
}

/// Checks and decodes every attachment. Inline parts need an HTML body
/// that can refer to them.
pub(super) fn decode_all(
    attachments: &[Attachment],
    has_html: bool,
    limits: &Limits,
) -> Result<Vec<DecodedAttachment>, Rejection> {
    let mut decoded: Vec<DecodedAttachment> = Vec::with_capacity(attachments.len());
    let mut total: u64 = 0;

    for (index, attachment) in attachments.iter().enumerate() {
        let field = format!("attachments[{index}]");
        let content_id = content_id(&field, attachment, has_html)?;
        if let Some(id) = &content_id
            && decoded.iter().any(|other| other.content_id() == Some(id))
        {
            return Err(invalid(
                &field,
                "content_id",
                "is used by an earlier attachment",
            ));
        }

        decoded.push(DecodedAttachment {
            filename: filename(&field, &attachment.filename)?,
            content_type: content_type(&field, attachment.content_type.as_deref())?,
            content: content(&field, &attachment.content_base64, &mut total, limits)?,
            content_id,
        });
    }

    Ok(decoded)
}

fn invalid(field: &str, member: &str, why: &str) -> Rejection {
    Rejection::at(
        RejectReason::InvalidAttachment,
        format!("{field}.{member}"),
        why,
    )
}

fn filename(field: &str, name: &str) -> Result<String, Rejection> {
    single_line(&format!("{field}.filename"), name)?;

    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(invalid(field, "filename", "is empty"));
    }
    if trimmed.chars().count() > MAX_FILENAME {
        return Err(invalid(field, "filename", "is longer than 255 characters"));
    }
    if trimmed.contains("=?") {
        // lettre sends such a name as a quoted-string, and receivers that
        // decode encoded-words in parameters would show another name.
        let why = "contains \"=?\", which receivers read as an encoded-word";
        return Err(invalid(field, "filename", why));
    }

    Ok(trimmed.to_owned())
}

/// Checks the MIME type. Multipart types and message types other than
/// `message/rfc822` are rejected: they describe a structure of parts that
/// a single attachment cannot have.
fn content_type(field: &str, raw: Option<&str>) -> Result<String, Rejection> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_CONTENT_TYPE.to_owned());
    };
    single_line(&format!("{field}.content_type"), raw)?;

    let trimmed = raw.trim();
    if trimmed.len() > MAX_CONTENT_TYPE {
        let why = format!("is longer than {MAX_CONTENT_TYPE} characters");
        return Err(invalid(field, "content_type", &why));
    }
    let parsed: mime::Mime = trimmed.parse().map_err(|_| {
        invalid(
            field,
            "content_type",
            &format!("{} is not a MIME type (RFC 2045)", preview(raw)),
        )
    })?;
    if parsed.type_().as_str().is_empty() || parsed.subtype().as_str().is_empty() {
        return Err(invalid(
            field,
            "content_type",
            &format!("{} has no type or subtype", preview(raw)),
        ));
    }
    let container = parsed.type_() == mime::MULTIPART
        || (parsed.type_() == mime::MESSAGE && parsed.subtype() != "rfc822");
    if container {
        return Err(invalid(
            field,
            "content_type",
            &format!("{} cannot be the type of an attachment", preview(raw)),
        ));
    }

    Ok(trimmed.to_owned())
}

/// Checks the Content-ID and returns it without angle brackets. Besides
/// the msg-id form `left@right` of RFC 2392, a bare dot-atom such as
/// `logo` is accepted, because HTML templates commonly use one.
fn content_id(
    field: &str,
    attachment: &Attachment,
    has_html: bool,
) -> Result<Option<String>, Rejection> {
    let Some(raw) = &attachment.content_id else {
        return Ok(None);
    };
    single_line(&format!("{field}.content_id"), raw)?;

    let trimmed = raw.trim();
    let id = trimmed
        .strip_prefix('<')
        .and_then(|rest| rest.strip_suffix('>'))
        .unwrap_or(trimmed);
    let valid = match id.split_once('@') {
        Some((left, right)) => is_dot_atom_text(left) && is_dot_atom_text(right),
        None => is_dot_atom_text(id),
    };
    if !valid {
        let why = format!("{} is not a content id (RFC 2392)", preview(raw));
        return Err(invalid(field, "content_id", &why));
    }
    if !has_html {
        let why = "marks an inline part, which needs an html body that refers to it";
        return Err(invalid(field, "content_id", why));
    }

    Ok(Some(id.to_owned()))
}

/// Decodes the content and adds its size to `total`. The cap is checked
/// first, from the encoded length alone, so an oversized request is
/// rejected before its bytes are allocated.
fn content(
    field: &str,
    encoded: &str,
    total: &mut u64,
    limits: &Limits,
) -> Result<Vec<u8>, Rejection> {
    let compact: Vec<u8> = encoded
        .bytes()
        .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .collect();
    let padding = compact.iter().rev().take_while(|&&b| b == b'=').count();
    let decoded_len = ((compact.len() - padding) as u64) * 3 / 4;

    let new_total = total.saturating_add(decoded_len);
    if new_total > limits.max_attachment_bytes {
        return Err(Rejection::at(
            RejectReason::TooLarge,
            format!("{field}.content_base64"),
            format!(
                "attachments reach {new_total} bytes decoded, over the limit of {} bytes",
                limits.max_attachment_bytes
            ),
        ));
    }
    let content = BASE64.decode(&compact).map_err(|err| {
        invalid(
            field,
            "content_base64",
            &format!("is not standard base64: {err}"),
        )
    })?;
    *total = total.saturating_add(content.len() as u64);

    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(content_type: Option<&str>, base64: &str, cid: Option<&str>) -> Attachment {
        Attachment {
            filename: "a.bin".to_owned(),
            content_type: content_type.map(str::to_owned),
            content_base64: base64.to_owned(),
            content_id: cid.map(str::to_owned),
        }
    }

    fn decode(
        list: &[Attachment],
        has_html: bool,
        cap: u64,
    ) -> Result<Vec<DecodedAttachment>, Rejection> {
        let limits = Limits {
            max_attachment_bytes: cap,
        };
        decode_all(list, has_html, &limits)
    }

    fn reason(list: &[Attachment], has_html: bool) -> (RejectReason, String) {
        let rejection = decode(list, has_html, 1 << 20).unwrap_err();
        (rejection.reason, rejection.field.unwrap_or_default())
    }

    #[test]
    fn base64_tolerates_whitespace_and_missing_padding() {
        let list = [
            attachment(None, "aGVs\r\nbG8g\n d29y bGQ=", None),
            attachment(Some("text/plain; charset=utf-8"), "aGk", None),
        ];
        let decoded = decode(&list, false, 100).unwrap();

        assert_eq!(decoded[0].content(), b"hello world");
        assert_eq!(decoded[0].content_type(), "application/octet-stream");
        assert_eq!(decoded[1].content(), b"hi");
        assert_eq!(decoded[1].content_type(), "text/plain; charset=utf-8");
    }

    #[test]
    fn bad_base64_is_invalid_attachment() {
        for bad in ["aGVsbG8-", "aGVs_G8=", "a", "aGVsbG8=aGVs", "aGVsbG8===="] {
            let list = [attachment(None, bad, None)];
            let expected = (
                RejectReason::InvalidAttachment,
                "attachments[0].content_base64".to_owned(),
            );
            assert_eq!(reason(&list, false), expected, "{bad:?}");
        }
    }

    #[test]
    fn cap_counts_all_attachments() {
        let list = [
            attachment(None, "AAAA", None),
            attachment(None, "AAAA", None),
        ];

        assert!(decode(&list, false, 6).is_ok());
        let rejection = decode(&list, false, 5).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::TooLarge);
        assert_eq!(
            rejection.field.as_deref(),
            Some("attachments[1].content_base64")
        );
        assert!(
            rejection.detail.contains("limit of 5 bytes"),
            "{}",
            rejection.detail
        );
    }

    #[test]
    fn content_types_are_parsed() {
        for bad in ["pdf", "application/", "multipart/mixed", "message/partial"] {
            let list = [attachment(Some(bad), "AAAA", None)];
            let expected = (
                RejectReason::InvalidAttachment,
                "attachments[0].content_type".to_owned(),
            );
            assert_eq!(reason(&list, false), expected, "{bad:?}");
        }

        let injected = [attachment(Some("text/plain\r\nBcc: x"), "AAAA", None)];
        assert_eq!(reason(&injected, false).0, RejectReason::InvalidHeaderValue);
    }

    #[test]
    fn content_ids() {
        let list = [
            attachment(Some("image/png"), "AAAA", Some("<logo@example.test>")),
            attachment(Some("image/png"), "AAAA", Some("banner")),
        ];
        let decoded = decode(&list, true, 100).unwrap();
        assert_eq!(decoded[0].content_id(), Some("logo@example.test"));
        assert_eq!(decoded[1].content_id(), Some("banner"));

        assert_eq!(reason(&list, false).0, RejectReason::InvalidAttachment);

        let twice = [
            attachment(None, "AAAA", Some("logo")),
            attachment(None, "AAAA", Some("<logo>")),
        ];
        assert_eq!(
            reason(&twice, true),
            (
                RejectReason::InvalidAttachment,
                "attachments[1].content_id".to_owned()
            )
        );

        for bad in ["a b", "<a", "a@b@c", "a\nb"] {
            let list = [attachment(None, "AAAA", Some(bad))];
            assert!(decode(&list, true, 100).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filenames() {
        let mut bad = attachment(None, "AAAA", None);
        bad.filename = "report.pdf\r\nX-Evil: 1".to_owned();
        assert_eq!(
            reason(&[bad.clone()], false).0,
            RejectReason::InvalidHeaderValue
        );

        bad.filename = "  ".to_owned();
        assert_eq!(
            reason(&[bad.clone()], false).0,
            RejectReason::InvalidAttachment
        );

        bad.filename = "=?utf-8?q?other.exe?=".to_owned();
        assert_eq!(reason(&[bad], false).0, RejectReason::InvalidAttachment);
    }
}
