//! Errors of the publishers. Every message names the broker and the
//! destination, and the fix when one is known. None contains a password,
//! a token or the value of a secret client property.

use std::time::Duration;

/// Failure to connect a publisher or to publish a batch.
///
/// After a transient error the caller retries the whole batch, which may
/// repeat records the broker already stored: delivery is at-least-once.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker settings or the target cannot work, so nothing was sent.
    #[error("invalid settings for broker {broker}: {reason}; {fix}")]
    Config {
        /// Name of the `[brokers.NAME]` table, or of the sink.
        broker: String,
        /// Description of the problem.
        reason: String,
        /// Change that fixes it.
        fix: String,
    },

    /// The broker could not be reached, or it refused the connection.
    #[error(
        "failed to connect to broker {broker} at {address}: {reason}{}",
        fix_suffix(fix)
    )]
    Connect {
        /// Name of the `[brokers.NAME]` table.
        broker: String,
        /// `host:port` of the server, or the bootstrap servers of Kafka.
        address: String,
        /// What failed.
        reason: String,
        /// Check or change that may fix it, when known.
        fix: Option<String>,
        /// Whether a later attempt may succeed.
        transient: bool,
    },

    /// Declaring the AMQP queue or checking the exchange failed.
    #[error(
        "failed to declare {destination} on broker {broker}: {reason}{}",
        fix_suffix(fix)
    )]
    Declare {
        /// Name of the `[brokers.NAME]` table.
        broker: String,
        /// The queue or exchange, as [`Target`](super::Target) displays it.
        destination: String,
        /// What failed.
        reason: String,
        /// Check or change that may fix it, when known.
        fix: Option<String>,
        /// Whether a later attempt may succeed.
        transient: bool,
    },

    /// The broker rejected a record or failed to store it.
    #[error(
        "failed to publish to {destination} on broker {broker}: {reason}{}",
        fix_suffix(fix)
    )]
    Publish {
        /// Name of the `[brokers.NAME]` table.
        broker: String,
        /// The topic, or the exchange and routing key.
        destination: String,
        /// What failed.
        reason: String,
        /// Check or change that may fix it, when known.
        fix: Option<String>,
        /// Whether a later attempt may succeed.
        transient: bool,
    },

    /// An AMQP message matched no queue, and the broker returned it with
    /// basic.return because it was published as mandatory.
    #[error(
        "broker {broker} returned a message for exchange \"{exchange}\" with routing key \
         \"{routing_key}\" as unroutable ({reply}); {fix}"
    )]
    Unroutable {
        /// Name of the `[brokers.NAME]` table.
        broker: String,
        /// Exchange the message was published to; empty for the default one.
        exchange: String,
        /// Routing key the message was published with.
        routing_key: String,
        /// Reply code and text of basic.return, such as `312 NO_ROUTE`.
        reply: String,
        /// Queue to declare or binding to add.
        fix: String,
    },

    /// The AMQP broker sent basic.nack for a message, which RabbitMQ does
    /// when it could not take responsibility for it.
    #[error(
        "broker {broker} rejected a message for {destination} with basic.nack; retry the batch"
    )]
    Nack {
        /// Name of the `[brokers.NAME]` table.
        broker: String,
        /// The exchange and routing key.
        destination: String,
    },

    /// The broker did not confirm the batch in time.
    #[error(
        "timed out after {} ms waiting for broker {broker} to confirm records for \
         {destination}; check that the broker is reachable and accepts writes",
        timeout.as_millis()
    )]
    Timeout {
        /// Name of the `[brokers.NAME]` table.
        broker: String,
        /// The topic, or the exchange and routing key.
        destination: String,
        /// How long the publisher waited.
        timeout: Duration,
    },

    /// Writing JSON Lines to standard output failed.
    #[error("failed to write to standard output: {reason}")]
    Write {
        /// The I/O error.
        reason: String,
        /// Whether a later attempt may succeed; a closed pipe never recovers.
        transient: bool,
    },
}

impl PublishError {
    /// Tells whether retrying the same batch later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Config { .. } | Self::Unroutable { .. } => false,
            Self::Nack { .. } | Self::Timeout { .. } => true,
            Self::Connect { transient, .. }
            | Self::Declare { transient, .. }
            | Self::Publish { transient, .. }
            | Self::Write { transient, .. } => *transient,
        }
    }

    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config { .. } => "config",
            Self::Connect { .. } => "connect",
            Self::Declare { .. } => "declare",
            Self::Publish { .. } => "publish",
            Self::Unroutable { .. } => "unroutable",
            Self::Nack { .. } => "nack",
            Self::Timeout { .. } => "timeout",
            Self::Write { .. } => "write",
        }
    }
}

fn fix_suffix(fix: &Option<String>) -> String {
    match fix {
        Some(fix) => format!("; {fix}"),
        None => String::new(),
    }
}

/// Replaces every occurrence of each secret in `text` with a marker, for
/// client library messages that may quote a configured value.
pub(crate) fn redact<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut text = text.to_owned();
    for secret in secrets.into_iter().filter(|secret| !secret.is_empty()) {
        text = text.replace(secret, crate::config::REDACTED);
    }

    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_error_shows_fix() {
        let err = PublishError::Connect {
            broker: "rabbit".into(),
            address: "127.0.0.1:5672".into(),
            reason: "connection refused".into(),
            fix: Some("check that the server runs".into()),
            transient: true,
        };

        assert_eq!(
            err.to_string(),
            "failed to connect to broker rabbit at 127.0.0.1:5672: connection refused; \
             check that the server runs"
        );
        assert!(err.is_transient());
        assert_eq!(err.kind(), "connect");
    }

    #[test]
    fn publish_error_without_fix_has_no_trailing_separator() {
        let err = PublishError::Publish {
            broker: "kafka".into(),
            destination: "topic \"mail\"".into(),
            reason: "broken".into(),
            fix: None,
            transient: false,
        };

        assert_eq!(
            err.to_string(),
            "failed to publish to topic \"mail\" on broker kafka: broken"
        );
        assert!(!err.is_transient());
    }

    #[test]
    fn unroutable_is_permanent() {
        let err = PublishError::Unroutable {
            broker: "rabbit".into(),
            exchange: "mail".into(),
            routing_key: "support".into(),
            reply: "312 NO_ROUTE".into(),
            fix: "bind a queue".into(),
        };

        assert!(!err.is_transient());
        assert_eq!(err.kind(), "unroutable");
        assert!(err.to_string().contains("exchange \"mail\""));
        assert!(err.to_string().contains("routing key \"support\""));
    }

    #[test]
    fn timeout_and_nack_are_transient() {
        let timeout = PublishError::Timeout {
            broker: "kafka".into(),
            destination: "topic \"mail\"".into(),
            timeout: Duration::from_secs(30),
        };
        let nack = PublishError::Nack {
            broker: "rabbit".into(),
            destination: "queue \"mail\"".into(),
        };

        assert!(timeout.is_transient());
        assert!(timeout.to_string().contains("30000 ms"));
        assert!(nack.is_transient());
    }

    #[test]
    fn redact_replaces_every_secret() {
        let text = redact("value \"hunter2\" for hunter2", ["hunter2", ""]);

        assert_eq!(text, "value \"[redacted]\" for [redacted]");
    }
}
