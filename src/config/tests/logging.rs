//! `[log]`, the logging variables beside it, and `[shutdown]`.

use std::time::Duration;

use super::super::{LogFormat, Origin, load};
use super::{jail, load_toml, problem, problems};

const LOG_FILE: &str = "[log]\nlevel = \"debug\"\nformat = \"text\"\n";

#[test]
fn log_defaults_to_info_text() {
    jail(|_| {
        let config = load(None).expect("defaults are valid");

        assert_eq!(config.log.level, "info");
        assert_eq!(config.log.format, LogFormat::Text);
        Ok(())
    });
}

#[test]
fn log_variables_win_over_file() {
    jail(|jail| {
        jail.set_env("MAILBRIDGE_LOG", "warn,mailbridge::imap=trace");
        jail.set_env("MAILBRIDGE_LOG_FORMAT", "json");

        let config = load_toml(jail, LOG_FILE).expect("valid");

        assert_eq!(config.log.level, "warn,mailbridge::imap=trace");
        assert_eq!(config.log.format, LogFormat::Json);
        Ok(())
    });
}

#[test]
fn log_variable_names_matched_in_any_case() {
    jail(|jail| {
        jail.set_env("mailbridge_log_format", "json");

        let config = load(None).expect("valid");

        assert_eq!(config.log.format, LogFormat::Json);
        Ok(())
    });
}

#[test]
fn empty_log_variables_count_as_unset() {
    jail(|jail| {
        jail.set_env("MAILBRIDGE_LOG", "");
        jail.set_env("MAILBRIDGE_LOG_FORMAT", "");
        jail.set_env("RUST_LOG", "");

        let config = load_toml(jail, LOG_FILE).expect("valid");

        assert_eq!(config.log.level, "debug");
        assert_eq!(config.log.format, LogFormat::Text);
        Ok(())
    });
}

#[test]
fn rust_log_used_without_other_level() {
    jail(|jail| {
        jail.set_env("RUST_LOG", "error");

        let config = load(None).expect("valid");

        assert_eq!(config.log.level, "error");
        Ok(())
    });
}

#[test]
fn rust_log_ignored_when_level_set() {
    jail(|jail| {
        jail.set_env("RUST_LOG", "error");

        let from_file = load_toml(jail, LOG_FILE).expect("valid");
        jail.set_env("MAILBRIDGE_LOG", "trace");
        let from_variable = load(None).expect("valid");

        assert_eq!(from_file.log.level, "debug");
        assert_eq!(from_variable.log.level, "trace");
        Ok(())
    });
}

#[test]
fn rust_log_ignored_when_nested_level_set() {
    jail(|jail| {
        jail.set_env("RUST_LOG", "error");
        jail.set_env("MAILBRIDGE_LOG__LEVEL", "warn");

        let config = load(None).expect("valid");

        assert_eq!(config.log.level, "warn");
        Ok(())
    });
}

#[test]
fn invalid_log_format_variable_named() {
    jail(|jail| {
        jail.set_env("MAILBRIDGE_LOG_FORMAT", "xml");

        let problems = problems(load(None));

        let format = problem(&problems, "log.format");
        assert_eq!(format.env, "MAILBRIDGE_LOG_FORMAT");
        assert_eq!(format.value.as_deref(), Some("\"xml\""));
        assert_eq!(format.reason, "expected one of text, json");
        assert_eq!(format.origin, Some(Origin::Environment));
        let line = format.to_string();
        assert!(line.contains("MAILBRIDGE_LOG_FORMAT"), "{line}");
        Ok(())
    });
}

#[test]
fn invalid_log_variable_named() {
    jail(|jail| {
        jail.set_env("MAILBRIDGE_LOG", "info,mailbridge=loud");

        let problems = problems(load(None));

        let level = problem(&problems, "log.level");
        assert_eq!(level.env, "MAILBRIDGE_LOG");
        assert!(level.reason.starts_with("invalid filter"), "{level}");
        assert!(
            level.fix.as_deref().unwrap_or("").contains("info"),
            "{level}"
        );
        Ok(())
    });
}

#[test]
fn invalid_rust_log_named() {
    jail(|jail| {
        jail.set_env("RUST_LOG", "info,mailbridge=loud");

        let problems = problems(load(None));

        let level = problem(&problems, "log.level");
        assert_eq!(level.env, "RUST_LOG");
        assert!(level.reason.starts_with("invalid filter"), "{level}");
        Ok(())
    });
}

#[test]
fn log_variable_with_nested_variable_rejected() {
    jail(|jail| {
        jail.set_env("MAILBRIDGE_LOG", "debug");
        jail.set_env("MAILBRIDGE_LOG__LEVEL", "warn");
        jail.set_env("MAILBRIDGE_LOG_FORMAT", "json");
        jail.set_env("MAILBRIDGE_LOG__FORMAT", "text");

        let problems = problems(load(None));

        assert_eq!(problems.len(), 2, "{problems:#?}");
        let level = problem(&problems, "log.level");
        assert_eq!(level.env, "MAILBRIDGE_LOG");
        assert!(level.reason.contains("MAILBRIDGE_LOG__LEVEL"), "{level}");
        let format = problem(&problems, "log.format");
        assert_eq!(format.env, "MAILBRIDGE_LOG_FORMAT");
        assert!(format.reason.contains("MAILBRIDGE_LOG__FORMAT"), "{format}");
        Ok(())
    });
}

#[test]
fn log_variable_over_file_level_accepted() {
    jail(|jail| {
        jail.set_env("MAILBRIDGE_LOG__FORMAT", "json");
        jail.set_env("MAILBRIDGE_LOG", "warn");

        let config = load_toml(jail, LOG_FILE).expect("valid");

        assert_eq!(config.log.level, "warn");
        assert_eq!(config.log.format, LogFormat::Json);
        Ok(())
    });
}

#[test]
fn shutdown_timeout_defaults_to_30s() {
    jail(|_| {
        let config = load(None).expect("defaults are valid");

        assert_eq!(config.shutdown.timeout, Duration::from_secs(30));
        Ok(())
    });
}

#[test]
fn shutdown_timeout_from_file_and_env() {
    jail(|jail| {
        let from_file = load_toml(jail, "[shutdown]\ntimeout = \"2m\"\n").expect("valid");
        jail.set_env("MAILBRIDGE_SHUTDOWN__TIMEOUT", "1500ms");
        let from_env = load(Some(std::path::Path::new("c.toml"))).expect("valid");

        assert_eq!(from_file.shutdown.timeout, Duration::from_secs(120));
        assert_eq!(from_env.shutdown.timeout, Duration::from_millis(1500));
        Ok(())
    });
}

#[test]
fn invalid_shutdown_timeout_rejected() {
    for (value, reason) in [
        ("\"0s\"", "must be greater than zero"),
        ("\"soon\"", "invalid duration"),
        ("30", "expected a duration"),
    ] {
        jail(|jail| {
            let toml = format!("[shutdown]\ntimeout = {value}\n");

            let problems = problems(load_toml(jail, &toml));

            let timeout = problem(&problems, "shutdown.timeout");
            assert!(timeout.reason.starts_with(reason), "{value}: {timeout}");
            assert_eq!(timeout.env, "MAILBRIDGE_SHUTDOWN__TIMEOUT");
            Ok(())
        });
    }
}
