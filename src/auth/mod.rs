//! OAuth2 for the IMAP and SMTP sign-in, serving both protocols and
//! knowing neither:
//!
//! - [`sasl`] builds the XOAUTH2 and OAUTHBEARER initial responses and the
//!   reply to an error challenge. [`challenge`] parses that challenge and
//!   classifies it, which decides whether one forced token refresh and
//!   one retry are allowed.
//! - [`presets`] resolves an account's endpoints and scopes from its
//!   provider and overrides, and validates scope settings.
//! - [`error`] classifies token-endpoint failures, with hints for
//!   Microsoft's `AADSTS` codes from [`aadsts`].
//! - [`store`] keeps each account's tokens in a file written atomically
//!   with mode 0600.
//! - [`token`] defines the access and refresh token types, which redact
//!   themselves in `Debug` and `Display`.
//! - [`grant`] sends the token requests of the refresh-token,
//!   client-credentials, authorization-code and device-code grants.
//! - [`provider`] caches each account's access token, refreshes it once
//!   per account before it expires, retries transient failures and marks
//!   accounts that need a new sign-in.
//! - [`authorize`] runs `mailbridge authorize`: the one-time sign-in by
//!   the authorization-code grant on a loopback redirect URI or the
//!   device-code grant, which stores the first tokens.

pub mod aadsts;
pub mod authorize;
pub mod challenge;
pub mod error;
pub mod grant;
pub mod presets;
pub mod provider;
pub mod sasl;
pub mod store;
pub mod token;

pub use challenge::{ChallengeClass, ErrorChallenge};
pub use error::{Classification, ErrorResponse, OAuth2Error};
pub use grant::{DeviceAuthorization, GrantError, HttpSettings, TokenClient};
pub use presets::{Preset, PresetError, resolve, validate};
pub use provider::{ProviderError, ProviderSettings, RetryPolicy, TokenProvider};
pub use sasl::{InitialResponse, SaslError, error_reply, error_reply_base64, mechanism_name};
pub use store::{AccountLock, StoreError, StoredTokens, TokenStore, TokenUpdate};
pub use token::{AccessToken, RefreshToken};
