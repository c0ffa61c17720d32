//! Reading what the bridge published: Kafka records from a fresh topic's
//! only partition and AMQP messages from a queue.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use crate::support::{http, stack};

/// One published document with its broker metadata.
#[derive(Debug, Clone)]
pub struct Published {
    pub key: Option<String>,
    /// Kafka headers, or the AMQP `type` as `schema` and `content_type`.
    pub headers: BTreeMap<String, String>,
    pub document: Value,
}

/// Creates a Kafka topic with one partition through the mock's control
/// listener, since the broker has no Admin API.
pub async fn create_topic(name: &str) {
    create_topic_with(name, 1).await;
}

/// Creates a Kafka topic with `partitions` partitions.
pub async fn create_topic_with(name: &str, partitions: u32) {
    let url = format!(
        "{}/topics/{name}?partitions={partitions}",
        stack("STACK_KAFKA_CONTROL_URL")
    );
    let response = http().post(url).send().await.expect("create topic");
    assert!(
        response.status().is_success(),
        "creating {name}: {}",
        response.status()
    );
}

/// Time a reader goes on after the expected count, to catch repeats.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Reads the records of `topic` from the start until `count` arrived or
/// `wait` passed, and returns what arrived.
pub async fn kafka_records(topic: &str, count: usize, wait: Duration) -> Vec<Published> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_kafka(&topic, count, wait, Duration::ZERO))
        .await
        .expect("join Kafka reader")
}

/// Reads like [`kafka_records`], then for [`SETTLE`] more, so that a
/// record beyond `count` shows up.
pub async fn kafka_settled(topic: &str, count: usize, wait: Duration) -> Vec<Published> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_kafka(&topic, count, wait, SETTLE))
        .await
        .expect("join Kafka reader")
}

fn read_kafka(topic: &str, count: usize, wait: Duration, settle: Duration) -> Vec<Published> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", stack("STACK_KAFKA_BOOTSTRAP"))
        .set("group.id", "inbound-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("create consumer");
    let mut partitions = TopicPartitionList::new();
    partitions
        .add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&partitions).expect("assign");
    // The consumer keeps hold of lists that are still alive when it is
    // dropped, and the drop then hangs.
    drop(partitions);

    let mut records = Vec::new();
    let mut deadline = Instant::now() + wait;
    let mut settling = false;
    while Instant::now() < deadline {
        if records.len() >= count && !settling {
            if settle.is_zero() {
                break;
            }
            (settling, deadline) = (true, Instant::now() + settle);
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = result.expect("read record");
        records.push(published(&message));
    }
    records
}

fn published(message: &rdkafka::message::BorrowedMessage<'_>) -> Published {
    let mut headers = BTreeMap::new();
    if let Some(list) = message.headers() {
        for header in list.iter() {
            let value = String::from_utf8_lossy(header.value.unwrap_or_default());
            headers.insert(header.key.to_owned(), value.into_owned());
        }
    }
    Published {
        key: message
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned()),
        headers,
        document: serde_json::from_slice(message.payload().expect("payload"))
            .expect("payload is JSON"),
    }
}

/// A channel on the stack's RabbitMQ.
pub async fn amqp_channel() -> (lapin::Connection, lapin::Channel) {
    let connection = lapin::Connection::connect(&stack("STACK_AMQP_URL"), Default::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    (connection, channel)
}

/// Declares a durable queue, as an operator would before the bridge runs.
pub async fn declare_queue(queue: &str) {
    let (connection, channel) = amqp_channel().await;
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue, options, FieldTable::default())
        .await
        .expect("declare queue");
    connection.close(200, "done").await.expect("close");
}

/// Takes messages from `queue` until `count` arrived or `wait` passed.
pub async fn amqp_messages(queue: &str, count: usize, wait: Duration) -> Vec<Published> {
    let (connection, channel) = amqp_channel().await;
    let mut messages = Vec::new();
    let deadline = Instant::now() + wait;
    while messages.len() < count && Instant::now() < deadline {
        let options = BasicGetOptions { no_ack: true };
        match channel.basic_get(queue, options).await.expect("basic.get") {
            Some(message) => {
                let properties = &message.delivery.properties;
                let mut headers = BTreeMap::new();
                let text = |value: Option<&lapin::types::ShortString>| {
                    value.map(|value| value.to_string()).unwrap_or_default()
                };
                headers.insert("schema".into(), text(properties.kind().as_ref()));
                headers.insert(
                    "content-type".into(),
                    text(properties.content_type().as_ref()),
                );
                headers.insert(
                    "delivery-mode".into(),
                    properties.delivery_mode().unwrap_or(0).to_string(),
                );
                messages.push(Published {
                    key: properties.message_id().as_ref().map(ToString::to_string),
                    headers,
                    document: serde_json::from_slice(&message.delivery.data)
                        .expect("payload is JSON"),
                });
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    connection.close(200, "done").await.expect("close");
    messages
}

/// Produces `payload` to `topic` and waits for the broker's confirmation.
pub async fn produce(topic: &str, key: &str, payload: &[u8]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack("STACK_KAFKA_BOOTSTRAP"))
        .set("message.timeout.ms", "10000")
        .create()
        .expect("create producer");
    let record = FutureRecord::to(topic).key(key).payload(payload);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(err, _)| err)
        .expect("produce request");
}

/// Publishes `payload` to `queue` through the default exchange, with
/// publisher confirms.
pub async fn publish_to_queue(queue: &str, payload: &[u8]) {
    use lapin::BasicProperties;
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};

    let (connection, channel) = amqp_channel().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let confirm = channel
        .basic_publish(
            "",
            queue,
            BasicPublishOptions::default(),
            payload,
            BasicProperties::default(),
        )
        .await
        .expect("publish request")
        .await
        .expect("confirmation");
    assert!(confirm.is_ack(), "RabbitMQ did not confirm the request");
    connection.close(200, "done").await.expect("close");
}

/// One record or message as it was published, payload undecoded.
#[derive(Debug, Clone)]
pub struct Raw {
    pub key: Option<String>,
    /// Kafka record headers, or the AMQP headers table.
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

/// Reads the records of `topic` from the start, payloads undecoded,
/// until `count` arrived or `wait` passed, then for [`SETTLE`] more.
pub async fn kafka_raw(topic: &str, count: usize, wait: Duration) -> Vec<Raw> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_kafka_raw(&topic, count, wait))
        .await
        .expect("join Kafka reader")
}

fn read_kafka_raw(topic: &str, count: usize, wait: Duration) -> Vec<Raw> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", stack("STACK_KAFKA_BOOTSTRAP"))
        .set("group.id", "outbound-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("create consumer");
    let mut partitions = TopicPartitionList::new();
    partitions
        .add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&partitions).expect("assign");
    drop(partitions);

    let mut records = Vec::new();
    let mut deadline = Instant::now() + wait;
    let mut settling = false;
    while Instant::now() < deadline {
        if records.len() >= count && !settling {
            (settling, deadline) = (true, Instant::now() + SETTLE);
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = result.expect("read record");
        let mut headers = BTreeMap::new();
        if let Some(list) = message.headers() {
            for header in list.iter() {
                let value = String::from_utf8_lossy(header.value.unwrap_or_default());
                headers.insert(header.key.to_owned(), value.into_owned());
            }
        }
        records.push(Raw {
            key: message
                .key()
                .map(|key| String::from_utf8_lossy(key).into_owned()),
            headers,
            payload: message.payload().unwrap_or_default().to_vec(),
        });
    }
    records
}

/// Takes messages from `queue` until `count` arrived or `wait` passed,
/// then for [`SETTLE`] more, payloads undecoded and the headers table
/// as text.
pub async fn amqp_raw(queue: &str, count: usize, wait: Duration) -> Vec<Raw> {
    let (connection, channel) = amqp_channel().await;
    let mut messages = Vec::new();
    let mut deadline = Instant::now() + wait;
    let mut settling = false;
    while Instant::now() < deadline {
        if messages.len() >= count && !settling {
            (settling, deadline) = (true, Instant::now() + SETTLE);
        }
        let options = BasicGetOptions { no_ack: true };
        let Some(message) = channel.basic_get(queue, options).await.expect("basic.get") else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let properties = &message.delivery.properties;
        messages.push(Raw {
            key: properties.message_id().as_ref().map(ToString::to_string),
            headers: amqp_headers(properties.headers().as_ref()),
            payload: message.delivery.data.clone(),
        });
    }
    connection.close(200, "done").await.expect("close");
    messages
}

fn amqp_headers(table: Option<&FieldTable>) -> BTreeMap<String, String> {
    use lapin::types::AMQPValue;

    let mut headers = BTreeMap::new();
    for (name, value) in table
        .map(|table| table.inner().iter())
        .into_iter()
        .flatten()
    {
        let text = match value {
            AMQPValue::LongString(text) => String::from_utf8_lossy(text.as_bytes()).into_owned(),
            AMQPValue::ShortString(text) => text.to_string(),
            other => format!("{other:?}"),
        };
        headers.insert(name.to_string(), text);
    }
    headers
}
