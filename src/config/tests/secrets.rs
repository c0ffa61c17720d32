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
            "both `client_secret` and `client_secret_file` are set in c.toml"
        );
        assert_eq!(both.fix.as_deref(), Some("remove one of them"));
        assert_eq!(problems.len(), 1, "{problems:#?}");
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
        assert_eq!(
            empty.reason,
            "secret file is empty or contains only whitespace"
        );
        Ok(())
    });
}

#[test]
fn blank_secret_file_rejected() {
    jail(|jail| {
        jail.create_file("client-secret", " \t \r\n\n")?;
        let toml = base_with(
            INLINE_CLIENT_SECRET,
            "client_secret_file = \"client-secret\"\n",
        );

        let problems = problems(load_toml(jail, &toml));

        let blank = problem(&problems, "accounts.support.oauth2.client_secret_file");
        assert_eq!(
            blank.reason,
            "secret file is empty or contains only whitespace"
        );
        assert_eq!(problems.len(), 1, "{problems:#?}");
        Ok(())
    });
}

#[test]
fn blank_inline_secret_rejected() {
    jail(|jail| {
        let toml = base_with(INLINE_CLIENT_SECRET, "client_secret = \"  \"\n");

        let problems = problems(load_toml(jail, &toml));

        let blank = problem(&problems, "accounts.support.oauth2.client_secret");
        assert_eq!(blank.reason, "secret is empty or contains only whitespace");
        assert_eq!(blank.value, None);
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

#[test]
fn env_secret_file_wins_over_file_secret() {
    jail(|jail| {
        jail.create_file("client-secret", "env-file-secret-value\n")?;
        jail.set_env(
            "MAILBRIDGE_ACCOUNTS__SUPPORT__OAUTH2__CLIENT_SECRET_FILE",
            "client-secret",
        );

        let config = load_toml(jail, BASE).expect("valid");

        let secret = config.accounts["support"].oauth2.client_secret.as_ref();
        assert_eq!(secret.map(|s| s.expose()), Some("env-file-secret-value"));
        Ok(())
    });
}

#[test]
fn env_secret_wins_over_file_secret_file() {
    jail(|jail| {
        let toml = base_with(INLINE_CLIENT_SECRET, "client_secret_file = \"absent\"\n");
        jail.set_env(
            "MAILBRIDGE_ACCOUNTS__SUPPORT__OAUTH2__CLIENT_SECRET",
            "env-secret-value",
        );

        let config = load_toml(jail, &toml).expect("valid");

        let secret = config.accounts["support"].oauth2.client_secret.as_ref();
        assert_eq!(secret.map(|s| s.expose()), Some("env-secret-value"));
        Ok(())
    });
}

#[test]
fn secret_and_file_both_in_env() {
    jail(|jail| {
        jail.create_file("client-secret", "file-secret-value")?;
        jail.set_env(
            "MAILBRIDGE_ACCOUNTS__SUPPORT__OAUTH2__CLIENT_SECRET",
            "env-secret-value",
        );
        jail.set_env(
            "MAILBRIDGE_ACCOUNTS__SUPPORT__OAUTH2__CLIENT_SECRET_FILE",
            "client-secret",
        );

        let problems = problems(load_toml(jail, BASE));

        let both = problem(&problems, "accounts.support.oauth2.client_secret_file");
        assert_eq!(
            both.reason,
            "both `client_secret` and `client_secret_file` are set by the environment \
             variables MAILBRIDGE_ACCOUNTS__SUPPORT__OAUTH2__CLIENT_SECRET and \
             MAILBRIDGE_ACCOUNTS__SUPPORT__OAUTH2__CLIENT_SECRET_FILE"
        );
        assert!(!both.to_string().contains("env-secret-value"), "{both}");
        Ok(())
    });
}

#[test]
fn env_url_file_checked_not_file_url() {
    jail(|jail| {
        jail.create_file("amqp-url", "http://u:file-password-value@127.0.0.1/\n")?;
        jail.set_env("MAILBRIDGE_BROKERS__RABBIT__URL_FILE", "amqp-url");

        let problems = problems(load_toml(jail, BASE));

        assert_eq!(problems.len(), 1, "{problems:#?}");
        let url = problem(&problems, "brokers.rabbit.url_file");
        assert_eq!(url.reason, "expected an amqp:// or amqps:// URL");
        assert_eq!(url.value.as_deref(), Some("\"amqp-url\""));
        assert!(!url.to_string().contains("file-password-value"), "{url}");
        Ok(())
    });
}

#[test]
fn env_property_file_wins_over_file_property() {
    jail(|jail| {
        jail.create_file("kafka-password", "kafka-file-value\n")?;
        jail.set_env(
            "MAILBRIDGE_BROKERS__KAFKA__PROPERTIES__SASL__PASSWORD_FILE",
            "kafka-password",
        );

        let config = load_toml(jail, BASE).expect("valid");

        let Broker::Kafka(kafka) = &config.brokers["kafka"] else {
            panic!("kafka broker expected");
        };
        let password = &kafka.properties["sasl.password"];
        assert_eq!(password.expose(), "kafka-file-value");
        assert!(!kafka.properties.contains_key("sasl.password_file"));
        Ok(())
    });
}

#[test]
fn env_property_wins_over_file_property_file() {
    jail(|jail| {
        let toml = base_with(
            "\"sasl.password\" = \"kafka-password-value\"",
            "\"sasl.password_file\" = \"absent\"",
        );
        jail.set_env(
            "MAILBRIDGE_BROKERS__KAFKA__PROPERTIES__SASL__PASSWORD",
            "kafka-env-value",
        );

        let config = load_toml(jail, &toml).expect("valid");

        let Broker::Kafka(kafka) = &config.brokers["kafka"] else {
            panic!("kafka broker expected");
        };
        assert_eq!(
            kafka.properties["sasl.password"].expose(),
            "kafka-env-value"
        );
        Ok(())
    });
}

#[test]
fn property_and_file_both_in_file() {
    jail(|jail| {
        jail.create_file("kafka-password", "kafka-file-value\n")?;
        let toml = base_with(
            "\"sasl.password\" = \"kafka-password-value\"",
            "\"sasl.password\" = \"kafka-password-value\"\n\
             \"sasl.password_file\" = \"kafka-password\"",
        );

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(problems.len(), 1, "{problems:#?}");
        let both = problem(
            &problems,
            r#"brokers.kafka.properties."sasl.password_file""#,
        );
        assert_eq!(
            both.reason,
            "both `sasl.password` and `sasl.password_file` are set in c.toml"
        );
        Ok(())
    });
}

#[test]
fn client_credentials_secret_missing_fix() {
    jail(|jail| {
        let toml = base_with(INLINE_CLIENT_SECRET, "").replacen(
            "provider = \"generic\"",
            "provider = \"generic\"\ngrant = \"client_credentials\"",
            1,
        );

        let problems = problems(load_toml(jail, &toml));

        let missing = problem(&problems, "accounts.support.oauth2.client_secret");
        assert_eq!(
            missing.reason,
            "missing key, required by grant client_credentials"
        );
        assert_eq!(
            missing.fix.as_deref(),
            Some(
                "set `client_secret` or `client_secret_file` in the configuration file, \
                 or the environment variable MAILBRIDGE_ACCOUNTS__SUPPORT__OAUTH2__CLIENT_SECRET \
                 or MAILBRIDGE_ACCOUNTS__SUPPORT__OAUTH2__CLIENT_SECRET_FILE"
            )
        );
        Ok(())
    });
}

#[test]
fn amqp_url_missing_fix() {
    jail(|jail| {
        let toml = base_with(
            "url = \"amqp://guest:amqp-password-value@127.0.0.1:5672/%2f\"\n",
            "",
        );

        let problems = problems(load_toml(jail, &toml));

        let missing = problem(&problems, "brokers.rabbit.url");
        let fix = missing.fix.as_deref().unwrap_or_default();
        assert!(
            fix.contains("MAILBRIDGE_BROKERS__RABBIT__URL_FILE"),
            "{fix}"
        );
        Ok(())
    });
}

/// Secrets as `mailbridge config` prints them, in the three places a
/// secret can be set.
#[test]
fn redacted_marker_rejected() {
    jail(|jail| {
        jail.create_file("amqp-url", "[redacted]\n")?;
        let toml = base_with(INLINE_CLIENT_SECRET, "client_secret = \"[redacted]\"\n")
            .replacen("\"kafka-password-value\"", "\"[redacted]\"", 1)
            .replacen(
                "url = \"amqp://guest:amqp-password-value@127.0.0.1:5672/%2f\"",
                "url_file = \"amqp-url\"",
                1,
            );

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(problems.len(), 3, "{problems:#?}");
        let client_secret = problem(&problems, "accounts.support.oauth2.client_secret");
        assert_eq!(
            client_secret.reason,
            "secret is `[redacted]`, the marker that `mailbridge config` prints in place of \
             a secret"
        );
        assert_eq!(
            client_secret.fix.as_deref(),
            Some("set the real value, or set `client_secret_file` to a file that contains it")
        );
        let password = problem(&problems, r#"brokers.kafka.properties."sasl.password""#);
        assert_eq!(
            password.fix.as_deref(),
            Some("set the real value, or set `sasl.password_file` to a file that contains it")
        );
        let url = problem(&problems, "brokers.rabbit.url_file");
        assert!(
            url.reason.starts_with("secret file contains `[redacted]`"),
            "{}",
            url.reason
        );
        Ok(())
    });
}

#[test]
fn redacted_marker_from_env_rejected() {
    jail(|jail| {
        jail.set_env(
            "MAILBRIDGE_ACCOUNTS__SUPPORT__OAUTH2__CLIENT_SECRET",
            REDACTED,
        );

        let problems = problems(load_toml(jail, BASE));

        let client_secret = problem(&problems, "accounts.support.oauth2.client_secret");
        assert!(
            client_secret.reason.starts_with("secret is `[redacted]`"),
            "{}",
            client_secret.reason
        );
        Ok(())
    });
}

#[test]
fn config_output_fed_back_rejected() {
    jail(|jail| {
        let config = load_toml(jail, BASE).expect("valid");
        let output = toml::to_string_pretty(&config).expect("serializable");

        let problems = problems(load_toml(jail, &output));

        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "accounts.support.oauth2.client_secret",
                r#"brokers.kafka.properties."sasl.password""#,
                "brokers.rabbit.url",
            ]
        );
        for problem in &problems {
            assert!(problem.reason.contains("marker"), "{problem}");
        }
        Ok(())
    });
}

/// Property names that librdkafka or a typo can give a secret, each with a
/// value that must not appear in the output.
const SECRET_PROPERTIES: &[&str] = &[
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
    "SASL.PASSWORD",
    "sasl.pasword",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.certificate.pem",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "Ssl_Key",
];

#[test]
fn kafka_secret_properties_redacted() {
    jail(|jail| {
        let lines: Vec<String> = SECRET_PROPERTIES
            .iter()
            .enumerate()
            .map(|(i, name)| format!("\"{name}\" = \"property-value-{i}\""))
            .collect();
        let toml = base_with(
            "\"security.protocol\" = \"SASL_PLAINTEXT\"",
            &lines.join("\n"),
        );
        let config = load_toml(jail, &toml).expect("valid");

        let output = toml::to_string_pretty(&config).expect("serializable");

        for (i, name) in SECRET_PROPERTIES.iter().enumerate() {
            let value = format!("property-value-{i}");
            assert!(!output.contains(&value), "{name} in output:\n{output}");
        }
        let Broker::Kafka(kafka) = &config.brokers["kafka"] else {
            panic!("kafka broker expected");
        };
        assert_eq!(
            kafka.properties["sasl.pasword"].expose(),
            "property-value-3"
        );
        Ok(())
    });
}

#[test]
fn kafka_location_property_stays_plain() {
    jail(|jail| {
        let toml = base_with(
            "\"security.protocol\" = \"SASL_PLAINTEXT\"",
            "\"ssl.key.location\" = \"/run/secrets/client.key\"",
        );
        let config = load_toml(jail, &toml).expect("valid");

        let output = toml::to_string_pretty(&config).expect("serializable");

        assert!(output.contains("/run/secrets/client.key"), "{output}");
        Ok(())
    });
}

#[test]
fn kafka_passphrase_file_accepted() {
    jail(|jail| {
        jail.create_file("passphrase", "passphrase-file-value\n")?;
        let toml = base_with(
            "\"security.protocol\" = \"SASL_PLAINTEXT\"",
            "\"sasl.oauthbearer.assertion.private.key.passphrase_file\" = \"passphrase\"",
        );

        let config = load_toml(jail, &toml).expect("valid");

        let Broker::Kafka(kafka) = &config.brokers["kafka"] else {
            panic!("kafka broker expected");
        };
        let name = "sasl.oauthbearer.assertion.private.key.passphrase";
        assert_eq!(kafka.properties[name].expose(), "passphrase-file-value");
        Ok(())
    });
}
