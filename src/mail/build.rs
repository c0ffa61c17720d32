//! Mapping of one fetched IMAP message to its [`InboundMail`] document.

use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, FixedOffset};
use mail_parser::{Message, MessageParser};

use super::charset::{HeaderRepair, repair_headers};
use super::deferred::{self, DEFERRED_MIN_BYTES};
use super::document::{InboundMail, WarningCode};
use super::headers::{read_headers, utc_rfc3339};
use super::parts::read_parts;
use super::{document_id, sha256_hex};

/// FETCH data of one message, as the IMAP server returned it (RFC 9051).
#[derive(Debug, Clone)]
pub struct FetchedMail<'a> {
    /// Name of the configured account.
    pub account: &'a str,
    /// Mailbox name in UTF-8, already decoded from modified UTF-7.
    pub mailbox: &'a str,
    /// UIDVALIDITY of the selected mailbox.
    pub uidvalidity: u32,
    /// UID of the message.
    pub uid: u32,
    /// FLAGS as IMAP spells them, such as `\Seen` or `$Forwarded`.
    pub flags: Vec<String>,
    /// INTERNALDATE, when fetched.
    pub received_at: Option<DateTime<FixedOffset>>,
    /// RFC822.SIZE in bytes, when fetched.
    pub size: Option<u32>,
    /// BODY[]: the whole message as stored, or BODY[HEADER] alone for a
    /// message whose `size` exceeds `max_message_bytes`.
    pub raw: &'a [u8],
}

/// Size limits of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentOptions {
    /// An attachment's bytes go into `content_base64` when its decoded size
    /// is at most this many bytes; 0 never includes them. Default: 0.
    pub attachment_bytes: u64,
    /// The whole message goes into `raw_base64` when it is at most this
    /// many bytes and not truncated; 0 never includes it. Default: 0.
    pub raw_bytes: u64,
    /// A message larger than this many bytes is published with its header
    /// fields, sizes and hash only, and `truncated = true`. Default: 25 MiB.
    pub max_message_bytes: u64,
}

impl Default for DocumentOptions {
    fn default() -> Self {
        Self {
            attachment_bytes: 0,
            raw_bytes: 0,
            max_message_bytes: 25 * 1024 * 1024,
        }
    }
}

/// Builds the document of `mail`. It never fails and never panics: a
/// message that parses badly yields what could be read plus `warnings`,
/// and a panic inside the MIME parser yields the header fields, or the
/// IMAP metadata alone when the header section also panics, with a
/// `parse_panic` warning. Catching the panic needs the default
/// `panic = "unwind"` profile setting.
pub fn build(mail: &FetchedMail<'_>, options: &DocumentOptions) -> InboundMail {
    build_with(mail, options, |doc, truncated| {
        read_message(doc, mail.raw, options, truncated);
    })
}

/// Builds the document of `mail` with deferred transfer decoding, whatever
/// its size, and with the normal parse, in that order, or returns `None`
/// when the deferred way does not apply. The two must be equal: the fuzz
/// target and the corpus tests compare them.
#[doc(hidden)]
pub fn build_both_ways(
    mail: &FetchedMail<'_>,
    options: &DocumentOptions,
) -> Option<(InboundMail, InboundMail)> {
    let used_deferred = Cell::new(false);
    // The flag is set before the document is filled, so that a panic
    // while filling shows as a difference too.
    let deferred = build_with(mail, options, |doc, truncated| {
        if truncated {
            read_message(doc, mail.raw, options, truncated);
        } else if let Some(parsed) = parse_deferred(mail.raw) {
            used_deferred.set(true);
            fill_deferred(doc, mail.raw, options, &parsed);
        } else {
            read_parsed(doc, mail.raw, options, false);
        }
    });
    let normal = build_with(mail, options, |doc, truncated| {
        read_parsed(doc, mail.raw, options, truncated);
    });
    used_deferred.get().then_some((deferred, normal))
}

/// Builds the document with `read` filling in the parsed fields, so that
/// tests can stand in a reader that panics.
fn build_with(
    mail: &FetchedMail<'_>,
    options: &DocumentOptions,
    read: impl Fn(&mut InboundMail, bool),
) -> InboundMail {
    let message_bytes = message_bytes(mail);
    let truncated = message_bytes > options.max_message_bytes;
    let mut base = metadata(mail);
    if truncated {
        base.truncated = true;
        let detail = format!(
            "message of {message_bytes} bytes exceeds max_message_bytes = {}; only the header \
             section was read",
            options.max_message_bytes
        );
        base.warn(WarningCode::MessageTruncated, detail);
    }

    // The closure works on a copy, so a panic cannot leave half-filled
    // fields behind.
    let attempt = |headers_only: bool| {
        panic::catch_unwind(AssertUnwindSafe(|| {
            let mut doc = base.clone();
            read(&mut doc, headers_only);
            doc
        }))
    };
    let mut doc = match attempt(truncated) {
        Ok(doc) => doc,
        // mail-parser 0.11.9 panics on some broken MIME structures that
        // its header-only parser reads fine, so the header fields are
        // kept when the second attempt succeeds.
        Err(payload) if !truncated => match attempt(true) {
            Ok(headers) => panicked(
                headers,
                payload.as_ref(),
                "only the header section was read",
            ),
            Err(_) => panicked(base, payload.as_ref(), "only IMAP metadata was kept"),
        },
        Err(payload) => panicked(base, payload.as_ref(), "only IMAP metadata was kept"),
    };

    let raw_fits = options.raw_bytes > 0 && mail.raw.len() as u64 <= options.raw_bytes;
    if raw_fits && !truncated {
        doc.raw_base64 = Some(BASE64.encode(mail.raw));
    }
    doc
}

/// Returns the size of the message: the larger of RFC822.SIZE and the
/// fetched bytes. The fetched bytes are fewer when only the header
/// section of a large mail was fetched, and a server's RFC822.SIZE may be
/// an estimate.
fn message_bytes(mail: &FetchedMail<'_>) -> u64 {
    let fetched = mail.raw.len() as u64;
    mail.size
        .map_or(fetched, |size| fetched.max(u64::from(size)))
}

/// Builds the document fields that come from IMAP alone.
fn metadata(mail: &FetchedMail<'_>) -> InboundMail {
    InboundMail {
        id: document_id(mail.account, mail.mailbox, mail.uidvalidity, mail.uid),
        account: mail.account.to_owned(),
        mailbox: mail.mailbox.to_owned(),
        uidvalidity: mail.uidvalidity,
        uid: mail.uid,
        message_id: None,
        in_reply_to: None,
        references: Vec::new(),
        subject: None,
        date: None,
        received_at: mail.received_at.as_ref().map(utc_rfc3339),
        from: Vec::new(),
        sender: Vec::new(),
        reply_to: Vec::new(),
        to: Vec::new(),
        cc: Vec::new(),
        bcc: Vec::new(),
        text: None,
        html: None,
        headers: Vec::new(),
        flags: mail.flags.clone(),
        size: mail.size.map_or(mail.raw.len() as u64, u64::from),
        content_sha256: sha256_hex(mail.raw),
        attachments: Vec::new(),
        raw_base64: None,
        truncated: false,
        warnings: Vec::new(),
    }
}

fn panicked(mut doc: InboundMail, payload: &(dyn Any + Send), kept: &str) -> InboundMail {
    let reason = payload
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    let detail = format!("the MIME parser panicked ({reason}); {kept}");
    doc.warn(WarningCode::ParsePanic, detail);

    doc
}

/// Parses `raw` and fills the header and part fields. A truncated
/// message is read up to the end of its header section only.
fn read_message(doc: &mut InboundMail, raw: &[u8], options: &DocumentOptions, truncated: bool) {
    if !truncated && raw.len() >= DEFERRED_MIN_BYTES && read_deferred(doc, raw, options) {
        return;
    }
    read_parsed(doc, raw, options, truncated);
}

/// Reads the message with mail-parser's normal parse.
fn read_parsed(doc: &mut InboundMail, raw: &[u8], options: &DocumentOptions, truncated: bool) {
    let parser = MessageParser::default();
    let Some(message) = parse(&parser, raw, truncated) else {
        unparsable(doc, raw, truncated);
        return;
    };
    let repair = repair_headers(raw, &message);
    doc.warnings.extend(repair.warnings.iter().cloned());

    // The repair rewrote the header bytes that the body charset decodes as
    // UTF-8 in a copy, so parsing the copy decodes them in every field.
    let repaired = repair.buffer.as_deref();
    match repaired.and_then(|buffer| Some((parse(&parser, buffer, truncated)?, buffer))) {
        Some((fixed, buffer)) => fill(doc, &fixed, buffer, &repair, options, truncated),
        None => fill(doc, &message, raw, &repair, options, truncated),
    }
}

/// Reads a large message with deferred transfer decoding, which gives the
/// same document faster. Returns false, having changed nothing, where the
/// normal parse must do it.
fn read_deferred(doc: &mut InboundMail, raw: &[u8], options: &DocumentOptions) -> bool {
    match parse_deferred(raw) {
        Some(parsed) => {
            fill_deferred(doc, raw, options, &parsed);
            true
        }
        None => false,
    }
}

/// Parses `raw` with deferred transfer decoding, or returns `None` where
/// the normal parse must read it. A panic of the parser here leaves the
/// mail to the normal parse, which decides whether it panics too.
fn parse_deferred(raw: &[u8]) -> Option<(deferred::Deferred<'_>, HeaderRepair)> {
    let parsed = panic::catch_unwind(AssertUnwindSafe(|| deferred::parse(raw))).ok()??;
    let repair = repair_headers(raw, &parsed.message);
    repair.buffer.is_none().then_some((parsed, repair))
}

/// Fills the header and part fields from a deferred parse.
fn fill_deferred(
    doc: &mut InboundMail,
    raw: &[u8],
    options: &DocumentOptions,
    (parsed, repair): &(deferred::Deferred<'_>, HeaderRepair),
) {
    doc.warnings.extend(repair.warnings.iter().cloned());
    read_headers(doc, &parsed.message, raw, &repair.undecodable);
    read_parts(doc, &parsed.message, raw, options, Some(&parsed.transfers));
}

fn parse<'x>(parser: &MessageParser, bytes: &'x [u8], headers_only: bool) -> Option<Message<'x>> {
    if headers_only {
        parser.parse_headers(bytes)
    } else {
        parser.parse(bytes)
    }
}

fn fill(
    doc: &mut InboundMail,
    message: &Message<'_>,
    buffer: &[u8],
    repair: &HeaderRepair,
    options: &DocumentOptions,
    truncated: bool,
) {
    read_headers(doc, message, buffer, &repair.undecodable);
    if !truncated {
        read_parts(doc, message, buffer, options, None);
    }
}

/// Keeps what can be read of a message without a header section: its
/// bytes as text.
fn unparsable(doc: &mut InboundMail, raw: &[u8], truncated: bool) {
    doc.warn(WarningCode::ParseFailed, "no RFC 5322 header section found");
    if !truncated && !raw.is_empty() {
        let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
        doc.text = Some(text.trim_end_matches(['\r', '\n']).to_owned());
    }
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
