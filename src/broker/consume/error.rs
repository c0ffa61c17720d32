//! Errors of the consumers. Every message names the broker and the topic
//! or queue, and the fix when one is known. None contains a password, a
//! token or the value of a secret client property.

use crate::broker::PublishError;

/// Failure to connect a consumer, to receive a request or to mark one
/// finished.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The broker settings or the source cannot work, so nothing was
    /// consumed.
    #[error("invalid settings for broker {broker}: {reason}; {fix}")]
    Config {
        /// Name of the `[brokers.NAME]` table.
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

    /// The topic or queue could not be subscribed to: it is missing, or
    /// the client may not read it.
    #[error(
        "failed to subscribe to {origin} on broker {broker}: {reason}{}",
        fix_suffix(fix)
    )]
    Subscribe {
        /// Name of the `[brokers.NAME]` table.
        broker: String,
        /// The topic or queue, as [`Source`](super::Source) displays it.
        origin: String,
        /// What failed.
        reason: String,
        /// Check or change that may fix it, when known.
        fix: Option<String>,
        /// Whether a later attempt may succeed.
        transient: bool,
    },

    /// The Kafka client reported an error while fetching. librdkafka
    /// reconnects by itself, so after a transient one the caller keeps
    /// calling `next`.
    #[error(
        "failed to receive from {origin} on broker {broker}: {reason}{}",
        fix_suffix(fix)
    )]
    Receive {
        /// Name of the `[brokers.NAME]` table.
        broker: String,
        /// The topic, as [`Source`](super::Source) displays it.
        origin: String,
        /// What failed.
        reason: String,
        /// Check or change that may fix it, when known.
        fix: Option<String>,
        /// Whether a later attempt may succeed.
        transient: bool,
    },

    /// The AMQP connection or channel is gone. Unacknowledged messages
    /// return to the queue, and the caller connects again to get them.
    #[error(
        "lost the connection to broker {broker} while consuming {origin}: {reason}; \
         connect again"
    )]
    Lost {
        /// Name of the `[brokers.NAME]` table.
        broker: String,
        /// The queue, as [`Source`](super::Source) displays it.
        origin: String,
        /// What happened.
        reason: String,
    },

    /// A Kafka offset commit could not be sent. A later commit of the
    /// partition covers this offset too.
    #[error("failed to commit {position} on broker {broker}: {reason}")]
    Commit {
        /// Name of the `[brokers.NAME]` table.
        broker: String,
        /// The delivery, as [`Position`](super::Position) displays it.
        position: String,
        /// What failed.
        reason: String,
        /// Whether a later attempt may succeed.
        transient: bool,
    },

    /// basic.ack or basic.nack failed, which happens when the channel is
    /// gone. The server then puts the message back in the queue.
    #[error(
        "failed to {action} {position} on broker {broker}: {reason}; the message returns \
         to the queue"
    )]
    Acknowledge {
        /// Name of the `[brokers.NAME]` table.
        broker: String,
        /// The delivery, as [`Position`](super::Position) displays it.
        position: String,
        /// `ack` or `nack`.
        action: &'static str,
        /// What failed.
        reason: String,
    },

    /// The consumer that received the delivery is closed, so its offset
    /// can no longer be committed. Kafka delivers the request again.
    #[error(
        "cannot finish {position} on broker {broker}: its consumer is closed, so the \
         request will be delivered again"
    )]
    Closed {
        /// Name of the `[brokers.NAME]` table.
        broker: String,
        /// The delivery, as [`Position`](super::Position) displays it.
        position: String,
    },
}

impl ConsumeError {
    /// Tells whether a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Config { .. } | Self::Closed { .. } => false,
            Self::Lost { .. } | Self::Acknowledge { .. } => true,
            Self::Connect { transient, .. }
            | Self::Subscribe { transient, .. }
            | Self::Receive { transient, .. }
            | Self::Commit { transient, .. } => *transient,
        }
    }

    /// Tells whether the consumer is unusable and the caller should drop it
    /// and connect again. Kafka consumers reconnect by themselves and never
    /// need it.
    pub fn needs_reconnect(&self) -> bool {
        matches!(self, Self::Lost { .. })
    }

    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config { .. } => "config",
            Self::Connect { .. } => "connect",
            Self::Subscribe { .. } => "subscribe",
            Self::Receive { .. } => "receive",
            Self::Lost { .. } => "lost",
            Self::Commit { .. } => "commit",
            Self::Acknowledge { .. } => "acknowledge",
            Self::Closed { .. } => "closed",
        }
    }

    /// Converts an error of the connection code shared with the
    /// publishers, which returns only `Config` and `Connect`. Any other
    /// variant keeps its text as a subscribe error of `broker` on `origin`.
    pub(super) fn from_setup(err: PublishError, broker: &str, origin: &str) -> Self {
        match err {
            PublishError::Config {
                broker,
                reason,
                fix,
            } => Self::Config {
                broker,
                reason,
                fix,
            },
            PublishError::Connect {
                broker,
                address,
                reason,
                fix,
                transient,
            } => Self::Connect {
                broker,
                address,
                reason,
                fix,
                transient,
            },
            other => Self::Subscribe {
                broker: broker.to_owned(),
                origin: origin.to_owned(),
                transient: other.is_transient(),
                reason: other.to_string(),
                fix: None,
            },
        }
    }
}

fn fix_suffix(fix: &Option<String>) -> String {
    match fix {
        Some(fix) => format!("; {fix}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_error_names_origin_and_fix() {
        let err = ConsumeError::Subscribe {
            broker: "events".into(),
            origin: "topic \"mail.outbound\"".into(),
            reason: "Broker: Unknown topic or partition".into(),
            fix: Some("create the topic".into()),
            transient: false,
        };

        assert_eq!(
            err.to_string(),
            "failed to subscribe to topic \"mail.outbound\" on broker events: \
             Broker: Unknown topic or partition; create the topic"
        );
        assert!(!err.is_transient());
        assert_eq!(err.kind(), "subscribe");
    }

    #[test]
    fn lost_is_transient_and_needs_reconnect() {
        let err = ConsumeError::Lost {
            broker: "rabbit".into(),
            origin: "queue \"mail\"".into(),
            reason: "connection reset".into(),
        };

        assert!(err.is_transient());
        assert!(err.needs_reconnect());
        assert!(err.to_string().ends_with("connect again"), "{err}");
    }

    #[test]
    fn closed_is_permanent_without_reconnect() {
        let err = ConsumeError::Closed {
            broker: "events".into(),
            position: "topic \"mail\" partition 0 offset 7".into(),
        };

        assert!(!err.is_transient());
        assert!(!err.needs_reconnect());
        assert_eq!(err.kind(), "closed");
    }

    #[test]
    fn setup_errors_keep_their_fields() {
        let connect = PublishError::Connect {
            broker: "rabbit".into(),
            address: "127.0.0.1:5672".into(),
            reason: "connection refused".into(),
            fix: Some("check that the server runs".into()),
            transient: true,
        };

        let err = ConsumeError::from_setup(connect, "rabbit", "queue \"mail\"");

        assert_eq!(err.kind(), "connect");
        assert!(err.is_transient());
        assert_eq!(
            err.to_string(),
            "failed to connect to broker rabbit at 127.0.0.1:5672: connection refused; \
             check that the server runs"
        );
    }
}
