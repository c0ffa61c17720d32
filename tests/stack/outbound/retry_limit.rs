//! A transient failure that lasts. A server that replies 451 to every
//! RCPT TO gets the request `max_attempts` times. Then the request is
//! dead-lettered as not permanent, with the number of attempts in the
//! record and in its status event. Postfix on the stack accepts the
//! stack's own recipients, so the 451 comes from a fake on loopback.

use super::{KAFKA, Targets, request, status_event};
use crate::bridge::{PATIENCE, Setup};
use crate::records::kafka_raw;
use crate::support::{FakeSmtp, Step, mail_address, step, unique};

const MAX_ATTEMPTS: usize = 3;

/// Builds the script of one connection: sign-in, then transactions whose
/// only recipient gets 451, each followed by the RSET that ends it. The
/// fake announces no PIPELINING, so each command waits for its reply.
fn deferring() -> Vec<Step> {
    let mut steps = vec![
        step(
            "EHLO",
            &["250-fake.example.test", "250-AUTH XOAUTH2", "250 8BITMIME"],
        ),
        step("AUTH XOAUTH2", &["235 2.7.0 Authentication successful"]),
    ];
    for _ in 0..MAX_ATTEMPTS {
        steps.push(step("MAIL FROM", &["250 2.1.0 Ok"]));
        steps.push(step(
            "RCPT TO",
            &["451 4.3.0 Temporary lookup failure, try again later"],
        ));
        steps.push(step("RSET", &["250 2.0.0 Ok"]));
    }
    steps
}

#[tokio::test]
async fn transient_failure_dead_lettered_after_max_attempts() {
    // Every attempt may open a connection of its own.
    let fake = FakeSmtp::start((0..MAX_ATTEMPTS).map(|_| deferring()).collect()).await;
    let mut setup = Setup::new("outbound-retry-limit");
    setup.smtp_port = fake.port;
    setup.smtp_tls = "none";
    let targets = Targets::new("retry-limit").await;
    let extra = format!("max_attempts = {MAX_ATTEMPTS}");
    setup.prepare(&targets.kafka(&extra)).await;
    let recipient = mail_address(&unique("recipient"));
    let request = request(&recipient, "deferred every time");

    let bridge = setup.start();
    crate::records::produce(&targets.topic, "k", request.to_string().as_bytes()).await;
    let dead = kafka_raw(&targets.topic_dead, 1, PATIENCE).await;
    let statuses = kafka_raw(&targets.topic_status, 1, PATIENCE).await;
    let metrics = setup.metrics().await;
    bridge.stop().await;

    let log = setup.log();
    assert_eq!(dead.len(), 1, "log:\n{log}");
    let record = &dead[0];
    assert_eq!(record.payload, request.to_string().as_bytes());
    let header = |name: &str| record.headers.get(name).map(String::as_str);
    let headers = &record.headers;
    let attempts = MAX_ATTEMPTS.to_string();
    assert_eq!(
        header("mailbridge-attempts"),
        Some(attempts.as_str()),
        "{headers:?}"
    );
    assert_eq!(header("mailbridge-permanent"), Some("false"), "{headers:?}");
    assert_eq!(
        header("mailbridge-reason"),
        Some("recipients_rejected"),
        "{headers:?}"
    );
    assert_eq!(header("mailbridge-smtp-code"), Some("451"), "{headers:?}");

    assert_eq!(statuses.len(), 1, "log:\n{log}");
    let event = status_event(&statuses[0].payload);
    assert_eq!(event["status"], "failed", "{event}");
    assert_eq!(event["attempts"], MAX_ATTEMPTS, "{event}");
    assert_eq!(event["permanent"], false, "{event}");

    let rcpts: usize = fake
        .received()
        .iter()
        .flatten()
        .filter(|line| line.to_ascii_uppercase().starts_with("RCPT TO"))
        .count();
    assert_eq!(
        rcpts,
        MAX_ATTEMPTS,
        "one RCPT TO per attempt: {:?}",
        fake.received()
    );
    let retries = format!(
        "mailbridge_outbound_retries_total{{pipeline=\"{KAFKA}\"}} {}",
        MAX_ATTEMPTS - 1
    );
    assert!(metrics.contains(&retries), "{retries} in\n{metrics}");
    let dead_lettered = format!(
        "mailbridge_dead_lettered_total{{pipeline=\"{KAFKA}\",reason=\"recipients_rejected\"}} 1"
    );
    assert!(
        metrics.contains(&dead_lettered),
        "{dead_lettered} in\n{metrics}"
    );
    // The retries repeat one warning, which the log keeps once a minute;
    // the retry counter above counts every one.
    assert_eq!(
        log.matches("Send failed; retrying with the same Message-ID")
            .count(),
        1,
        "{log}"
    );
}
