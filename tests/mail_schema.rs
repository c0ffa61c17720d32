//! Checks of the JSON Schemas of the inbound document and the mailbox
//! reset event against the documents the code produces. Every golden
//! fixture must validate and documents with a wrong type must not. The
//! schemas must describe every field and list the same warning codes as
//! the code.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use jsonschema::{Draft, Validator};
use mailbridge::mail::{self, DocumentOptions, FetchedMail, MailboxReset, WarningCode};
use serde_json::{Value, json};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn schema(name: &str) -> Value {
    let path = root().join("schemas").join(name);
    let bytes = fs::read(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    serde_json::from_slice(&bytes).expect("schema is JSON")
}

fn validator(name: &str) -> Validator {
    let schema = schema(name);
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
    let dir = root().join("tests/fixtures/inbound");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("fixture directory is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .collect();
    paths.sort();
    paths
}

/// Builds a document with every optional field present.
fn full_document() -> Value {
    let raw = fs::read(root().join("tests/fixtures/inbound/header-8bit-undecodable.eml")).unwrap();
    let fetched = FetchedMail {
        account: "support",
        mailbox: "INBOX",
        uidvalidity: 7,
        uid: 9,
        flags: vec![],
        received_at: None,
        size: Some(312),
        raw: &raw,
    };
    let options = DocumentOptions {
        raw_bytes: 1 << 20,
        ..DocumentOptions::default()
    };

    let doc: Value = serde_json::from_slice(&mail::build(&fetched, &options).to_json()).unwrap();
    assert!(doc["raw_base64"].is_string());
    assert!(doc["headers"][2]["raw_base64"].is_string());
    doc
}

#[test]
fn golden_documents_validate() {
    let validator = validator("inbound-mail.v1.json");
    let mut checked = 0;

    for eml in fixtures() {
        let raw = fs::read(&eml).unwrap();
        let fetched = FetchedMail {
            account: "support",
            mailbox: "INBOX",
            uidvalidity: u32::MAX,
            uid: 1,
            flags: vec!["\\Seen".to_owned()],
            received_at: Some(DateTime::parse_from_rfc3339("2024-03-10T09:15:00+01:00").unwrap()),
            size: None,
            raw: &raw,
        };
        let options = DocumentOptions {
            attachment_bytes: 1 << 20,
            raw_bytes: 1 << 20,
            ..DocumentOptions::default()
        };
        let built: Value =
            serde_json::from_slice(&mail::build(&fetched, &options).to_json()).unwrap();
        assert_eq!(
            errors(&validator, &built),
            Vec::<String>::new(),
            "{}",
            eml.display()
        );

        let golden = fs::read(eml.with_extension("json")).expect("golden file exists");
        let golden: Value = serde_json::from_slice(&golden).unwrap();
        assert_eq!(
            errors(&validator, &golden),
            Vec::<String>::new(),
            "{}",
            eml.display()
        );
        checked += 1;
    }

    assert!(checked > 0, "no fixture found");
}

#[test]
fn document_with_optional_fields_validates() {
    let validator = validator("inbound-mail.v1.json");

    assert_eq!(errors(&validator, &full_document()), Vec::<String>::new());
}

/// A change that makes a valid document invalid.
type Change = fn(&mut Value);

#[test]
fn schema_rejects_wrong_types() {
    let validator = validator("inbound-mail.v1.json");
    let cases: [(&str, Change); 8] = [
        ("uid as string", |doc| doc["uid"] = json!("9")),
        ("uid above u32", |doc| doc["uid"] = json!(4_294_967_296u64)),
        ("date with offset", |doc| {
            doc["date"] = json!("2024-03-17T11:00:00+01:00")
        }),
        ("unknown field", |doc| doc["extra"] = json!(true)),
        ("missing id", |doc| {
            doc.as_object_mut().unwrap().remove("id");
        }),
        ("unknown warning code", |doc| {
            doc["warnings"] = json!([{ "code": "no_such_code", "message": "x" }]);
        }),
        ("address without addr-spec", |doc| {
            doc["from"] = json!([{ "name": "Cafe Example", "address": null }]);
        }),
        ("uppercase hash", |doc| {
            doc["content_sha256"] = json!("A".repeat(64));
        }),
    ];

    for (case, change) in cases {
        let mut doc = full_document();
        change(&mut doc);
        assert!(
            !validator.is_valid(&doc),
            "schema accepted a document with {case}"
        );
    }
}

#[test]
fn schema_lists_every_warning_code() {
    let schema = schema("inbound-mail.v1.json");
    let listed: BTreeSet<String> = schema["$defs"]["warning"]["properties"]["code"]["oneOf"]
        .as_array()
        .expect("code is a oneOf list")
        .iter()
        .map(|entry| entry["const"].as_str().expect("const code").to_owned())
        .collect();

    let in_code: BTreeSet<String> = WarningCode::ALL
        .iter()
        .map(|code| code.as_str().to_owned())
        .collect();
    assert_eq!(listed, in_code);
}

#[test]
fn schemas_describe_every_field() {
    for name in ["inbound-mail.v1.json", "mailbox-reset.v1.json"] {
        let mut missing = Vec::new();
        undescribed(&schema(name), "", &mut missing);
        assert_eq!(
            missing,
            Vec::<String>::new(),
            "{name} has fields without description"
        );
    }
}

/// Collects the paths of properties, definitions and enum entries that
/// have no `description`.
fn undescribed(node: &Value, path: &str, missing: &mut Vec<String>) {
    let Some(object) = node.as_object() else {
        return;
    };
    for key in ["properties", "$defs"] {
        for (name, child) in object
            .get(key)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let child_path = format!("{path}/{key}/{name}");
            if child.get("description").is_none() {
                missing.push(child_path.clone());
            }
            undescribed(child, &child_path, missing);
        }
    }
    for (index, entry) in object
        .get("oneOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if entry.get("const").is_some() && entry.get("description").is_none() {
            missing.push(format!("{path}/oneOf/{index}"));
        }
    }
}

#[test]
fn reset_event_validates() {
    let validator = validator("mailbox-reset.v1.json");
    let detected_at: DateTime<Utc> = "2024-07-12T01:30:20Z".parse().unwrap();
    let reset = MailboxReset::new(
        "support",
        "INBOX",
        1_720_000_000,
        1_720_755_020,
        detected_at,
        "republish",
    );

    let event: Value = serde_json::from_slice(&reset.to_json()).unwrap();

    assert_eq!(errors(&validator, &event), Vec::<String>::new());
    assert_eq!(event["detected_at"], "2024-07-12T01:30:20Z");
}

#[test]
fn reset_schema_rejects_wrong_types() {
    let validator = validator("mailbox-reset.v1.json");
    let detected_at: DateTime<Utc> = "2024-07-12T01:30:20Z".parse().unwrap();
    let reset = MailboxReset::new("support", "INBOX", 1, 2, detected_at, "republish");
    let event: Value = serde_json::from_slice(&reset.to_json()).unwrap();

    let mut wrong = event.clone();
    wrong["previous_uidvalidity"] = json!("1");
    assert!(
        !validator.is_valid(&wrong),
        "accepted previous_uidvalidity as string"
    );

    let mut wrong = event.clone();
    wrong["detected_at"] = json!("yesterday");
    assert!(
        !validator.is_valid(&wrong),
        "accepted detected_at that is not a time"
    );

    let mut wrong = event;
    wrong.as_object_mut().unwrap().remove("policy");
    assert!(
        !validator.is_valid(&wrong),
        "accepted an event without policy"
    );
}

#[test]
fn schema_names_match_constants() {
    assert_eq!(
        schema("inbound-mail.v1.json")["title"],
        mail::INBOUND_SCHEMA
    );
    assert_eq!(
        schema("mailbox-reset.v1.json")["title"],
        mail::MAILBOX_RESET_SCHEMA
    );
}
