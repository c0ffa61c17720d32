//! Kafka publisher: an idempotent librdkafka producer with `acks=all`.
//! A batch is enqueued whole, so that all its records are in flight at
//! once, and then every delivery report is awaited. The default
//! partitioner spreads records by key, and idempotence keeps the records
//! of each partition in order and without duplicates across librdkafka's
//! internal retries.

pub(crate) mod context;
pub(crate) mod failure;
pub(crate) mod settings;
mod stop;

pub(crate) use stop::StopOnDrop;

use std::sync::Mutex;
use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use tokio::time::Instant;

use super::consume::Outgoing;
use super::{CONTENT_TYPE, PublishError, Target};
use crate::config::Kafka;
use context::Context;
use failure::classify;
use settings::{DEFAULT_MESSAGE_TIMEOUT, Settings};

type Producer = FutureProducer<Context>;

/// Time allowed for the topic's metadata at connect.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed for records in flight at close.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause before enqueueing again when librdkafka's local queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(10);

/// Time allowed past the message timeout for librdkafka's own report.
/// With librdkafka 2.12 and its leader down, a partition's timeouts were
/// seen to fire only when the reconnect backoff ended, which can take up
/// to `reconnect.backoff.max.ms` (10 s by default). The publisher
/// therefore stops waiting by itself after this grace.
const REPORT_GRACE: Duration = Duration::from_secs(1);

/// A producer for one topic.
pub(crate) struct Sink {
    broker: String,
    topic: String,
    destination: String,
    settings: Settings,
    /// Replaced after a fatal error, which leaves a producer unusable.
    producer: Mutex<Producer>,
}

impl Sink {
    /// Largest payload one record may carry.
    pub(crate) fn max_payload_bytes(&self) -> usize {
        self.settings.max_payload_bytes
    }

    /// Creates the producer and fetches the topic's metadata.
    pub(crate) async fn connect(
        broker: &str,
        kafka: &Kafka,
        topic: String,
    ) -> Result<Self, PublishError> {
        let settings = Settings::new(broker, kafka)?;
        let producer = create(broker, &settings)?;
        let sink = Self {
            broker: broker.to_owned(),
            destination: Target::Kafka {
                topic: topic.clone(),
            }
            .to_string(),
            topic,
            settings,
            producer: Mutex::new(producer),
        };

        let partitions = sink.fetch_partitions(&kafka.bootstrap_servers).await?;
        // librdkafka 2.12 drops its bootstrap connection once a metadata
        // response has named the cluster's brokers, and connects to one of
        // them only when a record or a request needs it. Until then the
        // idempotent producer has no broker to request its producer id
        // from and tries again only 500 ms later, so the first batch waited
        // that long. A second metadata request opens that connection now.
        sink.fetch_partitions(&kafka.bootstrap_servers).await?;
        tracing::info!(broker, topic = %sink.topic, partitions, "Publisher connected");

        Ok(sink)
    }

    /// Enqueues every record of `batch`, then waits for all delivery reports.
    pub(super) async fn publish<T: Outgoing>(&self, batch: &[T]) -> Result<(), PublishError> {
        let producer = self.producer();
        let timeout = self.settings.message_timeout;
        let deadline = Instant::now() + timeout.unwrap_or(DEFAULT_MESSAGE_TIMEOUT);
        let result = match self.enqueue(&producer, batch, deadline).await {
            Ok(deliveries) => {
                let wait_until = timeout.map(|_| deadline + REPORT_GRACE);
                self.await_deliveries(deliveries, wait_until).await
            }
            Err(err) => Err(err),
        };

        if result.is_err() {
            self.replace_if_fatal(&producer);
        }
        result
    }

    /// Waits for records in flight, then drops the producer's reference.
    pub(crate) async fn close(&self) {
        let producer = self.producer();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(FLUSH_TIMEOUT)).await;
        match flushed {
            Ok(Ok(())) => {
                tracing::info!(broker = %self.broker, topic = %self.topic, "Publisher closed")
            }
            Ok(Err(err)) => {
                let error = self.settings.redact(&err.to_string());
                let (broker, topic) = (&self.broker, &self.topic);
                tracing::warn!(broker, topic, error, "Failed to flush records at close");
            }
            Err(err) => tracing::warn!(broker = %self.broker, error = %err, "Flush task failed"),
        }
    }

    fn producer(&self) -> Producer {
        self.producer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Returns the topic's partition count. The request also proves that a
    /// broker replies and that the topic exists or was created on request.
    async fn fetch_partitions(&self, bootstrap: &str) -> Result<usize, PublishError> {
        let producer = self.producer();
        let topic = self.topic.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), METADATA_TIMEOUT)?;
            let found = metadata.topics().iter().find(|t| t.name() == topic);
            Ok::<_, KafkaError>(found.map(|t| (t.error(), t.partitions().len())))
        });

        let connect_error = |reason: String, transient, fix: Option<&str>| PublishError::Connect {
            broker: self.broker.clone(),
            address: bootstrap.to_owned(),
            reason,
            fix: fix.map(str::to_owned),
            transient,
        };
        match metadata.await {
            Ok(Ok(Some((None, partitions)))) => Ok(partitions),
            Ok(Ok(Some((Some(code), _)))) => {
                let failure = classify(code.into());
                let reason = format!(
                    "metadata of {}: {}",
                    self.destination,
                    RDKafkaErrorCode::from(code)
                );
                Err(connect_error(reason, failure.transient, failure.fix))
            }
            Ok(Ok(None)) => Err(connect_error(
                format!("no metadata for {}", self.destination),
                true,
                None,
            )),
            Ok(Err(err)) => Err(connect_error(
                self.settings.redact(&err.to_string()),
                true,
                Some("check that bootstrap_servers names reachable brokers"),
            )),
            Err(err) => Err(connect_error(
                format!("metadata task failed: {err}"),
                true,
                None,
            )),
        }
    }

    /// Enqueues the records in order. librdkafka's queue bounds the records
    /// in flight; when it is full, this waits until `deadline`.
    async fn enqueue<T: Outgoing>(
        &self,
        producer: &Producer,
        batch: &[T],
        deadline: Instant,
    ) -> Result<Vec<DeliveryFuture>, PublishError> {
        let mut deliveries = Vec::with_capacity(batch.len());

        for record in batch {
            let mut pending = kafka_record(&self.topic, record);
            loop {
                match producer.send_result(pending) {
                    Ok(delivery) => break deliveries.push(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                        if Instant::now() < deadline =>
                    {
                        pending = returned;
                        tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                    }
                    Err((err, _)) => return Err(self.publish_error(&err)),
                }
            }
        }

        Ok(deliveries)
    }

    /// Awaits every delivery report, until `wait_until` when given, and
    /// returns the first failure. Records still queued after a timeout may
    /// be delivered later, so the retried batch can repeat them.
    async fn await_deliveries(
        &self,
        deliveries: Vec<DeliveryFuture>,
        wait_until: Option<Instant>,
    ) -> Result<(), PublishError> {
        let count = deliveries.len();
        let reports = match wait_until {
            Some(deadline) => tokio::time::timeout_at(deadline, join_all(deliveries))
                .await
                .map_err(|_elapsed| self.timeout())?,
            None => join_all(deliveries).await,
        };
        let mut failures = reports.into_iter().filter_map(|report| match report {
            Ok(Ok(_)) => None,
            Ok(Err((err, _))) => Some(self.publish_error(&err)),
            Err(_canceled) => Some(self.canceled()),
        });

        let Some(first) = failures.next() else {
            tracing::debug!(broker = %self.broker, topic = %self.topic, count, "Batch delivered");
            return Ok(());
        };
        let failed = 1 + failures.count();
        let (broker, topic) = (&self.broker, &self.topic);
        tracing::debug!(broker, topic, count, failed, error = %first, "Batch not delivered");
        Err(first)
    }

    fn timeout(&self) -> PublishError {
        PublishError::Timeout {
            broker: self.broker.clone(),
            destination: self.destination.clone(),
            timeout: self
                .settings
                .message_timeout
                .unwrap_or(DEFAULT_MESSAGE_TIMEOUT),
        }
    }

    fn publish_error(&self, err: &KafkaError) -> PublishError {
        let code = err.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::MessageTimedOut) {
            return self.timeout();
        }

        let failure = code.map(classify);
        PublishError::Publish {
            broker: self.broker.clone(),
            destination: self.destination.clone(),
            reason: self.settings.redact(&err.to_string()),
            fix: failure.as_ref().and_then(|f| f.fix).map(str::to_owned),
            transient: failure.is_none_or(|f| f.transient),
        }
    }

    fn canceled(&self) -> PublishError {
        PublishError::Publish {
            broker: self.broker.clone(),
            destination: self.destination.clone(),
            reason: "the producer was dropped before the delivery report".to_owned(),
            fix: None,
            transient: true,
        }
    }

    /// Replaces a producer that hit a fatal error, such as an idempotence
    /// sequence gap, because librdkafka refuses every later record on it.
    fn replace_if_fatal(&self, failed: &Producer) {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return;
        };
        let reason = self.settings.redact(&reason);
        let (broker, topic) = (&self.broker, &self.topic);
        let error = code.to_string();
        tracing::error!(
            broker,
            topic,
            error,
            reason,
            "Producer failed fatally, replacing it"
        );

        let mut current = self.producer.lock().unwrap_or_else(|p| p.into_inner());
        if current.client().native_ptr() != failed.client().native_ptr() {
            // Another task has replaced it already.
            return;
        }
        match create(&self.broker, &self.settings) {
            Ok(fresh) => *current = fresh,
            Err(err) => {
                tracing::error!(broker, topic, error = %err, "Failed to create a new producer")
            }
        }
    }
}

fn create(broker: &str, settings: &Settings) -> Result<Producer, PublishError> {
    settings
        .config
        .create_with_context(Context::new(broker))
        .map_err(|err| settings.creation_error(broker, &err))
}

/// Builds the Kafka record: key = document id, plus the schema and
/// content-type headers and then the extra headers.
fn kafka_record<'a>(topic: &'a str, item: &'a impl Outgoing) -> FutureRecord<'a, str, [u8]> {
    let (record, extra) = (item.record(), item.headers());
    let mut headers = OwnedHeaders::new_with_capacity(2 + extra.len())
        .insert(Header {
            key: "schema",
            value: Some(record.schema),
        })
        .insert(Header {
            key: "content-type",
            value: Some(CONTENT_TYPE),
        });
    for (name, value) in extra {
        headers = headers.insert(Header {
            key: name.as_str(),
            value: Some(value.as_str()),
        });
    }

    FutureRecord::to(topic)
        .key(record.key.as_str())
        .payload(record.payload.as_slice())
        .headers(headers)
}
