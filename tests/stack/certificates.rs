//! Certificate verification of `mailbridge run` against the stack's
//! Dovecot and postfix, whose certificates come from the stack's own CA.
//! Without that CA as `ca_file` the issuer is unknown: the connection is
//! rejected unless the server table sets `danger_accept_invalid_certs`,
//! which logs a warning at every connect.

use std::time::Duration;

use serde_json::json;

use crate::bridge::{PATIENCE, Setup};
use crate::mailbox::{deliver, mail, wait_for_mails};
use crate::records::{create_topic, kafka_records, produce};
use crate::support::{Forwarder, mail_address, port, stack, unique};

/// The warning of a connection without certificate verification.
const WARNING: &str = "Certificate verification is off for this connection";

/// Returns the TOML of an inbound pipeline of the INBOX to `inbound` and
/// an outbound one from `requests`, both on Kafka.
fn pipelines(inbound: &str, requests: &str, dead: &str) -> String {
    format!(
        r#"
[inbound.mail]
account = "watched"
broker = "kafka"
topic = "{inbound}"

[outbound.send]
account = "watched"
broker = "kafka"
topic = "{requests}"
group_id = "{requests}"
dead_letter = "{dead}"
"#
    )
}

/// Creates the three topics of [`pipelines`] and returns their names.
async fn topics(prefix: &str) -> [String; 3] {
    let names = ["inbound", "requests", "dead"].map(|role| unique(&format!("{prefix}.{role}")));
    for name in &names {
        create_topic(name).await;
    }
    names
}

fn send_request(to: &str, subject: &str) -> Vec<u8> {
    let request = json!({"id": unique("request"), "to": [to], "subject": subject, "text": "hi"});
    request.to_string().into_bytes()
}

/// Returns the log lines that contain `text`.
fn lines_with<'a>(log: &'a str, text: &str) -> Vec<&'a str> {
    log.lines().filter(|line| line.contains(text)).collect()
}

/// Waits until the log has a line with every part of `parts`, and returns
/// that line.
async fn wait_for_line(setup: &Setup, parts: &[&str]) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::time::Instant::now() < deadline {
        let log = setup.log();
        let line = log
            .lines()
            .find(|line| parts.iter().all(|part| line.contains(part)));
        if let Some(line) = line {
            return line.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no log line with {parts:?}:\n{}", setup.log());
}

#[tokio::test]
async fn unknown_ca_rejected_by_default() {
    let mut setup = Setup::new("certificate-unknown");
    setup.trust_stack_ca = false;
    let [inbound, requests, dead] = topics("certificate-unknown").await;
    setup.prepare(&pipelines(&inbound, &requests, &dead)).await;
    deliver(&setup.user, &mail("unknown-ca", "never published")).await;
    let recipient = mail_address(&unique("recipient"));
    let imap_server = format!("127.0.0.1:{}", port("STACK_IMAPS_PORT"));
    let smtp_server = format!("127.0.0.1:{}", port("STACK_SMTP_PORT"));

    let bridge = setup.start();
    produce(&requests, "held", &send_request(&recipient, "held")).await;
    let imap_line = wait_for_line(&setup, &[&imap_server, "ca_file"]).await;
    let smtp_line = wait_for_line(&setup, &[&smtp_server, "ca_file"]).await;
    let (status, body) = setup
        .wait_readyz(PATIENCE, |_, body| body.to_string().contains(&imap_server))
        .await;
    let check = setup.output(&["check"]).await;
    let published = kafka_records(&inbound, 1, Duration::from_secs(3)).await;
    let mails = wait_for_mails(&recipient, 1, Duration::from_secs(1)).await;
    bridge.stop().await;

    assert!(imap_line.contains("UnknownIssuer"), "{imap_line}");
    assert!(smtp_line.contains("UnknownIssuer"), "{smtp_line}");
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("ca_file"), "{body}");
    let report = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{report}");
    assert!(report.contains("imap FAIL certificate"), "{report}");
    assert!(report.contains("smtp FAIL certificate"), "{report}");
    assert!(report.contains("set ca_file"), "{report}");
    assert!(published.is_empty(), "published without a verified server");
    assert!(mails.is_empty(), "sent without a verified server");
    assert!(lines_with(&setup.log(), WARNING).is_empty());
    assert!(
        lines_with(&setup.log(), "Signed in to IMAP server").is_empty(),
        "{}",
        setup.log()
    );
    setup.assert_log_has_no_token();
}

#[tokio::test]
async fn accepted_with_option_and_warned_per_connect() {
    let mut setup = Setup::new("certificate-accepted");
    setup.trust_stack_ca = false;
    setup.server_extra = "danger_accept_invalid_certs = true".to_owned();
    // Forwarders let the test cut the connections, so that each protocol
    // connects at least twice.
    let host = stack("STACK_IMAP_HOST");
    let imap = Forwarder::start((host.clone(), port("STACK_IMAPS_PORT"))).await;
    let smtp = Forwarder::start((host, port("STACK_SMTP_PORT"))).await;
    setup.imap_port = imap.port;
    setup.smtp_port = smtp.port;
    let [inbound, requests, dead] = topics("certificate-accepted").await;
    setup.prepare(&pipelines(&inbound, &requests, &dead)).await;
    let recipient = mail_address(&unique("recipient"));
    deliver(&setup.user, &mail("accepted-1", "first")).await;

    let bridge = setup.start();
    let first = kafka_records(&inbound, 1, PATIENCE).await;
    produce(&requests, "first", &send_request(&recipient, "first")).await;
    let first_mail = wait_for_mails(&recipient, 1, PATIENCE).await;
    imap.cut();
    smtp.cut();
    deliver(&setup.user, &mail("accepted-2", "second")).await;
    let second = kafka_records(&inbound, 2, PATIENCE).await;
    produce(&requests, "second", &send_request(&recipient, "second")).await;
    let second_mail = wait_for_mails(&recipient, 2, PATIENCE).await;
    let check = setup.output(&["check"]).await;
    bridge.stop().await;

    assert_eq!(first.len(), 1, "log:\n{}", setup.log());
    assert_eq!(first_mail.len(), 1, "log:\n{}", setup.log());
    assert_eq!(second.len(), 2, "log:\n{}", setup.log());
    assert_eq!(second_mail.len(), 2, "log:\n{}", setup.log());
    let log = setup.log();
    let warnings = lines_with(&log, WARNING);
    assert!(
        warnings.iter().all(|line| line.contains("WARN")),
        "{warnings:#?}"
    );
    let imap_warnings = lines_with(&log, "protocol=\"imap\"")
        .into_iter()
        .filter(|line| line.contains(WARNING))
        .count();
    let smtp_warnings = lines_with(&log, "protocol=\"smtp\"")
        .into_iter()
        .filter(|line| line.contains(WARNING))
        .count();
    let imap_sessions = lines_with(&log, "Signed in to IMAP server").len();
    let smtp_connections = lines_with(&log, "SMTP connection signed in").len();
    assert!(imap_sessions >= 2, "{log}");
    assert!(smtp_connections >= 2, "{log}");
    assert!(imap_warnings >= imap_sessions, "{imap_warnings}:\n{log}");
    assert!(smtp_warnings >= smtp_connections, "{smtp_warnings}:\n{log}");
    let report = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{report}");
    let accepted = "accepted because danger_accept_invalid_certs = true";
    let certificate_lines = lines_with(&report, " certificate  ");
    assert_eq!(certificate_lines.len(), 2, "{report}");
    for line in certificate_lines {
        assert!(line.contains(accepted), "{line}");
    }
    setup.assert_log_has_no_token();
}
