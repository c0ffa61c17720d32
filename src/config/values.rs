//! Conversions from figment values to the types of the configuration, each
//! returning the reason when a value does not fit.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::value::Value;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Reason a value was rejected, and the fix when one is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub reason: String,
    pub fix: Option<String>,
}

impl Invalid {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            fix: None,
        }
    }

    pub(crate) fn with_fix(mut self, fix: Option<String>) -> Self {
        self.fix = fix;
        self
    }

    fn expected(what: &str, value: &Value) -> Self {
        Self::new(format!("expected {what}, found {}", kind_of(value)))
    }
}

/// A type that a configuration value converts to.
pub(crate) trait FromValue: Sized {
    /// Converts `value`. `text` is the value as text when it has one: a
    /// string, or the raw text of an environment variable.
    fn from_value(value: &Value, text: Option<&str>) -> Result<Self, Invalid>;
}

/// An enum whose variants are written as fixed lowercase names.
pub(crate) trait Choice: Copy + 'static {
    const NAMES: &'static [&'static str];

    fn from_name(name: &str) -> Option<Self>;
}

/// Declares an enum read from and written as lowercase names.
macro_rules! choice {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub enum $name {
            $($(#[$variant_meta])* #[serde(rename = $text)] $variant,)+
        }

        impl $crate::config::values::Choice for $name {
            const NAMES: &'static [&'static str] = &[$($text),+];

            fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use choice;

impl<T: Choice> FromValue for T {
    fn from_value(value: &Value, text: Option<&str>) -> Result<Self, Invalid> {
        let names = T::NAMES.join(", ");
        let text = text.ok_or_else(|| Invalid::expected(&format!("one of {names}"), value))?;

        T::from_name(text).ok_or_else(|| Invalid::new(format!("expected one of {names}")))
    }
}

impl FromValue for String {
    fn from_value(value: &Value, text: Option<&str>) -> Result<Self, Invalid> {
        match text {
            None => Err(Invalid::expected("a string", value)),
            Some("") => Err(Invalid::new("must not be empty")),
            Some(text) => Ok(text.to_owned()),
        }
    }
}

/// A string that may be empty, such as the AMQP default exchange `""`.
pub(crate) struct MaybeEmpty(pub String);

impl FromValue for MaybeEmpty {
    fn from_value(value: &Value, text: Option<&str>) -> Result<Self, Invalid> {
        let text = text.ok_or_else(|| Invalid::expected("a string", value))?;
        Ok(Self(text.to_owned()))
    }
}

impl FromValue for bool {
    fn from_value(value: &Value, text: Option<&str>) -> Result<Self, Invalid> {
        if let Value::Bool(_, flag) = value {
            return Ok(*flag);
        }

        match text {
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            _ => Err(Invalid::expected("true or false", value)),
        }
    }
}

/// A TCP port, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Port(pub u16);

impl FromValue for Port {
    fn from_value(value: &Value, text: Option<&str>) -> Result<Self, Invalid> {
        let port = integer(value, text)
            .and_then(|number| u16::try_from(number).ok())
            .filter(|port| *port != 0);

        port.map(Port)
            .ok_or_else(|| Invalid::new("expected a port number from 1 to 65535"))
    }
}

impl FromValue for NonZeroUsize {
    fn from_value(value: &Value, text: Option<&str>) -> Result<Self, Invalid> {
        integer(value, text)
            .and_then(|number| usize::try_from(number).ok())
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| Invalid::new("expected an integer of at least 1"))
    }
}

/// Largest integer a setting takes: TOML integers, and so `mailbridge
/// config`, stop at the largest signed 64-bit value.
const INTEGER_MAX: u128 = i64::MAX as u128;

impl FromValue for NonZeroU64 {
    fn from_value(value: &Value, text: Option<&str>) -> Result<Self, Invalid> {
        integer(value, text)
            .filter(|number| *number <= INTEGER_MAX)
            .and_then(|number| u64::try_from(number).ok())
            .and_then(NonZeroU64::new)
            .ok_or_else(|| Invalid::new(format!("expected an integer from 1 to {INTEGER_MAX}")))
    }
}

impl FromValue for NonZeroU32 {
    fn from_value(value: &Value, text: Option<&str>) -> Result<Self, Invalid> {
        integer(value, text)
            .and_then(|number| u32::try_from(number).ok())
            .and_then(NonZeroU32::new)
            .ok_or_else(|| Invalid::new("expected an integer from 1 to 4294967295"))
    }
}

impl FromValue for u64 {
    fn from_value(value: &Value, text: Option<&str>) -> Result<Self, Invalid> {
        integer(value, text)
            .filter(|number| *number <= INTEGER_MAX)
            .and_then(|number| u64::try_from(number).ok())
            .ok_or_else(|| Invalid::new(format!("expected an integer from 0 to {INTEGER_MAX}")))
    }
}

/// Reads a non-negative integer: a number (figment stores TOML integers as
/// signed), or its text.
fn integer(value: &Value, text: Option<&str>) -> Option<u128> {
    let signed = || {
        value
            .to_i128()
            .and_then(|number| u128::try_from(number).ok())
    };
    let number = value.to_u128().or_else(signed);

    number.or_else(|| text?.trim().parse().ok())
}

impl FromValue for Duration {
    fn from_value(value: &Value, text: Option<&str>) -> Result<Self, Invalid> {
        let fix = Some("write a number with a unit, such as \"30s\" or \"5m\"".to_owned());
        let text =
            text.ok_or_else(|| Invalid::expected("a duration", value).with_fix(fix.clone()))?;
        let duration = humantime::parse_duration(text)
            .map_err(|err| Invalid::new(format!("invalid duration: {err}")).with_fix(fix))?;

        match duration.is_zero() {
            true => Err(Invalid::new("must be greater than zero")),
            false => Ok(duration),
        }
    }
}

impl FromValue for PathBuf {
    fn from_value(value: &Value, text: Option<&str>) -> Result<Self, Invalid> {
        match text {
            None => Err(Invalid::expected("a path", value)),
            Some("") => Err(Invalid::new("path is empty")),
            Some(text) => Ok(PathBuf::from(text)),
        }
    }
}

impl FromValue for SocketAddr {
    fn from_value(value: &Value, text: Option<&str>) -> Result<Self, Invalid> {
        let fix = Some("write an IP address and a port, such as 127.0.0.1:9464".to_owned());
        let text = text.ok_or_else(|| Invalid::expected("a socket address", value))?;

        text.parse()
            .map_err(|_| Invalid::new("invalid socket address").with_fix(fix))
    }
}

/// An `http` or `https` URL.
pub(crate) struct HttpUrl(pub String);

impl FromValue for HttpUrl {
    fn from_value(value: &Value, text: Option<&str>) -> Result<Self, Invalid> {
        let text = text.ok_or_else(|| Invalid::expected("a URL", value))?;
        let url =
            url::Url::parse(text).map_err(|err| Invalid::new(format!("invalid URL: {err}")))?;

        match url.scheme() {
            "http" | "https" => Ok(Self(text.to_owned())),
            _ => Err(Invalid::new("expected an http or https URL")),
        }
    }
}

impl FromValue for Vec<String> {
    fn from_value(value: &Value, text: Option<&str>) -> Result<Self, Invalid> {
        // A single string, such as an environment variable without
        // brackets, is a list of one item.
        let Value::Array(_, items) = value else {
            return text
                .map(|text| vec![text.to_owned()])
                .ok_or_else(|| Invalid::expected("a list of strings", value));
        };

        items.iter().map(list_item).collect()
    }
}

fn list_item(item: &Value) -> Result<String, Invalid> {
    // figment parses an item of `[INBOX,2024]` from the environment as a
    // number, so numbers are taken back as text.
    let text = match item {
        Value::String(_, text) => text.clone(),
        Value::Num(..) => describe(item).unwrap_or_default(),
        other => return Err(Invalid::expected("a list of strings", other)),
    };

    match text.is_empty() {
        true => Err(Invalid::new("list items must not be empty")),
        false => Ok(text),
    }
}

/// Describes a value for a message: scalars as written, `None` for lists
/// and tables.
pub(crate) fn describe(value: &Value) -> Option<String> {
    match value {
        Value::String(_, text) => Some(format!("{text:?}")),
        Value::Char(_, c) => Some(format!("{c:?}")),
        Value::Bool(_, flag) => Some(flag.to_string()),
        Value::Num(..) => value
            .to_u128()
            .map(|n| n.to_string())
            .or_else(|| value.to_i128().map(|n| n.to_string()))
            .or_else(|| value.to_f64().map(|n| n.to_string())),
        Value::Empty(..) | Value::Dict(..) | Value::Array(..) => None,
    }
}

/// Names the type of a value for a message ("an integer").
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::String(..) => "a string",
        Value::Char(..) => "a character",
        Value::Bool(..) => "a boolean",
        Value::Num(..) if value.to_i128().is_some() => "an integer",
        Value::Num(..) => "a number",
        Value::Empty(..) => "an empty value",
        Value::Dict(..) => "a table",
        Value::Array(..) => "a list",
    }
}

/// Checks that a CA file is readable and contains at least one PEM
/// certificate.
pub(crate) fn check_ca_file(file: &Path) -> Result<(), Invalid> {
    let pem = std::fs::read(file)
        .map_err(|err| Invalid::new(format!("failed to read CA file: {err}")))?;
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        certificate.map_err(|err| Invalid::new(format!("invalid PEM in CA file: {err}")))?;
        count += 1;
    }

    match count {
        0 => Err(Invalid::new("CA file contains no PEM certificate")),
        _ => Ok(()),
    }
}
