//! Consumer settings: the user's librdkafka properties on top of the
//! defaults (`client.id = mailbridge`, `auto.offset.reset = earliest`),
//! with the group and the manual commit held fixed: `group.id` from the
//! pipeline, `enable.auto.commit = false` and
//! `enable.auto.offset.store = false`. Automatic commits would mark a
//! request done before it was sent, so properties that turn them on are
//! rejected.

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

use crate::broker::ConsumeError;
use crate::broker::error::redact;
use crate::broker::kafka::settings::{CREATION_FIX, creation_reason, secret_values};
use crate::config::{Kafka, Property};

/// Properties that must stay off. `auto.commit.enable` is the legacy
/// topic-level name, which librdkafka 2.12 documents for its simple
/// consumer only, and is rejected too so that no spelling of automatic
/// commits slips through.
const MANUAL_COMMIT: [&str; 3] = [
    "enable.auto.commit",
    "auto.commit.enable",
    "enable.auto.offset.store",
];

/// Values librdkafka reads as false, compared without case.
const FALSE_VALUES: [&str; 3] = ["false", "f", "0"];

/// A checked consumer configuration.
pub(super) struct Settings {
    /// Holds secret values: never log it, and never print it with Debug.
    pub(super) config: ClientConfig,
    secrets: Vec<String>,
}

impl Settings {
    /// Builds the configuration of broker `broker`'s consumer in group
    /// `group_id`. A `group.id` among the properties is replaced.
    pub(super) fn new(broker: &str, kafka: &Kafka, group_id: &str) -> Result<Self, ConsumeError> {
        for (name, value) in &kafka.properties {
            check(broker, name, value)?;
        }

        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &kafka.bootstrap_servers)
            .set("client.id", "mailbridge")
            .set("auto.offset.reset", "earliest");
        for (name, value) in &kafka.properties {
            config.set(name, value.expose());
        }
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");

        Ok(Self {
            config,
            secrets: secret_values(kafka),
        })
    }

    /// Turns a consumer creation error into a configuration error without
    /// the value of any secret property.
    pub(super) fn creation_error(&self, broker: &str, err: &KafkaError) -> ConsumeError {
        ConsumeError::Config {
            broker: broker.to_owned(),
            reason: creation_reason(err, |text| self.redact(text)),
            fix: CREATION_FIX.to_owned(),
        }
    }

    /// Removes the values of secret properties from a librdkafka message.
    pub(super) fn redact(&self, text: &str) -> String {
        redact(text, self.secrets.iter().map(String::as_str))
    }
}

/// Rejects a property that would commit offsets before the request is
/// finished. Names are compared without case, so that no spelling slips
/// past.
fn check(broker: &str, name: &str, value: &Property) -> Result<(), ConsumeError> {
    let lower = name.to_ascii_lowercase();
    if !MANUAL_COMMIT.contains(&lower.as_str()) {
        return Ok(());
    }
    let normalized = value.expose().trim().to_ascii_lowercase();
    if FALSE_VALUES.contains(&normalized.as_str()) {
        return Ok(());
    }

    let quoted_value = match value {
        Property::Plain(plain) => format!(" = {plain:?}"),
        Property::Secret(_) => String::new(),
    };
    Err(ConsumeError::Config {
        broker: broker.to_owned(),
        reason: format!(
            "property {name}{quoted_value} would commit offsets before the request is \
             sent: the outbound consumer commits each offset itself once the request is \
             finished"
        ),
        fix: format!("remove {name} from the properties"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(properties: &[(&str, &str)]) -> Kafka {
        Kafka {
            bootstrap_servers: "127.0.0.1:9".into(),
            properties: properties
                .iter()
                .map(|(name, value)| (name.to_string(), Property::Plain(value.to_string())))
                .collect(),
        }
    }

    #[test]
    fn defaults_commit_manually_from_the_earliest_offset() {
        let settings = Settings::new("events", &kafka(&[]), "mailbridge-send").unwrap();
        let config = &settings.config;

        assert_eq!(config.get("group.id"), Some("mailbridge-send"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(config.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(config.get("client.id"), Some("mailbridge"));
        assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:9"));
    }

    #[test]
    fn user_properties_except_group_pass() {
        let properties = [
            ("session.timeout.ms", "6000"),
            ("auto.offset.reset", "latest"),
            ("group.id", "other"),
        ];
        let settings = Settings::new("events", &kafka(&properties), "mailbridge-send").unwrap();
        let config = &settings.config;

        assert_eq!(config.get("session.timeout.ms"), Some("6000"));
        assert_eq!(config.get("auto.offset.reset"), Some("latest"));
        assert_eq!(config.get("group.id"), Some("mailbridge-send"));
    }

    #[test]
    fn automatic_commit_is_rejected_by_any_name() {
        let cases = [
            ("enable.auto.commit", "true"),
            ("Enable.Auto.Commit", "1"),
            ("auto.commit.enable", "t"),
            ("enable.auto.offset.store", "TRUE"),
            ("enable.auto.commit", "yes"),
        ];
        for (name, value) in cases {
            let err = Settings::new("events", &kafka(&[(name, value)]), "group")
                .err()
                .unwrap_or_else(|| panic!("{name} = {value} was accepted"));

            assert_eq!(err.kind(), "config");
            assert!(!err.is_transient());
            assert!(err.to_string().contains(name), "{err}");
            assert!(err.to_string().contains("broker events"), "{err}");
        }
    }

    #[test]
    fn manual_commit_values_are_accepted() {
        let properties = [("enable.auto.commit", "False"), ("auto.commit.enable", "0")];

        assert!(Settings::new("events", &kafka(&properties), "group").is_ok());
    }
}
