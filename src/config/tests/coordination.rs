//! The coordination keys of inbound pipelines.

use super::*;

#[test]
fn coordination_defaults_on_kafka() {
    jail(|jail| {
        let toml = base_with(
            "topic = \"mail.inbound\"",
            "topic = \"mail.inbound\"\ncoordination = \"broker\"",
        );

        let config = load_toml(jail, &toml).expect("valid configuration");

        let inbound = &config.inbound["tickets"];
        assert!(inbound.coordinated());
        assert_eq!(
            inbound.coordination_group.as_deref(),
            Some("mailbridge-inbound-tickets")
        );
        assert_eq!(inbound.coordination_partitions.map(|p| p.get()), Some(60));
        Ok(())
    });
}

#[test]
fn coordination_needs_a_broker() {
    jail(|jail| {
        let toml = base_with(
            "broker = \"kafka\"\ntopic = \"mail.inbound\"",
            "coordination = \"broker\"",
        );

        let problems = problems(load_toml(jail, &toml));

        let coordination = problem(&problems, "inbound.tickets.coordination");
        assert!(
            coordination.reason.contains("needs a broker"),
            "{coordination:?}"
        );
        Ok(())
    });
}

#[test]
fn coordination_keys_need_coordination() {
    jail(|jail| {
        let toml = base_with(
            "topic = \"mail.inbound\"",
            "topic = \"mail.inbound\"\ncoordination_group = \"g\"\ncoordination_partitions = 4",
        );

        let problems = problems(load_toml(jail, &toml));

        for key in ["coordination_group", "coordination_partitions"] {
            let found = problem(&problems, &format!("inbound.tickets.{key}"));
            assert!(
                found.reason.contains("coordination = \"broker\""),
                "{found:?}"
            );
        }
        Ok(())
    });
}

#[test]
fn coordination_group_must_name_topics() {
    jail(|jail| {
        let toml = base_with(
            "topic = \"mail.inbound\"",
            "topic = \"mail.inbound\"\ncoordination = \"broker\"\ncoordination_group = \"a group\"",
        );

        let problems = problems(load_toml(jail, &toml));

        let group = problem(&problems, "inbound.tickets.coordination_group");
        assert!(group.reason.contains("' '"), "{group:?}");
        Ok(())
    });
}

#[test]
fn partitions_rejected_on_amqp_and_long_queue_names() {
    jail(|jail| {
        let mailbox = "m".repeat(240);
        let settings = format!(
            "broker = \"rabbit\"\nexchange = \"\"\nrouting_key = \"mail\"\n\
             mailboxes = [\"{mailbox}\"]\ncoordination = \"broker\"\n\
             coordination_partitions = 4"
        );
        let toml = base_with("broker = \"kafka\"\ntopic = \"mail.inbound\"", &settings);

        let problems = problems(load_toml(jail, &toml));

        let partitions = problem(&problems, "inbound.tickets.coordination_partitions");
        assert!(partitions.reason.contains("Kafka"), "{partitions:?}");
        let group = problem(&problems, "inbound.tickets.coordination");
        assert!(group.reason.contains("bytes long"), "{group:?}");
        Ok(())
    });
}

#[test]
fn shared_group_on_one_broker_rejected() {
    jail(|jail| {
        let second = "topic = \"mail.inbound\"\ncoordination = \"broker\"\n\
                      coordination_group = \"shared\"\n\n[inbound.orders]\naccount = \"support\"\n\
                      broker = \"kafka\"\ntopic = \"mail.orders\"\ncoordination = \"broker\"\n\
                      coordination_group = \"shared\"";
        let toml = base_with("topic = \"mail.inbound\"", second);

        let problems = problems(load_toml(jail, &toml));

        let group = problem(&problems, "inbound.tickets.coordination_group");
        assert!(group.reason.contains("`orders`"), "{group:?}");
        Ok(())
    });
}
