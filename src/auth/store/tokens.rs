//! The tokens of one account and their file format, version 1:
//!
//! ```json
//! {
//!   "version": 1,
//!   "token_url": "https://login.microsoftonline.com/organizations/oauth2/v2.0/token",
//!   "refresh_token": "…",
//!   "refresh_token_issued_at": "2025-01-31T09:00:00Z",
//!   "refresh_token_rotated_at": "2025-02-01T09:00:00Z",
//!   "access_token": "…",
//!   "access_token_expires_at": "2025-02-01T09:59:59Z",
//!   "scopes": ["https://outlook.office.com/IMAP.AccessAsUser.All"]
//! }
//! ```
//!
//! Times are RFC 3339 in UTC, whole seconds. Fields other than `version`
//! and `token_url` may be missing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::auth::token::{AccessToken, RefreshToken};

/// Version written into new token files; files with a higher version are
/// rejected rather than misread.
pub const FORMAT_VERSION: u64 = 1;

/// Tokens of one account. `Debug` redacts the tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTokens {
    /// Token endpoint that issued the tokens. A different endpoint in the
    /// configuration means the provider changed and the tokens are useless.
    pub token_url: String,
    /// Newest refresh token; `None` for grants that issue none, such as
    /// client credentials.
    pub refresh_token: Option<RefreshToken>,
    /// When a person last authorized the account, which issued the first
    /// refresh token of the chain.
    pub refresh_token_issued_at: Option<SystemTime>,
    /// When a refresh last replaced the refresh token.
    pub refresh_token_rotated_at: Option<SystemTime>,
    /// Cached access token.
    pub access_token: Option<AccessToken>,
    /// When the cached access token expires; `None` when the response had
    /// no `expires_in`.
    pub access_token_expires_at: Option<SystemTime>,
    /// Scopes granted, as the token endpoint reported them.
    pub scopes: Vec<String>,
}

/// The tokens of one successful token response (RFC 6749 section 5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUpdate {
    /// `access_token`.
    pub access_token: AccessToken,
    /// `expires_in`, when the response had it.
    pub expires_in: Option<Duration>,
    /// `refresh_token`, when the response had one.
    pub refresh_token: Option<RefreshToken>,
    /// `scope` split at spaces, when the response had it; RFC 6749 lets
    /// the server omit it when it granted the requested scopes.
    pub scopes: Option<Vec<String>>,
}

impl StoredTokens {
    /// Builds the tokens of a new authorization by a person at `now`.
    pub fn authorized(token_url: impl Into<String>, update: TokenUpdate, now: SystemTime) -> Self {
        let now = whole_seconds(now);
        let mut tokens = Self {
            token_url: token_url.into(),
            refresh_token: None,
            refresh_token_issued_at: update.refresh_token.as_ref().map(|_| now),
            refresh_token_rotated_at: None,
            access_token: None,
            access_token_expires_at: None,
            scopes: Vec::new(),
        };
        tokens.replace_access_token(&update, now);
        tokens.refresh_token = update.refresh_token;
        tokens
    }

    /// Applies the response of a refresh at `now`, which replaces the
    /// access token and its expiry. A refresh token in the response
    /// replaces the stored one, because providers such as Microsoft rotate
    /// it. A response without one keeps the stored one (RFC 6749 section 6).
    pub fn apply(&mut self, update: TokenUpdate, now: SystemTime) {
        let now = whole_seconds(now);
        self.replace_access_token(&update, now);
        if let Some(refresh_token) = update.refresh_token {
            if self.refresh_token.as_ref() != Some(&refresh_token) {
                self.refresh_token_rotated_at = Some(now);
            }
            self.refresh_token = Some(refresh_token);
        }
    }

    fn replace_access_token(&mut self, update: &TokenUpdate, now: SystemTime) {
        self.access_token = Some(update.access_token.clone());
        self.access_token_expires_at = update.expires_in.map(|lifetime| now + lifetime);
        if let Some(scopes) = &update.scopes {
            self.scopes = scopes.clone();
        }
    }

    /// Returns the cached access token when it stays valid for at least
    /// `margin` after `now`. A token without a known expiry is not
    /// returned, so that it is refreshed rather than trusted.
    pub fn usable_access_token(&self, now: SystemTime, margin: Duration) -> Option<&AccessToken> {
        let expires_at = self.access_token_expires_at?;
        match expires_at.duration_since(now) {
            Ok(left) if left >= margin => self.access_token.as_ref(),
            _ => None,
        }
    }

    /// Returns whether the tokens were issued by `token_url`.
    pub fn belongs_to(&self, token_url: &str) -> bool {
        self.token_url == token_url
    }
}

/// Drops the fraction of a second, which the file would not keep legibly.
fn whole_seconds(time: SystemTime) -> SystemTime {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    UNIX_EPOCH + Duration::from_secs(seconds)
}

/// The file format. Its token fields are plain strings, so this type
/// stays private and is never logged.
#[derive(Serialize, Deserialize)]
pub(super) struct TokenFile {
    version: u64,
    token_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(default, with = "humantime_serde::option")]
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token_issued_at: Option<SystemTime>,
    #[serde(default, with = "humantime_serde::option")]
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token_rotated_at: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
    #[serde(default, with = "humantime_serde::option")]
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token_expires_at: Option<SystemTime>,
    #[serde(default)]
    scopes: Vec<String>,
}

impl From<&StoredTokens> for TokenFile {
    fn from(tokens: &StoredTokens) -> Self {
        Self {
            version: FORMAT_VERSION,
            token_url: tokens.token_url.clone(),
            refresh_token: tokens.refresh_token.as_ref().map(|t| t.expose().to_owned()),
            refresh_token_issued_at: tokens.refresh_token_issued_at,
            refresh_token_rotated_at: tokens.refresh_token_rotated_at,
            access_token: tokens.access_token.as_ref().map(|t| t.expose().to_owned()),
            access_token_expires_at: tokens.access_token_expires_at,
            scopes: tokens.scopes.clone(),
        }
    }
}

impl From<TokenFile> for StoredTokens {
    fn from(file: TokenFile) -> Self {
        Self {
            token_url: file.token_url,
            refresh_token: file.refresh_token.map(RefreshToken::new),
            refresh_token_issued_at: file.refresh_token_issued_at,
            refresh_token_rotated_at: file.refresh_token_rotated_at,
            access_token: file.access_token.map(AccessToken::new),
            access_token_expires_at: file.access_token_expires_at,
            scopes: file.scopes,
        }
    }
}
