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

// Deferred transfer decoding must give the same document as the normal
// parse wherever it is taken.

/// Builds `raw` both ways with attachment bytes included, and returns
/// whether the deferred way was taken. A mail on which the normal parse
/// panics counts as not taken.
fn both_ways(raw: &[u8]) -> (bool, serde_json::Value, serde_json::Value) {
    let options = DocumentOptions {
        attachment_bytes: 1 << 20,
        ..DocumentOptions::default()
    };
    let value = |doc: &InboundMail| serde_json::to_value(doc).unwrap();
    match build_both_ways(&fetched(raw), &options) {
        Some((deferred, normal)) if !codes(&normal).contains(&WarningCode::ParsePanic) => {
            (true, value(&deferred), value(&normal))
        }
        _ => (false, serde_json::Value::Null, serde_json::Value::Null),
    }
}

fn base64_lines(bytes: &[u8], width: usize, line_end: &str) -> String {
    BASE64
        .encode(bytes)
        .as_bytes()
        .chunks(width)
        .map(|line| format!("{}{line_end}", std::str::from_utf8(line).unwrap()))
        .collect()
}

/// Returns a multipart/mixed mail of `parts`, each its header lines and
/// body.
fn mixed(parts: &[(&str, String)]) -> Vec<u8> {
    let mut raw = String::from(
        "From: a@example.test\r\nMessage-ID: <d@example.test>\r\nSubject: parts\r\n\
         Content-Type: multipart/mixed; boundary=\"zz\"\r\n\r\npreamble\r\n",
    );
    for (headers, body) in parts {
        raw.push_str(&format!("--zz\r\n{headers}\r\n\r\n{body}\r\n"));
    }
    raw.push_str("--zz--\r\n");
    raw.into_bytes()
}

fn attachment(cte: &str, body: String) -> (&'static str, String) {
    let headers = match cte {
        "base64" => {
            "Content-Type: application/octet-stream\r\n\
             Content-Disposition: attachment; filename=\"a.bin\"\r\n\
             Content-Transfer-Encoding: base64"
        }
        _ => {
            "Content-Type: application/octet-stream\r\n\
             Content-Disposition: attachment; filename=\"a.bin\"\r\n\
             Content-Transfer-Encoding: quoted-printable"
        }
    };
    (headers, body)
}

const TEXT_7BIT: &str =
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit";

fn deferred_cases() -> Vec<(&'static str, Vec<u8>)> {
    let text = (
        "Content-Type: text/plain; charset=utf-8".to_owned(),
        "hello".to_owned(),
    );
    let html_qp = (
        "Content-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable",
        "<p>caf=E9 =\r\nna=EFve</p>".to_owned(),
    );
    let text_b64 = (
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64",
        base64_lines("grüße aus Köln\r\n".as_bytes(), 76, "\r\n"),
    );
    vec![
        (
            "canonical base64 attachment",
            mixed(&[
                (TEXT_7BIT, text.1.clone()),
                attachment("base64", base64_lines(&noise(1, 3000), 76, "\r\n")),
            ]),
        ),
        (
            "one and two pad characters",
            mixed(&[
                attachment("base64", base64_lines(&noise(2, 3001), 76, "\r\n")),
                attachment("base64", base64_lines(&noise(3, 3002), 76, "\r\n")),
            ]),
        ),
        (
            "encoded text and html parts",
            mixed(&[
                text_b64,
                html_qp,
                attachment("base64", base64_lines(&noise(4, 999), 64, "\n")),
            ]),
        ),
        (
            "base64 with spaces and a missing pad",
            mixed(&[
                attachment("base64", base64_lines(&noise(5, 300), 76, " \r\n")),
                attachment("base64", "aGVsbG8\r\n".to_owned()),
            ]),
        ),
        (
            "quoted-printable attachment",
            mixed(&[attachment("qp", "a=00b=FF=\r\nc  \r\nd".to_owned())]),
        ),
        (
            "single-part base64 message",
            format!(
                "From: a@example.test\r\nContent-Type: application/pdf\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{}",
                base64_lines(&noise(6, 500), 76, "\r\n")
            )
            .into_bytes(),
        ),
        (
            "boundary glued to the base64",
            b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\
              Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n\
              aGVsbG8=--q--\r\n"
                .to_vec(),
        ),
    ]
}

#[test]
fn deferred_decoding_gives_the_normal_document() {
    for (name, raw) in deferred_cases() {
        let (taken, deferred, normal) = both_ways(&raw);
        assert!(taken, "{name}: deferred decoding was not taken");
        assert_eq!(deferred, normal, "{name}");
    }
}

#[test]
fn deferred_decoding_leaves_what_it_cannot_match() {
    let nested = mixed(&[(
        "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64",
        base64_lines(
            b"From: b@example.test\r\nSubject: inner\r\n\r\nhi\r\n",
            76,
            "\r\n",
        ),
    )]);
    let twice = mixed(&[(
        "Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Transfer-Encoding: 7bit",
        "aGVsbG8=".to_owned(),
    )]);
    let invalid = mixed(&[attachment("base64", "aGVs!bG8=\r\n".to_owned())]);
    let mut unclosed = mixed(&[attachment("base64", "aGVsbG8=".to_owned())]);
    unclosed.truncate(unclosed.len() - "--zz--\r\n".len());

    for (name, raw) in [
        ("nested message", nested),
        ("two transfer encodings", twice),
        ("invalid base64", invalid),
        ("no closing boundary", unclosed),
    ] {
        let (taken, _, _) = both_ways(&raw);
        assert!(!taken, "{name}: deferred decoding was taken");
    }
}

#[test]
fn deferred_decoding_matches_after_byte_changes() {
    // Every changed byte either leaves the deferred way or gives the
    // same document as the normal parse.
    let (_, raw) = deferred_cases().swap_remove(2);
    let (mut taken, mut left) = (0, 0);
    for at in (0..raw.len()).step_by(3) {
        for byte in [b'=', b'-', b' ', b'\n', b'!', b'A', 0xE9] {
            let mut changed = raw.clone();
            changed[at] = byte;
            let (deferred_taken, deferred, normal) = both_ways(&changed);
            if deferred_taken {
                assert_eq!(deferred, normal, "byte {byte} at {at}");
                taken += 1;
            } else {
                left += 1;
            }
        }
    }
    assert!(taken > 0, "no change took the deferred way");
    assert!(left > 0, "every change took the deferred way");
}

#[test]
fn deferred_decoding_matches_on_the_corpus() {
    // The fuzz corpus and the inbound fixtures hold odd and broken mail.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for dir in ["fuzz/corpus/inbound_document", "tests/fixtures/inbound"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if !path.is_file() || path.extension().is_some_and(|ext| ext == "json") {
                continue;
            }
            let raw = std::fs::read(&path).unwrap();
            let (taken, deferred, normal) = both_ways(&raw);
            if taken {
                assert_eq!(deferred, normal, "{}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked > 10, "only {checked} mails took the deferred way");
}

#[test]
fn large_nested_messages_keep_outer_mail() {
    // Two quoted-printable message/rfc822 parts, the first holding another
    // message/rfc822: parsed with the encodings unseen, mail-parser
    // returned the inner message as the mail.
    let padding = "x".repeat(DEFERRED_MIN_BYTES);
    let raw = format!(
        "From: a@example.test\r\nSubject: outer\r\n\
         Content-Type: multipart/mixed; boundary=b\r\n\r\n\
         --b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
         Subject: inner\r\nContent-Type: message/rfc822\r\n\r\nSubject: innermost\r\n\r\n{padding}\r\n\
         --b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
         Subject: x\r\n\r\nbody\r\n--b--\r\n"
    );

    let doc = build(&fetched(raw.as_bytes()), &DocumentOptions::default());

    assert_eq!(doc.subject.as_deref(), Some("outer"));
    assert_eq!(doc.attachments.len(), 2);
}
