//! Checks of the JSON Schema of the outbound send request against the
//! code. Every fixture that mailbridge accepts must validate, fixtures
//! rejected for a rule the schema expresses must not, and the schema must
//! describe every member of the serde types.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use jsonschema::{Draft, Validator};
use mailbridge::mail::outbound::{self, Address, Attachment, Header, Limits, OutboundMail};
use serde_json::{Value, json};

/// Rejected fixtures whose rule JSON Schema cannot express, with the
/// reason. Every other rejected fixture must fail the schema too. The
/// attachment cap is not among them: this test uses the default cap,
/// under which every fixture fits.
const BEYOND_SCHEMA: [(&str, &str); 3] = [
    (
        "duplicate-header.json",
        "names compared without regard to case",
    ),
    ("inline-without-html.json", "depends on another member"),
    ("reply-to-id-conflict.json", "compares two members"),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn schema() -> Value {
    let path = root().join("schemas/outbound-mail.v1.json");
    let bytes = fs::read(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    serde_json::from_slice(&bytes).expect("schema is JSON")
}

fn validator() -> Validator {
    let schema = schema();
    jsonschema::meta::validate(&schema).expect("schema is valid JSON Schema");
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
}

fn errors(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|error| format!("{} at {}", error, error.instance_path))
        .collect()
}

fn fixtures() -> Vec<PathBuf> {
    let dir = root().join("tests/fixtures/outbound");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("fixture directory is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.ends_with(".json") && !name.ends_with(".limits.json")
        })
        .collect();
    paths.sort();
    paths
}

/// Returns a document with every member set.
fn full_mail() -> OutboundMail {
    let address = |name: &str, address: &str| Address {
        name: Some(name.to_owned()),
        address: address.to_owned(),
    };
    OutboundMail {
        id: Some("req-1".into()),
        from: Some(address("Support", "support@example.test")),
        to: vec![address("Bob", "bob@example.test")],
        cc: vec![address("Ana", "ana@example.test")],
        bcc: vec![address("Audit", "audit@example.test")],
        reply_to: vec![address("Desk", "desk@example.test")],
        subject: Some("Ticket 4711".into()),
        text: Some("hello".into()),
        html: Some("<p>hello <img src=\"cid:logo\"></p>".into()),
        message_id: Some("<r1@mailbridge.example.test>".into()),
        in_reply_to: Some("<m1@example.test>".into()),
        references: vec!["<m0@example.test>".into(), "<m1@example.test>".into()],
        reply_to_id: Some("m1@example.test".into()),
        headers: vec![Header {
            name: "X-Ticket".into(),
            value: "4711".into(),
        }],
        attachments: vec![Attachment {
            filename: "logo.png".into(),
            content_type: Some("image/png".into()),
            content_base64: "iVBORw0KGgo=".into(),
            content_id: Some("logo".into()),
        }],
    }
}

#[test]
fn fixtures_agree_with_the_schema() {
    let validator = validator();
    let mut accepted = 0;
    let mut rejected = 0;
    let mut beyond_seen = 0;

    for path in fixtures() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let payload = fs::read(&path).unwrap();
        let outcome = outbound::parse(&payload, &Limits::default());
        let Ok(instance) = serde_json::from_slice::<Value>(&payload) else {
            assert_eq!(outcome.unwrap_err().kind(), "not_json", "{name}");
            continue;
        };

        match outcome {
            Ok(_) => {
                assert_eq!(
                    errors(&validator, &instance),
                    Vec::<String>::new(),
                    "{name}"
                );
                accepted += 1;
            }
            Err(rejection) => {
                let beyond = BEYOND_SCHEMA.iter().any(|(fixture, _)| *fixture == name);
                let kind = rejection.kind();
                assert_eq!(validator.is_valid(&instance), beyond, "{name} ({kind})");
                rejected += 1;
                beyond_seen += usize::from(beyond);
            }
        }
    }

    assert!(
        accepted >= 10,
        "only {accepted} accepted fixtures validated"
    );
    assert!(rejected >= 10, "only {rejected} rejected fixtures checked");
    assert_eq!(
        beyond_seen,
        BEYOND_SCHEMA.len(),
        "an exempted fixture is missing"
    );
}

#[test]
fn schema_rejects_wrong_types() {
    let validator = validator();
    let valid = json!({"to": ["bob@example.test"], "subject": "s", "text": "t"});
    assert!(validator.is_valid(&valid));

    let cases = [
        ("subject", json!(4711)),
        ("to", json!("bob@example.test")),
        ("text", json!(["t"])),
        ("headers", json!("X-A: 1")),
        ("attachments", json!({"filename": "a"})),
        ("reply_to_id", json!(7)),
    ];
    for (field, value) in cases {
        let mut instance = valid.clone();
        instance[field] = value;
        assert!(!validator.is_valid(&instance), "{field} of the wrong type");
    }
}

#[test]
fn full_document_validates() {
    let validator = validator();
    let instance = serde_json::to_value(full_mail()).unwrap();

    assert_eq!(errors(&validator, &instance), Vec::<String>::new());
    assert!(outbound::parse(instance.to_string().as_bytes(), &Limits::default()).is_ok());
}

#[test]
fn schema_lists_every_member() {
    let schema = schema();
    let documented: BTreeSet<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let serialized = serde_json::to_value(full_mail()).unwrap();
    let members: BTreeSet<&str> = serialized
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();

    assert_eq!(documented, members);
}

#[test]
fn every_property_is_described() {
    fn walk(value: &Value, path: &str, missing: &mut Vec<String>) {
        let Some(object) = value.as_object() else {
            return;
        };
        for (key, child) in object {
            if key == "properties" {
                for (name, property) in child.as_object().unwrap() {
                    if property.get("description").is_none() {
                        missing.push(format!("{path}/{name}"));
                    }
                }
            }
            walk(child, &format!("{path}/{key}"), missing);
        }
        if let Some(defs) = object.get("$defs").and_then(Value::as_object) {
            for (name, def) in defs {
                if def.get("description").is_none() {
                    missing.push(format!("{path}/$defs/{name}"));
                }
            }
        }
    }

    let mut missing = Vec::new();
    walk(&schema(), "", &mut missing);
    // The recipient branches of anyOf only restate to, cc and bcc.
    missing.retain(|path| !path.starts_with("/anyOf"));
    assert_eq!(missing, Vec::<String>::new());
}

#[test]
fn header_names_agree_with_the_code() {
    let validator = validator();
    let names = [
        "X-Ticket",
        "x-lower",
        "List-Unsubscribe",
        "list-unsubscribe-post",
        "AUTO-SUBMITTED",
        "Organization",
        "Bcc",
        "Content-Type",
        "MIME-Version",
        "Received",
        "From",
        "Date",
        "Message-ID",
        "X-",
        "X-Bad: name",
        "X-Ünicode",
    ];
    for name in names {
        let instance = json!({"to": ["bob@example.test"], "headers": {name: "v"}});
        let code = outbound::parse(instance.to_string().as_bytes(), &Limits::default()).is_ok();
        assert_eq!(validator.is_valid(&instance), code, "{name}");
    }
}

#[test]
fn msg_ids_agree_with_the_code() {
    let validator = validator();
    let ids = [
        "<a.b@example.test>",
        "a.b@example.test",
        " <a@[127.0.0.1]> ",
        "<12345>",
        "12345",
        "<a@b",
        "a@b>",
        "<a b@c>",
        "<a,b@c>",
        "<>",
        "a@b@c",
    ];
    for field in ["message_id", "in_reply_to"] {
        for id in ids {
            let instance = json!({"to": ["bob@example.test"], field: id});
            let code = outbound::parse(instance.to_string().as_bytes(), &Limits::default()).is_ok();
            assert_eq!(validator.is_valid(&instance), code, "{field} {id:?}");
        }
    }
}
