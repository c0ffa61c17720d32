//! librdkafka's log lines and client errors, sent to `tracing` with the
//! broker's name, because librdkafka reports connection trouble there and
//! not through the delivery reports.

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use tracing::{debug, error, info, warn};

/// Client context of every producer.
pub(crate) struct Context {
    broker: String,
}

impl Context {
    /// Creates the context of broker `broker`.
    pub(crate) fn new(broker: &str) -> Self {
        Self {
            broker: broker.to_owned(),
        }
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let broker = self.broker.as_str();
        if is_other_role_property(facility, message) {
            debug!(broker, facility, message, "librdkafka debug");
            return;
        }
        // librdkafka logs a refused connection at its error level and then
        // retries, so its errors are warnings here.
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                error!(broker, facility, message, "librdkafka failure")
            }
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                warn!(broker, facility, message, "librdkafka warning")
            }
            RDKafkaLogLevel::Notice => info!(broker, facility, message, "librdkafka notice"),
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                debug!(broker, facility, message, "librdkafka debug")
            }
        }
    }

    /// Logs client-wide errors, such as all brokers being down, at warn:
    /// librdkafka keeps reconnecting by itself, and the records they
    /// affect fail through their delivery reports.
    fn error(&self, error: KafkaError, reason: &str) {
        warn!(broker = %self.broker, error = %error, reason, "Kafka client error");
    }
}

/// Tells whether a log line reports that a property of the other client role
/// is ignored, such as `session.timeout.ms` in a producer. A broker's
/// properties go to its producers and its consumers alike, so such a line
/// reports no fault.
fn is_other_role_property(facility: &str, message: &str) -> bool {
    facility == "CONFWARN"
        && (message.contains("is a consumer property and will be ignored by this producer")
            || message.contains("is a producer property and will be ignored by this consumer"))
}

#[cfg(test)]
mod tests {
    use super::is_other_role_property;

    #[test]
    fn other_role_properties_are_no_warning() {
        let consumer_only = "[thrd:app]: Configuration property session.timeout.ms is a \
            consumer property and will be ignored by this producer instance";
        let producer_only = "[thrd:app]: Configuration property linger.ms is a producer \
            property and will be ignored by this consumer instance";
        let unknown = "[thrd:app]: Configuration property foo.bar is deprecated";

        assert!(is_other_role_property("CONFWARN", consumer_only));
        assert!(is_other_role_property("CONFWARN", producer_only));
        assert!(!is_other_role_property("CONFWARN", unknown));
        assert!(!is_other_role_property("BROKERFAIL", consumer_only));
    }
}
