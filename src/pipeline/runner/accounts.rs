//! The token providers of the accounts that pipelines use, built at start.
//! An account whose token file cannot be used stops only its own
//! pipelines: the error is logged and counted, and `/readyz` reports the
//! account and its pipelines as not ready with the reason.

use std::collections::BTreeMap;

use tokio::sync::watch;
use tracing::error;

use super::{ACCOUNT_CHECK_INTERVAL, Context, RunError};
use crate::auth::{ProviderError, ProviderSettings, TokenProvider};
use crate::config::Config;
use crate::telemetry::{Protocol, Readiness};

/// The accounts that pipelines use.
pub(super) struct Accounts {
    /// Token providers of the accounts that can sign in.
    pub(super) providers: BTreeMap<String, TokenProvider>,
    /// Accounts whose token file cannot be used, with the error text.
    pub(super) failed: BTreeMap<String, String>,
}

impl Accounts {
    /// Returns whether the pipeline `component` of `account` must not
    /// start because its account failed, and then marks it not ready.
    pub(super) fn skip_pipeline(
        &self,
        readiness: &Readiness,
        component: &str,
        account: &str,
    ) -> bool {
        let Some(error) = self.failed.get(account) else {
            return false;
        };
        let reason = format!("not started, because account {account} failed: {error}");
        readiness.not_ready(component, reason);
        true
    }
}

/// Builds the token provider of every account a pipeline uses.
///
/// # Errors
///
/// [`RunError::Tokens`] for a failure that is not the account's own token
/// file, such as invalid endpoints.
pub(super) fn token_providers(config: &Config, cx: &Context) -> Result<Accounts, RunError> {
    let mut accounts = Accounts {
        providers: BTreeMap::new(),
        failed: BTreeMap::new(),
    };
    let inbound = config.inbound.values().map(|inbound| &inbound.account);
    let outbound = config.outbound.values().map(|outbound| &outbound.account);
    for name in inbound.chain(outbound) {
        if accounts.providers.contains_key(name) || accounts.failed.contains_key(name) {
            continue;
        }
        let account = &config.accounts[name];
        let built = TokenProvider::with_metrics(
            name,
            account,
            &config.state,
            ProviderSettings::default(),
            cx.metrics.clone(),
        );
        match built {
            Ok(provider) => {
                accounts.providers.insert(name.clone(), provider);
            }
            Err(err) if is_token_file_error(&err) => {
                record_failed_account(cx, name, &err);
                accounts.failed.insert(name.clone(), err.to_string());
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(accounts)
}

/// Returns whether `err` concerns only the account's token file: it is
/// unreadable, group- or world-accessible, corrupt, of a newer format,
/// or from another token endpoint.
fn is_token_file_error(err: &ProviderError) -> bool {
    matches!(
        err,
        ProviderError::Store(_) | ProviderError::OtherIssuer { .. }
    )
}

fn record_failed_account(cx: &Context, account: &str, err: &ProviderError) {
    error!(
        account,
        error_type = err.kind(),
        error = %err,
        "Token file unusable; the account's pipelines do not run until a restart"
    );
    cx.metrics
        .record_auth_failure(account, Protocol::OAuth2, err.kind());
    cx.readiness
        .not_ready(&format!("account/{account}"), err.to_string());
}

/// Keeps each account's readiness in step with its token provider.
pub(super) async fn watch_accounts(
    providers: BTreeMap<String, TokenProvider>,
    readiness: Readiness,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        for (name, provider) in &providers {
            let component = format!("account/{name}");
            match provider.needs_authorization() {
                true => readiness.not_ready(
                    &component,
                    format!("sign-in needed: run `mailbridge authorize {name}`"),
                ),
                false => readiness.ready(&component),
            }
        }
        let mut shutdown = shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(ACCOUNT_CHECK_INTERVAL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
