//! `[brokers.NAME]`: a Kafka cluster or an AMQP server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::properties;
use super::reader::Table;
use super::secret::Secret;
use super::servers::ServerList;
use super::values::{Invalid, check_ca_file, choice};

choice! {
    /// Broker protocol.
    pub enum BrokerKind {
        /// Apache Kafka, through librdkafka.
        Kafka = "kafka",
        /// AMQP 0-9-1, as spoken by RabbitMQ.
        Amqp = "amqp",
    }
}

/// A broker connection, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Broker {
    /// A Kafka cluster.
    Kafka(Kafka),
    /// An AMQP server.
    Amqp(Amqp),
}

impl Broker {
    /// Returns the broker protocol.
    pub fn kind(&self) -> BrokerKind {
        match self {
            Self::Kafka(_) => BrokerKind::Kafka,
            Self::Amqp(_) => BrokerKind::Amqp,
        }
    }
}

/// Kafka cluster settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kafka {
    /// Comma-separated `host:port` list of the first brokers to contact,
    /// with an IPv6 address in brackets (`[::1]:9092`). Whitespace around
    /// the commas is removed. Required.
    pub bootstrap_servers: String,
    /// librdkafka client properties, passed on as they are. A property is
    /// a secret when its name, in any case, contains `pass`, `pwd`,
    /// `secret`, `token` or `pem`, or `key` without ending in `.location`,
    /// or a misspelling of `password`, `passphrase` or `secret`, and when
    /// it is `sasl.oauthbearer.config`. Default: none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, Property>,
}

/// Value of a Kafka client property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Property {
    /// A value printed as it is.
    Plain(String),
    /// A password, token or key, printed redacted.
    Secret(Secret),
}

impl Property {
    /// Returns the value to hand to librdkafka. Never log it: it may be a
    /// secret.
    pub fn expose(&self) -> &str {
        match self {
            Self::Plain(value) => value,
            Self::Secret(secret) => secret.expose(),
        }
    }
}

/// AMQP server settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Amqp {
    /// `amqp://` or `amqps://` URL with credentials and virtual host, such
    /// as `amqp://user:password@host:5672/%2f`. A secret. Required.
    pub url: Secret,
    /// PEM file of CA certificates trusted for `amqps://` in addition to
    /// the platform roots. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

const KAFKA_KEYS: &[&str] = &["bootstrap_servers", "properties"];
const AMQP_KEYS: &[&str] = &["url", "url_file", "ca_file"];

/// Reads one `[brokers.NAME]` table. Returns the kind even when the rest
/// is invalid, so pipelines can still be checked against it.
pub(crate) fn read(mut table: Table<'_>) -> (Option<BrokerKind>, Option<Broker>) {
    let kind = table.require::<BrokerKind>("kind");
    let broker = match kind {
        Some(BrokerKind::Kafka) => read_kafka(&mut table).map(Broker::Kafka),
        Some(BrokerKind::Amqp) => read_amqp(&mut table).map(Broker::Amqp),
        None => {
            table.skip_rest();
            None
        }
    };
    table.finish();

    (kind, broker)
}

fn read_kafka(table: &mut Table<'_>) -> Option<Kafka> {
    reject_keys(table, AMQP_KEYS, "amqp");
    let bootstrap_servers = table.require::<ServerList>("bootstrap_servers");
    let properties = properties::read(table);

    Some(Kafka {
        bootstrap_servers: bootstrap_servers?.0,
        properties,
    })
}

fn read_amqp(table: &mut Table<'_>) -> Option<Amqp> {
    reject_keys(table, KAFKA_KEYS, "kafka");
    let url = table.require_secret_checked("url", check_amqp_url);
    let ca_file = table.get_checked("ca_file", |file: &PathBuf| check_ca_file(file));

    Some(Amqp { url: url?, ca_file })
}

fn reject_keys(table: &mut Table<'_>, keys: &[&str], kind: &str) {
    for key in keys {
        let reason = format!("applies only to brokers of kind {kind}");
        table.reject(key, Invalid::new(reason).with_fix(Some("remove it".into())));
    }
}

/// Checks an AMQP URL without quoting it, because it carries a password.
/// The url crate's parse errors (url 2.5) name the failed part, never the
/// input. The URL must also parse as lapin's AMQP URI, which the
/// connection uses.
fn check_amqp_url(url: &Secret) -> Result<(), Invalid> {
    let fix = || Some(AMQP_URL_FIX.to_owned());
    let no_host = || Invalid::new("URL has no host").with_fix(fix());
    let text = url.expose();
    let parsed = match url::Url::parse(text) {
        Ok(parsed) => parsed,
        Err(url::ParseError::EmptyHost) => return Err(no_host()),
        Err(err) => return Err(Invalid::new(format!("invalid URL: {err}")).with_fix(fix())),
    };
    if !matches!(parsed.scheme(), "amqp" | "amqps") {
        return Err(Invalid::new("expected an amqp:// or amqps:// URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(no_host());
    }
    if !is_percent_encoded_userinfo(text) {
        let reason = "the user name or password contains a character that must be \
                      percent-encoded";
        let fix = "percent-encode the user name and password, for example a space as %20, \
                   `@` as %40, `/` as %2F and `%` as %25";
        return Err(Invalid::new(reason).with_fix(Some(fix.to_owned())));
    }
    if let Err(err) = text.parse::<lapin::uri::AMQPUri>() {
        // amq-protocol-uri 7.2 quotes the whole input in one of its
        // messages.
        let err = err.replace(text, super::REDACTED);
        return Err(Invalid::new(format!("invalid AMQP URI: {err}")).with_fix(fix()));
    }

    Ok(())
}

/// Fix of an AMQP URL that does not parse.
const AMQP_URL_FIX: &str = "write it as amqp://user:password@host:5672/vhost, with the user \
                            name and password percent-encoded";

/// Tells whether the user part of a URL contains only the characters that
/// RFC 3986 allows in `userinfo`: unreserved characters, sub-delims, `:`
/// and valid `%XX` escapes. The url crate would percent-encode others,
/// such as a space, where the user may have meant something else.
fn is_percent_encoded_userinfo(text: &str) -> bool {
    let Some((_, rest)) = text.split_once("://") else {
        return true;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return true;
    };

    let bytes = userinfo.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%' {
            let escape = bytes.get(index + 1..index + 3);
            if !escape.is_some_and(|digits| digits.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            index += 3;
            continue;
        }
        let allowed = byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:".contains(&byte);
        if !allowed {
            return false;
        }
        index += 1;
    }

    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str) -> Result<(), Invalid> {
        check_amqp_url(&Secret::new(url))
    }

    #[test]
    fn amqp_url_accepts_encoded_user_part() {
        let valid = [
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "amqps://user%40example:pass%20word%25@rabbit.example:5671/vhost",
            "amqp://user:p!$&'()*+,;=:~@h/",
            "amqp://h:5672/?heartbeat=30",
        ];
        for url in valid {
            assert!(check(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn amqp_url_rejects_unencoded_user_part() {
        let invalid = [
            "amqp://guest:pass word-value@127.0.0.1:5672/%2f",
            "amqp://gu est:secret-value@h/",
            "amqp://user:50%-value@h/",
            "amqp://user:50%zz-value@h/",
            "amqp://user:p\"-value@h/",
        ];
        for url in invalid {
            let err = check(url).expect_err(url);
            assert!(
                err.reason.contains("percent-encoded"),
                "{url}: {}",
                err.reason
            );
            assert!(!err.reason.contains("value"), "{url}: {}", err.reason);
            let fix = err.fix.unwrap_or_default();
            assert!(fix.contains("%20"), "{url}: {fix}");
        }
    }

    #[test]
    fn amqp_url_rejected_by_amqp_uri_parser() {
        let invalid = [
            "amqp://user:p%FF-value@h/",
            "amqp://user:secret-value@h/?heartbeat=soon",
        ];
        for url in invalid {
            let err = check(url).expect_err(url);
            assert!(
                err.reason.starts_with("invalid AMQP URI: "),
                "{url}: {}",
                err.reason
            );
            assert!(!err.reason.contains("value"), "{url}: {}", err.reason);
            assert_eq!(err.fix.as_deref(), Some(AMQP_URL_FIX));
        }
    }
}
