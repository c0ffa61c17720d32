//! Membership in the consumer group on the assignment topic. The
//! rebalance callbacks turn partitions into mailboxes: a revocation
//! releases the mailboxes and waits until the pipeline stopped their
//! watches, and an assignment reads their checkpoints and acquires them.
//! librdkafka runs the callbacks inside `poll`, on the group's own
//! thread, so they may block.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::{mpsc, oneshot, watch};

use super::super::{Event, Scope};
use super::checkpoints::{Latest, Reader};
use crate::broker::kafka::context::Context as LogContext;

/// The group's consumer.
pub(super) type Client = BaseConsumer<Context>;

/// Maximum wait of one poll, and so the delay of a stop.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// First and maximum pause between attempts to read the checkpoints.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Client context of the group's consumer.
pub(super) struct Context {
    log: LogContext,
    scope: Scope,
    topic: String,
    /// Mailboxes of each partition of the assignment topic.
    partitions: HashMap<i32, Vec<String>>,
    /// Mailboxes this replica holds, with their partition.
    held: Mutex<BTreeMap<String, i32>>,
    events: mpsc::UnboundedSender<Event>,
    reader: Reader,
    stop: Arc<AtomicBool>,
    shutdown: watch::Receiver<bool>,
}

/// Parts of the context other than the scope.
pub(super) struct Parts {
    pub(super) topic: String,
    pub(super) partitions: HashMap<i32, Vec<String>>,
    pub(super) events: mpsc::UnboundedSender<Event>,
    pub(super) reader: Reader,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) shutdown: watch::Receiver<bool>,
}

impl Context {
    pub(super) fn new(scope: Scope, parts: Parts) -> Self {
        Self {
            log: LogContext::new(&scope.broker),
            scope,
            topic: parts.topic,
            partitions: parts.partitions,
            held: Mutex::default(),
            events: parts.events,
            reader: parts.reader,
            stop: parts.stop,
            shutdown: parts.shutdown,
        }
    }

    fn held(&self) -> MutexGuard<'_, BTreeMap<String, i32>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns the mailboxes of the partitions of `list` that belong to
    /// the assignment topic, with their partition.
    fn mailboxes_of(&self, list: &TopicPartitionList) -> Vec<(String, i32)> {
        let ids = list
            .elements()
            .into_iter()
            .filter(|element| element.topic() == self.topic)
            .map(|element| element.partition());

        ids.flat_map(|id| {
            let names = self.partitions.get(&id).into_iter().flatten();
            names.map(move |name| (name.clone(), id))
        })
        .collect()
    }

    /// Releases the held mailboxes of the revoked partitions and waits
    /// until the pipeline confirmed each release or dropped its sender. A wait
    /// longer than `max.poll.interval.ms` (librdkafka default 300 s) makes
    /// the member leave the group, which starts another rebalance.
    fn release(&self, client: &Client, list: &TopicPartitionList) {
        let lost = client.assignment_lost();
        let mut released = Vec::new();
        let mut answers = Vec::new();
        {
            let mut held = self.held();
            for (mailbox, _) in self.mailboxes_of(list) {
                if held.remove(&mailbox).is_none() {
                    continue;
                }
                let (done, answer) = oneshot::channel();
                let event = Event::Release {
                    mailbox: mailbox.clone(),
                    done,
                };
                if self.events.send(event).is_ok() {
                    answers.push(answer);
                }
                released.push(mailbox);
            }
        }

        for answer in answers {
            // An error means the pipeline dropped the sender, which ends
            // the wait as well.
            let _ = answer.blocking_recv();
        }
        let (pipeline, group) = (&self.scope.pipeline, &self.scope.group);
        tracing::info!(
            pipeline,
            group,
            partitions = describe(list),
            mailboxes = ?released,
            lost,
            "Mailboxes released"
        );
        // A lost assignment means the group dropped this member, as when
        // the broker is unreachable: no mailbox is watched until it joins
        // again.
        if lost {
            self.scope.readiness.not_ready(
                &self.scope.component(),
                "lost the consumer group assignment; waiting to join the group again",
            );
        }
    }

    /// Reads the checkpoints of the mailboxes of the assigned partitions
    /// and acquires those not held yet.
    fn acquire(&self, list: &TopicPartitionList) {
        let assigned = {
            let held = self.held();
            let mut mailboxes = self.mailboxes_of(list);
            mailboxes.retain(|(mailbox, _)| !held.contains_key(mailbox));
            mailboxes
        };

        let names: Vec<String> = assigned.iter().map(|(name, _)| name.clone()).collect();
        let mut latest = match names.is_empty() {
            true => Latest::default(),
            false => match self.read_checkpoints(&names) {
                Some(latest) => latest,
                None => return,
            },
        };

        let mut held = self.held();
        for (mailbox, partition) in assigned {
            let checkpoint = latest.take(&mailbox);
            held.insert(mailbox.clone(), partition);
            let _ = self.events.send(Event::Acquire {
                mailbox,
                checkpoint,
            });
        }
        drop(held);

        let (pipeline, group) = (&self.scope.pipeline, &self.scope.group);
        tracing::info!(
            pipeline,
            group,
            partitions = describe(list),
            mailboxes = ?names,
            "Mailboxes assigned"
        );
        self.scope.readiness.ready(&self.scope.component());
    }

    /// Reads the checkpoints of `mailboxes`, retrying with a growing pause
    /// until it succeeds. Returns `None` when the assigner stops first.
    fn read_checkpoints(&self, mailboxes: &[String]) -> Option<Latest> {
        let mut pause = RETRY_FIRST;
        loop {
            let error = match self.reader.read(mailboxes) {
                Ok(latest) => return Some(latest),
                Err(error) => error,
            };

            let (pipeline, group) = (&self.scope.pipeline, &self.scope.group);
            let seconds = pause.as_secs();
            tracing::warn!(
                pipeline,
                group,
                error,
                seconds,
                "Failed to read checkpoints, retrying"
            );
            let reason = format!("failed to read checkpoints: {error}");
            self.scope
                .readiness
                .not_ready(&self.scope.component(), reason);

            if self.sleep_unless_stopped(pause) {
                return None;
            }
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// Sleeps for `pause` in short steps. Returns whether the assigner
    /// stopped or the process started to shut down meanwhile.
    fn sleep_unless_stopped(&self, pause: Duration) -> bool {
        let mut left = pause;
        while !left.is_zero() {
            if self.stop.load(Ordering::SeqCst) || *self.shutdown.borrow() {
                return true;
            }
            let step = left.min(POLL_INTERVAL);
            std::thread::sleep(step);
            left -= step;
        }

        false
    }

    /// Marks the assigner not ready after an error that ends membership.
    pub(super) fn failed(&self, reason: String) {
        let (pipeline, group) = (&self.scope.pipeline, &self.scope.group);
        tracing::error!(pipeline, group, error = reason, "Consumer group failed");
        self.scope
            .readiness
            .not_ready(&self.scope.component(), reason);
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ConsumerContext for Context {
    /// Releases the mailboxes of revoked partitions, also of a lost
    /// assignment, before the group may give them to another member.
    fn pre_rebalance(&self, client: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => self.release(client, list),
            Rebalance::Assign(_) => {}
            Rebalance::Error(err) => self.failed(format!("rebalance failed: {err}")),
        }
    }

    fn post_rebalance(&self, _client: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.acquire(list);
        }
    }
}

/// Polls `client` until `stop` is set, then drops it on this thread: its
/// close leaves the group, and the revocation releases every mailbox.
pub(super) fn run(client: Client, stop: Arc<AtomicBool>, stopped: oneshot::Sender<()>) {
    while !stop.load(Ordering::SeqCst) {
        match client.poll(POLL_INTERVAL) {
            // Nothing is produced to the assignment topic, so a stray record
            // carries no meaning.
            None | Some(Ok(_)) | Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(err)) => report(&client, &err),
        }
    }

    client.unsubscribe();
    drop(client);
    let _ = stopped.send(());
}

/// Logs a consumer error. A fatal one also marks the assigner not ready.
fn report(client: &Client, err: &KafkaError) {
    let context = client.context();
    let error = context.reader.settings.redact(&err.to_string());
    if matches!(err, KafkaError::MessageConsumptionFatal(_))
        || client.client().fatal_error().is_some()
    {
        context.failed(error);
        return;
    }

    let (pipeline, group) = (&context.scope.pipeline, &context.scope.group);
    tracing::warn!(pipeline, group, error, "Consumer group error");
}

/// Lists the partitions of `list` as `topic/partition`.
fn describe(list: &TopicPartitionList) -> String {
    let names: Vec<String> = list
        .elements()
        .iter()
        .map(|element| format!("{}/{}", element.topic(), element.partition()))
        .collect();

    names.join(",")
}
