//! Publishers, the sink side of the inbound pipeline: Kafka through
//! librdkafka, AMQP 0-9-1 through lapin, and JSON Lines on standard
//! output.
//!
//! [`Publisher::publish`] returns `Ok` only once the broker confirmed every
//! record of the batch: a Kafka delivery report with `acks=all`, an AMQP
//! publisher confirm (basic.ack), or a flushed line on standard output.
//! After any error the caller retries the whole batch, so delivery is
//! at-least-once and the stable record key lets consumers drop repeats.

mod amqp;
pub mod consume;
mod error;
pub(crate) mod kafka;
mod stdout;

use std::fmt;
use std::sync::Arc;

use crate::config::{self, BrokerKind};

pub(crate) use amqp::Link as AmqpLink;
pub use consume::{Assignment, ConsumeError, Consumer, Delivery, Headers, Position, Source};
pub use error::PublishError;

/// Returns `broker` for a publisher whose caller awaits what it handed over
/// before it hands over more: an inbound pipeline's batch, or one outbound
/// status or dead-letter record. A Kafka producer then sends records at
/// once, unless the broker's properties set `linger.ms` or
/// `queue.buffering.max.ms`.
pub fn unbatched(broker: &config::Broker) -> config::Broker {
    match broker {
        config::Broker::Kafka(kafka) => config::Broker::Kafka(kafka::settings::unbatched(kafka)),
        config::Broker::Amqp(_) => broker.clone(),
    }
}

/// Media type of every record.
pub const CONTENT_TYPE: &str = "application/json";

/// One document to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Stable id of the document: the Kafka record key and the AMQP
    /// `message_id`.
    pub key: String,
    /// The JSON document, UTF-8.
    pub payload: Vec<u8>,
    /// Schema name of the document: the Kafka `schema` header and the AMQP
    /// `type` property.
    pub schema: &'static str,
}

/// Destination of a publisher's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Kafka topic.
    Kafka {
        /// Topic name.
        topic: String,
    },
    /// An AMQP exchange, or a queue through the default exchange `""`.
    Amqp {
        /// Exchange name; empty for the default exchange, which routes to
        /// the queue named by the routing key.
        exchange: String,
        /// Routing key; the queue name with the default exchange.
        routing_key: String,
        /// Declaration at connect. With the default exchange, the publisher
        /// declares a durable queue named by the routing key. With a named
        /// exchange, it only checks that the exchange exists (a passive
        /// declare) and binds nothing. When false, it declares nothing.
        declare: bool,
    },
    /// JSON Lines on standard output.
    Stdout,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kafka { topic } => write!(f, "topic \"{topic}\""),
            Self::Amqp {
                exchange,
                routing_key,
                ..
            } if exchange.is_empty() => {
                write!(f, "queue \"{routing_key}\" through the default exchange")
            }
            Self::Amqp {
                exchange,
                routing_key,
                ..
            } => write!(
                f,
                "exchange \"{exchange}\" with routing key \"{routing_key}\""
            ),
            Self::Stdout => f.write_str("standard output"),
        }
    }
}

/// A connected publisher. Clones share one connection, so any number of
/// mailbox tasks can publish through it at once.
#[derive(Clone)]
pub struct Publisher {
    sink: Arc<Sink>,
}

enum Sink {
    Kafka(kafka::Sink),
    Amqp(Box<amqp::Sink>),
    Stdout(stdout::Sink),
}

impl Publisher {
    /// Connects to `broker` for `target`, or to standard output when the
    /// target is [`Target::Stdout`] and there is no broker.
    ///
    /// The Kafka publisher fetches the topic's metadata, and the AMQP one
    /// opens its connection and channel and runs the declaration that
    /// `declare` requests, so that unreachable servers and missing topics
    /// show up here.
    pub async fn connect(
        broker_name: &str,
        broker: Option<&config::Broker>,
        target: Target,
    ) -> Result<Publisher, PublishError> {
        let sink = match (broker, target) {
            (Some(config::Broker::Kafka(kafka)), Target::Kafka { topic }) => {
                Sink::Kafka(kafka::Sink::connect(broker_name, kafka, topic).await?)
            }
            (
                Some(config::Broker::Amqp(settings)),
                Target::Amqp {
                    exchange,
                    routing_key,
                    declare,
                },
            ) => {
                let route = amqp::Route {
                    exchange,
                    routing_key,
                    declare,
                };
                let sink = amqp::Sink::connect(broker_name, settings, route).await?;
                Sink::Amqp(Box::new(sink))
            }
            (None, Target::Stdout) => Sink::Stdout(stdout::Sink::stdout()),
            (broker, target) => return Err(mismatch(broker_name, broker, &target)),
        };

        Ok(Publisher {
            sink: Arc::new(sink),
        })
    }

    /// Publishes `batch` in order and returns `Ok` only after the broker
    /// confirmed every record of it. On error some records may have been
    /// stored anyway: retry the whole batch.
    pub async fn publish(&self, batch: &[Record]) -> Result<(), PublishError> {
        if batch.is_empty() {
            return Ok(());
        }

        match self.sink.as_ref() {
            Sink::Kafka(sink) => sink.publish(batch).await,
            Sink::Amqp(sink) => sink.publish(batch).await,
            Sink::Stdout(sink) => sink.publish(batch).await,
        }
    }

    /// Publishes `batch` like [`Publisher::publish`], each record with its
    /// extra headers: Kafka record headers after `schema` and
    /// `content-type`, or the AMQP message's headers table next to the
    /// usual properties. Standard output leaves the headers out.
    pub async fn publish_with_headers(
        &self,
        batch: &[(Record, Headers)],
    ) -> Result<(), PublishError> {
        if batch.is_empty() {
            return Ok(());
        }

        match self.sink.as_ref() {
            Sink::Kafka(sink) => sink.publish(batch).await,
            Sink::Amqp(sink) => sink.publish(batch).await,
            Sink::Stdout(sink) => sink.publish(batch).await,
        }
    }

    /// Largest payload one record may carry, when the broker has a limit
    /// that a mail document can reach: Kafka's `message.max.bytes`.
    pub fn max_payload_bytes(&self) -> Option<usize> {
        match self.sink.as_ref() {
            Sink::Kafka(sink) => Some(sink.max_payload_bytes()),
            Sink::Amqp(_) | Sink::Stdout(_) => None,
        }
    }

    /// Waits for records still in flight and disconnects. Clones share the
    /// AMQP connection, so it closes for them too, and a clone that
    /// publishes afterwards reconnects. The Kafka producer disconnects when
    /// the last clone is dropped.
    pub async fn close(self) {
        match self.sink.as_ref() {
            Sink::Kafka(sink) => sink.close().await,
            Sink::Amqp(sink) => sink.close().await,
            Sink::Stdout(sink) => sink.close().await,
        }
    }
}

/// Builds the error for a broker whose kind does not fit the target.
fn mismatch(broker_name: &str, broker: Option<&config::Broker>, target: &Target) -> PublishError {
    let (reason, fix) = match (broker.map(config::Broker::kind), target) {
        (None, _) => (
            format!("{target} needs a broker, but none is configured"),
            "set the pipeline's broker to a [brokers.NAME] table".to_owned(),
        ),
        (Some(_), Target::Stdout) => (
            "standard output takes no broker".to_owned(),
            "remove the pipeline's broker, or give it a topic or exchange".to_owned(),
        ),
        (Some(kind), _) => (
            format!(
                "{target} cannot be published to a broker of kind {}",
                kind_name(kind)
            ),
            "use a topic with a kafka broker and an exchange or queue with an amqp broker"
                .to_owned(),
        ),
    };

    PublishError::Config {
        broker: broker_name.to_owned(),
        reason,
        fix,
    }
}

fn kind_name(kind: BrokerKind) -> &'static str {
    match kind {
        BrokerKind::Kafka => "kafka",
        BrokerKind::Amqp => "amqp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_topic_exchange_and_queue() {
        let topic = Target::Kafka {
            topic: "mail".into(),
        };
        let exchange = Target::Amqp {
            exchange: "mail".into(),
            routing_key: "support".into(),
            declare: false,
        };
        let queue = Target::Amqp {
            exchange: String::new(),
            routing_key: "support".into(),
            declare: false,
        };

        assert_eq!(topic.to_string(), "topic \"mail\"");
        assert_eq!(
            exchange.to_string(),
            "exchange \"mail\" with routing key \"support\""
        );
        assert_eq!(
            queue.to_string(),
            "queue \"support\" through the default exchange"
        );
    }

    #[tokio::test]
    async fn kafka_target_without_broker_is_rejected() {
        let target = Target::Kafka {
            topic: "mail".into(),
        };

        let err = Publisher::connect("events", None, target)
            .await
            .err()
            .unwrap();

        assert_eq!(err.kind(), "config");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("needs a broker"), "{err}");
    }

    #[tokio::test]
    async fn amqp_target_on_kafka_broker_is_rejected() {
        let broker = config::Broker::Kafka(config::Kafka {
            bootstrap_servers: "127.0.0.1:9".into(),
            properties: Default::default(),
        });
        let target = Target::Amqp {
            exchange: String::new(),
            routing_key: "mail".into(),
            declare: false,
        };

        let err = Publisher::connect("events", Some(&broker), target)
            .await
            .err()
            .unwrap();

        assert_eq!(err.kind(), "config");
        assert!(err.to_string().contains("broker of kind kafka"), "{err}");
    }
}
