//! Token-endpoint requests of the OAuth2 grants, on the `oauth2` crate:
//! refresh token (RFC 6749 section 6), client credentials (section 4.4),
//! the authorization-code exchange with a PKCE verifier (section 4.1.3,
//! RFC 7636) and the device-code grant (RFC 8628). Every failed request
//! becomes an [`OAuth2Error`] of the account. Retrying is the caller's
//! job, except while a device code is polled.
//!
//! The client ID and secret are sent as form fields
//! (`client_secret_post`), which Microsoft, Google and the generic
//! servers accept alike. A public client, which has no secret, sends only
//! its ID.

mod device;
mod http;

use std::borrow::Cow;

use oauth2::basic::{BasicClient, BasicTokenResponse};
use oauth2::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, DeviceAuthorizationUrl, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, TokenUrl,
    reqwest,
};

pub use device::DeviceAuthorization;
pub use http::HttpSettings;

use super::OAuth2Error;
use super::presets::Preset;
use super::store::TokenUpdate;
use super::token::{AccessToken, RefreshToken};
use crate::config::Account;
use http::Recorder;

/// The `oauth2` client with a token endpoint and maybe a device
/// authorization endpoint.
type Client =
    BasicClient<EndpointNotSet, EndpointMaybeSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// Errors of setting up a [`TokenClient`] and of starting a device
/// authorization.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// An endpoint of the account is not a valid URL.
    #[error(
        "invalid {key} {url:?} for account {account}: {reason}; \
         check accounts.{account}.oauth2.{key}"
    )]
    InvalidUrl {
        /// Name of the account.
        account: String,
        /// Configuration key of the endpoint, such as `token_url`.
        key: &'static str,
        /// The rejected value.
        url: String,
        /// Reason the URL parser gave.
        reason: String,
    },
    /// The device-code grant needs a device authorization endpoint.
    #[error(
        "missing device authorization endpoint for account {account}; \
         set accounts.{account}.oauth2.device_authorization_url"
    )]
    MissingDeviceUrl {
        /// Name of the account.
        account: String,
    },
    /// The HTTP client could not be built, for example without TLS roots.
    #[error("failed to set up the HTTP client of account {account}: {source}")]
    HttpClient {
        /// Name of the account.
        account: String,
        /// The reqwest failure.
        #[source]
        source: reqwest::Error,
    },
    /// The token or device authorization endpoint rejected the request,
    /// or could not be reached.
    #[error(transparent)]
    Request(Box<OAuth2Error>),
}

impl From<OAuth2Error> for GrantError {
    fn from(error: OAuth2Error) -> Self {
        Self::Request(Box::new(error))
    }
}

impl GrantError {
    /// Short stable name, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } => "invalid_url",
            Self::MissingDeviceUrl { .. } => "missing_device_url",
            Self::HttpClient { .. } => "http_client",
            Self::Request(error) => error.kind(),
        }
    }

    /// Returns whether a retry may succeed: only for a transient request
    /// failure.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Request(error) if error.is_transient())
    }

    /// Returns the failed request's error, for its classification.
    pub fn oauth2(&self) -> Option<&OAuth2Error> {
        match self {
            Self::Request(error) => Some(error),
            _ => None,
        }
    }
}

/// The token requests of one account, sharing one HTTP client.
#[derive(Debug, Clone)]
pub struct TokenClient {
    account: String,
    client: Client,
    scopes: Vec<Scope>,
    http: reqwest::Client,
}

impl TokenClient {
    /// Builds the client of account `name` from its configuration and its
    /// resolved endpoints and scopes.
    ///
    /// # Errors
    ///
    /// [`GrantError::InvalidUrl`] for an endpoint that is not a URL and
    /// [`GrantError::HttpClient`] when reqwest fails to start.
    pub fn new(
        name: &str,
        account: &Account,
        preset: &Preset,
        settings: HttpSettings,
    ) -> Result<Self, GrantError> {
        let invalid =
            |key: &'static str, url: &str, error: oauth2::url::ParseError| GrantError::InvalidUrl {
                account: name.to_owned(),
                key,
                url: url.to_owned(),
                reason: error.to_string(),
            };
        let token_url = TokenUrl::new(preset.token_url.clone())
            .map_err(|error| invalid("token_url", &preset.token_url, error))?;
        let device_url = match &preset.device_authorization_url {
            Some(url) => Some(
                DeviceAuthorizationUrl::new(url.clone())
                    .map_err(|error| invalid("device_authorization_url", url, error))?,
            ),
            None => None,
        };

        let mut client = BasicClient::new(ClientId::new(account.oauth2.client_id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url)
            .set_device_authorization_url_option(device_url);
        if let Some(secret) = &account.oauth2.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose().to_owned()));
        }
        let http = http::build_client(settings).map_err(|source| GrantError::HttpClient {
            account: name.to_owned(),
            source,
        })?;

        Ok(Self {
            account: name.to_owned(),
            client,
            scopes: preset.scopes.iter().cloned().map(Scope::new).collect(),
            http,
        })
    }

    /// Returns the name of the account.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Exchanges a refresh token for new tokens, requesting the account's
    /// scopes. The response may carry a rotated refresh token, which the
    /// caller must store before it uses the access token.
    ///
    /// # Errors
    ///
    /// The [`OAuth2Error`] of the failed request, such as `invalid_grant`
    /// for an expired or revoked refresh token.
    pub async fn refresh(&self, refresh_token: &RefreshToken) -> Result<TokenUpdate, OAuth2Error> {
        let refresh_token = oauth2::RefreshToken::new(refresh_token.expose().to_owned());
        let recorder = Recorder::new(&self.http);
        let result = self
            .client
            .exchange_refresh_token(&refresh_token)
            .add_scopes(self.scopes.iter().cloned())
            .request_async(&recorder)
            .await;

        result
            .map(|response| token_update(&response))
            .map_err(|error| recorder.error(&self.account, error))
    }

    /// Requests an app-only access token with the client's own
    /// credentials and the account's scopes, such as Microsoft's
    /// `https://outlook.office365.com/.default`. No refresh token comes
    /// with it (RFC 6749 section 4.4.3).
    ///
    /// # Errors
    ///
    /// The [`OAuth2Error`] of the failed request.
    pub async fn client_credentials(&self) -> Result<TokenUpdate, OAuth2Error> {
        let recorder = Recorder::new(&self.http);
        let result = self
            .client
            .exchange_client_credentials()
            .add_scopes(self.scopes.iter().cloned())
            .request_async(&recorder)
            .await;

        result
            .map(|response| token_update(&response))
            .map_err(|error| recorder.error(&self.account, error))
    }

    /// Exchanges an authorization code for tokens, with the PKCE verifier
    /// of the authorization request (RFC 7636 section 4.5) and the same
    /// redirect URI (RFC 6749 section 4.1.3). A code is valid for one
    /// exchange only, so a failure must not be retried with the same code.
    ///
    /// # Errors
    ///
    /// The [`OAuth2Error`] of the failed request, such as `invalid_grant`
    /// for a used, expired or mismatched code.
    pub async fn exchange_code(
        &self,
        code: AuthorizationCode,
        verifier: PkceCodeVerifier,
        redirect_uri: RedirectUrl,
    ) -> Result<TokenUpdate, OAuth2Error> {
        let recorder = Recorder::new(&self.http);
        let result = self
            .client
            .exchange_code(code)
            .set_pkce_verifier(verifier)
            .set_redirect_uri(Cow::Owned(redirect_uri))
            .request_async(&recorder)
            .await;

        result
            .map(|response| token_update(&response))
            .map_err(|error| recorder.error(&self.account, error))
    }
}

/// Converts a token response into the form the token store applies.
fn token_update(response: &BasicTokenResponse) -> TokenUpdate {
    let scopes = response
        .scopes()
        .map(|scopes| scopes.iter().map(|scope| scope.to_string()).collect());

    TokenUpdate {
        access_token: AccessToken::new(response.access_token().secret().clone()),
        expires_in: response.expires_in(),
        refresh_token: response
            .refresh_token()
            .map(|token| RefreshToken::new(token.secret().clone())),
        scopes,
    }
}

#[cfg(test)]
mod tests;
