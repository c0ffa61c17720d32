//! `move_to` given as a special-use attribute of RFC 6154: the watch moves
//! published mail to the mailbox that Dovecot marks with it. Without such
//! a mailbox, or when it is the watched one, the watch fails with the key
//! and the attribute, and creates no mailbox.

use futures::TryStreamExt;

use super::wait_for_count;
use crate::bridge::{PATIENCE, Setup};
use crate::mailbox::{append, mail, session};
use crate::records::{create_topic, kafka_records};
use crate::support::unique;

/// Writes a Kafka pipeline on `mailbox` that moves published mail to `move_to`, signs
/// the account in, and returns the topic.
async fn prepare(setup: &Setup, mailbox: &str, move_to: &str) -> String {
    let topic = unique("special-use.kafka");
    create_topic(&topic).await;
    let pipeline = format!(
        "[inbound.kafka]\naccount = \"watched\"\nmailboxes = [\"{mailbox}\"]\n\
         broker = \"kafka\"\ntopic = \"{topic}\"\n\
         after_publish = \"move\"\nmove_to = '{move_to}'\n"
    );
    setup.prepare(&pipeline).await;
    topic
}

/// Returns the names of the mailboxes of `user`.
async fn mailbox_names(user: &str) -> Vec<String> {
    let mut session = session(user).await;
    let names = session
        .list(Some(""), Some("*"))
        .await
        .expect("LIST")
        .map_ok(|name| name.name().to_owned())
        .try_collect()
        .await
        .expect("LIST replies");
    let _ = session.logout().await;
    names
}

#[tokio::test]
async fn inbound_move_to_special_use_finds_archive() {
    let setup = Setup::new("inbound-special-use");
    let topic = prepare(&setup, "INBOX", "\\archive").await;
    append(&setup.user, "INBOX", &mail(&unique("a"), "to the archive")).await;

    let bridge = setup.start();
    let records = kafka_records(&topic, 1, PATIENCE).await;
    let archived = wait_for_count(&setup.user, "Archive", 1).await;
    let inbox = wait_for_count(&setup.user, "INBOX", 0).await;
    bridge.stop().await;

    let log = setup.log();
    assert_eq!(records.len(), 1, "log:\n{log}");
    assert_eq!(archived.len(), 1, "log:\n{log}");
    assert_eq!(inbox.len(), 0, "log:\n{log}");
    assert!(
        log.contains("\"Archive\""),
        "the found mailbox is logged: {log}"
    );
}

#[tokio::test]
async fn inbound_move_to_missing_special_use_named() {
    let setup = Setup::new("inbound-special-use-missing");
    let topic = prepare(&setup, "INBOX", "\\Junk").await;
    append(
        &setup.user,
        "INBOX",
        &mail(&unique("j"), "stays in the inbox"),
    )
    .await;

    let bridge = setup.start();
    let expected = "special-use attribute \\Junk that move_to names";
    let deadline = std::time::Instant::now() + PATIENCE;
    while !setup.log().contains(expected) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let records = kafka_records(&topic, 1, std::time::Duration::from_secs(2)).await;
    bridge.stop().await;

    let log = setup.log();
    assert!(log.contains(expected), "log:\n{log}");
    assert!(records.is_empty(), "published before the target was known");
    let names = mailbox_names(&setup.user).await;
    assert!(
        !names.iter().any(|name| name.eq_ignore_ascii_case("Junk")),
        "a mailbox was created: {names:?}"
    );
    assert_eq!(wait_for_count(&setup.user, "INBOX", 1).await.len(), 1);
}

#[tokio::test]
async fn inbound_move_to_watched_special_use_rejected() {
    let setup = Setup::new("inbound-special-use-watched");
    let topic = prepare(&setup, "Archive", "\\Archive").await;
    append(
        &setup.user,
        "Archive",
        &mail(&unique("w"), "stays archived"),
    )
    .await;

    let bridge = setup.start();
    let expected = "names mailbox \"Archive\", which pipeline kafka watches";
    let deadline = std::time::Instant::now() + PATIENCE;
    while !setup.log().contains(expected) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let records = kafka_records(&topic, 1, std::time::Duration::from_secs(2)).await;
    bridge.stop().await;

    let log = setup.log();
    assert!(log.contains(expected), "log:\n{log}");
    assert!(
        records.is_empty(),
        "published from a mailbox it would move to"
    );
    assert_eq!(wait_for_count(&setup.user, "Archive", 1).await.len(), 1);
}
