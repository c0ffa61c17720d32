//! Charset decoding of text parts and of raw 8-bit header bytes.
//!
//! Labels resolve by the WHATWG Encoding Standard, which `encoding_rs`
//! implements, except that every GBK label decodes with the GB18030
//! decoder, a superset that also reads the 4-byte sequences that senders
//! put under a `gb2312` or `gbk` label. Labels that `encoding_rs` does not
//! know, such as UTF-7, go to the decoders of `mail-parser`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use encoding_rs::{Encoding, GB18030, GBK, UTF_8};
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::{Message, MimeHeaders};

use super::document::{Warning, WarningCode};

/// A text part decoded to UTF-8, with the problem found, if any.
pub(crate) struct DecodedText<'a> {
    /// The text, borrowed from the part's bytes when they were UTF-8.
    pub text: Cow<'a, str>,
    pub problem: Option<(WarningCode, String)>,
}

/// Decodes the transfer-decoded bytes of a text part labelled `label`.
pub(crate) fn decode_text<'a>(bytes: &'a [u8], label: Option<&str>) -> DecodedText<'a> {
    let label = label.map(str::trim).filter(|label| !label.is_empty());
    let Some(label) = label else {
        // RFC 2045 makes US-ASCII the default, but 8-bit bytes without a
        // label are UTF-8 far more often than anything else.
        return decode_with(UTF_8, bytes, "UTF-8 (no charset declared)");
    };

    // A 7-bit label cannot describe bytes >= 0x80, so such bytes show that
    // the label is wrong, and valid UTF-8 is then the likely encoding.
    if is_seven_bit(label)
        && !bytes.is_ascii()
        && let Ok(text) = std::str::from_utf8(bytes)
    {
        let detail = format!("declared {label} but contains 8-bit bytes; read as UTF-8");
        return DecodedText {
            text: Cow::Borrowed(text),
            problem: Some((WarningCode::CharsetMislabelled, detail)),
        };
    }

    if let Some(encoding) = encoding_for(label) {
        return decode_with(encoding, bytes, label);
    }
    if let Some(decoder) = charset_decoder(label.as_bytes()) {
        return DecodedText {
            text: Cow::Owned(decoder(bytes)),
            problem: None,
        };
    }

    let mut decoded = decode_with(UTF_8, bytes, label);
    if !bytes.is_ascii() {
        let detail = format!("unknown charset {label:?}; read as UTF-8");
        decoded.problem = Some((WarningCode::CharsetUnknown, detail));
    }
    decoded
}

fn decode_with<'a>(encoding: &'static Encoding, bytes: &'a [u8], label: &str) -> DecodedText<'a> {
    let (text, had_errors) = encoding.decode_with_bom_removal(bytes);
    let problem = had_errors.then(|| {
        let detail = format!("bytes invalid in {label} were replaced with U+FFFD");
        (WarningCode::TextDecodeErrors, detail)
    });

    DecodedText { text, problem }
}

/// Resolves a charset label, reading every GBK label as GB18030.
pub(crate) fn encoding_for(label: &str) -> Option<&'static Encoding> {
    let encoding = Encoding::for_label(label.trim().as_bytes())?;
    Some(if encoding == GBK { GB18030 } else { encoding })
}

/// True for labels of charsets whose bytes are all below 0x80.
fn is_seven_bit(label: &str) -> bool {
    let label = label.to_ascii_lowercase();
    label.starts_with("iso-2022-")
        || label.starts_with("csiso2022")
        || matches!(
            label.as_str(),
            "us-ascii" | "ascii" | "us" | "ansi_x3.4-1968" | "iso646-us" | "utf-7" | "csascii"
        )
}

/// Outcome of checking the header fields of a message for raw 8-bit bytes
/// that are not UTF-8.
#[derive(Default)]
pub(crate) struct HeaderRepair {
    /// Copy of the message with the decodable fields rewritten in UTF-8,
    /// or `None` when no field was rewritten.
    pub buffer: Option<Vec<u8>>,
    /// Raw value bytes of undecodable top-level headers, by header index.
    pub undecodable: HashMap<usize, Vec<u8>>,
    pub warnings: Vec<Warning>,
}

/// Finds header fields whose raw bytes are not UTF-8 (RFC 6532 allows
/// UTF-8 only) and decodes them with the message's body charset when that
/// decodes them without error. Headers inside nested messages are left to
/// the nested message's own bytes.
pub(crate) fn repair_headers(raw: &[u8], message: &Message<'_>) -> HeaderRepair {
    let charset = body_charset(message);
    let mut repair = HeaderRepair::default();
    let mut replacements = Vec::new();

    for (part_index, part) in message.parts.iter().enumerate() {
        for (header_index, header) in part.headers.iter().enumerate() {
            let field = header.offset_field as usize..header.offset_end as usize;
            let Some(bytes) = raw.get(field.clone()) else {
                continue;
            };
            if std::str::from_utf8(bytes).is_ok() {
                continue;
            }

            let name = field_name(raw, header.offset_field, header.offset_start);
            let place = place(part_index, &name);
            let decoded =
                charset.and_then(|encoding| Some((encoding, decode_clean(encoding, bytes)?)));
            if let Some((encoding, text)) = decoded {
                repair.note_guessed(&place, encoding);
                replacements.push((field, text));
                continue;
            }

            repair.note_undecodable(&place);
            if part_index == 0 {
                let value = header.offset_start as usize..header.offset_end as usize;
                repair
                    .undecodable
                    .insert(header_index, raw_value(raw, value));
            }
        }
    }

    if !replacements.is_empty() {
        repair.buffer = Some(splice(raw, replacements));
    }
    repair
}

impl HeaderRepair {
    fn note_guessed(&mut self, place: &str, encoding: &'static Encoding) {
        let detail = format!(
            "{place}: raw 8-bit bytes are not UTF-8; read as {}, the body charset",
            encoding.name()
        );
        self.warnings
            .push(Warning::new(WarningCode::HeaderCharsetGuessed, detail));
    }

    fn note_undecodable(&mut self, place: &str) {
        let detail = format!(
            "{place}: raw 8-bit bytes are neither UTF-8 nor the body charset; U+FFFD replaces them"
        );
        self.warnings
            .push(Warning::new(WarningCode::HeaderUndecodable, detail));
    }
}

/// Charset of the first text part that declares one, when it is an
/// ASCII-compatible charset other than UTF-8 (anything else cannot explain
/// bytes that are not UTF-8 in an otherwise ASCII header line).
fn body_charset(message: &Message<'_>) -> Option<&'static Encoding> {
    let label = message.parts.iter().find_map(|part| {
        let content_type = part.content_type()?;
        if !content_type.ctype().eq_ignore_ascii_case("text") {
            return None;
        }
        content_type.attribute("charset")
    })?;
    if is_seven_bit(label) {
        return None;
    }

    encoding_for(label).filter(|encoding| encoding.is_ascii_compatible() && *encoding != UTF_8)
}

fn decode_clean(encoding: &'static Encoding, bytes: &[u8]) -> Option<String> {
    let (text, had_errors) = encoding.decode_without_bom_handling(bytes);
    (!had_errors).then(|| text.into_owned())
}

/// Header field name as spelled in the message, without the colon.
pub(crate) fn field_name(raw: &[u8], start: u32, end: u32) -> String {
    let bytes = raw.get(start as usize..end as usize).unwrap_or_default();
    let name = String::from_utf8_lossy(bytes);
    name.trim_end().trim_end_matches(':').trim().to_owned()
}

fn place(part_index: usize, name: &str) -> String {
    if part_index == 0 {
        name.to_owned()
    } else {
        format!("MIME part {part_index} {name}")
    }
}

/// Value bytes without the leading space and the final line break.
fn raw_value(raw: &[u8], range: Range<usize>) -> Vec<u8> {
    let value = raw.get(range).unwrap_or_default();
    let value = value.strip_suffix(b"\n").unwrap_or(value);
    let value = value.strip_suffix(b"\r").unwrap_or(value);

    value.trim_ascii_start().to_vec()
}

fn splice(raw: &[u8], mut replacements: Vec<(Range<usize>, String)>) -> Vec<u8> {
    replacements.sort_by_key(|(range, _)| range.start);
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 8);
    let mut copied = 0;
    for (range, text) in replacements {
        out.extend_from_slice(&raw[copied..range.start]);
        out.extend_from_slice(text.as_bytes());
        copied = range.end;
    }
    out.extend_from_slice(&raw[copied..]);

    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gb2312_label_reads_gbk_only_characters() {
        let (bytes, _, _) = GBK.encode("镕铸");

        let decoded = decode_text(&bytes, Some("gb2312"));

        assert_eq!(decoded.text, "镕铸");
        assert!(decoded.problem.is_none());
    }

    #[test]
    fn gbk_label_reads_four_byte_gb18030() {
        let (bytes, _, _) = GB18030.encode("𠀀 ok");
        assert_eq!(bytes.len(), 7, "U+20000 takes four bytes in GB18030");

        let decoded = decode_text(&bytes, Some("GBK"));

        assert_eq!(decoded.text, "𠀀 ok");
        assert!(decoded.problem.is_none());
    }

    #[test]
    fn seven_bit_label_with_utf8_reads_utf8() {
        let decoded = decode_text("テスト".as_bytes(), Some("iso-2022-jp"));

        assert_eq!(decoded.text, "テスト");
        let (code, _) = decoded.problem.expect("a warning");
        assert_eq!(code, WarningCode::CharsetMislabelled);
    }

    #[test]
    fn seven_bit_label_with_ascii_decodes_normally() {
        let decoded = decode_text(b"\x1b$B%F%9%H\x1b(B", Some("ISO-2022-JP"));

        assert_eq!(decoded.text, "テスト");
        assert!(decoded.problem.is_none());
    }

    #[test]
    fn invalid_bytes_give_decode_warning() {
        let decoded = decode_text(b"caf\xc3", Some("utf-8"));

        assert_eq!(decoded.text, "caf\u{fffd}");
        let (code, _) = decoded.problem.expect("a warning");
        assert_eq!(code, WarningCode::TextDecodeErrors);
    }

    #[test]
    fn unknown_label_falls_back_to_utf8() {
        let decoded = decode_text("grüß".as_bytes(), Some("x-no-such-charset"));

        assert_eq!(decoded.text, "grüß");
        let (code, _) = decoded.problem.expect("a warning");
        assert_eq!(code, WarningCode::CharsetUnknown);
    }

    #[test]
    fn utf7_label_uses_mail_parser_decoder() {
        let decoded = decode_text(b"Hi Mom -+Jjo--!", Some("utf-7"));

        assert_eq!(decoded.text, "Hi Mom -\u{263a}-!");
        assert!(decoded.problem.is_none());
    }

    #[test]
    fn missing_label_reads_utf8() {
        let decoded = decode_text("Zoë".as_bytes(), None);

        assert_eq!(decoded.text, "Zoë");
        assert!(decoded.problem.is_none());
    }

    #[test]
    fn splice_replaces_ranges_in_order() {
        let replacements = vec![(6..7, "Z".to_owned()), (0..1, "A".to_owned())];

        assert_eq!(splice(b"a-b-c-d-e", replacements), b"A-b-c-Z-e");
    }
}
