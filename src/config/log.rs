//! `[log]` and the logging variables outside the key scheme:
//! `MAILBRIDGE_LOG`, `MAILBRIDGE_LOG_FORMAT` and `RUST_LOG`.
//!
//! The filter comes from `MAILBRIDGE_LOG`, then `log.level` (from the file
//! or `MAILBRIDGE_LOG__LEVEL`), then `RUST_LOG`, then `info`. The format
//! comes from `MAILBRIDGE_LOG_FORMAT`, then `log.format`, then `text`. An
//! empty variable counts as unset.

use serde::Serialize;

use super::error::{Origin, Problem};
use super::reader::{Context, Table};
use super::sources;
use super::values::{Choice, Invalid, choice};

/// Variable that sets the log filter, over `log.level`.
pub const LOG_ENV: &str = "MAILBRIDGE_LOG";

/// Variable that sets the log format, over `log.format`.
pub const LOG_FORMAT_ENV: &str = "MAILBRIDGE_LOG_FORMAT";

/// The filter variable of tracing-subscriber, read only when neither
/// `MAILBRIDGE_LOG` nor `log.level` is set.
pub const RUST_LOG_ENV: &str = "RUST_LOG";

choice! {
    /// Format of log lines on standard error.
    pub enum LogFormat {
        /// One human-readable line per event.
        Text = "text",
        /// One JSON object per line, for log collectors.
        Json = "json",
    }
}

/// `[log]`: what is logged and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Log {
    /// Filter in the `tracing-subscriber` `EnvFilter` syntax, such as
    /// `info` or `info,mailbridge::imap=debug`. Default: `info`.
    pub level: String,
    /// Line format. Default: `text`.
    pub format: LogFormat,
}

/// Reads `[log]` and applies the logging variables over it.
pub(super) fn read(root: &mut Table<'_>) -> Log {
    let cx = root.cx();
    let (mut level, mut format) = (None, None);
    let (mut level_set, mut level_from_env, mut format_from_env) = (false, false, false);
    if let Some(mut table) = root.table("log") {
        level_set = table.contains("level");
        level_from_env = set_by_env(&table, "level");
        format_from_env = set_by_env(&table, "format");
        level = table.get_checked("level", |level: &String| check_level(level));
        format = table.get::<LogFormat>("format");
        table.finish();
    }

    let level_var = sources::prefixed_variable(LOG_ENV);
    let format_var = sources::prefixed_variable(LOG_FORMAT_ENV);
    if let Some(var) = &level_var {
        conflict(cx, var, level_from_env, "level");
    }
    if let Some(var) = &format_var {
        conflict(cx, var, format_from_env, "format");
    }
    let configured = level_var.is_some() || level_set;
    let level = level_var
        .and_then(|var| parse(cx, &var, "level", check_level_text))
        .or(level)
        .or_else(|| fallback_level(cx, configured));
    let format = format_var
        .and_then(|var| parse(cx, &var, "format", parse_format))
        .or(format);

    Log {
        level: level.unwrap_or_else(|| "info".to_owned()),
        format: format.unwrap_or(LogFormat::Text),
    }
}

/// Tells whether an environment variable set `key` of the table.
fn set_by_env(table: &Table<'_>, key: &str) -> bool {
    table
        .value_at(&[key])
        .is_some_and(|value| table.cx().origin(value) == Some(Origin::Environment))
}

/// Reads `RUST_LOG` when no other source set the filter.
fn fallback_level(cx: &Context<'_>, configured: bool) -> Option<String> {
    if configured {
        return None;
    }
    let var = sources::variable(RUST_LOG_ENV)?;

    parse(cx, &var, "level", check_level_text)
}

/// Reports a logging variable set together with the `MAILBRIDGE_LOG__KEY`
/// variable of the same key, because neither has priority over the other.
fn conflict(cx: &Context<'_>, var: &sources::Variable, key_from_env: bool, key: &str) {
    if !key_from_env {
        return;
    }
    let nested = format!("{LOG_ENV}__{}", key.to_ascii_uppercase());
    let reason = format!("set by both {} and {nested}", var.name);
    let mut problem = Problem::new(&["log".to_owned(), key.to_owned()], reason);
    problem.fix = Some("remove one of the two variables".to_owned());
    problem.env = var.name.clone();
    problem.origin = Some(Origin::Environment);
    cx.report(problem);
}

/// Parses the value of `var`, which sets `log.KEY`, or reports a problem
/// that names the variable.
fn parse<T>(
    cx: &Context<'_>,
    var: &sources::Variable,
    key: &str,
    parse: impl FnOnce(&str) -> Result<T, Invalid>,
) -> Option<T> {
    let path = ["log".to_owned(), key.to_owned()];
    let invalid = match var.value.as_deref() {
        Some(text) => match parse(text) {
            Ok(parsed) => return Some(parsed),
            Err(invalid) => invalid,
        },
        None => Invalid::new("invalid value: not valid UTF-8"),
    };
    let mut problem = Problem::new(&path, invalid.reason);
    problem.fix = invalid.fix;
    problem.env = var.name.clone();
    problem.value = var.value.as_ref().map(|text| format!("{text:?}"));
    problem.origin = Some(Origin::Environment);
    cx.report(problem);

    None
}

fn parse_format(text: &str) -> Result<LogFormat, Invalid> {
    LogFormat::from_name(text).ok_or_else(|| {
        let names = LogFormat::NAMES.join(", ");
        Invalid::new(format!("expected one of {names}"))
    })
}

fn check_level_text(level: &str) -> Result<String, Invalid> {
    check_level(level).map(|()| level.to_owned())
}

fn check_level(level: &str) -> Result<(), Invalid> {
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map(drop)
        .map_err(|err| {
            Invalid::new(format!("invalid filter: {err}")).with_fix(Some(
                "write a level such as \"info\" or \"info,mailbridge=debug\"".into(),
            ))
        })
}
