//! How the file and the environment combine.

use std::path::Path;

use super::super::{ConfigError, Origin, Tls, load};
use super::{BASE, base_with, jail, load_toml, problem, problems};

#[test]
fn base_is_valid() {
    jail(|jail| {
        let config = load_toml(jail, BASE).expect("BASE is valid");

        assert_eq!(
            config.accounts["support"].imap.as_ref().unwrap().port,
            10993
        );
        assert_eq!(config.inbound["tickets"].mailboxes, ["INBOX"]);
        Ok(())
    });
}

#[test]
fn env_overrides_file() {
    jail(|jail| {
        jail.set_env(
            "MAILBRIDGE_ACCOUNTS__SUPPORT__IMAP__HOST",
            "imap.example.test",
        );
        jail.set_env("MAILBRIDGE_METRICS__LISTEN", "0.0.0.0:9464");

        let config = load_toml(jail, BASE).expect("valid");

        let imap = config.accounts["support"].imap.as_ref().unwrap();
        assert_eq!(imap.host, "imap.example.test");
        assert_eq!(imap.port, 10993);
        assert_eq!(config.metrics.listen.to_string(), "0.0.0.0:9464");
        Ok(())
    });
}

#[test]
fn account_from_env_only() {
    jail(|jail| {
        jail.set_env(
            "MAILBRIDGE_ACCOUNTS__SHARED__ADDRESS",
            "shared@example.test",
        );
        jail.set_env(
            "MAILBRIDGE_ACCOUNTS__SHARED__LOGIN_HINT",
            "alice@example.test",
        );
        jail.set_env("MAILBRIDGE_ACCOUNTS__SHARED__OAUTH2__PROVIDER", "microsoft");
        jail.set_env("MAILBRIDGE_ACCOUNTS__SHARED__OAUTH2__CLIENT_ID", "0123");
        jail.set_env(
            "MAILBRIDGE_ACCOUNTS__SHARED__IMAP__HOST",
            "outlook.office365.com",
        );
        jail.set_env(
            "MAILBRIDGE_ACCOUNTS__SHARED__SMTP__HOST",
            "smtp.office365.com",
        );

        let config = load(None).expect("valid");

        let account = &config.accounts["shared"];
        assert_eq!(account.address, "shared@example.test");
        assert_eq!(account.login_hint, "alice@example.test");
        // The raw text is kept: figment alone would read the number 123.
        assert_eq!(account.oauth2.client_id, "0123");
        assert_eq!(account.oauth2.tenant.as_deref(), Some("organizations"));
        assert_eq!(account.imap.as_ref().unwrap().port, 993);
        assert_eq!(account.smtp.as_ref().unwrap().port, 587);
        assert_eq!(account.smtp.as_ref().unwrap().tls, Tls::Starttls);
        Ok(())
    });
}

#[test]
fn env_port_as_quoted_string() {
    jail(|jail| {
        jail.set_env("MAILBRIDGE_ACCOUNTS__SUPPORT__IMAP__PORT", "\"10994\"");
        jail.set_env("MAILBRIDGE_ACCOUNTS__SUPPORT__SMTP__PORT", "10588");

        let config = load_toml(jail, BASE).expect("valid");

        let account = &config.accounts["support"];
        assert_eq!(account.imap.as_ref().unwrap().port, 10994);
        assert_eq!(account.smtp.as_ref().unwrap().port, 10588);
        Ok(())
    });
}

#[test]
fn env_list_of_mailboxes() {
    jail(|jail| {
        jail.set_env("MAILBRIDGE_INBOUND__TICKETS__MAILBOXES", "[INBOX,Archive]");

        let config = load_toml(jail, BASE).expect("valid");

        assert_eq!(config.inbound["tickets"].mailboxes, ["INBOX", "Archive"]);
        Ok(())
    });
}

#[test]
fn env_single_mailbox() {
    jail(|jail| {
        jail.set_env("MAILBRIDGE_INBOUND__TICKETS__MAILBOXES", "Support");

        let config = load_toml(jail, BASE).expect("valid");

        assert_eq!(config.inbound["tickets"].mailboxes, ["Support"]);
        Ok(())
    });
}

#[test]
fn env_kafka_property_nested() {
    jail(|jail| {
        jail.set_env(
            "MAILBRIDGE_BROKERS__KAFKA__PROPERTIES__SASL__MECHANISM",
            "PLAIN",
        );
        jail.set_env(
            "MAILBRIDGE_BROKERS__KAFKA__PROPERTIES__SASL__PASSWORD",
            "env-value",
        );

        let config = load_toml(jail, BASE).expect("valid");

        let super::super::Broker::Kafka(kafka) = &config.brokers["kafka"] else {
            panic!("kafka broker expected");
        };
        assert_eq!(kafka.properties["sasl.mechanism"].expose(), "PLAIN");
        assert_eq!(kafka.properties["sasl.password"].expose(), "env-value");
        Ok(())
    });
}

#[test]
fn no_file_and_no_env_is_valid() {
    jail(|_| {
        let config = load(None).expect("defaults are valid");

        assert_eq!(config.state.directory, Path::new("state"));
        assert_eq!(config.metrics.listen.to_string(), "127.0.0.1:9464");
        assert!(config.accounts.is_empty());
        Ok(())
    });
}

#[test]
fn non_config_variables_ignored() {
    jail(|jail| {
        jail.set_env("MAILBRIDGE_CONFIG", "elsewhere.toml");
        jail.set_env("MAILBRIDGE_LOG", "debug");
        jail.set_env("MAILBRIDGE_LOG_FORMAT", "json");

        assert!(load(None).is_ok());
        Ok(())
    });
}

#[test]
fn unknown_env_variable_rejected() {
    jail(|jail| {
        jail.set_env("MAILBRIDGE_METRICS__LISTN", "0.0.0.0:9464");

        let problems = problems(load(None));

        let listn = problem(&problems, "metrics.listn");
        assert_eq!(listn.env, "MAILBRIDGE_METRICS__LISTN");
        assert_eq!(listn.origin, Some(Origin::Environment));
        assert_eq!(listn.fix.as_deref(), Some("did you mean `listen`?"));
        Ok(())
    });
}

#[test]
fn origin_names_file() {
    jail(|jail| {
        let toml = base_with("port = 10993", "port = 0");

        let problems = problems(load_toml(jail, &toml));

        let port = problem(&problems, "accounts.support.imap.port");
        assert_eq!(port.origin, Some(Origin::File("c.toml".into())));
        assert_eq!(port.value.as_deref(), Some("0"));
        Ok(())
    });
}

#[test]
fn missing_file_is_read_error() {
    jail(|_| {
        let err = load(Some(Path::new("absent.toml"))).unwrap_err();

        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("failed to read configuration file absent.toml")
        );
        Ok(())
    });
}

#[test]
fn parse_error_hides_line() {
    jail(|jail| {
        let toml = "[accounts.a.oauth2]\nclient_secret = \"hidden-value\n";

        let err = load_toml(jail, toml).unwrap_err();

        let ConfigError::Parse { line, .. } = &err else {
            panic!("expected a parse error, got {err:?}");
        };
        assert_eq!(*line, 2);
        assert!(!err.to_string().contains("hidden-value"), "{err}");
        Ok(())
    });
}

#[test]
fn empty_env_level_rejected() {
    jail(|jail| {
        let cases = [
            ("MAILBRIDGE_STATE__DIRECTORY__", r#"state.directory."""#),
            ("MAILBRIDGE_STATE____DIRECTORY", r#"state."".directory"#),
            ("MAILBRIDGE_ACCOUNTS____ADDRESS", r#"accounts."".address"#),
            ("MAILBRIDGE___X", r#""".x"#),
        ];
        for (name, _) in cases {
            jail.set_env(name, "hidden-value");
        }

        let problems = problems(load(None));

        assert_eq!(problems.len(), cases.len(), "{problems:#?}");
        for (name, key) in cases {
            let empty = problem(&problems, key);
            assert_eq!(empty.env, name);
            assert_eq!(empty.origin, Some(Origin::Environment));
            assert_eq!(empty.value, None);
            assert_eq!(
                empty.reason,
                "invalid variable name: a nesting level is empty"
            );
            let fix = empty.fix.as_deref().unwrap_or_default();
            assert!(fix.contains("`__` separates nesting levels"), "{fix}");
            assert!(fix.contains("no level may be empty"), "{fix}");
            let line = empty.to_string();
            assert!(line.contains(name), "{line}");
            assert!(!line.contains("hidden-value"), "{line}");
        }
        Ok(())
    });
}

#[test]
fn empty_env_level_in_lowercase_name() {
    jail(|jail| {
        jail.set_env("mailbridge_metrics__listen__", "0.0.0.0:9464");

        let problems = problems(load(None));

        let empty = problem(&problems, r#"metrics.listen."""#);
        assert_eq!(empty.env, "mailbridge_metrics__listen__");
        Ok(())
    });
}
