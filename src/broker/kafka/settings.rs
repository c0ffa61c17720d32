//! Producer settings: the user's librdkafka properties on top of the
//! defaults (`client.id = mailbridge`, `message.timeout.ms = 30000`,
//! `reconnect.backoff.ms = 10`), with
//! the two properties that at-least-once delivery needs held fixed
//! (`enable.idempotence = true`, `acks = all`).

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

use crate::broker::PublishError;
use crate::broker::error::redact;
use crate::config::{Kafka, Property, delivery_problem};

/// Default of `message.timeout.ms`: how long librdkafka tries to deliver a
/// record before it reports a failure. librdkafka's own default, 300 s,
/// would keep a pipeline waiting five minutes while the cluster is down.
pub(crate) const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// First delay before librdkafka connects to a broker again, which also
/// spaces its connections to brokers it has not used yet by half of it.
const RECONNECT_BACKOFF: &str = "reconnect.backoff.ms";

/// Default of [`RECONNECT_BACKOFF`]. With librdkafka 2.12's 100 ms, a
/// producer waited about 50 ms after the first metadata response before
/// it connected to the partition leader, at every start. With 10 ms it
/// waits 11 ms, and later delays still double up to
/// `reconnect.backoff.max.ms`.
const DEFAULT_RECONNECT_BACKOFF_MS: &str = "10";

/// librdkafka's names of the message timeout.
const TIMEOUT_NAMES: [&str; 2] = ["message.timeout.ms", "delivery.timeout.ms"];

/// A checked producer configuration.
pub(crate) struct Settings {
    /// Holds secret values: never log it, and never print it with Debug.
    pub(crate) config: ClientConfig,
    /// How long librdkafka tries to deliver a record; `None` without limit.
    pub(crate) message_timeout: Option<Duration>,
    /// Largest payload a record may carry: `message.max.bytes` (librdkafka
    /// default 1000000) less room for the key and headers.
    pub(crate) max_payload_bytes: usize,
    secrets: Vec<String>,
}

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// Room left in a record for its key, headers and framing.
const RECORD_OVERHEAD: usize = 4096;

impl Settings {
    /// Builds the producer configuration of broker `broker`.
    pub(crate) fn new(broker: &str, kafka: &Kafka) -> Result<Self, PublishError> {
        for (name, value) in &kafka.properties {
            check(broker, name, value)?;
        }

        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &kafka.bootstrap_servers)
            .set("client.id", "mailbridge");
        if !kafka.properties.keys().any(|name| is_timeout(name)) {
            let millis = DEFAULT_MESSAGE_TIMEOUT.as_millis().to_string();
            config.set("message.timeout.ms", millis);
        }
        let is_backoff = |name: &String| name.eq_ignore_ascii_case(RECONNECT_BACKOFF);
        if !kafka.properties.keys().any(is_backoff) {
            config.set(RECONNECT_BACKOFF, DEFAULT_RECONNECT_BACKOFF_MS);
        }
        for (name, value) in &kafka.properties {
            config.set(name, value.expose());
        }
        config.set("enable.idempotence", "true").set("acks", "all");

        let message_max = config
            .get("message.max.bytes")
            .and_then(|value| value.trim().parse::<usize>().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES);
        Ok(Self {
            message_timeout: message_timeout(&config),
            max_payload_bytes: message_max.saturating_sub(RECORD_OVERHEAD),
            secrets: secret_values(kafka),
            config,
        })
    }

    /// Turns a producer creation error into a configuration error without
    /// the value of any secret property.
    pub(crate) fn creation_error(&self, broker: &str, err: &KafkaError) -> PublishError {
        PublishError::Config {
            broker: broker.to_owned(),
            reason: creation_reason(err, |text| self.redact(text)),
            fix: CREATION_FIX.to_owned(),
        }
    }

    /// Removes the values of secret properties from a librdkafka message.
    pub(crate) fn redact(&self, text: &str) -> String {
        redact(text, self.secrets.iter().map(String::as_str))
    }
}

/// Rejects a property that would weaken delivery or that the publisher
/// does not support. Configuration loading rejects them first, so this
/// only guards settings built some other way.
fn check(broker: &str, name: &str, value: &Property) -> Result<(), PublishError> {
    let Some(invalid) = delivery_problem(name, value.expose()) else {
        return Ok(());
    };
    let quoted_value = match value {
        Property::Plain(plain) => format!(" = {plain:?}"),
        Property::Secret(_) => String::new(),
    };

    Err(PublishError::Config {
        broker: broker.to_owned(),
        reason: format!("property {name}{quoted_value} {}", invalid.reason),
        fix: invalid.fix.unwrap_or_default(),
    })
}

/// Change that fixes a client creation error.
pub(crate) const CREATION_FIX: &str = "correct the property in the broker's properties table";

/// Describes a client creation error, which names the rejected property,
/// after `redact` removed the values of secret properties from it.
pub(crate) fn creation_reason(err: &KafkaError, redact: impl Fn(&str) -> String) -> String {
    match err {
        KafkaError::ClientConfig(_, description, name, _) => {
            format!("property {name}: {}", redact(description))
        }
        other => redact(&other.to_string()),
    }
}

/// librdkafka's names of the time a producer waits to fill a batch.
const LINGER_NAMES: [&str; 2] = ["linger.ms", "queue.buffering.max.ms"];

/// Returns `kafka` with `linger.ms = 0` unless its properties set the
/// linger. A publisher whose caller awaits what it handed over before it
/// hands over more gains nothing from the wait for a fuller batch, which
/// librdkafka 2.12 sets to 5 ms.
pub(crate) fn unbatched(kafka: &Kafka) -> Kafka {
    let mut kafka = kafka.clone();
    let is_linger = |name: &String| LINGER_NAMES.contains(&name.to_ascii_lowercase().as_str());
    if !kafka.properties.keys().any(is_linger) {
        let zero = Property::Plain("0".to_owned());
        kafka.properties.insert("linger.ms".to_owned(), zero);
    }
    kafka
}

fn is_timeout(name: &str) -> bool {
    TIMEOUT_NAMES.contains(&name.to_ascii_lowercase().as_str())
}

/// Reads the message timeout back; librdkafka treats 0 as no limit.
fn message_timeout(config: &ClientConfig) -> Option<Duration> {
    let millis = TIMEOUT_NAMES
        .iter()
        .find_map(|name| config.get(name))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_MESSAGE_TIMEOUT.as_millis() as u64);

    (millis > 0).then(|| Duration::from_millis(millis))
}

/// Returns the values of the secret properties, for redaction.
pub(crate) fn secret_values(kafka: &Kafka) -> Vec<String> {
    kafka
        .properties
        .values()
        .filter_map(|value| match value {
            Property::Secret(secret) => Some(secret.expose().to_owned()),
            Property::Plain(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn kafka(properties: &[(&str, Property)]) -> Kafka {
        Kafka {
            bootstrap_servers: "127.0.0.1:9".into(),
            properties: properties
                .iter()
                .map(|(name, value)| (name.to_string(), value.clone()))
                .collect(),
        }
    }

    fn plain(value: &str) -> Property {
        Property::Plain(value.into())
    }

    #[test]
    fn defaults_bound_the_timeout_and_require_acks() {
        let settings = Settings::new("events", &kafka(&[])).unwrap();

        assert_eq!(settings.config.get("enable.idempotence"), Some("true"));
        assert_eq!(settings.config.get("acks"), Some("all"));
        assert_eq!(settings.config.get("message.timeout.ms"), Some("30000"));
        assert_eq!(
            settings.config.get("bootstrap.servers"),
            Some("127.0.0.1:9")
        );
        assert_eq!(settings.message_timeout, Some(DEFAULT_MESSAGE_TIMEOUT));
        assert_eq!(settings.config.get("reconnect.backoff.ms"), Some("10"));
    }

    #[test]
    fn user_properties_win_over_defaults() {
        let properties = [
            ("message.timeout.ms", plain("5000")),
            ("client.id", plain("support-mailbox")),
            ("acks", plain("-1")),
            ("reconnect.backoff.ms", plain("250")),
        ];
        let settings = Settings::new("events", &kafka(&properties)).unwrap();

        assert_eq!(settings.config.get("client.id"), Some("support-mailbox"));
        assert_eq!(settings.config.get("reconnect.backoff.ms"), Some("250"));
        assert_eq!(settings.message_timeout, Some(Duration::from_millis(5000)));
        assert_eq!(settings.config.get("acks"), Some("all"));
    }

    #[test]
    fn unbatched_sets_linger_unless_given() {
        let defaulted = unbatched(&kafka(&[]));
        let configured = unbatched(&kafka(&[("queue.buffering.max.ms", plain("20"))]));

        assert_eq!(defaulted.properties.get("linger.ms"), Some(&plain("0")));
        assert_eq!(configured.properties.get("linger.ms"), None);
        assert_eq!(
            configured.properties.get("queue.buffering.max.ms"),
            Some(&plain("20"))
        );
    }

    #[test]
    fn delivery_timeout_alias_replaces_the_default() {
        let properties = [("delivery.timeout.ms", plain("0"))];
        let settings = Settings::new("events", &kafka(&properties)).unwrap();

        assert_eq!(settings.config.get("message.timeout.ms"), None);
        assert_eq!(settings.message_timeout, None);
    }

    #[test]
    fn weakening_properties_are_rejected_by_name() {
        let cases = [
            ("enable.idempotence", "false"),
            ("Enable.Idempotence", "0"),
            ("acks", "1"),
            ("acks", "0"),
            ("request.required.acks", "1"),
            ("transactional.id", "mailbridge"),
        ];
        for (name, value) in cases {
            let err = Settings::new("events", &kafka(&[(name, plain(value))]))
                .err()
                .unwrap_or_else(|| panic!("{name} = {value} was accepted"));

            assert_eq!(err.kind(), "config");
            assert!(!err.is_transient());
            assert!(err.to_string().contains(name), "{err}");
            assert!(err.to_string().contains("broker events"), "{err}");
        }
    }

    #[test]
    fn confirming_values_are_accepted() {
        let properties = [
            ("enable.idempotence", plain("True")),
            ("acks", plain("ALL")),
        ];

        assert!(Settings::new("events", &kafka(&properties)).is_ok());
    }

    #[test]
    fn creation_error_hides_secret_values() {
        let properties = [("sasl.password", Property::Secret(Secret::new("hunter2")))];
        let settings = Settings::new("events", &kafka(&properties)).unwrap();
        let err = KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value \"hunter2\" for configuration property".into(),
            "sasl.password".into(),
            "hunter2".into(),
        );

        let message = settings.creation_error("events", &err).to_string();

        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("sasl.password"), "{message}");
    }
}
