//! Validation: every problem is reported, with its key and reason.

use super::{BASE, base_with, jail, load_toml, problem, problems};

#[test]
fn missing_required_key() {
    jail(|jail| {
        let toml = base_with("client_id = \"mailbridge-test\"\n", "");

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(problems.len(), 1, "{problems:#?}");
        let missing = problem(&problems, "accounts.support.oauth2.client_id");
        assert_eq!(missing.reason, "missing required key");
        assert_eq!(
            missing.env,
            "MAILBRIDGE_ACCOUNTS__SUPPORT__OAUTH2__CLIENT_ID"
        );
        assert_eq!(missing.value, None);
        Ok(())
    });
}

#[test]
fn port_of_wrong_type() {
    jail(|jail| {
        let toml = base_with("port = 10993", "port = \"abc\"");

        let problems = problems(load_toml(jail, &toml));

        let port = problem(&problems, "accounts.support.imap.port");
        assert_eq!(port.value.as_deref(), Some("\"abc\""));
        assert_eq!(port.reason, "expected a port number from 1 to 65535");
        let line = port.to_string();
        assert!(
            line.contains("MAILBRIDGE_ACCOUNTS__SUPPORT__IMAP__PORT"),
            "{line}"
        );
        assert!(line.contains("c.toml"), "{line}");
        Ok(())
    });
}

#[test]
fn port_out_of_range() {
    jail(|jail| {
        let toml = base_with("port = 10993", "port = 70000");

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(
            problem(&problems, "accounts.support.imap.port")
                .value
                .as_deref(),
            Some("70000")
        );
        Ok(())
    });
}

#[test]
fn host_of_wrong_type() {
    jail(|jail| {
        let toml = base_with(
            "host = \"127.0.0.1\"\nport = 10993",
            "host = 5\nport = 10993",
        );

        let problems = problems(load_toml(jail, &toml));

        let host = problem(&problems, "accounts.support.imap.host");
        assert_eq!(host.reason, "expected a string, found an integer");
        Ok(())
    });
}

#[test]
fn unknown_key_suggests() {
    jail(|jail| {
        let toml = base_with("port = 10993", "port = 10993\ntsl = \"implicit\"");

        let problems = problems(load_toml(jail, &toml));

        let unknown = problem(&problems, "accounts.support.imap.tsl");
        assert_eq!(unknown.reason, "unknown key");
        assert_eq!(unknown.fix.as_deref(), Some("did you mean `tls`?"));
        assert_eq!(unknown.value, None);
        Ok(())
    });
}

#[test]
fn unknown_section() {
    jail(|jail| {
        let toml = format!("{BASE}\n[acounts.other]\naddress = \"a@example.test\"\n");

        let problems = problems(load_toml(jail, &toml));

        let unknown = problem(&problems, "acounts");
        assert_eq!(unknown.fix.as_deref(), Some("did you mean `accounts`?"));
        Ok(())
    });
}

#[test]
fn pipeline_with_unknown_account() {
    jail(|jail| {
        let toml = base_with(
            "account = \"support\"\nbroker = \"kafka\"",
            "account = \"nobody\"\nbroker = \"kafka\"",
        );

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(problems.len(), 1, "{problems:#?}");
        let account = problem(&problems, "inbound.tickets.account");
        assert_eq!(account.reason, "unknown account `nobody`");
        assert_eq!(account.fix.as_deref(), Some("defined accounts: support"));
        Ok(())
    });
}

#[test]
fn pipeline_with_unknown_broker() {
    jail(|jail| {
        let toml = base_with("broker = \"rabbit\"", "broker = \"rabit\"");

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(problems.len(), 1, "{problems:#?}");
        let broker = problem(&problems, "outbound.replies.broker");
        assert_eq!(broker.reason, "unknown broker `rabit`");
        assert_eq!(
            broker.fix.as_deref(),
            Some("defined brokers: kafka, rabbit")
        );
        Ok(())
    });
}

#[test]
fn several_problems_in_one_account() {
    jail(|jail| {
        let toml = base_with("provider = \"generic\"", "provider = \"yahoo\"")
            .replacen("client_id = \"mailbridge-test\"\n", "", 1)
            .replacen("port = 10993", "port = \"abc\"\ntls = \"tls1.3\"", 1)
            .replacen("port = 10587", "port = 10587\nconnect_timeout = \"0s\"", 1);

        let problems = problems(load_toml(jail, &toml));

        let keys: Vec<&str> = problems
            .iter()
            .map(|problem| problem.key.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "accounts.support.oauth2.provider",
                "accounts.support.oauth2.client_id",
                "accounts.support.imap.tls",
                "accounts.support.imap.port",
                "accounts.support.smtp.connect_timeout",
            ]
        );
        let provider = problem(&problems, "accounts.support.oauth2.provider");
        assert_eq!(
            provider.reason,
            "expected one of microsoft, google, generic"
        );
        Ok(())
    });
}

#[test]
fn plaintext_needs_allow_plaintext() {
    jail(|jail| {
        let toml = base_with("port = 10993", "port = 10143\ntls = \"none\"");

        let problems = problems(load_toml(jail, &toml));

        let tls = problem(&problems, "accounts.support.imap.tls");
        assert_eq!(tls.reason, "plaintext connections are disabled");
        assert!(
            tls.fix
                .as_deref()
                .unwrap()
                .contains("allow_plaintext = true")
        );
        Ok(())
    });
}

#[test]
fn plaintext_allowed() {
    jail(|jail| {
        let toml = base_with("port = 10993", "tls = \"none\"\nallow_plaintext = true");

        let config = load_toml(jail, &toml).expect("valid");

        assert_eq!(config.accounts["support"].imap.as_ref().unwrap().port, 143);
        Ok(())
    });
}

#[test]
fn missing_ca_file() {
    jail(|jail| {
        let toml = base_with("port = 10993", "port = 10993\nca_file = \"absent.pem\"");

        let problems = problems(load_toml(jail, &toml));

        let ca_file = problem(&problems, "accounts.support.imap.ca_file");
        assert!(
            ca_file.reason.starts_with("failed to read CA file: "),
            "{}",
            ca_file.reason
        );
        Ok(())
    });
}

#[test]
fn ca_file_without_certificate() {
    jail(|jail| {
        jail.create_file("ca.pem", "not a certificate\n")?;
        let toml = base_with("port = 10993", "port = 10993\nca_file = \"ca.pem\"");

        let problems = problems(load_toml(jail, &toml));

        let ca_file = problem(&problems, "accounts.support.imap.ca_file");
        assert_eq!(ca_file.reason, "CA file contains no PEM certificate");
        Ok(())
    });
}

#[test]
fn ca_file_with_certificate() {
    jail(|jail| {
        jail.create_file("ca.pem", super::keys::TEST_CERTIFICATE)?;
        let toml = base_with("port = 10993", "port = 10993\nca_file = \"ca.pem\"");

        assert!(load_toml(jail, &toml).is_ok());
        Ok(())
    });
}

#[test]
fn inbound_account_without_imap() {
    jail(|jail| {
        let toml = base_with(
            "[accounts.support.imap]\nhost = \"127.0.0.1\"\nport = 10993\n",
            "",
        );

        let problems = problems(load_toml(jail, &toml));

        let account = problem(&problems, "inbound.tickets.account");
        assert_eq!(account.reason, "account `support` has no imap table");
        assert_eq!(account.fix.as_deref(), Some("add [accounts.support.imap]"));
        Ok(())
    });
}

#[test]
fn topic_on_amqp_pipeline() {
    jail(|jail| {
        let toml = base_with("queue = \"mail.outbound\"", "topic = \"mail.outbound\"");

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(
            problem(&problems, "outbound.replies.topic").reason,
            "applies only to Kafka brokers"
        );
        assert_eq!(
            problem(&problems, "outbound.replies.queue").reason,
            "missing required key"
        );
        Ok(())
    });
}

#[test]
fn queue_on_kafka_pipeline() {
    jail(|jail| {
        let toml = base_with("broker = \"rabbit\"", "broker = \"kafka\"");

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(
            problem(&problems, "outbound.replies.queue").reason,
            "applies only to AMQP brokers"
        );
        assert_eq!(
            problem(&problems, "outbound.replies.topic").reason,
            "missing required key"
        );
        Ok(())
    });
}

#[test]
fn routing_key_for_default_exchange() {
    jail(|jail| {
        let toml = base_with(
            "broker = \"kafka\"\ntopic = \"mail.inbound\"",
            "broker = \"rabbit\"",
        );

        let problems = problems(load_toml(jail, &toml));

        let routing_key = problem(&problems, "inbound.tickets.routing_key");
        assert!(
            routing_key.reason.contains("default exchange"),
            "{}",
            routing_key.reason
        );
        Ok(())
    });
}

#[test]
fn target_keys_without_broker() {
    jail(|jail| {
        let toml = base_with("broker = \"kafka\"\ntopic", "topic");

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(
            problem(&problems, "inbound.tickets.topic").reason,
            "applies only with a broker"
        );
        Ok(())
    });
}

#[test]
fn amqp_key_on_kafka_broker_hidden() {
    jail(|jail| {
        let toml = base_with(
            "bootstrap_servers = \"127.0.0.1:9092\"",
            "bootstrap_servers = \"127.0.0.1:9092\"\nurl = \"amqp://u:hidden-value@h/\"",
        );

        let problems = problems(load_toml(jail, &toml));

        let url = problem(&problems, "brokers.kafka.url");
        assert_eq!(url.reason, "applies only to brokers of kind amqp");
        assert_eq!(url.value, None);
        assert!(!url.to_string().contains("hidden-value"));
        Ok(())
    });
}

#[test]
fn invalid_amqp_url_hidden() {
    jail(|jail| {
        let toml = base_with("url = \"amqp://guest:", "url = \"http://guest:");

        let problems = problems(load_toml(jail, &toml));

        let url = problem(&problems, "brokers.rabbit.url");
        assert_eq!(url.reason, "expected an amqp:// or amqps:// URL");
        assert!(!url.to_string().contains("amqp-password-value"));
        Ok(())
    });
}

#[test]
fn broker_without_kind() {
    jail(|jail| {
        let toml = base_with("kind = \"amqp\"\n", "");

        let problems = problems(load_toml(jail, &toml));

        // Its other keys and the pipeline naming it are not also reported.
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(
            problem(&problems, "brokers.rabbit.kind").reason,
            "missing required key"
        );
        Ok(())
    });
}

#[test]
fn generic_provider_endpoints() {
    jail(|jail| {
        let toml = base_with("token_url = \"http://127.0.0.1:9080/token\"\n", "").replacen(
            "provider = \"generic\"",
            "provider = \"generic\"\ngrant = \"device_code\"",
            1,
        );

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(problems.len(), 2, "{problems:#?}");
        problem(&problems, "accounts.support.oauth2.token_url");
        problem(
            &problems,
            "accounts.support.oauth2.device_authorization_url",
        );
        Ok(())
    });
}

#[test]
fn google_client_credentials_rejected() {
    jail(|jail| {
        let toml = base_with(
            "provider = \"generic\"",
            "provider = \"google\"\ngrant = \"client_credentials\"",
        );

        let problems = problems(load_toml(jail, &toml));

        let grant = problem(&problems, "accounts.support.oauth2.grant");
        assert_eq!(
            grant.reason,
            "Google does not offer the client_credentials grant"
        );
        Ok(())
    });
}

#[test]
fn microsoft_app_only_needs_tenant() {
    jail(|jail| {
        let toml = base_with(
            "provider = \"generic\"",
            "provider = \"microsoft\"\ngrant = \"client_credentials\"",
        );

        let problems = problems(load_toml(jail, &toml));

        let tenant = problem(&problems, "accounts.support.oauth2.tenant");
        assert!(
            tenant
                .reason
                .contains("required by grant client_credentials"),
            "{}",
            tenant.reason
        );
        Ok(())
    });
}

#[test]
fn redirect_port_only_for_browser_grant() {
    for grant in ["client_credentials", "device_code"] {
        jail(|jail| {
            let toml = base_with(
                "provider = \"generic\"",
                &format!("provider = \"generic\"\ngrant = \"{grant}\"\nredirect_port = 8400"),
            )
            .replacen(
                "token_url",
                "device_authorization_url = \"http://127.0.0.1:9080/device\"\ntoken_url",
                1,
            );

            let problems = problems(load_toml(jail, &toml));

            assert_eq!(problems.len(), 1, "{grant}: {problems:#?}");
            let port = problem(&problems, "accounts.support.oauth2.redirect_port");
            assert_eq!(
                port.reason,
                "applies only to grant authorization_code, which signs in through a browser"
            );
            assert_eq!(port.fix.as_deref(), Some("remove it"));
            assert_eq!(port.value.as_deref(), Some("8400"));
            Ok(())
        });
    }
}

#[test]
fn redirect_port_with_authorization_code() {
    jail(|jail| {
        let toml = base_with(
            "provider = \"generic\"",
            "provider = \"generic\"\nredirect_port = 8400",
        );

        let config = load_toml(jail, &toml).expect("valid");

        assert_eq!(config.accounts["support"].oauth2.redirect_port, Some(8400));
        Ok(())
    });
}

#[test]
fn tenant_only_for_microsoft() {
    jail(|jail| {
        let toml = base_with(
            "provider = \"generic\"",
            "provider = \"generic\"\ntenant = \"contoso\"",
        );

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(
            problem(&problems, "accounts.support.oauth2.tenant").reason,
            "applies only to provider microsoft"
        );
        Ok(())
    });
}

#[test]
fn move_needs_move_to() {
    jail(|jail| {
        let toml = base_with(
            "topic = \"mail.inbound\"",
            "topic = \"mail.inbound\"\nafter_publish = \"move\"",
        );

        let problems = problems(load_toml(jail, &toml));

        let move_to = problem(&problems, "inbound.tickets.move_to");
        assert!(
            move_to.reason.starts_with("missing key, required"),
            "{}",
            move_to.reason
        );
        Ok(())
    });
}

#[test]
fn move_to_watched_mailbox() {
    jail(|jail| {
        let toml = base_with(
            "topic = \"mail.inbound\"",
            "topic = \"mail.inbound\"\nafter_publish = \"move\"\nmove_to = \"INBOX\"",
        );

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(
            problem(&problems, "inbound.tickets.move_to").reason,
            "is one of the watched mailboxes"
        );
        Ok(())
    });
}

#[test]
fn zero_values_rejected() {
    jail(|jail| {
        let toml = base_with(
            "topic = \"mail.inbound\"",
            "topic = \"mail.inbound\"\npoll_interval = \"0s\"",
        )
        .replacen(
            "queue = \"mail.outbound\"",
            "queue = \"mail.outbound\"\nmax_in_flight = 0",
            1,
        );

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(
            problem(&problems, "inbound.tickets.poll_interval").reason,
            "must be greater than zero"
        );
        assert_eq!(
            problem(&problems, "outbound.replies.max_in_flight").reason,
            "expected an integer of at least 1"
        );
        Ok(())
    });
}

#[test]
fn section_name_must_be_lowercase() {
    jail(|jail| {
        let toml = format!("{BASE}\n[brokers.Rabbit2]\nkind = \"amqp\"\n");

        let problems = problems(load_toml(jail, &toml));

        assert!(
            problem(&problems, "brokers.Rabbit2")
                .reason
                .starts_with("invalid name")
        );
        Ok(())
    });
}

#[test]
fn dead_letter_is_not_source() {
    jail(|jail| {
        let toml = base_with(
            "dead_letter = \"mail.dead-letter\"",
            "dead_letter = \"mail.outbound\"",
        );

        let problems = problems(load_toml(jail, &toml));

        problem(&problems, "outbound.replies.dead_letter");
        Ok(())
    });
}

#[test]
fn inbound_watch_settings_checked() {
    jail(|jail| {
        let settings = "topic = \"mail.inbound\"\nidle_interval = \"30m\"\n\
                        after_publish = \"add_keyword\"\nkeyword = \"two words\"\n\
                        declare = true\nbatch_size = 0";
        let toml = base_with("topic = \"mail.inbound\"", settings);

        let problems = problems(load_toml(jail, &toml));

        let idle = problem(&problems, "inbound.tickets.idle_interval");
        assert!(idle.reason.contains("29 minutes"), "{}", idle.reason);
        let keyword = problem(&problems, "inbound.tickets.keyword");
        assert!(keyword.reason.contains("' '"), "{}", keyword.reason);
        let declare = problem(&problems, "inbound.tickets.declare");
        assert!(declare.reason.contains("AMQP"), "{}", declare.reason);
        problem(&problems, "inbound.tickets.batch_size");
        Ok(())
    });
}

#[test]
fn move_to_special_use_accepted_in_any_case() {
    jail(|jail| {
        let toml = base_with(
            "topic = \"mail.inbound\"",
            "topic = \"mail.inbound\"\nafter_publish = \"move\"\nmove_to = '\\trash'",
        );

        let config = load_toml(jail, &toml).expect("valid configuration");

        assert_eq!(
            config.inbound["tickets"].move_to.as_deref(),
            Some("\\Trash")
        );
        Ok(())
    });
}

#[test]
fn move_to_unknown_special_use_lists_known() {
    jail(|jail| {
        let toml = base_with(
            "topic = \"mail.inbound\"",
            "topic = \"mail.inbound\"\nafter_publish = \"move\"\nmove_to = '\\Spam'",
        );

        let problems = problems(load_toml(jail, &toml));

        let move_to = problem(&problems, "inbound.tickets.move_to");
        assert_eq!(
            move_to.reason,
            "\\Spam is not a special-use attribute of RFC 6154"
        );
        assert_eq!(
            move_to.fix.as_deref(),
            Some(
                "use one of \\All, \\Archive, \\Drafts, \\Flagged, \\Junk, \\Sent, \\Trash, \
                 or a mailbox name"
            )
        );
        Ok(())
    });
}

#[test]
fn inbound_watch_defaults() {
    jail(|jail| {
        let toml = base_with("topic = \"mail.inbound\"", "topic = \"mail.inbound\"");

        let config = load_toml(jail, &toml).expect("valid configuration");

        let inbound = &config.inbound["tickets"];
        assert_eq!(inbound.after_publish, crate::config::AfterPublish::Keep);
        assert_eq!(inbound.start_from, crate::config::StartFrom::All);
        assert_eq!(inbound.batch_size.get(), 100);
        assert_eq!(inbound.idle_interval, std::time::Duration::from_secs(1500));
        assert_eq!(inbound.max_message_bytes, 25 * 1024 * 1024);
        assert_eq!(inbound.keyword, None);
        Ok(())
    });
}

#[test]
fn dead_letter_required() {
    jail(|jail| {
        let toml = base_with("dead_letter = \"mail.dead-letter\"\n", "");

        let problems = problems(load_toml(jail, &toml));

        let dead_letter = problem(&problems, "outbound.replies.dead_letter");
        assert!(
            dead_letter.reason.contains("required to keep requests"),
            "{}",
            dead_letter.reason
        );
        Ok(())
    });
}

#[test]
fn inbox_matched_without_case() {
    jail(|jail| {
        let toml = base_with(
            "topic = \"mail.inbound\"",
            "topic = \"mail.inbound\"\nmailboxes = [\"inbox\", \"Archive\"]\n\
             after_publish = \"move\"\nmove_to = \"Inbox\"",
        );

        let problems = problems(load_toml(jail, &toml));

        assert_eq!(
            problem(&problems, "inbound.tickets.move_to").reason,
            "is one of the watched mailboxes"
        );
        Ok(())
    });
}

#[test]
fn inbox_listed_twice_in_other_case() {
    jail(|jail| {
        let toml = base_with(
            "topic = \"mail.inbound\"",
            "topic = \"mail.inbound\"\nmailboxes = [\"INBOX\", \"Inbox\"]",
        );

        let problems = problems(load_toml(jail, &toml));

        let mailboxes = problem(&problems, "inbound.tickets.mailboxes");
        assert!(
            mailboxes.reason.contains("listed twice"),
            "{}",
            mailboxes.reason
        );
        Ok(())
    });
}

#[test]
fn removing_mail_needs_broker() {
    for action in [
        "after_publish = \"delete\"",
        "after_publish = \"move\"\nmove_to = \"Done\"",
    ] {
        jail(|jail| {
            let toml = base_with("broker = \"kafka\"\ntopic = \"mail.inbound\"", action);

            let problems = problems(load_toml(jail, &toml));

            assert_eq!(problems.len(), 1, "{problems:#?}");
            let after_publish = problem(&problems, "inbound.tickets.after_publish");
            assert!(
                after_publish
                    .reason
                    .contains("standard output cannot confirm"),
                "{}",
                after_publish.reason
            );
            assert_eq!(
                after_publish.env,
                "MAILBRIDGE_INBOUND__TICKETS__AFTER_PUBLISH"
            );
            let fix = after_publish.fix.as_deref().unwrap_or_default();
            assert!(fix.contains("set broker"), "{fix}");
            Ok(())
        });
    }
}

#[test]
fn marking_mail_without_broker_accepted() {
    jail(|jail| {
        let toml = base_with(
            "broker = \"kafka\"\ntopic = \"mail.inbound\"",
            "after_publish = \"mark_seen\"",
        );

        let config = load_toml(jail, &toml);

        assert!(config.is_ok(), "{config:?}");
        Ok(())
    });
}

#[test]
fn certificate_checks_on_by_default() {
    jail(|jail| {
        let config = load_toml(jail, BASE).expect("valid");

        let account = &config.accounts["support"];
        assert!(!account.imap.as_ref().unwrap().danger_accept_invalid_certs);
        assert!(!account.smtp.as_ref().unwrap().danger_accept_invalid_certs);
        Ok(())
    });
}

#[test]
fn certificate_checks_off_per_server() {
    jail(|jail| {
        let toml = base_with(
            "port = 10993",
            "port = 10993\ndanger_accept_invalid_certs = true",
        );
        jail.set_env(
            "MAILBRIDGE_ACCOUNTS__SUPPORT__SMTP__DANGER_ACCEPT_INVALID_CERTS",
            "true",
        );

        let config = load_toml(jail, &toml).expect("valid");

        let account = &config.accounts["support"];
        assert!(account.imap.as_ref().unwrap().danger_accept_invalid_certs);
        assert!(account.smtp.as_ref().unwrap().danger_accept_invalid_certs);
        Ok(())
    });
}

#[test]
fn certificate_exception_rejected_without_tls() {
    jail(|jail| {
        let toml = base_with(
            "port = 10993",
            "tls = \"none\"\nallow_plaintext = true\ndanger_accept_invalid_certs = true",
        );

        let problems = problems(load_toml(jail, &toml));

        let key = problem(
            &problems,
            "accounts.support.imap.danger_accept_invalid_certs",
        );
        assert_eq!(key.reason, "has no effect with tls = \"none\"");
        assert_eq!(key.fix.as_deref(), Some("remove it"));
        Ok(())
    });
}

#[test]
fn certificate_exception_false_accepted_without_tls() {
    jail(|jail| {
        // The output of `mailbridge config` contains the default `false`.
        let toml = base_with(
            "port = 10993",
            "tls = \"none\"\nallow_plaintext = true\ndanger_accept_invalid_certs = false",
        );

        let config = load_toml(jail, &toml).expect("false is the default and loads");
        let account = &config.accounts["support"];
        assert!(!account.imap.as_ref().unwrap().danger_accept_invalid_certs);
        Ok(())
    });
}

#[test]
fn integer_above_toml_range_rejected() {
    jail(|jail| {
        jail.set_env(
            "MAILBRIDGE_INBOUND__TICKETS__MAX_MESSAGE_BYTES",
            "18446744073709551615",
        );

        let problems = problems(load_toml(jail, BASE));

        assert_eq!(
            problem(&problems, "inbound.tickets.max_message_bytes").reason,
            "expected an integer from 0 to 9223372036854775807"
        );
        Ok(())
    });
}

#[test]
fn jaas_config_redacted() {
    jail(|jail| {
        let toml = BASE.replace(
            "\"sasl.password\" = \"kafka-password-value\"",
            "\"sasl.password\" = \"kafka-password-value\"\n\"sasl.jaas.config\" = \"jaas-secret-value\"",
        );

        let config = load_toml(jail, &toml).expect("valid configuration");
        let printed = toml::to_string_pretty(&config).expect("serializable");

        assert!(!printed.contains("jaas-secret-value"), "{printed}");
        Ok(())
    });
}
