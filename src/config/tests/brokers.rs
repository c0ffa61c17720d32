//! Broker values, and pipelines that would consume their own output.

use super::super::Broker;
use super::{base_with, jail, load_toml, problem, problems};

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
                Some("write it as amqp://user:password@host:5672/vhost")
            );
            assert_eq!(problem.value, None);
            let line = problem.to_string();
            assert!(!line.contains("amqp-password-value"), "{line}");
            Ok(())
        });
    }
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
