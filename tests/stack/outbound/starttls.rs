//! An SMTP server that does not offer STARTTLS, with `tls = "starttls"`:
//! the bridge closes the connection before AUTH or MAIL FROM, and holds
//! the request.
//!
//! The choice: a missing STARTTLS is a configuration problem or an attack
//! on the connection, never a fault of the request, and it fails every
//! request alike. Dead-lettering would move the whole stream to the
//! dead-letter target while the cause lasts, so the request is held and
//! retried, readiness fails, and the request goes out once the server
//! offers TLS again.

use std::time::Duration;

use super::{KAFKA, Targets, request};
use crate::bridge::{PATIENCE, Setup};
use crate::mailbox::wait_for_mails;
use crate::records::{SETTLE, kafka_raw, produce};
use crate::support::{FakeSmtp, Step, http, mail_address, port, step, unique};

/// Time a restarted bridge may need to get its partition back.
const REJOIN: Duration = Duration::from_secs(90);

/// Connections the fake server answers; each attempt opens one.
const CONNECTIONS: usize = 20;

/// An EHLO reply that offers AUTH in the clear and no STARTTLS.
fn stripped() -> Vec<Step> {
    vec![step(
        "EHLO",
        &[
            "250-fake.example.test",
            "250-PIPELINING",
            "250-AUTH PLAIN XOAUTH2 OAUTHBEARER",
            "250 8BITMIME",
        ],
    )]
}

#[tokio::test]
async fn a_server_without_starttls_gets_no_token_and_the_request_is_held() {
    let fake = FakeSmtp::start((0..CONNECTIONS).map(|_| stripped()).collect()).await;
    let mut setup = Setup::new("outbound-starttls");
    setup.smtp_port = fake.port;
    let targets = Targets::new("starttls").await;
    setup.prepare(&targets.kafka("")).await;
    let recipient = mail_address(&unique("recipient"));

    let bridge = setup.start();
    let request = request(&recipient, "held back");
    produce(&targets.topic, "k", request.to_string().as_bytes()).await;
    let connections = wait_for_connections(&fake, 2).await;
    let ready = readiness(&setup).await;
    let dead = kafka_raw(&targets.topic_dead, 0, SETTLE).await;
    let status = kafka_raw(&targets.topic_status, 0, Duration::ZERO).await;
    let metrics = setup.metrics().await;
    bridge.stop().await;

    assert!(
        connections.len() >= 2,
        "not retried: {connections:?}\nlog:\n{}",
        setup.log()
    );
    for lines in &connections {
        assert!(
            lines.first().is_some_and(|line| line.starts_with("EHLO")),
            "{lines:?}"
        );
        for line in lines {
            let upper = line.to_ascii_uppercase();
            let sent_more = ["AUTH", "MAIL", "RCPT", "DATA"]
                .iter()
                .any(|verb| upper.starts_with(verb));
            assert!(!sent_more, "{line:?} sent without TLS");
        }
    }
    assert!(dead.is_empty(), "held request was dead-lettered");
    assert!(status.is_empty(), "held request got a status event");
    assert_ne!(ready.0, 200, "ready while sending is held: {}", ready.1);
    assert!(ready.1.contains("STARTTLS"), "{}", ready.1);
    let retries = format!("mailbridge_outbound_retries_total{{pipeline=\"{KAFKA}\"}}");
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with(&retries) && !line.ends_with(" 0")),
        "{metrics}"
    );
    let failed = format!(
        "mailbridge_smtp_sent_total{{pipeline=\"{KAFKA}\",result=\"tls_required_unavailable\"}}"
    );
    assert!(metrics.contains(&failed), "{failed} in\n{metrics}");

    // The request was not finished: with the real server it goes out.
    setup.smtp_port = port("STACK_SMTP_PORT");
    setup.prepare(&targets.kafka("")).await;
    let bridge = setup.start();
    // TODO: the stack's broker gives the partition to the new member only
    // after the old member's session timed out (45 s), although the old
    // one closed its consumer; find out whether it left the group.
    let mails = wait_for_mails(&recipient, 1, REJOIN).await;
    bridge.stop().await;
    assert_eq!(
        mails.len(),
        1,
        "the held request was lost; log:\n{}",
        setup.log()
    );
    setup.assert_log_has_no_token();
}

async fn wait_for_connections(fake: &FakeSmtp, count: usize) -> Vec<Vec<String>> {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let received = fake.received();
        if received.len() >= count || std::time::Instant::now() > deadline {
            // Let the last connection finish its lines.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return fake.received();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status and body of `/readyz`.
async fn readiness(setup: &Setup) -> (u16, String) {
    let url = format!("http://127.0.0.1:{}/readyz", setup.metrics_port());
    let response = http().get(url).send().await.expect("readyz");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}
