//! Sharing an inbound pipeline's mailboxes among replicas
//! (`coordination = "broker"`), on the coordination the pipeline's broker
//! already offers:
//!
//! - Kafka: the replicas form one consumer group on an assignment topic.
//!   Mailbox `m` belongs to partition `murmur2(m) mod partitions`, as
//!   Kafka's default partitioner places a record keyed by the mailbox
//!   name, and a replica watches the mailboxes of its partitions. The
//!   checkpoints live in a compacted topic, keyed by mailbox.
//! - AMQP: each mailbox has a single-active-consumer queue holding one
//!   lease message; the replica whose consumer is active holds the lease
//!   and watches the mailbox. The checkpoints live in one queue per
//!   mailbox that keeps only its last message.
//!
//! The assigner sends the pipeline an [`Event`] for each mailbox to start
//! or stop. Before a mailbox moves to another replica, the assigner waits
//! until its watch has stopped and saved its last checkpoint.
//!
//! NOTE: checkpoint writes are not fenced. A replica that was paused past
//! its session or heartbeat can still write a stale checkpoint after
//! another replica took the mailbox over, which repeats mail but loses none.

mod amqp;
mod kafka;

use std::num::NonZeroU32;

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Broker;
use crate::telemetry::Readiness;

/// Request of the assigner to the pipeline.
#[derive(Debug)]
pub enum Event {
    /// Start watching `mailbox`, from `checkpoint`: the last one saved in
    /// the broker, in the checkpoint file format, or `None` when the
    /// broker has none, in which case the state directory's applies.
    Acquire {
        mailbox: String,
        checkpoint: Option<Vec<u8>>,
    },
    /// Stop watching `mailbox`, then send on `done` once the watch has
    /// finished its batch and saved its checkpoint.
    Release {
        mailbox: String,
        done: oneshot::Sender<()>,
    },
}

/// Settings and handles that one pipeline shares with its assigner.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Name of the broker, for messages.
    pub broker: String,
    /// Name of the inbound pipeline.
    pub pipeline: String,
    /// Account whose mailboxes are shared.
    pub account: String,
    /// `coordination_group`: the Kafka group, and prefix of the topics or
    /// queues.
    pub group: String,
    /// Every mailbox of the pipeline.
    pub mailboxes: Vec<String>,
    /// `coordination_partitions`: partitions of a Kafka assignment topic
    /// that mailbridge creates.
    pub partitions: NonZeroU32,
    /// Readiness; the assigner reports as component [`Scope::component`].
    pub readiness: Readiness,
}

impl Scope {
    /// Readiness component of the assigner.
    pub fn component(&self) -> String {
        format!("inbound/{}/coordination", self.pipeline)
    }
}

/// Failure of the coordination.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    /// The settings cannot work; no retry helps.
    #[error("coordination through broker {broker} cannot start: {reason}; {fix}")]
    Config {
        broker: String,
        reason: String,
        fix: String,
    },
    /// The broker failed or is unreachable; a retry may help.
    #[error("coordination through broker {broker} failed: {reason}")]
    Broker { broker: String, reason: String },
}

impl AssignError {
    /// Short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config { .. } => "coordination_config",
            Self::Broker { .. } => "coordination_broker",
        }
    }

    /// Returns whether no retry can help.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Config { .. })
    }
}

/// The coordination of one pipeline.
pub enum Assigner {
    Kafka(kafka::KafkaAssigner),
    Amqp(amqp::AmqpAssigner),
}

impl Assigner {
    /// Joins the coordination of `scope` on `broker`. Events arrive on
    /// `events` until [`Assigner::close`] returned. The pipeline must
    /// confirm every release on its `done` sender, also after its watches
    /// stopped.
    pub async fn start(
        scope: Scope,
        broker: &Broker,
        events: mpsc::UnboundedSender<Event>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, AssignError> {
        match broker {
            Broker::Kafka(kafka) => kafka::KafkaAssigner::start(scope, kafka, events, shutdown)
                .await
                .map(Self::Kafka),
            Broker::Amqp(amqp) => amqp::AmqpAssigner::start(scope, amqp, events, shutdown)
                .await
                .map(Self::Amqp),
        }
    }

    /// Returns the handle that saves checkpoints in the broker.
    pub fn checkpoints(&self) -> SharedCheckpoints {
        match self {
            Self::Kafka(assigner) => SharedCheckpoints::Kafka(assigner.checkpoints()),
            Self::Amqp(assigner) => SharedCheckpoints::Amqp(assigner.checkpoints()),
        }
    }

    /// Leaves the coordination: every mailbox still held is released
    /// through a [`Event::Release`], and the leases go to other replicas.
    pub async fn close(self) {
        match self {
            Self::Kafka(assigner) => assigner.close().await,
            Self::Amqp(assigner) => assigner.close().await,
        }
    }
}

/// Saves checkpoints where every replica reads them.
#[derive(Clone)]
pub enum SharedCheckpoints {
    Kafka(kafka::Checkpoints),
    Amqp(amqp::Checkpoints),
}

impl SharedCheckpoints {
    /// Saves `checkpoint` (the checkpoint file format) of `mailbox`, and
    /// returns once the broker confirmed it.
    pub async fn save(&self, mailbox: &str, checkpoint: Vec<u8>) -> Result<(), AssignError> {
        match self {
            Self::Kafka(checkpoints) => checkpoints.save(mailbox, checkpoint).await,
            Self::Amqp(checkpoints) => checkpoints.save(mailbox, checkpoint).await,
        }
    }
}
