//! The device-code grant (RFC 8628): the device authorization request and
//! the polling of the token endpoint until the person signs in elsewhere.

use std::fmt;
use std::time::Duration;

use oauth2::StandardDeviceAuthorizationResponse;
use tokio::time::Instant;

use super::http::Recorder;
use super::{GrantError, TokenClient, token_update};
use crate::auth::OAuth2Error;
use crate::auth::store::TokenUpdate;

/// Body of the error reported when polling ends at the device code's
/// expiry before the server returned `expired_token`.
const EXPIRED_BODY: &[u8] = br#"{"error":"expired_token","error_description":"the device code expired before the sign-in was completed"}"#;

/// A started device authorization: the code and address to show to the
/// person who signs in. `Debug` omits the device code.
pub struct DeviceAuthorization {
    pub(super) response: StandardDeviceAuthorizationResponse,
    /// When the device code expires, by the monotonic clock.
    pub(super) expires_at: Instant,
}

impl DeviceAuthorization {
    /// Returns the code the person enters, such as `BCDF-GHJK`.
    pub fn user_code(&self) -> &str {
        self.response.user_code().secret()
    }

    /// Returns the address where the person enters the code.
    pub fn verification_uri(&self) -> &str {
        self.response.verification_uri()
    }

    /// Returns the address with the code filled in, when the server sent one.
    pub fn verification_uri_complete(&self) -> Option<&str> {
        let complete = self.response.verification_uri_complete()?;
        Some(complete.secret())
    }

    /// Returns the lifetime of the codes, as the server sent it.
    pub fn expires_in(&self) -> Duration {
        self.response.expires_in()
    }

    /// Returns the minimum time between two polls; 5 s when the server
    /// sent none (RFC 8628 section 3.2).
    pub fn interval(&self) -> Duration {
        self.response.interval()
    }
}

impl fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("user_code", &self.user_code())
            .field("verification_uri", &self.verification_uri())
            .field("expires_in", &self.expires_in())
            .field("interval", &self.interval())
            .finish_non_exhaustive()
    }
}

impl TokenClient {
    /// Starts a device authorization for the account's scopes (RFC 8628
    /// section 3.1).
    ///
    /// # Errors
    ///
    /// [`GrantError::MissingDeviceUrl`] without a device authorization
    /// endpoint, and [`GrantError::Request`] when the server rejects the
    /// request.
    pub async fn start_device(&self) -> Result<DeviceAuthorization, GrantError> {
        let request =
            self.client
                .exchange_device_code()
                .map_err(|_| GrantError::MissingDeviceUrl {
                    account: self.account.clone(),
                })?;
        let recorder = Recorder::new(&self.http);
        let started = Instant::now();
        let response = request
            .add_scopes(self.scopes.iter().cloned())
            .request_async(&recorder)
            .await
            .map_err(|error| recorder.error(&self.account, error))?;

        Ok(DeviceAuthorization {
            expires_at: started + response.expires_in(),
            response,
        })
    }

    /// Polls the token endpoint until the person approves or denies the
    /// device authorization, or its codes expire (RFC 8628 section 3.4).
    /// `authorization_pending` keeps the interval and `slow_down` adds 5 s
    /// to it for every later poll. A transient failure, such as HTTP 503,
    /// is retried after its `Retry-After` or the interval while the codes
    /// are valid.
    ///
    /// # Errors
    ///
    /// An [`OAuth2Error`] classified as `access_denied` when the person
    /// declined, `expired_token` when the codes expired, or the failure of
    /// the last poll.
    pub async fn poll_device(
        &self,
        device: &DeviceAuthorization,
    ) -> Result<TokenUpdate, OAuth2Error> {
        loop {
            let remaining = device.expires_at.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(expired(&self.account));
            }
            let error = match self.poll_until_decided(device, remaining).await {
                Ok(update) => return Ok(update),
                Err(error) => error,
            };
            let wait = error.retry_after().unwrap_or(device.interval());
            if !error.is_transient() || Instant::now() + wait >= device.expires_at {
                return Err(error);
            }

            tracing::warn!(
                account = %self.account,
                error_type = error.kind(),
                error = %error,
                delay_ms = wait.as_millis() as u64,
                "Retrying device code poll"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Runs the `oauth2` crate's polling loop, which stops at the first
    /// response other than `authorization_pending` and `slow_down`, or after
    /// `remaining`. Connection failures make it double the interval, up
    /// to 10 s, and poll again.
    async fn poll_until_decided(
        &self,
        device: &DeviceAuthorization,
        remaining: Duration,
    ) -> Result<TokenUpdate, OAuth2Error> {
        let recorder = Recorder::new(&self.http);
        let result = self
            .client
            .exchange_device_access_token(&device.response)
            .request_async(&recorder, tokio::time::sleep, Some(remaining))
            .await;

        let error = match result {
            Ok(response) => return Ok(token_update(&response)),
            Err(error) => recorder.error(&self.account, error),
        };
        // The crate ends its loop at the deadline with an `expired_token`
        // of its own; the last real response was then still pending.
        match error.is_transient() && error.status() == Some(400) {
            true => Err(expired(&self.account)),
            false => Err(error),
        }
    }
}

fn expired(account: &str) -> OAuth2Error {
    let now = std::time::SystemTime::now();
    OAuth2Error::from_parts(account, 400, None, EXPIRED_BODY, now)
}
