//! Outbound send request: the JSON document a pipeline puts on a Kafka
//! topic or AMQP queue for mailbridge to send, and its validation.
//!
//! [`parse`] turns the payload into a [`Request`] or a [`Rejection`] that
//! names the field at fault. A request that passed contains nothing that
//! could add a header line or a recipient of its own. Every value that
//! becomes part of a header is one line without control characters.
//! Addresses are RFC 5322 addr-specs with ASCII domains, msg-ids and
//! header names have valid syntax, and extra headers come from a fixed
//! allowed set. Bodies may contain any text, which the MIME builder
//! encodes.

mod address;
mod attachment;
mod document;
mod headers;
mod rejection;
mod request;
mod syntax;

pub use address::Mailbox;
pub use attachment::DecodedAttachment;
pub use document::{Address, Attachment, Header, OutboundMail};
pub use headers::is_structured_header;

use document::Object;
pub use rejection::{RejectReason, Rejection};
pub use request::Request;

/// Schema name of [`OutboundMail`], expected in the Kafka header or AMQP
/// `type` property that names a payload's schema.
pub const OUTBOUND_SCHEMA: &str = "mailbridge.outbound-mail.v1";

/// Maximum length of a JSON error message kept in a rejection, in bytes.
const MAX_JSON_ERROR: usize = 300;

/// Caps applied while validating a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest total size of all attachments after base64 decoding, in
    /// bytes. Default 25 MiB, the message size limit of Microsoft 365
    /// and Gmail.
    pub max_attachment_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_attachment_bytes: 25 * 1024 * 1024,
        }
    }
}

/// Parses and validates one payload. Never panics, whatever the bytes.
pub fn parse(payload: &[u8], limits: &Limits) -> Result<Request, Rejection> {
    let mail = deserialize(payload)?;

    Request::validate(&mail, limits)
}

/// Reads the `id` of a payload leniently, so that the status event and
/// logs of a rejected request can name it. Returns the `id` of any JSON
/// object whose `id` member is a string that is valid as an `id`, even
/// when other fields fail validation, and `None` otherwise.
pub fn lenient_id(payload: &[u8]) -> Option<String> {
    /// Only the `id` member; serde skips every other member unread.
    #[derive(serde::Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: Option<serde_json::Value>,
    }

    // A derived struct would also accept a JSON array, whose first
    // element is not an `id`.
    let first = payload.iter().find(|byte| !byte.is_ascii_whitespace());
    if first != Some(&b'{') {
        return None;
    }
    let document: IdOnly = serde_json::from_slice(payload).ok()?;
    let serde_json::Value::String(raw) = document.id? else {
        return None;
    };

    request::id(Some(&raw)).ok().flatten()
}

/// Deserializes the document, mapping serde errors to rejections that
/// name the field by its path, e.g. `to[0].address`.
fn deserialize(payload: &[u8]) -> Result<OutboundMail, Rejection> {
    let mut json = serde_json::Deserializer::from_slice(payload);
    let mail: Result<Object<OutboundMail>, _> = serde_path_to_error::deserialize(&mut json);
    let mail = mail.map_err(|err| {
        let path = err.path().to_string();
        json_rejection(err.inner(), (path != ".").then_some(path))
    })?;
    json.end().map_err(|err| json_rejection(&err, None))?;

    Ok(mail.0)
}

fn json_rejection(err: &serde_json::Error, field: Option<String>) -> Rejection {
    if !err.is_data() {
        let detail = format!("the payload is not JSON: {err}");
        return Rejection::new(RejectReason::NotJson, detail);
    }

    let detail = redact_json_error(&err.to_string());
    match field {
        Some(field) => Rejection::at(RejectReason::InvalidField, field, detail),
        None => Rejection::new(
            RejectReason::InvalidField,
            format!("the request must be a JSON object: {detail}"),
        ),
    }
}

/// Drops the string that serde quotes in an "invalid type" or "invalid
/// value" message, because it may be a whole body or a secret, and cuts
/// the rest to [`MAX_JSON_ERROR`] bytes.
fn redact_json_error(message: &str) -> String {
    let message = message
        .rsplit_once(" at line ")
        .map_or(message, |(head, _)| head);
    let redacted = ["invalid type: string ", "invalid value: string "]
        .iter()
        .find_map(|prefix| {
            let rest = message.strip_prefix(prefix)?;
            let (_, expected) = rest.rsplit_once(", expected ")?;
            Some(format!("{}, expected {expected}", prefix.trim_end()))
        })
        .unwrap_or_else(|| message.to_owned());
    // An unknown field's name is quoted as sent, and a line break in it
    // would split the log line or dead-letter header that carries it.
    let redacted: String = redacted
        .chars()
        .map(|c| match c.is_control() {
            true => c.escape_debug().to_string(),
            false => c.to_string(),
        })
        .collect();

    let mut end = redacted.len().min(MAX_JSON_ERROR);
    while !redacted.is_char_boundary(end) {
        end -= 1;
    }
    redacted[..end].to_owned()
}

#[cfg(test)]
mod tests;
