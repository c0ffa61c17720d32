//! Broker values, and pipelines that would consume their own output.

use super::super::Broker;
use super::{BASE, base_with, jail, load_toml, problem, problems};

const BOOTSTRAP: &str = "bootstrap_servers = \"127.0.0.1:9092\"";
const AMQP_URL: &str = "url = \"amqp://guest:amqp-password-value@127.0.0.1:5672/%2f\"";

#[test]
fn bootstrap_servers_rejected() {
    let cases = [
        (
            "not a host list",
            "invalid entry \"not a host list\": no port",
        ),
        (",", "the list contains an empty entry"),
        (
            "h:99999",
            "invalid entry \"h:99999\": the port is not a number from 1 to 65535",
        ),
    ];
    for (list, reason) in cases {
        jail(|jail| {
            let toml = base_with(BOOTSTRAP, &format!("bootstrap_servers = {list:?}"));

            let problems = problems(load_toml(jail, &toml));

            assert_eq!(problems.len(), 1, "{list:?}: {problems:#?}");
            let servers = problem(&problems, "brokers.kafka.bootstrap_servers");
            assert_eq!(servers.reason, reason);
            assert_eq!(servers.value, Some(format!("{list:?}")));
            let fix = servers.fix.as_deref().unwrap_or_default();
            assert!(fix.contains("[::1]:9092"), "{fix}");
            Ok(())
        });
    }
}

#[test]
fn bootstrap_servers_trimmed() {
    jail(|jail| {
        let toml = base_with(
            BOOTSTRAP,
            "bootstrap_servers = \" kafka-1:9092 , [::1]:9093\"",
        );

        let config = load_toml(jail, &toml).expect("valid");

        let Broker::Kafka(kafka) = &config.brokers["kafka"] else {
            panic!("kafka broker expected");
        };
        assert_eq!(kafka.bootstrap_servers, "kafka-1:9092,[::1]:9093");
        Ok(())
    });
}

#[test]
fn amqp_url_without_host_rejected() {
    for url in ["amqp://", "amqp:", "amqps://guest:amqp-password-value@/%2f"] {
        jail(|jail| {
            let toml = base_with(AMQP_URL, &format!("url = {url:?}"));

            let problems = problems(load_toml(jail, &toml));

            assert_eq!(problems.len(), 1, "{url:?}: {problems:#?}");
            let problem = problem(&problems, "brokers.rabbit.url");
            assert_eq!(problem.reason, "URL has no host", "{url:?}");
            assert_eq!(
                problem.fix.as_deref(),
                Some(
                    "write it as amqp://user:password@host:5672/vhost, with the user name \
                     and password percent-encoded"
                )
            );
            assert_eq!(problem.value, None);
            let line = problem.to_string();
            assert!(!line.contains("amqp-password-value"), "{line}");
            Ok(())
        });
    }
}

#[test]
fn amqp_url_with_space_in_password_rejected() {
    jail(|jail| {
        jail.set_env(
            "MAILBRIDGE_BROKERS__RABBIT__URL",
            "amqp://guest:amqp password-value@127.0.0.1:5672/%2f",
        );

        let problems = problems(load_toml(jail, BASE));

        assert_eq!(problems.len(), 1, "{problems:#?}");
        let problem = problem(&problems, "brokers.rabbit.url");
        assert_eq!(problem.env, "MAILBRIDGE_BROKERS__RABBIT__URL");
        assert!(
            problem.reason.contains("percent-encoded"),
            "{}",
            problem.reason
        );
        assert_eq!(problem.value, None);
        let line = problem.to_string();
        assert!(!line.contains("password-value"), "{line}");
        assert!(line.contains("%20"), "{line}");
        Ok(())
    });
}

#[test]
fn inbound_topic_is_outbound_topic() {
    jail(|jail| {
        let toml = base_with(
            "broker = \"rabbit\"\nqueue = \"mail.outbound\"",
            "broker = \"kafka\"\ntopic = \"mail.inbound\"",
        );

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(problems.len(), 1, "{problems:#?}");
        let topic = problem(&problems, "inbound.tickets.topic");
        assert_eq!(
            topic.reason,
            "is the request topic of outbound pipeline `replies` on the same broker"
        );
        assert_eq!(
            topic.fix.as_deref(),
            Some(
                "publish to another topic, or the outbound pipeline reads received mail as \
                 send requests"
            )
        );
        assert_eq!(topic.value.as_deref(), Some("\"mail.inbound\""));
        Ok(())
    });
}

#[test]
fn same_topic_on_other_broker_accepted() {
    jail(|jail| {
        let toml = base_with(
            "broker = \"rabbit\"\nqueue = \"mail.outbound\"",
            "broker = \"kafka2\"\ntopic = \"mail.inbound\"",
        ) + "\n[brokers.kafka2]\nkind = \"kafka\"\nbootstrap_servers = \"127.0.0.1:9093\"\n";

        assert!(load_toml(jail, &toml).is_ok());
        Ok(())
    });
}

#[test]
fn inbound_routing_key_is_outbound_queue() {
    jail(|jail| {
        let toml = base_with(
            "broker = \"kafka\"\ntopic = \"mail.inbound\"",
            "broker = \"rabbit\"\nrouting_key = \"mail.outbound\"",
        );

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(problems.len(), 1, "{problems:#?}");
        let routing_key = problem(&problems, "inbound.tickets.routing_key");
        assert_eq!(
            routing_key.reason,
            "is the request queue of outbound pipeline `replies` on the same broker"
        );
        Ok(())
    });
}

#[test]
fn named_exchange_not_compared() {
    jail(|jail| {
        let toml = base_with(
            "broker = \"kafka\"\ntopic = \"mail.inbound\"",
            "broker = \"rabbit\"\nexchange = \"mail\"\nrouting_key = \"mail.outbound\"",
        );

        assert!(load_toml(jail, &toml).is_ok());
        Ok(())
    });
}

#[test]
fn weakening_kafka_properties_rejected() {
    let cases = [
        (
            "\"acks\" = \"1\"",
            "brokers.kafka.properties.acks",
            "MAILBRIDGE_BROKERS__KAFKA__PROPERTIES__ACKS",
            "\"1\"",
        ),
        (
            "\"enable.idempotence\" = false",
            "brokers.kafka.properties.\"enable.idempotence\"",
            "MAILBRIDGE_BROKERS__KAFKA__PROPERTIES__ENABLE__IDEMPOTENCE",
            "false",
        ),
        (
            "\"Request.Required.Acks\" = 0",
            "brokers.kafka.properties.\"Request.Required.Acks\"",
            "MAILBRIDGE_BROKERS__KAFKA__PROPERTIES__REQUEST__REQUIRED__ACKS",
            "0",
        ),
        (
            "\"transactional.id\" = \"mailbridge\"",
            "brokers.kafka.properties.\"transactional.id\"",
            "MAILBRIDGE_BROKERS__KAFKA__PROPERTIES__TRANSACTIONAL__ID",
            "\"mailbridge\"",
        ),
    ];
    for (line, key, env, value) in cases {
        jail(|jail| {
            let toml = base_with(
                "\"security.protocol\" = \"SASL_PLAINTEXT\"",
                &format!("\"security.protocol\" = \"SASL_PLAINTEXT\"\n{line}"),
            );

            let problems = problems(load_toml(jail, &toml));

            assert_eq!(problems.len(), 1, "{line}: {problems:#?}");
            let property = problem(&problems, key);
            assert_eq!(property.env, env);
            assert_eq!(property.value.as_deref(), Some(value), "{line}");
            let name = key.rsplit_once("properties.").map(|(_, name)| name);
            let name = name.unwrap_or_default().trim_matches('"');
            let fix = format!("remove {name} from the properties");
            assert_eq!(property.fix.as_deref(), Some(fix.as_str()), "{line}");
            Ok(())
        });
    }
}

#[test]
fn weakening_property_from_env_rejected() {
    jail(|jail| {
        jail.set_env("MAILBRIDGE_BROKERS__KAFKA__PROPERTIES__ACKS", "1");
        let toml = base_with("port = 10993", "port = \"abc\"");

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(problems.len(), 2, "{problems:#?}");
        let acks = problem(&problems, "brokers.kafka.properties.acks");
        assert!(
            acks.reason.contains("mailbridge always sets acks = all"),
            "{}",
            acks.reason
        );
        problem(&problems, "accounts.support.imap.port");
        Ok(())
    });
}

#[test]
fn confirming_kafka_properties_accepted() {
    jail(|jail| {
        let toml = base_with(
            "\"security.protocol\" = \"SASL_PLAINTEXT\"",
            "\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
             \"enable.idempotence\" = true\n\"acks\" = \"-1\"\n\"request.required.acks\" = \"ALL\"",
        );

        let config = load_toml(jail, &toml).expect("valid");

        let Broker::Kafka(kafka) = &config.brokers["kafka"] else {
            panic!("kafka broker expected");
        };
        assert_eq!(kafka.properties["acks"].expose(), "-1");
        Ok(())
    });
}
