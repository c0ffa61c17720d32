//! MIME parts of the inbound document: the text and HTML bodies and the
//! attachments (RFC 2045, RFC 2046, RFC 2183).
//!
//! mail-parser classifies the parts as body or attachment the way JMAP
//! (RFC 8621 section 4.1.4) does. On top of that, `text` takes only
//! `text/plain` parts, so a `text/calendar` or `text/csv` part becomes an
//! attachment with its bytes instead of being mixed into the text.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{Encoding, Message, MessagePart, MimeHeaders, PartType};

use super::build::DocumentOptions;
use super::charset::decode_text;
use super::deferred::Transfer;
use super::document::{Attachment, InboundMail, WarningCode};
use super::sha256_hex;

/// Fills `text`, `html` and `attachments` of `doc` from the parts of the
/// parsed `message`, whose offsets point into `buffer`. `transfers` gives
/// what deferred decoding found for each part, when the message was parsed
/// that way.
pub(crate) fn read_parts(
    doc: &mut InboundMail,
    message: &Message<'_>,
    buffer: &[u8],
    options: &DocumentOptions,
    transfers: Option<&[Transfer]>,
) {
    let boundaries = parent_boundaries(message);
    let mut texts = Vec::new();
    let mut htmls = Vec::new();

    for (index, part) in message.parts.iter().enumerate() {
        if matches!(part.body, PartType::Multipart(_)) {
            continue;
        }
        let transfer = transfers.and_then(|transfers| transfers.get(index));
        let content = content_of(part, buffer, boundaries[index], transfer);
        // NOTE: mail-parser 0.11.9 also flags the one part of a mail that
        // ends after its header fields, with no empty line, so such a mail
        // gets this warning and an empty text/plain attachment.
        if part.is_encoding_problem {
            let detail = format!(
                "MIME part {index} ({}) could not be decoded or parsed; its raw bytes were kept",
                content_type_of(part)
            );
            doc.warn(WarningCode::PartMalformed, detail);
        }

        let body = body_kind(message, index, part);
        match body {
            Some(Body::Text) => texts.push(decoded(doc, index, part, &content)),
            Some(Body::Html) => htmls.push(decoded(doc, index, part, &content)),
            None => doc.attachments.push(attachment(part, &content, options)),
        }
    }

    // Several body parts occur in multipart/mixed mail, for example text
    // around an inline image, so all of them are kept in order.
    doc.text = (!texts.is_empty()).then(|| texts.join("\n\n"));
    doc.html = (!htmls.is_empty()).then(|| htmls.join("\n"));
}

enum Body {
    Text,
    Html,
}

fn body_kind(message: &Message<'_>, index: usize, part: &MessagePart<'_>) -> Option<Body> {
    let id = u32::try_from(index).ok()?;
    match part.body {
        PartType::Text(_) if message.text_body.contains(&id) && is_plain(part) => Some(Body::Text),
        PartType::Html(_) if message.html_body.contains(&id) => Some(Body::Html),
        _ => None,
    }
}

/// True for `text/plain` and for a part without Content-Type, which RFC
/// 2045 section 5.2 makes `text/plain`.
fn is_plain(part: &MessagePart<'_>) -> bool {
    part.content_type().is_none_or(|content_type| {
        content_type.ctype().eq_ignore_ascii_case("text")
            && content_type
                .subtype()
                .is_none_or(|subtype| subtype.eq_ignore_ascii_case("plain"))
    })
}

/// Decodes a body part to UTF-8 with LF line ends and no trailing line
/// breaks.
fn decoded(doc: &mut InboundMail, index: usize, part: &MessagePart<'_>, content: &[u8]) -> String {
    let label = part
        .content_type()
        .and_then(|content_type| content_type.attribute("charset"));
    let decoded = decode_text(content, label);
    if let Some((code, detail)) = decoded.problem {
        doc.warn(code, format!("MIME part {index}: {detail}"));
    }

    lf_text(&decoded.text)
}

/// Returns `text` with LF for each CRLF and without trailing line breaks,
/// in one copy.
pub(super) fn lf_text(text: &str) -> String {
    // Trimming first gives the same result, as a CRLF cannot straddle the
    // start of the trailing line breaks.
    let text = text.trim_end_matches(['\r', '\n']);
    let mut out = String::with_capacity(text.len());
    let mut start = 0;
    for at in memchr::memmem::find_iter(text.as_bytes(), b"\r\n") {
        out.push_str(&text[start..at]);
        start = at + 1;
    }
    out.push_str(&text[start..]);
    out
}

fn attachment(part: &MessagePart<'_>, content: &[u8], options: &DocumentOptions) -> Attachment {
    let size = content.len() as u64;
    let inline = options.attachment_bytes > 0 && size <= options.attachment_bytes;

    Attachment {
        filename: part.attachment_name().map(str::to_owned),
        content_type: content_type_of(part),
        size,
        content_id: part.content_id().map(str::to_owned),
        disposition: part
            .content_disposition()
            .map(|disposition| disposition.ctype().to_ascii_lowercase()),
        sha256: sha256_hex(content),
        content_base64: inline.then(|| BASE64.encode(content)),
    }
}

fn content_type_of(part: &MessagePart<'_>) -> String {
    let Some(content_type) = part.content_type() else {
        return match part.body {
            PartType::Message(_) => "message/rfc822".to_owned(),
            PartType::Text(_) | PartType::Html(_) => "text/plain".to_owned(),
            _ => "application/octet-stream".to_owned(),
        };
    };

    match content_type.subtype() {
        Some(subtype) => format!("{}/{subtype}", content_type.ctype()).to_ascii_lowercase(),
        None if content_type.ctype().eq_ignore_ascii_case("text") => "text/plain".to_owned(),
        None => "application/octet-stream".to_owned(),
    }
}

/// Boundary of the multipart that contains each part, by part index.
pub(super) fn parent_boundaries<'m>(message: &'m Message<'_>) -> Vec<Option<&'m str>> {
    let mut boundaries = vec![None; message.parts.len()];
    for part in &message.parts {
        let PartType::Multipart(children) = &part.body else {
            continue;
        };
        let boundary = part
            .content_type()
            .and_then(|content_type| content_type.attribute("boundary"));
        for &child in children {
            if let Some(slot) = boundaries.get_mut(child as usize) {
                *slot = boundary;
            }
        }
    }

    boundaries
}

/// Content of a part after transfer decoding, in its own charset. Text
/// parts are read again from the message bytes because mail-parser keeps
/// only their UTF-8 conversion, and nested messages because mail-parser
/// 0.11 gives an 8-bit nested message the bytes of the whole outer
/// message. With deferred decoding, `transfer` gives the decoded bytes of
/// a binary part and the encoding of a text part.
fn content_of<'b>(
    part: &'b MessagePart<'_>,
    buffer: &'b [u8],
    boundary: Option<&str>,
    transfer: Option<&'b Transfer>,
) -> Cow<'b, [u8]> {
    if let Some(decoded) = transfer.and_then(|transfer| transfer.decoded.as_deref()) {
        return Cow::Borrowed(decoded);
    }
    match &part.body {
        PartType::Binary(bytes) | PartType::InlineBinary(bytes) if !part.is_encoding_problem => {
            Cow::Borrowed(bytes.as_ref())
        }
        PartType::Message(nested) if part.encoding != Encoding::None => {
            Cow::Borrowed(nested.raw_message.as_ref())
        }
        _ => {
            let raw = body_bytes(part, buffer, boundary);
            let encoding = transfer.map_or(part.encoding, |transfer| transfer.encoding);
            let decoded = match encoding {
                Encoding::None => None,
                Encoding::Base64 => base64_decode(raw),
                Encoding::QuotedPrintable => quoted_printable_decode(raw),
            };
            decoded.map_or(Cow::Borrowed(raw), Cow::Owned)
        }
    }
}

/// Body bytes of a part, ending before the line break that belongs to
/// the next boundary delimiter (RFC 2046 section 5.1.1). mail-parser's
/// end offset runs past the delimiter for a part it could not parse.
fn body_bytes<'b>(part: &MessagePart<'_>, buffer: &'b [u8], boundary: Option<&str>) -> &'b [u8] {
    let start = (part.offset_body as usize).min(buffer.len());
    let mut end = (part.offset_end as usize).min(buffer.len());
    // An end of 0 means mail-parser never set it, for example when the
    // message stops inside the part.
    if end < start || part.offset_end == 0 {
        end = buffer.len();
    }
    let mut body = &buffer[start..end];

    if let Some(boundary) = boundary {
        let delimiter = format!("\n--{boundary}");
        if let Some(at) = find(body, delimiter.as_bytes()) {
            body = &body[..at];
            body = body.strip_suffix(b"\r").unwrap_or(body);
        }
    }
    body
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    const C18_LIKE: &[u8] = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
        --b\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
        --b\r\nContent-Type: message/rfc822\r\n\r\nnot a message\r\n--b--\r\n";

    #[test]
    fn lf_text_ends_lines_with_lf_only() {
        assert_eq!(lf_text("a\r\nb\r\n\r\n"), "a\nb");
        assert_eq!(lf_text("a\rb\n\r\nc\r\r\n"), "a\rb\n\nc");
        assert_eq!(lf_text("\r\n\r\n"), "");
        assert_eq!(lf_text("caf\u{e9}\r\n\u{1f600}"), "caf\u{e9}\n\u{1f600}");
        for text in ["x\r\r\n\ny", "\r\nx\n\r", "x\r\n\r", "", "\r"] {
            let expected = text.replace("\r\n", "\n");
            assert_eq!(
                lf_text(text),
                expected.trim_end_matches(['\r', '\n']),
                "{text:?}"
            );
        }
    }

    #[test]
    fn unparsable_nested_message_stops_at_delimiter() {
        let message = MessageParser::default().parse(C18_LIKE).unwrap();
        let boundaries = parent_boundaries(&message);

        let nested = &message.parts[2];
        let content = content_of(nested, C18_LIKE, boundaries[2], None);

        assert_eq!(content.as_ref(), b"not a message");
    }

    #[test]
    fn text_part_bytes_keep_their_charset() {
        let raw = b"Content-Type: text/plain; charset=iso-8859-1\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9\r\n";
        let message = MessageParser::default().parse(&raw[..]).unwrap();

        let content = content_of(&message.parts[0], raw, None, None);

        assert_eq!(content.as_ref(), b"caf\xe9\r\n");
    }

    #[test]
    fn digest_part_without_content_type_is_message() {
        let raw = b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n\
            From: a@example.test\r\nSubject: one\r\n\r\nfirst\r\n--d--\r\n";
        let message = MessageParser::default().parse(&raw[..]).unwrap();

        let part = &message.parts[1];

        assert_eq!(content_type_of(part), "message/rfc822");
    }

    #[test]
    fn plain_part_without_content_type_is_text() {
        let raw = b"Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\n\r\nhi\r\n--m--\r\n";
        let message = MessageParser::default().parse(&raw[..]).unwrap();

        let part = &message.parts[1];

        assert!(is_plain(part));
        assert_eq!(content_type_of(part), "text/plain");
    }

    #[test]
    fn empty_part_stays_empty() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
            Content-Type: application/octet-stream\r\n\r\n\r\n--b\r\n\
            Content-Type: text/plain\r\n\r\nsecond\r\n--b--\r\n";
        let message = MessageParser::default().parse(&raw[..]).unwrap();
        let boundaries = parent_boundaries(&message);

        let content = content_of(&message.parts[1], raw, boundaries[1], None);

        assert_eq!(content.as_ref(), b"");
    }

    #[test]
    fn boundaries_map_children_to_parent() {
        let message = MessageParser::default().parse(C18_LIKE).unwrap();

        let boundaries = parent_boundaries(&message);

        assert_eq!(boundaries, vec![None, Some("b"), Some("b")]);
    }
}
