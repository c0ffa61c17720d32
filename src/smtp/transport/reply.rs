//! SMTP replies (RFC 5321 section 4.2) and their enhanced status codes
//! (RFC 3463, announced by RFC 2034).
//!
//! A reply is one or more lines that share a three-digit code. Every line
//! but the last has `-` after the code, the last has a space or nothing:
//!
//! ```text
//! 250-mail.example.test
//! 250-AUTH XOAUTH2 OAUTHBEARER
//! 250 8BITMIME
//! ```

use std::fmt;

use crate::auth::error::excerpt;

/// Maximum characters of a reply's text in `Display`, so that a broken or
/// hostile server cannot flood an error message or the log.
const MAX_DISPLAY_CHARS: usize = 1000;

/// Maximum lines of one reply. EHLO replies have about 10 lines, and a
/// server that sends more than this is broken or hostile.
const MAX_LINES: usize = 200;

/// One server reply: its code, the enhanced status code that starts its
/// first line, if any, and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code, such as 250 or 535.
    pub code: u16,
    /// Enhanced status code, such as `5.7.139`, when the reply starts with
    /// one whose class matches the reply code.
    pub enhanced: Option<String>,
    /// Text of each line after the code, without the enhanced status code
    /// when a line repeats it.
    pub lines: Vec<String>,
}

impl Reply {
    /// Returns the text of all lines joined by spaces.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// Returns whether the code is 2xx, a positive completion.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// Returns whether the code is 4xx, a transient negative completion
    /// that the same command may overcome later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// Returns whether the code is 5xx, a permanent negative completion.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// Returns whether the enhanced status code is `code`, such as `5.7.139`.
    pub fn has_enhanced(&self, code: &str) -> bool {
        self.enhanced.as_deref() == Some(code)
    }
}

/// Writes the reply on one line as the server sent it, such as
/// `535 5.7.139 Authentication unsuccessful`, with its text cut after
/// 1000 characters.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enhanced) = &self.enhanced {
            write!(f, " {enhanced}")?;
        }
        let text = excerpt(&self.text(), MAX_DISPLAY_CHARS);
        match text.is_empty() {
            true => Ok(()),
            false => write!(f, " {text}"),
        }
    }
}

/// Collects the lines of one reply as they arrive.
#[derive(Debug, Default)]
pub(crate) struct ReplyLines {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyLines {
    /// Adds one line without its CRLF. Returns the reply after its last
    /// line, or the reason that the line breaks RFC 5321 section 4.2.
    pub(crate) fn push(&mut self, line: &str) -> Result<Option<Reply>, String> {
        let (code, last, text) = split_line(line)?;
        if self.code.is_some_and(|first| first != code) {
            return Err(format!("reply line {line:?} changes the code of the reply"));
        }
        if self.lines.len() >= MAX_LINES {
            return Err(format!("reply has more than {MAX_LINES} lines"));
        }
        self.code = Some(code);
        self.lines.push(text.to_owned());

        match last {
            true => Ok(Some(build(code, std::mem::take(&mut self.lines)))),
            false => Ok(None),
        }
    }
}

/// Splits a reply line into its code, whether it is the last line, and
/// its text.
fn split_line(line: &str) -> Result<(u16, bool, &str), String> {
    let invalid = || format!("invalid reply line {line:?}");
    let digits = line
        .get(..3)
        .filter(|code| code.bytes().all(|b| b.is_ascii_digit()));
    let code: u16 = digits.ok_or_else(invalid)?.parse().map_err(|_| invalid())?;
    if !(200..600).contains(&code) {
        return Err(invalid());
    }

    match line.as_bytes().get(3) {
        None => Ok((code, true, "")),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(invalid()),
    }
}

fn build(code: u16, mut lines: Vec<String>) -> Reply {
    let enhanced = lines
        .first()
        .and_then(|first| enhanced_code(code, first))
        .map(str::to_owned);

    // Servers such as Microsoft 365 repeat the enhanced code on each line.
    if let Some(enhanced) = &enhanced {
        for line in &mut lines {
            if let Some(rest) = line.strip_prefix(enhanced.as_str())
                && (rest.is_empty() || rest.starts_with(' '))
            {
                *line = rest.trim_start().to_owned();
            }
        }
    }
    Reply {
        code,
        enhanced,
        lines,
    }
}

/// Returns the enhanced status code `class.subject.detail` at the start
/// of `text`. RFC 3463 section 2 allows 1 to 3 digits for the subject and
/// detail, and RFC 2034 section 4 requires the class to match the reply.
fn enhanced_code(code: u16, text: &str) -> Option<&str> {
    let word = text.split_whitespace().next()?;
    let mut parts = word.split('.');
    let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || class != (code / 100).to_string() || code / 100 == 3 {
        return None;
    }

    let number =
        |part: &str| (1..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit());
    (number(subject) && number(detail)).then_some(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<Reply, String> {
        let mut collected = ReplyLines::default();
        for (index, line) in lines.iter().enumerate() {
            if let Some(reply) = collected.push(line)? {
                assert_eq!(index, lines.len() - 1, "reply ended early");
                return Ok(reply);
            }
        }
        Err("no last line".to_owned())
    }

    #[test]
    fn multiline_ehlo_reply() {
        let reply = parse(&["250-mail.example.test", "250-AUTH XOAUTH2", "250 8BITMIME"]).unwrap();

        assert_eq!(reply.code, 250);
        assert_eq!(reply.enhanced, None);
        assert_eq!(
            reply.lines,
            ["mail.example.test", "AUTH XOAUTH2", "8BITMIME"]
        );
    }

    #[test]
    fn enhanced_code_split_off() {
        let text = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled";

        let reply = parse(&[text]).unwrap();

        assert_eq!(reply.code, 535);
        assert!(reply.has_enhanced("5.7.139"));
        assert!(reply.text().starts_with("Authentication unsuccessful"));
        assert!(reply.is_permanent());
        assert_eq!(reply.to_string(), text);
    }

    #[test]
    fn repeated_enhanced_code_removed() {
        let reply = parse(&[
            "554-5.2.252 SendAsDenied;",
            "554 5.2.252 Cannot submit message.",
        ])
        .unwrap();

        assert_eq!(reply.text(), "SendAsDenied; Cannot submit message.");
    }

    #[test]
    fn enhanced_class_must_match_code() {
        assert_eq!(parse(&["250 5.0.0 odd"]).unwrap().enhanced, None);
        assert_eq!(
            parse(&["250 2.1.0 Sender OK"]).unwrap().enhanced.as_deref(),
            Some("2.1.0")
        );
        assert_eq!(
            parse(&["432 4.3.2 limit"]).unwrap().enhanced.as_deref(),
            Some("4.3.2")
        );
    }

    #[test]
    fn challenge_text_is_no_enhanced_code() {
        let reply = parse(&["334 eyJzdGF0dXMiOiI0MDEifQ=="]).unwrap();

        assert_eq!(reply.enhanced, None);
        assert_eq!(reply.text(), "eyJzdGF0dXMiOiI0MDEifQ==");
    }

    #[test]
    fn malformed_enhanced_codes_ignored() {
        for text in [
            "550 5.1 short",
            "550 5.1.1234 long detail",
            "550 5.x.1 letters",
        ] {
            assert_eq!(parse(&[text]).unwrap().enhanced, None, "{text}");
        }
    }

    #[test]
    fn display_cuts_long_text() {
        let line = format!("554 5.2.0 {}", "x".repeat(5000));

        let shown = parse(&[&line]).unwrap().to_string();

        assert!(
            shown.chars().count() <= MAX_DISPLAY_CHARS + 12,
            "{}",
            shown.len()
        );
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn bare_code_is_last_line() {
        let reply = parse(&["250"]).unwrap();

        assert_eq!(reply.code, 250);
        assert_eq!(reply.text(), "");
        assert_eq!(reply.to_string(), "250");
    }

    #[test]
    fn invalid_lines_rejected() {
        for line in [
            "",
            "25",
            "abc text",
            "250x",
            "999 no such class",
            "150 too low",
        ] {
            assert!(parse(&[line]).is_err(), "{line:?}");
        }
    }

    #[test]
    fn code_change_rejected() {
        let error = parse(&["250-first", "251 second"]).unwrap_err();

        assert!(error.contains("changes the code"), "{error}");
    }

    #[test]
    fn too_many_lines_rejected() {
        let mut collected = ReplyLines::default();
        for _ in 0..MAX_LINES {
            assert_eq!(collected.push("250-more"), Ok(None));
        }

        assert!(collected.push("250 last").is_err());
    }

    #[test]
    fn classes() {
        let reply = |code| Reply {
            code,
            enhanced: None,
            lines: Vec::new(),
        };

        assert!(reply(250).is_positive());
        assert!(reply(451).is_transient());
        assert!(!reply(451).is_permanent());
        assert!(reply(554).is_permanent());
        assert!(!reply(354).is_positive());
    }
}
