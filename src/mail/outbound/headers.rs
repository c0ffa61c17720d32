//! Extra header fields a request may add. Only fields that cannot change
//! who receives the message, how its MIME structure is read or what it
//! claims about its origin are allowed.

use super::document::Header;
use super::rejection::{RejectReason, Rejection, preview};
use super::syntax::{field_name, single_line};

/// Allowed fields whose value has a structure of its own (RFC 2369, RFC
/// 2919, RFC 3834, RFC 8058, RFC 2156). Their values must be ASCII,
/// because encoded-words (RFC 2047) would break that structure.
const STRUCTURED: [&str; 7] = [
    "Auto-Submitted",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
    "Importance",
    "Priority",
    "Sensitivity",
];

/// Allowed fields with free text, encoded as RFC 2047 words where needed.
const UNSTRUCTURED: [&str; 3] = ["Keywords", "Comments", "Organization"];

/// Fields that a request sets through its own members instead.
const FIELD_FOR_HEADER: [(&str, &str); 9] = [
    ("From", "from"),
    ("To", "to"),
    ("Cc", "cc"),
    ("Bcc", "bcc"),
    ("Reply-To", "reply_to"),
    ("Subject", "subject"),
    ("Message-ID", "message_id"),
    ("In-Reply-To", "in_reply_to"),
    ("References", "references"),
];

/// Maximum run of non-space characters in a structured value, in octets.
/// Header lines fold only at spaces, and the line holding such a run must
/// stay under the 998-octet limit of RFC 5322.
const MAX_WORD: usize = 900;

/// Checks the extra headers and returns them in document order.
///
/// Allowed are `X-*` and the fields in [`STRUCTURED`] and
/// [`UNSTRUCTURED`], each at most once, compared without regard to case.
pub(super) fn extra_headers(headers: &[Header]) -> Result<Vec<Header>, Rejection> {
    let mut seen: Vec<&str> = Vec::with_capacity(headers.len());

    for header in headers {
        let field = format!("headers.{}", header.name.escape_debug());
        field_name(&field, &header.name)?;
        single_line(&field, &header.value)?;
        allowed(&field, &header.name)?;
        check_structured(&field, header)?;

        if seen
            .iter()
            .any(|name| name.eq_ignore_ascii_case(&header.name))
        {
            return Err(Rejection::at(
                RejectReason::DuplicateHeader,
                field,
                format!("header {} is given more than once", preview(&header.name)),
            ));
        }
        seen.push(&header.name);
    }

    Ok(headers.to_vec())
}

/// True when `name` is in the allowed set.
fn is_allowed(name: &str) -> bool {
    let experimental = name.len() > 2
        && name
            .get(..2)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("X-"));

    experimental
        || STRUCTURED
            .iter()
            .chain(&UNSTRUCTURED)
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
}

fn allowed(field: &str, name: &str) -> Result<(), Rejection> {
    if is_allowed(name) {
        return Ok(());
    }

    let own_field = FIELD_FOR_HEADER
        .iter()
        .find(|(header, _)| header.eq_ignore_ascii_case(name));
    let hint = match own_field {
        Some((_, member)) => format!("set the `{member}` field instead"),
        None => format!(
            "allowed are X-*, {}, {}",
            STRUCTURED.join(", "),
            UNSTRUCTURED.join(", ")
        ),
    };
    Err(Rejection::at(
        RejectReason::HeaderNotAllowed,
        field,
        format!("header {} is not allowed; {hint}", preview(name)),
    ))
}

/// True for a field in [`STRUCTURED`], compared without regard to case.
/// Validation keeps its value ASCII, so the MIME builder writes it as it
/// is, never as encoded-words.
pub fn is_structured_header(name: &str) -> bool {
    STRUCTURED
        .iter()
        .any(|structured| structured.eq_ignore_ascii_case(name))
}

fn check_structured(field: &str, header: &Header) -> Result<(), Rejection> {
    if !is_structured_header(&header.name) {
        return Ok(());
    }

    let why = if !header.value.is_ascii() {
        "must be ASCII"
    } else if header.value.split(' ').any(|word| word.len() > MAX_WORD) {
        "has a run of more than 900 characters without a space"
    } else {
        return Ok(());
    };
    Err(Rejection::at(
        RejectReason::InvalidHeaderValue,
        field,
        format!("the value of {} {why}", header.name),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, value: &str) -> Header {
        Header {
            name: name.to_owned(),
            value: value.to_owned(),
        }
    }

    fn rejection(headers: &[Header]) -> Rejection {
        extra_headers(headers).unwrap_err()
    }

    #[test]
    fn allowed_set() {
        for name in [
            "X-Ticket",
            "x-priority",
            "List-Unsubscribe",
            "auto-submitted",
        ] {
            assert!(is_allowed(name), "{name}");
        }
        for name in [
            "X-",
            "Bcc",
            "Content-Type",
            "MIME-Version",
            "Received",
            "Date",
        ] {
            assert!(!is_allowed(name), "{name}");
        }
    }

    #[test]
    fn own_fields_get_a_hint() {
        let rejection = rejection(&[header("bcc", "m@attacker.test")]);

        assert_eq!(rejection.reason, RejectReason::HeaderNotAllowed);
        assert_eq!(rejection.field.as_deref(), Some("headers.bcc"));
        assert!(
            rejection.detail.contains("`bcc` field"),
            "{}",
            rejection.detail
        );
    }

    #[test]
    fn other_fields_list_the_allowed_set() {
        let rejection = rejection(&[header("Content-Type", "text/html")]);

        assert_eq!(rejection.reason, RejectReason::HeaderNotAllowed);
        assert!(rejection.detail.contains("X-*"), "{}", rejection.detail);
    }

    #[test]
    fn line_breaks_come_before_the_allowed_set() {
        let rejection = rejection(&[header("In-Reply-To", "<a@b>\r\nBcc: m@attacker.test")]);

        assert_eq!(rejection.reason, RejectReason::InvalidHeaderValue);
        assert_eq!(rejection.field.as_deref(), Some("headers.In-Reply-To"));
    }

    #[test]
    fn bad_name_is_invalid_header_value() {
        let rejection = rejection(&[header("X-Bad: name", "value")]);

        assert_eq!(rejection.reason, RejectReason::InvalidHeaderValue);
        assert_eq!(rejection.field.as_deref(), Some("headers.X-Bad: name"));
    }

    #[test]
    fn field_escapes_line_breaks_in_names() {
        let rejection = rejection(&[header("X-A\r\nBcc", "v")]);

        assert_eq!(rejection.field.as_deref(), Some("headers.X-A\\r\\nBcc"));
    }

    #[test]
    fn repeats_are_rejected() {
        let rejection = rejection(&[header("X-Tag", "a"), header("x-tag", "b")]);

        assert_eq!(rejection.reason, RejectReason::DuplicateHeader);
        assert_eq!(rejection.field.as_deref(), Some("headers.x-tag"));
    }

    #[test]
    fn structured_values_stay_ascii() {
        let non_ascii = rejection(&[header("List-Id", "Bücher <b.example.test>")]);
        assert_eq!(non_ascii.reason, RejectReason::InvalidHeaderValue);

        let long = format!("<https://example.test/{}>", "a".repeat(MAX_WORD));
        let unfoldable = rejection(&[header("List-Unsubscribe", &long)]);
        assert_eq!(unfoldable.reason, RejectReason::InvalidHeaderValue);
    }

    #[test]
    fn valid_headers_keep_order() {
        let headers = [
            header("X-Ticket", "T-1"),
            header("Organization", "Bücherei Köln"),
            header("List-Unsubscribe", "<mailto:u@example.test>"),
        ];

        assert_eq!(extra_headers(&headers).unwrap(), headers);
    }
}
