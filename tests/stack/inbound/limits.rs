//! Limits and hints on the stack: a mail just over `max_message_bytes` is
//! fetched by its header section, batches stay under `max_batch_bytes`, a
//! batch with such mails keeps UID order, and implicit TLS against a STARTTLS port points to STARTTLS, for IMAP
//! and SMTP alike.

use std::path::PathBuf;
use std::time::Duration;

use mailbridge::smtp::transport::{PoolSettings, Sender};
use sha2::{Digest, Sha256};

use crate::bridge::{ACCOUNT, PATIENCE, Setup};
use crate::mailbox::{append, mail};
use crate::support::{mail_address, port, unique};

/// The fix that a plaintext greeting during the TLS handshake gets.
const STARTTLS_HINT: &str = "the port may expect STARTTLS: set tls = \"starttls\"";

#[tokio::test]
async fn inbound_mail_over_max_bytes_fetched_by_header() {
    let setup = Setup::new("inbound-header-only");
    setup
        .prepare("[inbound.lines]\naccount = \"watched\"\nmax_message_bytes = 2000\n")
        .await;
    let mut large = mail(&unique("large"), "just over the limit");
    let header_end = large.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    large.extend(b"x".repeat(2001 - large.len()));
    large.extend(b"\r\n");
    append(&setup.user, "INBOX", &large).await;
    append(
        &setup.user,
        "INBOX",
        &mail(&unique("small"), "under the limit"),
    )
    .await;
    let output = tempfile::NamedTempFile::new().expect("output file");

    let bridge = setup.start_with_stdout(output.reopen().expect("reopen"));
    let text = wait_for_lines(output.path(), 2).await;
    bridge.stop().await;

    let documents: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON document"))
        .collect();
    assert_eq!(documents.len(), 2, "{text}");
    let (over, under) = (&documents[0], &documents[1]);
    assert_eq!(over["subject"], "just over the limit");
    assert_eq!(over["truncated"], true);
    assert_eq!(over["size"], large.len() as u64);
    assert!(over["text"].is_null());
    let header_hash = format!("{:x}", Sha256::digest(&large[..header_end]));
    assert_eq!(
        over["content_sha256"], header_hash,
        "only the header was fetched"
    );
    let warnings = over["warnings"].to_string();
    assert!(
        warnings.contains(&format!("message of {} bytes", large.len())),
        "{warnings}"
    );
    assert_eq!(under["truncated"], false);
    assert_eq!(under["text"], "Body of under the limit.");
}

#[tokio::test]
async fn inbound_batches_split_by_max_batch_bytes() {
    let setup = Setup::new("inbound-batch-bytes");
    setup
        .prepare("[inbound.lines]\naccount = \"watched\"\nmax_batch_bytes = 2500\n")
        .await;
    // Four mails of 1000 bytes and one of 4000 bytes, over the cap.
    let sizes = [1000, 1000, 1000, 1000, 4000];
    for (index, size) in sizes.into_iter().enumerate() {
        let mut raw = mail(&unique("batch-bytes"), &format!("mail {index}"));
        raw.extend(b"x".repeat(size - 2 - raw.len()));
        raw.extend(b"\r\n");
        append(&setup.user, "INBOX", &raw).await;
    }
    let output = tempfile::NamedTempFile::new().expect("output file");

    let bridge = setup.start_with_stdout(output.reopen().expect("reopen"));
    let text = wait_for_lines(output.path(), sizes.len()).await;
    bridge.stop().await;

    let documents: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON document"))
        .collect();
    assert_eq!(documents.len(), sizes.len(), "{text}");
    for (index, document) in documents.iter().enumerate() {
        assert_eq!(document["subject"], format!("mail {index}"), "{text}");
        assert_eq!(document["size"], sizes[index], "{text}");
        assert_eq!(document["truncated"], false, "{text}");
    }
    let log = setup.log();
    let requested: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("Fetched mails"))
        .filter_map(|line| line.split_once("requested=")?.1.split(' ').next())
        .collect();
    assert_eq!(requested, ["2", "2", "1"], "mails per UID FETCH:\n{log}");
}

#[tokio::test]
async fn inbound_header_only_mails_keep_uid_order() {
    let setup = Setup::new("inbound-batch-order");
    setup
        .prepare("[inbound.lines]\naccount = \"watched\"\nmax_message_bytes = 2000\n")
        .await;
    // 38 mails fetched whole and two, the 6th and the 31st, by header, in
    // a second command whose documents are built after the others.
    let large = [5, 30];
    for index in 0..40 {
        let mut raw = mail(&unique("batch-order"), &format!("mail {index}"));
        if large.contains(&index) {
            raw.extend(b"x".repeat(2100));
            raw.extend(b"\r\n");
        }
        append(&setup.user, "INBOX", &raw).await;
    }
    let output = tempfile::NamedTempFile::new().expect("output file");

    let bridge = setup.start_with_stdout(output.reopen().expect("reopen"));
    let text = wait_for_lines(output.path(), 40).await;
    bridge.stop().await;

    let published: Vec<(String, bool)> = text
        .lines()
        .map(|line| {
            let document: serde_json::Value =
                serde_json::from_str(line).expect("each line is one JSON document");
            let subject = document["subject"].as_str().expect("subject").to_owned();
            (subject, document["truncated"] == true)
        })
        .collect();
    let expected: Vec<(String, bool)> = (0..40)
        .map(|index| (format!("mail {index}"), large.contains(&index)))
        .collect();
    assert_eq!(published, expected, "{text}");
}

#[tokio::test]
async fn inbound_implicit_tls_on_starttls_port_hints_starttls() {
    let mut setup = Setup::new("inbound-tls-hint");
    setup.imap_port = port("STACK_IMAP_PORT");
    setup
        .prepare("[inbound.lines]\naccount = \"watched\"\n")
        .await;

    let bridge = setup.start();
    let line = wait_for_log_line(&setup, "TLS handshake with IMAP server").await;
    bridge.stop().await;

    let line = line.unwrap_or_else(|| panic!("no handshake error; log:\n{}", setup.log()));
    assert!(line.contains(STARTTLS_HINT), "{line}");
    assert!(line.contains("993 for IMAP"), "{line}");
    assert!(!line.contains("certificate is valid"), "{line}");
}

#[tokio::test]
async fn smtp_implicit_tls_on_starttls_port_hints_starttls() {
    let setup = Setup::new("smtp-tls-hint");
    setup.prepare("").await;
    let file = setup.state().parent().unwrap().join("mailbridge.toml");
    let config = mailbridge::config::load(Some(&file)).expect("configuration");
    let mut account = config.accounts[ACCOUNT].clone();
    let smtp = account.smtp.as_mut().expect("smtp table");
    smtp.tls = mailbridge::config::Tls::Implicit;
    smtp.port = port("STACK_SMTP_PORT");
    smtp.ca_file = Some(PathBuf::from(crate::support::stack("STACK_CA_FILE")));
    let tokens = mailbridge::auth::TokenProvider::new(ACCOUNT, &account, &config.state)
        .expect("token provider");
    let sender =
        Sender::new(ACCOUNT, &account, tokens, None, PoolSettings::default()).expect("sender");
    let recipients = [mail_address(&unique("recipient"))];

    let sent = tokio::time::timeout(
        PATIENCE,
        sender.send(&setup.user, &recipients, b"Subject: x\r\n\r\nx\r\n"),
    )
    .await
    .expect("the send ends");

    let err = sent.expect_err("a plaintext port cannot complete a TLS handshake");
    assert_eq!(err.kind(), "tls_handshake", "{err}");
    assert!(err.to_string().contains(STARTTLS_HINT), "{err}");
    assert!(err.to_string().contains("465 for SMTP"), "{err}");
    assert!(
        err.hint().is_some_and(|hint| hint.contains(STARTTLS_HINT)),
        "{err}"
    );
}

/// Waits until the file at `path` contains `count` lines, and returns its text.
async fn wait_for_lines(path: &std::path::Path, count: usize) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= count || std::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the first log line that contains `text`.
async fn wait_for_log_line(setup: &Setup, text: &str) -> Option<String> {
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::time::Instant::now() < deadline {
        if let Some(line) = setup.log().lines().find(|line| line.contains(text)) {
            return Some(line.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}
