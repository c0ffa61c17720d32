//! Kafka-protocol broker: rdkafka produces and consumes a record with a
//! consumer group, commits its offset, and a new member of the same group
//! resumes after it.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset};

use crate::records::create_topic;
use crate::support::{stack, unique};

const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", stack("STACK_KAFKA_BOOTSTRAP"))
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "10000")
        .create()
        .expect("create producer")
}

fn consumer(group: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", stack("STACK_KAFKA_BOOTSTRAP"))
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("create consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Polls until a record arrives; rebalance events make single polls return
/// nothing.
fn next_record(consumer: &BaseConsumer) -> rdkafka::message::BorrowedMessage<'_> {
    let deadline = std::time::Instant::now() + RECEIVE_TIMEOUT;
    while std::time::Instant::now() < deadline {
        if let Some(result) = consumer.poll(Duration::from_millis(200)) {
            return result.expect("consume record");
        }
    }
    panic!("no record arrived within {RECEIVE_TIMEOUT:?}");
}

/// Returns the committed offset of partition 0. The list librdkafka returns
/// holds a reference to the partition, and so to its broker, so it must be
/// dropped before the consumer: a consumer dropped while such a list lives
/// waits forever for that broker thread to end.
fn committed_offset(consumer: &BaseConsumer, topic: &str) -> Offset {
    let committed = consumer
        .committed(Duration::from_secs(10))
        .expect("read committed offsets");
    committed
        .find_partition(topic, 0)
        .expect("partition 0 committed")
        .offset()
}

async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &str) -> i64 {
    let headers = OwnedHeaders::new().insert(Header {
        key: "content-type",
        value: Some("application/json"),
    });
    let record = FutureRecord::to(topic)
        .key(key)
        .payload(payload)
        .headers(headers);
    let delivery = producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(err, _)| err)
        .expect("broker acknowledges the record");
    delivery.offset
}

#[tokio::test]
async fn kafka_group_consumes_commits_and_resumes() {
    let topic = unique("stack-test");
    let group = unique("stack-group");
    create_topic(&topic).await;
    let producer = producer();
    let first_offset = produce(&producer, &topic, "first", r#"{"n":1}"#).await;

    let first = consumer(&group, &topic);
    let record = next_record(&first);

    assert_eq!(record.offset(), first_offset);
    assert_eq!(record.key(), Some(&b"first"[..]));
    assert_eq!(record.payload(), Some(&br#"{"n":1}"#[..]));
    let header = record.headers().expect("record headers").get(0);
    assert_eq!(header.key, "content-type");
    assert_eq!(header.value, Some(&b"application/json"[..]));

    first
        .commit_message(&record, CommitMode::Sync)
        .expect("commit offset");
    let position = committed_offset(&first, &topic);
    assert_eq!(position, Offset::Offset(first_offset + 1));
    drop(record);
    drop(first);

    let second_offset = produce(&producer, &topic, "second", r#"{"n":2}"#).await;
    let resumed = consumer(&group, &topic);
    let record = next_record(&resumed);

    assert_eq!(
        record.offset(),
        second_offset,
        "group resumed at the wrong offset"
    );
    assert_eq!(record.key(), Some(&b"second"[..]));
    drop(record);
    drop(resumed);
}

#[tokio::test]
async fn kafka_stack_topics_exist() {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", stack("STACK_KAFKA_BOOTSTRAP"))
        .set("group.id", unique("metadata"))
        .create()
        .expect("create consumer");

    let metadata = consumer
        .fetch_metadata(Some("mail.inbound"), Duration::from_secs(10))
        .expect("fetch metadata");

    let topic = &metadata.topics()[0];
    assert_eq!(topic.name(), "mail.inbound");
    assert_eq!(topic.partitions().len(), 3);
}
