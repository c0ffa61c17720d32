//! Syntax checks of values that become header lines: no line break or
//! other control character (RFC 5322 section 2.2), field names
//! (section 3.6.8) and msg-ids (section 3.6.4).

use super::rejection::{RejectReason, Rejection, preview};

/// Maximum msg-id length, in octets. It keeps `In-Reply-To: <id>` and
/// every folded `References` line under the 998-octet limit of RFC 5322.
const MAX_MSG_ID: usize = 900;

/// Maximum field name length, in octets: lettre's limit, which keeps
/// the name and a short value on one 78-character line.
const MAX_FIELD_NAME: usize = 76;

/// Rejects CR, LF and other control characters except TAB in a value
/// that becomes part of a header line. A line break would end the header
/// field and let the value add fields or body text of its own.
pub(super) fn single_line(field: &str, value: &str) -> Result<(), Rejection> {
    let Some((index, c)) = value
        .chars()
        .enumerate()
        .find(|&(_, c)| c.is_control() && c != '\t')
    else {
        return Ok(());
    };

    let problem = match c {
        '\r' | '\n' => "a line break (CR or LF)".to_owned(),
        other => format!("control character U+{:04X}", other as u32),
    };
    Err(Rejection::at(
        RejectReason::InvalidHeaderValue,
        field,
        format!("contains {problem} at character {index}; header values must be one line"),
    ))
}

/// Checks an RFC 5322 field-name: printable US-ASCII except colon, at
/// most [`MAX_FIELD_NAME`] octets.
pub(super) fn field_name(field: &str, name: &str) -> Result<(), Rejection> {
    single_line(field, name)?;

    let valid = !name.is_empty()
        && name.len() <= MAX_FIELD_NAME
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
    if valid {
        return Ok(());
    }

    Err(Rejection::at(
        RejectReason::InvalidHeaderValue,
        field,
        format!(
            "header name {} is not an RFC 5322 field name \
             (1 to {MAX_FIELD_NAME} printable ASCII characters, no colon or space)",
            preview(name)
        ),
    ))
}

/// Checks the Message-ID of a new message and returns it without angle
/// brackets. It must be a strict RFC 5322 msg-id, `id-left@id-right`,
/// because receivers rely on it being globally unique.
pub(super) fn message_id(field: &str, raw: &str) -> Result<String, Rejection> {
    let id = unbracket(field, raw)?;

    let strict = id.split_once('@').is_some_and(|(left, right)| {
        is_dot_atom_text(left) && (is_dot_atom_text(right) || is_no_fold_literal(right))
    });
    if strict {
        return Ok(id.to_owned());
    }

    Err(invalid_msg_id(field, raw, "expected id-left@id-right"))
}

/// Checks the msg-id of an existing message, for `In-Reply-To` and
/// `References`, and returns it without angle brackets.
///
/// Besides RFC 5322 msg-ids it accepts ids without `@` or with other
/// visible characters, because real mailers send such ids and threading
/// only works with the exact value. Whitespace, angle brackets, quotes,
/// parentheses, commas, semicolons and backslashes are rejected: they
/// would change how receivers split the header.
pub(super) fn referenced_id(field: &str, raw: &str) -> Result<String, Rejection> {
    let id = unbracket(field, raw)?;

    let visible = id
        .bytes()
        .all(|b| (33..=126).contains(&b) && !b"<>()\",;\\".contains(&b));
    if visible {
        return Ok(id.to_owned());
    }

    Err(invalid_msg_id(
        field,
        raw,
        "expected visible ASCII without spaces, quotes, brackets or commas",
    ))
}

/// Strips one optional pair of angle brackets and checks what is common
/// to both kinds of msg-id: one line, not empty, not too long.
fn unbracket<'a>(field: &str, raw: &'a str) -> Result<&'a str, Rejection> {
    single_line(field, raw)?;

    let trimmed = raw.trim_matches(' ');
    let id = match trimmed.strip_prefix('<') {
        Some(rest) => rest
            .strip_suffix('>')
            .ok_or_else(|| invalid_msg_id(field, raw, "'<' without a closing '>'"))?,
        None => trimmed,
    };
    if id.is_empty() {
        return Err(invalid_msg_id(field, raw, "the id is empty"));
    }
    if id.len() > MAX_MSG_ID {
        return Err(invalid_msg_id(
            field,
            raw,
            &format!("longer than {MAX_MSG_ID} characters"),
        ));
    }

    Ok(id)
}

fn invalid_msg_id(field: &str, raw: &str, why: &str) -> Rejection {
    Rejection::at(
        RejectReason::InvalidHeaderValue,
        field,
        format!(
            "{} is not a msg-id (RFC 5322 section 3.6.4): {why}",
            preview(raw)
        ),
    )
}

/// True for RFC 5322 `atext`: letters, digits and ``!#$%&'*+-/=?^_`{|}~``.
pub(super) fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// True for RFC 5322 `dot-atom-text`: atext runs joined by single dots.
pub(super) fn is_dot_atom_text(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|run| !run.is_empty() && run.bytes().all(is_atext))
}

/// True for RFC 5322 `no-fold-literal`: `[` dtext `]`.
fn is_no_fold_literal(s: &str) -> bool {
    s.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|inner| {
            inner
                .bytes()
                .all(|b| (33..=126).contains(&b) && !b"[]\\".contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(result: Result<String, Rejection>) -> RejectReason {
        result.unwrap_err().reason
    }

    #[test]
    fn single_line_rejects_every_break() {
        for value in [
            "a\r\nb",
            "a\nb",
            "a\rb",
            "\r",
            "x\u{0}",
            "x\u{1b}[0m",
            "x\u{85}",
        ] {
            let rejection = single_line("subject", value).unwrap_err();
            assert_eq!(
                rejection.reason,
                RejectReason::InvalidHeaderValue,
                "{value:?}"
            );
            assert_eq!(rejection.field.as_deref(), Some("subject"));
        }
    }

    #[test]
    fn single_line_accepts_tab_and_unicode() {
        assert!(single_line("subject", "Grüße\tfrom 東京 😀").is_ok());
    }

    #[test]
    fn single_line_names_position() {
        let rejection = single_line("subject", "ab\ncd").unwrap_err();

        assert!(
            rejection.detail.contains("line break"),
            "{}",
            rejection.detail
        );
        assert!(
            rejection.detail.contains("character 2"),
            "{}",
            rejection.detail
        );
    }

    #[test]
    fn field_name_syntax() {
        assert!(field_name("h", "X-Ticket").is_ok());
        assert!(field_name("h", "X-A.b_c~1").is_ok());
        for bad in [
            "",
            "X-Bad: name",
            "X-Bad name",
            "X:Bad",
            "X-Ünicode",
            "X-\n",
        ] {
            assert!(field_name("h", bad).is_err(), "{bad:?}");
        }
        assert!(field_name("h", &"X".repeat(MAX_FIELD_NAME + 1)).is_err());
    }

    #[test]
    fn message_id_strict_forms() {
        assert_eq!(message_id("m", "<a.b@c.d>").unwrap(), "a.b@c.d");
        assert_eq!(message_id("m", "a.b@c.d").unwrap(), "a.b@c.d");
        assert_eq!(message_id("m", "<x@[127.0.0.1]>").unwrap(), "x@[127.0.0.1]");
        for bad in [
            "",
            "<>",
            "<a@b",
            "a b@c",
            "a@b@c",
            "abc",
            "a..b@c",
            "<a@b>\r\nBcc: x",
        ] {
            assert!(message_id("m", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn referenced_id_lenient_forms() {
        assert_eq!(referenced_id("r", "<12345>").unwrap(), "12345");
        assert_eq!(referenced_id("r", "a$b@c").unwrap(), "a$b@c");
        for bad in ["a b", "<a>b>", "a,b", "a\"b", "(a)", "a;b"] {
            assert_eq!(
                reason(referenced_id("r", bad)),
                RejectReason::InvalidHeaderValue,
                "{bad:?}"
            );
        }
        assert!(referenced_id("r", &"a".repeat(MAX_MSG_ID + 1)).is_err());
    }

    #[test]
    fn injected_msg_id_is_invalid_header_value() {
        let rejection =
            referenced_id("in_reply_to", "<orig@example.test>\r\nBcc: m@x.test").unwrap_err();

        assert_eq!(rejection.reason, RejectReason::InvalidHeaderValue);
        assert!(rejection.detail.contains("line break"));
    }
}
