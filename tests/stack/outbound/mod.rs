//! `mailbridge run` with outbound pipelines on the stack: send requests on
//! Kafka and RabbitMQ become mails in the recipients' Dovecot mailboxes,
//! requests that cannot be sent go to the dead-letter target, and every
//! request yields a status event.
//!
//! This module holds what the tests share: the topics and queues of one
//! test, the pipeline tables and the reading of received mail.

mod catalogue;
mod concurrency;
mod content;
mod injection;
mod readiness;
mod rejection;
mod replicas;
mod restart;
mod retry_limit;
mod round_trip;
mod starttls;
mod token;

use mail_parser::{Message, MessageParser};
use serde_json::{Value, json};

use crate::bridge::schema_errors;
use crate::records::{create_topic, declare_queue};
use crate::support::unique;

/// Name of the Kafka pipeline in [`Targets::pipelines`].
const KAFKA: &str = "kafka";
/// Name of the AMQP pipeline in [`Targets::pipelines`].
const RABBITMQ: &str = "rabbitmq";

/// The topics and queues of one test: requests, dead letters and status
/// events, on Kafka and on RabbitMQ.
struct Targets {
    topic: String,
    topic_dead: String,
    topic_status: String,
    /// Kafka consumer group of its own, so that no other test's bridge
    /// joins it.
    group_id: String,
    queue: String,
    queue_dead: String,
    queue_status: String,
}

impl Targets {
    /// Creates the topics and declares the queues, as an operator would
    /// before the bridge starts.
    async fn new(prefix: &str) -> Self {
        let name = |role: &str| unique(&format!("{prefix}.{role}"));
        let targets = Self {
            topic: name("requests"),
            topic_dead: name("dead"),
            topic_status: name("status"),
            group_id: name("group"),
            queue: name("requests"),
            queue_dead: name("dead"),
            queue_status: name("status"),
        };
        for topic in [&targets.topic, &targets.topic_dead, &targets.topic_status] {
            create_topic(topic).await;
        }
        for queue in [&targets.queue, &targets.queue_dead, &targets.queue_status] {
            declare_queue(queue).await;
        }
        targets
    }

    /// The Kafka pipeline, with `extra` TOML lines in its table.
    fn kafka(&self, extra: &str) -> String {
        format!(
            "\n[outbound.{KAFKA}]\naccount = \"watched\"\nbroker = \"kafka\"\ntopic = \"{}\"\n\
             group_id = \"{}\"\ndead_letter = \"{}\"\nstatus = \"{}\"\n{extra}\n",
            self.topic, self.group_id, self.topic_dead, self.topic_status
        )
    }

    /// The AMQP pipeline, with `extra` TOML lines in its table.
    fn rabbitmq(&self, extra: &str) -> String {
        format!(
            "\n[outbound.{RABBITMQ}]\naccount = \"watched\"\nbroker = \"rabbitmq\"\nqueue = \"{}\"\n\
             dead_letter = \"{}\"\nstatus = \"{}\"\n{extra}\n",
            self.queue, self.queue_dead, self.queue_status
        )
    }

    /// Both pipelines.
    fn pipelines(&self) -> String {
        self.kafka("") + &self.rabbitmq("")
    }
}

/// A plain request to `recipient` with its own `id`.
fn request(recipient: &str, subject: &str) -> Value {
    json!({
        "id": unique("request"),
        "to": [{"address": recipient}],
        "subject": subject,
        "text": format!("Body of {subject}."),
    })
}

/// Parses a received mail.
fn parse(raw: &[u8]) -> Message<'_> {
    MessageParser::default()
        .parse(raw)
        .expect("received mail parses")
}

/// The Message-ID of a received mail, with angle brackets.
fn message_id(raw: &[u8]) -> String {
    let id = parse(raw).message_id().expect("Message-ID").to_owned();
    format!("<{id}>")
}

/// Decodes a status event and checks it against its schema.
fn status_event(payload: &[u8]) -> Value {
    let event: Value = serde_json::from_slice(payload).expect("status event is JSON");
    let errors = schema_errors("outbound-status.v1.json", &event);
    assert!(errors.is_empty(), "{errors:?} in {event}");
    event
}
