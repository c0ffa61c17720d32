//! A configuration value that must never be printed.

use std::fmt;

use serde::{Serialize, Serializer};

/// Text printed and serialized in place of every secret.
pub const REDACTED: &str = "[redacted]";

/// A secret value such as a client secret, a password or a URL with
/// credentials.
///
/// `Debug`, `Display` and `Serialize` all write [`REDACTED`], so a secret
/// can sit in a logged or printed structure without leaking. The value is
/// only reachable through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the secret value itself, for the code that sends it to a
    /// server. Never log or print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let secret = Secret::new("hunter2");

        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(secret.to_string(), REDACTED);
    }

    #[test]
    fn serialize_redacts() {
        let json = serde_json::to_string(&Secret::new("hunter2")).unwrap();

        assert_eq!(json, format!("\"{REDACTED}\""));
    }

    #[test]
    fn expose_returns_value() {
        assert_eq!(Secret::new("hunter2").expose(), "hunter2");
    }
}
