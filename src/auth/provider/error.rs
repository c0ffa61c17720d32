//! Errors of the [`TokenProvider`](super::TokenProvider).

use crate::auth::grant::GrantError;
use crate::auth::{OAuth2Error, PresetError, StoreError};

/// Failure to return an access token. `Display` names the account and
/// the fix, and never contains a token.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The account's endpoints could not be resolved.
    #[error(transparent)]
    Preset(#[from] PresetError),
    /// The token client could not be set up.
    #[error(transparent)]
    Grant(#[from] GrantError),
    /// The token file could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The token endpoint rejected the request or could not be reached.
    #[error(transparent)]
    Token(Box<OAuth2Error>),
    /// No refresh token is stored for an account whose grant needs one.
    #[error(
        "no refresh token is stored for account {account}; \
         run `mailbridge authorize {account}` to sign in"
    )]
    NotAuthorized {
        /// Name of the account.
        account: String,
    },
    /// The stored tokens were issued by another token endpoint, so the
    /// provider configuration changed since the last sign-in.
    #[error(
        "the stored tokens of account {account} were issued by {stored_url}, not by the \
         configured token endpoint {token_url}; run `mailbridge authorize {account}` to sign in"
    )]
    OtherIssuer {
        /// Name of the account.
        account: String,
        /// Token endpoint recorded in the token file.
        stored_url: String,
        /// Token endpoint of the configuration.
        token_url: String,
    },
    /// The stored refresh token was rejected twice, the second time after
    /// a delay, and nothing new was stored since.
    #[error(
        "the refresh token of account {account} was rejected and the account needs \
         authorization; run `mailbridge authorize {account}` to sign in again"
    )]
    NeedsAuthorization {
        /// Name of the account.
        account: String,
    },
    /// The task that refreshes the token ended without a result.
    #[error("the token refresh of account {account} failed: {source}")]
    Task {
        /// Name of the account.
        account: String,
        /// Cause of the task's end.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl From<OAuth2Error> for ProviderError {
    fn from(error: OAuth2Error) -> Self {
        Self::Token(Box::new(error))
    }
}

impl ProviderError {
    /// Returns the failed token request's error, for its classification.
    pub fn oauth2(&self) -> Option<&OAuth2Error> {
        match self {
            Self::Token(error) => Some(error),
            Self::Grant(error) => error.oauth2(),
            _ => None,
        }
    }

    /// Short stable name, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Preset(error) => error.kind(),
            Self::Grant(error) => error.kind(),
            Self::Store(error) => error.kind(),
            Self::Token(error) => error.kind(),
            Self::NotAuthorized { .. } => "not_authorized",
            Self::OtherIssuer { .. } => "other_issuer",
            Self::NeedsAuthorization { .. } => "needs_authorization",
            Self::Task { .. } => "task",
        }
    }

    /// Returns whether a later call may succeed without a change by an
    /// operator.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Grant(error) => error.is_transient(),
            Self::Store(error) => error.is_transient(),
            Self::Token(error) => error.is_transient(),
            Self::Task { .. } => true,
            _ => false,
        }
    }

    /// Returns whether a person must run `mailbridge authorize ACCOUNT`.
    pub fn needs_authorization(&self) -> bool {
        match self {
            Self::Token(error) => error.needs_authorization(),
            Self::NotAuthorized { .. }
            | Self::OtherIssuer { .. }
            | Self::NeedsAuthorization { .. } => true,
            _ => false,
        }
    }
}
