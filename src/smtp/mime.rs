//! MIME message of a validated send request (RFC 5322, RFC 2045 to RFC
//! 2049), built with lettre.
//!
//! The body is `text/plain`, `text/html`, or `multipart/alternative` when
//! the request has both. Inline parts join the HTML in a
//! `multipart/related`, and attachments wrap everything in a
//! `multipart/mixed`. Non-ASCII text in headers becomes RFC 2047
//! encoded-words, and only display names are encoded, never an addr-spec.
//!
//! Bodies keep every line unchanged through any relay. A body that is
//! not short-lined printable ASCII is sent as quoted-printable or base64.
//! A line starting with `.` or `From ` is encoded as well, so neither
//! SMTP dot-stuffing (RFC 5321 section 4.5.2) nor mbox quoting can alter
//! it.

use std::fmt::Write as _;

use email_encoding::headers::rfc2047;
use email_encoding::headers::writer::EmailWriter;
use lettre::address::Envelope;
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Body, Mailboxes, MessageBuilder, MultiPart, SinglePart};
use lettre::{Address, Message};

use crate::mail::outbound::{
    DecodedAttachment, Mailbox, RejectReason, Rejection, Request, is_structured_header,
};

/// Maximum run of non-space characters written as it is in a header.
/// lettre folds header lines only at spaces, so a longer run becomes RFC
/// 2047 encoded-words, which may be split anywhere. With this bound, a
/// run after `Reply-To: `, quotes included, stays within the 78 octets
/// per line that RFC 5322 recommends.
const MAX_WORD: usize = 66;

/// Line length for quoted-printable bodies. RFC 2045 allows 76; three
/// octets are kept free for escaping a leading `.` or `F` afterwards.
const QP_LINE: usize = 73;

/// The message ready for SMTP.
///
/// On a resend of the same request the sender reuses this value, bytes
/// and `message_id` included, instead of building again. A request with
/// an `id` but no `message_id` gets a Message-ID derived from the `id`.
/// So a request consumed twice (after a crash) goes out with the same
/// Message-ID, and receivers can spot the duplicate. Only a request with
/// neither gets a random one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The Message-ID header value, with angle brackets.
    pub message_id: String,
    /// Envelope sender (`MAIL FROM`): the `from` address of the request,
    /// or the account address.
    pub envelope_from: String,
    /// Envelope recipients (`RCPT TO`): To, Cc and Bcc, each once.
    pub recipients: Vec<String>,
    /// The message in wire form, CRLF line endings, without dot-stuffing.
    pub bytes: Vec<u8>,
}

/// Builds the message of `request`. `default_from` is the account
/// address, used as sender when the request has no `from`, and
/// `message_id_domain` is the right-hand side of generated Message-IDs.
///
/// Fails with [`RejectReason::InvalidConfig`] when either of them is
/// invalid; other failures would mean that validation let an invalid
/// request through.
pub fn build(
    request: &Request,
    default_from: &str,
    message_id_domain: &str,
) -> Result<Built, Rejection> {
    let from = match request.from() {
        Some(from) => from.clone(),
        None => Mailbox::from_address("default_from", default_from).map_err(config)?,
    };
    let message_id = message_id(request, message_id_domain)?;
    let envelope = envelope(&from, request.recipients())?;

    let builder = headers(request, &from, &message_id)?.envelope(envelope);
    let message = match content(request)? {
        Content::Single(part) => builder.singlepart(part),
        Content::Multi(part) => builder.multipart(part),
    };
    let message = message.map_err(|err| internal(&format!("lettre: {err}")))?;

    Ok(Built {
        message_id,
        envelope_from: from.address().to_owned(),
        recipients: request.recipients().to_vec(),
        bytes: message.formatted(),
    })
}

fn config(rejection: Rejection) -> Rejection {
    let field = rejection.field.unwrap_or_default();
    let detail = format!("{field} is invalid: {}", rejection.detail);

    Rejection::new(RejectReason::InvalidConfig, detail)
}

/// A failure that validation should have prevented.
fn internal(what: &str) -> Rejection {
    let detail = format!("building the message failed ({what}); the request passed validation");

    Rejection::new(RejectReason::InvalidField, detail)
}

/// Returns the Message-ID of the request, at `domain` (RFC 5322 section
/// 3.6.4). It is the request's own, else one derived from its `id` (128
/// bits of a SHA-256 of the domain and the id), else 128 random bits.
fn message_id(request: &Request, domain: &str) -> Result<String, Rejection> {
    if let Some(id) = request.message_id() {
        return Ok(format!("<{id}>"));
    }

    let ascii = idna::domain_to_ascii_strict(domain)
        .ok()
        .filter(|ascii| !ascii.is_empty() && ascii.split('.').all(|label| !label.is_empty()));
    let Some(ascii) = ascii else {
        let detail = "message_id_domain is not a valid host name";
        return Err(Rejection::new(RejectReason::InvalidConfig, detail));
    };

    let left = match request.id() {
        Some(id) => derived_left_part(&ascii, id),
        None => format!("{:032x}", rand::random::<u128>()),
    };
    Ok(format!("<{left}@{ascii}>"))
}

/// Hex of the first 128 bits of a SHA-256 over the domain and `id`, each
/// length-prefixed so that no two pairs share an input.
fn derived_left_part(domain: &str, id: &str) -> String {
    use sha2::{Digest, Sha256};

    let mut hash = Sha256::new();
    for part in ["mailbridge.message-id", domain, id] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize()[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn envelope(from: &Mailbox, recipients: &[String]) -> Result<Envelope, Rejection> {
    let recipients = recipients
        .iter()
        .map(|address| lettre_address(address))
        .collect::<Result<Vec<_>, _>>()?;

    Envelope::new(Some(lettre_address(from.address())?), recipients)
        .map_err(|err| internal(&format!("envelope: {err}")))
}

fn lettre_address(address: &str) -> Result<Address, Rejection> {
    address
        .parse()
        .map_err(|err| Rejection::new(RejectReason::InvalidAddress, format!("lettre: {err}")))
}

/// Sets every header field except those of the MIME structure. `Date`
/// is the time of the build.
fn headers(
    request: &Request,
    from: &Mailbox,
    message_id: &str,
) -> Result<MessageBuilder, Rejection> {
    let mut builder = Message::builder()
        .date_now()
        .raw_header(address_list("From", std::slice::from_ref(from))?);
    for (name, list) in [
        ("Reply-To", request.reply_to()),
        ("To", request.to()),
        ("Cc", request.cc()),
    ] {
        if !list.is_empty() {
            builder = builder.raw_header(address_list(name, list)?);
        }
    }
    if let Some(subject) = request.subject() {
        builder = builder.raw_header(unstructured(
            HeaderName::new_from_ascii_str("Subject"),
            subject,
        ));
    }

    builder = builder.message_id(Some(message_id.to_owned()));
    if let Some(parent) = request.in_reply_to() {
        builder = builder.in_reply_to(format!("<{parent}>"));
    }
    if !request.references().is_empty() {
        let ids: Vec<String> = request
            .references()
            .iter()
            .map(|id| format!("<{id}>"))
            .collect();
        builder = builder.references(ids.join(" "));
    }

    for header in request.headers() {
        let name = HeaderName::new_from_ascii(header.name.clone())
            .map_err(|_| internal("lettre rejected a header name"))?;
        // A structured value is ASCII, which validation checks, and
        // encoded-words would break its syntax. lettre writes it as it
        // is and folds it at spaces.
        let value = match is_structured_header(&header.name) {
            true => HeaderValue::new(name, header.value.clone()),
            false => unstructured(name, &header.value),
        };
        builder = builder.raw_header(value);
    }

    Ok(builder)
}

/// Writes an address list (RFC 5322 section 3.4). It does not use
/// lettre's encoding, because lettre 0.11 encodes an ASCII display name
/// with a comma as an encoded-word. Receivers that decode before
/// splitting the list read that as two addresses, so a quoted-string is
/// written instead.
fn address_list(name: &'static str, mailboxes: &[Mailbox]) -> Result<HeaderValue, Rejection> {
    let lettre_list = mailboxes
        .iter()
        .map(|mailbox| {
            let address = lettre_address(mailbox.address())?;
            Ok(lettre::message::Mailbox::new(
                mailbox.name().map(str::to_owned),
                address,
            ))
        })
        .collect::<Result<Vec<_>, Rejection>>()?;
    // lettre parses the raw value back to check the From header.
    let raw = Mailboxes::from_iter(lettre_list).to_string();

    let mut encoded = String::new();
    let mut writer = EmailWriter::new(&mut encoded, name.len() + 2, 0, false);
    for (index, mailbox) in mailboxes.iter().enumerate() {
        if index > 0 {
            write(writer.folding().write_char(','));
            writer.space();
        }
        write_mailbox(&mut writer, mailbox);
    }
    drop(writer);

    Ok(HeaderValue::dangerous_new_pre_encoded(
        HeaderName::new_from_ascii_str(name),
        raw,
        encoded,
    ))
}

/// Writes one mailbox. Every piece goes through the folding writer, so
/// the line may break at the spaces between them and inside a name.
fn write_mailbox(writer: &mut EmailWriter<'_>, mailbox: &Mailbox) {
    let Some(name) = mailbox.name() else {
        return write(writer.folding().write_str(mailbox.address()));
    };

    write_display_name(writer, name);
    writer.space();
    write(
        writer
            .folding()
            .write_str(&format!("<{}>", mailbox.address())),
    );
}

/// Writes a display name as atoms, as a quoted-string when it is ASCII
/// with specials, or as RFC 2047 encoded-words otherwise: when it is not
/// ASCII, contains `=?` or has a run too long to fold.
fn write_display_name(writer: &mut EmailWriter<'_>, name: &str) {
    if needs_encoded_words(name) {
        write(rfc2047::encode(name, writer));
    } else if is_phrase_of_atoms(name) {
        write(writer.folding().write_str(name));
    } else if name.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
        write(writer.folding().write_str(&format!("\"{escaped}\"")));
    } else {
        write(rfc2047::encode(name, writer));
    }
}

/// True for names that RFC 5322 allows without quotes: atoms of `atext`
/// separated by single spaces.
fn is_phrase_of_atoms(name: &str) -> bool {
    name.split(' ').all(|atom| {
        !atom.is_empty()
            && atom
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b))
    })
}

/// Ignores the result of writing to a `String`, which cannot fail, so an
/// error would be a bug in the encoder. Debug builds panic on it.
fn write(result: std::fmt::Result) {
    debug_assert!(result.is_ok(), "header encoder failed");
}

/// True when ASCII text must still become encoded-words: `=?` would be
/// decoded as the start of one, and a long run cannot be folded.
fn needs_encoded_words(text: &str) -> bool {
    text.contains("=?") || text.split(' ').any(|word| word.len() > MAX_WORD)
}

/// Encodes an unstructured header value (RFC 5322 section 3.2.5) so that
/// decoders read back exactly `value`, white space included.
///
/// Words of printable ASCII stay as they are where single spaces separate
/// them (see [`is_plain_word`]). Everything else becomes RFC 2047
/// encoded-words together with its white space. Decoders drop white space
/// between two encoded-words (RFC 2047 section 6.2), and mail-parser 0.11
/// reads a fold with the white space around it as one space. So the only
/// white space outside encoded-words is one space between two stretches.
/// An empty value is written as an empty field.
fn unstructured(name: HeaderName, value: &str) -> HeaderValue {
    let mut encoded = String::new();
    let mut writer = EmailWriter::new(&mut encoded, name.len() + 2, 0, false);
    for (index, stretch) in stretches(value).iter().enumerate() {
        if index > 0 {
            writer.space();
        }
        match stretch {
            Stretch::Plain(text) => write(writer.folding().write_str(text)),
            Stretch::Encoded(text) => write(rfc2047::encode(text, &mut writer)),
        }
    }
    drop(writer);

    HeaderValue::dangerous_new_pre_encoded(name, value.to_owned(), encoded)
}

/// Part of an unstructured value, written after a single space unless it
/// comes first.
#[derive(Debug, PartialEq, Eq)]
enum Stretch {
    /// Words of printable ASCII joined by single spaces, written as they
    /// are.
    Plain(String),
    /// Text to write as encoded-words. It is never empty.
    Encoded(String),
}

/// Splits `value` at its spaces into stretches, so that the stretches
/// joined with one space each give `value` back.
///
/// The items between two spaces that must be encoded are those that are
/// empty (from a run of spaces or a space at either end), not printable
/// ASCII (tabs included), longer than [`MAX_WORD`] or containing `=?`.
/// An empty item alone between plain words would become an empty
/// encoded stretch, which writes nothing, so the word after it (or
/// before it, at the end) is encoded with it.
fn stretches(value: &str) -> Vec<Stretch> {
    let items: Vec<&str> = value.split(' ').collect();
    let mut plain: Vec<bool> = items.iter().map(|item| is_plain_word(item)).collect();
    for index in 0..items.len() {
        let alone = items[index].is_empty()
            && (index == 0 || plain[index - 1])
            && plain.get(index + 1).is_none_or(|&next| next);
        if alone && index + 1 < items.len() {
            plain[index + 1] = false;
        } else if alone && index > 0 {
            plain[index - 1] = false;
        }
    }

    let mut stretches = Vec::new();
    let mut start = 0;
    for end in 1..=items.len() {
        if end < items.len() && plain[end] == plain[start] {
            continue;
        }
        let text = items[start..end].join(" ");
        stretches.push(match plain[start] {
            true => Stretch::Plain(text),
            false => Stretch::Encoded(text),
        });
        start = end;
    }
    stretches.retain(|stretch| stretch != &Stretch::Encoded(String::new()));

    stretches
}

/// True for a word that decoders read back unchanged when written as it
/// is: printable ASCII without `=?`, which would start an encoded-word,
/// and short enough to fit on a folded line.
fn is_plain_word(word: &str) -> bool {
    !word.is_empty()
        && word.len() <= MAX_WORD
        && !word.contains("=?")
        && word.bytes().all(|b| b.is_ascii_graphic())
}

enum Content {
    Single(SinglePart),
    Multi(MultiPart),
}

fn push(multi: MultiPart, content: Content) -> MultiPart {
    match content {
        Content::Single(part) => multi.singlepart(part),
        Content::Multi(part) => multi.multipart(part),
    }
}

/// Lays out the MIME structure described in the module documentation.
fn content(request: &Request) -> Result<Content, Rejection> {
    let (inline, attached): (Vec<_>, Vec<_>) = request
        .attachments()
        .iter()
        .partition(|attachment| attachment.content_id().is_some());

    let html = request
        .html()
        .map(|html| html_content(html, &inline))
        .transpose()?;
    let text = request
        .text()
        .map(|text| text_part(ContentType::TEXT_PLAIN, text));
    let main = match (text, html) {
        (Some(text), Some(html)) => {
            Content::Multi(push(MultiPart::alternative().singlepart(text), html))
        }
        (Some(text), None) => Content::Single(text),
        (None, Some(html)) => html,
        (None, None) => Content::Single(text_part(ContentType::TEXT_PLAIN, "")),
    };
    if attached.is_empty() {
        return Ok(main);
    }

    let mut mixed = push(MultiPart::mixed().build(), main);
    for attachment in attached {
        mixed = mixed.singlepart(attachment_part(attachment)?);
    }

    Ok(Content::Multi(mixed))
}

fn html_content(html: &str, inline: &[&DecodedAttachment]) -> Result<Content, Rejection> {
    let part = text_part(ContentType::TEXT_HTML, html);
    if inline.is_empty() {
        return Ok(Content::Single(part));
    }

    let mut related = MultiPart::related().singlepart(part);
    for attachment in inline {
        related = related.singlepart(attachment_part(attachment)?);
    }

    Ok(Content::Multi(related))
}

fn attachment_part(attachment: &DecodedAttachment) -> Result<SinglePart, Rejection> {
    let content_type = ContentType::parse(attachment.content_type())
        .map_err(|_| internal("lettre rejected a content type"))?;
    let filename = attachment.filename().to_owned();
    let kind = match attachment.content_id() {
        Some(id) => Attachment::new_inline_with_name(id.to_owned(), filename),
        None => Attachment::new(filename),
    };
    // NOTE: message/rfc822 parts get base64 too, which RFC 2046 section
    // 5.2.1 forbids; common clients read them all the same.
    let body = Body::new_with_encoding(
        attachment.content().to_vec(),
        ContentTransferEncoding::Base64,
    )
    .unwrap_or_else(Body::new);

    Ok(kind.body(body, content_type))
}

fn text_part(content_type: ContentType, text: &str) -> SinglePart {
    SinglePart::builder()
        .header(content_type)
        .body(text_body(text))
}

/// Encodes a text body: 7bit when every line is short printable ASCII
/// that no relay would touch, quoted-printable when at most a third of
/// the octets need escaping, base64 otherwise.
fn text_body(text: &str) -> Body {
    let lf = text.replace("\r\n", "\n").replace('\r', "\n");
    let plain = lf.split('\n').all(|line| {
        line.len() < 76
            && !starts_unsafe(line)
            && line
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    });
    if plain {
        return Body::new(lf);
    }

    let escaped = lf
        .bytes()
        .filter(|&b| b != b'\n' && b != b'\t' && !(b' '..=b'~').contains(&b))
        .count();
    if escaped > lf.len() / 3 {
        return Body::new_with_encoding(lf, ContentTransferEncoding::Base64)
            .unwrap_or_else(Body::new);
    }

    Body::dangerous_pre_encoded(
        quoted_printable(&lf),
        ContentTransferEncoding::QuotedPrintable,
    )
}

fn starts_unsafe(line: &str) -> bool {
    line.starts_with('.') || line.starts_with("From ")
}

/// Quoted-printable (RFC 2045 section 6.7) with CRLF line breaks, where
/// a line starting with `.` or `From ` has its first octet escaped.
fn quoted_printable(lf: &str) -> Vec<u8> {
    let crlf = lf.replace('\n', "\r\n");
    let options = quoted_printable::Options::default().line_length_limit(QP_LINE);
    let encoded = quoted_printable::encode_with_options(crlf, options);

    let lines: Vec<String> = encoded
        .split("\r\n")
        .map(|line| match line.as_bytes().first() {
            Some(b'.') if starts_unsafe(line) => format!("=2E{}", &line[1..]),
            Some(b'F') if starts_unsafe(line) => format!("=46{}", &line[1..]),
            _ => line.to_owned(),
        })
        .collect();

    lines.join("\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use mail_parser::MessageParser;
    use mail_parser::parsers::MessageStream;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn encoded(text: &str) -> (ContentTransferEncoding, String) {
        let body = text_body(text);
        let encoding = body.encoding();

        (encoding, String::from_utf8(body.into_vec()).unwrap())
    }

    #[test]
    fn short_ascii_stays_7bit() {
        let (encoding, wire) = encoded("Hello\r\nworld\rend\n");

        assert_eq!(encoding, ContentTransferEncoding::SevenBit);
        assert_eq!(wire, "Hello\r\nworld\r\nend\r\n");
    }

    #[test]
    fn unsafe_text_is_quoted_printable() {
        for text in [
            ".dot",
            "From me",
            "tab\tand NUL\u{0}",
            "Grüße aus Köln, bis morgen",
            &"x".repeat(80),
        ] {
            assert_eq!(
                encoded(text).0,
                ContentTransferEncoding::QuotedPrintable,
                "{text:?}"
            );
        }
        assert_eq!(encoded("会議資料").0, ContentTransferEncoding::Base64);
    }

    #[test]
    fn escaped_lines_stay_within_76() {
        // Soft breaks put a dot at the start of a wrapped line too.
        let text = format!("{}\n.x\nFrom y", ".".repeat(300));
        let wire = String::from_utf8(quoted_printable(&text)).unwrap();

        for line in wire.split("\r\n") {
            assert!(line.len() <= 76, "{line}");
            assert!(
                !line.starts_with('.') && !line.starts_with("From "),
                "{line}"
            );
        }
        let decoded = ::quoted_printable::decode(&wire, ::quoted_printable::ParseMode::Strict);
        assert_eq!(decoded.unwrap(), text.replace('\n', "\r\n").into_bytes());
    }

    #[test]
    fn phrases_of_atoms() {
        assert!(is_phrase_of_atoms("Bob Example"));
        assert!(is_phrase_of_atoms("O'Brien"));
        for name in ["Doe, John", "a  b", " lead", "Dr. Who", "\"q\"", "Jörg"] {
            assert!(!is_phrase_of_atoms(name), "{name:?}");
        }
    }

    /// Header section holding `value` as the field `name`, in wire form.
    fn header_wire(name: &str, value: &str) -> String {
        let name = HeaderName::new_from_ascii(name.to_owned()).unwrap();
        let mut headers = lettre::message::header::Headers::new();
        headers.insert_raw(unstructured(name, value));

        headers.to_string()
    }

    /// Parses `wire` with mail-parser and returns its Subject.
    fn subject_read_back(wire: &str) -> String {
        let message = format!("{wire}\r\nbody\r\n");
        let parsed = MessageParser::default().parse(message.as_bytes()).unwrap();

        parsed.subject().unwrap_or_default().to_owned()
    }

    /// Reads the value of the single field in `wire` as unstructured text,
    /// the way the inbound side reads fields that mail-parser does not know.
    fn unstructured_read_back(wire: &str) -> String {
        let (_, value) = wire.split_once(':').unwrap();
        let text = MessageStream::new(value.as_bytes()).parse_unstructured();

        text.as_text().unwrap_or_default().to_owned()
    }

    /// Checks the wire form of one header field: 7-bit, continuation lines
    /// that start with a space, and encoded-words within the 75 octets of
    /// RFC 2047 section 2. Lines stay within `max_line` octets.
    fn check_field_wire(wire: &str, max_line: usize) {
        assert!(wire.bytes().all(|b| b.is_ascii() && b != 0), "{wire:?}");
        let lines: Vec<&str> = wire.trim_end_matches("\r\n").split("\r\n").collect();
        for (index, line) in lines.iter().enumerate() {
            assert!(line.len() <= max_line, "line of {}: {wire:?}", line.len());
            assert!(!line.contains(['\r', '\n', '\t']), "{wire:?}");
            assert!(index == 0 || line.starts_with(' '), "{wire:?}");
        }
        for word in wire.split_ascii_whitespace() {
            if word.starts_with("=?") && word.ends_with("?=") {
                assert!(word.len() <= 75, "encoded-word of {}: {wire:?}", word.len());
            }
        }
    }

    /// Text made of pieces that mix ASCII and non-ASCII words, runs of
    /// spaces and tabs, lookalikes of encoded-words and runs too long
    /// for one line.
    fn generated_text(rng: &mut impl Rng) -> String {
        const PIECES: [&str; 24] = [
            "Administratör:",
            "Bestätigung",
            "der",
            "Re:",
            "[T-4711]",
            "東京",
            "😀",
            "–",
            "a",
            "=?",
            "?=",
            "=?utf-8?q?x?=",
            "_=20",
            "\"q\"",
            " ",
            " ",
            " ",
            "  ",
            "      ",
            "\t",
            " \t ",
            "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy",
            "ääääääääääääääääääääääääääääääääääääääää",
            "ab",
        ];
        let count = rng.random_range(1..16);

        (0..count)
            .map(|_| PIECES[rng.random_range(0..PIECES.len())])
            .collect()
    }

    #[test]
    fn stretches_keep_white_space() {
        let plain = |text: &str| Stretch::Plain(text.to_owned());
        let encoded = |text: &str| Stretch::Encoded(text.to_owned());
        let cases = [
            ("Re: hello", vec![plain("Re: hello")]),
            ("a  b", vec![plain("a"), encoded(" b")]),
            ("a   b", vec![plain("a"), encoded(" "), plain("b")]),
            (" a", vec![encoded(" a")]),
            ("a b ", vec![plain("a"), encoded("b ")]),
            ("a\tb c", vec![encoded("a\tb"), plain("c")]),
            (
                "Grüße aus Köln",
                vec![encoded("Grüße"), plain("aus"), encoded("Köln")],
            ),
            ("x =?y", vec![plain("x"), encoded("=?y")]),
            ("", vec![]),
        ];

        for (value, expected) in cases {
            assert_eq!(stretches(value), expected, "{value:?}");
        }
    }

    #[test]
    fn spaces_between_encoded_words_read_back() {
        // A subject long enough for several encoded-words, with a run of
        // spaces where a fold falls.
        let short = "Administratör:      Bestätigung";
        let long = [short; 4].join(" der ");

        for value in [short, long.as_str()] {
            let wire = header_wire("Subject", value);

            check_field_wire(&wire, 78);
            assert_eq!(subject_read_back(&wire), value, "{wire}");
        }
    }

    #[test]
    fn long_runs_become_encoded_words() {
        let run = "y".repeat(MAX_WORD + 1);
        let wire = header_wire("Subject", &format!("see {run} end"));

        assert!(wire.starts_with("Subject: see =?utf-8?b?"), "{wire}");
        assert!(wire.ends_with("?= end\r\n"), "{wire}");
        check_field_wire(&wire, 78);
    }

    #[test]
    fn structured_headers_stay_plain() {
        let url = format!("<https://example.test/u/{}>", "t".repeat(MAX_WORD));
        let value = format!("<mailto:u@example.test>,  {url}");
        let payload = serde_json::json!({
            "to": ["bob@example.test"],
            "text": "hi",
            "headers": {"List-Unsubscribe": value, "X-Note": value},
        });
        let request =
            crate::mail::outbound::parse(payload.to_string().as_bytes(), &Default::default())
                .unwrap();

        let built = build(&request, "account@example.test", "example.test").unwrap();
        let wire = String::from_utf8(built.bytes).unwrap();
        let unfolded = wire.replace("\r\n ", " ");

        assert!(
            unfolded.contains(&format!("\r\nList-Unsubscribe: {value}\r\n")),
            "{wire}"
        );
        assert!(
            unfolded.contains("\r\nX-Note: <mailto:u@example.test>, =?utf-8?b?"),
            "{wire}"
        );
    }

    #[test]
    fn generated_subjects_read_back() {
        let mut rng = StdRng::seed_from_u64(2047);

        for _ in 0..3000 {
            let value = generated_text(&mut rng);
            let wire = header_wire("Subject", &value);

            check_field_wire(&wire, 78);
            assert_eq!(subject_read_back(&wire), value, "{wire}");
        }
    }

    #[test]
    fn generated_display_names_read_back() {
        let mut rng = StdRng::seed_from_u64(6532);
        // Long ASCII names with runs of spaces become quoted-strings that
        // fold inside the quotes.
        let quoted = [
            "a  b  c  d  e  f  g  h  i  j  k  l  m  n  o  p  q  r  s  t  u  v  w  x  y  z",
            "Doe,  John (Sales)   Doe,  John (Sales)   Doe,  John (Sales)   Doe,  John (Sales)",
        ];
        let names = quoted
            .map(str::to_owned)
            .into_iter()
            .chain((0..2000).map(|_| generated_text(&mut rng)));

        for name in names {
            let payload = serde_json::json!({
                "from": {"name": name, "address": "from@example.test"},
                "to": [{"name": name, "address": "to@example.test"}, "bob@example.test"],
                "text": "hi",
            });
            let request =
                crate::mail::outbound::parse(payload.to_string().as_bytes(), &Default::default())
                    .unwrap();
            let built = build(&request, "account@example.test", "example.test").unwrap();
            let message = MessageParser::default().parse(&built.bytes).unwrap();
            let wire = String::from_utf8_lossy(&built.bytes);

            let expected = request.from().unwrap().name();
            let from = message.from().unwrap().first().unwrap();
            assert_eq!(from.name(), expected, "{wire}");
            let to: Vec<_> = message.to().unwrap().iter().collect();
            assert_eq!(to.len(), 2, "{wire}");
            assert_eq!(to[0].name(), expected, "{wire}");
            assert_eq!(to[1].address(), Some("bob@example.test"), "{wire}");
        }
    }

    #[test]
    fn generated_extra_headers_read_back() {
        let mut rng = StdRng::seed_from_u64(5322);
        let long_name = format!("X-{}", "Long".repeat(15));

        for _ in 0..1000 {
            let value = generated_text(&mut rng);
            for name in ["Comments", "X-Ticket", long_name.as_str()] {
                let wire = header_wire(name, &value);

                // Past a long name, the first encoded-word still contains
                // at least one character, so only continuation lines keep
                // to 78 octets.
                let max_line = if name == long_name { 998 } else { 78 };
                check_field_wire(&wire, max_line);
                assert_eq!(unstructured_read_back(&wire), value, "{wire}");
            }
        }
    }
}
