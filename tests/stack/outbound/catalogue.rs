//! Invalid send requests through the real brokers: each is dead-lettered
//! unchanged with its reason, on Kafka and on RabbitMQ, and the consumer
//! goes on, so that a valid request sent after them arrives.
//!
//! The header injection attempts of `injection` run here over RabbitMQ;
//! that module covers them on Kafka with their status events.

use serde_json::json;

use super::injection::cases as injection_cases;
use super::{KAFKA, RABBITMQ, Targets, request};
use crate::bridge::{PATIENCE, Setup};
use crate::mailbox::wait_for_mails;
use crate::records::{Raw, amqp_raw, kafka_raw, produce, publish_to_queue};
use crate::support::{mail_address, unique};

/// `max_attachment_bytes` of both pipelines.
const ATTACHMENT_CAP: usize = 4096;

/// One invalid request: a name, the payload as sent and the reason its
/// dead-letter record must carry.
struct Case {
    name: String,
    payload: Vec<u8>,
    reason: &'static str,
}

fn case(name: &str, reason: &'static str, payload: impl Into<Vec<u8>>) -> Case {
    Case {
        name: name.to_owned(),
        payload: payload.into(),
        reason,
    }
}

/// Returns the case of `request`, given an `id` that makes its payload
/// unique.
fn json_case(name: &str, reason: &'static str, mut request: serde_json::Value) -> Case {
    request["id"] = json!(unique(name));
    case(name, reason, request.to_string())
}

/// Returns the cases that are not header injection, each with one fault.
fn cases(to: &str) -> Vec<Case> {
    let unique_text = |text: &str| format!("{text} {}", unique("payload"));
    let over_cap = "A".repeat((ATTACHMENT_CAP + 1).div_ceil(3) * 4);
    vec![
        case("plain-text", "not_json", unique_text("hello, please send")),
        case(
            "truncated-json",
            "not_json",
            format!("{{\"to\": [\"{to}\"], \"text\": \"{}", unique("cut")),
        ),
        case(
            "two-documents",
            "not_json",
            format!("{{\"to\": [\"{to}\"]}} {{\"id\": \"{}\"}}", unique("two")),
        ),
        case(
            "invalid-utf8",
            "not_json",
            [
                b"{\"text\": \"".as_slice(),
                &[0xff, 0xfe],
                unique("bytes").as_bytes(),
                b"\"}",
            ]
            .concat(),
        ),
        case(
            "array",
            "invalid_field",
            format!("[\"{to}\", \"{}\"]", unique("array")),
        ),
        case(
            "string",
            "invalid_field",
            format!("\"{}\"", unique("string")),
        ),
        json_case(
            "subject-number",
            "invalid_field",
            json!({"to": [to], "subject": 42, "text": "hi"}),
        ),
        json_case(
            "to-string",
            "invalid_field",
            json!({"to": to, "text": "hi"}),
        ),
        json_case(
            "to-number-list",
            "invalid_field",
            json!({"to": [1, 2], "text": "hi"}),
        ),
        json_case(
            "text-object",
            "invalid_field",
            json!({"to": [to], "text": {"body": "hi"}}),
        ),
        json_case(
            "headers-list-of-strings",
            "invalid_field",
            json!({"to": [to], "text": "hi", "headers": ["X-A: 1"]}),
        ),
        json_case(
            "attachment-without-content",
            "invalid_field",
            json!({"to": [to], "text": "hi", "attachments": [{"filename": "a.txt"}]}),
        ),
        json_case(
            "unknown-field",
            "invalid_field",
            json!({"to": [to], "body": "hi"}),
        ),
        json_case(
            "no-recipient",
            "no_recipient",
            json!({"subject": "nobody", "text": "hi"}),
        ),
        json_case(
            "empty-recipients",
            "no_recipient",
            json!({"to": [], "cc": [], "bcc": [], "text": "hi"}),
        ),
        json_case(
            "address-without-at",
            "invalid_address",
            json!({"to": ["bob.example.test"], "text": "hi"}),
        ),
        json_case(
            "address-two-ats",
            "invalid_address",
            json!({"to": ["bob@@example.test"], "text": "hi"}),
        ),
        json_case(
            "address-empty",
            "invalid_address",
            json!({"to": [{"address": ""}], "text": "hi"}),
        ),
        json_case(
            "from-invalid",
            "invalid_address",
            json!({"from": "support at example", "to": [to], "text": "hi"}),
        ),
        json_case(
            "base64-invalid",
            "invalid_attachment",
            json!({"to": [to], "text": "hi", "attachments": [{"filename": "a.bin", "content_base64": "not base64!"}]}),
        ),
        json_case(
            "base64-truncated",
            "invalid_attachment",
            json!({"to": [to], "text": "hi", "attachments": [{"filename": "a.bin", "content_base64": "aGVsbG"}]}),
        ),
        json_case(
            "attachment-over-cap",
            "too_large",
            json!({"to": [to], "text": "hi", "attachments": [{"filename": "big.bin", "content_base64": over_cap}]}),
        ),
        json_case(
            "header-duplicate",
            "duplicate_header",
            json!({"to": [to], "text": "hi", "headers": [{"name": "X-Tag", "value": "1"}, {"name": "x-tag", "value": "2"}]}),
        ),
        json_case(
            "header-content-type",
            "header_not_allowed",
            json!({"to": [to], "text": "hi", "headers": {"Content-Type": "text/html"}}),
        ),
        json_case(
            "filename-crlf",
            "invalid_header_value",
            json!({"to": [to], "text": "hi", "attachments": [{"filename": "a.txt\r\nBcc: x@example.test", "content_base64": "aGk="}]}),
        ),
        json_case(
            "custom-header-lf",
            "invalid_header_value",
            json!({"to": [to], "text": "hi", "headers": {"X-Ticket": "1\nBcc: x@example.test"}}),
        ),
        json_case(
            "address-crlf",
            "invalid_header_value",
            json!({"to": [format!("{to}\r\nBcc: x@example.test")], "text": "hi"}),
        ),
    ]
}

/// Checks the dead-letter record of every case, found by its payload.
fn check_dead_letters(cases: &[Case], records: &[Raw], pipeline: &str, log: &str) {
    assert_eq!(records.len(), cases.len(), "{pipeline}; log:\n{log}");
    for case in cases {
        let name = &case.name;
        let record = records
            .iter()
            .find(|record| record.payload == case.payload)
            .unwrap_or_else(|| panic!("{pipeline}: {name} is not dead-lettered unchanged"));
        let header = |key: &str| record.headers.get(key).map(String::as_str);
        let headers = &record.headers;
        assert_eq!(
            header("mailbridge-reason"),
            Some(case.reason),
            "{pipeline}: {name}: {headers:?}"
        );
        assert_eq!(
            header("mailbridge-permanent"),
            Some("true"),
            "{pipeline}: {name}"
        );
        assert_eq!(
            header("mailbridge-attempts"),
            Some("0"),
            "{pipeline}: {name}"
        );
        assert_eq!(
            header("mailbridge-pipeline"),
            Some(pipeline),
            "{pipeline}: {name}"
        );
        assert!(
            header("mailbridge-detail").is_some_and(|detail| !detail.is_empty()),
            "{pipeline}: {name}: {headers:?}"
        );
    }
}

#[tokio::test]
async fn invalid_requests_dead_lettered_on_both_brokers() {
    let setup = Setup::new("outbound-catalogue");
    let targets = Targets::new("catalogue").await;
    let cap = format!("max_attachment_bytes = {ATTACHMENT_CAP}");
    setup
        .prepare(&(targets.kafka(&cap) + &targets.rabbitmq(&cap)))
        .await;
    let to = mail_address(&unique("catalogue"));
    let kafka_cases = cases(&to);
    let mut amqp_cases = cases(&to);
    let mallory = mail_address(&unique("mallory"));
    for injection in injection_cases(&to, &mallory) {
        let name = format!("injection-{}", injection.name);
        amqp_cases.push(json_case(&name, injection.reason, injection.request));
    }

    let bridge = setup.start();
    for case in &kafka_cases {
        produce(&targets.topic, &case.name, &case.payload).await;
    }
    for case in &amqp_cases {
        publish_to_queue(&targets.queue, &case.payload).await;
    }
    let kafka_valid = request(&to, "valid after the Kafka cases").to_string();
    let amqp_valid = request(&to, "valid after the RabbitMQ cases").to_string();
    produce(&targets.topic, "valid", kafka_valid.as_bytes()).await;
    publish_to_queue(&targets.queue, amqp_valid.as_bytes()).await;
    let kafka_dead = kafka_raw(&targets.topic_dead, kafka_cases.len(), PATIENCE).await;
    let amqp_dead = amqp_raw(&targets.queue_dead, amqp_cases.len(), PATIENCE).await;
    let mails = wait_for_mails(&to, 2, PATIENCE).await;
    let metrics = setup.metrics().await;
    bridge.stop().await;

    let log = setup.log();
    check_dead_letters(&kafka_cases, &kafka_dead, KAFKA, &log);
    check_dead_letters(&amqp_cases, &amqp_dead, RABBITMQ, &log);
    assert_eq!(mails.len(), 2, "log:\n{log}");
    assert!(
        wait_for_mails(&mallory, 1, std::time::Duration::ZERO)
            .await
            .is_empty()
    );
    for (pipeline, cases) in [(KAFKA, &kafka_cases), (RABBITMQ, &amqp_cases)] {
        let successes =
            format!("mailbridge_smtp_sent_total{{pipeline=\"{pipeline}\",result=\"success\"}} 1");
        assert!(metrics.contains(&successes), "{successes} in\n{metrics}");
        for case in cases {
            let series = format!(
                "mailbridge_dead_lettered_total{{pipeline=\"{pipeline}\",reason=\"{}\"}}",
                case.reason
            );
            assert!(metrics.contains(&series), "{series} in\n{metrics}");
        }
    }
    setup.assert_log_has_no_token();
}
