//! The partitions a Kafka consumer owns, their received and finished
//! offsets, and the commits they allow. The consumer thread records each
//! record it receives, [`Delivery::finish`](crate::broker::Delivery::finish)
//! marks it finished and commits, and the rebalance callback commits what
//! finished before a partition goes to another member of the group.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::super::{Assignment, ConsumeError};
use super::context::Context;
use super::offsets::PartitionOffsets;

/// The librdkafka consumer of one source.
pub(super) type Client = BaseConsumer<Context>;

/// Topic and partition.
type Key = (String, i32);

/// One received record, as finish and release need it.
pub(in crate::broker::consume) struct Receipt {
    pub(super) partitions: Arc<Partitions>,
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) offset: i64,
    /// Assignment of the partition that the record came from.
    pub(super) epoch: u64,
}

/// Assigned partitions, shared by the consumer thread, the rebalance
/// callback and every delivery.
pub(super) struct Partitions {
    broker: String,
    state: Mutex<State>,
    /// Weak, because the consumer's context owns this value. Only the
    /// consumer thread holds the consumer itself, so that its drop, which
    /// waits for the group to let go, runs there.
    client: OnceLock<Weak<Client>>,
    /// Set while the consumer thread holds fetching paused, so that newly
    /// assigned partitions start paused too.
    paused: AtomicBool,
    /// Whether the group assigned this member its partitions.
    assignment: watch::Sender<Assignment>,
}

#[derive(Default)]
struct State {
    assigned: HashMap<Key, Assigned>,
    /// Incremented for each assignment, so that a delivery from an earlier
    /// assignment of the same partition cannot commit into the new one.
    last_epoch: u64,
    /// Set when the consumer thread stops: finishing then only records the
    /// offset, and the final revocation commits it.
    closing: bool,
}

struct Assigned {
    epoch: u64,
    offsets: PartitionOffsets,
    /// Set while a finish commits this partition with the lock released.
    committing: bool,
}

impl Partitions {
    /// Creates the state of broker `broker`'s consumer.
    pub(super) fn new(broker: &str) -> Self {
        Self {
            broker: broker.to_owned(),
            state: Mutex::default(),
            client: OnceLock::new(),
            paused: AtomicBool::new(false),
            assignment: watch::Sender::new(Assignment::Pending),
        }
    }

    /// Follows whether the group assigned this member its partitions.
    pub(super) fn assignment(&self) -> watch::Receiver<Assignment> {
        self.assignment.subscribe()
    }

    /// Links the consumer, which finish needs for its commits.
    pub(super) fn attach(&self, client: &Arc<Client>) {
        // Called once per consumer, right after its creation.
        let _ = self.client.set(Arc::downgrade(client));
    }

    /// Records a received record and returns the epoch of its partition.
    pub(super) fn receive(&self, topic: &str, partition: i32, offset: i64) -> u64 {
        let mut state = self.lock();
        let key = (topic.to_owned(), partition);
        if !state.assigned.contains_key(&key) {
            // librdkafka hands out records only of assigned partitions, so
            // this happens only if the assign callback has not run yet.
            state.add(key.clone());
        }

        let assigned = state.assigned.get_mut(&key).expect("partition just added");
        assigned.offsets.receive(offset);
        assigned.epoch
    }

    /// Tells whether the partition of `receipt` is still assigned as it
    /// was when the record arrived.
    pub(super) fn is_current(&self, receipt: &Receipt) -> bool {
        let state = self.lock();
        state.current(receipt).is_some()
    }

    /// Marks the record of `receipt` finished and commits the partition's
    /// new position, if it moved, waiting for the broker's reply; this
    /// blocks, so callers run it off the async threads. When another finish
    /// of the partition is committing, this one returns at once and that
    /// finish commits this offset after its own. A failed commit is
    /// returned, and the next commit or the one at revocation covers the
    /// offset again.
    pub(super) fn finish(&self, receipt: &Receipt, position: &str) -> Result<(), ConsumeError> {
        let mut state = self.lock();
        let closing = state.closing;
        let Some(mut assigned) = state.current_mut(receipt) else {
            return self.not_assigned(closing, position);
        };
        assigned.offsets.finish(receipt.offset);
        if closing || assigned.committing {
            // The finish that commits this partition looks for finished
            // offsets again before it stops, so it commits this one too.
            return Ok(());
        }

        // One finish at a time commits a partition, with the lock released,
        // so that the consumer thread and other finishes go on meanwhile.
        // It commits until nothing finished is left uncommitted, and each
        // commit covers every offset finished before it.
        loop {
            let Some(next) = assigned.offsets.uncommitted() else {
                assigned.committing = false;
                return Ok(());
            };
            assigned.committing = true;
            drop(state);

            let queued = self.commit(receipt, next);
            state = self.lock();
            let closing = state.closing;
            let Some(current) = state.current_mut(receipt) else {
                // Revoked meanwhile; the revocation committed what finished.
                return self.not_assigned(closing || queued.is_none(), position);
            };
            assigned = current;
            match queued {
                None => {
                    assigned.committing = false;
                    return self.not_assigned(true, position);
                }
                Some(Err(err)) => {
                    assigned.committing = false;
                    return Err(ConsumeError::Commit {
                        broker: self.broker.clone(),
                        position: position.to_owned(),
                        reason: err.to_string(),
                        transient: true,
                    });
                }
                Some(Ok(())) => assigned.offsets.mark_committed(next),
            }
            if closing {
                assigned.committing = false;
                return Ok(());
            }
        }
    }

    /// Commits position `next` in the partition of `receipt` and waits for
    /// the broker. Returns `None` once the consumer is gone.
    fn commit(&self, receipt: &Receipt, next: i64) -> Option<KafkaResult<()>> {
        let client = self.client.get().and_then(Weak::upgrade)?;
        let mut list = TopicPartitionList::new();
        let queued = list
            .add_partition_offset(&receipt.topic, receipt.partition, Offset::Offset(next))
            .and_then(|()| client.commit(&list, CommitMode::Sync));

        // The list goes before the consumer, whose drop waits for lists
        // that refer to its partitions.
        drop(list);
        Some(queued)
    }

    /// Leaves the record of `receipt` unfinished, so that the partition's
    /// position stays before it and Kafka delivers it again after a
    /// restart or a rebalance.
    pub(super) fn release(&self, receipt: &Receipt, position: &str) -> Result<(), ConsumeError> {
        let state = self.lock();
        match state.current(receipt) {
            Some(_) => Ok(()),
            None => self.not_assigned(state.closing, position),
        }
    }

    /// Starts tracking newly assigned partitions.
    pub(super) fn assign(&self, list: &TopicPartitionList) {
        let mut state = self.lock();
        for element in list.elements() {
            let key = (element.topic().to_owned(), element.partition());
            if !state.assigned.contains_key(&key) {
                state.add(key);
            }
        }
        drop(state);

        // An assignment without partitions counts too: a group with more
        // members than partitions leaves some members idle.
        self.assignment.send_replace(Assignment::Assigned);
        let partitions = describe(list);
        tracing::info!(broker = %self.broker, partitions, "Partitions assigned");
    }

    /// Stops tracking revoked partitions and commits, waiting for the
    /// reply, what finished in them. Records still unfinished are
    /// delivered again to the partition's next owner.
    pub(super) fn revoke(&self, client: &Client, list: &TopicPartitionList) {
        let mut state = self.lock();
        let (commits, unfinished) = state.remove(list);
        let none_left = state.assigned.is_empty();
        drop(state);
        if none_left {
            let lost = client.assignment_lost();
            self.assignment.send_replace(Assignment::Revoked { lost });
        }

        let (broker, partitions) = (&self.broker, describe(list));
        tracing::info!(broker, partitions, unfinished, "Partitions revoked");
        if commits.count() == 0 {
            return;
        }
        if client.assignment_lost() {
            // The group gave the partitions away already, so it would reject
            // a commit, and the new owner reads from the last commit.
            tracing::warn!(
                broker,
                partitions,
                "Assignment lost, finished offsets not committed"
            );
            return;
        }
        match client.commit(&commits, CommitMode::Sync) {
            Ok(()) => tracing::debug!(broker, offsets = describe(&commits), "Offsets committed"),
            Err(err) => tracing::warn!(broker, error = %err, "Failed to commit at revocation"),
        }
    }

    /// Records whether the consumer thread holds fetching paused.
    pub(super) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Tells whether the consumer thread holds fetching paused.
    pub(super) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Makes later finishes leave the commit to the final revocation.
    pub(super) fn begin_close(&self) {
        self.lock().closing = true;
    }

    fn not_assigned(&self, closing: bool, position: &str) -> Result<(), ConsumeError> {
        if closing {
            return Err(ConsumeError::Closed {
                broker: self.broker.clone(),
                position: position.to_owned(),
            });
        }

        // The partition went to another member of the group, which reads
        // it again from the last committed offset.
        tracing::warn!(
            broker = %self.broker,
            position,
            "Partition revoked before the request finished, it will be delivered again"
        );
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn add(&mut self, key: Key) {
        self.last_epoch += 1;
        let assigned = Assigned {
            epoch: self.last_epoch,
            offsets: PartitionOffsets::default(),
            committing: false,
        };
        self.assigned.insert(key, assigned);
    }

    /// Forgets the partitions of `list` and returns the positions to
    /// commit for them, with the count of their unfinished records.
    fn remove(&mut self, list: &TopicPartitionList) -> (TopicPartitionList, usize) {
        let mut commits = TopicPartitionList::new();
        let mut unfinished = 0;
        for element in list.elements() {
            let key = (element.topic().to_owned(), element.partition());
            let Some(assigned) = self.assigned.remove(&key) else {
                continue;
            };
            unfinished += assigned.offsets.unfinished();
            if let Some(next) = assigned.offsets.committable() {
                // Adding to a list we created cannot fail.
                let _ = commits.add_partition_offset(&key.0, key.1, Offset::Offset(next));
            }
        }

        (commits, unfinished)
    }

    fn current(&self, receipt: &Receipt) -> Option<&Assigned> {
        let key = (receipt.topic.clone(), receipt.partition);
        self.assigned
            .get(&key)
            .filter(|assigned| assigned.epoch == receipt.epoch)
    }

    fn current_mut(&mut self, receipt: &Receipt) -> Option<&mut Assigned> {
        let key = (receipt.topic.clone(), receipt.partition);
        self.assigned
            .get_mut(&key)
            .filter(|assigned| assigned.epoch == receipt.epoch)
    }
}

/// Lists the partitions of `list` for a log line, such as `mail[0]@12`
/// when the entry has an offset.
pub(super) fn describe(list: &TopicPartitionList) -> String {
    let entries: Vec<String> = list
        .elements()
        .iter()
        .map(|element| match element.offset() {
            Offset::Offset(offset) => {
                format!("{}[{}]@{offset}", element.topic(), element.partition())
            }
            _ => format!("{}[{}]", element.topic(), element.partition()),
        })
        .collect();

    entries.join(", ")
}
