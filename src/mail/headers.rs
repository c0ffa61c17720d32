//! Top-level header fields of the inbound document: the decoded header
//! list, the RFC 5322 address lists, message ids, subject and date.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, FixedOffset, NaiveDate, SecondsFormat, TimeZone, Utc};
use mail_parser::parsers::MessageStream;
use mail_parser::{ContentType, HeaderName, HeaderValue, Message};

use super::charset::field_name;
use super::document::{Address, Header, InboundMail, WarningCode};

/// Fills the header-derived fields of `doc` from the parsed `message`,
/// whose offsets point into `buffer`. `undecodable` contains the raw
/// value bytes of header fields that no charset could decode, by index.
pub(crate) fn read_headers(
    doc: &mut InboundMail,
    message: &Message<'_>,
    buffer: &[u8],
    undecodable: &HashMap<usize, Vec<u8>>,
) {
    let Some(root) = message.parts.first() else {
        return;
    };
    let fields = &root.headers;

    doc.headers = fields
        .iter()
        .enumerate()
        .map(|(index, field)| Header {
            name: name_of(field, buffer),
            value: value_of(field, buffer),
            raw_base64: undecodable.get(&index).map(|bytes| BASE64.encode(bytes)),
        })
        .collect();

    read_ids(doc, fields);
    doc.subject = first(fields, HeaderName::Subject).map(|value| text_of(value).join(" "));
    read_date(doc, fields, buffer);

    doc.from = addresses(doc, fields, HeaderName::From);
    doc.sender = addresses(doc, fields, HeaderName::Sender);
    doc.reply_to = addresses(doc, fields, HeaderName::ReplyTo);
    doc.to = addresses(doc, fields, HeaderName::To);
    doc.cc = addresses(doc, fields, HeaderName::Cc);
    doc.bcc = addresses(doc, fields, HeaderName::Bcc);
}

fn read_ids(doc: &mut InboundMail, fields: &[mail_parser::Header<'_>]) {
    doc.message_id = first(fields, HeaderName::MessageId).and_then(first_id);
    if doc.message_id.is_none() {
        doc.warn(
            WarningCode::MessageIdMissing,
            "Message-ID header missing or empty",
        );
    }

    doc.in_reply_to = first(fields, HeaderName::InReplyTo).and_then(first_id);
    doc.references = all(fields, HeaderName::References)
        .flat_map(text_of)
        .map(|id| id.replace(['\r', '\n'], ""))
        .filter(|id| !id.is_empty())
        .collect();
}

fn read_date(doc: &mut InboundMail, fields: &[mail_parser::Header<'_>], buffer: &[u8]) {
    let Some(field) = fields.iter().find(|field| field.name == HeaderName::Date) else {
        doc.warn(WarningCode::DateMissing, "no Date header");
        return;
    };

    doc.date = match &field.value {
        HeaderValue::DateTime(date) => parsed_date(date),
        _ => None,
    };

    // mail-parser 0.11 rejects some obsolete RFC 5322 forms, such as
    // two-digit years with named zones, that chrono reads.
    let raw = value_of(field, buffer);
    if doc.date.is_none() {
        doc.date = obsolete_date(&raw).map(|date| utc_rfc3339(&date));
    }

    // mail-parser 0.11 reads the year 0000 as 2000, as if it were the
    // obsolete two-digit year 00. RFC 5322 section 3.3 allows four-digit
    // years of 1900 or later only.
    if written_year(&raw).is_some_and(|year| year < 1900) {
        doc.date = None;
    }
    if doc.date.is_none() {
        let excerpt: String = raw.chars().take(80).collect();
        doc.warn(
            WarningCode::DateInvalid,
            format!("Date {excerpt:?} is not a valid date"),
        );
    }
}

/// Maps a parsed RFC 5322 date to RFC 3339 in UTC, or `None` when a field
/// is out of range (mail-parser keeps values such as day 32).
pub(crate) fn parsed_date(date: &mail_parser::DateTime) -> Option<String> {
    if !date.is_valid() {
        return None;
    }
    let day = NaiveDate::from_ymd_opt(date.year.into(), date.month.into(), date.day.into())?;
    let time = day.and_hms_opt(date.hour.into(), date.minute.into(), date.second.into())?;

    let offset = i32::from(date.tz_hour) * 3600 + i32::from(date.tz_minute) * 60;
    let offset = if date.tz_before_gmt { -offset } else { offset };
    let local = FixedOffset::east_opt(offset)?
        .from_local_datetime(&time)
        .single()?;

    Some(utc_rfc3339(&local))
}

/// Parses a date that mail-parser rejected, after removing comments.
fn obsolete_date(value: &str) -> Option<DateTime<FixedOffset>> {
    let text = without_comments(value);
    let words: Vec<&str> = text.split_whitespace().collect();

    DateTime::parse_from_rfc2822(&words.join(" ")).ok()
}

/// Returns the year of a date as written, when it has four or more
/// digits: the word that follows the month name (RFC 5322 section 3.3).
fn written_year(value: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let text = without_comments(value);
    let mut words = text.split_whitespace();
    words.find(|word| MONTHS.iter().any(|month| word.eq_ignore_ascii_case(month)))?;
    let year = words.next()?;

    let digits = year.len() >= 4 && year.bytes().all(|byte| byte.is_ascii_digit());
    digits.then(|| year.parse().ok()).flatten()
}

/// Returns `value` without its comments (RFC 5322 section 3.2.2).
fn without_comments(value: &str) -> String {
    let mut depth = 0usize;
    let without_comments: String = value
        .chars()
        .filter(|&c| {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => return depth == 0,
            }
            false
        })
        .collect();

    without_comments
}

/// Formats a time in UTC as RFC 3339 with a `Z` suffix.
pub(crate) fn utc_rfc3339<Tz: TimeZone>(time: &DateTime<Tz>) -> String {
    time.with_timezone(&Utc)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Collects the mailboxes of every `name` field, groups flattened (RFC
/// 5322 section 3.4). An entry without an addr-spec is left out with a
/// warning.
fn addresses(
    doc: &mut InboundMail,
    fields: &[mail_parser::Header<'_>],
    name: HeaderName<'static>,
) -> Vec<Address> {
    let mut out = Vec::new();
    for value in all(fields, name.clone()) {
        let HeaderValue::Address(list) = value else {
            continue;
        };
        for entry in list.iter() {
            let display = entry.name().map(str::trim).filter(|name| !name.is_empty());
            match entry
                .address()
                .map(str::trim)
                .filter(|addr| !addr.is_empty())
            {
                Some(address) => out.push(Address {
                    name: display.map(str::to_owned),
                    address: address.to_owned(),
                }),
                None => {
                    let display_name = display.unwrap_or_default();
                    let detail =
                        format!("{}: entry {display_name:?} has no address", name.as_str());
                    doc.warn(WarningCode::AddressInvalid, detail);
                }
            }
        }
    }

    out
}

fn first<'m, 'x>(
    fields: &'m [mail_parser::Header<'x>],
    name: HeaderName<'static>,
) -> Option<&'m HeaderValue<'x>> {
    all(fields, name).next()
}

fn all<'m, 'x>(
    fields: &'m [mail_parser::Header<'x>],
    name: HeaderName<'static>,
) -> impl Iterator<Item = &'m HeaderValue<'x>> {
    fields
        .iter()
        .filter(move |field| field.name == name)
        .map(|field| &field.value)
}

/// Returns the first message id of `value`, unfolded: mail-parser 0.11
/// keeps the line break of a folded id (RFC 5322 section 3.2.2).
fn first_id(value: &HeaderValue<'_>) -> Option<String> {
    text_of(value)
        .into_iter()
        .map(|id| id.replace(['\r', '\n'], ""))
        .find(|id| !id.is_empty())
}

fn text_of(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(text) => vec![text.to_string()],
        HeaderValue::TextList(list) => list.iter().map(|text| text.to_string()).collect(),
        _ => Vec::new(),
    }
}

fn name_of(field: &mail_parser::Header<'_>, buffer: &[u8]) -> String {
    let name = field_name(buffer, field.offset_field, field.offset_start);
    if name.is_empty() {
        field.name.as_str().to_owned()
    } else {
        name
    }
}

/// Decodes the value of one field. Content-Type and Content-Disposition
/// are rebuilt from their parsed parameters, so RFC 2231 continuations and
/// charsets come out decoded. Every other field is read as unstructured
/// text (RFC 5322 section 3.2.5), which unfolds it and decodes RFC 2047
/// encoded words.
fn value_of(field: &mail_parser::Header<'_>, buffer: &[u8]) -> String {
    let structured = matches!(
        field.name,
        HeaderName::ContentType | HeaderName::ContentDisposition
    );
    if let (true, HeaderValue::ContentType(content_type)) = (structured, &field.value) {
        return render_content_type(content_type);
    }

    let range = field.offset_start as usize..field.offset_end as usize;
    unstructured(buffer.get(range).unwrap_or_default())
}

fn unstructured(bytes: &[u8]) -> String {
    // The unstructured reader stops at a line break and returns nothing
    // for a value that ends without one.
    let mut owned;
    let mut bytes = bytes;
    if !bytes.ends_with(b"\n") {
        owned = bytes.to_vec();
        owned.extend_from_slice(b"\r\n");
        bytes = &owned;
    }

    text_of(&MessageStream::new(bytes).parse_unstructured()).join(" ")
}

fn render_content_type(content_type: &ContentType<'_>) -> String {
    let mut out = content_type.ctype().to_owned();
    if let Some(subtype) = content_type.subtype() {
        out.push('/');
        out.push_str(subtype);
    }
    for attribute in content_type.attributes().unwrap_or_default() {
        out.push_str("; ");
        out.push_str(&attribute.name);
        out.push('=');
        out.push_str(&quote_if_needed(&attribute.value));
    }

    out
}

/// Writes a parameter value as an RFC 2045 token when it is one, else as
/// a quoted string.
fn quote_if_needed(value: &str) -> String {
    const TSPECIALS: &str = "()<>@,;:\\\"/[]?=";
    let is_token = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && !TSPECIALS.contains(c));
    if is_token {
        return value.to_owned();
    }

    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

#[cfg(test)]
#[path = "headers_tests.rs"]
mod tests;
