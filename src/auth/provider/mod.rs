//! Access tokens of one account, cached and refreshed before they expire.
//!
//! A [`TokenProvider`] is a cloneable handle; all clones share one cache,
//! so every connection of an account uses the same token. A cached token
//! is returned while more than its refresh margin is left, which is the
//! smaller of 5 minutes and a tenth of the token's lifetime. Otherwise a
//! refresh runs, and only one per account at a time: the cache sits behind
//! an async mutex that the refresh holds, and callers that waited for it
//! check the cache again and find the new token.
//!
//! Grants with a refresh token (`authorization_code`, `device_code`) keep
//! their tokens in the [`TokenStore`]. Each refresh takes the account's
//! lock of the store, which other processes such as `mailbridge check`
//! take too, and then reads the token file. A token that another process
//! refreshed meanwhile is therefore used rather than refreshed again, and
//! a new sign-in by `mailbridge authorize` is picked up while the service
//! runs. A token response is committed to the file before its
//! access token is returned, and a refresh runs in a task of its own, so a
//! caller that gives up waiting cannot lose a rotated refresh token.
//! `client_credentials` tokens stay in memory and nothing is written.
//!
//! `invalid_grant` and the other answers that need a new sign-in are
//! checked once more after [`RetryPolicy::recheck_delay`], because the
//! Microsoft identity platform has returned `invalid_grant` for passing
//! conditions. A second rejection marks the account as needing
//! authorization: [`TokenProvider::needs_authorization`] turns true, the
//! log names the command to run, and later calls fail without a request
//! until a different refresh token is stored. The rejected refresh token
//! is kept in the file.
//!
//! A provider built by [`TokenProvider::with_metrics`] records each token
//! request, the access token's expiry, the refresh token's age and the
//! authorization state in [`Metrics`].

mod cache;
mod error;
mod metrics;
mod retry;

#[cfg(test)]
mod log_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

pub use cache::{ASSUMED_LIFETIME, MAX_REFRESH_MARGIN, refresh_margin};
pub use error::ProviderError;
pub use retry::RetryPolicy;

use super::grant::{HttpSettings, TokenClient};
use super::store::{AccountLock, StoredTokens, TokenStore, TokenUpdate};
use super::token::{AccessToken, RefreshToken};
use super::{Classification, OAuth2Error, Preset};
use crate::config::{Account, Grant, State};
use crate::telemetry::Metrics;
use cache::Cache;

/// Settings of a [`TokenProvider`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderSettings {
    /// Retries of token requests.
    pub retry: RetryPolicy,
    /// Timeouts of token requests.
    pub http: HttpSettings,
}

/// The access tokens of one account. Clones share the cache.
#[derive(Debug, Clone)]
pub struct TokenProvider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    account: String,
    config: Account,
    preset: Preset,
    store: TokenStore,
    client: TokenClient,
    retry: RetryPolicy,
    cache: tokio::sync::Mutex<Cache>,
    needs_authorization: AtomicBool,
    metrics: Option<Metrics>,
}

impl TokenProvider {
    /// Builds the provider of account `name` with the default settings.
    /// For grants with a refresh token, it reads the token file now, so
    /// that an unreadable file fails at start.
    ///
    /// # Errors
    ///
    /// See [`TokenProvider::with_settings`].
    pub fn new(name: &str, account: &Account, state: &State) -> Result<Self, ProviderError> {
        Self::with_settings(name, account, state, ProviderSettings::default())
    }

    /// Builds the provider of account `name` with `settings`.
    ///
    /// # Errors
    ///
    /// [`ProviderError::Preset`] and [`ProviderError::Grant`] for invalid
    /// endpoints, [`ProviderError::Store`] for a token file that cannot be
    /// read, has a group- or world-accessible mode or is corrupt, and
    /// [`ProviderError::OtherIssuer`] for tokens of another token endpoint.
    pub fn with_settings(
        name: &str,
        account: &Account,
        state: &State,
        settings: ProviderSettings,
    ) -> Result<Self, ProviderError> {
        Self::build(name, account, state, settings, None)
    }

    /// Builds the provider of account `name` with `settings`, recording
    /// its token requests and token state in `metrics`.
    ///
    /// # Errors
    ///
    /// See [`TokenProvider::with_settings`].
    pub fn with_metrics(
        name: &str,
        account: &Account,
        state: &State,
        settings: ProviderSettings,
        metrics: Metrics,
    ) -> Result<Self, ProviderError> {
        Self::build(name, account, state, settings, Some(metrics))
    }

    fn build(
        name: &str,
        account: &Account,
        state: &State,
        settings: ProviderSettings,
        metrics: Option<Metrics>,
    ) -> Result<Self, ProviderError> {
        let preset = super::resolve(name, account)?;
        let client = TokenClient::new(name, account, &preset, settings.http)?;
        let store = TokenStore::new(state);
        let stores_tokens = account.oauth2.grant != Grant::ClientCredentials;
        let tokens = match stores_tokens {
            true => load_tokens(&store, name, &preset.token_url)?,
            false => None,
        };
        let authorized = tokens.as_ref().is_some_and(|t| t.refresh_token.is_some());
        let inner = Inner {
            account: name.to_owned(),
            config: account.clone(),
            preset,
            store,
            client,
            retry: settings.retry,
            cache: tokio::sync::Mutex::new(Cache {
                tokens,
                ..Cache::default()
            }),
            needs_authorization: AtomicBool::new(false),
            metrics,
        };
        inner.record_loaded();
        if stores_tokens && !authorized {
            inner.mark_needs_authorization("no_refresh_token");
        }

        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Returns the name of the account.
    pub fn account(&self) -> &str {
        &self.inner.account
    }

    /// Returns the configuration of the account.
    pub fn config(&self) -> &Account {
        &self.inner.config
    }

    /// Returns the resolved endpoints and scopes of the account.
    pub fn preset(&self) -> &Preset {
        &self.inner.preset
    }

    /// Returns the token store.
    pub fn store(&self) -> &TokenStore {
        &self.inner.store
    }

    /// Returns whether a person must run `mailbridge authorize ACCOUNT`:
    /// no refresh token is stored, or the stored one was rejected.
    pub fn needs_authorization(&self) -> bool {
        self.inner.needs_authorization.load(Ordering::Relaxed)
    }

    /// Returns an access token that stays valid for longer than its
    /// refresh margin, refreshing it first when needed.
    ///
    /// # Errors
    ///
    /// [`ProviderError::NotAuthorized`] without a stored refresh token,
    /// [`ProviderError::NeedsAuthorization`] after the refresh token was
    /// rejected, [`ProviderError::Token`] when the token request failed
    /// after its retries, and [`ProviderError::Store`] when the new tokens
    /// could not be read or saved.
    pub async fn access_token(&self) -> Result<AccessToken, ProviderError> {
        // While the account is marked, every call reads the token file, so
        // that a new sign-in takes effect at once.
        if !self.needs_authorization() {
            let cache = self.inner.cache.lock().await;
            if let Some(token) = cache.usable(SystemTime::now(), None) {
                return Ok(token);
            }
        }

        self.refresh(None).await
    }

    /// Returns when the cached access token stops being handed out: its
    /// expiry minus the refresh margin. A connection signed in with it
    /// should reconnect by then, because some servers (Exchange Online)
    /// end a session whose token expired. `None` when nothing is cached.
    pub async fn access_token_refresh_at(&self) -> Option<SystemTime> {
        let cache = self.inner.cache.lock().await;
        let expires_at = cache.tokens.as_ref()?.access_token_expires_at?;
        Some(expires_at - cache::refresh_margin(cache.lifetime))
    }

    /// Returns a new access token after a server rejected `rejected`,
    /// which looked valid. The refresh is skipped when the cache already
    /// holds a different usable token, so that connections which all
    /// fail with the same token cause one refresh.
    ///
    /// # Errors
    ///
    /// As for [`TokenProvider::access_token`].
    pub async fn force_refresh(
        &self,
        rejected: &AccessToken,
    ) -> Result<AccessToken, ProviderError> {
        self.refresh(Some(rejected.clone())).await
    }

    /// Refreshes in a task of its own, which finishes and commits the
    /// token response even when the caller stops waiting.
    async fn refresh(&self, rejected: Option<AccessToken>) -> Result<AccessToken, ProviderError> {
        let inner = Arc::clone(&self.inner);
        let task = tokio::spawn(async move { inner.refresh(rejected.as_ref()).await });

        task.await.map_err(|source| ProviderError::Task {
            account: self.inner.account.clone(),
            source,
        })?
    }
}

impl Inner {
    fn stores_tokens(&self) -> bool {
        self.config.oauth2.grant != Grant::ClientCredentials
    }

    /// Runs one refresh while holding the cache, unless a waiter before
    /// this one already replaced the token.
    async fn refresh(&self, rejected: Option<&AccessToken>) -> Result<AccessToken, ProviderError> {
        let mut cache = self.cache.lock().await;
        let marked = self.needs_authorization.load(Ordering::Relaxed);
        if !marked && let Some(token) = cache.usable(SystemTime::now(), rejected) {
            return Ok(token);
        }

        if !self.stores_tokens() {
            return self.request_app_token(&mut cache).await;
        }
        let _lock = self.lock_store().await?;
        self.refresh_stored(&mut cache, rejected).await
    }

    /// Takes the account's lock of the token store on a blocking thread,
    /// because another process may hold it for the length of a refresh.
    async fn lock_store(&self) -> Result<AccountLock, ProviderError> {
        let (store, account) = (self.store.clone(), self.account.clone());
        let task = tokio::task::spawn_blocking(move || store.lock(&account));
        let locked = task.await.map_err(|source| self.task_error(source))?;

        Ok(locked?)
    }

    async fn request_app_token(&self, cache: &mut Cache) -> Result<AccessToken, ProviderError> {
        let client = &self.client;
        let result = retry::run(&self.account, &self.retry, rand::random, || {
            self.timed(client.client_credentials())
        })
        .await;
        let mut update = result.inspect_err(|error| self.record_refresh_failure(error))?;
        let lifetime = *update.expires_in.get_or_insert(ASSUMED_LIFETIME);
        let token = update.access_token.clone();
        let token_url = self.preset.token_url.clone();
        let tokens = StoredTokens::authorized(token_url, update, SystemTime::now());
        self.record_access_token(&tokens);
        cache.tokens = Some(tokens);
        cache.lifetime = Some(lifetime);

        tracing::debug!(
            account = %self.account,
            expires_in_s = lifetime.as_secs(),
            "Requested app-only access token"
        );
        Ok(token)
    }

    async fn refresh_stored(
        &self,
        cache: &mut Cache,
        rejected: Option<&AccessToken>,
    ) -> Result<AccessToken, ProviderError> {
        self.sync_store(cache).await?;
        if let Some(token) = cache.usable(SystemTime::now(), rejected) {
            // A token file written by a new sign-in ends the marking.
            if cache
                .refresh_token()
                .is_some_and(|(_, refresh)| cache.rejected.as_ref() != Some(&refresh))
            {
                self.clear_needs_authorization();
            }
            return Ok(token);
        }
        let Some((tokens, refresh_token)) = cache.refresh_token() else {
            self.mark_needs_authorization("no_refresh_token");
            let account = self.account.clone();
            return Err(ProviderError::NotAuthorized { account });
        };
        if cache.rejected.as_ref() == Some(&refresh_token) {
            let account = self.account.clone();
            return Err(ProviderError::NeedsAuthorization { account });
        }

        let client = &self.client;
        let result = retry::run(&self.account, &self.retry, rand::random, || {
            self.timed(client.refresh(&refresh_token))
        })
        .await;
        match result {
            Ok(update) => self.commit(cache, tokens, update).await,
            Err(error) => Err(self.refresh_failed(cache, refresh_token, error)),
        }
    }

    fn refresh_failed(
        &self,
        cache: &mut Cache,
        refresh_token: RefreshToken,
        error: OAuth2Error,
    ) -> ProviderError {
        self.record_refresh_failure(&error);
        if error.needs_authorization() {
            cache.rejected = Some(refresh_token);
            self.mark_rejected(&error);
        } else {
            log_refresh_failure(&self.account, &error);
        }
        error.into()
    }

    /// Saves tokens that failed to be saved before, or else adopts the
    /// token file when it changed, for example after a new sign-in.
    async fn sync_store(&self, cache: &mut Cache) -> Result<(), ProviderError> {
        if cache.unsaved
            && let Some(tokens) = cache.tokens.clone()
        {
            self.save(tokens).await?;
            cache.unsaved = false;
            return Ok(());
        }

        let loaded = self.load()?;
        if let Some(tokens) = loaded
            && cache.tokens.as_ref() != Some(&tokens)
        {
            self.record_refresh_token_issued(&tokens);
            self.record_access_token(&tokens);
            cache.tokens = Some(tokens);
            cache.lifetime = None;
        }
        Ok(())
    }

    /// Commits a refresh response to the token file and only then returns
    /// its access token. When the save fails, the response stays in memory
    /// and the next call saves it before it uses the token.
    async fn commit(
        &self,
        cache: &mut Cache,
        mut tokens: StoredTokens,
        mut update: TokenUpdate,
    ) -> Result<AccessToken, ProviderError> {
        let lifetime = *update.expires_in.get_or_insert(ASSUMED_LIFETIME);
        let rotated = update.refresh_token.is_some();
        let (store, account, kept) = (self.store.clone(), self.account.clone(), update.clone());
        let now = SystemTime::now();
        let task = tokio::task::spawn_blocking(move || {
            let result = store.commit(&account, &mut tokens, update, now);
            (tokens, result)
        });
        let (mut tokens, result) = task.await.map_err(|source| self.task_error(source))?;
        cache.lifetime = Some(lifetime);

        let error = match result {
            Ok(token) => {
                self.record_access_token(&tokens);
                self.record_refresh_token_issued(&tokens);
                cache.tokens = Some(tokens);
                cache.unsaved = false;
                self.clear_needs_authorization();
                tracing::info!(
                    account = %self.account,
                    expires_in_s = lifetime.as_secs(),
                    rotated,
                    "Refreshed access token"
                );
                return Ok(token);
            }
            Err(error) => error,
        };
        tokens.apply(kept, now);
        cache.tokens = Some(tokens);
        cache.unsaved = true;
        tracing::error!(
            account = %self.account,
            error_type = error.kind(),
            error = %error,
            "Failed to save refreshed tokens"
        );
        Err(error.into())
    }

    /// Reads the token file. It is a few kilobytes, so it is read on the
    /// runtime thread.
    fn load(&self) -> Result<Option<StoredTokens>, ProviderError> {
        let loaded = load_tokens(&self.store, &self.account, &self.preset.token_url);
        if let Err(ProviderError::OtherIssuer { .. }) = &loaded {
            self.mark_needs_authorization("other_issuer");
        }
        loaded
    }

    async fn save(&self, tokens: StoredTokens) -> Result<(), ProviderError> {
        let (store, account) = (self.store.clone(), self.account.clone());
        let task = tokio::task::spawn_blocking(move || store.save(&account, &tokens));
        let saved = task.await.map_err(|source| self.task_error(source))?;

        Ok(saved?)
    }

    fn task_error(&self, source: tokio::task::JoinError) -> ProviderError {
        ProviderError::Task {
            account: self.account.clone(),
            source,
        }
    }

    /// Marks the account and logs the fix, once per change of state.
    fn mark_needs_authorization(&self, reason: &str) {
        if self.mark() {
            let account = &self.account;
            let command = format!("mailbridge authorize {account}");
            tracing::error!(account, reason, command, "Account needs authorization");
        }
    }

    /// Marks the account after the token endpoint rejected its refresh
    /// token, and logs the fix with the error and its first `AADSTS`
    /// code, once per change of state.
    fn mark_rejected(&self, error: &OAuth2Error) {
        if self.mark() {
            let account = &self.account;
            let command = format!("mailbridge authorize {account}");
            tracing::error!(
                account,
                reason = error.kind(),
                aadsts = aadsts_code(error).as_deref(),
                error = %error,
                command,
                "Account needs authorization"
            );
        }
    }

    /// Marks the account; returns whether it was not marked before.
    fn mark(&self) -> bool {
        self.record_authorization_required(true);
        !self.needs_authorization.swap(true, Ordering::Relaxed)
    }

    fn clear_needs_authorization(&self) {
        self.record_authorization_required(false);
        if self.needs_authorization.swap(false, Ordering::Relaxed) {
            tracing::info!(account = %self.account, "Account is authorized again");
        }
    }
}

/// Logs a refresh failure that needs no new sign-in, with one message per
/// cause: client credentials and scopes need a configuration change, and
/// a transient failure outlasted the retries.
fn log_refresh_failure(account: &str, error: &OAuth2Error) {
    let (error_type, aadsts) = (error.kind(), aadsts_code(error));
    let aadsts = aadsts.as_deref();
    match error.classification() {
        Classification::InvalidClient => tracing::error!(
            account, error_type, aadsts, error = %error,
            "Token endpoint rejected the client credentials"
        ),
        Classification::InvalidScope => tracing::error!(
            account, error_type, aadsts, error = %error,
            "Token endpoint rejected the requested scopes"
        ),
        Classification::Transient => tracing::warn!(
            account, error_type, aadsts, error = %error,
            "Token endpoint unavailable after retries"
        ),
        _ => tracing::warn!(
            account, error_type, aadsts, error = %error,
            "Failed to refresh access token"
        ),
    }
}

/// Returns the first Microsoft code of the error response, such as
/// `AADSTS70043`, from `error_codes` or `error_description`.
fn aadsts_code(error: &OAuth2Error) -> Option<String> {
    let code = error.response()?.codes.first()?;
    Some(format!("AADSTS{code}"))
}

/// Reads the tokens of `account` and checks that they were issued by
/// `token_url`.
fn load_tokens(
    store: &TokenStore,
    account: &str,
    token_url: &str,
) -> Result<Option<StoredTokens>, ProviderError> {
    let Some(tokens) = store.load(account)? else {
        return Ok(None);
    };
    if !tokens.belongs_to(token_url) {
        return Err(ProviderError::OtherIssuer {
            account: account.to_owned(),
            stored_url: tokens.token_url,
            token_url: token_url.to_owned(),
        });
    }

    Ok(Some(tokens))
}
