//! Unit tests of the document builder: metadata, size caps, panics and
//! inputs that are not mail.

use super::*;

const PLAIN: &[u8] = b"From: a@example.test\r\nMessage-ID: <p@example.test>\r\n\
    Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nhello\r\n";

fn fetched(raw: &[u8]) -> FetchedMail<'_> {
    FetchedMail {
        account: "support",
        mailbox: "INBOX",
        uidvalidity: 3,
        uid: 11,
        flags: vec!["\\Seen".to_owned()],
        received_at: Some(DateTime::parse_from_rfc3339("2024-03-10T09:15:00+01:00").unwrap()),
        size: None,
        raw,
    }
}

fn codes(doc: &InboundMail) -> Vec<WarningCode> {
    doc.warnings.iter().map(|warning| warning.code).collect()
}

/// Deterministic pseudo-random bytes (a 64-bit linear congruential
/// generator), so a failure can be reproduced.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as u8
        })
        .collect()
}

#[test]
fn panic_keeps_metadata() {
    let options = DocumentOptions {
        raw_bytes: 1024,
        ..DocumentOptions::default()
    };

    let doc = build_with(&fetched(PLAIN), &options, |doc, _| {
        doc.subject = Some("half done".to_owned());
        panic!("parser bug");
    });

    assert_eq!(codes(&doc), [WarningCode::ParsePanic]);
    assert!(doc.has_warning(WarningCode::ParsePanic));
    assert!(!doc.has_warning(WarningCode::ParseFailed));
    assert!(doc.warnings[0].message.contains("parser bug"));
    assert_eq!(
        doc.subject, None,
        "fields of the failed attempt are dropped"
    );
    assert_eq!(doc.id, document_id("support", "INBOX", 3, 11));
    assert_eq!(doc.content_sha256, sha256_hex(PLAIN));
    assert!(doc.raw_base64.is_some());
}

#[test]
fn panic_falls_back_to_headers() {
    let doc = build_with(
        &fetched(PLAIN),
        &DocumentOptions::default(),
        |doc, headers_only| {
            doc.subject = Some(format!("headers only: {headers_only}"));
            assert!(headers_only, "MIME structure bug");
        },
    );

    assert_eq!(codes(&doc), [WarningCode::ParsePanic]);
    assert!(doc.warnings[0].message.contains("MIME structure bug"));
    assert!(doc.warnings[0].message.contains("header section"));
    assert_eq!(doc.subject.as_deref(), Some("headers only: true"));
    assert!(!doc.truncated);
}

#[test]
fn metadata_comes_from_imap() {
    let doc = build(&fetched(PLAIN), &DocumentOptions::default());

    assert_eq!(doc.account, "support");
    assert_eq!(doc.mailbox, "INBOX");
    assert_eq!((doc.uidvalidity, doc.uid), (3, 11));
    assert_eq!(doc.flags, ["\\Seen"]);
    assert_eq!(doc.received_at.as_deref(), Some("2024-03-10T08:15:00Z"));
    assert_eq!(doc.size, PLAIN.len() as u64);
    assert_eq!(doc.text.as_deref(), Some("hello"));
    assert!(doc.warnings.is_empty(), "{:?}", doc.warnings);
}

#[test]
fn imap_size_wins_over_length() {
    let mail = FetchedMail {
        size: Some(4096),
        received_at: None,
        ..fetched(PLAIN)
    };

    let doc = build(&mail, &DocumentOptions::default());

    assert_eq!(doc.size, 4096);
    assert_eq!(doc.received_at, None);
}

#[test]
fn raw_cap_is_inclusive() {
    let len = PLAIN.len() as u64;
    for (raw_bytes, included) in [(0, false), (len - 1, false), (len, true), (len + 1, true)] {
        let options = DocumentOptions {
            raw_bytes,
            ..DocumentOptions::default()
        };

        let doc = build(&fetched(PLAIN), &options);

        assert_eq!(
            doc.raw_base64.is_some(),
            included,
            "raw_bytes = {raw_bytes}"
        );
    }
}

#[test]
fn attachment_cap_is_inclusive() {
    let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
        Content-Type: application/octet-stream\r\n\r\n0123456789\r\n--b--\r\n";
    for (attachment_bytes, included) in [(0, false), (9, false), (10, true)] {
        let options = DocumentOptions {
            attachment_bytes,
            ..DocumentOptions::default()
        };

        let doc = build(&fetched(raw), &options);

        let attachment = &doc.attachments[0];
        assert_eq!(attachment.size, 10);
        assert_eq!(
            attachment.content_base64.is_some(),
            included,
            "{attachment_bytes}"
        );
    }
}

#[test]
fn max_message_bytes_is_inclusive() {
    let len = PLAIN.len() as u64;
    for (max_message_bytes, truncated) in [(len, false), (len - 1, true)] {
        let options = DocumentOptions {
            max_message_bytes,
            raw_bytes: len,
            ..DocumentOptions::default()
        };

        let doc = build(&fetched(PLAIN), &options);

        assert_eq!(
            doc.truncated, truncated,
            "max_message_bytes = {max_message_bytes}"
        );
        assert_eq!(doc.text.is_none(), truncated);
        assert_eq!(doc.raw_base64.is_none(), truncated);
        assert_eq!(doc.message_id.as_deref(), Some("p@example.test"));
        assert_eq!(
            codes(&doc).contains(&WarningCode::MessageTruncated),
            truncated
        );
    }
}

#[test]
fn header_section_with_real_size_truncates_alike() {
    let end = PLAIN.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let options = DocumentOptions {
        max_message_bytes: PLAIN.len() as u64 - 1,
        raw_bytes: 1024,
        ..DocumentOptions::default()
    };
    let size = Some(PLAIN.len() as u32);
    let whole = FetchedMail {
        size,
        ..fetched(PLAIN)
    };
    let header = FetchedMail {
        size,
        ..fetched(&PLAIN[..end])
    };

    let from_whole = build(&whole, &options);
    let mut from_header = build(&header, &options);

    assert!(from_header.truncated);
    assert_eq!(from_header.size, PLAIN.len() as u64);
    assert!(from_header.raw_base64.is_none());
    assert_eq!(from_header.content_sha256, sha256_hex(&PLAIN[..end]));
    // Only the hash differs, because it covers the bytes fetched.
    from_header.content_sha256 = from_whole.content_sha256.clone();
    assert_eq!(from_header, from_whole);
}

#[test]
fn small_size_cannot_hide_large_body() {
    let options = DocumentOptions {
        max_message_bytes: PLAIN.len() as u64 - 1,
        ..DocumentOptions::default()
    };
    let mail = FetchedMail {
        size: Some(10),
        ..fetched(PLAIN)
    };

    let doc = build(&mail, &options);

    assert!(doc.truncated);
    assert_eq!(doc.size, 10);
}

#[test]
fn empty_message_is_published() {
    let doc = build(&fetched(b""), &DocumentOptions::default());

    assert_eq!(codes(&doc), [WarningCode::ParseFailed]);
    assert_eq!(doc.text, None);
    assert_eq!(doc.size, 0);
}

#[test]
fn random_bytes_never_panic() {
    for seed in 0..300 {
        let raw = noise(seed, (seed as usize * 37) % 3000);

        let doc = build(&fetched(&raw), &DocumentOptions::default());

        assert!(
            !codes(&doc).contains(&WarningCode::ParsePanic),
            "seed {seed}"
        );
        assert!(serde_json::from_slice::<serde_json::Value>(&doc.to_json()).is_ok());
    }
}

#[test]
fn deep_nesting_is_read() {
    let mut raw = Vec::new();
    for level in 0..200 {
        raw.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n")
                .as_bytes(),
        );
    }
    raw.extend_from_slice(b"Content-Type: text/plain\r\n\r\ndeep\r\n");
    for _ in 0..200 {
        raw.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
    }

    let doc = build(&fetched(&raw), &DocumentOptions::default());

    assert!(!codes(&doc).contains(&WarningCode::ParsePanic));
    assert_eq!(doc.content_sha256, sha256_hex(&raw));
}

#[test]
fn body_without_headers_keeps_text() {
    let doc = build(
        &fetched(b"\r\njust a line of text\r\n"),
        &DocumentOptions::default(),
    );

    assert_eq!(doc.text.as_deref(), Some("just a line of text"));
}

#[test]
fn text_without_header_section_is_kept() {
    let doc = build(
        &fetched(b"no colon on this line\r\n"),
        &DocumentOptions::default(),
    );

    assert_eq!(
        doc.text.as_deref(),
        Some("no colon on this line"),
        "{:?}",
        doc.warnings
    );
}
