//! Secrets: `_file` keys and redaction.

use super::super::{Broker, REDACTED};
use super::{BASE, base_with, jail, load_toml, problem, problems};

const INLINE_CLIENT_SECRET: &str = "client_secret = \"client-secret-value\"\n";

#[test]
fn client_secret_file_from_toml() {
    jail(|jail| {
        jail.create_file("client-secret", "file-secret-value\n")?;
        let toml = base_with(
            INLINE_CLIENT_SECRET,
            "client_secret_file = \"client-secret\"\n",
        );

        let config = load_toml(jail, &toml).expect("valid");

        let secret = config.accounts["support"]
            .oauth2
            .client_secret
            .as_ref()
            .unwrap();
        assert_eq!(secret.expose(), "file-secret-value");
        Ok(())
    });
}

#[test]
fn client_secret_file_from_env() {
    jail(|jail| {
        jail.create_file("client-secret", "env-file-secret-value\r\n")?;
        jail.set_env(
            "MAILBRIDGE_ACCOUNTS__SUPPORT__OAUTH2__CLIENT_SECRET_FILE",
            "client-secret",
        );
        let toml = base_with(INLINE_CLIENT_SECRET, "");

        let config = load_toml(jail, &toml).expect("valid");

        let secret = config.accounts["support"]
            .oauth2
            .client_secret
            .as_ref()
            .unwrap();
        assert_eq!(secret.expose(), "env-file-secret-value");
        Ok(())
    });
}

#[test]
fn amqp_url_file_from_env() {
    jail(|jail| {
        jail.create_file("amqp-url", "amqp://u:file-password-value@127.0.0.1/%2f")?;
        jail.set_env("MAILBRIDGE_BROKERS__RABBIT__URL_FILE", "amqp-url");
        let toml = base_with(
            "url = \"amqp://guest:amqp-password-value@127.0.0.1:5672/%2f\"\n",
            "",
        );

        let config = load_toml(jail, &toml).expect("valid");

        let Broker::Amqp(amqp) = &config.brokers["rabbit"] else {
            panic!("amqp broker expected");
        };
        assert_eq!(
            amqp.url.expose(),
            "amqp://u:file-password-value@127.0.0.1/%2f"
        );
        Ok(())
    });
}

#[test]
fn kafka_property_file() {
    jail(|jail| {
        jail.create_file("kafka-password", "kafka-file-value\n")?;
        let toml = base_with(
            "\"sasl.password\" = \"kafka-password-value\"",
            "\"sasl.password_file\" = \"kafka-password\"",
        );

        let config = load_toml(jail, &toml).expect("valid");

        let Broker::Kafka(kafka) = &config.brokers["kafka"] else {
            panic!("kafka broker expected");
        };
        assert_eq!(
            kafka.properties["sasl.password"].expose(),
            "kafka-file-value"
        );
        assert!(!kafka.properties.contains_key("sasl.password_file"));
        Ok(())
    });
}

#[test]
fn secret_and_file_both_set() {
    jail(|jail| {
        jail.create_file("client-secret", "file-secret-value")?;
        let toml = base_with(
            INLINE_CLIENT_SECRET,
            "client_secret = \"x\"\nclient_secret_file = \"client-secret\"\n",
        );

        let problems = problems(load_toml(jail, &toml));

        let both = problem(&problems, "accounts.support.oauth2.client_secret_file");
        assert_eq!(
            both.reason,
            "both `client_secret` and `client_secret_file` are set"
        );
        Ok(())
    });
}

#[test]
fn unreadable_secret_file_named() {
    jail(|jail| {
        let toml = base_with(INLINE_CLIENT_SECRET, "client_secret_file = \"absent\"\n");

        let problems = problems(load_toml(jail, &toml));

        let unreadable = problem(&problems, "accounts.support.oauth2.client_secret_file");
        assert_eq!(unreadable.value.as_deref(), Some("\"absent\""));
        assert!(
            unreadable
                .reason
                .starts_with("failed to read secret file: ")
        );
        assert!(
            unreadable.reason.contains("os error"),
            "{}",
            unreadable.reason
        );
        Ok(())
    });
}

#[test]
fn empty_secret_file_rejected() {
    jail(|jail| {
        jail.create_file("client-secret", "\n")?;
        let toml = base_with(
            INLINE_CLIENT_SECRET,
            "client_secret_file = \"client-secret\"\n",
        );

        let problems = problems(load_toml(jail, &toml));

        let empty = problem(&problems, "accounts.support.oauth2.client_secret_file");
        assert_eq!(empty.reason, "secret file is empty");
        Ok(())
    });
}

#[test]
fn file_suffix_on_plain_key() {
    jail(|jail| {
        let toml = base_with(
            "host = \"127.0.0.1\"\nport = 10993",
            "host_file = \"h\"\nport = 10993",
        );

        let problems = problems(load_toml(jail, &toml));

        let plain = problem(&problems, "accounts.support.imap.host_file");
        assert_eq!(
            plain.reason,
            "`host` is not a secret, so `host_file` is not accepted"
        );
        assert_eq!(problems.len(), 2, "{problems:#?}");
        problem(&problems, "accounts.support.imap.host");
        Ok(())
    });
}

#[test]
fn file_suffix_on_plain_property() {
    jail(|jail| {
        let toml = base_with(
            "\"security.protocol\" = \"SASL_PLAINTEXT\"",
            "\"client.id_file\" = \"id\"",
        );

        let problems = problems(load_toml(jail, &toml));

        let plain = problem(&problems, r#"brokers.kafka.properties."client.id_file""#);
        assert_eq!(
            plain.env,
            "MAILBRIDGE_BROKERS__KAFKA__PROPERTIES__CLIENT__ID_FILE"
        );
        Ok(())
    });
}

#[test]
fn config_output_redacts_secrets() {
    jail(|jail| {
        jail.create_file("amqp-url", "amqp://u:file-password-value@127.0.0.1/%2f\n")?;
        let toml = base_with(
            "url = \"amqp://guest:amqp-password-value@127.0.0.1:5672/%2f\"\n",
            "url_file = \"amqp-url\"\n",
        );
        let config = load_toml(jail, &toml).expect("valid");

        let output = toml::to_string_pretty(&config).expect("serializable");
        let debug = format!("{config:?}");

        for secret in [
            "client-secret-value",
            "kafka-password-value",
            "file-password-value",
        ] {
            assert!(!output.contains(secret), "{secret} in output:\n{output}");
            assert!(!debug.contains(secret), "{secret} in Debug:\n{debug}");
        }
        assert!(!output.contains("guest"), "amqp user in output:\n{output}");
        assert!(
            !output.contains("url_file"),
            "url_file in output:\n{output}"
        );
        assert_eq!(output.matches(REDACTED).count(), 3, "{output}");
        Ok(())
    });
}

#[test]
fn config_output_parses_back() {
    jail(|jail| {
        let config = load_toml(jail, BASE).expect("valid");
        let output = toml::to_string_pretty(&config).expect("serializable");

        let parsed: toml::Table = toml::from_str(&output).expect("output is TOML");

        let value = |path: &str| {
            path.split('.')
                .try_fold(&parsed, |table, key| table.get(key)?.as_table())
                .cloned()
        };
        let imap = value("accounts.support.imap").expect("imap table");
        assert_eq!(imap["port"].as_integer(), Some(10993));
        assert_eq!(imap["connect_timeout"].as_str(), Some("30s"));
        let rabbit = value("brokers.rabbit").expect("rabbit table");
        assert_eq!(rabbit["kind"].as_str(), Some("amqp"));
        assert_eq!(rabbit["url"].as_str(), Some(REDACTED));
        let replies = value("outbound.replies").expect("replies table");
        assert_eq!(replies["max_in_flight"].as_integer(), Some(4));
        Ok(())
    });
}
