//! Metrics that a [`TokenProvider`](super::TokenProvider) built with
//! [`Metrics`] records:
//!
//! - each token request, retries included, with its result (`success` or
//!   the error kind) and its duration;
//! - each refresh that failed after its retries, as an OAuth2 sign-in
//!   failure with the error kind as reason;
//! - the access token's expiry, when a token is received or read from the
//!   token file;
//! - the time the refresh token in use was issued or last rotated, when
//!   the tokens are read from the file or committed after a refresh, from
//!   which each scrape computes the token's age;
//! - whether the account needs authorization, at start and whenever the
//!   account is marked or cleared.

use std::future::Future;
use std::time::Instant;

use super::Inner;
use crate::auth::OAuth2Error;
use crate::auth::store::StoredTokens;
use crate::telemetry::Protocol;

impl Inner {
    /// Runs one token request and records its result and duration.
    pub(super) async fn timed<T>(
        &self,
        request: impl Future<Output = Result<T, OAuth2Error>>,
    ) -> Result<T, OAuth2Error> {
        let started = Instant::now();
        let result = request.await;
        if let Some(metrics) = &self.metrics {
            let label = match &result {
                Ok(_) => "success",
                Err(error) => error.kind(),
            };
            metrics.record_token_request(&self.account, label, started.elapsed());
        }

        result
    }

    pub(super) fn record_refresh_failure(&self, error: &OAuth2Error) {
        if let Some(metrics) = &self.metrics {
            metrics.record_auth_failure(&self.account, Protocol::OAuth2, error.kind());
        }
    }

    pub(super) fn record_access_token(&self, tokens: &StoredTokens) {
        if let (Some(metrics), Some(expires_at)) = (&self.metrics, tokens.access_token_expires_at) {
            metrics.set_access_token_expiry(&self.account, expires_at);
        }
    }

    /// Records when the refresh token in use was issued, which a rotation
    /// counts as a new issue.
    pub(super) fn record_refresh_token_issued(&self, tokens: &StoredTokens) {
        let issued_at = tokens
            .refresh_token_rotated_at
            .or(tokens.refresh_token_issued_at);
        if let (Some(metrics), Some(issued_at)) = (&self.metrics, issued_at) {
            metrics.set_refresh_token_issued_at(&self.account, issued_at);
        }
    }

    pub(super) fn record_authorization_required(&self, required: bool) {
        if let Some(metrics) = &self.metrics {
            metrics.set_authorization_required(&self.account, required);
        }
    }

    /// Records the state read at start: the tokens from the file and an
    /// account that is not marked yet.
    pub(super) fn record_loaded(&self) {
        self.record_authorization_required(false);
        // The provider is not built yet, so nothing else holds the lock.
        let cache = self.cache.try_lock();
        if let Some(tokens) = cache.ok().as_ref().and_then(|cache| cache.tokens.as_ref()) {
            self.record_refresh_token_issued(tokens);
            self.record_access_token(tokens);
        }
    }
}
