//! Three replicas share thirty mailboxes through the broker
//! (`coordination = "broker"`): a Kafka consumer group, or RabbitMQ
//! lease queues. While mail flows, one replica is killed with SIGKILL and
//! a fourth starts. Every mail arrives, repeats stay within one batch per
//! mailbox, and the replicas' logs show that no mailbox was ever watched
//! by two replicas at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::bridge::{Bridge, Setup};
use mailbridge::imap::mailbox_name::encode;

use crate::mailbox::{mail, session};
use crate::records::{Published, amqp_messages, create_topic_with, declare_queue, kafka_records};
use crate::support::unique;

/// Mailboxes the pipeline shares.
const MAILBOXES: usize = 30;
/// Replicas running at the start.
const REPLICAS: usize = 3;
/// `batch_size` of the pipeline.
const BATCH: usize = 5;
/// Mails in each mailbox before the start.
const BEFORE: usize = 4;
/// Rounds of one mail per mailbox appended while the replicas run.
const ROUNDS: usize = 6;
/// Time allowed for every mail to arrive after the last append.
const ARRIVAL: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Kafka,
    Amqp,
}

#[tokio::test]
async fn replicas_share_mailboxes_through_kafka() {
    share_mailboxes(Kind::Kafka).await;
}

#[tokio::test]
async fn replicas_share_mailboxes_through_rabbitmq() {
    share_mailboxes(Kind::Amqp).await;
}

async fn share_mailboxes(kind: Kind) {
    let group = unique("replicas-group");
    let target = unique("replicas-target");
    match kind {
        Kind::Kafka => {
            // The test reader reads partition 0 only.
            create_topic_with(&target, 1).await;
            // More partitions than replicas, so every replica gets some.
            create_topic_with(&format!("{group}.assignment"), 12).await;
            create_topic_with(&format!("{group}.checkpoints"), 1).await;
        }
        Kind::Amqp => declare_queue(&target).await,
    }
    let mailboxes: Vec<String> = (0..MAILBOXES).map(|i| format!("Shared-{i:02}")).collect();
    let pipeline = pipeline(kind, &group, &target, &mailboxes);

    let setups: Vec<Setup> = replicas(REPLICAS + 1);
    for setup in &setups {
        setup.prepare(&pipeline).await;
    }
    let user = setups[0].user.clone();
    let run = unique("replicas");
    let mut appended = Vec::new();
    append_round(&user, &run, &mailboxes, 0..BEFORE, &mut appended).await;

    let mut bridges: Vec<Option<Bridge<'_>>> = setups[..REPLICAS]
        .iter()
        .map(|setup| Some(setup.start()))
        .collect();
    for setup in &setups[..REPLICAS] {
        setup.wait_ready().await;
    }
    let mut killed_at = None;
    for round in 0..ROUNDS {
        let index = BEFORE + round;
        append_round(&user, &run, &mailboxes, index..index + 1, &mut appended).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        if round == ROUNDS / 2 - 1 {
            wait_until_holding(&setups[0]).await;
            bridges[0].take().expect("first replica").kill().await;
            killed_at = Some(Utc::now());
            bridges.push(Some(setups[REPLICAS].start()));
        }
    }

    let published = wait_for_all(kind, &target, &appended).await;
    for bridge in bridges.into_iter().flatten() {
        bridge.stop().await;
    }

    let by_subject = count_subjects(&published);
    let missing: Vec<&String> = appended
        .iter()
        .filter(|subject| !by_subject.contains_key(*subject))
        .collect();
    assert!(
        missing.is_empty(),
        "{kind:?}: {} mails never arrived: {missing:?}",
        missing.len()
    );
    assert_repeats_within_batch(&published, kind);

    let killed_at = killed_at.expect("a replica was killed");
    let mut watched_by: BTreeMap<String, Vec<Interval>> = BTreeMap::new();
    for (index, setup) in setups.iter().enumerate() {
        let end_of_run = (index == 0).then_some(killed_at);
        for (mailbox, interval) in intervals(&setup.log(), index, end_of_run) {
            watched_by.entry(mailbox).or_default().push(interval);
        }
    }
    assert_eq!(
        watched_by.keys().cloned().collect::<BTreeSet<_>>(),
        mailboxes.iter().cloned().collect::<BTreeSet<_>>(),
        "{kind:?}: every mailbox was watched"
    );
    for (mailbox, intervals) in &watched_by {
        assert_no_overlap(mailbox, intervals, kind);
    }
    // The mailboxes the killed replica held went to other replicas.
    let held_at_kill: Vec<&String> = watched_by
        .iter()
        .filter(|(_, intervals)| {
            intervals
                .iter()
                .any(|interval| interval.replica == 0 && interval.to == Some(killed_at))
        })
        .map(|(mailbox, _)| mailbox)
        .collect();
    assert!(
        !held_at_kill.is_empty(),
        "{kind:?}: the killed replica held no mailbox; its coordination log:\n{}",
        coordination_log(&setups[0].log())
    );
    for mailbox in &held_at_kill {
        let taken_over = watched_by[*mailbox]
            .iter()
            .any(|interval| interval.replica != 0 && interval.from >= killed_at);
        assert!(
            taken_over,
            "{kind:?}: nobody took {mailbox} over after the kill"
        );
    }
    println!(
        "{kind:?}: {} intervals, {} mailboxes held by the killed replica",
        watched_by.values().map(Vec::len).sum::<usize>(),
        held_at_kill.len()
    );
    let replicas_with_work: BTreeSet<usize> = watched_by
        .values()
        .flatten()
        .map(|interval| interval.replica)
        .collect();
    assert!(
        replicas_with_work.len() >= REPLICAS,
        "{kind:?}: only replicas {replicas_with_work:?} watched mailboxes"
    );
    for setup in &setups {
        setup.assert_log_has_no_token();
    }
}

/// Waits until the replica of `setup` watches a mailbox, so that the kill
/// moves some.
async fn wait_until_holding(setup: &Setup) {
    let started = Instant::now();
    loop {
        let metrics = setup.metrics().await;
        let held = metrics
            .lines()
            .filter(|line| line.starts_with("mailbridge_mailbox_assigned{"))
            .filter(|line| line.ends_with(" 1"))
            .count();
        if held > 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the replica watched no mailbox for 60 s; its coordination log:\n{}",
            coordination_log(&setup.log())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Setups of one mailbox user, each with its own state directory, token
/// file and metrics port.
fn replicas(count: usize) -> Vec<Setup> {
    let first = Setup::new("inbound-replicas");
    let user = first.user.clone();
    let mut setups = vec![first];
    for _ in 1..count {
        let mut setup = Setup::new("inbound-replicas");
        setup.user = user.clone();
        setup
            .env
            .push(("MAILBRIDGE_LOG_FORMAT".into(), "json".into()));
        setups.push(setup);
    }
    setups[0]
        .env
        .push(("MAILBRIDGE_LOG_FORMAT".into(), "json".into()));
    setups
}

fn pipeline(kind: Kind, group: &str, target: &str, mailboxes: &[String]) -> String {
    let list = mailboxes
        .iter()
        .map(|mailbox| format!("\"{mailbox}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let destination = match kind {
        Kind::Kafka => format!("broker = \"kafka\"\ntopic = \"{target}\""),
        Kind::Amqp => {
            format!("broker = \"rabbitmq\"\nexchange = \"\"\nrouting_key = \"{target}\"")
        }
    };
    format!(
        r#"
[inbound.shared]
account = "watched"
{destination}
mailboxes = [{list}]
batch_size = {BATCH}
coordination = "broker"
coordination_group = "{group}"
"#
    )
}

/// Appends mails `indexes` to every mailbox over one IMAP session, and
/// records their subjects.
async fn append_round(
    user: &str,
    run: &str,
    mailboxes: &[String],
    indexes: std::ops::Range<usize>,
    appended: &mut Vec<String>,
) {
    let mut session = session(user).await;
    for mailbox in mailboxes {
        let name = encode(mailbox);
        let _ = session.create(&name).await;
        for index in indexes.clone() {
            let subject = format!("{run} {mailbox} {index}");
            let raw = mail(&format!("{run}-{mailbox}-{index}"), &subject);
            session
                .append(&name, None, None, &raw)
                .await
                .expect("append");
            appended.push(subject);
        }
    }
    session.logout().await.expect("logout");
}

/// Reads the target until every appended mail arrived or [`ARRIVAL`]
/// passed, then a little longer to catch repeats.
async fn wait_for_all(kind: Kind, target: &str, appended: &[String]) -> Vec<Published> {
    let started = Instant::now();
    let mut published: Vec<Published> = Vec::new();
    loop {
        let wait = Duration::from_secs(5);
        match kind {
            Kind::Kafka => published = kafka_records(target, usize::MAX, wait).await,
            Kind::Amqp => published.extend(amqp_messages(target, usize::MAX, wait).await),
        }
        let arrived = count_subjects(&published);
        let all = appended.iter().all(|subject| arrived.contains_key(subject));
        if all || started.elapsed() > ARRIVAL {
            return published;
        }
    }
}

fn count_subjects(published: &[Published]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in published {
        let subject = record.document["subject"].as_str().unwrap_or("").to_owned();
        *counts.entry(subject).or_insert(0) += 1;
    }
    counts
}

/// Repeats carry the id of the first copy, and each mailbox repeats at
/// most one batch.
fn assert_repeats_within_batch(published: &[Published], kind: Kind) {
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut repeats: BTreeMap<String, usize> = BTreeMap::new();
    for record in published {
        let document = &record.document;
        let subject = document["subject"].as_str().unwrap_or("").to_owned();
        let id = document["id"].as_str().expect("id").to_owned();
        let mailbox = document["mailbox"].as_str().expect("mailbox").to_owned();
        if !ids.entry(subject).or_default().insert(id) {
            *repeats.entry(mailbox).or_insert(0) += 1;
        }
    }
    for (subject, set) in &ids {
        assert_eq!(set.len(), 1, "{kind:?}: {subject} arrived with ids {set:?}");
    }
    for (mailbox, count) in &repeats {
        assert!(*count <= BATCH, "{kind:?}: {count} repeats from {mailbox}");
    }
}

/// Time a replica watched a mailbox: from the assignment to the release,
/// or to the end of its run.
#[derive(Debug, Clone, Copy)]
struct Interval {
    replica: usize,
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
}

/// Reads the watch intervals from a JSON log. An interval still open when
/// the log ends lasts until `end_of_run` (a kill), or beyond the test.
fn intervals(
    log: &str,
    replica: usize,
    end_of_run: Option<DateTime<Utc>>,
) -> Vec<(String, Interval)> {
    let mut open: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut closed = Vec::new();
    for line in log.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let message = event["message"].as_str().unwrap_or("");
        let (Some(mailbox), Some(at)) = (event["mailbox"].as_str(), timestamp(&event)) else {
            continue;
        };
        match message {
            "Mailbox assigned to this replica" => {
                let previous = open.insert(mailbox.to_owned(), at);
                assert!(
                    previous.is_none(),
                    "replica {replica} assigned {mailbox} twice"
                );
            }
            "Mailbox released by this replica" => {
                let from = open
                    .remove(mailbox)
                    .unwrap_or_else(|| panic!("replica {replica} released {mailbox} unassigned"));
                let to = Some(at);
                closed.push((mailbox.to_owned(), Interval { replica, from, to }));
            }
            _ => {}
        }
    }
    for (mailbox, from) in open {
        let to = end_of_run;
        closed.push((mailbox, Interval { replica, from, to }));
    }
    closed
}

fn timestamp(event: &Value) -> Option<DateTime<Utc>> {
    let text = event["timestamp"].as_str()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

fn assert_no_overlap(mailbox: &str, intervals: &[Interval], kind: Kind) {
    let mut sorted = intervals.to_vec();
    sorted.sort_by_key(|interval| interval.from);
    for pair in sorted.windows(2) {
        let (first, second) = (pair[0], pair[1]);
        let Some(first_end) = first.to else {
            panic!(
                "{kind:?}: {mailbox} still watched by replica {} when replica {} took it: {sorted:?}",
                first.replica, second.replica
            );
        };
        assert!(
            first_end <= second.from,
            "{kind:?}: {mailbox} watched by replicas {} and {} at once: {sorted:?}",
            first.replica,
            second.replica
        );
    }
}

/// Returns the warnings and the coordination events of a JSON log, for
/// failure messages.
fn coordination_log(log: &str) -> String {
    let wanted = |line: &&str| {
        line.contains("\"WARN\"")
            || line.contains("\"ERROR\"")
            || line.contains("lease")
            || line.contains("replica")
            || line.contains("partition")
    };
    let lines: Vec<&str> = log.lines().filter(wanted).collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// A pipeline that turns coordination on keeps its place: the first
/// coordinated replica hands its file checkpoints to the broker, so a
/// replica with an empty state directory publishes nothing again.
#[tokio::test]
async fn coordination_on_keeps_the_checkpoint() {
    let queue = unique("replicas-switch");
    declare_queue(&queue).await;
    let group = unique("replicas-switch-group");
    let mailboxes: Vec<String> = (0..3).map(|i| format!("Switch-{i}")).collect();
    let single = pipeline(Kind::Amqp, &group, &queue, &mailboxes)
        .replace("coordination = \"broker\"\n", "")
        .replace(&format!("coordination_group = \"{group}\"\n"), "");
    let coordinated = pipeline(Kind::Amqp, &group, &queue, &mailboxes);
    let setups = replicas(2);
    let user = setups[0].user.clone();
    let run = unique("switch");
    let mut appended = Vec::new();
    append_round(&user, &run, &mailboxes, 0..3, &mut appended).await;

    setups[0].prepare(&single).await;
    let bridge = setups[0].start();
    let first = wait_for_all(Kind::Amqp, &queue, &appended).await;
    bridge.stop().await;
    assert_eq!(first.len(), appended.len(), "the single replica's run");

    setups[0].prepare(&coordinated).await;
    let bridge = setups[0].start();
    setups[0].wait_ready().await;
    wait_until_holding(&setups[0]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    bridge.stop().await;
    setups[1].prepare(&coordinated).await;
    let bridge = setups[1].start();
    setups[1].wait_ready().await;
    wait_until_holding(&setups[1]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    bridge.stop().await;

    let again = amqp_messages(&queue, usize::MAX, Duration::from_secs(3)).await;
    let subjects: Vec<&str> = again
        .iter()
        .map(|record| record.document["subject"].as_str().unwrap_or(""))
        .collect();
    assert!(subjects.is_empty(), "published again: {subjects:?}");
}
