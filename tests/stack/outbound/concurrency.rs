//! A server that limits parallel submissions: a fake on loopback replies
//! `432 4.3.2` to the first sends of a request, as Microsoft 365 does. The
//! request is retried until it is sent, nothing is dead-lettered, and the
//! account's limit of sends in flight goes down by one per 432 reply.
//! A second pipeline of the same account then sends over the same pooled
//! connection, under the same limit.

use super::{KAFKA, Targets, request, status_event};
use crate::bridge::{PATIENCE, Setup};
use crate::records::{amqp_raw, kafka_raw, publish_to_queue};
use crate::support::{FakeSmtp, Step, mail_address, step, unique};

/// Sends that get `432 4.3.2` before the one the server accepts.
const LIMITED_SENDS: usize = 2;
const MAX_IN_FLIGHT: usize = 3;

/// Builds the script of the only connection the fake accepts. After the
/// sign-in come [`LIMITED_SENDS`] transactions that get 432 after the
/// data. Then the server accepts the request, and after it the request of
/// the second pipeline, on the same pooled connection.
fn limited_then_accepted() -> Vec<Step> {
    let mut steps = vec![
        step(
            "EHLO",
            &["250-fake.example.test", "250-AUTH XOAUTH2", "250 8BITMIME"],
        ),
        step("AUTH XOAUTH2", &["235 2.7.0 Authentication successful"]),
    ];
    let transaction = |final_reply: &str| {
        vec![
            step("MAIL FROM", &["250 2.1.0 Sender OK"]),
            step("RCPT TO", &["250 2.1.5 Recipient OK"]),
            step("DATA", &["354 Start mail input; end with <CRLF>.<CRLF>"]),
            step(".", &[final_reply]),
        ]
    };
    for _ in 0..LIMITED_SENDS {
        steps.extend(transaction(
            "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
        ));
    }
    steps.extend(transaction("250 2.0.0 OK <queued>"));
    steps.extend(transaction("250 2.0.0 OK <queued>"));
    steps
}

#[tokio::test]
async fn concurrency_limit_lowers_sends_in_flight() {
    let fake = FakeSmtp::start(vec![limited_then_accepted()]).await;
    let mut setup = Setup::new("outbound-concurrency");
    setup.smtp_port = fake.port;
    setup.smtp_tls = "none";
    let targets = Targets::new("concurrency").await;
    let extra = format!("max_in_flight = {MAX_IN_FLIGHT}\nmax_attempts = 5");
    let pipelines = targets.kafka(&extra) + &targets.rabbitmq("max_in_flight = 1");
    setup.prepare(&pipelines).await;
    let recipient = mail_address(&unique("recipient"));
    let request_kafka = request(&recipient, "limited twice, then sent");
    let request_amqp = request(&recipient, "sent by the second pipeline");

    let bridge = setup.start();
    let payload = request_kafka.to_string();
    crate::records::produce(&targets.topic, "k", payload.as_bytes()).await;
    let statuses = kafka_raw(&targets.topic_status, 1, PATIENCE).await;
    publish_to_queue(&targets.queue, request_amqp.to_string().as_bytes()).await;
    let statuses_amqp = amqp_raw(&targets.queue_status, 1, PATIENCE).await;
    let metrics = setup.metrics().await;
    bridge.stop().await;

    let log = setup.log();
    assert_eq!(statuses.len(), 1, "log:\n{log}");
    let event = status_event(&statuses[0].payload);
    let received = fake.received();
    assert_eq!(event["status"], "sent", "{event}\n{received:?}");
    assert_eq!(event["attempts"], LIMITED_SENDS + 1, "{event}");

    assert_eq!(statuses_amqp.len(), 1, "log:\n{log}");
    let event = status_event(&statuses_amqp[0].payload);
    assert_eq!(event["status"], "sent", "{event}\n{received:?}");
    assert_eq!(event["attempts"], 1, "{event}");

    // One pool for both pipelines: a second connection would get 421.
    assert_eq!(received.len(), 1, "one connection: {received:?}");
    let data_ends = received
        .iter()
        .flatten()
        .filter(|line| *line == ".")
        .count();
    assert_eq!(data_ends, LIMITED_SENDS + 2, "{received:?}");

    let limit = format!(
        "mailbridge_outbound_concurrency_limit{{account=\"watched\"}} {}",
        MAX_IN_FLIGHT - LIMITED_SENDS
    );
    assert!(metrics.contains(&limit), "{limit} in\n{metrics}");
    let limited = format!(
        "mailbridge_smtp_sent_total{{pipeline=\"{KAFKA}\",result=\"concurrency_limit\"}} {LIMITED_SENDS}"
    );
    assert!(metrics.contains(&limited), "{limited} in\n{metrics}");
    assert!(
        !metrics.contains("mailbridge_dead_lettered_total{"),
        "nothing dead-lettered:\n{metrics}"
    );
    let lowered = "Server limits parallel submissions; lowered the account's sends in flight";
    assert_eq!(log.matches(lowered).count(), LIMITED_SENDS, "{log}");

    let quiet = std::time::Duration::from_secs(2);
    let dead = kafka_raw(&targets.topic_dead, 1, quiet).await;
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
    let dead = amqp_raw(&targets.queue_dead, 1, quiet).await;
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
}
