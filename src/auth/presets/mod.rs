//! OAuth2 endpoints and scopes of an account: the provider preset with the
//! account's `oauth2` overrides applied, and [`validate`], which finds
//! scope settings that would yield tokens the mail servers reject.

mod checks;

pub use checks::{Problem, config_problems, validate};

use crate::config::{Account, Grant, Provider};

/// Delegated scope of Exchange Online IMAP.
pub const MICROSOFT_IMAP_SCOPE: &str = "https://outlook.office.com/IMAP.AccessAsUser.All";
/// Delegated scope of Exchange Online SMTP submission.
pub const MICROSOFT_SMTP_SCOPE: &str = "https://outlook.office.com/SMTP.Send";
/// Scope that makes the Microsoft identity platform issue a refresh token.
pub const OFFLINE_ACCESS: &str = "offline_access";
/// App-only scope of Exchange Online, for the client-credentials grant.
pub const MICROSOFT_APP_ONLY_SCOPE: &str = "https://outlook.office365.com/.default";
/// Google's scope for IMAP, POP and SMTP access to Gmail.
pub const GOOGLE_MAIL_SCOPE: &str = "https://mail.google.com/";

/// Microsoft tenant used when the account sets none: work and school
/// accounts of any tenant.
pub const DEFAULT_TENANT: &str = "organizations";

const MICROSOFT_LOGIN: &str = "https://login.microsoftonline.com";
const GOOGLE_AUTHORIZE_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const GOOGLE_DEVICE_URL: &str = "https://oauth2.googleapis.com/device/code";

/// Endpoints and scopes of one account, with the account's overrides
/// applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    /// Authorization endpoint (RFC 6749 section 3.1); `None` for a generic
    /// provider that sets none, which only the other grants accept.
    pub authorize_url: Option<String>,
    /// Token endpoint (RFC 6749 section 3.2).
    pub token_url: String,
    /// Device authorization endpoint (RFC 8628 section 3.1); `None` for a
    /// generic provider that sets none.
    pub device_authorization_url: Option<String>,
    /// Scopes to request, in order; empty means no `scope` parameter.
    pub scopes: Vec<String>,
    /// Whether the grant is expected to return a refresh token. False for
    /// client credentials (RFC 6749 section 4.4.3) and for a Microsoft
    /// delegated grant whose scopes lack `offline_access`.
    pub offline_access: bool,
}

/// Errors of [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresetError {
    /// A generic provider without a token endpoint; configuration
    /// validation normally rejects this first.
    #[error(
        "missing token endpoint for account {account} with provider generic; \
         set accounts.{account}.oauth2.token_url"
    )]
    MissingTokenUrl {
        /// Name of the account.
        account: String,
    },
}

impl PresetError {
    /// Short name of the error, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingTokenUrl { .. } => "missing_token_url",
        }
    }

    /// Always false: only a configuration change fixes it.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// Resolves the endpoints and scopes of account `name`: each endpoint and
/// the scope list from the account's `oauth2` table when set there, else
/// from the provider preset.
///
/// # Errors
///
/// [`PresetError::MissingTokenUrl`] for a generic provider without
/// `token_url`.
pub fn resolve(name: &str, account: &Account) -> Result<Preset, PresetError> {
    let oauth2 = &account.oauth2;
    let [authorize, token, device] = preset_endpoints(account);
    let pick = |set: &Option<String>, preset: Option<String>| set.clone().or(preset);
    let token_url = pick(&oauth2.token_url, token).ok_or_else(|| PresetError::MissingTokenUrl {
        account: name.to_owned(),
    })?;
    let scopes = match oauth2.scopes.is_empty() {
        true => preset_scopes(account),
        false => oauth2.scopes.clone(),
    };

    Ok(Preset {
        authorize_url: pick(&oauth2.authorize_url, authorize),
        token_url,
        device_authorization_url: pick(&oauth2.device_authorization_url, device),
        offline_access: expects_refresh_token(account, &scopes),
        scopes,
    })
}

/// Returns the preset authorization, token and device endpoints.
fn preset_endpoints(account: &Account) -> [Option<String>; 3] {
    match account.oauth2.provider {
        Provider::Microsoft => {
            let tenant = account.oauth2.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
            let base = format!("{MICROSOFT_LOGIN}/{tenant}/oauth2/v2.0");
            ["authorize", "token", "devicecode"].map(|path| Some(format!("{base}/{path}")))
        }
        Provider::Google => [GOOGLE_AUTHORIZE_URL, GOOGLE_TOKEN_URL, GOOGLE_DEVICE_URL]
            .map(|url| Some(url.to_owned())),
        Provider::Generic => [None, None, None],
    }
}

/// Returns the preset scopes: for Microsoft only those of the protocols
/// the account has servers for.
fn preset_scopes(account: &Account) -> Vec<String> {
    let scopes = match (account.oauth2.provider, account.oauth2.grant) {
        (Provider::Microsoft, Grant::ClientCredentials) => vec![MICROSOFT_APP_ONLY_SCOPE],
        (Provider::Microsoft, _) => {
            let imap = account.imap.as_ref().map(|_| MICROSOFT_IMAP_SCOPE);
            let smtp = account.smtp.as_ref().map(|_| MICROSOFT_SMTP_SCOPE);
            imap.into_iter()
                .chain(smtp)
                .chain([OFFLINE_ACCESS])
                .collect()
        }
        // NOTE: Google's device-code grant accepts only a limited list of
        // scopes; whether it includes the mail scope is not verified here.
        (Provider::Google, _) => vec![GOOGLE_MAIL_SCOPE],
        (Provider::Generic, _) => Vec::new(),
    };
    scopes.into_iter().map(str::to_owned).collect()
}

fn expects_refresh_token(account: &Account, scopes: &[String]) -> bool {
    match (account.oauth2.provider, account.oauth2.grant) {
        (_, Grant::ClientCredentials) => false,
        (Provider::Microsoft, _) => scopes.iter().any(|scope| scope == OFFLINE_ACCESS),
        _ => true,
    }
}

#[cfg(test)]
mod tests;
