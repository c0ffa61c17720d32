//! The tokens of an account in memory, and when the cached access token
//! is due for a refresh.

use std::time::{Duration, SystemTime};

use crate::auth::store::StoredTokens;
use crate::auth::token::{AccessToken, RefreshToken};

/// Largest refresh margin.
pub const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Lifetime assumed for an access token whose response has no
/// `expires_in`, which RFC 6749 section 5.1 only recommends. A server that
/// rejects the token earlier triggers [`TokenProvider::force_refresh`](super::TokenProvider::force_refresh).
pub const ASSUMED_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// Returns how long before its expiry a token is refreshed: a tenth of
/// its `lifetime`, at most [`MAX_REFRESH_MARGIN`]. A token of unknown
/// lifetime, such as one read from the token file, gets the maximum.
pub fn refresh_margin(lifetime: Option<Duration>) -> Duration {
    match lifetime {
        Some(lifetime) => (lifetime / 10).min(MAX_REFRESH_MARGIN),
        None => MAX_REFRESH_MARGIN,
    }
}

/// The tokens in memory.
#[derive(Debug, Default)]
pub(super) struct Cache {
    pub(super) tokens: Option<StoredTokens>,
    /// Lifetime of the cached access token, when this process received it.
    pub(super) lifetime: Option<Duration>,
    /// Whether `tokens` contains a token response that failed to be saved.
    /// Its access token is not used until the save succeeds.
    pub(super) unsaved: bool,
    /// Refresh token that the server rejected for good.
    pub(super) rejected: Option<RefreshToken>,
}

impl Cache {
    /// Returns the cached access token when it stays valid for longer than
    /// its margin and is not `rejected`.
    pub(super) fn usable(
        &self,
        now: SystemTime,
        rejected: Option<&AccessToken>,
    ) -> Option<AccessToken> {
        if self.unsaved {
            return None;
        }
        let tokens = self.tokens.as_ref()?;
        let token = tokens.usable_access_token(now, refresh_margin(self.lifetime))?;
        match rejected == Some(token) {
            true => None,
            false => Some(token.clone()),
        }
    }

    /// Returns the stored tokens and their refresh token, when there is one.
    pub(super) fn refresh_token(&self) -> Option<(StoredTokens, RefreshToken)> {
        let tokens = self.tokens.clone()?;
        let refresh_token = tokens.refresh_token.clone()?;
        Some((tokens, refresh_token))
    }
}
