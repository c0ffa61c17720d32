//! Metric handles of the inbound pipelines: IMAP fetch cycles, the
//! connection state per mailbox and publications per pipeline.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, core::Collector,
};

/// Bounds of one fetch cycle or one publication, in seconds.
const CYCLE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Bounds of a mail's age at publication, in seconds: from push delivery
/// to a backfill of old mail.
const AGE_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0,
];

/// Inbound metric handles. Clones share the underlying metrics.
#[derive(Clone)]
pub struct InboundMetrics {
    poll_duration: HistogramVec,
    fetch_duration: HistogramVec,
    build_duration: HistogramVec,
    fetched: IntCounterVec,
    published: IntCounterVec,
    publish_duration: HistogramVec,
    mail_age: HistogramVec,
    connected: IntGaugeVec,
    reconnects: IntCounterVec,
    resets: IntCounterVec,
    last_success: IntGaugeVec,
    last_activity: IntGaugeVec,
    assigned: IntGaugeVec,
}

impl fmt::Debug for InboundMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundMetrics").finish_non_exhaustive()
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

fn histogram(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    HistogramVec::new(opts, labels).expect("valid histogram options")
}

const MAILBOX: &[&str] = &["account", "mailbox"];

impl InboundMetrics {
    /// Creates the handles and registers them on `registry`.
    ///
    /// # Errors
    ///
    /// [`prometheus::Error::AlreadyReg`] when `registry` already has them.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name, help, labels: &[&str]| IntCounterVec::new(opts(name, help), labels);
        let gauge = |name, help, labels: &[&str]| IntGaugeVec::new(opts(name, help), labels);
        let metrics = Self {
            poll_duration: histogram(
                "mailbridge_imap_poll_duration_seconds",
                "Duration of one fetch cycle of a mailbox: search, fetch, publish, \
                 post-process and checkpoint, in seconds.",
                CYCLE_BUCKETS,
                MAILBOX,
            ),
            fetch_duration: histogram(
                "mailbridge_imap_fetch_duration_seconds",
                "Duration of the UID FETCH of one batch's mails, from the command to its \
                 completion, in seconds.",
                CYCLE_BUCKETS,
                MAILBOX,
            ),
            build_duration: histogram(
                "mailbridge_build_duration_seconds",
                "Duration of parsing one fetched batch and building its documents, in \
                 seconds.",
                CYCLE_BUCKETS,
                &["pipeline"],
            ),
            fetched: counter(
                "mailbridge_imap_messages_fetched_total",
                "Mails fetched from IMAP, repeats after a failed batch included.",
                MAILBOX,
            )?,
            published: counter(
                "mailbridge_messages_published_total",
                "Documents handed to the broker, by result: success or the error kind.",
                &["pipeline", "result"],
            )?,
            publish_duration: histogram(
                "mailbridge_publish_duration_seconds",
                "Duration of one batch publication until the broker confirmed it, in seconds.",
                CYCLE_BUCKETS,
                &["pipeline"],
            ),
            mail_age: histogram(
                "mailbridge_mail_age_at_publish_seconds",
                "Time from a mail's IMAP INTERNALDATE to the broker's confirmation, in seconds.",
                AGE_BUCKETS,
                &["pipeline"],
            ),
            connected: gauge(
                "mailbridge_imap_connected",
                "1 while the mailbox's IMAP session is signed in and selected, else 0.",
                MAILBOX,
            )?,
            reconnects: counter(
                "mailbridge_imap_reconnects_total",
                "IMAP sessions of a mailbox that ended with an error and were reopened, \
                 by the error kind.",
                &["account", "mailbox", "reason"],
            )?,
            resets: counter(
                "mailbridge_mailbox_resets_total",
                "UIDVALIDITY changes seen, each of which published a mailbox_reset event.",
                MAILBOX,
            )?,
            last_success: gauge(
                "mailbridge_last_success_timestamp_seconds",
                "End of the mailbox's last fetch cycle that succeeded, one that found no \
                 new mail included, in seconds since the Unix epoch.",
                MAILBOX,
            )?,
            last_activity: gauge(
                "mailbridge_imap_last_activity_timestamp_seconds",
                "Last time the mailbox's IMAP server sent anything, in seconds since the \
                 Unix epoch; a stale value shows a dead connection.",
                MAILBOX,
            )?,
            assigned: gauge(
                "mailbridge_mailbox_assigned",
                "1 while this process watches the mailbox, else 0: always 1 without \
                 coordination, and with coordination while the broker assigns the mailbox \
                 to this replica.",
                &["pipeline", "account", "mailbox"],
            )?,
        };
        for collector in metrics.collectors() {
            registry.register(collector)?;
        }

        Ok(metrics)
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.poll_duration.clone()),
            Box::new(self.fetch_duration.clone()),
            Box::new(self.build_duration.clone()),
            Box::new(self.fetched.clone()),
            Box::new(self.published.clone()),
            Box::new(self.publish_duration.clone()),
            Box::new(self.mail_age.clone()),
            Box::new(self.connected.clone()),
            Box::new(self.reconnects.clone()),
            Box::new(self.resets.clone()),
            Box::new(self.last_success.clone()),
            Box::new(self.last_activity.clone()),
            Box::new(self.assigned.clone()),
        ]
    }

    /// Creates the series of inbound pipeline `pipeline`, which reads
    /// `mailboxes` of `account`, so that they are exported before the first
    /// event: counters, histograms and the connection state at 0, and the
    /// two timestamps at `started`, so that staleness counts from the
    /// start. Label values that come from errors are not known yet.
    pub fn init_pipeline(
        &self,
        pipeline: &str,
        account: &str,
        mailboxes: &[String],
        coordinated: bool,
        started: SystemTime,
    ) {
        self.published.with_label_values(&[pipeline, "success"]);
        self.publish_duration.with_label_values(&[pipeline]);
        self.build_duration.with_label_values(&[pipeline]);
        self.mail_age.with_label_values(&[pipeline]);
        for mailbox in mailboxes {
            let labels = [account, mailbox.as_str()];
            self.poll_duration.with_label_values(&labels);
            self.fetch_duration.with_label_values(&labels);
            self.fetched.with_label_values(&labels);
            self.resets.with_label_values(&labels);
            self.connected.with_label_values(&labels).set(0);
            self.assigned
                .with_label_values(&[pipeline, account, mailbox.as_str()])
                .set(i64::from(!coordinated));
            self.last_success
                .with_label_values(&labels)
                .set(unix_seconds(started));
            self.last_activity
                .with_label_values(&labels)
                .set(unix_seconds(started));
        }
    }

    /// Records one successful fetch cycle of `mailbox`.
    pub fn record_cycle(&self, account: &str, mailbox: &str, duration: Duration) {
        let labels = [account, mailbox];
        self.poll_duration
            .with_label_values(&labels)
            .observe(duration.as_secs_f64());
        self.last_success
            .with_label_values(&labels)
            .set(unix_seconds(SystemTime::now()));
    }

    /// Records the UID FETCH of one batch of `mailbox`, which gave
    /// `fetched` mails, whether the batch is then checkpointed or not.
    pub fn record_fetch(&self, account: &str, mailbox: &str, duration: Duration, fetched: usize) {
        let labels = [account, mailbox];
        self.fetch_duration
            .with_label_values(&labels)
            .observe(duration.as_secs_f64());
        self.fetched
            .with_label_values(&labels)
            .inc_by(fetched as u64);
    }

    /// Records the time spent building the documents of one batch of
    /// `pipeline`.
    pub fn record_build(&self, pipeline: &str, duration: Duration) {
        self.build_duration
            .with_label_values(&[pipeline])
            .observe(duration.as_secs_f64());
    }

    /// Records a batch of `pipeline` whose `confirmed` records the broker
    /// confirmed: its duration and the INTERNALDATE of each mail that has
    /// one, which may be fewer than `confirmed`.
    pub fn record_published(
        &self,
        pipeline: &str,
        duration: Duration,
        confirmed: usize,
        received: &[SystemTime],
    ) {
        self.published
            .with_label_values(&[pipeline, "success"])
            .inc_by(confirmed as u64);
        self.publish_duration
            .with_label_values(&[pipeline])
            .observe(duration.as_secs_f64());
        let now = SystemTime::now();
        let age = self.mail_age.with_label_values(&[pipeline]);
        for at in received {
            age.observe(now.duration_since(*at).unwrap_or_default().as_secs_f64());
        }
    }

    /// Counts `count` documents of `pipeline` whose batch failed with `kind`.
    pub fn record_publish_failure(&self, pipeline: &str, kind: &str, count: usize) {
        self.published
            .with_label_values(&[pipeline, kind])
            .inc_by(count as u64);
    }

    /// Sets whether `mailbox` has a selected session.
    /// Sets whether this process watches `mailbox` for `pipeline`.
    pub fn set_assigned(&self, pipeline: &str, account: &str, mailbox: &str, assigned: bool) {
        self.assigned
            .with_label_values(&[pipeline, account, mailbox])
            .set(i64::from(assigned));
    }

    pub fn set_connected(&self, account: &str, mailbox: &str, connected: bool) {
        self.connected
            .with_label_values(&[account, mailbox])
            .set(i64::from(connected));
    }

    /// Counts a session of `mailbox` that ended with an error of `kind`.
    pub fn record_reconnect(&self, account: &str, mailbox: &str, kind: &str) {
        self.reconnects
            .with_label_values(&[account, mailbox, kind])
            .inc();
    }

    /// Counts a UIDVALIDITY change of `mailbox`.
    pub fn record_reset(&self, account: &str, mailbox: &str) {
        self.resets.with_label_values(&[account, mailbox]).inc();
    }

    /// Sets when the server of `mailbox` last sent anything.
    pub fn set_last_activity(&self, account: &str, mailbox: &str, at: SystemTime) {
        self.last_activity
            .with_label_values(&[account, mailbox])
            .set(unix_seconds(at));
    }
}

fn unix_seconds(at: SystemTime) -> i64 {
    let seconds = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_show_up_in_the_registry() {
        let registry = Registry::new();
        let metrics = InboundMetrics::new(&registry).unwrap();

        metrics.record_cycle("support", "INBOX", Duration::from_millis(20));
        metrics.record_published("tickets", Duration::from_millis(5), 1, &[SystemTime::now()]);
        metrics.set_connected("support", "INBOX", true);
        metrics.record_fetch("support", "INBOX", Duration::from_millis(7), 3);
        metrics.record_build("tickets", Duration::from_millis(2));

        let text = crate::telemetry::http::encode(&registry);
        assert!(text.contains(
            "mailbridge_imap_fetch_duration_seconds_sum{account=\"support\",mailbox=\"INBOX\"} 0.007"
        ));
        assert!(text.contains("mailbridge_build_duration_seconds_sum{pipeline=\"tickets\"} 0.002"));
        assert!(text.contains(
            "mailbridge_imap_messages_fetched_total{account=\"support\",mailbox=\"INBOX\"} 3"
        ));
        assert!(text.contains(
            "mailbridge_messages_published_total{pipeline=\"tickets\",result=\"success\"} 1"
        ));
        assert!(
            text.contains("mailbridge_imap_connected{account=\"support\",mailbox=\"INBOX\"} 1")
        );
        assert!(InboundMetrics::new(&registry).is_err(), "registered twice");
    }

    #[test]
    fn published_counts_confirmed_records() {
        let registry = Registry::new();
        let metrics = InboundMetrics::new(&registry).unwrap();

        // Three confirmed records, of which one mail came with INTERNALDATE.
        metrics.record_published("tickets", Duration::from_millis(5), 3, &[SystemTime::now()]);

        let text = crate::telemetry::http::encode(&registry);
        assert!(
            text.contains(
                "mailbridge_messages_published_total{pipeline=\"tickets\",result=\"success\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("mailbridge_mail_age_at_publish_seconds_count{pipeline=\"tickets\"} 1"),
            "{text}"
        );
    }
}
