//! Metric handles of the outbound pipelines: SMTP submissions, retries,
//! dead-lettered requests and the concurrency limit of each account.

use std::fmt;
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Bounds of one SMTP submission, in seconds, connection and sign-in
/// included when the pool had none ready.
const SEND_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Outbound metric handles. Clones share the underlying metrics.
#[derive(Clone)]
pub struct OutboundMetrics {
    sent: IntCounterVec,
    send_duration: HistogramVec,
    dead_lettered: IntCounterVec,
    retries: IntCounterVec,
    concurrency_limit: IntGaugeVec,
}

impl fmt::Debug for OutboundMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundMetrics").finish_non_exhaustive()
    }
}

impl OutboundMetrics {
    /// Creates the handles and registers them on `registry`.
    ///
    /// # Errors
    ///
    /// [`prometheus::Error::AlreadyReg`] when `registry` already has them.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let metrics = Self {
            sent: counter(
                "mailbridge_smtp_sent_total",
                "Send attempts by result: success, or the error kind of the attempt.",
                &["pipeline", "result"],
            )?,
            send_duration: HistogramVec::new(
                HistogramOpts::new(
                    "mailbridge_smtp_send_duration_seconds",
                    "Duration of one SMTP submission attempt, in seconds.",
                )
                .buckets(SEND_BUCKETS.to_vec()),
                &["pipeline"],
            )?,
            dead_lettered: counter(
                "mailbridge_dead_lettered_total",
                "Requests sent to the dead-letter target, by reason.",
                &["pipeline", "reason"],
            )?,
            retries: counter(
                "mailbridge_outbound_retries_total",
                "Send attempts repeated after a transient failure.",
                &["pipeline"],
            )?,
            concurrency_limit: IntGaugeVec::new(
                Opts::new(
                    "mailbridge_outbound_concurrency_limit",
                    "Sends in flight allowed for the account, lowered after concurrency-limit replies.",
                ),
                &["account"],
            )?,
        };
        registry.register(Box::new(metrics.sent.clone()))?;
        registry.register(Box::new(metrics.send_duration.clone()))?;
        registry.register(Box::new(metrics.dead_lettered.clone()))?;
        registry.register(Box::new(metrics.retries.clone()))?;
        registry.register(Box::new(metrics.concurrency_limit.clone()))?;

        Ok(metrics)
    }

    /// Creates the series of outbound pipeline `pipeline` at 0, so that
    /// they are exported before the first send. Label values that come
    /// from errors are not known yet.
    pub fn init_pipeline(&self, pipeline: &str) {
        self.sent.with_label_values(&[pipeline, "success"]);
        self.send_duration.with_label_values(&[pipeline]);
        self.retries.with_label_values(&[pipeline]);
    }

    /// Records one send attempt of `pipeline` that ended with `result`.
    pub fn record_attempt(&self, pipeline: &str, result: &str, duration: Duration) {
        self.sent.with_label_values(&[pipeline, result]).inc();
        self.send_duration
            .with_label_values(&[pipeline])
            .observe(duration.as_secs_f64());
    }

    /// Counts a retry of a send.
    pub fn record_retry(&self, pipeline: &str) {
        self.retries.with_label_values(&[pipeline]).inc();
    }

    /// Sets the number of sends in flight allowed for `account`.
    pub fn set_concurrency_limit(&self, account: &str, limit: usize) {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.concurrency_limit
            .with_label_values(&[account])
            .set(limit);
    }

    /// Counts a request sent to the dead-letter target.
    pub fn record_dead_letter(&self, pipeline: &str, reason: &str) {
        self.dead_lettered
            .with_label_values(&[pipeline, reason])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_show_up_in_the_registry() {
        let registry = Registry::new();
        let metrics = OutboundMetrics::new(&registry).unwrap();

        metrics.record_attempt("replies", "success", Duration::from_millis(40));
        metrics.record_retry("replies");
        metrics.record_dead_letter("replies", "invalid_header_value");
        metrics.set_concurrency_limit("support", 3);

        let text = crate::telemetry::http::encode(&registry);
        assert!(
            text.contains("mailbridge_smtp_sent_total{pipeline=\"replies\",result=\"success\"} 1")
        );
        assert!(text.contains("mailbridge_outbound_retries_total{pipeline=\"replies\"} 1"));
        assert!(text.contains(
            "mailbridge_dead_lettered_total{pipeline=\"replies\",reason=\"invalid_header_value\"} 1"
        ));
        assert!(text.contains("mailbridge_outbound_concurrency_limit{account=\"support\"} 3"));
    }
}
