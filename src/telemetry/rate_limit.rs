//! A tracing layer that drops repeats of a WARN or ERROR event, so that an
//! outage of hours does not log the same warning at every retry.
//!
//! Two events are the same when they come from the same callsite with the
//! same field values, the message included, apart from the fields in
//! [`RETRY_FIELDS`], which change at every retry. The first passes and opens a
//! window; repeats inside the window are dropped and counted. The first
//! repeat after the window passes, preceded by one event at its level that
//! gives the count, and opens the next window.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::{self, Write};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tracing::callsite::{Callsite, Identifier};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Value, Visit};
use tracing::metadata::Kind;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Window in which repeats of an event are dropped.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// Fields that count retries or give the next delay. They differ at every
/// retry (the backoff is jittered), so they are left out of an event's
/// identity, or a retry loop would never repeat an event.
pub const RETRY_FIELDS: [&str; 3] = ["attempt", "retry_in_ms", "delay_ms"];

/// Maximum number of distinct events tracked at once. When the table is
/// full, entries whose window ended and that dropped nothing are removed.
/// If that frees nothing, a new event passes without being tracked.
const MAX_TRACKED: usize = 1024;

thread_local! {
    /// Set while this thread is inside the layer, so that an event logged
    /// from there (the count, or a field's `Debug` that logs) passes
    /// unchecked instead of locking the table a second time.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Drops repeats of WARN and ERROR events inside a window. Add it after
/// the filter and before the formatting layer, so that it receives only
/// the events that the filter lets through.
///
/// NOTE: a count is logged only when the event comes again after its
/// window, so the repeats of an event that then stops for good are never
/// reported.
pub struct RateLimit {
    window: Duration,
    clock: Box<dyn Fn() -> Instant + Send + Sync>,
    seen: Mutex<HashMap<Key, Seen>>,
    /// The dispatcher that the layer is part of, which logs the counts.
    dispatch: OnceLock<WeakDispatch>,
}

/// The identity of an event: its callsite and its formatted fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    callsite: Identifier,
    fields: String,
}

/// The state of one event: the start of its window and the repeats
/// dropped in it.
struct Seen {
    since: Instant,
    dropped: u64,
}

/// The decision on one event.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Log it, after a count of the `dropped` repeats when there were any.
    Pass { dropped: u64 },
    /// Drop it.
    Drop,
}

impl RateLimit {
    /// Builds a layer that drops repeats inside `window`.
    pub fn new(window: Duration) -> Self {
        Self::with_clock(window, Instant::now)
    }

    fn with_clock(window: Duration, clock: impl Fn() -> Instant + Send + Sync + 'static) -> Self {
        Self {
            window,
            clock: Box::new(clock),
            seen: Mutex::default(),
            dispatch: OnceLock::new(),
        }
    }

    fn check(&self, key: Key) -> Verdict {
        let now = (self.clock)();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = seen.get_mut(&key) {
            if now.duration_since(entry.since) < self.window {
                entry.dropped += 1;
                return Verdict::Drop;
            }
            entry.since = now;
            let dropped = std::mem::take(&mut entry.dropped);
            return Verdict::Pass { dropped };
        }

        if seen.len() >= MAX_TRACKED {
            let window = self.window;
            seen.retain(|_, entry| entry.dropped > 0 || now.duration_since(entry.since) < window);
        }
        if seen.len() < MAX_TRACKED {
            let entry = Seen {
                since: now,
                dropped: 0,
            };
            seen.insert(key, entry);
        }
        Verdict::Pass { dropped: 0 }
    }
}

impl<S: Subscriber> Layer<S> for RateLimit {
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        // A weak reference, because the dispatcher owns this layer.
        let _ = self.dispatch.set(dispatch.downgrade());
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        // More verbose levels compare greater: INFO > WARN.
        if *metadata.level() > Level::WARN {
            return true;
        }
        let Some(_inside) = Inside::enter() else {
            return true;
        };

        let mut fields = Fields::default();
        event.record(&mut fields);
        let key = Key {
            callsite: metadata.callsite(),
            fields: fields.all,
        };
        match self.check(key) {
            Verdict::Drop => false,
            Verdict::Pass { dropped: 0 } => true,
            Verdict::Pass { dropped } => {
                let dispatch = self.dispatch.get().and_then(WeakDispatch::upgrade);
                if let Some(dispatch) = dispatch {
                    log_dropped(&dispatch, metadata, &fields.message, dropped, self.window);
                }
                true
            }
        }
    }
}

/// Sends the count of dropped repeats, at the level of the repeated event,
/// to `dispatch`. The event is built here and sent to the dispatcher
/// directly, because tracing drops an event that a macro emits while the
/// dispatcher handles another event on the same thread.
fn log_dropped(
    dispatch: &Dispatch,
    metadata: &Metadata<'_>,
    message: &str,
    dropped: u64,
    window: Duration,
) {
    let callsite = match *metadata.level() {
        Level::ERROR => tracing::callsite! {
            name: "suppressed repeats",
            kind: Kind::EVENT,
            level: Level::ERROR,
            fields: message, suppressed, window_s, repeated_target, repeated_message
        },
        _ => tracing::callsite! {
            name: "suppressed repeats",
            kind: Kind::EVENT,
            level: Level::WARN,
            fields: message, suppressed, window_s, repeated_target, repeated_message
        },
    };
    let fields = callsite.metadata().fields();
    let names = [
        "message",
        "suppressed",
        "window_s",
        "repeated_target",
        "repeated_message",
    ];
    let [text, suppressed, window_s, target, repeated] =
        names.map(|name| fields.field(name).expect("the callsite declares the field"));
    let window = window.as_secs_f64();
    let values: [(&Field, Option<&dyn Value>); 5] = [
        (&text, Some(&"Suppressed repeats of a log event")),
        (&suppressed, Some(&dropped)),
        (&window_s, Some(&window)),
        (&target, Some(&metadata.target())),
        (&repeated, Some(&message)),
    ];
    let values = fields.value_set(&values);
    dispatch.event(&Event::new(callsite.metadata(), &values));
}

/// Marks this thread as inside the layer until dropped.
struct Inside;

impl Inside {
    /// Returns `None` when this thread is inside the layer already.
    fn enter() -> Option<Self> {
        let entered = INSIDE.with(|inside| !inside.replace(true));
        entered.then_some(Self)
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.with(|inside| inside.set(false));
    }
}

/// The fields of an event that make its identity, as `name=value;`, and
/// the message alone.
#[derive(Default)]
struct Fields {
    all: String,
    message: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !RETRY_FIELDS.contains(&field.name()) {
            let _ = write!(self.all, "{}={value:?};", field.name());
        }
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().expect("lock").clone();
            let text = String::from_utf8(bytes).expect("UTF-8");
            text.lines().map(str::to_owned).collect()
        }
    }

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;

        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// A clock that moves only when a test advances it.
    #[derive(Clone)]
    struct ManualClock(Arc<Mutex<Instant>>);

    impl ManualClock {
        fn new() -> Self {
            Self(Arc::new(Mutex::new(Instant::now())))
        }

        fn now(&self) -> Instant {
            *self.0.lock().expect("lock")
        }

        fn advance(&self, by: Duration) {
            *self.0.lock().expect("lock") += by;
        }
    }

    /// Runs `emit` under a subscriber with the layer, and returns the
    /// lines written.
    fn capture(clock: &ManualClock, emit: impl FnOnce()) -> Vec<String> {
        let captured = Captured::default();
        let clock = clock.clone();
        let layer = RateLimit::with_clock(REPEAT_WINDOW, move || clock.now());
        let format = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .without_time()
            .with_writer(captured.clone());
        let subscriber = tracing_subscriber::registry().with(layer).with(format);
        tracing::subscriber::with_default(subscriber, emit);
        captured.lines()
    }

    fn warn_broker_down(broker: u32) {
        tracing::warn!(broker, "Broker unreachable; retrying");
    }

    #[test]
    fn repeats_inside_window_dropped() {
        let clock = ManualClock::new();

        let lines = capture(&clock, || {
            for _ in 0..5 {
                warn_broker_down(1);
                clock.advance(Duration::from_secs(10));
            }
        });

        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].contains("Broker unreachable"), "{}", lines[0]);
    }

    #[test]
    fn count_logged_before_repeat_after_window() {
        let clock = ManualClock::new();

        let lines = capture(&clock, || {
            for _ in 0..4 {
                warn_broker_down(1);
            }
            clock.advance(REPEAT_WINDOW);
            warn_broker_down(1);
        });

        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].contains("Broker unreachable"), "{}", lines[0]);
        assert!(lines[1].contains("Suppressed repeats"), "{}", lines[1]);
        assert!(lines[1].contains("suppressed=3"), "{}", lines[1]);
        assert!(lines[1].contains(" WARN "), "{}", lines[1]);
        assert!(
            lines[1].contains(r#"repeated_message="Broker unreachable; retrying""#),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("Broker unreachable"), "{}", lines[2]);
    }

    #[test]
    fn repeat_after_window_without_drops_has_no_count() {
        let clock = ManualClock::new();

        let lines = capture(&clock, || {
            warn_broker_down(1);
            clock.advance(REPEAT_WINDOW);
            warn_broker_down(1);
        });

        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(!lines[1].contains("Suppressed"), "{}", lines[1]);
    }

    #[test]
    fn count_restarts_with_each_window() {
        let clock = ManualClock::new();

        let lines = capture(&clock, || {
            warn_broker_down(1);
            warn_broker_down(1);
            clock.advance(REPEAT_WINDOW);
            warn_broker_down(1);
            warn_broker_down(1);
            warn_broker_down(1);
            clock.advance(REPEAT_WINDOW);
            warn_broker_down(1);
        });

        let counts: Vec<&String> = lines
            .iter()
            .filter(|line| line.contains("Suppressed"))
            .collect();
        assert_eq!(counts.len(), 2, "{lines:#?}");
        assert!(counts[0].contains("suppressed=1"), "{}", counts[0]);
        assert!(counts[1].contains("suppressed=2"), "{}", counts[1]);
        assert_eq!(lines.len(), 5, "{lines:#?}");
    }

    #[test]
    fn different_field_values_all_logged() {
        let clock = ManualClock::new();

        let lines = capture(&clock, || {
            for broker in 1..=3 {
                warn_broker_down(broker);
            }
        });

        assert_eq!(lines.len(), 3, "{lines:#?}");
    }

    #[test]
    fn retry_fields_ignored_in_identity() {
        let clock = ManualClock::new();
        let retry = |attempt: u32, retry_in_ms: u64, delay_ms: u64| {
            tracing::warn!(
                broker = "kafka",
                attempt,
                retry_in_ms,
                delay_ms,
                "Failed to connect to the broker; retrying"
            );
        };

        let lines = capture(&clock, || {
            for attempt in 1..=4 {
                retry(attempt, u64::from(attempt) * 317, u64::from(attempt) * 7);
            }
            clock.advance(REPEAT_WINDOW);
            retry(5, 1_000, 35);
        });

        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].contains("attempt=1"), "{}", lines[0]);
        assert!(lines[1].contains("suppressed=3"), "{}", lines[1]);
        assert!(lines[2].contains("attempt=5"), "{}", lines[2]);
    }

    #[test]
    fn same_fields_other_callsite_logged() {
        let clock = ManualClock::new();

        let lines = capture(&clock, || {
            tracing::warn!(broker = 1, "Broker unreachable; retrying");
            tracing::warn!(broker = 1, "Broker unreachable; retrying");
        });

        assert_eq!(lines.len(), 2, "{lines:#?}");
    }

    #[test]
    fn errors_limited_and_counted_at_error() {
        let clock = ManualClock::new();

        let watch_failed = || tracing::error!(mailbox = "INBOX", "Mailbox watch failed");

        let lines = capture(&clock, || {
            for _ in 0..3 {
                watch_failed();
            }
            clock.advance(REPEAT_WINDOW);
            for _ in 0..3 {
                watch_failed();
            }
        });

        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[1].starts_with("ERROR "), "{}", lines[1]);
        assert!(lines[1].contains("suppressed=2"), "{}", lines[1]);
    }

    #[test]
    fn info_events_not_limited() {
        let clock = ManualClock::new();

        let lines = capture(&clock, || {
            for _ in 0..3 {
                tracing::info!(mailbox = "INBOX", "Batch published");
            }
        });

        assert_eq!(lines.len(), 3, "{lines:#?}");
    }

    /// A field whose `Debug` logs a warning, as a library type might.
    struct LogsWhenFormatted;

    impl fmt::Debug for LogsWhenFormatted {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            tracing::warn!("Formatted a field");
            f.write_str("value")
        }
    }

    /// The layer formats the fields while it handles the event, and a
    /// field that logs must neither deadlock nor lose the outer event.
    /// tracing 0.1 drops the inner event itself, because a dispatcher
    /// that is handling an event on a thread takes no other from it.
    #[test]
    fn field_that_logs_does_not_deadlock() {
        let clock = ManualClock::new();

        let lines = capture(&clock, || {
            for _ in 0..2 {
                tracing::warn!(field = ?LogsWhenFormatted, "Outer event");
            }
        });

        let outer = lines.iter().filter(|line| line.contains("Outer event"));
        assert_eq!(outer.count(), 1, "{lines:#?}");
    }

    #[test]
    fn full_table_passes_new_events() {
        let clock = ManualClock::new();

        let lines = capture(&clock, || {
            for broker in 0..(MAX_TRACKED as u32 + 10) {
                warn_broker_down(broker);
            }
            warn_broker_down(MAX_TRACKED as u32 + 5);
        });

        assert_eq!(lines.len(), MAX_TRACKED + 11, "untracked events pass");
    }
}
