//! Golden tests of outbound send requests. Each `NAME.json` under
//! `tests/fixtures/outbound` is parsed and built, and the outcome is
//! compared with the file next to it. `NAME.eml` contains the built
//! message, with its Date, generated Message-ID and MIME boundaries
//! replaced by placeholders. `NAME.rejected` contains `reason field`, or
//! `reason -` when no field is named. `NAME.limits.json`, when present,
//! sets the attachment cap. On a mismatch the actual outcome is written
//! to `NAME.eml.failed` or `NAME.rejected.failed`, so that a reviewed
//! change can be accepted by renaming the file.
//!
//! Every built message is also checked on the wire (CRLF only, short
//! lines, no line starting with a dot, no Bcc) and parsed back with
//! mail-parser, which must return the request's values.

use std::fs;
use std::path::{Path, PathBuf};

use mail_parser::{MessageParser, MimeHeaders};
use mailbridge::mail::outbound::{self, Limits, Rejection, Request};
use mailbridge::smtp::mime::{self, Built};
use serde::Deserialize;

const ACCOUNT: &str = "account@example.test";
const ID_DOMAIN: &str = "mailbridge.example.test";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureLimits {
    max_attachment_bytes: u64,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/outbound")
}

fn fixtures() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(fixture_dir())
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

fn limits_for(json: &Path) -> Limits {
    match fs::read(json.with_extension("limits.json")) {
        Ok(bytes) => {
            let limits: FixtureLimits = serde_json::from_slice(&bytes).expect("valid limits file");
            Limits {
                max_attachment_bytes: limits.max_attachment_bytes,
            }
        }
        Err(_) => Limits::default(),
    }
}

fn run(json: &Path) -> (Option<Request>, Result<Built, Rejection>) {
    let payload = fs::read(json).expect("fixture is readable");
    match outbound::parse(&payload, &limits_for(json)) {
        Ok(request) => {
            let built = mime::build(&request, ACCOUNT, ID_DOMAIN);
            (Some(request), built)
        }
        Err(rejection) => (None, Err(rejection)),
    }
}

/// Loads a fixture that must build.
fn load(name: &str) -> (Request, Built) {
    let (request, built) = run(&fixture_dir().join(format!("{name}.json")));
    let built = built.unwrap_or_else(|err| panic!("{name}: {err}"));
    (request.unwrap(), built)
}

/// Replaces what changes from build to build: the Date header, the
/// generated Message-ID and the MIME boundaries.
fn normalise(request: &Request, built: &Built) -> String {
    let mut text = String::from_utf8(built.bytes.clone()).expect("message is ASCII");

    let mut boundaries = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("boundary=\"") {
        let after = &rest[start + 10..];
        let end = after.find('"').expect("closing quote");
        boundaries.push(after[..end].to_owned());
        rest = &after[end..];
    }
    for (index, boundary) in boundaries.iter().enumerate() {
        text = text.replace(boundary, &format!("BOUNDARY-{}", index + 1));
    }

    if request.message_id().is_none() {
        text = text.replace(&built.message_id, "<MESSAGE-ID>");
    }
    text.split_inclusive("\r\n")
        .map(|line| match line.starts_with("Date: ") {
            true => "Date: DATE\r\n",
            false => line,
        })
        .collect()
}

fn rejected_line(rejection: &Rejection) -> String {
    format!(
        "{} {}\n",
        rejection.reason.as_str(),
        rejection.field.as_deref().unwrap_or("-")
    )
}

/// Checks what every relay and receiver needs of the wire form.
fn check_wire(name: &str, built: &Built) {
    let bytes = &built.bytes;
    assert!(
        bytes.iter().all(|&b| b > 0 && b < 128),
        "{name}: not 7-bit ASCII"
    );
    for (index, &byte) in bytes.iter().enumerate() {
        if byte == b'\n' {
            assert!(
                index > 0 && bytes[index - 1] == b'\r',
                "{name}: bare LF at {index}"
            );
        }
        if byte == b'\r' {
            assert_eq!(
                bytes.get(index + 1),
                Some(&b'\n'),
                "{name}: bare CR at {index}"
            );
        }
    }

    let text = String::from_utf8_lossy(bytes);
    let (head, _) = text.split_once("\r\n\r\n").expect("header and body");
    for line in head.split("\r\n") {
        assert!(
            line.len() <= 78,
            "{name}: header line of {} octets: {line}",
            line.len()
        );
        assert!(
            !line.to_ascii_lowercase().starts_with("bcc:"),
            "{name}: Bcc header"
        );
    }
    for line in text.split("\r\n") {
        assert!(line.len() <= 998, "{name}: line of {} octets", line.len());
        assert!(
            !line.starts_with('.'),
            "{name}: line starts with a dot: {line}"
        );
    }
}

/// Parses the message back and compares it with the request.
fn check_round_trip(name: &str, request: &Request, built: &Built) {
    let message = MessageParser::default()
        .parse(&built.bytes)
        .unwrap_or_else(|| panic!("{name}: mail-parser cannot read the message"));
    let same = |parsed: Option<std::borrow::Cow<'_, str>>, expected: &str| {
        same_text(&parsed.unwrap_or_default(), expected)
    };

    assert_eq!(message.subject(), request.subject(), "{name}: subject");
    assert_eq!(
        message.message_id(),
        built.message_id.trim_matches(['<', '>']).into()
    );
    if let Some(text) = request.text() {
        assert!(
            same(message.body_text(0), text),
            "{name}: text {:?}",
            message.body_text(0)
        );
    }
    if let Some(html) = request.html() {
        assert!(
            same(message.body_html(0), html),
            "{name}: html {:?}",
            message.body_html(0)
        );
    }

    for (header, expected) in [
        (message.to(), request.to()),
        (message.cc(), request.cc()),
        (message.reply_to(), request.reply_to()),
    ] {
        let parsed: Vec<(Option<&str>, Option<&str>)> = header
            .map(|list| {
                list.iter()
                    .map(|addr| (addr.name(), addr.address()))
                    .collect()
            })
            .unwrap_or_default();
        let expected: Vec<(Option<&str>, Option<&str>)> = expected
            .iter()
            .map(|mailbox| (mailbox.name(), Some(mailbox.address())))
            .collect();
        assert_eq!(parsed, expected, "{name}: address list");
    }

    let parts: Vec<_> = message.attachments().collect();
    assert_eq!(
        parts.len(),
        request.attachments().len(),
        "{name}: attachments"
    );
    for (part, attachment) in parts.iter().zip(request.attachments()) {
        assert_eq!(
            part.attachment_name(),
            Some(attachment.filename()),
            "{name}"
        );
        assert_eq!(part.contents(), attachment.content(), "{name}: content");
        assert_eq!(
            part.content_id(),
            attachment.content_id(),
            "{name}: content id"
        );
    }
}

/// Compares a body read back with the request's, line breaks aside. A
/// single-part body gains the CRLF that ends the message's last line.
fn same_text(parsed: &str, expected: &str) -> bool {
    let unix = |text: &str| text.replace("\r\n", "\n").replace('\r', "\n");
    let (parsed, expected) = (unix(parsed), unix(expected));

    parsed == expected || parsed == format!("{expected}\n")
}

#[test]
fn outcomes_match_golden_files() {
    let mut ran = 0;
    let mut failed = Vec::new();

    for json in fixtures() {
        let name = json.file_stem().unwrap().to_string_lossy().into_owned();
        let (request, built) = run(&json);
        let (actual, extension) = match (&request, &built) {
            (Some(request), Ok(built)) => {
                check_wire(&name, built);
                check_round_trip(&name, request, built);
                (normalise(request, built), "eml")
            }
            (_, Err(rejection)) => (rejected_line(rejection), "rejected"),
            (None, Ok(_)) => unreachable!("built without a request"),
        };

        let expected = fs::read_to_string(json.with_extension(extension)).ok();
        let failed_path = json.with_extension(format!("{extension}.failed"));
        if expected.as_deref() == Some(actual.as_str()) {
            let _ = fs::remove_file(&failed_path);
        } else {
            fs::write(&failed_path, &actual).expect("write .failed file");
            failed.push(format!("{name}.{extension}"));
        }
        ran += 1;
    }

    assert!(ran > 0, "no fixture found in {}", fixture_dir().display());
    assert!(
        failed.is_empty(),
        "{} of {ran} fixtures differ from their golden file (see *.failed): {failed:?}",
        failed.len()
    );
}

fn reject(name: &str) -> Rejection {
    let (_, built) = run(&fixture_dir().join(format!("{name}.json")));
    built.expect_err("fixture is rejected")
}

#[test]
fn header_injections_are_rejected() {
    let cases = [
        ("inject-subject", "subject"),
        ("inject-address", "to[0].address"),
        ("inject-display-name", "from.name"),
        ("inject-custom-headers", "headers.In-Reply-To"),
        ("inject-lone-cr", "subject"),
    ];
    for (name, field) in cases {
        let rejection = reject(name);
        assert_eq!(rejection.kind(), "invalid_header_value", "{name}");
        assert_eq!(rejection.field.as_deref(), Some(field), "{name}");
        assert!(!rejection.is_transient(), "{name}");
        assert!(rejection.to_string().contains(field), "{name}: {rejection}");
    }
}

#[test]
fn each_header_fault_is_rejected() {
    // The custom-header input has three faults; each one is caught by itself.
    let base = r#"{"to": ["bob@example.test"], "text": "hello", "headers": "#;
    let cases = [
        (
            r#"{"X-Ticket": "T-1\nX-Evil: 1"}"#,
            "invalid_header_value",
            "headers.X-Ticket",
        ),
        (
            r#"{"X-Bad: name": "value"}"#,
            "invalid_header_value",
            "headers.X-Bad: name",
        ),
        (
            r#"{"In-Reply-To": "<orig@example.test>"}"#,
            "header_not_allowed",
            "headers.In-Reply-To",
        ),
    ];
    for (headers, reason, field) in cases {
        let payload = format!("{base}{headers}}}");
        let rejection = outbound::parse(payload.as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!(rejection.kind(), reason, "{headers}");
        assert_eq!(rejection.field.as_deref(), Some(field), "{headers}");
    }
}

#[test]
fn non_ascii_names_round_trip() {
    let (_, built) = load("non-ascii-names");
    let message = MessageParser::default().parse(&built.bytes).unwrap();
    let to: Vec<_> = message.to().unwrap().iter().collect();

    assert_eq!(
        message.subject(),
        Some(
            "Administratör: Bestätigung der Änderung – 発注書 №42 😀 and a fairly long tail \
             of ascii words to force folding of the header line"
        )
    );
    assert_eq!(
        message.from().unwrap().first().unwrap().name(),
        Some("Müller, Jörg")
    );
    assert_eq!(to.len(), 2);
    assert_eq!(to[0].name(), Some("王小明"));
    assert_eq!(to[0].address(), Some("wang@example.test"));
    assert_eq!(to[1].name(), Some("Doe, John"));
    assert_eq!(to[1].address(), Some("john@example.test"));
    let cc = message.cc().unwrap().first().unwrap();
    assert_eq!(cc.name(), Some("\"Quoted\" Name"));
}

#[test]
fn ascii_name_with_comma_is_quoted() {
    let (_, built) = load("non-ascii-names");
    let wire = String::from_utf8(built.bytes).unwrap();
    let to = header_block(&wire, "To");

    // Receivers that decode encoded-words before splitting the list
    // would see two addresses if "Doe, John" were an encoded-word.
    assert!(to.contains("\"Doe, John\""), "{to}");
    assert!(to.contains("<john@example.test>"), "{to}");
    assert!(to.contains("<wang@example.test>"), "{to}");
    for word in to.split_whitespace().filter(|word| word.contains("=?")) {
        assert!(
            word.starts_with("=?") && word.ends_with("?="),
            "glued word: {word}"
        );
    }
}

/// Returns a header field of the top-level header, unfolded.
fn header_block(wire: &str, name: &str) -> String {
    let (head, _) = wire.split_once("\r\n\r\n").unwrap();
    let unfolded = head.replace("\r\n ", " ");
    let prefix = format!("{name}: ");
    unfolded
        .split("\r\n")
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {name} header"))
}

#[test]
fn bcc_only_in_envelope() {
    let (_, built) = load("bcc-only-envelope");
    let wire = String::from_utf8(built.bytes.clone()).unwrap();

    assert_eq!(
        built.recipients,
        [
            "bob@example.test",
            "auditor@example.test",
            "archive@example.test"
        ]
    );
    assert!(!wire.contains("auditor"), "{wire}");
    assert!(!wire.contains("archive"), "{wire}");
    assert!(!wire.contains("Hidden Auditor"), "{wire}");
    assert_eq!(header_block(&wire, "To"), "bob@example.test");
}

#[test]
fn envelope_sender_defaults_to_account() {
    let (_, default) = load("text-only");
    let (_, own) = load("bcc-only");

    assert_eq!(default.envelope_from, "support@example.test");
    assert_eq!(own.envelope_from, ACCOUNT);
}

#[test]
fn idn_domains_are_ascii_everywhere() {
    let (_, built) = load("idn-domain");
    let wire = String::from_utf8(built.bytes.clone()).unwrap();

    assert_eq!(built.envelope_from, "info@xn--bcherei-n2a.example");
    assert_eq!(built.recipients, ["leser@xn--mnchen-3ya.example"]);
    assert_eq!(header_block(&wire, "To"), "leser@xn--mnchen-3ya.example");
}

#[test]
fn long_line_is_wrapped_and_restored() {
    let (request, built) = load("long-line");
    let message = MessageParser::default().parse(&built.bytes).unwrap();
    let wire = String::from_utf8(built.bytes.clone()).unwrap();

    assert!(
        request
            .text()
            .unwrap()
            .lines()
            .any(|line| line.len() == 2000)
    );
    assert!(wire.contains("Content-Transfer-Encoding: quoted-printable"));
    assert!(wire.split("\r\n").all(|line| line.len() <= 78));
    assert!(same_text(
        &message.body_text(0).unwrap(),
        request.text().unwrap()
    ));
}

#[test]
fn leading_dots_are_encoded() {
    let (request, built) = load("leading-dot");
    let message = MessageParser::default().parse(&built.bytes).unwrap();
    let wire = String::from_utf8(built.bytes.clone()).unwrap();

    assert!(wire.split("\r\n").all(|line| !line.starts_with('.')));
    assert!(wire.split("\r\n").all(|line| !line.starts_with("From ")));
    assert!(wire.contains("\r\n=2E\r\n"), "the lone dot line is escaped");
    assert!(same_text(
        &message.body_text(0).unwrap(),
        request.text().unwrap()
    ));
}

#[test]
fn reply_to_id_threads_the_reply() {
    let (_, built) = load("reply-to-id");
    let wire = String::from_utf8(built.bytes).unwrap();

    assert_eq!(
        header_block(&wire, "In-Reply-To"),
        "<CAF1234.5678@mail.example.test>"
    );
    assert_eq!(
        header_block(&wire, "References"),
        "<CAF1234.5678@mail.example.test>"
    );
}

#[test]
fn message_id_is_given_derived_or_random() {
    let (given, _) = load("threading-given");
    let (without_id, _) = load("reply-to-id");
    let with_id = |id: &str| {
        let json = format!(r#"{{"id": "{id}", "to": ["bob@example.test"], "text": "hi"}}"#);
        outbound::parse(json.as_bytes(), &Limits::default()).expect("valid request")
    };
    let message_id =
        |request: &Request| mime::build(request, ACCOUNT, ID_DOMAIN).unwrap().message_id;

    assert_eq!(message_id(&given), "<reply-2@mailbridge.example.test>");
    assert_eq!(message_id(&given), message_id(&given));

    let derived = message_id(&with_id("ticket-1"));
    assert_eq!(
        derived,
        message_id(&with_id("ticket-1")),
        "same id, same Message-ID"
    );
    assert_ne!(derived, message_id(&with_id("ticket-2")));
    assert!(derived.ends_with("@mailbridge.example.test>"), "{derived}");

    assert_ne!(message_id(&without_id), message_id(&without_id));
}

#[test]
fn message_id_domain_may_be_international() {
    let (request, _) = load("reply-to-id");
    let built = mime::build(&request, ACCOUNT, "bücherei.example").unwrap();

    assert!(
        built.message_id.ends_with("@xn--bcherei-n2a.example>"),
        "{}",
        built.message_id
    );
}

#[test]
fn invalid_settings_are_config_errors() {
    let (request, _) = load("reply-to-id");

    let bad_from = mime::build(&request, "not an address", ID_DOMAIN).unwrap_err();
    assert_eq!(bad_from.kind(), "invalid_config");
    assert!(bad_from.to_string().contains("default_from"), "{bad_from}");

    let bad_domain = mime::build(&request, ACCOUNT, "bad domain").unwrap_err();
    assert_eq!(bad_domain.kind(), "invalid_config");
}

#[test]
fn every_fixture_prefix_is_handled() {
    // Cut-off payloads and arbitrary bytes must be rejected, never panic.
    let mut checked = 0;
    for json in fixtures() {
        let payload = fs::read(&json).unwrap();
        for end in 0..payload.len() {
            let prefix = &payload[..end];
            if let Ok(request) = outbound::parse(prefix, &Limits::default()) {
                let _ = mime::build(&request, ACCOUNT, ID_DOMAIN);
            }
            checked += 1;
        }
    }
    assert!(checked > 5000, "only {checked} prefixes checked");
}

#[test]
fn tricky_display_names_round_trip() {
    let names = [
        "a\\b",
        "\"",
        "Bob (work)",
        "<bob@evil.test>",
        "a@b",
        "x; y",
        "=?utf-8?q?fake?=",
        "Zoë \"Z\" O'Neil, Jr.",
        "שלום עולם",
        "e\u{301}cole",
        "👩‍💻 Dev Team",
        "tab\tname",
        &"n".repeat(1000),
    ];
    for name in names {
        let request = serde_json::json!({
            "from": {"name": name, "address": "from@example.test"},
            "to": [{"name": name, "address": "to@example.test"}, "other@example.test"],
            "text": "hi",
        });
        let request = outbound::parse(request.to_string().as_bytes(), &Limits::default())
            .unwrap_or_else(|err| panic!("{name:?}: {err}"));
        let built = mime::build(&request, ACCOUNT, ID_DOMAIN)
            .unwrap_or_else(|err| panic!("{name:?}: {err}"));
        check_wire(name, &built);

        let message = MessageParser::default().parse(&built.bytes).unwrap();
        let from = message.from().unwrap().first().unwrap();
        let to: Vec<_> = message.to().unwrap().iter().collect();
        assert_eq!(from.name(), Some(name), "From {name:?}");
        assert_eq!(from.address(), Some("from@example.test"), "From {name:?}");
        assert_eq!(to.len(), 2, "To {name:?}");
        assert_eq!(to[0].name(), Some(name), "To {name:?}");
        assert_eq!(to[1].address(), Some("other@example.test"), "To {name:?}");
    }
}

#[test]
fn tricky_subjects_and_filenames_round_trip() {
    let values = [
        "a    b",
        "Re: [ticket #7] \"quoted\" (c) <x> ; y",
        "tab\there",
        "Grüße – 発注書 😀",
        &format!("{} Ümlaut", "w".repeat(200)),
        "a\"b\\c.txt",
        "report 2024.pdf",
    ];
    for value in values {
        let request = serde_json::json!({
            "to": ["to@example.test"],
            "subject": value,
            "text": "hi",
            "attachments": [{"filename": value, "content_base64": "aGk="}],
        });
        let request = outbound::parse(request.to_string().as_bytes(), &Limits::default())
            .unwrap_or_else(|err| panic!("{value:?}: {err}"));
        let built = mime::build(&request, ACCOUNT, ID_DOMAIN).unwrap();
        check_wire(value, &built);

        let message = MessageParser::default().parse(&built.bytes).unwrap();
        let attachment = message.attachments().next().expect("one attachment");
        assert_eq!(message.subject(), Some(value), "subject");
        assert_eq!(attachment.attachment_name(), Some(value), "filename");
    }
}

#[test]
fn encoded_word_lookalike_subject_round_trips() {
    let request = r#"{"to": ["to@example.test"], "subject": "=?utf-8?q?fake?="}"#;
    let request = outbound::parse(request.as_bytes(), &Limits::default()).unwrap();
    let built = mime::build(&request, ACCOUNT, ID_DOMAIN).unwrap();
    let message = MessageParser::default().parse(&built.bytes).unwrap();

    assert_eq!(message.subject(), Some("=?utf-8?q?fake?="));
}
