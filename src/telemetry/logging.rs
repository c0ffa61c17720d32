//! The tracing subscriber: events on standard error, as text or JSON
//! lines, filtered by the configured level, with repeated warnings and
//! errors dropped by [`RateLimit`].

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::rate_limit::{REPEAT_WINDOW, RateLimit};
use crate::config::{Log, LogFormat};

/// Filters for libraries that log mail content, each added unless the
/// configured level names the library. lapin 2.5 logs every returned
/// (unroutable) message with its whole body at WARN, which the publisher
/// already reports without the body. async-imap 0.11 logs every byte it
/// reads and writes, fetched mail included, at TRACE.
const CONTENT_FILTERS: [(&str, &str); 2] =
    [("lapin", "lapin=error"), ("async_imap", "async_imap=info")];

/// Installs the global subscriber. A second call keeps the first one.
pub fn init(log: &Log) {
    // The level was checked when the configuration was read.
    let filter = EnvFilter::builder()
        .parse(directives(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let format = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let format = match log.format {
        LogFormat::Text => format.boxed(),
        LogFormat::Json => format.json().flatten_event(true).boxed(),
    };
    // The filter comes first, so that the rate limit receives only the events
    // that are logged.
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(RateLimit::new(REPEAT_WINDOW))
        .with(format)
        .try_init();
    drop(installed);
}

/// Returns `level` with the content filters of the libraries it does not
/// name. A directive for a target wins over the general level in
/// `EnvFilter`, whatever their order.
fn directives(level: &str) -> String {
    let mut directives = level.trim().to_owned();
    for (target, filter) in CONTENT_FILTERS {
        if names_target(level, target) {
            continue;
        }
        if !directives.is_empty() {
            directives.push(',');
        }
        directives.push_str(filter);
    }

    directives
}

/// Tells whether a directive of `level` is about `target` or one of its
/// modules, as `lapin=debug` or `lapin::channel=trace` are.
fn names_target(level: &str, target: &str) -> bool {
    level.split(',').any(|directive| {
        let name = directive.trim().split(['=', '[']).next().unwrap_or("");
        name == target || name.starts_with(&format!("{target}::"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_filters_added_to_plain_level() {
        assert_eq!(directives("debug"), "debug,lapin=error,async_imap=info");
        assert_eq!(
            directives("info,mailbridge::imap=debug"),
            "info,mailbridge::imap=debug,lapin=error,async_imap=info"
        );
    }

    #[test]
    fn named_library_keeps_its_level() {
        assert_eq!(
            directives("info,lapin=warn"),
            "info,lapin=warn,async_imap=info"
        );
        assert_eq!(
            directives("trace,lapin::channel=trace,async_imap=trace"),
            "trace,lapin::channel=trace,async_imap=trace"
        );
    }

    #[test]
    fn similar_target_names_do_not_count() {
        assert_eq!(
            directives("lapinx=debug"),
            "lapinx=debug,lapin=error,async_imap=info"
        );
    }

    #[test]
    fn result_parses_as_filter() {
        for level in ["info", "debug,lapin=info", ""] {
            let parsed = EnvFilter::builder().parse(directives(level));
            assert!(parsed.is_ok(), "{level:?}: {parsed:?}");
        }
    }
}
