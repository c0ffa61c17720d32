//! `bootstrap_servers`: the comma-separated `host:port` list of a Kafka
//! cluster.

use std::net::Ipv6Addr;

use figment::value::Value;

use super::values::{FromValue, Invalid};

const FIX: &str = "write a comma-separated list of host:port with a port from 1 to 65535, \
                   such as kafka-1:9092,kafka-2:9092 or [::1]:9092";

/// A valid `host:port` list, stored with the whitespace around its commas
/// removed.
pub(crate) struct ServerList(pub String);

impl FromValue for ServerList {
    fn from_value(value: &Value, text: Option<&str>) -> Result<Self, Invalid> {
        let list = String::from_value(value, text)?;
        let entries: Vec<&str> = list.split(',').map(str::trim).collect();
        for entry in &entries {
            check_entry(entry).map_err(|reason| Invalid::new(reason).with_fix(Some(FIX.into())))?;
        }

        Ok(Self(entries.join(",")))
    }
}

/// Checks one `host:port` entry, returning the reason when it is invalid.
fn check_entry(entry: &str) -> Result<(), String> {
    if entry.is_empty() {
        return Err("the list contains an empty entry".to_owned());
    }
    let invalid = |detail: &str| Err(format!("invalid entry {entry:?}: {detail}"));
    let Some((host, port)) = entry.rsplit_once(':') else {
        return invalid("no port");
    };
    let digits = !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit());
    if !digits || !port.parse::<u16>().is_ok_and(|port| port != 0) {
        return invalid("the port is not a number from 1 to 65535");
    }

    match check_host(host) {
        Ok(()) => Ok(()),
        Err(detail) => invalid(detail),
    }
}

/// Checks a host name, or an IPv6 address in brackets.
fn check_host(host: &str) -> Result<(), &'static str> {
    if let Some(inner) = host.strip_prefix('[') {
        let address = inner.strip_suffix(']').map(str::parse::<Ipv6Addr>);
        return match address {
            Some(Ok(_)) => Ok(()),
            _ => Err("invalid IPv6 address in brackets"),
        };
    }
    if host.is_empty() {
        return Err("no host");
    }
    if host.contains(':') {
        return Err("the host contains `:`, so write an IPv6 address in brackets");
    }

    let valid = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    match valid {
        true => Ok(()),
        false => Err("invalid host name"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &str) -> Result<String, Invalid> {
        ServerList::from_value(&Value::from(list), Some(list)).map(|list| list.0)
    }

    #[test]
    fn server_list_accepts_valid_lists() {
        let cases = [
            ("127.0.0.1:9092", "127.0.0.1:9092"),
            ("kafka-1:9092, kafka-2:9093", "kafka-1:9092,kafka-2:9093"),
            (
                " kafka_1.internal:1 ,\tk:65535 ",
                "kafka_1.internal:1,k:65535",
            ),
            ("[::1]:9092", "[::1]:9092"),
            ("[fe80::1]:9092,h:9092", "[fe80::1]:9092,h:9092"),
        ];
        for (list, stored) in cases {
            assert_eq!(parse(list).ok().as_deref(), Some(stored), "{list:?}");
        }
    }

    #[test]
    fn server_list_rejects_invalid_lists() {
        let cases = [
            (
                "not a host list",
                "invalid entry \"not a host list\": no port",
            ),
            (",", "the list contains an empty entry"),
            ("h:9092,", "the list contains an empty entry"),
            (
                "h:99999",
                "invalid entry \"h:99999\": the port is not a number from 1 to 65535",
            ),
            (
                "h:0",
                "invalid entry \"h:0\": the port is not a number from 1 to 65535",
            ),
            (
                "h:+9092",
                "invalid entry \"h:+9092\": the port is not a number from 1 to 65535",
            ),
            (
                "h:",
                "invalid entry \"h:\": the port is not a number from 1 to 65535",
            ),
            (":9092", "invalid entry \":9092\": no host"),
            (
                "my host:9092",
                "invalid entry \"my host:9092\": invalid host name",
            ),
            (
                "kafka://h:9092",
                "invalid entry \"kafka://h:9092\": the host contains `:`, so write an IPv6 address in brackets",
            ),
            (
                "::1:9092",
                "invalid entry \"::1:9092\": the host contains `:`, so write an IPv6 address in brackets",
            ),
            (
                "[::1:9092",
                "invalid entry \"[::1:9092\": invalid IPv6 address in brackets",
            ),
            (
                "[h]:9092",
                "invalid entry \"[h]:9092\": invalid IPv6 address in brackets",
            ),
        ];
        for (list, reason) in cases {
            let invalid = parse(list).expect_err(list);
            assert_eq!(invalid.reason, reason, "{list:?}");
            assert_eq!(invalid.fix.as_deref(), Some(FIX), "{list:?}");
        }
    }
}
