//! Client context of every Kafka consumer: librdkafka's log lines and
//! errors go to `tracing` as the publishers' do, and the rebalance and
//! commit callbacks keep the partition state and the commits in step with
//! the group. librdkafka runs these callbacks inside `poll`, so on the
//! consumer thread.

use std::sync::Arc;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{ClientContext, TopicPartitionList};

use super::partitions::{Partitions, describe};
use crate::broker::kafka::context::Context as LogContext;

/// Context of one consumer.
pub(super) struct Context {
    broker: String,
    log: LogContext,
    partitions: Arc<Partitions>,
}

impl Context {
    /// Creates the context of broker `broker`'s consumer.
    pub(super) fn new(broker: &str, partitions: Arc<Partitions>) -> Self {
        Self {
            broker: broker.to_owned(),
            log: LogContext::new(broker),
            partitions,
        }
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ConsumerContext for Context {
    /// Commits what finished in the revoked partitions while the consumer
    /// still owns them.
    fn pre_rebalance(&self, client: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => self.partitions.revoke(client, list),
            Rebalance::Assign(_) => {}
            Rebalance::Error(err) => {
                tracing::warn!(broker = %self.broker, error = %err, "Kafka rebalance failed")
            }
        }
    }

    fn post_rebalance(&self, client: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(list) = rebalance else {
            return;
        };
        self.partitions.assign(list);

        // Fetching paused for all partitions includes the new ones.
        if self.partitions.is_paused()
            && let Err(err) = client.pause(list)
        {
            let broker = &self.broker;
            tracing::warn!(broker, error = %err, "Failed to pause newly assigned partitions");
        }
    }

    /// Logs failed commits. The partition's next commit, or the one at
    /// revocation, carries the same or a later position.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let broker = &self.broker;
        match result {
            Ok(()) => tracing::debug!(broker, offsets = describe(offsets), "Offsets committed"),
            Err(err) => tracing::warn!(
                broker,
                offsets = describe(offsets),
                error = %err,
                "Failed to commit offsets"
            ),
        }
    }
}
