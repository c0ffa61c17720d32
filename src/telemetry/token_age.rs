//! `mailbridge_oauth2_refresh_token_age_seconds`, computed at each scrape
//! from the time the refresh token in use was issued. An age stored at
//! the last refresh would stop growing when refreshes stop, which is the
//! case that an alert on a provider's inactivity limit must catch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};

/// Ages of the refresh tokens, one per account. Clones share the issue
/// times. Registered as a [`Collector`], which sets each age from the
/// clock when the registry is gathered.
#[derive(Clone)]
pub(crate) struct RefreshTokenAges {
    gauge: IntGaugeVec,
    issued_at: Arc<Mutex<BTreeMap<String, SystemTime>>>,
}

impl RefreshTokenAges {
    pub(crate) fn new() -> Result<Self, prometheus::Error> {
        let opts = Opts::new(
            "mailbridge_oauth2_refresh_token_age_seconds",
            "Age of the refresh token in use, in seconds since it was issued or last \
             rotated, as of the scrape.",
        );
        Ok(Self {
            gauge: IntGaugeVec::new(opts, &["account"])?,
            issued_at: Arc::default(),
        })
    }

    /// Records that the refresh token of `account` was issued at `issued_at`.
    pub(crate) fn set_issued_at(&self, account: &str, issued_at: SystemTime) {
        let mut issued = self.issued_at.lock().expect("refresh token ages lock");
        issued.insert(account.to_owned(), issued_at);
    }

    /// Sets every account's age as of `now`. A clock set back before the
    /// issue time yields 0.
    fn update(&self, now: SystemTime) {
        let issued = self.issued_at.lock().expect("refresh token ages lock");
        for (account, issued_at) in issued.iter() {
            let age = now.duration_since(*issued_at).unwrap_or_default();
            let seconds = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
            self.gauge.with_label_values(&[account]).set(seconds);
        }
    }
}

impl Collector for RefreshTokenAges {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.update(SystemTime::now());
        self.gauge.collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus::Registry;

    use super::*;

    /// Returns the age of `account` in the gathered metrics of `registry`.
    fn gathered_age(registry: &Registry, account: &str) -> i64 {
        let families = registry.gather();
        let family = families
            .iter()
            .find(|family| family.name() == "mailbridge_oauth2_refresh_token_age_seconds")
            .expect("age family gathered");
        let metric = family
            .get_metric()
            .iter()
            .find(|metric| metric.get_label()[0].value() == account)
            .expect("age of the account gathered");
        metric.get_gauge().get_value() as i64
    }

    #[test]
    fn age_grows_without_refresh() {
        let registry = Registry::new();
        let ages = RefreshTokenAges::new().unwrap();
        registry.register(Box::new(ages.clone())).unwrap();
        ages.set_issued_at("work", SystemTime::now() - Duration::from_secs(86_400));

        let first = gathered_age(&registry, "work");
        std::thread::sleep(Duration::from_millis(1100));
        let second = gathered_age(&registry, "work");

        assert!(first >= 86_400, "first age {first}");
        assert!(second > first, "the age stayed at {first}");
    }

    #[test]
    fn age_at_later_time() {
        let ages = RefreshTokenAges::new().unwrap();
        let issued_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        ages.set_issued_at("work", issued_at);

        ages.update(issued_at + Duration::from_secs(90 * 86_400));

        assert_eq!(ages.gauge.with_label_values(&["work"]).get(), 90 * 86_400);
    }

    #[test]
    fn age_before_issue_is_zero() {
        let ages = RefreshTokenAges::new().unwrap();
        let issued_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        ages.set_issued_at("work", issued_at);

        ages.update(issued_at - Duration::from_secs(5));

        assert_eq!(ages.gauge.with_label_values(&["work"]).get(), 0);
    }

    #[test]
    fn new_issue_time_restarts_age() {
        let ages = RefreshTokenAges::new().unwrap();
        let now = SystemTime::now();
        ages.set_issued_at("work", now - Duration::from_secs(3_600));

        ages.set_issued_at("work", now);
        ages.update(now + Duration::from_secs(10));

        assert_eq!(ages.gauge.with_label_values(&["work"]).get(), 10);
    }
}
