//! Permanent SMTP rejections: the stack's postfix relays only to its own
//! domain, so a recipient elsewhere gets a 5xx at RCPT TO. Such a request
//! is dead-lettered with the reply in its headers, and its status event
//! says failed; a sent request's event carries the reply and Message-ID.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{KAFKA, RABBITMQ, Targets, message_id, request, status_event};
use crate::bridge::{PATIENCE, Setup};
use crate::mailbox::wait_for_mails;
use crate::records::{Raw, amqp_raw, kafka_raw, produce, publish_to_queue};
use crate::support::{mail_address, unique};

/// An address outside the stack's mail domain, which postfix does not
/// relay to. Nothing leaves the machine, because postfix rejects it at RCPT TO.
fn foreign() -> String {
    format!("{}@elsewhere.test", unique("nobody"))
}

#[tokio::test]
async fn rejected_recipients_are_dead_lettered_with_the_smtp_reply() {
    let setup = Setup::new("outbound-rejection");
    let targets = Targets::new("rejection").await;
    setup.prepare(&targets.pipelines()).await;
    let recipient = mail_address(&unique("recipient"));
    let (bad_kafka, bad_amqp) = (request(&foreign(), "kafka"), request(&foreign(), "amqp"));
    let good = request(&recipient, "sent");
    let (mixed_foreign, mixed) = mixed_request(&recipient);

    let bridge = setup.start();
    produce(&targets.topic, "bad", bad_kafka.to_string().as_bytes()).await;
    produce(&targets.topic, "good", good.to_string().as_bytes()).await;
    produce(&targets.topic, "mixed", mixed.to_string().as_bytes()).await;
    publish_to_queue(&targets.queue, bad_amqp.to_string().as_bytes()).await;
    let dead_kafka = kafka_raw(&targets.topic_dead, 1, PATIENCE).await;
    let dead_amqp = amqp_raw(&targets.queue_dead, 1, PATIENCE).await;
    let statuses = kafka_raw(&targets.topic_status, 3, PATIENCE).await;
    let amqp_statuses = amqp_raw(&targets.queue_status, 1, PATIENCE).await;
    let mails = wait_for_mails(&recipient, 2, PATIENCE).await;
    let metrics = setup.metrics().await;
    bridge.stop().await;

    assert_eq!(dead_kafka.len(), 1, "log:\n{}", setup.log());
    assert_eq!(dead_amqp.len(), 1, "log:\n{}", setup.log());
    check_dead_letter(&dead_kafka[0], &bad_kafka, KAFKA);
    check_dead_letter(&dead_amqp[0], &bad_amqp, RABBITMQ);
    let events = by_id(&statuses);
    check_failed(&events[id(&bad_kafka)], KAFKA);
    check_failed(&status_event(&amqp_statuses[0].payload), RABBITMQ);

    assert_eq!(mails.len(), 2, "log:\n{}", setup.log());
    let ids: Vec<String> = mails.iter().map(|raw| message_id(raw)).collect();
    let sent = &events[id(&good)];
    check_sent(sent, &ids);
    let partly = &events[id(&mixed)];
    check_sent(partly, &ids);
    assert_ne!(sent["message_id"], partly["message_id"]);
    let rejected = partly["rejected_recipients"].as_array().expect("list");
    assert_eq!(rejected.len(), 1, "{partly}");
    assert_eq!(rejected[0]["address"], mixed_foreign.as_str());
    assert!(
        rejected[0]["reply"]["code"]
            .as_u64()
            .is_some_and(|code| code >= 500)
    );

    for pipeline in [KAFKA, RABBITMQ] {
        let series = format!(
            "mailbridge_dead_lettered_total{{pipeline=\"{pipeline}\",reason=\"recipients_rejected\"}} 1"
        );
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }
    setup.assert_log_has_no_token();
}

/// A request to one mailbox of the stack and one foreign address.
fn mixed_request(recipient: &str) -> (String, Value) {
    let foreign = foreign();
    let request = json!({
        "id": unique("mixed"),
        "to": [recipient, foreign],
        "subject": "partly delivered",
        "text": "One of two recipients gets this.",
    });
    (foreign, request)
}

fn id(request: &Value) -> &str {
    request["id"].as_str().expect("request id")
}

/// Status events by request id.
fn by_id(records: &[Raw]) -> BTreeMap<String, Value> {
    records
        .iter()
        .map(|record| status_event(&record.payload))
        .map(|event| (event["id"].as_str().unwrap_or_default().to_owned(), event))
        .collect()
}

fn check_dead_letter(record: &Raw, request: &Value, pipeline: &str) {
    assert_eq!(record.payload, request.to_string().as_bytes());
    let header = |name: &str| record.headers.get(name).map(String::as_str);
    let headers = &record.headers;
    assert_eq!(
        header("mailbridge-reason"),
        Some("recipients_rejected"),
        "{headers:?}"
    );
    assert_eq!(header("mailbridge-permanent"), Some("true"), "{headers:?}");
    assert_eq!(header("mailbridge-attempts"), Some("1"), "{headers:?}");
    assert_eq!(header("mailbridge-pipeline"), Some(pipeline), "{headers:?}");
    let code = header("mailbridge-smtp-code").expect("SMTP code");
    assert!(code.starts_with('5') && code.len() == 3, "{headers:?}");
    let enhanced = header("mailbridge-smtp-enhanced").expect("enhanced status code");
    assert!(enhanced.starts_with("5."), "{headers:?}");
    let to = request["to"][0]["address"].as_str().expect("recipient");
    assert!(
        header("mailbridge-detail").is_some_and(|detail| detail.contains(to)),
        "{headers:?}"
    );
}

fn check_failed(event: &Value, pipeline: &str) {
    assert_eq!(event["status"], "failed", "{event}");
    assert_eq!(event["pipeline"], pipeline, "{event}");
    assert_eq!(event["reason"], "recipients_rejected", "{event}");
    assert_eq!(event["permanent"], true, "{event}");
    assert_eq!(event["attempts"], 1, "{event}");
    assert!(
        event["smtp"]["code"]
            .as_u64()
            .is_some_and(|code| code >= 500),
        "{event}"
    );
    // The server's own words, not mailbridge's sentence about them.
    let text = event["smtp"]["text"].as_str().unwrap_or_default();
    assert!(!text.is_empty(), "{event}");
    assert!(!text.contains("SMTP server"), "{event}");
    assert!(
        event["message_id"]
            .as_str()
            .is_some_and(|id| id.starts_with('<')),
        "{event}"
    );
}

/// Checks a sent event; its Message-ID must be one of `received`.
fn check_sent(event: &Value, received: &[String]) {
    assert_eq!(event["status"], "sent", "{event}");
    assert_eq!(event["pipeline"], KAFKA, "{event}");
    assert_eq!(event["smtp"]["code"], 250, "{event}");
    assert!(
        event["smtp"]["enhanced"]
            .as_str()
            .is_some_and(|code| code.starts_with("2.")),
        "{event}"
    );
    assert!(
        event["smtp"]["text"]
            .as_str()
            .is_some_and(|text| !text.is_empty()),
        "{event}"
    );
    assert_eq!(event["reason"], Value::Null, "{event}");
    assert_eq!(event["permanent"], false, "{event}");
    let message_id = event["message_id"].as_str().expect("Message-ID");
    assert!(
        received.iter().any(|id| id == message_id),
        "{message_id} not in {received:?}"
    );
}
