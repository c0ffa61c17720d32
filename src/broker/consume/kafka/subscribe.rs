//! The topic check and subscription at connect: a metadata request proves
//! that a broker replies and that the topic exists, so that a missing
//! topic is an error at start and not a silent wait.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer as _;
use rdkafka::types::RDKafkaErrorCode;

use super::partitions::Client;
use super::settings::Settings;
use crate::broker::ConsumeError;
use crate::broker::kafka::failure::classify;

/// Time allowed for the topic's metadata.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The topic to check and subscribe to, and the names for errors.
pub(super) struct Subscribe {
    pub(super) broker: String,
    pub(super) bootstrap: String,
    pub(super) topic: String,
    pub(super) origin: String,
}

impl Subscribe {
    /// Checks the topic and subscribes on a blocking thread, and returns
    /// the consumer, its settings and the partition count. On failure the
    /// consumer is dropped on that thread too, because its drop waits for
    /// librdkafka.
    pub(super) async fn run(
        self,
        client: Arc<Client>,
        settings: Settings,
    ) -> Result<(Arc<Client>, Settings, usize), ConsumeError> {
        let task_error = self.subscribe_error("the subscribe task failed");
        let blocking = tokio::task::spawn_blocking(move || {
            let subscribed = self.check_topic(&client, &settings).and_then(|count| {
                client
                    .subscribe(&[&self.topic])
                    .map(|()| count)
                    .map_err(|err| self.subscribe_error(&settings.redact(&err.to_string())))
            });
            subscribed.map(|count| (client, settings, count))
        });

        blocking.await.unwrap_or(Err(task_error))
    }

    /// Returns the topic's partition count.
    fn check_topic(&self, client: &Client, settings: &Settings) -> Result<usize, ConsumeError> {
        let metadata = client
            .fetch_metadata(Some(&self.topic), METADATA_TIMEOUT)
            .map_err(|err| ConsumeError::Connect {
                broker: self.broker.clone(),
                address: self.bootstrap.clone(),
                reason: settings.redact(&err.to_string()),
                fix: Some("check that bootstrap_servers names reachable brokers".into()),
                transient: true,
            })?;
        let topic = metadata.topics().iter().find(|t| t.name() == self.topic);

        match topic.map(|t| (t.error(), t.partitions().len())) {
            Some((None, count)) if count > 0 => Ok(count),
            Some((Some(code), _)) => Err(self.metadata_error(code.into())),
            _ => Err(self.subscribe_error("the broker returned no partitions for the topic")),
        }
    }

    fn metadata_error(&self, code: RDKafkaErrorCode) -> ConsumeError {
        let failure = classify(code);

        ConsumeError::Subscribe {
            broker: self.broker.clone(),
            origin: self.origin.clone(),
            reason: format!("metadata: {code}"),
            fix: failure.fix.map(|fix| read_fix(code, fix)),
            transient: failure.transient,
        }
    }

    fn subscribe_error(&self, reason: &str) -> ConsumeError {
        ConsumeError::Subscribe {
            broker: self.broker.clone(),
            origin: self.origin.clone(),
            reason: reason.to_owned(),
            fix: None,
            transient: true,
        }
    }
}

/// Adapts the publishers' fix to reading: a consumer needs read access.
pub(super) fn read_fix(code: RDKafkaErrorCode, fix: &str) -> String {
    match code {
        RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::GroupAuthorizationFailed => {
            "grant the client's principal read access to the topic and the consumer group"
                .to_owned()
        }
        _ => fix.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_fix_asks_for_read_access() {
        let fix = read_fix(
            RDKafkaErrorCode::TopicAuthorizationFailed,
            "grant write access",
        );

        assert!(fix.contains("read access"), "{fix}");
    }

    #[test]
    fn other_fixes_pass_through() {
        let fix = read_fix(
            RDKafkaErrorCode::UnknownTopicOrPartition,
            "create the topic",
        );

        assert_eq!(fix, "create the topic");
    }
}
