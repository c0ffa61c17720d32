//! `mailbridge config` run as a process, with a temporary configuration
//! file and environment variables.

use std::path::Path;
use std::process::{Command, Output};

const CONFIG: &str = r#"
[accounts.support]
address = "support@example.test"

[accounts.support.oauth2]
provider = "generic"
client_id = "mailbridge-test"
client_secret_file = "client-secret"
token_url = "http://127.0.0.1:9080/token"
authorize_url = "http://127.0.0.1:9080/authorize"

[accounts.support.imap]
host = "127.0.0.1"
port = 10993

[brokers.rabbit]
kind = "amqp"
url = "amqp://guest:amqp-password-value@127.0.0.1:5672/%2f"

[inbound.tickets]
account = "support"
broker = "rabbit"
routing_key = "mail.inbound"
"#;

/// Runs the binary in `dir` with only the given environment variables.
fn mailbridge(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailbridge"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("mailbridge runs")
}

fn write(dir: &Path, name: &str, content: &str) {
    std::fs::write(dir.join(name), content).expect("file is written");
}

#[test]
fn config_prints_redacted_toml() {
    let dir = tempfile::tempdir().expect("temporary directory");
    write(dir.path(), "mailbridge.toml", CONFIG);
    write(dir.path(), "client-secret", "client-secret-value\n");
    let env = [
        ("MAILBRIDGE_CONFIG", "mailbridge.toml"),
        ("MAILBRIDGE_ACCOUNTS__SUPPORT__IMAP__PORT", "10994"),
        ("MAILBRIDGE_INBOUND__TICKETS__MAILBOXES", "[INBOX,Archive]"),
    ];

    let output = mailbridge(dir.path(), &["config"], &env);

    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert!(
        output.status.success(),
        "status {}: {stderr}",
        output.status
    );
    let parsed: toml::Table = toml::from_str(&stdout).expect("stdout is TOML");
    let imap = &parsed["accounts"]["support"]["imap"];
    assert_eq!(imap["port"].as_integer(), Some(10994));
    let mailboxes = &parsed["inbound"]["tickets"]["mailboxes"];
    assert_eq!(mailboxes.as_array().map(Vec::len), Some(2));
    assert!(!stdout.contains("client-secret-value"), "{stdout}");
    assert!(!stdout.contains("amqp-password-value"), "{stdout}");
    assert!(!stdout.contains("client_secret_file"), "{stdout}");
    assert_eq!(stdout.matches("[redacted]").count(), 2, "{stdout}");
}

#[test]
fn config_flag_names_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    write(
        dir.path(),
        "other.toml",
        "[metrics]\nlisten = \"0.0.0.0:9464\"\n",
    );

    let output = mailbridge(dir.path(), &["--config", "other.toml", "config"], &[]);

    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(output.status.success(), "status {}", output.status);
    assert!(stdout.contains("listen = \"0.0.0.0:9464\""), "{stdout}");
}

#[test]
fn invalid_config_exits_78() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let bad = CONFIG
        .replace("port = 10993", "port = \"abc\"\ntsl = \"implicit\"")
        .replace("account = \"support\"", "account = \"nobody\"");
    write(dir.path(), "mailbridge.toml", &bad);
    let env = [("MAILBRIDGE_ACCOUNTS__SUPPORT__OAUTH2__CLIENT_ID", "")];

    let output = mailbridge(dir.path(), &["--config", "mailbridge.toml", "config"], &env);

    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(output.stdout.is_empty());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 6, "{stderr}");
    let expected_starts = [
        "accounts.support.oauth2.client_id = \"\": must not be empty",
        "accounts.support.oauth2.client_secret_file = \"client-secret\": failed to read secret file",
        "accounts.support.imap.port = \"abc\": expected a port number from 1 to 65535",
        "accounts.support.imap.tsl: unknown key; did you mean `tls`?",
        "inbound.tickets.account = \"nobody\": unknown account `nobody`",
    ];
    for (line, start) in lines.iter().zip(expected_starts) {
        assert!(
            line.starts_with(start),
            "{line:?} does not start with {start:?}"
        );
    }
    assert!(
        lines[2].contains("MAILBRIDGE_ACCOUNTS__SUPPORT__IMAP__PORT"),
        "{}",
        lines[2]
    );
    assert!(lines[2].contains("set in mailbridge.toml"), "{}", lines[2]);
    assert_eq!(lines[5], "error: invalid configuration: 5 problems");
    assert!(!stderr.contains("amqp-password-value"), "{stderr}");
}

#[test]
fn missing_file_exits_78() {
    let dir = tempfile::tempdir().expect("temporary directory");

    let output = mailbridge(
        dir.path(),
        &["config"],
        &[("MAILBRIDGE_CONFIG", "absent.toml")],
    );

    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.starts_with("error: failed to read configuration file absent.toml"),
        "{stderr}"
    );
}

#[test]
fn closed_stdout_exits_quietly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    write(dir.path(), "mailbridge.toml", CONFIG);
    write(dir.path(), "client-secret", "client-secret-value\n");
    // A pipe whose reader is closed before mailbridge writes, as `head`
    // leaves it once it has read enough.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);

    let output = Command::new(env!("CARGO_BIN_EXE_mailbridge"))
        .args(["--config", "mailbridge.toml", "config"])
        .current_dir(dir.path())
        .env_clear()
        .stdout(writer)
        .output()
        .expect("mailbridge runs");

    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn empty_config_variable_means_no_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let env = [
        ("MAILBRIDGE_CONFIG", ""),
        ("MAILBRIDGE_METRICS__LISTEN", "0.0.0.0:9464"),
    ];

    let output = mailbridge(dir.path(), &["config"], &env);

    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert!(
        output.status.success(),
        "status {}: {stderr}",
        output.status
    );
    assert!(stdout.contains("listen = \"0.0.0.0:9464\""), "{stdout}");
}

#[test]
fn empty_variable_level_exits_78() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let env = [("MAILBRIDGE_STATE____DIRECTORY", "hidden-value")];

    let output = mailbridge(dir.path(), &["config"], &env);

    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("state.\"\".directory: invalid variable name"),
        "{first}"
    );
    assert!(
        first.ends_with("(set by environment variable MAILBRIDGE_STATE____DIRECTORY)"),
        "{first}"
    );
    assert!(!stderr.contains("hidden-value"), "{stderr}");
}

#[test]
fn printed_config_fed_back_exits_78() {
    let dir = tempfile::tempdir().expect("temporary directory");
    write(dir.path(), "mailbridge.toml", CONFIG);
    write(dir.path(), "client-secret", "client-secret-value\n");
    let printed = mailbridge(dir.path(), &["--config", "mailbridge.toml", "config"], &[]);
    assert!(printed.status.success(), "status {}", printed.status);
    let printed = String::from_utf8(printed.stdout).expect("UTF-8");
    write(dir.path(), "printed.toml", &printed);

    let output = mailbridge(dir.path(), &["--config", "printed.toml", "config"], &[]);

    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with(
            "accounts.support.oauth2.client_secret: secret is `[redacted]`, the marker that \
             `mailbridge config` prints in place of a secret; set the real value, or set \
             `client_secret_file`"
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("brokers.rabbit.url: secret is `[redacted]`"),
        "{}",
        lines[1]
    );
}

#[test]
fn kafka_secret_properties_redacted() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = format!(
        "{CONFIG}\n[brokers.kafka]\nkind = \"kafka\"\nbootstrap_servers = \"127.0.0.1:9092\"\n\n\
         [brokers.kafka.properties]\n\
         \"sasl.oauthbearer.assertion.private.key.passphrase\" = \"passphrase-value\"\n\
         \"sasl.oauthbearer.assertion.private.key.pem\" = \"pem-value\"\n\
         \"SASL.PASSWORD\" = \"upper-case-value\"\n\
         \"sasl.pasword\" = \"misspelt-value\"\n"
    );
    write(dir.path(), "mailbridge.toml", &config);
    write(dir.path(), "client-secret", "client-secret-value\n");

    let output = mailbridge(dir.path(), &["--config", "mailbridge.toml", "config"], &[]);

    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(output.status.success(), "status {}", output.status);
    for value in [
        "passphrase-value",
        "pem-value",
        "upper-case-value",
        "misspelt-value",
    ] {
        assert!(!stdout.contains(value), "{value} in output:\n{stdout}");
    }
    assert_eq!(stdout.matches("[redacted]").count(), 6, "{stdout}");
}

/// A Graph token's audience is graph.microsoft.com, which Exchange Online
/// IMAP and SMTP reject, so such a scope is a configuration error.
#[test]
fn graph_scope_exits_78() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = r#"
[accounts.support]
address = "support@example.test"

[accounts.support.oauth2]
provider = "microsoft"
client_id = "11111111-1111-1111-1111-111111111111"
scopes = ["https://graph.microsoft.com/Mail.Read", "offline_access"]

[accounts.support.imap]
host = "outlook.office365.com"
"#;
    write(dir.path(), "mailbridge.toml", config);

    let output = mailbridge(dir.path(), &["--config", "mailbridge.toml", "config"], &[]);

    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert_eq!(output.status.code(), Some(78), "stderr: {stderr}");
    assert!(
        stderr.contains("accounts.support.oauth2.scopes"),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("graph.microsoft.com"), "stderr: {stderr}");
    assert!(
        stderr.contains("MAILBRIDGE_ACCOUNTS__SUPPORT__OAUTH2__SCOPES"),
        "stderr: {stderr}"
    );
}

/// Fills the `<...>` placeholders of a ready connector file and points its
/// secret and CA files at `secret` and `ca.pem` in `dir`.
fn filled_connector(dir: &Path, text: &str) -> String {
    let mut filled = String::new();
    for line in text.lines() {
        let line = match (line.find('<'), line.rfind('>')) {
            (Some(start), Some(end)) if end > start && !line.starts_with('#') => {
                let placeholder = &line[start + 1..end];
                let value = match placeholder.contains('@') {
                    true => "someone@example.test",
                    false => "filled-in",
                };
                format!("{}{value}{}", &line[..start], &line[end + 1..])
            }
            _ => line.to_owned(),
        };
        let line = match line.split_once('=') {
            Some((key, _)) if key.trim() == "ca_file" => {
                format!("{key}= \"{}\"", dir.join("ca.pem").display())
            }
            Some((key, _)) if key.trim().ends_with("_file") => {
                format!("{key}= \"{}\"", dir.join("secret").display())
            }
            _ => line,
        };
        filled.push_str(&line);
        filled.push('\n');
    }
    filled
}

#[test]
fn ready_connectors_are_valid() {
    let connectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors");
    let mut checked = 0;
    for entry in std::fs::read_dir(&connectors).expect("connectors directory") {
        let path = entry.expect("entry").path();
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ca.pem");
        std::fs::copy(ca, dir.path().join("ca.pem")).expect("copy the test CA");
        // Valid both as a client secret and as an AMQP URL.
        write(
            dir.path(),
            "secret",
            "amqp://guest:guest@127.0.0.1:5672/%2f\n",
        );
        let text = std::fs::read_to_string(&path).expect("read connector");
        write(
            dir.path(),
            "connector.toml",
            &filled_connector(dir.path(), &text),
        );

        let output = mailbridge(dir.path(), &["--config", "connector.toml", "config"], &[]);

        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{}: {stderr}", path.display());
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} connector files");
}

#[test]
fn weakening_kafka_property_exits_78() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = format!(
        "{CONFIG}\n[brokers.kafka]\nkind = \"kafka\"\nbootstrap_servers = \"127.0.0.1:9092\"\n"
    );
    write(dir.path(), "mailbridge.toml", &config);
    write(dir.path(), "client-secret", "client-secret-value\n");
    let env = [
        ("MAILBRIDGE_CONFIG", "mailbridge.toml"),
        ("MAILBRIDGE_BROKERS__KAFKA__PROPERTIES__ACKS", "1"),
        ("MAILBRIDGE_ACCOUNTS__SUPPORT__IMAP__PORT", "abc"),
    ];

    let output = mailbridge(dir.path(), &["config"], &env);

    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(output.stdout.is_empty());
    let line = stderr
        .lines()
        .find(|line| line.starts_with("brokers.kafka.properties.acks = 1: "))
        .unwrap_or_else(|| panic!("no line for acks in {stderr}"));
    assert!(
        line.contains("MAILBRIDGE_BROKERS__KAFKA__PROPERTIES__ACKS"),
        "{line}"
    );
    assert!(line.contains("remove acks from the properties"), "{line}");
    assert!(
        stderr.contains("accounts.support.imap.port = \"abc\""),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("error: invalid configuration: 2 problems\n"),
        "{stderr}"
    );
}
