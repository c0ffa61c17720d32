//! What a full request becomes in the recipient's mailbox, through each
//! broker: headers, both bodies, an attachment, an inline image in a
//! multipart/related, threading headers and non-ASCII names and subject,
//! read back over IMAP and parsed with mail-parser.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mail_parser::{Address, Message, MimeHeaders, PartType};
use serde_json::{Value, json};

use super::{KAFKA, RABBITMQ, Targets, parse};
use crate::bridge::{PATIENCE, Setup};
use crate::mailbox::wait_for_mails;
use crate::records::{produce, publish_to_queue};
use crate::support::{mail_address, unique};

const SUBJECT: &str = "Bestätigung der Änderung – 発注書 №42 😀 and a fairly long tail of \
                       ascii words to force folding of the header line";
const TEXT: &str = "Hallo Jörg,\n\n.a line that starts with a dot\nGrüße\n";
const LOGO_ID: &str = "logo.4711@example.test";

/// The people of one request: the account sends, three mailboxes receive.
struct People {
    from: String,
    to: String,
    cc: String,
    bcc: String,
}

impl People {
    fn new(from: &str) -> Self {
        Self {
            from: from.to_owned(),
            to: mail_address(&unique("to")),
            cc: mail_address(&unique("cc")),
            bcc: mail_address(&unique("bcc")),
        }
    }
}

/// Binary content with every byte value, so that no encoding step can
/// pass it by accident.
fn binary(seed: u8) -> Vec<u8> {
    (0..=255u8).cycle().skip(seed.into()).take(700).collect()
}

fn full_request(people: &People, thread: &str) -> Value {
    json!({
        "id": unique("full"),
        "from": {"name": "Müller, Jörg", "address": people.from},
        "to": [{"name": "王小明", "address": people.to}],
        "cc": [{"name": "Doe, John", "address": people.cc}],
        "bcc": [people.bcc],
        "reply_to": [{"name": "\"Quoted\" Desk", "address": "desk@example.test"}],
        "subject": SUBJECT,
        "text": TEXT,
        "html": format!("<p>Hallo <b>Jörg</b></p><img src=\"cid:{LOGO_ID}\">"),
        "in_reply_to": format!("<second.{thread}@example.test>"),
        "references": [
            format!("<first.{thread}@example.test>"),
            format!("second.{thread}@example.test"),
        ],
        "headers": {"X-Ticket": "T-4711", "X-Priority-Class": "urgent"},
        "attachments": [
            {
                "filename": "Rechnung März.pdf",
                "content_type": "application/pdf",
                "content_base64": STANDARD.encode(binary(0)),
            },
            {
                "filename": "logo.png",
                "content_type": "image/png",
                "content_base64": STANDARD.encode(binary(7)),
                "content_id": LOGO_ID,
            },
        ],
    })
}

#[tokio::test]
async fn full_requests_arrive_intact_through_kafka_and_rabbitmq() {
    let setup = Setup::new("outbound-content");
    let targets = Targets::new("content").await;
    setup.prepare(&targets.pipelines()).await;
    let (kafka, amqp) = (People::new(&setup.user), People::new(&setup.user));
    let (kafka_thread, amqp_thread) = (unique("thread"), unique("thread"));

    let bridge = setup.start();
    let payload = full_request(&kafka, &kafka_thread).to_string();
    produce(&targets.topic, "full", payload.as_bytes()).await;
    let payload = full_request(&amqp, &amqp_thread).to_string();
    publish_to_queue(&targets.queue, payload.as_bytes()).await;
    let mut received = Vec::new();
    for (people, thread) in [(&kafka, &kafka_thread), (&amqp, &amqp_thread)] {
        for mailbox in [&people.to, &people.cc, &people.bcc] {
            let mails = wait_for_mails(mailbox, 1, PATIENCE).await;
            assert_eq!(mails.len(), 1, "{mailbox}; log:\n{}", setup.log());
            received.push((people, thread, mails.into_iter().next().unwrap()));
        }
    }
    let metrics = setup.metrics().await;
    bridge.stop().await;

    for (people, thread, raw) in &received {
        check_mail(raw, people, thread);
    }
    for pipeline in [KAFKA, RABBITMQ] {
        let sent =
            format!("mailbridge_smtp_sent_total{{pipeline=\"{pipeline}\",result=\"success\"}} 1");
        assert!(metrics.contains(&sent), "{sent} in\n{metrics}");
        let timed =
            format!("mailbridge_smtp_send_duration_seconds_count{{pipeline=\"{pipeline}\"}} 1");
        assert!(metrics.contains(&timed), "{timed} in\n{metrics}");
    }
    setup.assert_log_has_no_token();
}

fn check_mail(raw: &[u8], people: &People, thread: &str) {
    let message = parse(raw);
    check_headers(&message, people, thread, raw);
    check_bodies(&message);
    check_attachments(&message);
}

fn check_headers(message: &Message<'_>, people: &People, thread: &str, raw: &[u8]) {
    let wire = String::from_utf8_lossy(raw);
    let head = wire.split("\r\n\r\n").next().unwrap_or_default();
    assert_eq!(message.subject(), Some(SUBJECT), "{head}");
    assert_eq!(
        single(message.from()),
        ("Müller, Jörg", people.from.as_str())
    );
    assert_eq!(single(message.to()), ("王小明", people.to.as_str()));
    assert_eq!(single(message.cc()), ("Doe, John", people.cc.as_str()));
    assert_eq!(
        single(message.reply_to()),
        ("\"Quoted\" Desk", "desk@example.test")
    );
    assert!(!head.to_ascii_lowercase().contains("\nbcc:"), "{head}");
    assert!(!head.contains(&people.bcc), "the Bcc address leaks: {head}");
    assert!(head.lines().all(|line| line.len() <= 998), "{head}");

    let second = format!("second.{thread}@example.test");
    let first = format!("first.{thread}@example.test");
    assert_eq!(message.in_reply_to().as_text(), Some(second.as_str()));
    let references: Vec<&str> = match message.references().as_text_list() {
        Some(list) => list.iter().map(|id| id.as_ref()).collect(),
        None => message.references().as_text().into_iter().collect(),
    };
    assert_eq!(references, [first.as_str(), second.as_str()], "{head}");
    for (name, value) in [("X-Ticket", "T-4711"), ("X-Priority-Class", "urgent")] {
        let header = message.header(name).and_then(|value| value.as_text());
        assert_eq!(header.map(str::trim), Some(value), "{head}");
    }
    assert!(message.message_id().is_some_and(|id| id.contains('@')));
    assert!(message.date().is_some(), "{head}");
}

/// The display name and address of the only mailbox in `address`.
fn single<'a>(address: Option<&'a Address<'a>>) -> (&'a str, &'a str) {
    let list = address
        .and_then(Address::as_list)
        .expect("one mailbox list");
    assert_eq!(list.len(), 1, "{list:?}");
    let name = list[0].name().unwrap_or_default();
    (name, list[0].address().unwrap_or_default())
}

fn check_bodies(message: &Message<'_>) {
    let text = message.body_text(0).expect("text body");
    assert_eq!(text.replace("\r\n", "\n"), TEXT);
    let html = message.body_html(0).expect("html body");
    assert!(html.contains("<b>Jörg</b>"), "{html}");
    assert!(html.contains(&format!("cid:{LOGO_ID}")), "{html}");
}

fn check_attachments(message: &Message<'_>) {
    let invoice = message
        .attachments()
        .find(|part| part.attachment_name() == Some("Rechnung März.pdf"))
        .expect("the invoice is attached");
    assert_eq!(invoice.contents(), binary(0).as_slice());
    assert_eq!(content_type(invoice), "application/pdf");
    assert!(invoice.content_id().is_none());

    let logo_index = message
        .parts
        .iter()
        .position(|part| part.content_id() == Some(LOGO_ID))
        .expect("the logo is a part with its Content-ID");
    let logo = &message.parts[logo_index];
    assert_eq!(logo.contents(), binary(7).as_slice());
    assert_eq!(content_type(logo), "image/png");

    // RFC 2387: the image sits beside the HTML body in a multipart/related.
    let related = message
        .parts
        .iter()
        .find(|part| content_type(part) == "multipart/related")
        .expect("a multipart/related part");
    let PartType::Multipart(children) = &related.body else {
        panic!("multipart/related without children");
    };
    let children: Vec<usize> = children.iter().map(|&index| index as usize).collect();
    assert!(children.contains(&logo_index), "{children:?}");
    let html_inside = children
        .iter()
        .any(|&index| contains_type(message, index, "text/html"));
    assert!(html_inside, "the HTML body is not in the multipart/related");
}

fn content_type(part: &mail_parser::MessagePart<'_>) -> String {
    let kind = part.content_type().expect("Content-Type");
    match kind.subtype() {
        Some(subtype) => format!("{}/{subtype}", kind.ctype()).to_ascii_lowercase(),
        None => kind.ctype().to_ascii_lowercase(),
    }
}

/// Whether part `index` is of type `kind` or holds such a part.
fn contains_type(message: &Message<'_>, index: usize, kind: &str) -> bool {
    let part = &message.parts[index];
    if content_type(part) == kind {
        return true;
    }
    match &part.body {
        PartType::Multipart(children) => children
            .iter()
            .any(|&child| contains_type(message, child as usize, kind)),
        _ => false,
    }
}
