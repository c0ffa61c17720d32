//! Coordination through Kafka. The replicas of a pipeline join consumer
//! group `{group}` on the assignment topic `{group}.assignment`. A replica
//! watches the mailboxes of the partitions it is assigned, as
//! [`partition_of`] places them. Nothing is produced to that topic, and the group
//! commits no offsets. The checkpoints live in the compacted topic
//! `{group}.checkpoints`.
//!
//! The group uses an eager assignment strategy (`roundrobin`): each
//! rebalance first revokes every partition from every member, and a
//! member's revocation returns only once the pipeline stopped the watches
//! of its mailboxes. So no mailbox has two watchers, at the cost of
//! restarting every watch at each rebalance.

mod checkpoints;
mod group;
mod partition;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer as _;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{mpsc, oneshot, watch};

use super::{AssignError, Event, Scope};
use crate::broker::PublishError;
use crate::broker::kafka::StopOnDrop;
use crate::broker::kafka::context::Context as LogContext;
use crate::broker::kafka::failure::classify;
use crate::broker::kafka::settings::Settings;
use crate::config::Kafka;
use crate::telemetry::Readiness;
pub use checkpoints::Checkpoints;
pub use partition::partition_of;

/// Time allowed for a metadata or watermark request.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed for creating the topics.
const CREATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Interval of the log line while close waits for the group to let go.
const CLOSE_NOTICE: Duration = Duration::from_secs(30);

/// Eager strategy of the group, as the module documentation explains.
const ASSIGNMENT_STRATEGY: &str = "roundrobin";

/// Names for logs and errors.
#[derive(Debug, Clone)]
struct Names {
    broker: String,
    pipeline: String,
    group: String,
}

/// Member of the consumer group of one pipeline.
pub struct KafkaAssigner {
    names: Names,
    readiness: Readiness,
    component: String,
    checkpoints: Checkpoints,
    /// Stops the group thread when dropped, also without close.
    stop: StopOnDrop,
    stopped: oneshot::Receiver<()>,
}

impl KafkaAssigner {
    /// Creates the topics when missing, reads the partition count of the
    /// assignment topic and joins the group on a thread of its own. A
    /// failure also marks the assigner not ready, with the error.
    pub async fn start(
        scope: Scope,
        settings: &Kafka,
        events: mpsc::UnboundedSender<Event>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, AssignError> {
        let (readiness, component) = (scope.readiness.clone(), scope.component());
        readiness.not_ready(
            &component,
            format!("joining consumer group {}", scope.group),
        );

        let started = Self::join(scope, settings, events, shutdown).await;
        if let Err(err) = &started {
            readiness.not_ready(&component, err.to_string());
        }
        started
    }

    async fn join(
        scope: Scope,
        settings: &Kafka,
        events: mpsc::UnboundedSender<Event>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, AssignError> {
        let names = Names {
            broker: scope.broker.clone(),
            pipeline: scope.pipeline.clone(),
            group: scope.group.clone(),
        };
        let (assignment_topic, checkpoint_topic) = topic_names(&scope.group);
        let producer_settings = Settings::new(&scope.broker, settings)
            .map_err(|err| config_error(&scope.broker, err))?;
        let producer_settings = Arc::new(producer_settings);
        let checkpoints = Checkpoints::create(
            names.clone(),
            checkpoint_topic.clone(),
            Arc::clone(&producer_settings),
        )?;

        let topics = Topics {
            names: names.clone(),
            assignment: assignment_topic,
            checkpoints: checkpoint_topic,
        };
        // NOTE: the partition count is read once, at start. After partitions
        // are added to the assignment topic, replicas started before and
        // after place mailboxes differently until every replica restarted.
        let mut waiting = shutdown.clone();
        let partitions = tokio::select! {
            partitions = topics.prepare(&producer_settings, &checkpoints, scope.partitions) => partitions?,
            () = shutdown_requested(&mut waiting) => return Err(names.broker_error("shutting down")),
        };
        tracing::info!(
            broker = %names.broker,
            pipeline = %names.pipeline,
            group = %names.group,
            topic = %topics.assignment,
            partitions,
            "Joining the coordination group"
        );

        let stop = Arc::new(AtomicBool::new(false));
        let reader = checkpoints::Reader {
            topic: topics.checkpoints.clone(),
            config: reader_config(settings, &scope.group),
            settings: Arc::clone(&producer_settings),
            broker: names.broker.clone(),
        };
        let parts = group::Parts {
            partitions: by_partition(&scope.mailboxes, partitions.get()),
            topic: topics.assignment.clone(),
            events,
            reader,
            stop: Arc::clone(&stop),
            shutdown,
        };
        let (readiness, component) = (scope.readiness.clone(), scope.component());
        let stopped = join_group(scope, settings, &producer_settings, parts)?;

        Ok(Self {
            names,
            readiness,
            component,
            checkpoints,
            stop: StopOnDrop(stop),
            stopped,
        })
    }

    /// Returns the handle that saves checkpoints.
    pub fn checkpoints(&self) -> Checkpoints {
        self.checkpoints.clone()
    }

    /// Leaves the group: the revocation releases every held mailbox and
    /// waits until the pipeline confirmed each release, then the group
    /// thread ends. The readiness component goes away with it.
    pub async fn close(self) {
        drop(self.stop);

        let names = &self.names;
        let mut stopped = self.stopped;
        loop {
            match tokio::time::timeout(CLOSE_NOTICE, &mut stopped).await {
                Ok(_) => break,
                Err(_elapsed) => tracing::warn!(
                    pipeline = %names.pipeline,
                    group = %names.group,
                    "Still leaving the coordination group"
                ),
            }
        }
        self.readiness.remove(&self.component);
        tracing::info!(pipeline = %names.pipeline, group = %names.group, "Left the coordination group");
    }
}

impl Names {
    fn broker_error(&self, reason: impl Into<String>) -> AssignError {
        AssignError::Broker {
            broker: self.broker.clone(),
            reason: reason.into(),
        }
    }
}

/// Groups `mailboxes` by their partition among `partitions` partitions.
fn by_partition(mailboxes: &[String], partitions: u32) -> HashMap<i32, Vec<String>> {
    let mut groups: HashMap<i32, Vec<String>> = HashMap::new();
    for mailbox in mailboxes {
        let partition = partition_of(mailbox, partitions) as i32;
        groups.entry(partition).or_default().push(mailbox.clone());
    }

    groups
}

/// Waits until `shutdown` becomes true. It never returns when the sender
/// is dropped before that.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Returns the assignment and checkpoint topics of `group`.
fn topic_names(group: &str) -> (String, String) {
    (
        format!("{group}.assignment"),
        format!("{group}.checkpoints"),
    )
}

/// Maps an error of the client settings of broker `broker`, which is a
/// configuration error, to the assigner's.
fn config_error(broker: &str, err: PublishError) -> AssignError {
    match err {
        PublishError::Config { reason, fix, .. } => AssignError::Config {
            broker: broker.to_owned(),
            reason,
            fix,
        },
        other => AssignError::Broker {
            broker: broker.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// The two topics of a group.
struct Topics {
    names: Names,
    assignment: String,
    checkpoints: String,
}

impl Topics {
    /// Creates the topics when missing and returns the partition count of
    /// the assignment topic, which both topics must exist for.
    async fn prepare(
        &self,
        settings: &Settings,
        checkpoints: &Checkpoints,
        partitions: NonZeroU32,
    ) -> Result<NonZeroU32, AssignError> {
        if !self.exist(checkpoints).await {
            self.create(settings, partitions).await;
        }
        self.partition_count(settings, checkpoints, &self.checkpoints)
            .await?;

        self.partition_count(settings, checkpoints, &self.assignment)
            .await
    }

    /// Tells whether both topics exist. The request names no topic, so
    /// that it creates none where the cluster creates topics on request.
    async fn exist(&self, checkpoints: &Checkpoints) -> bool {
        let producer = checkpoints.producer().clone();
        let expected = [self.assignment.clone(), self.checkpoints.clone()];
        let listed = tokio::task::spawn_blocking(move || {
            let metadata = producer.client().fetch_metadata(None, METADATA_TIMEOUT)?;
            let exist = expected.iter().all(|name| {
                let mut topics = metadata.topics().iter();
                topics
                    .any(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
            });
            Ok::<_, KafkaError>(exist)
        });

        matches!(listed.await, Ok(Ok(true)))
    }

    /// Creates the topics with the Admin API. A failure only logs: the
    /// topics may exist already, or the cluster creates them on first use
    /// (a broker without the Admin API, such as librdkafka's mock cluster,
    /// does that). The metadata request after this shows which is true.
    async fn create(&self, settings: &Settings, partitions: NonZeroU32) {
        let names = &self.names;
        let admin: AdminClient<LogContext> = match settings
            .config
            .create_with_context(LogContext::new(&names.broker))
        {
            Ok(admin) => admin,
            Err(err) => {
                let error = settings.redact(&err.to_string());
                tracing::warn!(broker = %names.broker, error, "Failed to create an admin client");
                return;
            }
        };

        let count = i32::try_from(partitions.get()).unwrap_or(i32::MAX);
        let replication = TopicReplication::Fixed(-1);
        let topics = [
            NewTopic::new(&self.assignment, count, replication),
            NewTopic::new(&self.checkpoints, 1, TopicReplication::Fixed(-1))
                .set("cleanup.policy", "compact"),
        ];
        let options = AdminOptions::new()
            .request_timeout(Some(CREATE_TIMEOUT))
            .operation_timeout(Some(CREATE_TIMEOUT));
        match admin.create_topics(&topics, &options).await {
            Ok(results) => results
                .into_iter()
                .for_each(|result| self.log_created(result)),
            Err(err) => tracing::info!(
                broker = %names.broker,
                group = %names.group,
                error = settings.redact(&err.to_string()),
                "Failed to create the coordination topics, using them if they exist"
            ),
        }

        // The admin client's drop joins its polling thread.
        let _ = tokio::task::spawn_blocking(move || drop(admin)).await;
    }

    fn log_created(&self, result: Result<String, (String, RDKafkaErrorCode)>) {
        let broker = &self.names.broker;
        match result {
            Ok(topic) => tracing::info!(broker, topic, "Topic created"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(broker, topic, "Topic exists")
            }
            Err((topic, code)) => tracing::info!(
                broker,
                topic,
                error = %code,
                "Failed to create the topic, using it if it exists"
            ),
        }
    }

    /// Returns the partition count of `topic` from the cluster's metadata.
    async fn partition_count(
        &self,
        settings: &Settings,
        checkpoints: &Checkpoints,
        topic: &str,
    ) -> Result<NonZeroU32, AssignError> {
        let producer = checkpoints.producer().clone();
        let name = topic.to_owned();
        let fetched = tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&name), METADATA_TIMEOUT)?;
            let found = metadata.topics().iter().find(|t| t.name() == name);
            Ok::<_, KafkaError>(found.map(|t| (t.error(), t.partitions().len())))
        })
        .await;

        let names = &self.names;
        let count = match fetched {
            Ok(Ok(Some((None, count)))) => count,
            Ok(Ok(Some((Some(code), _)))) => return Err(self.metadata_error(topic, code.into())),
            Ok(Ok(None)) => 0,
            Ok(Err(err)) => {
                let reason = settings.redact(&err.to_string());
                return Err(names.broker_error(format!("metadata of topic {topic:?}: {reason}")));
            }
            Err(err) => return Err(names.broker_error(format!("metadata task failed: {err}"))),
        };

        let count = u32::try_from(count).ok().and_then(NonZeroU32::new);
        count.ok_or_else(|| names.broker_error(format!("no partitions for topic {topic:?}")))
    }

    fn metadata_error(&self, topic: &str, code: RDKafkaErrorCode) -> AssignError {
        let failure = classify(code);
        let reason = format!("metadata of topic {topic:?}: {code}");
        match failure.fix {
            Some(fix) if !failure.transient => AssignError::Config {
                broker: self.names.broker.clone(),
                reason,
                fix: fix.to_owned(),
            },
            _ => self.names.broker_error(reason),
        }
    }
}

/// Returns the user's properties on top of the defaults shared by the
/// group's consumer and the checkpoint reader.
fn client_config(kafka: &Kafka) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("client.id", "mailbridge");
    for (name, value) in &kafka.properties {
        config.set(name, value.expose());
    }

    config
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    config
}

/// Configuration of the group's consumer.
fn group_config(kafka: &Kafka, group: &str) -> ClientConfig {
    let mut config = client_config(kafka);
    config
        .set("group.id", group)
        .set("group.protocol", "classic")
        .set("partition.assignment.strategy", ASSIGNMENT_STRATEGY);

    config
}

/// Configuration of the checkpoint reader. librdkafka needs a `group.id`
/// for `assign`, but the reader never joins that group nor commits to it.
fn reader_config(kafka: &Kafka, group: &str) -> ClientConfig {
    let mut config = client_config(kafka);
    config
        .set("group.id", format!("{group}.checkpoint-reader"))
        .remove("group.instance.id")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");

    config
}

/// Creates the group's consumer, subscribes it and starts its thread.
fn join_group(
    scope: Scope,
    kafka: &Kafka,
    settings: &Settings,
    parts: group::Parts,
) -> Result<oneshot::Receiver<()>, AssignError> {
    use rdkafka::consumer::Consumer as _;

    let broker = scope.broker.clone();
    let topic = parts.topic.clone();
    let stop = Arc::clone(&parts.stop);
    let config = group_config(kafka, &scope.group);
    let context = group::Context::new(scope, parts);
    let client: group::Client = config
        .create_with_context(context)
        .map_err(|err| config_error(&broker, settings.creation_error(&broker, &err)))?;
    let subscribed = client.subscribe(&[&topic]);
    subscribed.map_err(|err| AssignError::Broker {
        broker: broker.clone(),
        reason: format!(
            "failed to subscribe to topic {topic:?}: {}",
            settings.redact(&err.to_string())
        ),
    })?;

    let (sender, stopped) = oneshot::channel();
    let started = std::thread::Builder::new()
        .name("kafka-coordination".into())
        .spawn(move || group::run(client, stop, sender));
    started.map_err(|err| AssignError::Broker {
        broker,
        reason: format!("failed to start the group thread: {err}"),
    })?;

    Ok(stopped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Property;

    fn kafka(properties: &[(&str, &str)]) -> Kafka {
        Kafka {
            bootstrap_servers: "127.0.0.1:9".into(),
            properties: properties
                .iter()
                .map(|(name, value)| (name.to_string(), Property::Plain(value.to_string())))
                .collect(),
        }
    }

    #[test]
    fn topics_are_named_after_group() {
        let (assignment, checkpoints) = topic_names("mailbridge-inbound-support");

        assert_eq!(assignment, "mailbridge-inbound-support.assignment");
        assert_eq!(checkpoints, "mailbridge-inbound-support.checkpoints");
    }

    #[test]
    fn group_config_forces_eager_strategy_and_no_commits() {
        let properties = [
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("group.id", "other"),
            ("enable.auto.commit", "true"),
            ("session.timeout.ms", "6000"),
        ];
        let config = group_config(&kafka(&properties), "mailbridge-inbound-support");

        assert_eq!(
            config.get("partition.assignment.strategy"),
            Some("roundrobin")
        );
        assert_eq!(config.get("group.protocol"), Some("classic"));
        assert_eq!(config.get("group.id"), Some("mailbridge-inbound-support"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(config.get("session.timeout.ms"), Some("6000"));
        assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:9"));
    }

    #[test]
    fn reader_config_has_own_group() {
        let properties = [("group.id", "other"), ("group.instance.id", "replica-1")];
        let config = reader_config(&kafka(&properties), "mailbridge-inbound-support");

        let group = Some("mailbridge-inbound-support.checkpoint-reader");
        assert_eq!(config.get("group.id"), group);
        assert_eq!(config.get("group.instance.id"), None);
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("enable.partition.eof"), Some("true"));
    }

    #[test]
    fn grouping_places_every_mailbox_once() {
        let mailboxes: Vec<String> = ["INBOX", "Sent", "Archive", "Junk"]
            .map(String::from)
            .to_vec();

        let groups = by_partition(&mailboxes, 3);

        let mut placed: Vec<&String> = groups.values().flatten().collect();
        placed.sort();
        let mut expected: Vec<&String> = mailboxes.iter().collect();
        expected.sort();
        assert_eq!(placed, expected);
        for (partition, names) in &groups {
            for name in names {
                assert_eq!(partition_of(name, 3) as i32, *partition, "{name}");
            }
        }
    }
}
