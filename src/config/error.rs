//! Configuration errors: every bad key becomes one [`Problem`], and all of
//! them are reported together.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Prefix of every environment variable that sets a configuration key.
pub const ENV_PREFIX: &str = "MAILBRIDGE_";

/// Errors of [`super::load`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("failed to read configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The configuration file is not valid TOML.
    #[error(
        "invalid TOML in configuration file {} at line {line}, column {column}: {message}",
        path.display()
    )]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// figment failed to merge the file and the environment.
    #[error("failed to merge configuration sources: {0}")]
    Merge(#[source] Box<figment::Error>),
    /// One or more keys are missing, unknown or invalid.
    #[error("invalid configuration: {}", count_problems(.0.len()))]
    Validate(Vec<Problem>),
}

impl ConfigError {
    /// Returns every problem found, one per bad key. Errors that stop
    /// reading early (an unreadable or unparsable file) have none.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Validate(problems) => problems,
            _ => &[],
        }
    }

    /// Always false: a configuration error stays until the configuration
    /// is changed.
    pub fn is_transient(&self) -> bool {
        false
    }

    /// Short name of the failed step, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Parse { .. } => "parse",
            Self::Merge(_) => "merge",
            Self::Validate(_) => "validate",
        }
    }
}

fn count_problems(count: usize) -> String {
    match count {
        1 => "1 problem".to_owned(),
        n => format!("{n} problems"),
    }
}

/// Source of a configuration value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A TOML file.
    File(PathBuf),
    /// A `MAILBRIDGE_` environment variable.
    Environment,
}

/// One missing, unknown or invalid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, such as `accounts.support.imap.port`.
    pub key: String,
    /// Environment variable that sets the same key.
    pub env: String,
    /// Rejected value as written; `None` for secrets, unknown keys and
    /// missing keys.
    pub value: Option<String>,
    /// Source of the rejected value, when figment recorded one.
    pub origin: Option<Origin>,
    /// Reason the key is rejected.
    pub reason: String,
    /// Change that fixes the problem, when one is known.
    pub fix: Option<String>,
}

impl Problem {
    /// Builds a problem for the key at `path` (one segment per nesting
    /// level) with no value, origin or fix.
    pub(crate) fn new(path: &[String], reason: impl Into<String>) -> Self {
        Self {
            key: key_path(path),
            env: env_var(path),
            value: None,
            origin: None,
            reason: reason.into(),
            fix: None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)?;
        if let Some(value) = &self.value {
            write!(f, " = {value}")?;
        }
        write!(f, ": {}", self.reason)?;
        if let Some(fix) = &self.fix {
            write!(f, "; {fix}")?;
        }

        match &self.origin {
            Some(Origin::File(path)) => write!(
                f,
                " (set in {}; environment variable {})",
                path.display(),
                self.env
            ),
            Some(Origin::Environment) => write!(f, " (set by environment variable {})", self.env),
            None => write!(f, " (environment variable {})", self.env),
        }
    }
}

/// Joins key segments with dots, quoting a segment that is not a bare
/// TOML key (a Kafka property such as `"sasl.password"`).
pub(crate) fn key_path(path: &[String]) -> String {
    let bare = |segment: &str| {
        !segment.is_empty()
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let quoted: Vec<String> = path
        .iter()
        .map(|segment| match bare(segment) {
            true => segment.clone(),
            false => format!("{segment:?}"),
        })
        .collect();

    quoted.join(".")
}

/// Names the environment variable for a key: the prefix, then every
/// segment in upper case, with `__` between nesting levels. A dot inside a
/// segment is a nesting level too, because figment splits keys on dots.
pub(crate) fn env_var(path: &[String]) -> String {
    let segments: Vec<String> = path
        .iter()
        .map(|segment| segment.to_ascii_uppercase().replace('.', "__"))
        .collect();

    format!("{ENV_PREFIX}{}", segments.join("__"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(segments: &[&str]) -> Vec<String> {
        segments.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn env_var_nests_with_double_underscore() {
        let name = env_var(&path(&["accounts", "support", "imap", "port"]));

        assert_eq!(name, "MAILBRIDGE_ACCOUNTS__SUPPORT__IMAP__PORT");
    }

    #[test]
    fn env_var_splits_dotted_segment() {
        let name = env_var(&path(&["brokers", "k", "properties", "sasl.password"]));

        assert_eq!(name, "MAILBRIDGE_BROKERS__K__PROPERTIES__SASL__PASSWORD");
    }

    #[test]
    fn key_path_quotes_dotted_segment() {
        let key = key_path(&path(&["brokers", "k", "properties", "sasl.password"]));

        assert_eq!(key, r#"brokers.k.properties."sasl.password""#);
    }

    #[test]
    fn display_names_file_and_env() {
        let mut problem = Problem::new(&path(&["metrics", "listen"]), "invalid socket address");
        problem.value = Some("\"nowhere\"".to_owned());
        problem.origin = Some(Origin::File(PathBuf::from("c.toml")));
        problem.fix = Some("write it as IP:PORT".to_owned());

        assert_eq!(
            problem.to_string(),
            "metrics.listen = \"nowhere\": invalid socket address; write it as IP:PORT \
             (set in c.toml; environment variable MAILBRIDGE_METRICS__LISTEN)"
        );
    }

    #[test]
    fn validate_display_counts() {
        let one = ConfigError::Validate(vec![Problem::new(&path(&["state"]), "x")]);

        assert_eq!(one.to_string(), "invalid configuration: 1 problem");
    }
}
