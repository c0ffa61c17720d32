//! The key list against the reader and against README.

use std::path::Path;

use super::super::keys::KEYS;
use super::super::reader::{Context, Table};
use super::super::{read, sources};
use super::jail;

/// A PEM block that passes the CA file check, which parses PEM but not
/// the certificate inside.
pub(super) const TEST_CERTIFICATE: &str =
    "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";

const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));

/// Sets every key once. The combination is invalid, which does not matter
/// to the reader.
const EVERY_KEY: &str = r#"
[state]
directory = "state"

[metrics]
listen = "127.0.0.1:9464"

[log]
level = "info"
format = "json"

[shutdown]
timeout = "10s"

[accounts.a]
address = "a@example.test"
login_hint = "b@example.test"

[accounts.a.oauth2]
provider = "microsoft"
grant = "authorization_code"
client_id = "c"
client_secret = "s"
tenant = "t"
scopes = ["x"]
authorize_url = "https://login.example.test/a"
token_url = "https://login.example.test/t"
device_authorization_url = "https://login.example.test/d"
redirect_port = 8080
mechanism = "oauthbearer"

[accounts.a.imap]
host = "h"
port = 1
tls = "starttls"
allow_plaintext = false
ca_file = "ca.pem"
danger_accept_invalid_certs = false
connect_timeout = "1s"

[accounts.a.smtp]
host = "h"
port = 1
tls = "starttls"
allow_plaintext = false
ca_file = "ca.pem"
danger_accept_invalid_certs = false
connect_timeout = "1s"

[brokers.k]
kind = "kafka"
bootstrap_servers = "h:1"
properties = { "client.id" = "x" }

[brokers.r]
kind = "amqp"
url = "amqp://h/"
ca_file = "ca.pem"

[inbound.i]
account = "a"
mailboxes = ["INBOX"]
broker = "k"
topic = "t"
exchange = "e"
routing_key = "r"
mode = "poll"
poll_interval = "1s"
after_publish = "move"
move_to = "Done"

[outbound.o]
account = "a"
broker = "k"
topic = "t"
queue = "q"
group_id = "g"
dead_letter = "d"
status = "s"
max_in_flight = 2
max_attempts = 3
max_attachment_bytes = 1000
"#;

#[test]
fn reader_reads_every_key() {
    jail(|jail| {
        jail.create_file("c.toml", EVERY_KEY)?;
        let env = sources::environment();
        let figment = sources::figment(Some(Path::new("c.toml")), &env).expect("merged");
        let dict = sources::merged(&figment).expect("merged");
        let cx = Context::new(&figment, &env);

        // The reader asserts that every key it reads is listed, so only
        // the other direction is left to check.
        let _ = read(Table::root(&cx, &dict));

        let read_patterns = cx.read_patterns.borrow();
        for key in KEYS {
            let pattern = key.path.strip_suffix(".*").unwrap_or(key.path);
            assert!(read_patterns.contains(pattern), "{pattern} is never read");
        }
        Ok(())
    });
}

/// Returns README's `## Configuration` section.
fn configuration_section() -> &'static str {
    const HEADING: &str = "## Configuration\n";
    let start = match README.starts_with(HEADING) {
        true => 0,
        false => {
            README
                .find(&format!("\n{HEADING}"))
                .expect("a ## Configuration section")
                + 1
        }
    };
    let section = &README[start..];
    let end = section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3);

    &section[..end]
}

/// Returns (key, type, default) of every row of the key table.
fn readme_rows() -> Vec<(String, String, String)> {
    configuration_section()
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let key = cells[1].trim_matches('`').to_owned();
            (key, cells[2].to_owned(), cells[3].to_owned())
        })
        .collect()
}

#[test]
fn readme_lists_every_key() {
    let expected: Vec<(String, String, String)> = KEYS
        .iter()
        .map(|key| (key.path.to_owned(), key.kind.name(), key.default.to_owned()))
        .collect();

    let rows = readme_rows();

    for (key, kind, default) in &expected {
        let row = rows.iter().find(|row| &row.0 == key);
        let line = format!("| `{key}` | {kind} | {default} |");
        assert!(row.is_some(), "README lacks the row {line}");
        assert_eq!(
            row,
            Some(&(key.clone(), kind.clone(), default.clone())),
            "expected {line}"
        );
    }
    let keys: Vec<&String> = rows.iter().map(|row| &row.0).collect();
    let known: Vec<&String> = expected.iter().map(|row| &row.0).collect();
    assert_eq!(
        keys, known,
        "README's rows differ from the key list or its order"
    );
}

#[test]
fn readme_example_is_valid() {
    let section = configuration_section();
    let start = section.find("```toml\n").expect("an example") + "```toml\n".len();
    let example = &section[start..start + section[start..].find("```").expect("closed")];

    jail(|jail| {
        jail.create_dir(".stack/tls")?;
        jail.create_file(".stack/tls/ca.crt", TEST_CERTIFICATE)?;
        jail.create_file("example.toml", example)?;

        let config = super::super::load(Some(Path::new("example.toml")));

        assert!(config.is_ok(), "{config:#?}");
        Ok(())
    });
}
