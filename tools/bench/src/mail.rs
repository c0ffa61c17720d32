//! Generated benchmark mails and broker documents.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const WORDS: [&str; 16] = [
    "invoice", "delivery", "order", "status", "customer", "account", "payment", "shipment",
    "request", "support", "update", "schedule", "meeting", "report", "ticket", "question",
];

/// Builds mail number `index` of a run: a plain-text mail of about
/// `mail_bytes` bytes, or, when `attachment_bytes` is above zero, a
/// multipart/mixed mail with that text and a base64 attachment of
/// `attachment_bytes` bytes before encoding.
pub fn message(
    index: usize,
    run: &str,
    user: &str,
    mail_bytes: usize,
    attachment_bytes: usize,
) -> Vec<u8> {
    let domain = user
        .rsplit_once('@')
        .map_or("example.test", |(_, domain)| domain);
    let mut mail = format!(
        "From: Benchmark Sender <sender@{domain}>\r\n\
         To: <{user}>\r\n\
         Subject: Benchmark mail {index} of run {run}\r\n\
         Date: Fri, 04 Dec 2026 12:00:00 +0000\r\n\
         Message-ID: <{index}.{run}@bench.{domain}>\r\n\
         MIME-Version: 1.0\r\n"
    );
    let boundary = format!("bench-{run}-{index}");
    if attachment_bytes > 0 {
        mail.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
             --{boundary}\r\n"
        ));
    }
    mail.push_str(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n",
    );
    append_text(&mut mail, index, mail_bytes);

    if attachment_bytes > 0 {
        mail.push_str(&format!(
            "--{boundary}\r\n\
             Content-Type: application/octet-stream\r\n\
             Content-Disposition: attachment; filename=\"data-{index}.bin\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        ));
        let encoded = STANDARD.encode(pseudo_random_bytes(index as u64, attachment_bytes));
        for line in encoded.as_bytes().chunks(76) {
            mail.push_str(std::str::from_utf8(line).unwrap_or_default());
            mail.push_str("\r\n");
        }
        mail.push_str(&format!("--{boundary}--\r\n"));
    }
    mail.into_bytes()
}

/// Builds a JSON document of exactly `size` bytes (at least its `id` field)
/// whose `id` is `id`.
pub fn document(id: &str, size: usize) -> Vec<u8> {
    let prefix = format!("{{\"id\":\"{id}\",\"text\":\"");
    let suffix = "\"}";
    let padding = size.saturating_sub(prefix.len() + suffix.len());
    let mut document = String::with_capacity(size);
    document.push_str(&prefix);
    let mut word = 0;
    while document.len() < prefix.len() + padding {
        let remaining = prefix.len() + padding - document.len();
        let next = WORDS[word % WORDS.len()];
        word += 1;
        if remaining > next.len() {
            document.push_str(next);
            document.push(' ');
        } else {
            document.push_str(&"x".repeat(remaining));
        }
    }
    document.push_str(suffix);
    document.into_bytes()
}

/// Builds a plain-text body of at least `bytes` bytes: CRLF-ended lines of
/// at most 80 ASCII characters, which mailbridge sends as 7bit.
pub fn body_text(index: usize, bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + 80);
    append_text(&mut text, index, bytes);
    text
}

/// Appends lines of words until `mail` is at least `target` bytes long.
fn append_text(mail: &mut String, index: usize, target: usize) {
    let mut word = index;
    let mut line = String::new();
    while mail.len() < target {
        line.clear();
        while line.len() < 70 {
            line.push_str(WORDS[word % WORDS.len()]);
            line.push(' ');
            word = word.wrapping_mul(31).wrapping_add(7);
        }
        mail.push_str(line.trim_end());
        mail.push_str("\r\n");
    }
}

/// Bytes from a xorshift generator, so attachments neither compress nor
/// repeat between mails.
fn pseudo_random_bytes(seed: u64, size: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(size + 8);
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_message_reaches_size() {
        let mail = message(7, "r1", "bench@example.test", 5120, 0);
        assert!(mail.len() >= 5120);
        assert!(mail.len() < 5120 + 80);
        assert!(mail.starts_with(b"From: Benchmark Sender <sender@example.test>\r\n"));
    }

    #[test]
    fn attachment_message_has_encoded_part() {
        let mail = message(1, "r1", "bench@example.test", 2048, 3000);
        let text = String::from_utf8(mail).unwrap();
        assert!(text.contains("Content-Transfer-Encoding: base64"));
        assert!(text.ends_with("--bench-r1-1--\r\n"));
        assert!(text.len() > 2048 + 4000);
    }

    #[test]
    fn document_has_exact_size() {
        for size in [100, 5000, 7777] {
            let document = document("abc", size);
            assert_eq!(document.len(), size);
            let value: serde_json::Value = serde_json::from_slice(&document).unwrap();
            assert_eq!(value["id"], "abc");
        }
    }
}
