//! Golden tests of the inbound document. Each `NAME.eml` under
//! `tests/fixtures/inbound` is built with fixed IMAP metadata and compared
//! with `NAME.json` next to it. `NAME.options.json`, when present, sets
//! the size caps. On a mismatch the actual document is written to
//! `NAME.json.failed`, so that a reviewed change can be accepted by
//! renaming the file.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::DateTime;
use mailbridge::mail::{self, DocumentOptions, FetchedMail, InboundMail, WarningCode};
use serde::Deserialize;
use serde_json::Value;

/// Size caps of one fixture. Absent keys keep the defaults.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FixtureOptions {
    attachment_bytes: Option<u64>,
    raw_bytes: Option<u64>,
    max_message_bytes: Option<u64>,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inbound")
}

fn fixtures() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(fixture_dir())
        .expect("fixture directory is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .collect();
    paths.sort();
    paths
}

fn options_for(eml: &Path) -> DocumentOptions {
    let path = eml.with_extension("options.json");
    let fixture: FixtureOptions = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).expect("valid options file"),
        Err(_) => FixtureOptions::default(),
    };
    let defaults = DocumentOptions::default();

    DocumentOptions {
        attachment_bytes: fixture
            .attachment_bytes
            .unwrap_or(defaults.attachment_bytes),
        raw_bytes: fixture.raw_bytes.unwrap_or(defaults.raw_bytes),
        max_message_bytes: fixture
            .max_message_bytes
            .unwrap_or(defaults.max_message_bytes),
    }
}

/// Builds the document of `raw` with the metadata every fixture shares.
fn build(raw: &[u8], options: &DocumentOptions) -> InboundMail {
    let fetched = FetchedMail {
        account: "support",
        mailbox: "INBOX",
        uidvalidity: 1_720_000_000,
        uid: 42,
        flags: vec!["\\Seen".to_owned(), "$Forwarded".to_owned()],
        received_at: Some(DateTime::parse_from_rfc3339("2024-03-10T09:15:00+01:00").unwrap()),
        size: None,
        raw,
    };
    mail::build(&fetched, options)
}

fn build_fixture(name: &str) -> InboundMail {
    let eml = fixture_dir().join(format!("{name}.eml"));
    let raw = fs::read(&eml).expect("fixture exists");
    build(&raw, &options_for(&eml))
}

fn codes(doc: &InboundMail) -> Vec<WarningCode> {
    doc.warnings.iter().map(|warning| warning.code).collect()
}

#[test]
fn documents_match_golden_files() {
    let mut ran = 0;
    let mut failed = Vec::new();

    for eml in fixtures() {
        let raw = fs::read(&eml).expect("fixture is readable");
        let doc = build(&raw, &options_for(&eml));
        let json = doc.to_json();
        let actual: Value = serde_json::from_slice(&json).expect("output is JSON");
        let round_trip: InboundMail = serde_json::from_slice(&json).expect("output deserializes");
        assert_eq!(round_trip, doc, "{} does not round-trip", eml.display());

        let expected_path = eml.with_extension("json");
        let failed_path = eml.with_extension("json.failed");
        let expected: Option<Value> = fs::read(&expected_path)
            .ok()
            .map(|bytes| serde_json::from_slice(&bytes).expect("golden file is JSON"));
        if expected.as_ref() == Some(&actual) {
            let _ = fs::remove_file(&failed_path);
        } else {
            // Written from the struct, so fields keep the schema order.
            let pretty = serde_json::to_string_pretty(&doc).unwrap() + "\n";
            fs::write(&failed_path, pretty).expect("write .failed file");
            failed.push(eml.file_name().unwrap().to_string_lossy().into_owned());
        }
        ran += 1;
    }

    assert!(ran > 0, "no fixture found in {}", fixture_dir().display());
    assert!(
        failed.is_empty(),
        "{} of {ran} fixtures differ from their golden file (see *.json.failed): {failed:?}",
        failed.len()
    );
}

#[test]
fn every_fixture_prefix_builds() {
    // Cut-off downloads and broken MIME must never panic or lose the
    // metadata, whatever byte the message ends at.
    let mut built = 0;
    for eml in fixtures() {
        let raw = fs::read(&eml).unwrap();
        let step = (raw.len() / 150).max(1);
        for end in (0..=raw.len()).step_by(step) {
            let doc = build(&raw[..end], &DocumentOptions::default());
            assert_eq!(doc.uid, 42);
            assert!(
                !codes(&doc).contains(&WarningCode::ParsePanic),
                "{eml:?} at {end}"
            );
            assert!(std::str::from_utf8(&doc.to_json()).is_ok());
            built += 1;
        }
    }
    assert!(built > 1000, "only {built} prefixes built");
}

#[test]
fn c18_keeps_corrupt_forward() {
    let doc = build_fixture("c18");

    assert_eq!(doc.text.as_deref(), Some("see the attached message"));
    assert_eq!(doc.attachments.len(), 1);
    let forwarded = &doc.attachments[0];
    assert_eq!(forwarded.filename.as_deref(), Some("forwarded.eml"));
    assert_eq!(forwarded.content_type, "message/rfc822");
    assert_eq!(forwarded.size, 69);
    assert!(codes(&doc).contains(&WarningCode::PartMalformed));
}

#[test]
fn c20_decodes_every_part() {
    let doc = build_fixture("c20");
    let text = doc.text.as_deref().unwrap_or_default();

    assert_eq!(doc.subject.as_deref(), Some("会議資料の送付について"));
    assert!(text.contains("明日の会議資料を添付します。\nご確認をお願いします。"));
    assert!(text.contains("镕铸工艺说明：请参阅附件。"));
    assert!(text.contains("テスト送信です。"));
    assert!(!text.contains('\u{fffd}'));
    assert!(codes(&doc).contains(&WarningCode::CharsetMislabelled));
}

#[test]
fn c21_reads_raw_utf8_headers() {
    let doc = build_fixture("c21");

    assert_eq!(
        doc.subject.as_deref(),
        Some("Grüße aus Köln – Prüfbericht Nr. 7 ✅")
    );
    assert_eq!(doc.from[0].name.as_deref(), Some("Zoë Example"));
    assert!(doc.warnings.is_empty(), "{:?}", doc.warnings);
}

#[test]
fn gbk_header_uses_body_charset() {
    let doc = build_fixture("header-8bit-gbk");

    assert_eq!(doc.subject.as_deref(), Some("关于服务器维护的通知"));
    assert_eq!(doc.from[0].name.as_deref(), Some("王小明"));
    assert!(codes(&doc).contains(&WarningCode::HeaderCharsetGuessed));
}

#[test]
fn undecodable_header_keeps_raw_bytes() {
    let doc = build_fixture("header-8bit-undecodable");
    let subject = doc.headers.iter().find(|h| h.name == "Subject").unwrap();

    // "Caf\xe9 menu \xa4 today" in base64.
    assert_eq!(
        subject.raw_base64.as_deref(),
        Some("Q2Fm6SBtZW51IKQgdG9kYXk=")
    );
    assert!(subject.value.contains('\u{fffd}'));
    assert!(codes(&doc).contains(&WarningCode::HeaderUndecodable));
}

#[test]
fn c24_dates() {
    let with_comment = build_fixture("c24");
    let first = build_fixture("c24b");
    let second = build_fixture("c24c");

    assert_eq!(with_comment.date.as_deref(), Some("2022-10-06T10:27:13Z"));
    for doc in [&first, &second] {
        assert_eq!(doc.date, None);
        assert_eq!(doc.message_id, None);
        assert_eq!(doc.received_at.as_deref(), Some("2024-03-10T08:15:00Z"));
        assert!(codes(doc).contains(&WarningCode::DateMissing));
    }
    assert_ne!(first.content_sha256, second.content_sha256);
}

#[test]
fn size_caps_apply() {
    let attachments = build_fixture("attachments");
    let raw = build_fixture("raw-under-cap");
    let truncated = build_fixture("truncated");

    let inline: Vec<bool> = attachments
        .attachments
        .iter()
        .map(|attachment| attachment.content_base64.is_some())
        .collect();
    assert_eq!(inline, [false, true], "PDF over the cap, CSV under it");
    assert!(raw.raw_base64.is_some());
    assert!(truncated.truncated);
    assert!(truncated.text.is_none());
    assert!(truncated.attachments.is_empty());
    assert!(truncated.raw_base64.is_none());
    assert_eq!(truncated.subject.as_deref(), Some("Scan 7"));
}
