//! `mailbridge run` with outbound pipelines on the stack: send requests on
//! Kafka and RabbitMQ become mails in the recipients' Dovecot mailboxes,
//! and requests that cannot be sent go to the dead-letter target.

use std::time::Duration;

use crate::bridge::{PATIENCE, Setup};
use crate::mailbox::wait_for_mails;
use crate::records::{create_topic, declare_queue, produce, publish_to_queue};
use crate::support::{mail_address, unique};

/// A Kafka and an AMQP outbound pipeline of the account, with their
/// request and dead-letter targets.
struct Targets {
    topic: String,
    topic_dead: String,
    queue: String,
    queue_dead: String,
}

impl Targets {
    async fn new(prefix: &str) -> Self {
        let targets = Self {
            topic: unique(&format!("{prefix}.requests")),
            topic_dead: unique(&format!("{prefix}.dead")),
            queue: unique(&format!("{prefix}.requests")),
            queue_dead: unique(&format!("{prefix}.dead")),
        };
        create_topic(&targets.topic).await;
        create_topic(&targets.topic_dead).await;
        declare_queue(&targets.queue).await;
        declare_queue(&targets.queue_dead).await;
        targets
    }

    fn pipelines(&self) -> String {
        format!(
            "[outbound.kafka]\naccount = \"watched\"\nbroker = \"kafka\"\ntopic = \"{}\"\n\
             dead_letter = \"{}\"\n\n\
             [outbound.rabbitmq]\naccount = \"watched\"\nbroker = \"rabbitmq\"\nqueue = \"{}\"\n\
             dead_letter = \"{}\"\n",
            self.topic, self.topic_dead, self.queue, self.queue_dead
        )
    }
}

#[tokio::test]
async fn outbound_requests_arrive_and_bad_ones_are_dead_lettered() {
    let setup = Setup::new("outbound-sender");
    let targets = Targets::new("send").await;
    setup.prepare(&targets.pipelines()).await;
    let recipient = mail_address(&unique("outbound-recipient"));
    let request = |subject: &str| {
        serde_json::json!({
            "id": unique("request"),
            "to": [{"name": "Zoë Recipient", "address": recipient}],
            "subject": subject,
            "text": "Hello from the send request.",
        })
        .to_string()
    };
    let injected = serde_json::json!({
        "to": [{"address": recipient}],
        "subject": "Ticket 4711\r\nBcc: mallory@example.test",
        "text": "hello",
    })
    .to_string();

    let bridge = setup.start();
    produce(&targets.topic, "k1", request("through Kafka").as_bytes()).await;
    publish_to_queue(&targets.queue, request("through RabbitMQ").as_bytes()).await;
    produce(&targets.topic, "k2", injected.as_bytes()).await;
    let mails = wait_for_mails(&recipient, 2, PATIENCE).await;
    let dead = kafka_records_raw(&targets.topic_dead).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let extra = wait_for_mails(&recipient, 3, Duration::from_secs(1)).await;
    bridge.stop().await;

    assert_eq!(mails.len(), 2, "log:\n{}", setup.log());
    assert_eq!(extra.len(), 2, "the injected request was not sent");
    let subjects: Vec<String> = mails
        .iter()
        .map(|raw| {
            let message = mail_parser::MessageParser::default()
                .parse(raw)
                .expect("parse");
            assert_eq!(
                message
                    .to()
                    .and_then(|to| to.first())
                    .and_then(|a| a.name()),
                Some("Zoë Recipient")
            );
            message.subject().unwrap_or_default().to_owned()
        })
        .collect();
    assert!(
        subjects.contains(&"through Kafka".to_owned()),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"through RabbitMQ".to_owned()),
        "{subjects:?}"
    );
    assert_eq!(dead.len(), 1, "log:\n{}", setup.log());
    assert_eq!(
        dead[0].0,
        injected.as_bytes(),
        "the payload is kept unchanged"
    );
    assert_eq!(
        dead[0].1.get("mailbridge-reason").map(String::as_str),
        Some("invalid_header_value")
    );
}

/// Reads the dead-letter records of `topic`: payload and headers.
async fn kafka_records_raw(
    topic: &str,
) -> Vec<(Vec<u8>, std::collections::BTreeMap<String, String>)> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::{Headers, Message};
        use rdkafka::{ClientConfig, Offset, TopicPartitionList};

        let consumer: BaseConsumer = ClientConfig::new()
            .set(
                "bootstrap.servers",
                crate::support::stack("STACK_KAFKA_BOOTSTRAP"),
            )
            .set("group.id", "outbound-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut partitions = TopicPartitionList::new();
        partitions
            .add_partition_offset(&topic, 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&partitions).expect("assign");
        drop(partitions);
        let mut records = Vec::new();
        let deadline = std::time::Instant::now() + PATIENCE;
        while records.is_empty() && std::time::Instant::now() < deadline {
            let Some(result) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = result.expect("record");
            let mut headers = std::collections::BTreeMap::new();
            if let Some(list) = message.headers() {
                for header in list.iter() {
                    let value =
                        String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned();
                    headers.insert(header.key.to_owned(), value);
                }
            }
            records.push((message.payload().unwrap_or_default().to_vec(), headers));
        }
        records
    })
    .await
    .expect("join")
}
