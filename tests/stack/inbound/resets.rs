//! UIDVALIDITY changes under each `on_uidvalidity_change` policy: a
//! recreated mailbox is published again whole, or without the mail that
//! was published before, recognised by Message-ID or, for mail without
//! one, by the hash of its content.

use std::path::Path;

use crate::bridge::{PATIENCE, Setup};
use crate::mailbox::{append, mail, recreate};
use crate::records::{Published, create_topic, kafka_records, kafka_settled};
use crate::support::unique;

const MAILBOX: &str = "Alerts";

const PUBLISHED: &str =
    "mailbridge_messages_published_total{pipeline=\"kafka\",result=\"success\"}";

/// Writes a Kafka pipeline on [`MAILBOX`] with `policy` and a topic of its
/// own, signs the account in, and returns the topic.
async fn prepare(setup: &Setup, policy: &str) -> String {
    let topic = unique("policy.kafka");
    create_topic(&topic).await;
    let pipeline = format!(
        "[inbound.kafka]\naccount = \"watched\"\nmailboxes = [\"{MAILBOX}\"]\n\
         broker = \"kafka\"\ntopic = \"{topic}\"\non_uidvalidity_change = \"{policy}\"\n"
    );
    setup.prepare(&pipeline).await;
    topic
}

/// Reads one of the inbound golden-file mails.
fn golden(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/inbound")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

fn text_of(record: &Published) -> &str {
    record.document["text"].as_str().unwrap_or("")
}

#[tokio::test]
async fn inbound_republish_policy_publishes_all_again() {
    let setup = Setup::new("inbound-republish");
    let topic = prepare(&setup, "republish").await;
    let (first, second, third) = (
        mail(&unique("m"), "first"),
        mail(&unique("m"), "second"),
        mail(&unique("m"), "third"),
    );
    append(&setup.user, MAILBOX, &first).await;
    append(&setup.user, MAILBOX, &second).await;
    let bridge = setup.start();
    assert_eq!(kafka_records(&topic, 2, PATIENCE).await.len(), 2);
    bridge.stop().await;

    recreate(&setup.user, MAILBOX, &[&first, &second, &third]).await;
    let bridge = setup.start();
    let records = kafka_settled(&topic, 6, PATIENCE).await;
    let published = setup.sample(PUBLISHED).await;
    bridge.stop().await;

    assert_eq!(
        records.len(),
        6,
        "2 mails, the reset event and all 3 mails again; log:\n{}",
        setup.log()
    );
    let reset = &records[2];
    assert_eq!(reset.headers["schema"], "mailbridge.mailbox-reset.v1");
    assert_eq!(reset.document["policy"], "republish");
    let subjects: Vec<&str> = records[3..]
        .iter()
        .map(|record| record.document["subject"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(subjects, ["first", "second", "third"]);
    assert_eq!(
        records[0].document["message_id"], records[3].document["message_id"],
        "the same mail was published again"
    );
    assert_ne!(
        records[0].document["id"], records[3].document["id"],
        "the id names the new UIDVALIDITY"
    );
    assert_eq!(published, Some(3.0), "confirmed mail of the second run");
    let checkpoint = setup.checkpoint("kafka", MAILBOX).expect("checkpoint");
    assert_eq!(checkpoint["last_uid"], 3);
    assert!(checkpoint.get("filter").is_none(), "{checkpoint}");
}

/// Two alerts without Message-ID that differ only in their body: after the
/// mailbox is recreated, the one published before is a repeat and the
/// other is new.
#[tokio::test]
async fn inbound_skip_known_matches_content_hash() {
    let setup = Setup::new("inbound-hash");
    let topic = prepare(&setup, "skip_known").await;
    let (repeat, new) = (golden("c24b.eml"), golden("c24c.eml"));
    append(&setup.user, MAILBOX, &repeat).await;
    let bridge = setup.start();
    let before = kafka_records(&topic, 1, PATIENCE).await;
    bridge.stop().await;
    assert_eq!(before.len(), 1, "log:\n{}", setup.log());
    assert!(before[0].document["message_id"].is_null());

    recreate(&setup.user, MAILBOX, &[&repeat, &new]).await;
    let bridge = setup.start();
    let records = kafka_settled(&topic, 3, PATIENCE).await;
    let published = setup.sample(PUBLISHED).await;
    bridge.stop().await;

    assert_eq!(
        records.len(),
        3,
        "the first alert, the reset event and the new alert; log:\n{}",
        setup.log()
    );
    assert!(
        text_of(&records[0]).contains("91 percent"),
        "{}",
        records[0].document
    );
    assert_eq!(records[1].headers["schema"], "mailbridge.mailbox-reset.v1");
    assert_eq!(records[1].document["policy"], "skip_known");
    let after = &records[2];
    assert!(text_of(after).contains("97 percent"), "{}", after.document);
    assert_eq!(after.document["uid"], 2);
    assert!(after.document["message_id"].is_null());
    assert_ne!(
        records[0].document["content_sha256"], after.document["content_sha256"],
        "the two alerts differ in content"
    );
    assert_eq!(published, Some(1.0), "only the new alert was published");
    let checkpoint = setup.checkpoint("kafka", MAILBOX).expect("checkpoint");
    assert_eq!(checkpoint["last_uid"], 2);
    assert!(
        setup
            .log()
            .contains("Skipping mail published before the UIDVALIDITY change"),
        "the repeat was not skipped as known"
    );
}
