//! `[brokers.NAME.properties]`: librdkafka client properties, passed on as
//! they are, with the secret ones redacted.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use figment::value::Value;

use super::broker::Property;
use super::error::Origin;
use super::reader::{Context, Table, secret_text};
use super::values::{Invalid, describe, kind_of, read_secret_file};

/// Properties that have their own key or are set per pipeline.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set bootstrap_servers instead"),
    ("group.id", "set group_id in the outbound pipeline instead"),
];

/// Tells whether a librdkafka property is a secret.
pub(crate) fn is_secret(name: &str) -> bool {
    let secret_word = ["password", "secret", "token"]
        .iter()
        .any(|word| name.contains(word));

    secret_word || name == "sasl.oauthbearer.config" || name == "ssl.key.pem"
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

    leaves
        .iter()
        .filter_map(|(name, (path, value))| read_one(cx, &leaves, name, path, value))
        .collect()
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
    leaves: &Leaves<'_>,
    name: &str,
    path: &[String],
    value: &Value,
) -> Option<(String, Property)> {
    if let Some(stem) = name.strip_suffix("_file") {
        return read_file(cx, leaves, stem, path, value);
    }
    if let Some((_, fix)) = RESERVED.iter().find(|(reserved, _)| *reserved == name) {
        let invalid = Invalid::new("reserved property").with_fix(Some(fix.to_string()));
        cx.reject(path, value, !is_secret(name), invalid);
        return None;
    }

    let property = match is_secret(name) {
        true => Property::Secret(secret_text(cx, path, value)?),
        false => Property::Plain(plain_text(cx, path, value)?),
    };
    Some((name.to_owned(), property))
}

/// Reads `NAME_file`, the file holding the secret property `NAME`.
fn read_file(
    cx: &Context<'_>,
    leaves: &Leaves<'_>,
    stem: &str,
    path: &[String],
    value: &Value,
) -> Option<(String, Property)> {
    let name = format!("{stem}_file");
    let invalid = if !is_secret(stem) {
        let reason = format!("`{stem}` is not a secret, so `{name}` is not accepted");
        Invalid::new(reason).with_fix(Some(format!("set `{stem}` itself")))
    } else if leaves.contains_key(stem) {
        let reason = format!("both `{stem}` and `{name}` are set");
        Invalid::new(reason).with_fix(Some("remove one of them".to_owned()))
    } else {
        let secret = read_secret_file(cx, path, value)?;
        return Some((stem.to_owned(), Property::Secret(secret)));
    };

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
