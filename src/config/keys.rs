//! The reference list of every configuration key. The reader checks each
//! key it reads against it, unknown keys are explained with it, and a test
//! checks README's key table against it.

use super::LogFormat;
use super::account::{Grant, Mechanism, Provider};
use super::broker::BrokerKind;
use super::inbound::{AfterPublish, Coordination, Mode, StartFrom, UidvalidityChange};
use super::server::Tls;
use super::values::{Choice, Invalid};

/// Placeholder for a section name in key paths, as in `accounts.NAME.address`.
pub const NAME: &str = "NAME";

/// Type of a key's value, as README's table names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Text,
    /// A string that is redacted, and may be given as `KEY_file`.
    Secret,
    /// `true` or `false`.
    Boolean,
    /// A TCP port, 1 to 65535.
    Port,
    /// A positive integer.
    Integer,
    /// A humantime duration such as `30s`.
    Duration,
    /// A file or directory path.
    Path,
    /// An IP address and port.
    Address,
    /// An http or https URL.
    Url,
    /// A list of strings.
    List,
    /// A Kafka client property value.
    Properties,
    /// One of fixed names.
    Choice(&'static [&'static str]),
}

impl Kind {
    /// Names the type as README's key table does.
    pub fn name(self) -> String {
        let name = match self {
            Self::Text => "string",
            Self::Secret => "secret string",
            Self::Boolean => "boolean",
            Self::Port => "port",
            Self::Integer => "integer",
            Self::Duration => "duration",
            Self::Path => "path",
            Self::Address => "socket address",
            Self::Url => "URL",
            Self::List => "list of strings",
            Self::Properties => "string",
            Self::Choice(names) => {
                let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
                return format!("one of {}", quoted.join(", "));
            }
        };
        name.to_owned()
    }
}

/// One configuration key: its path with `NAME` for section names, its
/// type, and its default as README writes it.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// Dotted path, with `NAME` for section names and `*` for free-form keys.
    pub path: &'static str,
    /// Type of the value.
    pub kind: Kind,
    /// Default, or when the key is required, as README writes it.
    pub default: &'static str,
}

const fn key(path: &'static str, kind: Kind, default: &'static str) -> Key {
    Key {
        path,
        kind,
        default,
    }
}

const REQUIRED: &str = "required";
const UNSET: &str = "none";
const PRESET: &str = "provider preset";

/// Every key, in README's order.
#[rustfmt::skip]
pub const KEYS: &[Key] = &[
    key("state.directory", Kind::Path, "`state`"),
    key("metrics.listen", Kind::Address, "`127.0.0.1:9464`"),
    key("log.level", Kind::Text, "`info`"),
    key("log.format", Kind::Choice(LogFormat::NAMES), "`text`"),
    key("shutdown.timeout", Kind::Duration, "`30s`"),
    key("accounts.NAME.address", Kind::Text, REQUIRED),
    key("accounts.NAME.login_hint", Kind::Text, "the `address`"),
    key("accounts.NAME.oauth2.provider", Kind::Choice(Provider::NAMES), REQUIRED),
    key("accounts.NAME.oauth2.grant", Kind::Choice(Grant::NAMES), "`authorization_code`"),
    key("accounts.NAME.oauth2.client_id", Kind::Text, REQUIRED),
    key("accounts.NAME.oauth2.client_secret", Kind::Secret, UNSET),
    key("accounts.NAME.oauth2.tenant", Kind::Text, "`organizations` for microsoft"),
    key("accounts.NAME.oauth2.scopes", Kind::List, PRESET),
    key("accounts.NAME.oauth2.authorize_url", Kind::Url, PRESET),
    key("accounts.NAME.oauth2.token_url", Kind::Url, PRESET),
    key("accounts.NAME.oauth2.device_authorization_url", Kind::Url, PRESET),
    key("accounts.NAME.oauth2.redirect_port", Kind::Port, "a free port"),
    key("accounts.NAME.oauth2.mechanism", Kind::Choice(Mechanism::NAMES), "`xoauth2`"),
    key("accounts.NAME.imap.host", Kind::Text, REQUIRED),
    key("accounts.NAME.imap.port", Kind::Port, "`993` with implicit TLS, else `143`"),
    key("accounts.NAME.imap.tls", Kind::Choice(Tls::NAMES), "`implicit`"),
    key("accounts.NAME.imap.allow_plaintext", Kind::Boolean, "`false`"),
    key("accounts.NAME.imap.ca_file", Kind::Path, UNSET),
    key("accounts.NAME.imap.danger_accept_invalid_certs", Kind::Boolean, "`false`"),
    key("accounts.NAME.imap.connect_timeout", Kind::Duration, "`30s`"),
    key("accounts.NAME.smtp.host", Kind::Text, REQUIRED),
    key("accounts.NAME.smtp.port", Kind::Port, "`465` with implicit TLS, else `587`"),
    key("accounts.NAME.smtp.tls", Kind::Choice(Tls::NAMES), "`starttls`"),
    key("accounts.NAME.smtp.allow_plaintext", Kind::Boolean, "`false`"),
    key("accounts.NAME.smtp.ca_file", Kind::Path, UNSET),
    key("accounts.NAME.smtp.danger_accept_invalid_certs", Kind::Boolean, "`false`"),
    key("accounts.NAME.smtp.connect_timeout", Kind::Duration, "`30s`"),
    key("brokers.NAME.kind", Kind::Choice(BrokerKind::NAMES), REQUIRED),
    key("brokers.NAME.bootstrap_servers", Kind::Text, "required for kafka"),
    key("brokers.NAME.properties.*", Kind::Properties, UNSET),
    key("brokers.NAME.url", Kind::Secret, "required for amqp"),
    key("brokers.NAME.ca_file", Kind::Path, UNSET),
    key("inbound.NAME.account", Kind::Text, REQUIRED),
    key("inbound.NAME.mailboxes", Kind::List, "`[\"INBOX\"]`"),
    key("inbound.NAME.broker", Kind::Text, "none: standard output"),
    key("inbound.NAME.topic", Kind::Text, "required for kafka"),
    key("inbound.NAME.exchange", Kind::Text, "`\"\"` for amqp"),
    key("inbound.NAME.routing_key", Kind::Text, "required for the `\"\"` exchange"),
    key("inbound.NAME.mode", Kind::Choice(Mode::NAMES), "`idle`"),
    key("inbound.NAME.poll_interval", Kind::Duration, "`60s`"),
    key("inbound.NAME.idle_interval", Kind::Duration, "`25m`"),
    key("inbound.NAME.liveness_timeout", Kind::Duration, "`5m`"),
    key("inbound.NAME.start_from", Kind::Choice(StartFrom::NAMES), "`all`"),
    key("inbound.NAME.batch_size", Kind::Integer, "`100`"),
    key("inbound.NAME.after_publish", Kind::Choice(AfterPublish::NAMES), "`keep`"),
    key("inbound.NAME.move_to", Kind::Text, "required with `move`"),
    key("inbound.NAME.keyword", Kind::Text, "`$MailbridgePublished`"),
    key(
        "inbound.NAME.on_uidvalidity_change",
        Kind::Choice(UidvalidityChange::NAMES),
        "`skip_known`",
    ),
    key("inbound.NAME.attachment_bytes", Kind::Integer, "`0`"),
    key("inbound.NAME.raw_bytes", Kind::Integer, "`0`"),
    key("inbound.NAME.max_message_bytes", Kind::Integer, "`26214400`"),
    key("inbound.NAME.max_batch_bytes", Kind::Integer, "`33554432`"),
    key("inbound.NAME.declare", Kind::Boolean, "`false`"),
    key(
        "inbound.NAME.coordination",
        Kind::Choice(Coordination::NAMES),
        "`none`",
    ),
    key(
        "inbound.NAME.coordination_group",
        Kind::Text,
        "`mailbridge-inbound-NAME`",
    ),
    key("inbound.NAME.coordination_partitions", Kind::Integer, "`60`"),
    key("outbound.NAME.account", Kind::Text, REQUIRED),
    key("outbound.NAME.broker", Kind::Text, REQUIRED),
    key("outbound.NAME.topic", Kind::Text, "required for kafka"),
    key("outbound.NAME.queue", Kind::Text, "required for amqp"),
    key("outbound.NAME.group_id", Kind::Text, "`mailbridge-NAME` for kafka"),
    key("outbound.NAME.dead_letter", Kind::Text, REQUIRED),
    key("outbound.NAME.status", Kind::Text, UNSET),
    key("outbound.NAME.max_in_flight", Kind::Integer, "`4`"),
    key("outbound.NAME.max_attempts", Kind::Integer, "`10`"),
    key("outbound.NAME.max_attachment_bytes", Kind::Integer, "`26214400`"),
];

/// Joins a table pattern and a key.
pub(crate) fn join(pattern: &str, key: &str) -> String {
    match pattern.is_empty() {
        true => key.to_owned(),
        false => format!("{pattern}.{key}"),
    }
}

fn find(pattern: &str) -> Option<&'static Key> {
    KEYS.iter().find(|key| key.path == pattern)
}

/// Tells whether `pattern` is a key or a table of the list, or the
/// `_file` form of a secret key.
pub(crate) fn is_known(pattern: &str) -> bool {
    let table = format!("{pattern}.");
    let listed = KEYS
        .iter()
        .any(|key| key.path == pattern || key.path.starts_with(&table));

    listed || pattern.strip_suffix("_file").is_some_and(is_secret)
}

/// Tells whether the key at `pattern` is a secret.
pub(crate) fn is_secret(pattern: &str) -> bool {
    find(pattern).is_some_and(|key| key.kind == Kind::Secret)
}

/// Names the keys directly inside the table at `pattern`.
fn children(pattern: &str) -> Vec<&'static str> {
    let prefix = join(pattern, "");
    let mut names: Vec<&str> = KEYS
        .iter()
        .filter_map(|key| key.path.strip_prefix(prefix.as_str()))
        .filter_map(|rest| rest.split('.').next())
        .collect();
    names.dedup();
    names
}

/// Explains why `key` is not accepted in the table at `pattern`.
pub(crate) fn unknown(pattern: &str, key: &str) -> Invalid {
    if let Some(stem) = key.strip_suffix("_file") {
        let plain = find(&join(pattern, stem)).filter(|known| known.kind != Kind::Secret);
        if plain.is_some() {
            let reason = format!("`{stem}` is not a secret, so `{key}` is not accepted");
            return Invalid::new(reason).with_fix(Some(format!("set `{stem}` itself")));
        }
    }

    let known = children(pattern);
    let closest = known
        .iter()
        .filter(|name| strsim::levenshtein(name, key) <= 2)
        .min_by_key(|name| strsim::levenshtein(name, key));
    let fix = match closest {
        Some(name) => format!("did you mean `{name}`?"),
        None => format!("known keys here: {}", known.join(", ")),
    };

    Invalid::new("unknown key").with_fix(Some(fix))
}

/// Checks a section name. Names become parts of environment variable
/// names, which figment lowercases and splits on `__`.
pub(crate) fn check_name(name: &str) -> Result<(), Invalid> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    let valid_start = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if valid_chars && valid_start && !name.contains("__") {
        return Ok(());
    }

    let reason = "invalid name: use lowercase letters, digits, `-` and `_`, starting with a \
                  letter or digit and without `__`, so that environment variables can set it";
    Err(Invalid::new(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_of_account() {
        let names = children("accounts.NAME");

        assert_eq!(names, ["address", "login_hint", "oauth2", "imap", "smtp"]);
    }

    #[test]
    fn unknown_suggests_close_key() {
        let invalid = unknown("accounts.NAME.oauth2", "client_secert");

        assert_eq!(
            invalid.fix.as_deref(),
            Some("did you mean `client_secret`?")
        );
    }

    #[test]
    fn unknown_file_on_plain_key() {
        let invalid = unknown("accounts.NAME.imap", "host_file");

        assert_eq!(
            invalid.reason,
            "`host` is not a secret, so `host_file` is not accepted"
        );
    }

    #[test]
    fn check_name_rejects_upper_case() {
        assert!(check_name("support").is_ok());
        assert!(check_name("m365-shared_1").is_ok());
        assert!(check_name("Support").is_err());
        assert!(check_name("a__b").is_err());
        assert!(check_name("_a").is_err());
    }
}
