//! Tests of [`super::parse`]: JSON errors, field paths and the rules
//! that join several fields.

use serde_json::{Value, json};

use super::*;

fn parse_value(value: &Value) -> Result<Request, Rejection> {
    parse(value.to_string().as_bytes(), &Limits::default())
}

fn rejected(value: &Value) -> (RejectReason, Option<String>) {
    let rejection = parse_value(value).unwrap_err();
    (rejection.reason, rejection.field)
}

fn minimal() -> Value {
    json!({"to": [{"address": "bob@example.test"}], "text": "hi"})
}

fn with(field: &str, value: Value) -> Value {
    let mut request = minimal();
    request[field] = value;
    request
}

#[test]
fn minimal_request_parses() {
    let request = parse_value(&minimal()).unwrap();

    assert_eq!(request.recipients(), ["bob@example.test"]);
    assert_eq!(request.from_address(), None);
    assert_eq!(request.id(), None);
    assert_eq!(request.text(), Some("hi"));
}

#[test]
fn not_json() {
    for payload in [&b"hello"[..], b"{\"to\": [", b"", b"{} {}", b"\xff\xfe{}"] {
        let rejection = parse(payload, &Limits::default()).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::NotJson, "{payload:?}");
        assert_eq!(rejection.field, None);
    }
}

#[test]
fn not_an_object() {
    for payload in [
        "[]",
        "[\"id\", null, [\"b@example.test\"]]",
        "\"text\"",
        "null",
        "42",
    ] {
        let rejection = parse(payload.as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::InvalidField, "{payload}");
        assert!(
            rejection.detail.contains("JSON object"),
            "{}",
            rejection.detail
        );
    }
}

#[test]
fn wrong_types_name_the_path() {
    let cases = [
        (with("subject", json!(42)), "subject"),
        (with("to", json!("bob@example.test")), "to"),
        (with("to", json!([{"address": 7}])), "to[0].address"),
        (with("to", json!([{"name": "Bob"}])), "to[0]"),
        (
            with("headers", json!({"X-Ticket": 4711})),
            "headers.X-Ticket",
        ),
        (with("headers", json!("X-Ticket: 1")), "headers"),
        (
            with("attachments", json!([{"filename": "a"}])),
            "attachments[0]",
        ),
        (
            with("attachments", json!([["a.txt", null, "aGk="]])),
            "attachments[0]",
        ),
        (with("headers", json!([["X-A", "1"]])), "headers[0]"),
        (with("references", json!("<a@b>")), "references"),
    ];
    for (request, path) in cases {
        let rejection = parse_value(&request).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::InvalidField, "{request}");
        assert_eq!(rejection.field.as_deref(), Some(path), "{request}");
    }
}

#[test]
fn unknown_and_repeated_fields() {
    let unknown = rejected(&with("bodyy", json!("typo")));
    assert_eq!(unknown.0, RejectReason::InvalidField);

    let payload = br#"{"to": ["bob@example.test"], "subject": "a", "subject": "b"}"#;
    let repeated = parse(payload, &Limits::default()).unwrap_err();
    assert_eq!(repeated.reason, RejectReason::InvalidField);
    assert!(repeated.detail.contains("duplicate"), "{}", repeated.detail);
}

#[test]
fn type_errors_do_not_echo_strings() {
    let secret = "s3cr3t-token-value";
    let rejection = parse_value(&with("to", json!(secret))).unwrap_err();

    assert!(!rejection.detail.contains(secret), "{}", rejection.detail);
    assert!(
        rejection.detail.contains("invalid type: string"),
        "{}",
        rejection.detail
    );
}

#[test]
fn nulls_mean_absent() {
    let request = json!({
        "to": ["bob@example.test"], "cc": null, "bcc": null, "reply_to": null,
        "references": null, "headers": null, "attachments": null, "subject": null,
    });

    assert!(parse_value(&request).is_ok());
}

#[test]
fn no_recipient() {
    let request = json!({"cc": [], "text": "hi"});

    assert_eq!(
        rejected(&request),
        (RejectReason::NoRecipient, Some("to".into()))
    );
}

#[test]
fn bcc_alone_is_enough() {
    let request = json!({"bcc": ["hidden@example.test"]});

    assert_eq!(
        parse_value(&request).unwrap().recipients(),
        ["hidden@example.test"]
    );
}

#[test]
fn recipients_join_lists_once() {
    let request = json!({
        "to": ["a@example.test", {"name": "B", "address": "b@Example.TEST"}],
        "cc": ["b@example.test", "c@example.test"],
        "bcc": ["a@example.test", "d@bücher.test"],
    });
    let request = parse_value(&request).unwrap();

    assert_eq!(
        request.recipients(),
        [
            "a@example.test",
            "b@example.test",
            "c@example.test",
            "d@xn--bcher-kva.test"
        ]
    );
}

#[test]
fn header_forms_agree() {
    // Raw text, because `json!` sorts object keys.
    let object = br#"{"to": ["b@example.test"], "headers": {"X-Ticket": "T-1", "Comments": "c"}}"#;
    let list = with(
        "headers",
        json!([{"name": "X-Ticket", "value": "T-1"}, {"name": "Comments", "value": "c"}]),
    );

    let object = parse(object, &Limits::default()).unwrap();
    let list = parse_value(&list).unwrap();
    assert_eq!(object.headers(), list.headers());
    assert_eq!(object.headers()[0].name, "X-Ticket");
}

#[test]
fn reply_to_id_fills_threading() {
    let request = parse_value(&with("reply_to_id", json!("orig-1@mail.example.test"))).unwrap();

    assert_eq!(request.in_reply_to(), Some("orig-1@mail.example.test"));
    assert_eq!(request.references(), ["orig-1@mail.example.test"]);
}

#[test]
fn reply_to_id_keeps_given_references() {
    let mut request = with("reply_to_id", json!("<c@example.test>"));
    request["references"] = json!(["a@example.test", "<b@example.test>"]);
    let request = parse_value(&request).unwrap();

    assert_eq!(request.in_reply_to(), Some("c@example.test"));
    assert_eq!(request.references(), ["a@example.test", "b@example.test"]);
}

#[test]
fn reply_to_id_conflict() {
    let mut request = with("reply_to_id", json!("a@example.test"));
    request["in_reply_to"] = json!("<b@example.test>");
    assert_eq!(
        rejected(&request),
        (RejectReason::InvalidField, Some("reply_to_id".into()))
    );

    request["in_reply_to"] = json!("<a@example.test>");
    assert!(parse_value(&request).is_ok());
}

#[test]
fn message_id_is_checked() {
    let request = parse_value(&with("message_id", json!("<k-1@mail.example.test>"))).unwrap();
    assert_eq!(request.message_id(), Some("k-1@mail.example.test"));

    assert_eq!(
        rejected(&with("message_id", json!("no-at-sign"))),
        (RejectReason::InvalidHeaderValue, Some("message_id".into()))
    );
}

#[test]
fn id_is_checked() {
    assert_eq!(
        parse_value(&with("id", json!("req-7"))).unwrap().id(),
        Some("req-7")
    );
    assert_eq!(
        rejected(&with("id", json!(""))).0,
        RejectReason::InvalidField
    );
    assert_eq!(
        rejected(&with("id", json!("a\nb"))).0,
        RejectReason::InvalidHeaderValue
    );
}

#[test]
fn huge_values_are_not_echoed() {
    let huge = format!("{}@example.test", "x".repeat(100_000));
    let rejection = parse_value(&with("to", json!([huge]))).unwrap_err();

    assert_eq!(rejection.reason, RejectReason::InvalidAddress);
    assert!(rejection.to_string().len() < 300, "{rejection}");
}

#[test]
fn serialize_round_trips() {
    let request = json!({
        "id": "r1", "from": {"name": "S", "address": "s@example.test"},
        "to": ["bob@example.test"], "subject": "s",
        "headers": [{"name": "X-A", "value": "1"}],
        "attachments": [{"filename": "a.txt", "content_base64": "aGk="}],
    });
    let mail: OutboundMail = serde_json::from_value(request).unwrap();
    let again: OutboundMail = serde_json::from_slice(&serde_json::to_vec(&mail).unwrap()).unwrap();

    assert_eq!(again, mail);
    assert_eq!(
        serde_json::to_value(&mail).unwrap()["to"][0],
        json!({"address": "bob@example.test"})
    );
}

#[test]
fn lenient_id_of_rejected_payloads() {
    let cases: [(&[u8], Option<&str>); 9] = [
        (br#"{"id": "r-1", "to": "not a list"}"#, Some("r-1")),
        (br#" {"subject": "a\nb", "id": "r-2"}"#, Some("r-2")),
        (br#"{"id": 7, "to": []}"#, None),
        (br#"{"id": null}"#, None),
        (br#"{"id": ""}"#, None),
        (br#"{"id": "a\nb"}"#, None),
        (br#"["r-3"]"#, None),
        (br#"{"id": "r-4""#, None),
        (b"not json", None),
    ];
    for (payload, expected) in cases {
        let payload_text = String::from_utf8_lossy(payload);
        assert_eq!(
            lenient_id(payload).as_deref(),
            expected,
            "payload {payload_text}"
        );
    }
}
