//! Classification of Kafka errors into those a retry can cure and those
//! that need a change, with the change.

use rdkafka::types::RDKafkaErrorCode;

/// Handling of a failed record or metadata request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    /// Whether a later attempt may succeed.
    pub(crate) transient: bool,
    /// Change to make, when a retry cannot help.
    pub(crate) fix: Option<&'static str>,
}

/// Classifies a librdkafka or broker error code. Codes not listed here,
/// such as network failures, leader changes and throttling, are transient.
pub(crate) fn classify(code: RDKafkaErrorCode) -> Failure {
    let permanent = |fix| Failure {
        transient: false,
        fix: Some(fix),
    };
    match code {
        RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition => {
            permanent("create the topic, or let the cluster create topics automatically")
        }
        RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize => permanent(
            "raise message.max.bytes in the broker's properties and max.message.bytes of \
             the topic, or lower the pipeline's max_message_bytes and attachment_bytes",
        ),
        RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed => {
            permanent("grant the client's principal write access to the topic")
        }
        RDKafkaErrorCode::SaslAuthenticationFailed | RDKafkaErrorCode::Authentication => {
            permanent("check the sasl.* and security.protocol properties")
        }
        RDKafkaErrorCode::InvalidRecord => {
            permanent("check the topic's settings, such as its compaction policy")
        }
        _ => Failure {
            transient: true,
            fix: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_topic_is_permanent_with_fix() {
        let failure = classify(RDKafkaErrorCode::UnknownTopicOrPartition);

        assert!(!failure.transient);
        assert!(failure.fix.unwrap().contains("create the topic"));
    }

    #[test]
    fn network_errors_are_transient() {
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::NotLeaderForPartition,
        ] {
            assert!(classify(code).transient, "{code:?} is permanent");
        }
    }
}
