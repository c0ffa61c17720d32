//! Replacement of 8-bit bytes outside literals in server output.
//!
//! Without `UTF8=ACCEPT`, RFC 3501 allows 8-bit bytes only inside literals,
//! and imap-proto 0.16 rejects them anywhere else. Dovecot 2.3 still puts
//! raw UTF-8 into response texts, such as `NO Mailbox doesn't exist:
//! Entwürfe`, and a response that fails to parse stays in async-imap's
//! buffer and breaks the session. So such bytes become `?` before parsing,
//! which only changes text that is shown, while message literals pass
//! unchanged.

/// Maximum length of a line end that announces a literal, `{n}` with CR: `{`, 20
/// digits, `}` and CR.
const MAX_TAIL: usize = 23;

/// Scanner state that carries over from one read to the next.
#[derive(Debug, Default)]
pub(crate) struct Sanitizer {
    /// Bytes of the current literal not yet read.
    literal: u64,
    /// The end of the current line, where `{n}` announces a literal.
    tail: Vec<u8>,
}

impl Sanitizer {
    /// Replaces 8-bit bytes of `bytes` outside literals with `?`.
    pub(crate) fn apply(&mut self, bytes: &mut [u8]) {
        let mut index = 0;
        while index < bytes.len() {
            if self.literal > 0 {
                let rest = (bytes.len() - index) as u64;
                let skipped = self.literal.min(rest);
                self.literal -= skipped;
                index += skipped as usize;
                continue;
            }

            // Up to the next line feed, only 8-bit bytes change and only the
            // line's end is kept.
            let rest = &mut bytes[index..];
            let end = memchr::memchr(b'\n', rest);
            let length = end.unwrap_or(rest.len());
            let line = &mut rest[..length];
            for byte in line.iter_mut().filter(|byte| **byte >= 0x80) {
                *byte = b'?';
            }
            self.keep_tail(line);
            match end {
                Some(end) => {
                    self.literal = literal_length(&self.tail);
                    self.tail.clear();
                    index += end + 1;
                }
                None => index = bytes.len(),
            }
        }
    }

    /// Appends `line` to the kept end of the current line, of which only
    /// the last [`MAX_TAIL`] bytes can announce a literal.
    fn keep_tail(&mut self, line: &[u8]) {
        let line = &line[line.len().saturating_sub(MAX_TAIL)..];
        let excess = (self.tail.len() + line.len()).saturating_sub(MAX_TAIL);
        self.tail.drain(..excess);
        self.tail.extend_from_slice(line);
    }
}

/// Returns the length of the literal that the line end `tail` announces
/// (`{n}`, or `{n+}` of RFC 7888), or 0.
fn literal_length(tail: &[u8]) -> u64 {
    let line = tail.strip_suffix(b"\r").unwrap_or(tail);
    let Some(inner) = line.strip_suffix(b"}") else {
        return 0;
    };
    let inner = inner.strip_suffix(b"+").unwrap_or(inner);
    let Some(open) = inner.iter().rposition(|byte| *byte == b'{') else {
        return 0;
    };

    let digits = &inner[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sanitized(chunks: &[&[u8]]) -> Vec<u8> {
        let mut sanitizer = Sanitizer::default();
        let mut output = Vec::new();
        for chunk in chunks {
            let mut chunk = chunk.to_vec();
            sanitizer.apply(&mut chunk);
            output.extend(chunk);
        }
        output
    }

    #[test]
    fn utf8_in_text_replaced() {
        let line = "M0002 NO Mailbox doesn't exist: Gibt es nicht ä\r\n".as_bytes();

        assert_eq!(
            sanitized(&[line]),
            b"M0002 NO Mailbox doesn't exist: Gibt es nicht ??\r\n"
        );
    }

    #[test]
    fn literal_kept() {
        let response = "* 1 FETCH (UID 4 BODY[] {6}\r\nGrüß)\r\n".as_bytes();

        assert_eq!(sanitized(&[response]), response);
    }

    #[test]
    fn literal_split_across_reads_kept() {
        let first = "* 1 FETCH (BODY[] {1".as_bytes();
        let second = "0}\r\nüüüüü".as_bytes();
        let third = ") ä\r\n".as_bytes();

        let output = sanitized(&[first, second, third]);

        assert_eq!(output, "* 1 FETCH (BODY[] {10}\r\nüüüüü) ??\r\n".as_bytes());
    }

    #[test]
    fn non_synchronizing_literal_kept() {
        let response = "* LIST () \"/\" {2+}\r\nÄ\r\n".as_bytes();

        assert_eq!(sanitized(&[response]), response);
    }

    #[test]
    fn braces_in_text_are_no_literal() {
        let line = "* OK {x} ä\r\n* OK ü\r\n".as_bytes();

        assert_eq!(sanitized(&[line]), b"* OK {x} ??\r\n* OK ??\r\n");
    }

    #[test]
    fn long_line_split_anywhere_announces_its_literal() {
        let mut response = b"* 1 FETCH (X-TEXT \"".to_vec();
        response.extend(std::iter::repeat_n(b'a', 100));
        response.extend("ä\" BODY[] {4}\r\nüü) ö\r\n".as_bytes());
        let expected = {
            let mut line = b"* 1 FETCH (X-TEXT \"".to_vec();
            line.extend(std::iter::repeat_n(b'a', 100));
            line.extend("??\" BODY[] {4}\r\nüü) ??\r\n".as_bytes());
            line
        };

        for split in 0..=response.len() {
            let (first, second) = response.split_at(split);
            assert_eq!(sanitized(&[first, second]), expected, "split at {split}");
        }
    }

    #[test]
    fn ascii_unchanged() {
        let line = b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n";

        assert_eq!(sanitized(&[line]), line);
    }
}
