//! `[brokers.NAME.properties]`: librdkafka client properties, passed on as
//! they are, with the secret ones redacted.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use figment::value::Value;

use super::broker::Property;
use super::error::Origin;
use super::reader::{Context, Table};
use super::secret_forms::{Form, choose_form, read_secret_file, secret_text};
use super::values::{Invalid, describe, kind_of};

/// Properties that have their own key or are set per pipeline.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set bootstrap_servers instead"),
    ("group.id", "set group_id in the outbound pipeline instead"),
];

/// Properties that mailbridge sets itself because at-least-once delivery
/// needs them, with the values a user may confirm. Values are compared
/// without case, as librdkafka compares booleans. `request.required.acks`
/// is librdkafka's name of `acks`.
const REQUIRED: &[(&str, &str, &[&str])] = &[
    ("enable.idempotence", "true", &["true", "t", "1"]),
    ("acks", "all", &["all", "-1"]),
    ("request.required.acks", "all", &["all", "-1"]),
];

/// Properties the publisher cannot work with, and why.
const UNSUPPORTED: &[(&str, &str)] = &[(
    "transactional.id",
    "the publisher does not use transactions, and a transactional producer \
     rejects records sent outside one",
)];

/// Checks a property against the ones that would weaken delivery or that
/// the publisher does not support. Names are compared without case, so
/// that no spelling slips past. Returns the reason and fix of a rejected
/// property.
pub(crate) fn delivery_problem(name: &str, value: &str) -> Option<Invalid> {
    let lower = name.to_ascii_lowercase();
    let fix = Some(format!("remove {name} from the properties"));
    if let Some((_, required, allowed)) = REQUIRED.iter().find(|(n, ..)| *n == lower) {
        let normalized = value.trim().to_ascii_lowercase();
        if allowed.contains(&normalized.as_str()) {
            return None;
        }
        let reason = format!(
            "would turn off what at-least-once delivery needs, because mailbridge \
             always sets {name} = {required}"
        );
        return Some(Invalid::new(reason).with_fix(fix));
    }
    if let Some((_, why)) = UNSUPPORTED.iter().find(|(n, _)| *n == lower) {
        let reason = format!("is not supported: {why}");
        return Some(Invalid::new(reason).with_fix(fix));
    }

    None
}

/// Tells whether a librdkafka property is a secret. The test is broad on
/// purpose, because redacting a harmless value costs little and a printed
/// secret cannot be taken back. It ignores case, and `pass` also matches
/// `passphrase` and `passwd`. Of the names with `key`, only those ending
/// in `.location` are file paths and stay plain. A JAAS configuration, as
/// the Java client's `sasl.jaas.config`, carries a password inline.
pub(crate) fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let secret_word = [
        "pass",
        "pwd",
        "secret",
        "token",
        "pem",
        "jaas",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word));
    let key = name.contains("key") && !name.ends_with(".location");
    // A misspelling such as `sasl.pasword` contains none of the words
    // above. The shorter `secret` allows one edit only, so that `socket`
    // stays plain.
    let misspelt = name.split(['.', '_', '-']).any(|word| {
        [("password", 2), ("passphrase", 2), ("secret", 1)]
            .iter()
            .any(|(secret, edits)| strsim::damerau_levenshtein(word, secret) <= *edits)
    });

    secret_word || key || misspelt || name == "sasl.oauthbearer.config"
}

type Leaves<'a> = BTreeMap<String, (Vec<String>, &'a Value)>;

/// Reads the `properties` table of a Kafka broker.
///
/// A property name has dots, and figment splits environment variable names
/// on them, so `MAILBRIDGE_BROKERS__K__PROPERTIES__SASL__MECHANISM` arrives
/// as nested tables. Nested tables are therefore joined back with dots.
pub(crate) fn read(table: &mut Table<'_>) -> BTreeMap<String, Property> {
    let cx = table.cx();
    let prefix = table.path_of("properties").len();
    let mut leaves = Leaves::new();
    for (path, value) in table.leaves("properties") {
        let name = path[prefix..].join(".");
        choose(cx, &mut leaves, name, path, value);
    }
    choose_forms(cx, &mut leaves);

    leaves
        .iter()
        .filter_map(|(name, (path, value))| read_one(cx, name, path, value))
        .collect()
}

/// Keeps one of each secret property `NAME` and its `NAME_file`, the one
/// that [`choose_form`] picks. When both come from the same source,
/// neither is kept.
fn choose_forms(cx: &Context<'_>, leaves: &mut Leaves<'_>) {
    let stems: Vec<String> = leaves
        .keys()
        .filter_map(|name| name.strip_suffix("_file"))
        .filter(|stem| is_secret(stem) && leaves.contains_key(*stem))
        .map(str::to_owned)
        .collect();

    for stem in stems {
        let file_name = format!("{stem}_file");
        let form = {
            let (inline_path, inline) = &leaves[&stem];
            let (file_path, file) = &leaves[&file_name];
            choose_form(cx, &stem, (inline_path, inline), (file_path, file))
        };
        let dropped = match form {
            Some(Form::Inline) => vec![file_name],
            Some(Form::File) => vec![stem],
            None => vec![stem, file_name],
        };
        for name in dropped {
            leaves.remove(&name);
        }
    }
}

/// Keeps one value per property name: the environment wins over the file,
/// and two spellings in the same source are a problem.
fn choose<'a>(
    cx: &Context<'_>,
    leaves: &mut Leaves<'a>,
    name: String,
    path: Vec<String>,
    value: &'a Value,
) {
    match leaves.entry(name) {
        Entry::Vacant(entry) => {
            entry.insert((path, value));
        }
        Entry::Occupied(mut entry) => {
            let kept_from_env = cx.origin(entry.get().1) == Some(Origin::Environment);
            let new_from_env = cx.origin(value) == Some(Origin::Environment);
            if new_from_env && !kept_from_env {
                entry.insert((path, value));
            } else if new_from_env == kept_from_env {
                let reason = "property is set twice, as a dotted name and as nested tables";
                let fix = Some("keep one of them".to_owned());
                cx.reject(&path, value, false, Invalid::new(reason).with_fix(fix));
            }
        }
    }
}

fn read_one(
    cx: &Context<'_>,
    name: &str,
    path: &[String],
    value: &Value,
) -> Option<(String, Property)> {
    if let Some(stem) = name.strip_suffix("_file") {
        return read_file(cx, stem, path, value);
    }
    if let Some((_, fix)) = RESERVED.iter().find(|(reserved, _)| *reserved == name) {
        let invalid = Invalid::new("reserved property").with_fix(Some(fix.to_string()));
        cx.reject(path, value, !is_secret(name), invalid);
        return None;
    }

    let property = match is_secret(name) {
        true => Property::Secret(secret_text(cx, path, value, name)?),
        false => Property::Plain(plain_text(cx, path, value)?),
    };
    if let Some(invalid) = delivery_problem(name, property.expose()) {
        cx.reject(path, value, !is_secret(name), invalid);
        return None;
    }
    Some((name.to_owned(), property))
}

/// Reads `NAME_file`, the file holding the secret property `NAME`.
fn read_file(
    cx: &Context<'_>,
    stem: &str,
    path: &[String],
    value: &Value,
) -> Option<(String, Property)> {
    if is_secret(stem) {
        let secret = read_secret_file(cx, path, value)?;
        return Some((stem.to_owned(), Property::Secret(secret)));
    }

    let name = format!("{stem}_file");
    let reason = format!("`{stem}` is not a secret, so `{name}` is not accepted");
    let invalid = Invalid::new(reason).with_fix(Some(format!("set `{stem}` itself")));
    cx.reject(path, value, true, invalid);
    None
}

/// Reads a plain property. librdkafka takes every value as a string, so
/// numbers and booleans from the file are accepted as written.
fn plain_text(cx: &Context<'_>, path: &[String], value: &Value) -> Option<String> {
    let text = cx.text(path, value).or_else(|| match value {
        Value::Num(..) | Value::Bool(..) => describe(value),
        _ => None,
    });
    if text.is_none() {
        let reason = format!("expected a string, found {}", kind_of(value));
        cx.reject(path, value, false, Invalid::new(reason));
    }

    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_secret_matches_broadly() {
        let secrets = [
            "sasl.password",
            "SASL.PASSWORD",
            "sasl.pasword",
            "sasl.passwrd",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "sasl.oauthbearer.assertion.private.key.pem",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.client.secert",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.token.endpoint.url",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl.keystore.password",
            "ssl.certificate.pem",
            "sasl.kerberos.keytab",
            "ssl_key",
            "db.pwd",
            "sasl.jaas.config",
            "sasl.oauthbearer.client.credentials",
        ];
        for name in secrets {
            assert!(is_secret(name), "{name} is not a secret");
        }
    }

    #[test]
    fn is_secret_keeps_common_names_plain() {
        let plain = [
            "security.protocol",
            "sasl.mechanism",
            "sasl.username",
            "client.id",
            "ssl.key.location",
            "ssl.keystore.location",
            "ssl.ca.location",
            "session.timeout.ms",
            "auto.offset.reset",
            "socket.keepalive.enable",
            "compression.type",
        ];
        for name in plain {
            assert!(!is_secret(name), "{name} is a secret");
        }
    }
}
