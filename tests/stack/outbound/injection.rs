//! Header injection through the fields of a request: every input is
//! dead-lettered, unchanged and with its reason, before anything reaches
//! SMTP, and the consumer goes on with the next request.

use serde_json::{Value, json};

use super::{KAFKA, Targets, request, status_event};
use crate::bridge::{PATIENCE, Setup};
use crate::mailbox::wait_for_mails;
use crate::records::{SETTLE, kafka_raw, produce};
use crate::support::{mail_address, unique};

/// One injection attempt: a name, the request and the expected reason.
pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) request: Value,
    pub(super) reason: &'static str,
}

fn case(name: &'static str, reason: &'static str, request: Value) -> Case {
    Case {
        name,
        request,
        reason,
    }
}

/// The attacks of the header injection case, in our schema's field
/// names, each with one fault so that its reason is unambiguous.
pub(super) fn cases(to: &str, mallory: &str) -> Vec<Case> {
    let bcc = format!("\r\nBcc: {mallory}");
    let value = "invalid_header_value";
    vec![
        case(
            "subject",
            value,
            json!({"to": [to], "subject": format!("Ticket 4711{bcc}\r\n\r\nInjected body"), "text": "hi"}),
        ),
        case(
            "address",
            value,
            json!({"to": [{"address": format!("{to}{bcc}")}], "subject": "s", "text": "hi"}),
        ),
        case(
            "display-name",
            value,
            json!({"from": {"name": format!("Support\nBcc: {mallory}"), "address": to}, "to": [to], "text": "hi"}),
        ),
        case(
            "to-name",
            value,
            json!({"to": [{"name": format!("Bob{bcc}"), "address": to}], "text": "hi"}),
        ),
        case(
            "in-reply-to",
            value,
            json!({"to": [to], "in_reply_to": format!("<orig@example.test>{bcc}"), "text": "hi"}),
        ),
        case(
            "references",
            value,
            json!({"to": [to], "references": [format!("<orig@example.test>{bcc}")], "text": "hi"}),
        ),
        case(
            "reply-to-id",
            value,
            json!({"to": [to], "reply_to_id": format!("orig@example.test{bcc}"), "text": "hi"}),
        ),
        case(
            "message-id",
            value,
            json!({"to": [to], "message_id": format!("<own@example.test>{bcc}"), "text": "hi"}),
        ),
        case(
            "header-value",
            value,
            json!({"to": [to], "headers": {"X-Ticket": "T-1\nX-Evil: 1"}, "text": "hi"}),
        ),
        case(
            "header-name",
            value,
            json!({"to": [to], "headers": {"X-Bad: name": "value"}, "text": "hi"}),
        ),
        case(
            "header-in-reply-to",
            "header_not_allowed",
            json!({"to": [to], "headers": {"In-Reply-To": "<orig@example.test>"}, "text": "hi"}),
        ),
        case(
            "header-bcc",
            "header_not_allowed",
            json!({"to": [to], "headers": [{"name": "Bcc", "value": mallory}], "text": "hi"}),
        ),
        case(
            "lone-cr",
            value,
            json!({"to": [to], "subject": "lone CR\rX-Evil: 1", "text": "hi"}),
        ),
        case(
            "filename",
            value,
            json!({"to": [to], "text": "hi", "attachments": [{"filename": format!("a.txt{bcc}"), "content_base64": "aGk="}]}),
        ),
        case(
            "content-type",
            value,
            json!({"to": [to], "text": "hi", "attachments": [{"filename": "a.txt", "content_type": format!("text/plain{bcc}"), "content_base64": "aGk="}]}),
        ),
    ]
}

#[tokio::test]
async fn injected_requests_are_dead_lettered_unchanged_and_never_sent() {
    let setup = Setup::new("outbound-injection");
    let targets = Targets::new("injection").await;
    setup.prepare(&targets.kafka("")).await;
    let (to, mallory) = (
        mail_address(&unique("bob")),
        mail_address(&unique("mallory")),
    );
    let mut cases = cases(&to, &mallory);
    // Every request is valid JSON with a string `id`, which the status
    // event must echo although the request fails validation.
    for case in &mut cases {
        case.request["id"] = Value::from(request_id(case.name));
    }
    let payloads: Vec<String> = cases.iter().map(|case| pretty(&case.request)).collect();

    let bridge = setup.start();
    for (case, payload) in cases.iter().zip(&payloads) {
        produce(&targets.topic, case.name, payload.as_bytes()).await;
    }
    let good = request(&to, "after the attacks").to_string();
    produce(&targets.topic, "good", good.as_bytes()).await;
    let dead = kafka_raw(&targets.topic_dead, cases.len(), PATIENCE).await;
    let mails = wait_for_mails(&to, 1, PATIENCE).await;
    let statuses = kafka_raw(&targets.topic_status, cases.len() + 1, PATIENCE).await;
    tokio::time::sleep(SETTLE).await;
    let mails_later = wait_for_mails(&to, 2, SETTLE).await;
    let metrics = setup.metrics().await;
    bridge.stop().await;

    assert_eq!(dead.len(), cases.len(), "log:\n{}", setup.log());
    for (case, payload) in cases.iter().zip(&payloads) {
        let record = dead
            .iter()
            .find(|record| record.key.as_deref() == Some(case.name))
            .unwrap_or_else(|| panic!("{} is not dead-lettered", case.name));
        assert_eq!(record.payload, payload.as_bytes(), "{} changed", case.name);
        let header = |name: &str| record.headers.get(name).map(String::as_str);
        assert_eq!(
            header("mailbridge-reason"),
            Some(case.reason),
            "{}: {:?}",
            case.name,
            record.headers
        );
        assert_eq!(
            header("mailbridge-permanent"),
            Some("true"),
            "{}",
            case.name
        );
        assert_eq!(header("mailbridge-attempts"), Some("0"), "{}", case.name);
        assert_eq!(header("mailbridge-pipeline"), Some(KAFKA), "{}", case.name);
        assert!(header("mailbridge-detail").is_some_and(|detail| !detail.is_empty()));
    }

    // Only the good request reached SMTP, and it arrived once.
    assert_eq!(mails.len(), 1, "log:\n{}", setup.log());
    assert_eq!(mails_later.len(), 1);
    let attempts: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("mailbridge_smtp_sent_total{"))
        .collect();
    assert_eq!(
        attempts,
        [r#"mailbridge_smtp_sent_total{pipeline="kafka",result="success"} 1"#]
    );
    assert!(wait_for_mails(&mallory, 1, SETTLE).await.is_empty());
    for (case, _) in cases.iter().zip(&payloads) {
        let series = format!(
            "mailbridge_dead_lettered_total{{pipeline=\"kafka\",reason=\"{}\"}}",
            case.reason
        );
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }

    let events: Vec<Value> = statuses
        .iter()
        .map(|record| status_event(&record.payload))
        .collect();
    let failed = events
        .iter()
        .filter(|event| event["status"] == "failed")
        .count();
    assert_eq!(failed, cases.len(), "{events:?}");
    for case in &cases {
        let id = request_id(case.name);
        let position = events.iter().position(|event| event["id"] == id.as_str());
        let Some(position) = position else {
            panic!("no status event with id {id} in {events:?}");
        };
        assert_eq!(events[position]["status"], "failed", "{id}");
        assert_eq!(events[position]["reason"], case.reason, "{id}");
        assert_eq!(statuses[position].key.as_deref(), Some(id.as_str()), "{id}");
    }
    assert!(
        events.iter().any(|event| event["status"] == "sent"),
        "{events:?}"
    );
    setup.assert_log_has_no_token();
}

fn request_id(case: &str) -> String {
    format!("injection-{case}")
}

/// The request as a caller might write it, with spacing and line breaks
/// that a re-serialization would lose.
fn pretty(request: &Value) -> String {
    serde_json::to_string_pretty(request).expect("request serializes") + "\n"
}
