//! Tests of configuration loading. Each runs in a figment jail: a
//! temporary working directory and an empty environment, both restored
//! afterwards.

mod brokers;
mod coordination;
mod keys;
mod logging;
mod problems;
mod secrets;
mod sources;

use std::path::Path;

use figment::Jail;

use super::{Config, ConfigError, Problem, load};

/// A valid configuration with an account, both broker kinds and both
/// pipeline directions. Its secrets end in `-value` so tests can look for
/// them in output.
const BASE: &str = r#"
[accounts.support]
address = "support@example.test"

[accounts.support.oauth2]
provider = "generic"
client_id = "mailbridge-test"
client_secret = "client-secret-value"
authorize_url = "http://127.0.0.1:9080/authorize"
token_url = "http://127.0.0.1:9080/token"

[accounts.support.imap]
host = "127.0.0.1"
port = 10993

[accounts.support.smtp]
host = "127.0.0.1"
port = 10587

[brokers.kafka]
kind = "kafka"
bootstrap_servers = "127.0.0.1:9092"

[brokers.kafka.properties]
"security.protocol" = "SASL_PLAINTEXT"
"sasl.password" = "kafka-password-value"

[brokers.rabbit]
kind = "amqp"
url = "amqp://guest:amqp-password-value@127.0.0.1:5672/%2f"

[inbound.tickets]
account = "support"
broker = "kafka"
topic = "mail.inbound"

[outbound.replies]
account = "support"
broker = "rabbit"
queue = "mail.outbound"
dead_letter = "mail.dead-letter"
"#;

/// Runs `test` in a jail with an empty environment.
fn jail(test: impl FnOnce(&mut Jail) -> figment::Result<()>) {
    Jail::expect_with(|jail| {
        jail.clear_env();
        test(jail)
    });
}

/// Writes `toml` to `c.toml` in the jail and loads it.
fn load_toml(jail: &Jail, toml: &str) -> Result<Config, ConfigError> {
    jail.create_file("c.toml", toml).expect("c.toml is written");
    load(Some(Path::new("c.toml")))
}

/// Returns the problems of a failed load.
fn problems(result: Result<Config, ConfigError>) -> Vec<Problem> {
    match result {
        Err(ConfigError::Validate(problems)) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

/// Returns the problem with `key`, failing with the list when there is none.
fn problem<'a>(problems: &'a [Problem], key: &str) -> &'a Problem {
    problems
        .iter()
        .find(|problem| problem.key == key)
        .unwrap_or_else(|| panic!("no problem with {key} in {problems:#?}"))
}

/// Replaces the first occurrence of `from` in BASE, failing when BASE
/// does not contain it.
fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no {from:?}");
    BASE.replacen(from, to, 1)
}
