//! Consumers, the source side of the outbound pipeline: send requests from
//! a Kafka topic or an AMQP queue.
//!
//! Each request arrives as a [`Delivery`]. The caller calls
//! [`Delivery::finish`] once the request is done, that is sent or
//! dead-lettered, and only then does the consumer commit the Kafka offset
//! or acknowledge the AMQP message. A crash before that delivers the
//! request again, so delivery is at-least-once. Several deliveries may be
//! in flight at once and finish in any order.
//!
//! Dead-letter and status records go out through a
//! [`Publisher`](super::Publisher) with
//! [`publish_with_headers`](super::Publisher::publish_with_headers) and
//! [`Headers`].

mod amqp;
mod error;
mod headers;
mod kafka;

use std::fmt;

use crate::config;

pub use error::ConsumeError;
pub use headers::Headers;
pub(in crate::broker) use headers::Outgoing;

/// Topic or queue that a consumer reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A Kafka topic, read as a member of a consumer group.
    Kafka {
        /// Topic name.
        topic: String,
        /// Consumer group, which owns the committed offsets.
        group_id: String,
    },
    /// An AMQP queue.
    Amqp {
        /// Queue name. A missing queue is declared durable.
        queue: String,
        /// basic.qos prefetch count: how many messages the server sends
        /// before the first is acknowledged. At least 1.
        prefetch: u16,
    },
}

impl Source {
    fn kafka_origin(topic: &str) -> String {
        format!("topic \"{topic}\"")
    }

    fn amqp_origin(queue: &str) -> String {
        format!("queue \"{queue}\"")
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kafka { topic, .. } => f.write_str(&Self::kafka_origin(topic)),
            Self::Amqp { queue, .. } => f.write_str(&Self::amqp_origin(queue)),
        }
    }
}

/// State of a Kafka consumer's assignment from its group. Until it
/// does, it receives nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// Joined the group, and no assignment arrived yet.
    Pending,
    /// The group assigned this member its partitions. That may be none,
    /// when the group has more members than the topic has partitions.
    Assigned,
    /// The last partitions were taken away and no new assignment followed
    /// yet. `lost` is true when the group gave them away without this
    /// member, for example after its session timed out.
    Revoked {
        /// Whether the assignment was lost rather than revoked in a
        /// rebalance.
        lost: bool,
    },
}

/// Origin of a delivery within its topic or queue, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// A Kafka record.
    Kafka {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: i32,
        /// Offset of the record in its partition.
        offset: i64,
    },
    /// An AMQP message.
    Amqp {
        /// Queue name.
        queue: String,
        /// Delivery tag, unique within the consumer's channel.
        delivery_tag: u64,
    },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "topic \"{topic}\" partition {partition} offset {offset}"),
            Self::Amqp {
                queue,
                delivery_tag,
            } => write!(f, "queue \"{queue}\" delivery tag {delivery_tag}"),
        }
    }
}

/// One send request. Call [`Delivery::finish`] or [`Delivery::release`]
/// once for it. A delivery dropped without either stays unfinished: its
/// Kafka offset holds back the partition's commits, and its AMQP message
/// stays unacknowledged until the channel closes.
pub struct Delivery {
    /// The request document as it was published.
    pub payload: Vec<u8>,
    /// Kafka record key, as UTF-8 with invalid bytes replaced, or the AMQP
    /// `message_id` property.
    pub key: Option<String>,
    /// Kafka record headers in order, or the AMQP headers table in name
    /// order. A Kafka header without a value has an empty one here.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Topic, partition and offset, or queue and delivery tag.
    pub position: Position,
    /// Whether AMQP delivered the message before, to this or another
    /// consumer. Kafka does not mark repeats, so it is always false there.
    pub redelivered: bool,
    receipt: Receipt,
}

enum Receipt {
    Kafka(kafka::Receipt),
    Amqp(amqp::Receipt),
}

impl Delivery {
    /// Marks the request finished: sent, or dead-lettered. Kafka commits
    /// the partition's offset once every earlier offset of the partition
    /// is finished too, and waits for the broker's reply, so that a crash
    /// right after cannot send the request again. AMQP sends
    /// basic.ack. When a rebalance moved the partition away meanwhile, this
    /// returns `Ok`, logs a warning, and Kafka delivers the request again
    /// to the new owner.
    pub async fn finish(self) -> Result<(), ConsumeError> {
        let Self {
            receipt, position, ..
        } = self;
        match receipt {
            // The commit waits for the broker, off the async threads.
            Receipt::Kafka(receipt) => {
                let commit = move || kafka::finish(&receipt, &position);
                tokio::task::spawn_blocking(commit)
                    .await
                    .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))
            }
            Receipt::Amqp(receipt) => amqp::finish(&receipt, &position).await,
        }
    }

    /// Gives the request back unfinished, for shutdown or a local failure
    /// that a retry in this process cannot cure. AMQP sends basic.nack
    /// with requeue, so the server delivers it again at once. Kafka leaves
    /// the offset uncommitted, so it comes again after a restart or a
    /// rebalance, and commits of its partition stop before it until then.
    pub async fn release(self) -> Result<(), ConsumeError> {
        match &self.receipt {
            Receipt::Kafka(receipt) => kafka::release(receipt, &self.position),
            Receipt::Amqp(receipt) => amqp::release(receipt, &self.position).await,
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("position", &self.position)
            .field("key", &self.key)
            .field("payload_bytes", &self.payload.len())
            .field("headers", &self.headers.len())
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}

/// A connected consumer of one topic or queue.
pub struct Consumer {
    input: Input,
}

enum Input {
    Kafka(kafka::Input),
    Amqp(Box<amqp::Input>),
}

impl Consumer {
    /// Connects to `broker` and starts consuming `source`, so that
    /// unreachable servers and missing topics show up here. The Kafka
    /// consumer checks the topic's metadata and subscribes. The AMQP one
    /// opens its connection and channel, declares a missing queue, sets
    /// the prefetch window and starts basic.consume.
    pub async fn connect(
        broker_name: &str,
        broker: &config::Broker,
        source: Source,
    ) -> Result<Consumer, ConsumeError> {
        let input = match (broker, source) {
            (config::Broker::Kafka(kafka), Source::Kafka { topic, group_id }) => {
                Input::Kafka(kafka::Input::connect(broker_name, kafka, topic, group_id).await?)
            }
            (config::Broker::Amqp(settings), Source::Amqp { queue, prefetch }) => {
                let input = amqp::Input::connect(broker_name, settings, queue, prefetch).await?;
                Input::Amqp(Box::new(input))
            }
            (broker, source) => return Err(mismatch(broker_name, broker, &source)),
        };

        Ok(Consumer { input })
    }

    /// Follows the group assignment of a Kafka consumer; `None` for an AMQP
    /// one, which the server feeds as soon as it consumes.
    pub fn assignment(&self) -> Option<tokio::sync::watch::Receiver<Assignment>> {
        match &self.input {
            Input::Kafka(input) => Some(input.assignment()),
            Input::Amqp(_) => None,
        }
    }

    /// Waits for the next request. `None` means the consumer stopped for
    /// good, which happens only if its Kafka thread ended. After a
    /// transient Kafka error the caller just calls again, because
    /// librdkafka reconnects by itself. After [`ConsumeError::Lost`] every
    /// call returns that error again, and the caller connects anew.
    pub async fn next(&mut self) -> Option<Result<Delivery, ConsumeError>> {
        match &mut self.input {
            Input::Kafka(input) => input.next().await,
            Input::Amqp(input) => input.next().await,
        }
    }

    /// Stops consuming and disconnects. Finish or release the deliveries
    /// in flight first: Kafka commits what finished and leaves the group,
    /// and AMQP returns every unacknowledged message to the queue, marked
    /// redelivered. Finishing a Kafka delivery afterwards returns
    /// [`ConsumeError::Closed`].
    pub async fn close(self) {
        match self.input {
            Input::Kafka(input) => input.close().await,
            Input::Amqp(input) => input.close().await,
        }
    }
}

/// Builds the error for a broker whose kind does not fit the source.
fn mismatch(broker_name: &str, broker: &config::Broker, source: &Source) -> ConsumeError {
    let kind = match broker.kind() {
        config::BrokerKind::Kafka => "kafka",
        config::BrokerKind::Amqp => "amqp",
    };

    ConsumeError::Config {
        broker: broker_name.to_owned(),
        reason: format!("{source} cannot be consumed from a broker of kind {kind}"),
        fix: "use a topic with a kafka broker and a queue with an amqp broker".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_name_their_place() {
        let record = Position::Kafka {
            topic: "mail.outbound".into(),
            partition: 2,
            offset: 41,
        };
        let message = Position::Amqp {
            queue: "send".into(),
            delivery_tag: 7,
        };

        assert_eq!(
            record.to_string(),
            "topic \"mail.outbound\" partition 2 offset 41"
        );
        assert_eq!(message.to_string(), "queue \"send\" delivery tag 7");
    }

    #[tokio::test]
    async fn queue_on_kafka_broker_is_rejected() {
        let broker = config::Broker::Kafka(config::Kafka {
            bootstrap_servers: "127.0.0.1:9".into(),
            properties: Default::default(),
        });
        let source = Source::Amqp {
            queue: "send".into(),
            prefetch: 4,
        };

        let err = Consumer::connect("events", &broker, source)
            .await
            .err()
            .unwrap();

        assert_eq!(err.kind(), "config");
        assert!(!err.is_transient());
        assert!(
            err.to_string()
                .contains("queue \"send\" cannot be consumed from a broker of kind kafka"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn zero_prefetch_is_rejected() {
        let broker = config::Broker::Amqp(config::Amqp {
            url: config::Secret::new("amqp://guest:hunter2@127.0.0.1:9/%2f"),
            ca_file: None,
        });
        let source = Source::Amqp {
            queue: "send".into(),
            prefetch: 0,
        };

        let err = Consumer::connect("rabbit", &broker, source)
            .await
            .err()
            .unwrap();

        assert_eq!(err.kind(), "config");
        assert!(err.to_string().contains("prefetch 0"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
