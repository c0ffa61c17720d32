//! Runs every committed fuzz corpus input through the checks of
//! `tests/invariants`, on stable Rust, so that an input that once broke
//! mailbridge stays a regression test. Inbound inputs are
//! `fuzz/corpus/inbound_document/*` and the mail fixtures of
//! `tests/fixtures/inbound`; each must yield a document that validates
//! against `schemas/inbound-mail.v1.json`. Outbound inputs are
//! `fuzz/corpus/outbound_request/*`; each must be rejected with a reason
//! or build a message that is safe on the wire.

mod invariants;

use std::fs;
use std::path::{Path, PathBuf};

use invariants::Outbound;
use mailbridge::mail::WarningCode;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Files of `dir` whose names end in `suffix`, sorted.
fn inputs(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let dir = root().join(dir);
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    paths.sort();
    paths
}

/// Runs `check` on every input and fails with the names of those that
/// panicked, so one run lists every broken input.
fn check_all(paths: &[PathBuf], check: impl Fn(&[u8])) {
    let mut failed = Vec::new();
    for path in paths {
        let bytes = fs::read(path).expect("input is readable");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&bytes)));
        if outcome.is_err() {
            failed.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }

    assert!(
        failed.is_empty(),
        "{} of {} inputs failed (see the panic messages above): {failed:?}",
        failed.len(),
        paths.len()
    );
}

#[test]
fn inbound_corpus_yields_valid_documents() {
    let mut paths = inputs("fuzz/corpus/inbound_document", "");
    paths.extend(inputs("tests/fixtures/inbound", ".eml"));
    assert!(paths.len() >= 40, "only {} inbound inputs", paths.len());

    check_all(&paths, |raw| {
        invariants::check_inbound(raw, &invariants::inbound_options());
        invariants::check_inbound(raw, &invariants::header_only_options());
    });
}

#[test]
fn header_only_documents_keep_headers() {
    let raw = fs::read(root().join("tests/fixtures/inbound/attachments.eml")).unwrap();

    let doc = invariants::check_inbound(&raw, &invariants::header_only_options());

    assert!(doc.truncated);
    assert!(doc.has_warning(WarningCode::MessageTruncated));
    assert!(doc.subject.is_some());
    assert!(doc.attachments.is_empty());
}

#[test]
fn parser_panic_keeps_headers() {
    // A multipart body whose boundary line runs into a header makes
    // mail-parser 0.11.9 panic while the header section parses.
    let path = "fuzz/corpus/inbound_document/panic-part-id.eml";
    let raw = fs::read(root().join(path)).unwrap();

    let doc = invariants::check_inbound(&raw, &invariants::inbound_options());

    assert!(doc.has_warning(WarningCode::ParsePanic));
    assert_eq!(doc.subject.as_deref(), Some("Fwd: Original question"));
    assert_eq!(doc.message_id.as_deref(), Some("outer-1@example.test"));
    assert!(!doc.truncated);
}

#[test]
fn outbound_corpus_builds_or_rejects() {
    let paths = inputs("fuzz/corpus/outbound_request", "");
    assert!(paths.len() >= 30, "only {} outbound inputs", paths.len());

    check_all(&paths, |payload| {
        invariants::check_outbound(payload, &invariants::outbound_limits());
    });
}

#[test]
fn unknown_field_detail_is_one_line() {
    let path = "fuzz/corpus/outbound_request/unknown-field-line-break.json";
    let payload = fs::read(root().join(path)).unwrap();

    let outcome = invariants::check_outbound(&payload, &invariants::outbound_limits());

    let Outbound::Rejected(rejection) = outcome else {
        panic!("{path} was built");
    };
    assert!(
        rejection.detail.contains("texe\\n\\nend"),
        "{}",
        rejection.detail
    );
}

#[test]
fn outbound_corpus_takes_both_paths() {
    let mut built = 0;
    let mut rejected = Vec::new();
    for path in inputs("fuzz/corpus/outbound_request", "") {
        let payload = fs::read(&path).unwrap();
        match invariants::check_outbound(&payload, &invariants::outbound_limits()) {
            Outbound::Built(_) => built += 1,
            Outbound::Rejected(rejection) => rejected.push(rejection.reason),
        }
    }

    assert!(built >= 10, "only {built} requests built");
    assert!(rejected.len() >= 10, "only {} rejected", rejected.len());
}

#[test]
fn injection_cases_are_rejected() {
    // CR/LF injection through each single-line field must be rejected.
    for index in 1..=5 {
        let path = format!("fuzz/corpus/outbound_request/case-c26-{index}.json");
        let payload = fs::read(root().join(&path)).unwrap();

        let outcome = invariants::check_outbound(&payload, &invariants::outbound_limits());

        assert!(matches!(outcome, Outbound::Rejected(_)), "{path} was built");
    }
}
