//! Process metrics of the running mailbridge: CPU time, memory, open and
//! maximum file descriptors, threads and start time, under the standard
//! `process_*` names of Prometheus client libraries.
//!
//! The `prometheus` crate reads them from `/proc` each time the registry
//! is gathered. They exist on Linux only, and elsewhere [`register`] adds
//! nothing.

use prometheus::Registry;

/// Registers the collector of this process's metrics on `registry`.
///
/// # Errors
///
/// [`prometheus::Error::AlreadyReg`] when `registry` already has them.
#[cfg(target_os = "linux")]
pub fn register(registry: &Registry) -> Result<(), prometheus::Error> {
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    registry.register(Box::new(collector))
}

/// Registers nothing, because the process collector reads `/proc`, which
/// only Linux has.
///
/// # Errors
///
/// None on this platform.
#[cfg(not(target_os = "linux"))]
pub fn register(_registry: &Registry) -> Result<(), prometheus::Error> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::telemetry::http::encode;

    /// Returns the value of the unlabelled sample `name` in `text`.
    fn sample(text: &str, name: &str) -> f64 {
        let line = text
            .lines()
            .find(|line| line.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("no sample `{name}` in:\n{text}"));
        let value = line.rsplit(' ').next().expect("a sample has a value");
        value.parse().expect("a sample value is a number")
    }

    #[test]
    fn process_metrics_gathered() {
        let registry = Registry::new();
        register(&registry).expect("register the process collector");

        let text = encode(&registry);

        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
        assert!(text.contains("# TYPE process_resident_memory_bytes gauge"));
        assert!(text.contains("# TYPE process_open_fds gauge"));
        assert!(sample(&text, "process_resident_memory_bytes") > 0.0);
        assert!(sample(&text, "process_open_fds") >= 3.0);
        assert!(sample(&text, "process_cpu_seconds_total") >= 0.0);
    }

    #[test]
    fn process_registered_once() {
        let registry = Registry::new();
        register(&registry).expect("first registration");

        let error = register(&registry).unwrap_err();

        assert!(matches!(error, prometheus::Error::AlreadyReg), "{error}");
    }
}
