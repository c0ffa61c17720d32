//! Publishers against the stack's Kafka-protocol broker and RabbitMQ:
//! records arrive in order with their key, headers and properties, broker
//! failures give the documented errors, and a lost connection heals on the
//! next publish.
//!
//! The Kafka outage test takes a broker down, so it runs on a private
//! librdkafka mock cluster in this process and leaves the shared broker
//! alone. The AMQP loss and TLS tests go through a loopback relay in front
//! of RabbitMQ that the test can cut, or that terminates TLS with the
//! stack's server certificate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use mailbridge::broker::{PublishError, Publisher, Record, Target};
use mailbridge::config::{Amqp, Broker, Kafka, Property, Secret};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::records::create_topic;
use crate::support::{stack, unique};

const SCHEMA: &str = "mailbridge.test.v1";
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

// === Records ===

fn batch(prefix: &str, count: usize) -> Vec<Record> {
    (0..count)
        .map(|n| Record {
            key: format!("{prefix}-{n}"),
            payload: format!(r#"{{"id":"{prefix}-{n}","n":{n}}}"#).into_bytes(),
            schema: SCHEMA,
        })
        .collect()
}

fn keys(records: &[Record]) -> Vec<String> {
    records.iter().map(|record| record.key.clone()).collect()
}

// === Kafka ===

/// A record as read back, owned so that no librdkafka message outlives the
/// consumer.
struct Consumed {
    key: String,
    payload: Vec<u8>,
    headers: BTreeMap<String, String>,
}

fn kafka_broker(bootstrap: &str, properties: &[(&str, &str)]) -> Broker {
    let properties = properties
        .iter()
        .map(|(name, value)| (name.to_string(), Property::Plain(value.to_string())))
        .collect();
    Broker::Kafka(Kafka {
        bootstrap_servers: bootstrap.to_owned(),
        properties,
    })
}

/// Reads partition 0 of `topic` from the start until `count` records came.
async fn read_topic(bootstrap: String, topic: String, count: usize) -> Vec<Consumed> {
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", unique("publish-check"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("create consumer");
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&topic, 0, Offset::Beginning)
            .expect("add partition");
        consumer.assign(&assignment).expect("assign partition 0");
        // The list refers to the partition; dropped after the consumer, it
        // would keep the consumer's drop waiting.
        drop(assignment);

        let deadline = Instant::now() + RECEIVE_TIMEOUT;
        let mut records = Vec::new();
        while records.len() < count && Instant::now() < deadline {
            if let Some(message) = consumer.poll(Duration::from_millis(200)) {
                records.push(consumed(&message.expect("consume record")));
            }
        }
        drop(consumer);
        records
    })
    .await
    .expect("consumer task")
}

fn consumed(message: &rdkafka::message::BorrowedMessage<'_>) -> Consumed {
    let text =
        |bytes: Option<&[u8]>| String::from_utf8(bytes.unwrap_or_default().to_vec()).unwrap();
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| (header.key.to_owned(), text(header.value)))
                .collect()
        })
        .unwrap_or_default();
    Consumed {
        key: text(message.key()),
        payload: message.payload().unwrap_or_default().to_vec(),
        headers,
    }
}

#[tokio::test]
async fn kafka_batch_arrives_in_order_with_headers() {
    let bootstrap = stack("STACK_KAFKA_BOOTSTRAP");
    let topic = unique("publish-batch");
    create_topic(&topic).await;
    let broker = kafka_broker(&bootstrap, &[]);
    let target = Target::Kafka {
        topic: topic.clone(),
    };
    let publisher = Publisher::connect("events", Some(&broker), target)
        .await
        .expect("connect the Kafka publisher");
    let records = batch("kafka", 50);

    publisher.publish(&records).await.expect("publish batch");
    publisher.close().await;
    let consumed = read_topic(bootstrap, topic, records.len()).await;

    assert_eq!(consumed.len(), records.len(), "records missing");
    let consumed_keys: Vec<String> = consumed.iter().map(|c| c.key.clone()).collect();
    assert_eq!(consumed_keys, keys(&records), "records out of order");
    for (record, consumed) in records.iter().zip(&consumed) {
        assert_eq!(consumed.payload, record.payload);
        assert_eq!(
            consumed.headers.get("schema").map(String::as_str),
            Some(SCHEMA)
        );
        assert_eq!(
            consumed.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_concurrent_tasks_keep_their_order() {
    let bootstrap = stack("STACK_KAFKA_BOOTSTRAP");
    let topic = unique("publish-concurrent");
    create_topic(&topic).await;
    let target = Target::Kafka {
        topic: topic.clone(),
    };
    let publisher = Publisher::connect("events", Some(&kafka_broker(&bootstrap, &[])), target)
        .await
        .expect("connect the Kafka publisher");

    let batches = publish_concurrently(&publisher, "task", 4, 25).await;
    publisher.close().await;
    let consumed = read_topic(bootstrap, topic, 100).await;

    let consumed_keys: Vec<String> = consumed.into_iter().map(|c| c.key).collect();
    assert_same_records_in_task_order(&consumed_keys, &batches);
}

/// Publishes `tasks` batches of `size` records at once through clones of
/// `publisher`, each in parts of five records, and returns the batches.
async fn publish_concurrently(
    publisher: &Publisher,
    prefix: &str,
    tasks: usize,
    size: usize,
) -> Vec<Vec<Record>> {
    let batches: Vec<Vec<Record>> = (0..tasks)
        .map(|task| batch(&format!("{prefix}{task}"), size))
        .collect();
    let mut handles = Vec::new();
    for records in batches.clone() {
        let publisher = publisher.clone();
        handles.push(tokio::spawn(async move {
            for part in records.chunks(5) {
                publisher.publish(part).await.expect("publish part");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("publishing task");
    }
    batches
}

/// Checks that `received` contains every record once and each task's records
/// in the order the task published them.
fn assert_same_records_in_task_order(received: &[String], batches: &[Vec<Record>]) {
    let total: usize = batches.iter().map(Vec::len).sum();
    assert_eq!(received.len(), total, "records missing or repeated");
    for records in batches {
        let prefix = records[0].key.rsplit_once('-').unwrap().0.to_owned() + "-";
        let seen: Vec<String> = received
            .iter()
            .filter(|key| key.starts_with(&prefix))
            .cloned()
            .collect();
        assert_eq!(seen, keys(records), "records of {prefix} out of order");
    }
}

#[tokio::test]
async fn kafka_outage_is_transient_then_batch_succeeds() {
    let cluster = MockCluster::new(1).expect("start a private mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique("publish-outage");
    cluster.create_topic(&topic, 1, 1).expect("create topic");
    let message_timeout = Duration::from_secs(3);
    let timeout_ms = message_timeout.as_millis().to_string();
    let broker = kafka_broker(&bootstrap, &[("message.timeout.ms", &timeout_ms)]);
    let target = Target::Kafka {
        topic: topic.clone(),
    };
    let publisher = Publisher::connect("outage", Some(&broker), target)
        .await
        .expect("connect the Kafka publisher");
    let first = batch("before", 3);
    publisher
        .publish(&first)
        .await
        .expect("publish before the outage");

    // The mock numbers its brokers from 1.
    cluster.broker_down(1).expect("take the broker down");
    let second = batch("during", 5);
    let started = Instant::now();
    let err = publisher
        .publish(&second)
        .await
        .expect_err("publish succeeded with the broker down");
    let waited = started.elapsed();

    assert!(err.is_transient(), "{err}");
    assert_eq!(err.kind(), "timeout", "{err}");
    assert!(err.to_string().contains("broker outage"), "{err}");
    assert!(
        waited < message_timeout + Duration::from_secs(3),
        "error came after {waited:?}"
    );

    cluster.broker_up(1).expect("bring the broker back");
    let attempts = publish_until_ok(&publisher, &second, Duration::from_secs(60)).await;
    publisher.close().await;
    let consumed = read_topic(bootstrap, topic, first.len() + second.len()).await;

    assert!(
        attempts <= 5,
        "{attempts} attempts after the broker came back"
    );
    let consumed_keys: Vec<String> = consumed.iter().map(|c| c.key.clone()).collect();
    assert_eq!(consumed_keys[..first.len()], keys(&first)[..]);
    let tail = &consumed_keys[consumed_keys.len() - second.len()..];
    assert_eq!(tail, &keys(&second)[..], "retried batch out of order");
    drop(cluster);
}

#[tokio::test]
async fn kafka_fatal_error_replaces_the_producer() {
    let cluster = MockCluster::new(1).expect("start a private mock cluster");
    let topic = unique("publish-fatal");
    cluster.create_topic(&topic, 1, 1).expect("create topic");
    // With the gap-less guarantee, a record the broker rejects for good
    // leaves the idempotent producer in a fatal state.
    let properties = [("enable.gapless.guarantee", "true")];
    let broker = kafka_broker(&cluster.bootstrap_servers(), &properties);
    let target = Target::Kafka {
        topic: topic.clone(),
    };
    let publisher = Publisher::connect("fatal", Some(&broker), target)
        .await
        .expect("connect the Kafka publisher");
    let rejected = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD];
    cluster.request_errors(RDKafkaApiKey::Produce, &rejected);

    let err = publisher
        .publish(&batch("rejected", 1))
        .await
        .expect_err("the broker rejected the record");
    let records = batch("after", 2);
    let published = publisher.publish(&records).await;
    publisher.close().await;
    let consumed = read_topic(cluster.bootstrap_servers(), topic, records.len()).await;

    assert_eq!(err.kind(), "publish", "{err}");
    published.expect("publish with a new producer");
    let consumed_keys: Vec<String> = consumed.into_iter().map(|c| c.key).collect();
    assert_eq!(consumed_keys, keys(&records));
    drop(cluster);
}

/// Retries the batch the way a pipeline does, and returns the attempts.
async fn publish_until_ok(publisher: &Publisher, records: &[Record], within: Duration) -> u32 {
    let deadline = Instant::now() + within;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match publisher.publish(records).await {
            Ok(()) => return attempts,
            Err(err) if err.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("publish failed after {attempts} attempts: {err}"),
        }
    }
}

#[tokio::test]
async fn kafka_properties_turning_idempotence_off_are_rejected() {
    let cases = [("enable.idempotence", "false"), ("acks", "1")];
    for (name, value) in cases {
        let broker = kafka_broker(&stack("STACK_KAFKA_BOOTSTRAP"), &[(name, value)]);
        let target = Target::Kafka {
            topic: unique("publish-rejected"),
        };

        let err = Publisher::connect("events", Some(&broker), target)
            .await
            .err()
            .unwrap_or_else(|| panic!("{name} = {value} was accepted"));

        assert_eq!(err.kind(), "config", "{err}");
        assert!(!err.is_transient(), "{err}");
        assert!(err.to_string().contains(name), "{err}");
    }
}

// === AMQP ===

fn amqp_broker(url: &str, ca_file: Option<PathBuf>) -> Broker {
    Broker::Amqp(Amqp {
        url: Secret::new(url),
        ca_file,
    })
}

fn stack_amqp() -> Broker {
    amqp_broker(&stack("STACK_AMQP_URL"), None)
}

/// Returns the stack's AMQP URL with another port and password.
fn amqp_url(scheme: &str, password: &str, port: u16) -> String {
    let mut url = url::Url::parse(&stack("STACK_AMQP_URL")).expect("STACK_AMQP_URL");
    url.set_scheme(scheme).expect("scheme");
    url.set_password(Some(password)).expect("password");
    url.set_port(Some(port)).expect("port");
    url.to_string()
}

fn queue_target(queue: &str, declare: bool) -> Target {
    Target::Amqp {
        exchange: String::new(),
        routing_key: queue.to_owned(),
        declare,
    }
}

/// Opens the test's own connection, for declaring and reading queues.
async fn admin() -> (Connection, Channel) {
    let connection = Connection::connect(&stack("STACK_AMQP_URL"), ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("open channel");
    (connection, channel)
}

async fn declare_queue(channel: &Channel, queue: &str) {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue, options, FieldTable::default())
        .await
        .expect("declare queue");
}

async fn delete_queue(channel: &Channel, queue: &str) {
    channel
        .queue_delete(queue, QueueDeleteOptions::default())
        .await
        .expect("delete queue");
}

/// Takes up to `count` messages off `queue`, with their properties.
async fn take(channel: &Channel, queue: &str, count: usize) -> Vec<(Vec<u8>, BasicProperties)> {
    let deadline = Instant::now() + RECEIVE_TIMEOUT;
    let mut messages = Vec::new();
    while messages.len() < count && Instant::now() < deadline {
        let options = BasicGetOptions { no_ack: true };
        match channel.basic_get(queue, options).await.expect("basic.get") {
            Some(message) => {
                let delivery = message.delivery;
                messages.push((delivery.data, delivery.properties));
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    messages
}

fn message_ids(messages: &[(Vec<u8>, BasicProperties)]) -> Vec<String> {
    messages
        .iter()
        .map(|(_, properties)| properties.message_id().as_ref().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn amqp_batch_arrives_persistent_with_properties() {
    let queue = unique("publish-batch");
    let (_admin, channel) = admin().await;
    declare_queue(&channel, &queue).await;
    let publisher = Publisher::connect("rabbit", Some(&stack_amqp()), queue_target(&queue, false))
        .await
        .expect("connect the AMQP publisher");
    let records = batch("amqp", 20);

    publisher.publish(&records).await.expect("publish batch");
    publisher.close().await;
    let messages = take(&channel, &queue, records.len()).await;
    delete_queue(&channel, &queue).await;

    assert_eq!(
        message_ids(&messages),
        keys(&records),
        "missing or out of order"
    );
    for (record, (body, properties)) in records.iter().zip(&messages) {
        assert_eq!(body, &record.payload);
        assert_eq!(properties.delivery_mode(), &Some(2));
        let content_type = properties.content_type().as_ref().map(|v| v.as_str());
        assert_eq!(content_type, Some("application/json"));
        let kind = properties.kind().as_ref().map(|v| v.as_str());
        assert_eq!(kind, Some(SCHEMA));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_concurrent_tasks_are_all_confirmed() {
    let queue = unique("publish-concurrent");
    let (_admin, channel) = admin().await;
    declare_queue(&channel, &queue).await;
    let publisher = Publisher::connect("rabbit", Some(&stack_amqp()), queue_target(&queue, false))
        .await
        .expect("connect the AMQP publisher");

    let batches = publish_concurrently(&publisher, "task", 4, 25).await;
    publisher.close().await;
    let messages = take(&channel, &queue, 100).await;
    delete_queue(&channel, &queue).await;

    assert_same_records_in_task_order(&message_ids(&messages), &batches);
}

#[tokio::test]
async fn amqp_exchange_routes_by_routing_key() {
    let exchange = unique("publish-exchange");
    let queue = unique("publish-bound");
    let (_admin, channel) = admin().await;
    let kind = ExchangeKind::Direct;
    let options = ExchangeDeclareOptions::default();
    channel
        .exchange_declare(&exchange, kind, options, FieldTable::default())
        .await
        .expect("declare exchange");
    declare_queue(&channel, &queue).await;
    let bind = QueueBindOptions::default();
    channel
        .queue_bind(&queue, &exchange, "support", bind, FieldTable::default())
        .await
        .expect("bind queue");
    let target = Target::Amqp {
        exchange: exchange.clone(),
        routing_key: "support".into(),
        declare: true,
    };
    let publisher = Publisher::connect("rabbit", Some(&stack_amqp()), target)
        .await
        .expect("connect the AMQP publisher");
    let records = batch("routed", 3);

    publisher.publish(&records).await.expect("publish batch");
    publisher.close().await;
    let messages = take(&channel, &queue, records.len()).await;
    delete_queue(&channel, &queue).await;
    channel
        .exchange_delete(&exchange, ExchangeDeleteOptions::default())
        .await
        .expect("delete exchange");

    assert_eq!(message_ids(&messages), keys(&records));
}

#[tokio::test]
async fn amqp_unroutable_is_permanent_and_names_the_route() {
    let queue = unique("publish-nowhere");
    let publisher = Publisher::connect("rabbit", Some(&stack_amqp()), queue_target(&queue, false))
        .await
        .expect("connect the AMQP publisher");

    let err = publisher
        .publish(&batch("lost", 2))
        .await
        .expect_err("unroutable publish succeeded");
    publisher.close().await;

    assert_eq!(err.kind(), "unroutable", "{err}");
    assert!(!err.is_transient(), "{err}");
    let message = err.to_string();
    assert!(message.contains("exchange \"\""), "{message}");
    assert!(
        message.contains(&format!("routing key \"{queue}\"")),
        "{message}"
    );
    assert!(message.contains("declare = true"), "{message}");
    assert!(message.contains("312 NO_ROUTE"), "{message}");
}

#[tokio::test]
async fn amqp_unbound_exchange_says_to_bind() {
    let target = Target::Amqp {
        exchange: "amq.direct".into(),
        routing_key: unique("publish-unbound"),
        declare: false,
    };
    let publisher = Publisher::connect("rabbit", Some(&stack_amqp()), target)
        .await
        .expect("connect the AMQP publisher");

    let err = publisher.publish(&batch("unbound", 1)).await.unwrap_err();
    publisher.close().await;

    assert_eq!(err.kind(), "unroutable", "{err}");
    assert!(
        err.to_string()
            .contains("bind a queue to exchange \"amq.direct\""),
        "{err}"
    );
}

#[tokio::test]
async fn amqp_declare_creates_durable_queue() {
    let queue = unique("publish-declared");
    let publisher = Publisher::connect("rabbit", Some(&stack_amqp()), queue_target(&queue, true))
        .await
        .expect("connect and declare");
    let records = batch("declared", 2);

    publisher
        .publish(&records)
        .await
        .expect("publish to the declared queue");
    publisher.close().await;
    let (_admin, channel) = admin().await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(&queue, passive, FieldTable::default())
        .await
        .expect("queue exists");
    let messages = take(&channel, &queue, records.len()).await;
    delete_queue(&channel, &queue).await;

    assert_eq!(declared.message_count(), 2);
    assert_eq!(message_ids(&messages), keys(&records));
}

#[tokio::test]
async fn amqp_declare_checks_that_exchange_exists() {
    let exchange = unique("publish-missing");
    let target = Target::Amqp {
        exchange: exchange.clone(),
        routing_key: "support".into(),
        declare: true,
    };

    let err = Publisher::connect("rabbit", Some(&stack_amqp()), target)
        .await
        .err()
        .expect("connect succeeded without the exchange");

    assert_eq!(err.kind(), "declare", "{err}");
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("exchange \"{exchange}\"")),
        "{err}"
    );
}

#[tokio::test]
async fn amqp_closed_channel_is_reopened_on_next_publish() {
    let exchange = unique("publish-late");
    let queue = unique("publish-late");
    let target = Target::Amqp {
        exchange: exchange.clone(),
        routing_key: "support".into(),
        declare: false,
    };
    let publisher = Publisher::connect("rabbit", Some(&stack_amqp()), target)
        .await
        .expect("connect the AMQP publisher");

    // The server closes the channel with 404 because the exchange is missing.
    let err = publisher.publish(&batch("early", 1)).await.unwrap_err();
    assert_eq!(err.kind(), "publish", "{err}");
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("declare exchange"), "{err}");

    let (_admin, channel) = admin().await;
    let options = ExchangeDeclareOptions::default();
    channel
        .exchange_declare(
            &exchange,
            ExchangeKind::Direct,
            options,
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");
    declare_queue(&channel, &queue).await;
    let bind = QueueBindOptions::default();
    channel
        .queue_bind(&queue, &exchange, "support", bind, FieldTable::default())
        .await
        .expect("bind queue");
    let records = batch("late", 2);
    let published = publisher.publish(&records).await;
    publisher.close().await;
    let messages = take(&channel, &queue, records.len()).await;
    delete_queue(&channel, &queue).await;
    channel
        .exchange_delete(&exchange, ExchangeDeleteOptions::default())
        .await
        .expect("delete exchange");

    published.expect("publish on a reopened channel");
    assert_eq!(message_ids(&messages), keys(&records));
}

#[tokio::test]
async fn amqp_lost_connection_reconnects_on_next_publish() {
    let queue = unique("publish-relay");
    let (_admin, channel) = admin().await;
    declare_queue(&channel, &queue).await;
    let relay = Relay::start(None).await;
    let url = amqp_url("amqp", &stack_password(), relay.port);
    let publisher = Publisher::connect(
        "rabbit",
        Some(&amqp_broker(&url, None)),
        queue_target(&queue, false),
    )
    .await
    .expect("connect through the relay");
    let first = batch("first", 2);
    publisher
        .publish(&first)
        .await
        .expect("publish before the loss");

    relay.cut();
    let second = batch("second", 2);
    let attempts = publish_until_ok(&publisher, &second, Duration::from_secs(30)).await;
    publisher.close().await;
    let messages = take(&channel, &queue, first.len() + second.len()).await;
    delete_queue(&channel, &queue).await;

    assert!(
        attempts <= 2,
        "{attempts} attempts after the connection loss"
    );
    assert!(relay.accepted() >= 2, "the publisher did not reconnect");
    let mut expected = keys(&first);
    expected.extend(keys(&second));
    assert_eq!(message_ids(&messages), expected);
}

#[tokio::test]
async fn amqps_publishes_through_tls_with_ca_file() {
    let queue = unique("publish-tls");
    let (_admin, channel) = admin().await;
    declare_queue(&channel, &queue).await;
    let relay = Relay::start(Some(tls_acceptor())).await;
    let url = amqp_url("amqps", &stack_password(), relay.port);
    let ca_file = PathBuf::from(stack("STACK_CA_FILE"));
    let broker = amqp_broker(&url, Some(ca_file));
    let publisher = Publisher::connect("rabbit", Some(&broker), queue_target(&queue, false))
        .await
        .expect("connect over TLS");
    let records = batch("tls", 2);

    publisher.publish(&records).await.expect("publish over TLS");
    publisher.close().await;
    let messages = take(&channel, &queue, records.len()).await;
    delete_queue(&channel, &queue).await;

    assert_eq!(message_ids(&messages), keys(&records));
}

#[tokio::test]
async fn amqps_untrusted_certificate_is_permanent() {
    let relay = Relay::start(Some(tls_acceptor())).await;
    let url = amqp_url("amqps", &stack_password(), relay.port);
    let target = queue_target(&unique("publish-untrusted"), false);

    let err = Publisher::connect("rabbit", Some(&amqp_broker(&url, None)), target)
        .await
        .err()
        .expect("connected to a server signed by an unknown CA");

    assert_eq!(err.kind(), "connect", "{err}");
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("ca_file"), "{err}");
}

#[tokio::test]
async fn amqp_closed_port_is_transient_and_hides_password() {
    let password = unique("hidden-password");
    let port = closed_port().await;
    let url = amqp_url("amqp", &password, port);
    let target = queue_target(&unique("publish-closed"), false);

    let err = Publisher::connect("rabbit", Some(&amqp_broker(&url, None)), target)
        .await
        .err()
        .expect("connected to a closed port");

    let message = err.to_string();
    assert_eq!(err.kind(), "connect", "{message}");
    assert!(err.is_transient(), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(!message.contains(&password), "{message}");
    assert!(!format!("{err:?}").contains(&password), "{err:?}");
}

#[tokio::test]
async fn amqp_wrong_password_is_permanent_and_hidden() {
    let password = unique("wrong-password");
    let port = url::Url::parse(&stack("STACK_AMQP_URL"))
        .unwrap()
        .port()
        .unwrap_or(5672);
    let url = amqp_url("amqp", &password, port);
    let target = queue_target(&unique("publish-refused"), false);

    let err: PublishError = Publisher::connect("rabbit", Some(&amqp_broker(&url, None)), target)
        .await
        .err()
        .expect("connected with a wrong password");

    let message = err.to_string();
    assert_eq!(err.kind(), "connect", "{message}");
    assert!(!err.is_transient(), "{message}");
    assert!(message.contains("password"), "{message}");
    assert!(!message.contains(&password), "{message}");
}

fn stack_password() -> String {
    let url = url::Url::parse(&stack("STACK_AMQP_URL")).expect("STACK_AMQP_URL");
    url.password().unwrap_or("guest").to_owned()
}

/// Returns a loopback port that nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address").port()
}

// === Relay ===

/// A loopback TCP relay to RabbitMQ that the test can cut, and that
/// terminates TLS with the stack's server certificate when given an
/// acceptor.
struct Relay {
    port: u16,
    accept: AbortHandle,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Relay {
    async fn start(tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("relay address").port();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn(relay_loop(listener, tls, connections.clone()));

        Self {
            port,
            accept: accept.abort_handle(),
            connections,
        }
    }

    /// Closes every relayed connection; new ones are still accepted.
    fn cut(&self) {
        for connection in self.connections.lock().unwrap().iter() {
            connection.abort();
        }
    }

    fn accepted(&self) -> usize {
        self.connections.lock().unwrap().len()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn relay_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
) {
    let url = url::Url::parse(&stack("STACK_AMQP_URL")).expect("STACK_AMQP_URL");
    let upstream = (
        url.host_str().unwrap().to_owned(),
        url.port().unwrap_or(5672),
    );
    loop {
        let (client, _) = listener.accept().await.expect("relay accept");
        let relayed = tokio::spawn(relay_one(client, upstream.clone(), tls.clone()));
        connections.lock().unwrap().push(relayed.abort_handle());
    }
}

async fn relay_one(mut client: TcpStream, upstream: (String, u16), tls: Option<TlsAcceptor>) {
    let mut server = TcpStream::connect(upstream)
        .await
        .expect("relay to RabbitMQ");
    let _ = match tls {
        Some(acceptor) => match acceptor.accept(client).await {
            Ok(mut tls) => tokio::io::copy_bidirectional(&mut tls, &mut server).await,
            Err(_) => return,
        },
        None => tokio::io::copy_bidirectional(&mut client, &mut server).await,
    };
}

fn tls_acceptor() -> TlsAcceptor {
    let dir = PathBuf::from(stack("STACK_DIR")).join("tls");
    let chain = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .expect("read server.crt")
        .collect::<Result<Vec<_>, _>>()
        .expect("parse server.crt");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("read server.key");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
    TlsAcceptor::from(Arc::new(config))
}
