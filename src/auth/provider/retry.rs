//! Retries of token requests: exponential backoff with full jitter for
//! transient failures, at least the server's `Retry-After`, a bounded
//! number of attempts, and one delayed re-check of a rejection that
//! would otherwise mark the account as needing authorization.

use std::future::Future;
use std::time::Duration;

use crate::auth::OAuth2Error;

/// Retry policy of token requests: attempts, backoff and re-check delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Maximum requests for one token, the first included. Default: 5.
    pub max_attempts: u32,
    /// Backoff before the second attempt, doubled for each later one.
    /// Default: 500 ms.
    pub base_delay: Duration,
    /// Maximum backoff, and the longest `Retry-After` that is waited for
    /// rather than returned to the caller. Default: 60 s.
    pub max_delay: Duration,
    /// Wait before the one re-check of a refresh token that the server
    /// rejected with `invalid_grant` or a similar code. Default: 30 s.
    pub recheck_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            recheck_delay: Duration::from_secs(30),
        }
    }
}

/// Decision taken after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Retry a transient failure after the delay.
    Retry(Duration),
    /// Check a rejection once more after the delay.
    Recheck(Duration),
    /// Return the error.
    Stop,
}

impl RetryPolicy {
    /// Returns the full-jitter backoff after failed attempt `attempt`
    /// (1 for the first): `sample` times `base_delay * 2^(attempt - 1)`,
    /// capped at `max_delay`. `sample` is a uniform random number in
    /// `[0, 1)`; values outside are clamped.
    pub(crate) fn backoff(&self, attempt: u32, sample: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let ceiling = self
            .base_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay);

        ceiling.mul_f64(sample.clamp(0.0, 1.0))
    }

    /// Decides the step after failed attempt `attempt` with `error`.
    /// `rechecked` is whether the one re-check was already used.
    pub(crate) fn next(
        &self,
        error: &OAuth2Error,
        attempt: u32,
        rechecked: bool,
        sample: f64,
    ) -> Next {
        if error.needs_authorization() {
            return match rechecked {
                false => Next::Recheck(self.recheck_delay),
                true => Next::Stop,
            };
        }
        if !error.is_transient() || attempt >= self.max_attempts {
            return Next::Stop;
        }

        let backoff = self.backoff(attempt, sample);
        match error.retry_after() {
            Some(wait) if wait > self.max_delay => Next::Stop,
            Some(wait) => Next::Retry(wait.max(backoff)),
            None => Next::Retry(backoff),
        }
    }
}

/// Runs `request` until it succeeds or `policy` says to stop, sleeping on
/// the tokio clock between attempts. `sample` yields the jitter samples.
pub(crate) async fn run<T, F, Fut>(
    account: &str,
    policy: &RetryPolicy,
    mut sample: impl FnMut() -> f64,
    mut request: F,
) -> Result<T, OAuth2Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, OAuth2Error>>,
{
    let mut attempt = 1;
    let mut rechecked = false;
    loop {
        let error = match request().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let delay = match policy.next(&error, attempt, rechecked, sample()) {
            Next::Stop => return Err(error),
            Next::Retry(delay) => delay,
            Next::Recheck(delay) => {
                rechecked = true;
                delay
            }
        };

        tracing::warn!(
            account,
            attempt,
            error_type = error.kind(),
            error = %error,
            delay_ms = delay.as_millis() as u64,
            "Retrying token request"
        );
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}
