//! docker-compose.yml, checked without a Docker engine: the mailbridge
//! service's environment alone is a valid configuration that mirrors
//! connectors/local.toml, and the servers' ports, names and the OAuth2
//! client are those of scripts/stack.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use yaml_rust2::{Yaml, YamlLoader};

const COMPOSE: &str = include_str!("../docker-compose.yml");
const STACK_SCRIPT: &str = include_str!("../scripts/stack");
const MAIL_ENTRYPOINT: &str = include_str!("../stack/mail/entrypoint.sh");
const LOCAL_TOML: &str = include_str!("../connectors/local.toml");
const CA: &str = include_str!("fixtures/ca.pem");

fn compose() -> Yaml {
    let mut documents = YamlLoader::load_from_str(COMPOSE).expect("docker-compose.yml is YAML");
    assert_eq!(documents.len(), 1, "docker-compose.yml has one document");
    documents.remove(0)
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    let service = &compose["services"][name];
    assert!(
        !service.is_badvalue(),
        "docker-compose.yml has no service {name}"
    );
    service
}

/// Returns a service's `environment` mapping with the values as Compose
/// passes them to the container: numbers as their text.
fn environment(compose: &Yaml, name: &str) -> BTreeMap<String, String> {
    let mapping = service(compose, name)["environment"]
        .as_hash()
        .unwrap_or_else(|| panic!("service {name} has an environment mapping"));
    let mut variables = BTreeMap::new();
    for (key, value) in mapping {
        let key = key.as_str().expect("variable names are strings").to_owned();
        let value = match value {
            Yaml::String(text) | Yaml::Real(text) => text.clone(),
            Yaml::Integer(number) => number.to_string(),
            other => panic!("{name}: {key} = {other:?} must be a string or a number"),
        };
        variables.insert(key, value);
    }
    variables
}

/// Returns the strings of a service's list, such as `ports` or `volumes`.
fn list(compose: &Yaml, name: &str, key: &str) -> Vec<String> {
    service(compose, name)[key]
        .as_vec()
        .unwrap_or_else(|| panic!("service {name} has a {key} list"))
        .iter()
        .map(|item| item.as_str().expect("list items are strings").to_owned())
        .collect()
}

/// Defaults of scripts/stack, read from the script.
struct Stack {
    ports: BTreeMap<String, u16>,
    client_id: String,
    client_secret: String,
    mail_domain: String,
    kafka_topics: String,
}

/// Returns the text after `prefix` on the script line that starts with it.
fn line_value<'a>(script: &'a str, prefix: &str) -> &'a str {
    script
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?}"))
}

/// Returns the text between `(` and `)` of a Bash array assignment.
fn array_body<'a>(script: &'a str, assignment: &str) -> &'a str {
    let start = script
        .find(assignment)
        .unwrap_or_else(|| panic!("no {assignment:?}"))
        + assignment.len();
    let end = script[start..].find(')').expect("the array is closed");
    &script[start..start + end]
}

fn stack() -> Stack {
    let mut ports = BTreeMap::new();
    for entry in array_body(STACK_SCRIPT, "declare -A DEFAULT_PORT=(").split_whitespace() {
        let (name, port) = entry
            .strip_prefix('[')
            .and_then(|entry| entry.split_once("]="))
            .unwrap_or_else(|| panic!("DEFAULT_PORT entry {entry:?} is [NAME]=PORT"));
        let port = port.parse().expect("a default port is a number");
        ports.insert(name.to_owned(), port);
    }
    let mail_domain = line_value(STACK_SCRIPT, "MAIL_DOMAIN=${STACK_MAIL_DOMAIN:-")
        .strip_suffix('}')
        .expect("MAIL_DOMAIN has a default");
    let topics: Vec<&str> = array_body(STACK_SCRIPT, "KAFKA_TOPICS=(")
        .split_whitespace()
        .collect();
    Stack {
        ports,
        client_id: line_value(STACK_SCRIPT, "OAUTH_CLIENT_ID=").to_owned(),
        client_secret: line_value(STACK_SCRIPT, "OAUTH_CLIENT_SECRET=").to_owned(),
        mail_domain: mail_domain.to_owned(),
        kafka_topics: topics.join(" "),
    }
}

impl Stack {
    fn port(&self, name: &str) -> u16 {
        *self
            .ports
            .get(name)
            .unwrap_or_else(|| panic!("scripts/stack has no default {name}"))
    }
}

/// Runs `mailbridge config` in `dir` with only the given environment.
fn mailbridge_config(dir: &Path, env: &BTreeMap<String, String>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailbridge"))
        .arg("config")
        .current_dir(dir)
        .env_clear()
        .envs(env)
        .output()
        .expect("mailbridge runs")
}

/// Returns the printed configuration, after asserting exit status 0.
fn printed_config(output: Output) -> toml::Table {
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert!(
        output.status.success(),
        "status {}: {stderr}",
        output.status
    );
    toml::from_str(&stdout).expect("stdout is TOML")
}

/// Writes the test CA to `relative` under `dir`, where a configuration's
/// relative `ca_file` finds it.
fn write_ca(dir: &Path, relative: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().expect("a file path has a parent"))
        .expect("directory is created");
    std::fs::write(path, CA).expect("CA file is written");
}

/// Returns the merged configuration of the compose file's mailbridge
/// environment, run in a temporary directory in place of its `working_dir`.
fn compose_config() -> toml::Table {
    let env = environment(&compose(), "mailbridge");
    let dir = tempfile::tempdir().expect("temporary directory");
    for key in [
        "MAILBRIDGE_ACCOUNTS__LOCAL__IMAP__CA_FILE",
        "MAILBRIDGE_ACCOUNTS__LOCAL__SMTP__CA_FILE",
    ] {
        let path = &env[key];
        assert!(Path::new(path).is_relative(), "{key} = {path} is relative");
        write_ca(dir.path(), path);
    }
    printed_config(mailbridge_config(dir.path(), &env))
}

/// Returns the merged configuration of connectors/local.toml, with the
/// files of a stack's state directory that it reads.
fn local_config() -> toml::Table {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("local.toml"), LOCAL_TOML).expect("file is written");
    write_ca(dir.path(), ".stack/tls/ca.crt");
    std::fs::write(
        dir.path().join(".stack/oauth-client-secret"),
        stack().client_secret,
    )
    .expect("secret file is written");
    let env = BTreeMap::from([("MAILBRIDGE_CONFIG".to_owned(), "local.toml".to_owned())]);
    printed_config(mailbridge_config(dir.path(), &env))
}

/// Adds every leaf of `value` to `out`, keyed by its dotted path.
fn flatten(path: &str, value: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                flatten(&format!("{path}.{key}"), value, out);
            }
        }
        leaf => {
            out.insert(path.to_owned(), leaf.clone());
        }
    }
}

/// Flattens the accounts, brokers and pipelines, the sections that the
/// compose file mirrors. The image sets `state` and `metrics`.
fn flatten_mirrored(config: &toml::Table) -> BTreeMap<String, toml::Value> {
    let mut out = BTreeMap::new();
    for section in ["accounts", "brokers", "inbound", "outbound"] {
        let value = config
            .get(section)
            .unwrap_or_else(|| panic!("the configuration has [{section}]"));
        flatten(section, value, &mut out);
    }
    out
}

/// Returns the value that the compose file must have where
/// connectors/local.toml has `local`: hosts become service names and the
/// CA file is the one mounted from the mail service.
fn expected_in_compose(key: &str, local: &toml::Value) -> toml::Value {
    let text = local.as_str();
    let replaced = |service: &str| {
        let text = text.unwrap_or_else(|| panic!("{key} is a string"));
        toml::Value::String(text.replace("127.0.0.1", service))
    };
    if key.ends_with(".imap.host") || key.ends_with(".smtp.host") {
        replaced("mail")
    } else if key.ends_with(".ca_file") {
        toml::Value::String("tls/ca.crt".to_owned())
    } else if key.ends_with(".oauth2.token_url") || key.ends_with(".device_authorization_url") {
        replaced("oauth2")
    } else if key.ends_with(".bootstrap_servers") {
        replaced("kafka")
    } else {
        local.clone()
    }
}

#[test]
fn compose_environment_is_valid_config() {
    let env = environment(&compose(), "mailbridge");
    assert!(!env.contains_key("MAILBRIDGE_CONFIG"), "no file is named");
    for key in env.keys() {
        assert!(key.starts_with("MAILBRIDGE_"), "{key} is a mailbridge key");
    }

    let config = compose_config();

    let names = |section: &str| -> Vec<String> {
        config[section]
            .as_table()
            .unwrap_or_else(|| panic!("[{section}] is a table"))
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(names("accounts"), ["local"]);
    assert_eq!(names("brokers"), ["kafka", "rabbitmq"]);
    assert_eq!(names("inbound"), ["kafka", "rabbitmq"]);
    assert_eq!(names("outbound"), ["replies"]);
    let account = &config["accounts"]["local"];
    assert_eq!(account["address"].as_str(), Some("demo@example.test"));
    assert_eq!(account["imap"]["host"].as_str(), Some("mail"));
    assert_eq!(account["smtp"]["host"].as_str(), Some("mail"));
    assert_eq!(
        account["oauth2"]["client_secret"].as_str(),
        Some("[redacted]")
    );
    let brokers = &config["brokers"];
    assert_eq!(brokers["kafka"]["kind"].as_str(), Some("kafka"));
    assert_eq!(brokers["rabbitmq"]["kind"].as_str(), Some("amqp"));
    assert_eq!(
        config["inbound"]["rabbitmq"]["broker"].as_str(),
        Some("rabbitmq")
    );
    assert_eq!(config["inbound"]["rabbitmq"]["exchange"].as_str(), Some(""));
    assert_eq!(
        config["inbound"]["kafka"]["topic"].as_str(),
        Some("mail.inbound")
    );
    let replies = &config["outbound"]["replies"];
    assert_eq!(replies["topic"].as_str(), Some("mail.outbound"));
    assert_eq!(replies["dead_letter"].as_str(), Some("mail.dead-letter"));
}

#[test]
fn compose_config_mirrors_local_toml() {
    let from_compose = flatten_mirrored(&compose_config());
    let from_local = flatten_mirrored(&local_config());

    let only_local: Vec<&String> = from_local
        .keys()
        .filter(|key| !from_compose.contains_key(*key))
        .collect();
    let only_compose: Vec<&String> = from_compose
        .keys()
        .filter(|key| !from_local.contains_key(*key))
        .collect();
    assert!(only_local.is_empty(), "missing in compose: {only_local:?}");
    assert!(
        only_compose.is_empty(),
        "missing in local.toml: {only_compose:?}"
    );
    for (key, local_value) in &from_local {
        let expected = expected_in_compose(key, local_value);
        assert_eq!(from_compose[key], expected, "{key}");
    }

    // The AMQP URL is a secret, printed as [redacted]: compare the sources.
    let local_toml: toml::Table = toml::from_str(LOCAL_TOML).expect("local.toml is TOML");
    let local_url = local_toml["brokers"]["rabbitmq"]["url"]
        .as_str()
        .expect("local.toml has the AMQP URL");
    let env = environment(&compose(), "mailbridge");
    assert_eq!(
        env["MAILBRIDGE_BROKERS__RABBITMQ__URL"],
        local_url.replace("127.0.0.1", "rabbitmq")
    );
}

#[test]
fn compose_values_match_stack_script() {
    let stack = stack();
    let compose = compose();
    let mail = environment(&compose, "mail");
    let mail_ports = list(&compose, "mail", "ports");
    let oauth2 = environment(&compose, "oauth2");
    let mailbridge = environment(&compose, "mailbridge");

    for name in [
        "IMAP_PORT",
        "IMAPS_PORT",
        "SMTP_PORT",
        "SMTPS_PORT",
        "LMTP_PORT",
        "AUTH_PORT",
    ] {
        assert_eq!(mail[name], stack.port(name).to_string(), "mail {name}");
    }
    for name in ["IMAP_PORT", "IMAPS_PORT", "SMTP_PORT", "SMTPS_PORT"] {
        let port = stack.port(name);
        let published = format!("127.0.0.1:{port}:{port}");
        assert!(
            mail_ports.contains(&published),
            "mail publishes {published}"
        );
    }
    assert_eq!(mail["MAIL_DOMAIN"], stack.mail_domain);
    let issuer = format!("http://oauth2:{}", stack.port("OAUTH_PORT"));
    assert_eq!(mail["OAUTH_ISSUER"], issuer);

    assert_eq!(
        oauth2["OAUTH2_SERVER_PORT"],
        stack.port("OAUTH_PORT").to_string()
    );
    assert_eq!(oauth2["OAUTH2_SERVER_ISSUER"], issuer);
    let oauth_port = stack.port("OAUTH_PORT");
    let published = format!("127.0.0.1:{oauth_port}:{oauth_port}");
    assert_eq!(list(&compose, "oauth2", "ports"), [published]);

    let account = "MAILBRIDGE_ACCOUNTS__LOCAL__";
    let variable = |name: &str| &mailbridge[&format!("{account}{name}")];
    assert_eq!(variable("OAUTH2__CLIENT_ID"), &stack.client_id);
    assert_eq!(variable("OAUTH2__CLIENT_SECRET"), &stack.client_secret);
    assert_eq!(
        variable("OAUTH2__AUTHORIZE_URL"),
        &format!("http://127.0.0.1:{oauth_port}/authorize")
    );
    assert_eq!(variable("OAUTH2__TOKEN_URL"), &format!("{issuer}/token"));
    assert_eq!(variable("ADDRESS"), &format!("demo@{}", stack.mail_domain));
    assert_eq!(variable("IMAP__HOST"), "mail");
    assert_eq!(
        variable("IMAP__PORT"),
        &stack.port("IMAPS_PORT").to_string()
    );
    assert_eq!(variable("SMTP__HOST"), "mail");
    assert_eq!(variable("SMTP__PORT"), &stack.port("SMTP_PORT").to_string());

    let bootstrap = format!("kafka:{}", stack.port("KAFKA_PORT"));
    assert_eq!(
        mailbridge["MAILBRIDGE_BROKERS__KAFKA__BOOTSTRAP_SERVERS"],
        bootstrap
    );
    let kafka = environment(&compose, "kafka");
    assert_eq!(
        kafka["KAFKA_ADVERTISED_LISTENERS"],
        format!("PLAINTEXT://{bootstrap}")
    );
    assert_eq!(
        mailbridge["MAILBRIDGE_BROKERS__RABBITMQ__URL"],
        format!(
            "amqp://guest:guest@rabbitmq:{}/%2f",
            stack.port("AMQP_PORT")
        )
    );
    assert_eq!(
        environment(&compose, "kafka-topics")["TOPICS"],
        stack.kafka_topics
    );
}

#[test]
fn compose_shares_mail_ca() {
    let compose = compose();
    let state = line_value(MAIL_ENTRYPOINT, "STATE=");
    let mail_volumes = list(&compose, "mail", "volumes");
    let mail_tls = format!("mail-tls:{state}/tls");
    assert!(mail_volumes.contains(&mail_tls), "mail mounts {mail_tls}");

    let working_dir = service(&compose, "mailbridge")["working_dir"]
        .as_str()
        .expect("mailbridge has a working_dir");
    let env = environment(&compose, "mailbridge");
    let ca_file = &env["MAILBRIDGE_ACCOUNTS__LOCAL__IMAP__CA_FILE"];
    let ca_dir = Path::new(ca_file)
        .parent()
        .expect("ca_file is in a directory");
    let mount = format!(
        "mail-tls:{}:ro",
        Path::new(working_dir).join(ca_dir).display()
    );
    let mailbridge_volumes = list(&compose, "mailbridge", "volumes");
    assert!(
        mailbridge_volumes.contains(&mount),
        "mailbridge mounts {mount}"
    );
    assert_eq!(Path::new(ca_file).file_name(), Some("ca.crt".as_ref()));
}
