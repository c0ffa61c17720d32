//! `[outbound.NAME]`: a pipeline that consumes send requests from a broker
//! and submits them over SMTP.

use std::num::NonZeroUsize;

use serde::Serialize;

use super::broker::BrokerKind;
use super::reader::Table;
use super::refs::Refs;
use super::server::Protocol;
use super::values::Invalid;

const DEFAULT_MAX_IN_FLIGHT: NonZeroUsize = NonZeroUsize::new(4).unwrap();
const DEFAULT_MAX_ATTEMPTS: NonZeroUsize = NonZeroUsize::new(10).unwrap();

/// An outbound pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outbound {
    /// Account that sends; it needs an `smtp` table. Required.
    pub account: String,
    /// Broker the requests come from. Required.
    pub broker: String,
    /// Kafka topic of the requests. Required with a Kafka broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// AMQP queue of the requests. Required with an AMQP broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Kafka consumer group. Default with a Kafka broker: `mailbridge-NAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Topic or queue that failed requests go to, with the reason.
    /// Required, so that no request is ever dropped.
    pub dead_letter: String,
    /// Topic or queue that receives one status event per request. Default:
    /// none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Requests of this pipeline being sent at the same time. The
    /// pipelines of one account share an SMTP connection pool and a limit
    /// of sends in flight, both the largest value among them. Default: 4.
    pub max_in_flight: NonZeroUsize,
    /// Send attempts of one request before a transient failure (4xx, a
    /// network or token problem) sends it to the dead-letter target.
    /// Default: 10.
    pub max_attempts: NonZeroUsize,
    /// Largest total size of a request's attachments, in bytes, after
    /// base64 decoding. Default: 26214400 (25 MiB).
    pub max_attachment_bytes: u64,
}

/// Topic or queue that an outbound pipeline consumes.
#[derive(Default)]
struct Source {
    topic: Option<String>,
    queue: Option<String>,
    group_id: Option<String>,
}

/// Reads one `[outbound.NAME]` table.
pub(crate) fn read(mut table: Table<'_>, name: &str, refs: &Refs) -> Option<Outbound> {
    let account = refs.account(&mut table, Protocol::Smtp);
    let broker = refs.broker(&mut table, true);
    let source = match broker.kind() {
        Some(BrokerKind::Kafka) => read_kafka_source(&mut table, name),
        Some(BrokerKind::Amqp) => read_amqp_source(&mut table),
        None => Source {
            topic: table.get("topic"),
            queue: table.get("queue"),
            group_id: table.get("group_id"),
        },
    };
    let consumed = source.topic.as_ref().or(source.queue.as_ref());
    table.required_for("dead_letter", "to keep requests that cannot be sent");
    let dead_letter = read_target(&mut table, "dead_letter", consumed);
    let status = read_target(&mut table, "status", consumed);
    let max_in_flight = table.get::<NonZeroUsize>("max_in_flight");
    let max_attempts = table.get::<NonZeroUsize>("max_attempts");
    let max_attachment_bytes = table.get::<u64>("max_attachment_bytes");
    table.finish();

    Some(Outbound {
        account: account?,
        broker: broker.name().flatten()?,
        topic: source.topic,
        queue: source.queue,
        group_id: source.group_id,
        dead_letter: dead_letter?,
        status,
        max_in_flight: max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
        max_attempts: max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
        max_attachment_bytes: max_attachment_bytes.unwrap_or(25 * 1024 * 1024),
    })
}

fn read_kafka_source(table: &mut Table<'_>, name: &str) -> Source {
    let invalid = Invalid::new("applies only to AMQP brokers");
    table.reject("queue", invalid.with_fix(Some("set topic instead".into())));

    Source {
        topic: table.require("topic"),
        queue: None,
        group_id: Some(
            table
                .get("group_id")
                .unwrap_or_else(|| format!("mailbridge-{name}")),
        ),
    }
}

fn read_amqp_source(table: &mut Table<'_>) -> Source {
    for (key, fix) in [("topic", "set queue instead"), ("group_id", "remove it")] {
        let invalid = Invalid::new("applies only to Kafka brokers");
        table.reject(key, invalid.with_fix(Some(fix.into())));
    }

    Source {
        queue: table.require("queue"),
        ..Source::default()
    }
}

/// Reads a dead-letter or status target, which must differ from the topic
/// or queue the requests come from.
fn read_target(table: &mut Table<'_>, key: &str, consumed: Option<&String>) -> Option<String> {
    table.get_checked(key, |target: &String| match Some(target) == consumed {
        // The pipeline would consume its own output.
        true => Err(Invalid::new("is the topic or queue the requests come from")),
        false => Ok(()),
    })
}
