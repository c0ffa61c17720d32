//! `mailbridge run` end to end on the stack: mail delivered through
//! postfix or appended over IMAP arrives in Kafka and RabbitMQ as JSON
//! documents, once, whatever stops in between.

mod drain;
mod expiry;
mod limits;
mod no_idle;
mod replicas;
mod resets;
mod sessions;
mod special_use;
mod starttls;
mod stopping;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::bridge::{self, PATIENCE, Setup, fixture, schema_errors};
use crate::mailbox::{append, deliver, flags, mail, mark_seen, recreate};
use crate::records::{
    Published, amqp_messages, create_topic, declare_queue, kafka_records, kafka_settled,
};
use crate::support::{Forwarder, stack, unique};

/// Both pipelines of the usual setup: the INBOX to a Kafka topic and to a
/// RabbitMQ queue, with `extra` added to each.
fn pipelines(topic: &str, queue: &str, extra: &str) -> String {
    format!(
        r#"
[inbound.kafka]
account = "watched"
broker = "kafka"
topic = "{topic}"
{extra}

[inbound.rabbitmq]
account = "watched"
broker = "rabbitmq"
exchange = ""
routing_key = "{queue}"
{extra}
"#
    )
}

/// A topic and a queue of their own.
async fn targets(prefix: &str) -> (String, String) {
    let topic = unique(&format!("{prefix}.kafka"));
    let queue = unique(&format!("{prefix}.amqp"));
    create_topic(&topic).await;
    declare_queue(&queue).await;
    (topic, queue)
}

fn subjects(records: &[Published]) -> BTreeSet<String> {
    records
        .iter()
        .map(|record| record.document["subject"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn ids(records: &[Published]) -> Vec<String> {
    records
        .iter()
        .map(|record| record.document["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn inbound_delivered_mail_reaches_kafka_and_rabbitmq() {
    let setup = Setup::new("inbound-flow");
    let (topic, queue) = targets("flow").await;
    setup.prepare(&pipelines(&topic, &queue, "")).await;
    let names = [
        "01-support-request.eml",
        "04-invoice-attachment.eml",
        "06-german-latin1.eml",
        "07-japanese.eml",
    ];
    for name in names {
        deliver(&setup.user, &fixture(name)).await;
    }
    // postfix adds a Date and a Message-ID to submitted mail that lacks
    // them, so the mail without either is appended instead.
    append(
        &setup.user,
        "INBOX",
        &fixture("08-no-date-no-message-id.eml"),
    )
    .await;
    let count = names.len() + 1;

    let bridge = setup.start();
    let records = kafka_records(&topic, count, PATIENCE).await;
    let messages = amqp_messages(&queue, count, PATIENCE).await;

    assert_eq!(
        records.len(),
        count,
        "Kafka documents; log:\n{}",
        setup.log()
    );
    assert_eq!(
        messages.len(),
        count,
        "AMQP documents; log:\n{}",
        setup.log()
    );
    let expected: BTreeSet<String> = [
        "Printer in room 4.12 jams on every second page",
        "Invoice 2026-1187",
        "Zugang für das Büro Größe L",
        "会議の議事録",
        "Disk usage above 90% on build-07",
    ]
    .map(String::from)
    .into();
    assert_eq!(subjects(&records), expected);
    assert_eq!(subjects(&messages), expected);
    for record in &records {
        let document = &record.document;
        let errors = schema_errors("inbound-mail.v1.json", document);
        assert!(errors.is_empty(), "{errors:?} in {document}");
        assert_eq!(document["account"], "watched");
        assert_eq!(document["mailbox"], "INBOX");
        assert_eq!(record.key.as_deref(), document["id"].as_str());
        assert_eq!(record.headers["schema"], "mailbridge.inbound-mail.v1");
        assert_eq!(record.headers["content-type"], "application/json");
    }
    for message in &messages {
        assert_eq!(message.key.as_deref(), message.document["id"].as_str());
        assert_eq!(message.headers["content-type"], "application/json");
        assert_eq!(message.headers["delivery-mode"], "2");
    }
    let invoice = records
        .iter()
        .find(|record| record.document["subject"] == "Invoice 2026-1187")
        .expect("invoice");
    assert_eq!(
        invoice.document["attachments"][0]["filename"],
        "invoice-2026-1187.pdf"
    );
    assert_eq!(
        invoice.document["from"][0]["address"],
        "billing@supplier.example.test"
    );
    let alert = records
        .iter()
        .find(|record| record.document["message_id"].is_null())
        .expect("the mail without Message-ID");
    assert!(
        alert.document["date"].is_null(),
        "no Date gives null, never 1970"
    );
    assert!(!alert.document["received_at"].is_null());

    let published = "mailbridge_messages_published_total{pipeline=\"kafka\",result=\"success\"}";
    assert_eq!(setup.sample(published).await, Some(count as f64));
    let connected = "mailbridge_imap_connected{account=\"watched\",mailbox=\"INBOX\"}";
    assert_eq!(setup.sample(connected).await, Some(1.0));
    for series in [
        "mailbridge_imap_poll_duration_seconds_count",
        "mailbridge_imap_fetch_duration_seconds_count",
        "mailbridge_build_duration_seconds_count",
        "mailbridge_publish_duration_seconds_count",
    ] {
        assert!(setup.sample(series).await > Some(0.0), "{series}");
    }
    bridge.stop().await;
    setup.assert_log_has_no_token();
}

#[tokio::test]
async fn inbound_mail_during_idle_arrives_within_two_seconds() {
    let setup = Setup::new("inbound-idle");
    let (topic, queue) = targets("idle").await;
    setup.prepare(&pipelines(&topic, &queue, "")).await;
    let bridge = setup.start();
    setup.wait_ready().await;
    // The watch enters IDLE right after it is ready; give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let appended = Instant::now();
    append(&setup.user, "INBOX", &mail(&unique("idle"), "pushed")).await;
    let records = kafka_records(&topic, 1, Duration::from_secs(10)).await;
    let latency = appended.elapsed();

    assert_eq!(records.len(), 1, "log:\n{}", setup.log());
    assert!(
        latency < Duration::from_secs(2),
        "arrived after {latency:?}"
    );
    assert_eq!(amqp_messages(&queue, 1, PATIENCE).await.len(), 1);
    bridge.stop().await;
}

#[tokio::test]
async fn inbound_restart_resumes_from_checkpoint() {
    let setup = Setup::new("inbound-restart");
    let (topic, queue) = targets("restart").await;
    setup
        .prepare(&pipelines(&topic, &queue, "batch_size = 2"))
        .await;
    for index in 0..3 {
        append(
            &setup.user,
            "INBOX",
            &mail(&unique("before"), &format!("before {index}")),
        )
        .await;
    }
    let bridge = setup.start();
    assert_eq!(kafka_records(&topic, 3, PATIENCE).await.len(), 3);
    assert_eq!(amqp_messages(&queue, 3, PATIENCE).await.len(), 3);
    bridge.stop().await;
    let checkpoint = setup
        .checkpoint("kafka", "INBOX")
        .expect("checkpoint saved");
    assert_eq!(checkpoint["last_uid"], 3);

    for index in 0..2 {
        append(
            &setup.user,
            "INBOX",
            &mail(&unique("after"), &format!("after {index}")),
        )
        .await;
    }
    let bridge = setup.start();
    let records = kafka_settled(&topic, 5, PATIENCE).await;
    let messages = amqp_messages(&queue, 3, crate::records::SETTLE).await;
    bridge.stop().await;

    assert_eq!(records.len(), 5, "3 before and 2 after, none repeated");
    let unique_ids: BTreeSet<String> = ids(&records).into_iter().collect();
    assert_eq!(unique_ids.len(), 5);
    let uids: Vec<u64> = records
        .iter()
        .map(|record| record.document["uid"].as_u64().expect("uid"))
        .collect();
    assert_eq!(uids, [1, 2, 3, 4, 5]);
    assert_eq!(messages.len(), 2, "RabbitMQ got only the 2 new mails");
}

#[tokio::test]
async fn inbound_amqp_outage_acknowledges_nothing_until_confirmed() {
    let mut setup = Setup::new("inbound-amqp-outage");
    let queue = unique("outage.amqp");
    declare_queue(&queue).await;
    let amqp = url::Url::parse(&stack("STACK_AMQP_URL")).expect("AMQP URL");
    let target = (
        amqp.host_str().expect("host").to_owned(),
        amqp.port().unwrap_or(5672),
    );
    let forwarder = Forwarder::start(target).await;
    let mut url = amqp.clone();
    url.set_port(Some(forwarder.port)).expect("port");
    setup.amqp_url = url.to_string();
    let pipeline = format!(
        "[inbound.rabbitmq]\naccount = \"watched\"\nbroker = \"rabbitmq\"\n\
         exchange = \"\"\nrouting_key = \"{queue}\"\nafter_publish = \"mark_seen\"\n"
    );
    setup.prepare(&pipeline).await;
    let bridge = setup.start();
    setup.wait_ready().await;

    forwarder.refuse();
    let during = during_outage(&setup, "rabbitmq", Duration::from_secs(4)).await;
    forwarder.restore();
    let messages = amqp_messages(&queue, 3, PATIENCE).await;
    let seen_after = wait_for_seen(&setup.user, 3).await;
    bridge.stop().await;

    during.assert_nothing_acknowledged();
    assert_eq!(messages.len(), 3, "log:\n{}", setup.log());
    assert!(
        seen_after,
        "all 3 are flagged after the broker confirmed them"
    );
    let checkpoint = setup.checkpoint("rabbitmq", "INBOX").expect("checkpoint");
    assert_eq!(checkpoint["last_uid"], 3);
    assert!(setup.log().contains("Broker did not confirm the batch"));
}

/// Waits until `count` mails of the INBOX have `\Seen`.
async fn wait_for_seen(user: &str, count: usize) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let flags = flags(user, "INBOX").await;
        let seen = flags
            .iter()
            .filter(|(_, flags)| flags.iter().any(|flag| flag.contains("Seen")))
            .count();
        if seen == count {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test]
async fn inbound_uidvalidity_change_publishes_only_new_mail() {
    let setup = Setup::new("inbound-reset");
    let topic = unique("reset.kafka");
    create_topic(&topic).await;
    let pipeline = format!(
        "[inbound.kafka]\naccount = \"watched\"\nmailboxes = [\"Tickets für 2026\"]\nbroker = \"kafka\"\ntopic = \"{topic}\"\n"
    );
    setup.prepare(&pipeline).await;
    let (first, second, third) = (unique("m"), unique("m"), unique("m"));
    append(&setup.user, "Tickets für 2026", &mail(&first, "first")).await;
    append(&setup.user, "Tickets für 2026", &mail(&second, "second")).await;
    let bridge = setup.start();
    assert_eq!(kafka_records(&topic, 2, PATIENCE).await.len(), 2);
    bridge.stop().await;
    let before = setup
        .checkpoint("kafka", "Tickets für 2026")
        .expect("checkpoint");

    let (first_mail, second_mail, third_mail) = (
        mail(&first, "first"),
        mail(&second, "second"),
        mail(&third, "third"),
    );
    recreate(
        &setup.user,
        "Tickets für 2026",
        &[&first_mail, &second_mail, &third_mail],
    )
    .await;
    let bridge = setup.start();
    let records = kafka_settled(&topic, 4, PATIENCE).await;
    let resets = setup
        .sample("mailbridge_mailbox_resets_total{account=\"watched\",mailbox=\"Tickets für 2026\"}")
        .await;
    bridge.stop().await;

    assert_eq!(
        records.len(),
        4,
        "2 mails, the reset event, and the 1 new mail"
    );
    let reset = &records[2];
    assert_eq!(reset.headers["schema"], "mailbridge.mailbox-reset.v1");
    let errors = schema_errors("mailbox-reset.v1.json", &reset.document);
    assert!(errors.is_empty(), "{errors:?} in {}", reset.document);
    assert_eq!(
        reset.document["previous_uidvalidity"],
        before["uidvalidity"]
    );
    assert_eq!(records[3].document["subject"], "third");
    assert_eq!(records[3].document["uid"], 3);
    assert_eq!(resets, Some(1.0));
    let after = setup
        .checkpoint("kafka", "Tickets für 2026")
        .expect("checkpoint");
    assert_ne!(after["uidvalidity"], before["uidvalidity"]);
    assert_eq!(after["last_uid"], 3);
}

#[tokio::test]
async fn inbound_malformed_mail_is_published_with_warnings() {
    let setup = Setup::new("inbound-malformed");
    let topic = unique("malformed.kafka");
    create_topic(&topic).await;
    let pipeline = format!(
        "[inbound.kafka]\naccount = \"watched\"\nbroker = \"kafka\"\ntopic = \"{topic}\"\n"
    );
    setup.prepare(&pipeline).await;
    let broken = b"From: broken\r\nDate: yesterday at noon\r\nSubject: =?x-unknown?B?////?=\r\n\
                   Content-Type: multipart/mixed; boundary=\"never\"\r\n\r\nno parts at all\r\n";
    append(&setup.user, "INBOX", broken).await;

    let bridge = setup.start();
    let records = kafka_records(&topic, 1, PATIENCE).await;
    bridge.stop().await;

    assert_eq!(records.len(), 1, "log:\n{}", setup.log());
    let document = &records[0].document;
    assert!(document["date"].is_null(), "{document}");
    let warnings = document["warnings"].as_array().expect("warnings");
    assert!(!warnings.is_empty(), "{document}");
}

#[tokio::test]
async fn inbound_cut_imap_connection_is_reestablished() {
    let mut setup = Setup::new("inbound-cut");
    let target = (
        stack("STACK_IMAP_HOST"),
        crate::support::port("STACK_IMAPS_PORT"),
    );
    let forwarder = Forwarder::start(target).await;
    setup.imap_port = forwarder.port;
    let topic = unique("cut.kafka");
    create_topic(&topic).await;
    let pipeline = format!(
        "[inbound.kafka]\naccount = \"watched\"\nbroker = \"kafka\"\ntopic = \"{topic}\"\n\
         liveness_timeout = \"3s\"\n"
    );
    setup.prepare(&pipeline).await;
    let bridge = setup.start();
    setup.wait_ready().await;

    forwarder.cut();
    tokio::time::sleep(Duration::from_millis(200)).await;
    append(&setup.user, "INBOX", &mail(&unique("cut"), "after the cut")).await;
    let records = kafka_records(&topic, 1, PATIENCE).await;
    let reconnects = setup.metrics().await;
    bridge.stop().await;

    assert_eq!(records.len(), 1, "log:\n{}", setup.log());
    assert!(
        reconnects
            .lines()
            .any(|line| line.starts_with("mailbridge_imap_reconnects_total{account=\"watched\"")),
        "{reconnects}"
    );
}

/// Takes the Kafka broker down, which every Kafka test shares, so it runs
/// alone (see `.config/nextest.toml`). The broker comes back when the
/// guard is dropped, also when an assertion fails.
#[tokio::test]
async fn inbound_kafka_outage_in_sequence() {
    let setup = Setup::new("inbound-kafka-outage");
    let topic = unique("outage.kafka");
    create_topic(&topic).await;
    let pipeline = format!(
        "[inbound.kafka]\naccount = \"watched\"\nbroker = \"kafka\"\ntopic = \"{topic}\"\n\
         after_publish = \"mark_seen\"\n"
    );
    setup.prepare(&pipeline).await;
    let bridge = setup.start();
    setup.wait_ready().await;

    let outage = KafkaOutage::begin().await;
    let during = during_outage(&setup, "kafka", Duration::from_secs(7)).await;
    let metrics = setup.metrics().await;
    outage.end().await;
    let records = kafka_settled(&topic, 3, PATIENCE).await;
    let seen_after = wait_for_seen(&setup.user, 3).await;
    bridge.stop().await;

    during.assert_nothing_acknowledged();
    let failed = "mailbridge_messages_published_total{pipeline=\"kafka\",result=\"";
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with(failed) && !line.contains("success")),
        "{metrics}"
    );
    let subjects = subjects(&records);
    assert_eq!(subjects.len(), 3, "each mail once by subject: {subjects:?}");
    assert!(records.len() >= 3, "log:\n{}", setup.log());
    assert!(
        seen_after,
        "all 3 are flagged after the broker confirmed them"
    );
    let checkpoint = setup.checkpoint("kafka", "INBOX").expect("checkpoint");
    assert_eq!(checkpoint["last_uid"], 3);
}

/// What a pipeline with `after_publish = "mark_seen"` did to three mails
/// that arrived while its broker was away.
struct DuringOutage {
    flags: Vec<(u32, Vec<String>)>,
    checkpoint: serde_json::Value,
}

/// Appends three mails, waits `pause`, and looks at their flags and the
/// checkpoint of `pipeline`.
async fn during_outage(setup: &Setup, pipeline: &str, pause: Duration) -> DuringOutage {
    for index in 0..3 {
        let subject = format!("outage {index}");
        append(&setup.user, "INBOX", &mail(&unique("outage"), &subject)).await;
    }
    tokio::time::sleep(pause).await;

    DuringOutage {
        flags: flags(&setup.user, "INBOX").await,
        checkpoint: setup
            .checkpoint(pipeline, "INBOX")
            .expect("first checkpoint"),
    }
}

impl DuringOutage {
    fn assert_nothing_acknowledged(&self) {
        let flags = &self.flags;
        assert_eq!(flags.len(), 3);
        let seen = |(_, flags): &(u32, Vec<String>)| flags.iter().any(|f| f.contains("Seen"));
        assert!(
            !flags.iter().any(seen),
            "flagged while the broker was away: {flags:?}"
        );
        assert_eq!(
            self.checkpoint["last_uid"], 0,
            "checkpointed while the broker was away"
        );
    }
}

/// Every broker of the Kafka mock down until `end`, or until dropped.
struct KafkaOutage {
    ended: bool,
}

impl KafkaOutage {
    async fn begin() -> Self {
        kafka_brokers("down").await;
        Self { ended: false }
    }

    async fn end(mut self) {
        kafka_brokers("up").await;
        self.ended = true;
    }
}

impl Drop for KafkaOutage {
    fn drop(&mut self) {
        if !self.ended {
            let url = format!("{}/brokers/-1/up", stack("STACK_KAFKA_CONTROL_URL"));
            let _ = std::process::Command::new("curl")
                .args(["-fsS", "-X", "POST", &url])
                .status();
        }
    }
}

async fn kafka_brokers(action: &str) {
    let url = format!("{}/brokers/-1/{action}", stack("STACK_KAFKA_CONTROL_URL"));
    let response = crate::support::http()
        .post(url)
        .send()
        .await
        .expect("control");
    assert!(
        response.status().is_success(),
        "brokers {action}: {}",
        response.status()
    );
}

/// Shortens every access token the stack issues, which all tests share,
/// so it runs alone. The watch must sign in again with a fresh token
/// before the old one expires, as Exchange Online ends sessions whose
/// token expired.
#[tokio::test]
async fn inbound_session_renewed_before_token_expiry_in_sequence() {
    let _restore = ShortTokens::begin(12).await;
    let setup = Setup::new("inbound-renew");
    let topic = unique("renew.kafka");
    create_topic(&topic).await;
    let pipeline = format!(
        "[inbound.kafka]\naccount = \"watched\"\nbroker = \"kafka\"\ntopic = \"{topic}\"\n"
    );
    setup.prepare(&pipeline).await;
    let bridge = setup.start();
    setup.wait_ready().await;

    tokio::time::sleep(Duration::from_secs(14)).await;
    append(
        &setup.user,
        "INBOX",
        &mail(&unique("renew"), "after renewal"),
    )
    .await;
    let records = kafka_records(&topic, 1, PATIENCE).await;
    bridge.stop().await;

    assert_eq!(records.len(), 1, "log:\n{}", setup.log());
    let log = setup.log();
    assert!(log.contains("Access token due for refresh"), "{log}");
    let sign_ins = log.matches("Signed in to IMAP server").count();
    assert!(sign_ins >= 2, "{sign_ins} sign-ins:\n{log}");
    assert!(!log.contains("Mailbox watch failed"), "{log}");
}

/// Sets the stack's access-token lifetime until dropped.
struct ShortTokens;

impl ShortTokens {
    async fn begin(seconds: u64) -> Self {
        let body = serde_json::json!({ "access_token_lifetime": seconds });
        let response = crate::support::http()
            .post(stack("STACK_OAUTH_CONTROL_URL"))
            .json(&body)
            .send()
            .await
            .expect("control");
        assert!(
            response.status().is_success(),
            "control: {}",
            response.status()
        );
        Self
    }
}

impl Drop for ShortTokens {
    fn drop(&mut self) {
        let _ = std::process::Command::new("curl")
            .args([
                "-fsS",
                "-o",
                "/dev/null",
                "-H",
                "content-type: application/json",
            ])
            .args(["-d", "{\"access_token_lifetime\": 3600}"])
            .arg(stack("STACK_OAUTH_CONTROL_URL"))
            .status();
    }
}

#[tokio::test]
async fn inbound_unseen_start_polls_and_moves() {
    let setup = Setup::new("inbound-unseen");
    let topic = unique("unseen.kafka");
    create_topic(&topic).await;
    let pipeline = format!(
        "[inbound.kafka]\naccount = \"watched\"\nbroker = \"kafka\"\ntopic = \"{topic}\"\n\
         start_from = \"unseen\"\nmode = \"poll\"\npoll_interval = \"1s\"\n\
         after_publish = \"move\"\nmove_to = \"Done\"\n"
    );
    setup.prepare(&pipeline).await;
    append(&setup.user, "INBOX", &mail(&unique("u"), "unseen one")).await;
    append(&setup.user, "INBOX", &mail(&unique("s"), "already read")).await;
    append(&setup.user, "INBOX", &mail(&unique("u"), "unseen two")).await;
    mark_seen(&setup.user, 2).await;

    let bridge = setup.start();
    let first = kafka_records(&topic, 2, PATIENCE).await;
    append(&setup.user, "INBOX", &mail(&unique("p"), "polled")).await;
    let all = kafka_settled(&topic, 3, PATIENCE).await;
    let (inbox, done) = (
        wait_for_count(&setup.user, "INBOX", 1).await,
        flags(&setup.user, "Done").await,
    );
    let quiet = QuietCycles::measure(&setup, Duration::from_millis(2500)).await;
    bridge.stop().await;

    assert_eq!(
        subjects(&first),
        ["unseen one", "unseen two"].map(String::from).into()
    );
    assert_eq!(
        subjects(&all),
        ["unseen one", "unseen two", "polled"]
            .map(String::from)
            .into()
    );
    assert_eq!(all.len(), 3, "log:\n{}", setup.log());
    assert_eq!(inbox.len(), 1, "the read mail stays: {inbox:?}");
    assert_eq!(done.len(), 3, "published mail is moved: {done:?}");
    quiet.assert_advanced();
}

/// The cycle metrics of the INBOX before and after a pause in which no
/// mail arrived.
struct QuietCycles {
    before: (Option<f64>, Option<f64>),
    after: (Option<f64>, Option<f64>),
}

impl QuietCycles {
    const LAST_SUCCESS: &str =
        "mailbridge_last_success_timestamp_seconds{account=\"watched\",mailbox=\"INBOX\"}";
    const CYCLES: &str =
        "mailbridge_imap_poll_duration_seconds_count{account=\"watched\",mailbox=\"INBOX\"}";

    async fn measure(setup: &Setup, pause: Duration) -> Self {
        let sample = async || {
            let last_success = setup.sample(Self::LAST_SUCCESS).await;
            (last_success, setup.sample(Self::CYCLES).await)
        };
        let before = sample().await;
        tokio::time::sleep(pause).await;
        let after = sample().await;
        Self { before, after }
    }

    fn assert_advanced(&self) {
        let (Some(success_before), Some(cycles_before)) = self.before else {
            panic!("no cycle metrics before the pause: {:?}", self.before);
        };
        let (Some(success_after), Some(cycles_after)) = self.after else {
            panic!("no cycle metrics after the pause: {:?}", self.after);
        };
        assert!(
            success_after > success_before,
            "last success stayed at {success_before} on a quiet mailbox"
        );
        assert!(
            cycles_after > cycles_before,
            "no fetch cycle recorded on a quiet mailbox: {cycles_before} then {cycles_after}"
        );
    }
}

#[tokio::test]
async fn inbound_new_start_writes_json_lines_without_broker() {
    let setup = Setup::new("inbound-stdout");
    setup
        .prepare("[inbound.lines]\naccount = \"watched\"\nstart_from = \"new\"\n")
        .await;
    append(
        &setup.user,
        "INBOX",
        &mail(&unique("old"), "before the start"),
    )
    .await;
    let output = tempfile::NamedTempFile::new().expect("output file");

    let bridge = setup.start_with_stdout(output.reopen().expect("reopen"));
    setup.wait_ready().await;
    append(
        &setup.user,
        "INBOX",
        &mail(&unique("new"), "after the start"),
    )
    .await;
    wait_for_lines(output.path(), 1).await;
    tokio::time::sleep(crate::records::SETTLE).await;
    bridge.stop().await;

    let text = std::fs::read_to_string(output.path()).expect("read output");
    let documents: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON document"))
        .collect();
    assert_eq!(documents.len(), 1, "{text}");
    assert_eq!(documents[0]["subject"], "after the start");
    assert_eq!(documents[0]["uid"], 2);
}

/// Waits until `path` holds `count` lines.
async fn wait_for_lines(path: &std::path::Path, count: usize) {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "fewer than {count} lines in {} after {PATIENCE:?}",
        path.display()
    );
}

/// Waits until `mailbox` holds exactly `count` mails, and returns them.
async fn wait_for_count(user: &str, mailbox: &str, count: usize) -> Vec<(u32, Vec<String>)> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mails = flags(user, mailbox).await;
        if mails.len() == count || Instant::now() > deadline {
            return mails;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts with a stored access token that the store believes valid but
/// the server sees expired, as after a provider revoked it early: the
/// IMAP login is rejected once, one forced refresh follows, and the watch
/// signs in with the new token. The short lifetime is set for every test,
/// so this one runs alone.
#[tokio::test]
async fn inbound_expired_token_recovers_by_one_refresh_in_sequence() {
    let setup = Setup::new("inbound-expired");
    let topic = unique("expired.kafka");
    create_topic(&topic).await;
    let pipeline = format!(
        "[inbound.kafka]\naccount = \"watched\"\nbroker = \"kafka\"\ntopic = \"{topic}\"\n"
    );
    let short = ShortTokens::begin(2).await;
    setup.prepare(&pipeline).await;
    drop(short);
    let file = setup
        .state()
        .join("tokens")
        .join(format!("{}.json", bridge::ACCOUNT));
    let mut tokens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("token file")).expect("JSON");
    tokens["access_token_expires_at"] = "2099-01-01T00:00:00Z".into();
    std::fs::write(&file, tokens.to_string()).expect("rewrite token file");
    tokio::time::sleep(Duration::from_secs(3)).await;

    let bridge = setup.start();
    setup.wait_ready().await;
    append(
        &setup.user,
        "INBOX",
        &mail(&unique("expired"), "after the refresh"),
    )
    .await;
    let records = kafka_records(&topic, 1, PATIENCE).await;
    let failures = setup
        .sample("mailbridge_auth_failures_total{account=\"watched\",protocol=\"imap\"")
        .await;
    let refreshes = setup
        .sample("mailbridge_oauth2_token_refreshes_total{account=\"watched\",result=\"success\"}")
        .await;
    bridge.stop().await;

    assert_eq!(records.len(), 1, "log:\n{}", setup.log());
    assert_eq!(failures, Some(1.0), "one rejected login");
    assert_eq!(refreshes, Some(1.0), "one forced refresh");
    setup.assert_log_has_no_token();
}

#[tokio::test]
async fn inbound_document_over_kafka_limit_is_truncated() {
    let setup = Setup::new("inbound-large");
    let topic = unique("large.kafka");
    create_topic(&topic).await;
    let pipeline = format!(
        "[inbound.kafka]\naccount = \"watched\"\nbroker = \"kafka\"\ntopic = \"{topic}\"\n"
    );
    setup.prepare(&pipeline).await;
    let line = "A line of a long report that goes on and on.\r\n";
    let mut large = mail(&unique("large"), "large report");
    large.extend(line.repeat(1_500_000 / line.len()).into_bytes());
    append(&setup.user, "INBOX", &large).await;
    append(&setup.user, "INBOX", &mail(&unique("small"), "small one")).await;

    let bridge = setup.start();
    let records = kafka_records(&topic, 2, PATIENCE).await;
    bridge.stop().await;

    assert_eq!(records.len(), 2, "log:\n{}", setup.log());
    let document = &records[0].document;
    assert_eq!(document["subject"], "large report");
    assert_eq!(document["truncated"], true);
    assert!(document["text"].is_null());
    assert!(
        document["warnings"].to_string().contains("record limit"),
        "{}",
        document["warnings"]
    );
    assert_eq!(records[1].document["subject"], "small one");
    assert_eq!(records[1].document["truncated"], false);
}
