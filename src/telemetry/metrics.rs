//! The metric handles, named `mailbridge_<subsystem>_<noun>_<unit>` in
//! base units. Label values are account names, protocol names, result
//! names and error kinds, never tokens or mail addresses.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::token_age::RefreshTokenAges;

/// Upper bounds of the token request duration buckets, in seconds, from
/// fast responses up to request timeouts.
const REQUEST_DURATION_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Protocol of a failed sign-in, the `protocol` label of
/// `mailbridge_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// IMAP `AUTHENTICATE`.
    Imap,
    /// SMTP `AUTH`.
    Smtp,
    /// A request to the OAuth2 token endpoint.
    OAuth2,
}

impl Protocol {
    /// Returns the label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Imap => "imap",
            Self::Smtp => "smtp",
            Self::OAuth2 => "oauth2",
        }
    }
}

/// Metric handles of mailbridge. Clones share the underlying metrics.
#[derive(Clone)]
pub struct Metrics {
    token_refreshes: IntCounterVec,
    token_refresh_duration: HistogramVec,
    access_token_expiry: IntGaugeVec,
    refresh_token_age: RefreshTokenAges,
    authorization_required: IntGaugeVec,
    auth_failures: IntCounterVec,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates the metric handles and registers them on `registry`.
    ///
    /// # Errors
    ///
    /// [`prometheus::Error::AlreadyReg`] when `registry` already contains
    /// one of the metrics, for example after a second call on the same
    /// registry.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            token_refreshes: IntCounterVec::new(
                Opts::new(
                    "mailbridge_oauth2_token_refreshes_total",
                    "Token requests sent to the OAuth2 token endpoint, one per attempt, \
                     by result: success or the error kind.",
                ),
                &["account", "result"],
            )?,
            token_refresh_duration: HistogramVec::new(
                HistogramOpts::new(
                    "mailbridge_oauth2_token_refresh_duration_seconds",
                    "Duration of one token request to the OAuth2 token endpoint, in seconds.",
                )
                .buckets(REQUEST_DURATION_BUCKETS.to_vec()),
                &["account"],
            )?,
            access_token_expiry: IntGaugeVec::new(
                Opts::new(
                    "mailbridge_oauth2_access_token_expiry_timestamp_seconds",
                    "Expiry of the newest access token, in seconds since the Unix epoch.",
                ),
                &["account"],
            )?,
            refresh_token_age: RefreshTokenAges::new()?,
            authorization_required: IntGaugeVec::new(
                Opts::new(
                    "mailbridge_oauth2_authorization_required",
                    "1 when the account needs `mailbridge authorize`, else 0; a boolean \
                     without unit.",
                ),
                &["account"],
            )?,
            auth_failures: IntCounterVec::new(
                Opts::new(
                    "mailbridge_auth_failures_total",
                    "Failed sign-ins and token refreshes, counted once per failure after \
                     retries, by protocol and error kind.",
                ),
                &["account", "protocol", "reason"],
            )?,
        };
        metrics.register(registry)?;

        Ok(metrics)
    }

    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.token_refreshes.clone()))?;
        registry.register(Box::new(self.token_refresh_duration.clone()))?;
        registry.register(Box::new(self.access_token_expiry.clone()))?;
        registry.register(Box::new(self.refresh_token_age.clone()))?;
        registry.register(Box::new(self.authorization_required.clone()))?;
        registry.register(Box::new(self.auth_failures.clone()))?;

        Ok(())
    }

    /// Creates the series of `account` for successful token requests and
    /// their duration at 0. The token provider sets the gauges when it
    /// loads the tokens.
    pub fn init_account(&self, account: &str) {
        self.token_refreshes
            .with_label_values(&[account, "success"]);
        self.token_refresh_duration.with_label_values(&[account]);
    }

    /// Counts one token request of `account` that ended with `result`
    /// (`success` or an error kind) after `duration`.
    pub fn record_token_request(&self, account: &str, result: &str, duration: Duration) {
        self.token_refreshes
            .with_label_values(&[account, result])
            .inc();
        self.token_refresh_duration
            .with_label_values(&[account])
            .observe(duration.as_secs_f64());
    }

    /// Sets the expiry of the newest access token of `account`.
    pub fn set_access_token_expiry(&self, account: &str, expires_at: SystemTime) {
        self.access_token_expiry
            .with_label_values(&[account])
            .set(unix_seconds(expires_at));
    }

    /// Sets when the refresh token of `account` in use was issued or last
    /// rotated. Its age is computed from this time at each scrape, so it
    /// keeps growing while no refresh succeeds.
    pub fn set_refresh_token_issued_at(&self, account: &str, issued_at: SystemTime) {
        self.refresh_token_age.set_issued_at(account, issued_at);
    }

    /// Sets whether `account` needs `mailbridge authorize`.
    pub fn set_authorization_required(&self, account: &str, required: bool) {
        self.authorization_required
            .with_label_values(&[account])
            .set(i64::from(required));
    }

    /// Counts one failed sign-in or refresh of `account` over `protocol`,
    /// with the error kind as `reason`.
    pub fn record_auth_failure(&self, account: &str, protocol: Protocol, reason: &str) {
        self.auth_failures
            .with_label_values(&[account, protocol.as_str(), reason])
            .inc();
    }
}

/// Returns whole seconds since the Unix epoch, negative before it.
fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(error) => -i64::try_from(error.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, TextEncoder};

    fn render(registry: &Registry) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buffer)
            .expect("encode metrics");
        String::from_utf8(buffer).expect("metrics text is UTF-8")
    }

    fn recorded() -> String {
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).expect("register metrics");
        let now = SystemTime::now();
        metrics.record_token_request("work", "success", Duration::from_millis(120));
        metrics.set_access_token_expiry("work", now + Duration::from_secs(3600));
        metrics.set_refresh_token_issued_at("work", now - Duration::from_secs(86_400));
        metrics.set_authorization_required("work", true);
        metrics.record_auth_failure("work", Protocol::OAuth2, "invalid_grant");
        render(&registry)
    }

    #[test]
    fn telemetry_types_declared() {
        let text = recorded();
        let types = [
            ("mailbridge_oauth2_token_refreshes_total", "counter"),
            (
                "mailbridge_oauth2_token_refresh_duration_seconds",
                "histogram",
            ),
            (
                "mailbridge_oauth2_access_token_expiry_timestamp_seconds",
                "gauge",
            ),
            ("mailbridge_oauth2_refresh_token_age_seconds", "gauge"),
            ("mailbridge_oauth2_authorization_required", "gauge"),
            ("mailbridge_auth_failures_total", "counter"),
        ];

        for (name, kind) in types {
            let line = format!("# TYPE {name} {kind}");
            assert!(text.contains(&line), "missing `{line}` in:\n{text}");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no help"
            );
        }
    }

    #[test]
    fn telemetry_samples_labelled() {
        let text = recorded();
        let samples = [
            r#"mailbridge_oauth2_token_refreshes_total{account="work",result="success"} 1"#,
            r#"mailbridge_oauth2_token_refresh_duration_seconds_count{account="work"} 1"#,
            r#"mailbridge_oauth2_token_refresh_duration_seconds_bucket{account="work",le="0.25"} 1"#,
            r#"mailbridge_oauth2_refresh_token_age_seconds{account="work"} 86400"#,
            r#"mailbridge_oauth2_authorization_required{account="work"} 1"#,
            r#"mailbridge_auth_failures_total{account="work",protocol="oauth2",reason="invalid_grant"} 1"#,
        ];

        for sample in samples {
            assert!(text.contains(sample), "missing `{sample}` in:\n{text}");
        }
        assert!(
            text.contains(
                r#"mailbridge_oauth2_access_token_expiry_timestamp_seconds{account="work"} "#
            ),
            "{text}"
        );
    }

    #[test]
    fn telemetry_registered_once() {
        let registry = Registry::new();
        Metrics::new(&registry).expect("first registration");

        let error = Metrics::new(&registry).unwrap_err();

        assert!(matches!(error, prometheus::Error::AlreadyReg), "{error}");
    }

    #[test]
    fn telemetry_unix_seconds_signed() {
        let after = UNIX_EPOCH + Duration::from_secs(90);
        let before = UNIX_EPOCH - Duration::from_secs(90);

        assert_eq!(unix_seconds(after), 90);
        assert_eq!(unix_seconds(before), -90);
    }
}
