//! Checkpoints in the compacted topic `{group}.checkpoints`: one record
//! per save, keyed by mailbox name, whose value is the checkpoint in the
//! checkpoint file format. The last record of a key is the current
//! checkpoint, and a record without a value removes it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use super::super::AssignError;
use super::{METADATA_TIMEOUT, Names};
use crate::broker::kafka::context::Context as LogContext;
use crate::broker::kafka::settings::{DEFAULT_MESSAGE_TIMEOUT, Settings};

/// Maximum time for reading the topic to its end.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum wait of one poll while reading.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Time allowed past the message timeout for librdkafka's own report, as
/// the publisher allows it.
const REPORT_GRACE: Duration = Duration::from_secs(1);

/// Saves checkpoints in the checkpoint topic.
#[derive(Clone)]
pub struct Checkpoints {
    inner: Arc<Inner>,
}

struct Inner {
    names: Names,
    topic: String,
    producer: FutureProducer<LogContext>,
    /// Producer settings, which also redact librdkafka's messages.
    settings: Arc<Settings>,
}

impl Checkpoints {
    /// Creates the idempotent producer (`acks=all`) of the checkpoints.
    pub(super) fn create(
        names: Names,
        topic: String,
        settings: Arc<Settings>,
    ) -> Result<Self, AssignError> {
        let producer = settings
            .config
            .create_with_context(LogContext::new(&names.broker))
            .map_err(|err| {
                super::config_error(&names.broker, settings.creation_error(&names.broker, &err))
            })?;
        let inner = Inner {
            names,
            topic,
            producer,
            settings,
        };

        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Returns the producer, whose client also serves metadata requests.
    pub(super) fn producer(&self) -> &FutureProducer<LogContext> {
        &self.inner.producer
    }

    /// Saves `checkpoint` of `mailbox` and returns once the broker stored
    /// it on every in-sync replica.
    pub async fn save(&self, mailbox: &str, checkpoint: Vec<u8>) -> Result<(), AssignError> {
        let inner = &self.inner;
        let record = FutureRecord::to(&inner.topic)
            .key(mailbox)
            .payload(checkpoint.as_slice());
        let delivery = inner
            .producer
            .send_result(record)
            .map_err(|(err, _)| self.error(mailbox, &err))?;

        let timeout = inner.settings.message_timeout.map(|t| t + REPORT_GRACE);
        let report = match timeout {
            Some(limit) => tokio::time::timeout(limit, delivery)
                .await
                .map_err(|_elapsed| self.timeout(mailbox))?,
            None => delivery.await,
        };
        match report {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((err, _))) => Err(self.error(mailbox, &err)),
            Err(_canceled) => Err(self.broker_error(
                mailbox,
                "the producer was dropped before the delivery report".into(),
            )),
        }
    }

    fn error(&self, mailbox: &str, err: &KafkaError) -> AssignError {
        let reason = self.inner.settings.redact(&err.to_string());
        self.broker_error(mailbox, reason)
    }

    fn timeout(&self, mailbox: &str) -> AssignError {
        let limit = self
            .inner
            .settings
            .message_timeout
            .unwrap_or(DEFAULT_MESSAGE_TIMEOUT);
        let reason = format!("no delivery report within {} s", limit.as_secs());
        self.broker_error(mailbox, reason)
    }

    fn broker_error(&self, mailbox: &str, reason: String) -> AssignError {
        let inner = &self.inner;
        AssignError::Broker {
            broker: inner.names.broker.clone(),
            reason: format!(
                "failed to save the checkpoint of mailbox {mailbox:?} to topic {:?}: {reason}",
                inner.topic
            ),
        }
    }
}

/// Reads the current checkpoints, with a consumer that assigns itself the
/// partitions and commits nothing.
pub(super) struct Reader {
    pub(super) topic: String,
    /// Holds secret values: never log it, and never print it with Debug.
    pub(super) config: ClientConfig,
    pub(super) settings: Arc<Settings>,
    pub(super) broker: String,
}

impl Reader {
    /// Reads the topic from the start to the high watermarks of the moment
    /// and returns the last checkpoint of each of `mailboxes`. Blocks.
    pub(super) fn read(&self, mailboxes: &[String]) -> Result<Latest, String> {
        let context = ReaderContext(LogContext::new(&self.broker));
        let consumer: BaseConsumer<ReaderContext> = self
            .config
            .create_with_context(context)
            .map_err(|err| self.redact(&err))?;
        let mut pending = self.assign_all(&consumer)?;
        let mut latest = Latest::new(mailboxes);

        let deadline = Instant::now() + READ_TIMEOUT;
        while !pending.is_empty() {
            if Instant::now() >= deadline {
                let seconds = READ_TIMEOUT.as_secs();
                return Err(format!(
                    "topic {:?} not read within {seconds} s",
                    self.topic
                ));
            }
            match consumer.poll(POLL_INTERVAL) {
                None => {}
                Some(Ok(message)) => {
                    latest.record(message.key(), message.payload());
                    let partition = message.partition();
                    if pending
                        .get(&partition)
                        .is_some_and(|high| message.offset() + 1 >= *high)
                    {
                        pending.remove(&partition);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    pending.remove(&partition);
                }
                Some(Err(err)) => {
                    // librdkafka retries on its own until the deadline.
                    let error = self.redact(&err);
                    tracing::debug!(broker = %self.broker, topic = %self.topic, error,
                        "Failed to fetch checkpoints, retrying");
                }
            }
        }

        Ok(latest)
    }

    /// Assigns every partition that contains records, from its low watermark,
    /// and returns the high watermark of each.
    fn assign_all(
        &self,
        consumer: &BaseConsumer<ReaderContext>,
    ) -> Result<HashMap<i32, i64>, String> {
        let metadata = consumer
            .fetch_metadata(Some(&self.topic), METADATA_TIMEOUT)
            .map_err(|err| self.redact(&err))?;
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == self.topic) else {
            return Err(format!("no metadata for topic {:?}", self.topic));
        };
        if let Some(code) = topic.error() {
            let code = rdkafka::types::RDKafkaErrorCode::from(code);
            return Err(format!("metadata of topic {:?}: {code}", self.topic));
        }

        let mut list = TopicPartitionList::new();
        let mut pending = HashMap::new();
        for partition in topic.partitions() {
            let id = partition.id();
            let (low, high) = consumer
                .fetch_watermarks(&self.topic, id, Timeout::After(METADATA_TIMEOUT))
                .map_err(|err| self.redact(&err))?;
            if high > low {
                list.add_partition_offset(&self.topic, id, Offset::Offset(low))
                    .map_err(|err| self.redact(&err))?;
                pending.insert(id, high);
            }
        }
        if !pending.is_empty() {
            consumer.assign(&list).map_err(|err| self.redact(&err))?;
        }

        Ok(pending)
    }

    fn redact(&self, err: &KafkaError) -> String {
        self.settings.redact(&err.to_string())
    }
}

/// Client context of the reader: librdkafka's log lines go to `tracing`.
pub(super) struct ReaderContext(LogContext);

impl ClientContext for ReaderContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.0.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(error, reason);
    }
}

impl ConsumerContext for ReaderContext {}

/// The last checkpoint of each mailbox of a pipeline.
#[derive(Debug, Default)]
pub(super) struct Latest {
    /// Last value by mailbox; `None` after a record without a value.
    values: HashMap<String, Option<Vec<u8>>>,
    mailboxes: HashSet<String>,
}

impl Latest {
    /// Creates an empty set that keeps only `mailboxes`.
    pub(super) fn new(mailboxes: &[String]) -> Self {
        Self {
            values: HashMap::new(),
            mailboxes: mailboxes.iter().cloned().collect(),
        }
    }

    /// Records one record of the topic, read in offset order. Records
    /// without a key, with a key that is not UTF-8, or of other mailboxes
    /// are ignored.
    pub(super) fn record(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        let Some(mailbox) = key.and_then(|key| std::str::from_utf8(key).ok()) else {
            return;
        };
        if !self.mailboxes.contains(mailbox) {
            return;
        }

        self.values
            .insert(mailbox.to_owned(), value.map(<[u8]>::to_vec));
    }

    /// Removes and returns the checkpoint of `mailbox`, if any.
    pub(super) fn take(&mut self, mailbox: &str) -> Option<Vec<u8>> {
        self.values.remove(mailbox).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latest() -> Latest {
        Latest::new(&["INBOX".to_owned(), "Sent".to_owned()])
    }

    #[test]
    fn latest_keeps_last_value_per_key() {
        let mut latest = latest();

        latest.record(Some(b"INBOX"), Some(b"one"));
        latest.record(Some(b"Sent"), Some(b"sent"));
        latest.record(Some(b"INBOX"), Some(b"two"));

        assert_eq!(latest.take("INBOX"), Some(b"two".to_vec()));
        assert_eq!(latest.take("Sent"), Some(b"sent".to_vec()));
    }

    #[test]
    fn latest_null_value_removes_checkpoint() {
        let mut latest = latest();

        latest.record(Some(b"INBOX"), Some(b"one"));
        latest.record(Some(b"INBOX"), None);

        assert_eq!(latest.take("INBOX"), None);
    }

    #[test]
    fn latest_value_after_null_counts() {
        let mut latest = latest();

        latest.record(Some(b"INBOX"), None);
        latest.record(Some(b"INBOX"), Some(b"three"));

        assert_eq!(latest.take("INBOX"), Some(b"three".to_vec()));
    }

    #[test]
    fn latest_ignores_other_keys() {
        let mut latest = latest();

        latest.record(Some(b"Archive"), Some(b"other"));
        latest.record(None, Some(b"keyless"));
        latest.record(Some(&[0xff, 0xfe]), Some(b"binary"));

        assert!(latest.values.is_empty(), "{:?}", latest.values);
        assert_eq!(latest.take("Archive"), None);
    }

    #[test]
    fn latest_take_without_record_is_none() {
        assert_eq!(latest().take("INBOX"), None);
    }
}
