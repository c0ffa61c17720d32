//! SIGTERM while a mailbox of a few hundred mails is backfilled in small
//! batches: the process finishes its batch and exits 0, and the next run
//! publishes the rest. Every mail arrives, a repeat carries the same
//! document id, repeats stay within one batch, and the checkpoint is
//! valid and never ahead of what was published.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mailbridge::pipeline::checkpoint::CheckpointStore;

use super::{pipelines, targets};
use crate::bridge::{ACCOUNT, PATIENCE, Setup};
use crate::mailbox::{append, mail, recreate};
use crate::records::{Published, SETTLE, amqp_messages, kafka_records};
use crate::support::unique;

/// Mails in the mailbox.
const MAILS: usize = 300;
/// `batch_size` of both pipelines.
const BATCH: usize = 5;
/// The mailbox that is backfilled.
const MAILBOX: &str = "Load";

#[tokio::test]
async fn inbound_sigterm_during_backfill_loses_nothing() {
    let setup = Setup::new("inbound-drain");
    let (topic, queue) = targets("drain").await;
    let extra = format!("mailboxes = [\"{MAILBOX}\"]\nbatch_size = {BATCH}");
    setup.prepare(&pipelines(&topic, &queue, &extra)).await;
    let run = unique("drain");
    let mails: Vec<Vec<u8>> = (0..MAILS)
        .map(|index| mail(&format!("{run}-{index}"), &format!("load {index}")))
        .collect();
    let mails: Vec<&[u8]> = mails.iter().map(Vec::as_slice).collect();
    // `recreate` deletes the mailbox first, so it must exist.
    append(&setup.user, MAILBOX, mails[0]).await;
    recreate(&setup.user, MAILBOX, &mails).await;

    let bridge = setup.start();
    let published_at_signal = wait_until_published(&setup, BATCH).await;
    let status = bridge.stop().await;
    let kafka_first = kafka_records(&topic, MAILS, Duration::from_secs(5)).await;
    let amqp_first = amqp_messages(&queue, MAILS, SETTLE).await;
    let kafka_stop = checkpoint(&setup, "kafka");
    let amqp_stop = checkpoint(&setup, "rabbitmq");

    assert!(status.success(), "exit status {status}");
    assert_eq!(status.code(), Some(0));
    // NOTE: only the Kafka pipeline is known to be stopped mid-backfill.
    // RabbitMQ confirms faster, and its pipeline may have published every
    // mail before the signal.
    assert!(
        kafka_first.len() < MAILS,
        "the backfill ended before the stop ({published_at_signal} published at the signal)"
    );
    assert_published_through(&kafka_first, kafka_stop.map_or(0, |c| c.last_uid), "Kafka");
    assert_published_through(&amqp_first, amqp_stop.map_or(0, |c| c.last_uid), "AMQP");

    let bridge = setup.start();
    wait_for_checkpoint(&setup, "kafka", MAILS).await;
    wait_for_checkpoint(&setup, "rabbitmq", MAILS).await;
    bridge.stop().await;
    let kafka_all = kafka_records(&topic, MAILS + BATCH + 1, SETTLE * 2).await;
    let mut amqp_all = amqp_first;
    amqp_all.extend(amqp_messages(&queue, MAILS + BATCH + 1, SETTLE).await);

    let kafka_repeats = assert_each_mail_arrived(&kafka_all, "Kafka", &setup);
    let amqp_repeats = assert_each_mail_arrived(&amqp_all, "AMQP", &setup);
    assert!(kafka_repeats <= BATCH, "{kafka_repeats} Kafka repeats");
    assert!(amqp_repeats <= BATCH, "{amqp_repeats} AMQP repeats");
    for (pipeline, records) in [("kafka", &kafka_all), ("rabbitmq", &amqp_all)] {
        let last = checkpoint(&setup, pipeline).expect("checkpoint saved");
        assert_eq!(last.last_uid as usize, MAILS, "{pipeline}");
        assert_eq!(last.filter, None, "{pipeline}");
        let uidvalidity = records[0].document["uidvalidity"].as_u64();
        assert_eq!(uidvalidity, Some(u64::from(last.uidvalidity)), "{pipeline}");
    }
    setup.assert_log_has_no_token();
}

/// Waits until the Kafka pipeline published at least `count` mails, and
/// returns the count.
async fn wait_until_published(setup: &Setup, count: usize) -> f64 {
    let series = r#"mailbridge_messages_published_total{pipeline="kafka",result="success"}"#;
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let published = setup.sample_if_listening(series).await;
        if let Some(published) = published.filter(|n| *n >= count as f64) {
            return published;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "fewer than {count} mails published after {PATIENCE:?}; log:\n{}",
        setup.log()
    );
}

/// Loads the checkpoint of `pipeline` with the product's own reader, which
/// rejects a malformed file or one of another mailbox.
fn checkpoint(
    setup: &Setup,
    pipeline: &str,
) -> Option<mailbridge::pipeline::checkpoint::Checkpoint> {
    let store = CheckpointStore::new(&setup.state(), pipeline, ACCOUNT, MAILBOX);
    store
        .load()
        .unwrap_or_else(|err| panic!("invalid checkpoint of {pipeline}: {err}"))
}

/// Waits until the checkpoint of `pipeline` reaches `uid`.
async fn wait_for_checkpoint(setup: &Setup, pipeline: &str, uid: usize) {
    let deadline = Instant::now() + PATIENCE * 2;
    while Instant::now() < deadline {
        let last = checkpoint(setup, pipeline).map_or(0, |c| c.last_uid as usize);
        if last >= uid {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{pipeline} did not reach UID {uid}; log:\n{}", setup.log());
}

/// Checks that every UID up to `last_uid` of the checkpoint is among
/// `records`, so the checkpoint is never ahead of what was published.
fn assert_published_through(records: &[Published], last_uid: u32, broker: &str) {
    let uids: BTreeSet<u64> = records
        .iter()
        .filter_map(|record| record.document["uid"].as_u64())
        .collect();
    for uid in 1..=u64::from(last_uid) {
        assert!(
            uids.contains(&uid),
            "{broker}: UID {uid} is checkpointed but was not published"
        );
    }
}

/// Checks that each mail arrived and that the repeats of a mail carry
/// its document id; returns the number of repeats.
fn assert_each_mail_arrived(records: &[Published], broker: &str, setup: &Setup) -> usize {
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for record in records {
        let subject = record.document["subject"].as_str().expect("subject");
        let id = record.document["id"].as_str().expect("id");
        ids.entry(subject.to_owned())
            .or_default()
            .insert(id.to_owned());
    }

    for index in 0..MAILS {
        let subject = format!("load {index}");
        let found = ids.get(&subject);
        assert!(
            found.is_some(),
            "{broker}: {subject} is missing; log:\n{}",
            setup.log()
        );
        let distinct = found.map_or(0, BTreeSet::len);
        assert_eq!(distinct, 1, "{broker}: {subject} has ids {found:?}");
    }
    assert_eq!(ids.len(), MAILS, "{broker}: unexpected subjects");

    records.len() - MAILS
}
