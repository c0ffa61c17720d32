//! Coordination through Kafka: two replicas of one pipeline split its
//! mailboxes through the consumer group, hand them over at each
//! rebalance, and read back the checkpoint that the other one saved.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailbridge::config::{Broker, Kafka, Property};
use mailbridge::pipeline::assign::{Assigner, Event, Scope};
use mailbridge::telemetry::Readiness;
use tokio::sync::{mpsc, watch};

use crate::records::create_topic_with;
use crate::support::{stack, unique};

/// Time for a join or rebalance. Each join on the mock broker waits 3 s.
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(40);

/// Over 3 partitions: INBOX, Sent and Archive on 2, Junk and Drafts on
/// 0, Trash on 1, so each replica gets some.
const MAILBOXES: [&str; 6] = ["INBOX", "Sent", "Archive", "Junk", "Drafts", "Trash"];

/// Mailboxes a replica holds, and the checkpoints its acquires carried.
#[derive(Default)]
struct Held {
    mailboxes: BTreeSet<String>,
    checkpoints: BTreeMap<String, Option<Vec<u8>>>,
    releases: usize,
}

/// Confirms every release at once and records what the replica holds.
fn follow(mut events: mpsc::UnboundedReceiver<Event>) -> Arc<Mutex<Held>> {
    let held = Arc::new(Mutex::new(Held::default()));
    let state = Arc::clone(&held);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let mut held = state.lock().unwrap();
            match event {
                Event::Acquire {
                    mailbox,
                    checkpoint,
                } => {
                    assert!(held.mailboxes.insert(mailbox.clone()), "{mailbox} twice");
                    held.checkpoints.insert(mailbox, checkpoint);
                }
                Event::Release { mailbox, done } => {
                    assert!(held.mailboxes.remove(&mailbox), "{mailbox} not held");
                    held.releases += 1;
                    done.send(()).unwrap();
                }
            }
        }
    });
    held
}

fn broker() -> Broker {
    let properties = [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ];
    Broker::Kafka(Kafka {
        bootstrap_servers: stack("STACK_KAFKA_BOOTSTRAP"),
        properties: properties
            .iter()
            .map(|(name, value)| (name.to_string(), Property::Plain(value.to_string())))
            .collect(),
    })
}

fn scope(group: &str, readiness: &Readiness) -> Scope {
    Scope {
        broker: "events".into(),
        pipeline: "support".into(),
        account: "support".into(),
        group: group.into(),
        mailboxes: MAILBOXES.map(String::from).to_vec(),
        partitions: NonZeroU32::new(60).unwrap(),
        readiness: readiness.clone(),
    }
}

async fn start(group: &str, readiness: &Readiness) -> (Assigner, Arc<Mutex<Held>>) {
    let (sender, events) = mpsc::unbounded_channel();
    let (_, shutdown) = watch::channel(false);
    let assigner = Assigner::start(scope(group, readiness), &broker(), sender, shutdown)
        .await
        .expect("start assigner");
    (assigner, follow(events))
}

fn held(replica: &Mutex<Held>) -> BTreeSet<String> {
    replica.lock().unwrap().mailboxes.clone()
}

/// Waits until `check` holds, or fails with `what`.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + REBALANCE_TIMEOUT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn all() -> BTreeSet<String> {
    MAILBOXES.map(String::from).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_replicas_share_mailboxes() {
    let group = unique("coordination");
    // Fewer partitions than configured: the mapping must follow the topic.
    create_topic_with(&format!("{group}.assignment"), 3).await;
    let readiness = Readiness::default();
    let component = "inbound/support/coordination";

    let (first, first_held) = start(&group, &readiness).await;
    eventually("first replica holds every mailbox", || {
        held(&first_held) == all()
    })
    .await;
    assert!(readiness.snapshot().1[component].ready);
    assert_eq!(first_held.lock().unwrap().checkpoints["INBOX"], None);
    first
        .checkpoints()
        .save("INBOX", b"uidvalidity 7\n".to_vec())
        .await
        .expect("save checkpoint");

    let (second, second_held) = start(&group, &readiness).await;
    eventually("replicas split the mailboxes", || {
        let (a, b) = (held(&first_held), held(&second_held));
        !a.is_empty() && !b.is_empty() && a.union(&b).cloned().collect::<BTreeSet<_>>() == all()
    })
    .await;
    let (a, b) = (held(&first_held), held(&second_held));
    assert!(a.is_disjoint(&b), "both hold {:?}", a.intersection(&b));
    assert!(first_held.lock().unwrap().releases >= MAILBOXES.len());
    if b.contains("INBOX") {
        let checkpoint = second_held.lock().unwrap().checkpoints["INBOX"].clone();
        assert_eq!(checkpoint.as_deref(), Some(&b"uidvalidity 7\n"[..]));
    }

    second.close().await;
    assert!(held(&second_held).is_empty(), "{:?}", held(&second_held));
    eventually("first replica takes every mailbox back", || {
        held(&first_held) == all()
    })
    .await;
    let checkpoint = first_held.lock().unwrap().checkpoints["INBOX"].clone();
    assert_eq!(checkpoint.as_deref(), Some(&b"uidvalidity 7\n"[..]));

    first.close().await;
    assert!(held(&first_held).is_empty(), "{:?}", held(&first_held));
    assert!(!readiness.snapshot().1.contains_key(component));
}
