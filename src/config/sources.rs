//! Configuration sources: an optional TOML file, then `MAILBRIDGE_`
//! environment variables, which win.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map};
use figment::{Error, Figment, Metadata, Profile, Provider};

use super::error::{ConfigError, ENV_PREFIX, Origin, Problem};

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "MAILBRIDGE_CONFIG";

/// `MAILBRIDGE_` variables that are not configuration keys: the file name
/// and the logging settings, which the `log` module reads. The names are without
/// the prefix.
const NOT_KEYS: &[&str] = &["config", "log", "log_format"];

/// An environment variable that is set and not empty.
pub(crate) struct Variable {
    /// Name as set.
    pub name: String,
    /// Value, or `None` when it is not valid UTF-8.
    pub value: Option<String>,
}

/// Returns the variable `name`, matched in any case as figment matches
/// the `MAILBRIDGE_` names it ignores. When several spellings are set,
/// the spelling `name` wins.
pub(crate) fn prefixed_variable(name: &str) -> Option<Variable> {
    if let Some(exact) = variable(name) {
        return Some(exact);
    }

    let found = std::env::vars_os().find_map(|(found, value)| {
        let found = found.into_string().ok()?;
        let matches = found.trim().eq_ignore_ascii_case(name) && !value.is_empty();
        matches.then_some((found, value))
    })?;
    Some(Variable {
        name: found.0,
        value: found.1.into_string().ok(),
    })
}

/// Returns the variable `name`, spelled exactly so.
pub(crate) fn variable(name: &str) -> Option<Variable> {
    let value = std::env::var_os(name).filter(|value| !value.is_empty())?;

    Some(Variable {
        name: name.to_owned(),
        value: value.into_string().ok(),
    })
}

/// Builds the environment provider: `MAILBRIDGE_` variables with `__`
/// between nesting levels. figment lowercases the keys.
pub(crate) fn environment() -> Env {
    Env::prefixed(ENV_PREFIX).ignore(NOT_KEYS).split("__")
}

/// Finds the `MAILBRIDGE_` variables with an empty nesting level, such as
/// `MAILBRIDGE_STATE____DIRECTORY` or `MAILBRIDGE_STATE__DIRECTORY__`.
/// figment 0.10 skips them without a message, so each becomes a problem
/// that names the variable but never shows its value, which may be a
/// secret.
pub(crate) fn empty_levels() -> Vec<Problem> {
    std::env::vars_os()
        .filter_map(|(name, _)| {
            // figment trims the name too.
            let name = name.to_string_lossy();
            let name = name.trim();
            let segments = key_segments(name)?;
            let empty = segments.iter().any(String::is_empty);

            empty.then(|| empty_level(name, &segments))
        })
        .collect()
}

/// Splits a variable name into the key path that figment reads from it,
/// or returns `None` for a variable that sets no key. Like figment, this
/// matches the prefix in any case.
fn key_segments(name: &str) -> Option<Vec<String>> {
    let prefix = name.get(..ENV_PREFIX.len())?;
    if !prefix.eq_ignore_ascii_case(ENV_PREFIX) {
        return None;
    }
    let rest = &name[ENV_PREFIX.len()..];
    if NOT_KEYS.iter().any(|key| key.eq_ignore_ascii_case(rest)) {
        return None;
    }

    let key = rest.to_ascii_lowercase().replace("__", ".");
    Some(key.trim().split('.').map(str::to_owned).collect())
}

fn empty_level(name: &str, segments: &[String]) -> Problem {
    let reason = "invalid variable name: a nesting level is empty";
    let mut problem = Problem::new(segments, reason);
    problem.fix = Some(
        "`__` separates nesting levels and no level may be empty, so remove the extra `__`"
            .to_owned(),
    );
    problem.env = name.to_owned();
    problem.origin = Some(Origin::Environment);
    problem
}

/// Merges the optional TOML `file` and the environment, which wins.
pub(crate) fn figment(file: Option<&Path>, env: &Env) -> Result<Figment, ConfigError> {
    let mut figment = Figment::new();
    if let Some(file) = file {
        figment = figment.merge(TomlFile::read(file)?);
    }

    Ok(figment.merge(env.clone()))
}

/// Returns the merged tree. Both providers put their keys in the default
/// profile.
pub(crate) fn merged(figment: &Figment) -> Result<Dict, ConfigError> {
    let mut data = figment
        .data()
        .map_err(|err| ConfigError::Merge(Box::new(err)))?;

    Ok(data.remove(&Profile::Default).unwrap_or_default())
}

/// A TOML configuration file, read once and parsed before figment merges it.
pub(crate) struct TomlFile {
    path: PathBuf,
    text: String,
}

impl TomlFile {
    /// Reads and parses the file. A parse error gives the line and column
    /// but no excerpt of the file, which could show a secret.
    pub(crate) fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        if let Err(err) = toml::from_str::<toml::Table>(&text) {
            let offset = err.span().map_or(0, |span| span.start);
            let (line, column) = line_and_column(&text, offset);
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: err.message().to_owned(),
            });
        }

        Ok(Self {
            path: path.to_owned(),
            text,
        })
    }
}

impl Provider for TomlFile {
    fn metadata(&self) -> Metadata {
        Metadata::from("TOML file", self.path.as_path())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        Toml::string(&self.text).data()
    }
}

/// Returns the 1-based line and column of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);

    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_counts_from_one() {
        assert_eq!(line_and_column("a = 1\nb = \n", 0), (1, 1));
        assert_eq!(line_and_column("a = 1\nb = \n", 10), (2, 5));
    }
}
