//! Counting consumers, which decide when a document is confirmed in a
//! broker, and the minimal producers that measure the broker limit.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::try_join_all;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::oneshot;

use crate::mail;
use crate::{BrokerArgs, BrokerKind};

/// Schema name of the inbound documents, as mailbridge labels them.
const SCHEMA: &str = "mailbridge.inbound-mail.v1";

/// Record identity of the counting consumer: two records with the same
/// identity are one mail.
#[derive(Clone, Copy)]
pub enum Identity {
    /// The Kafka record key or the AMQP `message_id`, as mailbridge sets them.
    Key,
    /// The Message-ID header of a raw mail in the payload, for peers that
    /// publish the mail unchanged and without a key.
    MessageId,
}

impl Identity {
    fn of<'a>(self, key: Option<&'a [u8]>, payload: Option<&'a [u8]>) -> Option<&'a [u8]> {
        match self {
            Self::Key => key,
            Self::MessageId => payload.and_then(message_id),
        }
    }
}

/// Returns the value of the first Message-ID header of a raw mail (RFC 5322
/// section 3.6.4), also when it is folded onto the next line.
fn message_id(mail: &[u8]) -> Option<&[u8]> {
    let mut lines = mail.split(|&byte| byte == b'\n');
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let Some(name) = line.get(..11) else { continue };
        if !name.eq_ignore_ascii_case(b"message-id:") {
            continue;
        }
        let value = line[11..].trim_ascii();
        if !value.is_empty() {
            return Some(value);
        }
        let folded = lines.next()?.trim_ascii();
        return (!folded.is_empty()).then_some(folded);
    }
    None
}

/// Distinct documents seen so far, their total payload size and when the
/// first one arrived. Only ids that start with `prefix` count.
#[derive(Default)]
pub struct Progress {
    pub distinct: AtomicUsize,
    pub bytes: AtomicU64,
    pub first: std::sync::OnceLock<Instant>,
    pub prefix: Vec<u8>,
}

impl Progress {
    fn record(&self, seen: &mut HashSet<Vec<u8>>, id: &[u8], payload_bytes: usize) -> usize {
        if !id.starts_with(&self.prefix) || !seen.insert(id.to_vec()) {
            return self.distinct.load(Ordering::Relaxed);
        }
        self.first.get_or_init(Instant::now);
        self.bytes
            .fetch_add(payload_bytes as u64, Ordering::Relaxed);
        self.distinct.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Consumes the target from its start and returns the moment the
/// `expected`-th distinct document id arrived, as `identity` defines it.
/// `ready` fires once the consumer is assigned or subscribed.
pub async fn count(
    broker: &BrokerArgs,
    expected: usize,
    identity: Identity,
    progress: Arc<Progress>,
    ready: oneshot::Sender<()>,
) -> Result<Instant, String> {
    match broker.broker {
        BrokerKind::Kafka => count_kafka(broker, expected, identity, progress, ready).await,
        BrokerKind::Amqp => count_amqp(broker, expected, identity, progress, ready).await,
    }
}

async fn count_kafka(
    broker: &BrokerArgs,
    expected: usize,
    identity: Identity,
    progress: Arc<Progress>,
    ready: oneshot::Sender<()>,
) -> Result<Instant, String> {
    let topic = &broker.target;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set(
            "group.id",
            format!("mailbridge-bench-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // The default of 500 ms would add up to half a second to the
        // moment the last document is seen.
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(|err| format!("failed to create the Kafka consumer: {err}"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|err| format!("failed to read the metadata of topic {topic}: {err}"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|entry| entry.name() == topic)
        .map(|entry| entry.partitions().len())
        .unwrap_or(0);
    if partitions == 0 {
        return Err(format!("topic {topic} does not exist: create it first"));
    }
    // Assigning the partitions directly skips the consumer group join,
    // which takes 3 s on the mock broker.
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition as i32, Offset::Beginning)
            .map_err(|err| format!("failed to assign {topic}/{partition}: {err}"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|err| format!("failed to assign topic {topic}: {err}"))?;
    let _ = ready.send(());

    let mut seen = HashSet::with_capacity(expected);
    loop {
        let message = consumer
            .recv()
            .await
            .map_err(|err| format!("failed to read from topic {topic}: {err}"))?;
        let Some(id) = identity.of(message.key(), message.payload()) else {
            continue;
        };
        let payload_bytes = message.payload().map_or(0, <[u8]>::len);
        if progress.record(&mut seen, id, payload_bytes) >= expected {
            return Ok(Instant::now());
        }
    }
}

async fn count_amqp(
    broker: &BrokerArgs,
    expected: usize,
    identity: Identity,
    progress: Arc<Progress>,
    ready: oneshot::Sender<()>,
) -> Result<Instant, String> {
    let queue = &broker.target;
    let connection = Connection::connect(&broker.address, ConnectionProperties::default())
        .await
        .map_err(|err| format!("failed to connect to the AMQP broker: {err}"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|err| format!("failed to open an AMQP channel: {err}"))?;
    // The same declaration as mailbridge's `declare = true`: durable, no
    // arguments, so whichever comes first creates the queue.
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue, options, FieldTable::default())
        .await
        .map_err(|err| format!("failed to declare queue {queue}: {err}"))?;
    let consume = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut consumer = channel
        .basic_consume(queue, "mailbridge-bench", consume, FieldTable::default())
        .await
        .map_err(|err| format!("failed to consume from queue {queue}: {err}"))?;
    let _ = ready.send(());

    let mut seen = HashSet::with_capacity(expected);
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.map_err(|err| format!("failed to read from {queue}: {err}"))?;
        let key = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().as_bytes());
        let Some(id) = identity.of(key, Some(&delivery.data)) else {
            continue;
        };
        if progress.record(&mut seen, id, delivery.data.len()) >= expected {
            return Ok(Instant::now());
        }
    }
    Err(format!("the consumer of queue {queue} was cancelled"))
}

/// A connected minimal producer of the broker limit.
pub enum Producer {
    Kafka(FutureProducer),
    Amqp(Box<(Connection, lapin::Channel)>),
}

impl Producer {
    /// Connects with mailbridge's producer settings, before the limit's
    /// time starts: the limit measures sending, not signing in.
    pub async fn connect(broker: &BrokerArgs, timeout: Duration) -> Result<Self, String> {
        match broker.broker {
            BrokerKind::Kafka => connect_kafka(broker, timeout).await,
            BrokerKind::Amqp => connect_amqp(broker).await,
        }
    }

    /// Sends `count` documents of `document_bytes` bytes in batches of
    /// `batch`, waiting for every confirmation of a batch before the next,
    /// as mailbridge does before it checkpoints. Returns the seconds until
    /// the last confirmation.
    pub async fn produce(
        self,
        broker: &BrokerArgs,
        count: usize,
        document_bytes: usize,
        batch: usize,
    ) -> Result<f64, String> {
        let started = Instant::now();
        let ids: Vec<String> = (0..count)
            .map(|index| format!("{}{index:032x}", run_prefix()))
            .collect();
        match self {
            Self::Kafka(producer) => {
                produce_kafka(&producer, broker, &ids, document_bytes, batch).await?
            }
            Self::Amqp(amqp) => {
                let (connection, channel) = *amqp;
                produce_amqp(&channel, broker, &ids, document_bytes, batch).await?;
                let _ = connection.close(200, "done").await;
            }
        }
        Ok(started.elapsed().as_secs_f64())
    }
}

/// Returns the first 32 of the 64 hexadecimal digits of this process's
/// document ids: its process id and its start time. The limit's counter
/// counts only ids with this prefix, so documents that an earlier run left
/// in the topic or queue do not count.
pub fn run_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        format!("{:016x}{nanos:016x}", std::process::id())
    })
}

/// Creates a producer with mailbridge's settings: idempotence, `acks=all`,
/// a 30 s message timeout and no linger. Like mailbridge, it reads the
/// topic's metadata twice: after the first response librdkafka 2.12 drops
/// its bootstrap connection, and the second opens the connection on which
/// the idempotent producer gets its id, instead of 500 ms later.
async fn connect_kafka(broker: &BrokerArgs, timeout: Duration) -> Result<Producer, String> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("client.id", "mailbridge-bench")
        .set("message.timeout.ms", "30000")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Each batch is confirmed before the next, as mailbridge does, so
        // neither waits for a fuller Kafka batch.
        .set("linger.ms", "0")
        .create()
        .map_err(|err| format!("failed to create the Kafka producer: {err}"))?;
    let client = producer.clone();
    let topic = broker.target.clone();
    let address = broker.address.clone();
    tokio::task::spawn_blocking(move || {
        for _ in 0..2 {
            client
                .client()
                .fetch_metadata(Some(&topic), timeout / 2)
                .map_err(|err| {
                    format!("failed to read the metadata of topic {topic} from {address}: {err}")
                })?;
        }
        Ok::<_, String>(())
    })
    .await
    .map_err(|err| format!("metadata task failed: {err}"))??;
    Ok(Producer::Kafka(producer))
}

async fn produce_kafka(
    producer: &FutureProducer,
    broker: &BrokerArgs,
    ids: &[String],
    document_bytes: usize,
    batch: usize,
) -> Result<(), String> {
    for chunk in ids.chunks(batch.max(1)) {
        let documents: Vec<Vec<u8>> = chunk
            .iter()
            .map(|id| mail::document(id, document_bytes))
            .collect();
        let sends = chunk.iter().zip(&documents).map(|(id, document)| {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "schema",
                    value: Some(SCHEMA),
                })
                .insert(Header {
                    key: "content-type",
                    value: Some("application/json"),
                });
            let record = FutureRecord::to(&broker.target)
                .key(id.as_str())
                .payload(document.as_slice())
                .headers(headers);
            let delivery = producer.send(record, Duration::from_secs(30));
            async move { delivery.await.map_err(|(err, _)| err) }
        });
        try_join_all(sends)
            .await
            .map_err(|err| format!("failed to send to topic {}: {err}", broker.target))?;
    }
    Ok(())
}

/// Opens a channel with publisher confirms.
async fn connect_amqp(broker: &BrokerArgs) -> Result<Producer, String> {
    let connection = Connection::connect(&broker.address, ConnectionProperties::default())
        .await
        .map_err(|err| format!("failed to connect to the AMQP broker: {err}"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|err| format!("failed to open an AMQP channel: {err}"))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|err| format!("failed to enable publisher confirms: {err}"))?;
    Ok(Producer::Amqp(Box::new((connection, channel))))
}

/// Publishes with mailbridge's settings: persistent, `mandatory`, publisher
/// confirms and `message_id` set, through the default exchange.
async fn produce_amqp(
    channel: &lapin::Channel,
    broker: &BrokerArgs,
    ids: &[String],
    document_bytes: usize,
    batch: usize,
) -> Result<(), String> {
    let queue = &broker.target;
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    for chunk in ids.chunks(batch.max(1)) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for id in chunk {
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(id.as_str().into())
                .with_type(SCHEMA.into())
                .with_app_id("mailbridge-bench".into());
            let document = mail::document(id, document_bytes);
            let confirm = channel
                .basic_publish("", queue, options, &document, properties)
                .await
                .map_err(|err| format!("failed to publish to queue {queue}: {err}"))?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirmation = confirm
                .await
                .map_err(|err| format!("publish to queue {queue} failed: {err}"))?;
            if !confirmation.is_ack() || confirmation.take_message().is_some() {
                return Err(format!("queue {queue} did not accept a message"));
            }
        }
    }
    Ok(())
}

/// Deletes the AMQP queue of a finished measurement, so that benchmark
/// queues do not pile up in the broker. Kafka topics stay, because the
/// mock broker has no Admin API to delete them.
pub async fn remove_target(broker: &BrokerArgs) -> Result<(), String> {
    let BrokerKind::Amqp = broker.broker else {
        return Ok(());
    };
    let queue = &broker.target;
    let connection = Connection::connect(&broker.address, ConnectionProperties::default())
        .await
        .map_err(|err| format!("failed to connect to the AMQP broker: {err}"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|err| format!("failed to open an AMQP channel: {err}"))?;
    channel
        .queue_delete(queue, QueueDeleteOptions::default())
        .await
        .map_err(|err| format!("failed to delete queue {queue}: {err}"))?;
    let _ = connection.close(200, "done").await;
    Ok(())
}

/// Creates a Kafka consumer assigned to every partition of `topic` from
/// its beginning, without a consumer group join (3 s on the mock broker).
pub fn assigned_consumer(address: &str, topic: &str) -> Result<StreamConsumer, String> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set(
            "group.id",
            format!("mailbridge-bench-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // The default of 500 ms would add up to half a second to every
        // arrival time.
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(|err| format!("failed to create the Kafka consumer: {err}"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|err| format!("failed to read the metadata of topic {topic}: {err}"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|entry| entry.name() == topic)
        .map_or(0, |entry| entry.partitions().len());
    if partitions == 0 {
        return Err(format!("topic {topic} does not exist: create it first"));
    }
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition as i32, Offset::Beginning)
            .map_err(|err| format!("failed to assign {topic}/{partition}: {err}"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|err| format!("failed to assign topic {topic}: {err}"))?;
    Ok(consumer)
}

/// Opens a channel to the AMQP broker and declares each queue durable with
/// no arguments, as mailbridge declares a missing queue.
pub async fn declare_queues(
    address: &str,
    queues: &[&str],
) -> Result<(Connection, lapin::Channel), String> {
    let connection = Connection::connect(address, ConnectionProperties::default())
        .await
        .map_err(|err| format!("failed to connect to the AMQP broker: {err}"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|err| format!("failed to open an AMQP channel: {err}"))?;
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    for queue in queues {
        channel
            .queue_declare(queue, options, FieldTable::default())
            .await
            .map_err(|err| format!("failed to declare queue {queue}: {err}"))?;
    }
    Ok((connection, channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_after_other_headers() {
        let mail = b"Received: from a\r\n\tby b\r\nMESSAGE-ID:  <1.run@bench> \r\n\r\nbody";
        assert_eq!(message_id(mail), Some(&b"<1.run@bench>"[..]));
    }

    #[test]
    fn message_id_folded() {
        let mail = b"Message-ID:\n <2.run@bench>\nSubject: x\n\nbody";
        assert_eq!(message_id(mail), Some(&b"<2.run@bench>"[..]));
    }

    #[test]
    fn message_id_not_in_body() {
        let mail = b"Subject: x\n\nMessage-ID: <3.run@bench>\n";
        assert_eq!(message_id(mail), None);
    }
}
