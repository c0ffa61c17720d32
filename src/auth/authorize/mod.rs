//! `mailbridge authorize`: signs a person in once and stores the tokens of
//! the account.
//!
//! - The authorization-code grant sends the browser to the provider with a
//!   PKCE S256 challenge (RFC 7636) and a random `state`. [`code`] takes
//!   the code from the redirect to a loopback URI (RFC 8252 section 7.3),
//!   or from a redirect URL pasted on standard input.
//! - The device-code grant (RFC 8628) prints a verification URI and a user
//!   code, then polls the token endpoint.
//! - The client-credentials grant has no sign-in. The command requests one
//!   token to check the client credentials, and stores nothing.
//!
//! Tokens and codes are never printed; the user code of the device-code
//! grant is meant to be typed by a person and is printed.

mod code;
mod loopback;

use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use super::OAuth2Error;
use super::grant::{GrantError, HttpSettings, TokenClient};
use super::presets::{PresetError, resolve};
use super::store::{StoreError, StoredTokens, TokenStore, TokenUpdate};
use crate::config::{Config, Grant};

/// Time allowed for the browser redirect or the pasted URL.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(600);

/// Command-line choices of `mailbridge authorize`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Use the device-code grant for an account with grant
    /// `authorization_code`.
    pub device: bool,
    /// Try to open the authorization URL in a browser.
    pub open_browser: bool,
    /// Read the redirect URL from standard input instead of listening.
    pub paste: bool,
}

/// Errors of `mailbridge authorize`. None of them contains a token or code.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// The command named an account the configuration does not define.
    #[error("unknown account {account:?}; defined accounts: {}", list(defined))]
    UnknownAccount {
        /// The name given on the command line.
        account: String,
        /// Names of the configured accounts.
        defined: Vec<String>,
    },
    /// The endpoints of the account could not be resolved.
    #[error(transparent)]
    Preset(#[from] PresetError),
    /// The token client could not be built or the device authorization
    /// failed.
    #[error(transparent)]
    Grant(#[from] GrantError),
    /// The token endpoint rejected the code exchange or the device poll.
    #[error(transparent)]
    Token(Box<OAuth2Error>),
    /// The tokens could not be stored.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The account has no authorization endpoint.
    #[error(
        "missing authorization endpoint for account {account}; \
         set accounts.{account}.oauth2.authorize_url or use --device"
    )]
    MissingAuthorizeUrl {
        /// Name of the account.
        account: String,
    },
    /// The loopback listener could not be bound.
    #[error(
        "failed to listen on 127.0.0.1:{port} for the redirect: {source}; set \
         accounts.{account}.oauth2.redirect_port to a free port, or use --paste"
    )]
    Listen {
        /// Name of the account.
        account: String,
        /// The port requested, 0 for any free port.
        port: u16,
        /// The bind failure.
        #[source]
        source: io::Error,
    },
    /// Accepting the redirect or reading standard input failed.
    #[error("failed to receive the redirect: {source}")]
    Receive {
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// No redirect arrived in time.
    #[error(
        "timed out after {} waiting for the sign-in; run the command again",
        humantime::format_duration(*timeout)
    )]
    Timeout {
        /// The time waited.
        timeout: Duration,
    },
    /// The redirect's `state` differs from the request's, so it may come
    /// from another request (RFC 6749 section 10.12).
    #[error(
        "the state of the redirect does not match the authorization request; \
         nothing was stored, run the command again"
    )]
    StateMismatch,
    /// The authorization server returned an error to the redirect URI
    /// (RFC 6749 section 4.1.2.1).
    #[error("the authorization server returned {error}{}", describe(description))]
    Denied {
        /// The `error` parameter, such as `access_denied`.
        error: String,
        /// The `error_description` parameter.
        description: Option<String>,
    },
    /// The redirect lacks a required parameter.
    #[error("the redirect has no {parameter} parameter; paste the whole address")]
    MissingParameter {
        /// Name of the parameter.
        parameter: &'static str,
    },
    /// Printing the instructions failed.
    #[error("failed to write to standard output: {source}")]
    Output {
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
}

impl AuthorizeError {
    /// Short stable name of the failure.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownAccount { .. } => "unknown_account",
            Self::Preset(error) => error.kind(),
            Self::Grant(error) => error.kind(),
            Self::Token(error) => error.kind(),
            Self::Store(error) => error.kind(),
            Self::MissingAuthorizeUrl { .. } => "missing_authorize_url",
            Self::Listen { .. } => "listen",
            Self::Receive { .. } => "receive",
            Self::Timeout { .. } => "timeout",
            Self::StateMismatch => "state_mismatch",
            Self::Denied { .. } => "denied",
            Self::MissingParameter { .. } => "missing_parameter",
            Self::Output { .. } => "output",
        }
    }

    /// Returns whether the command line was wrong rather than the sign-in.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::UnknownAccount { .. })
    }
}

impl From<OAuth2Error> for AuthorizeError {
    fn from(error: OAuth2Error) -> Self {
        Self::Token(Box::new(error))
    }
}

/// Result of a successful `mailbridge authorize`, printed as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A person signed in and the tokens were stored.
    Authorized {
        /// Name of the account.
        account: String,
        /// Scopes granted, or the requested ones when the token endpoint
        /// did not list them.
        scopes: Vec<String>,
        /// Whether a refresh token was stored.
        refresh_token: bool,
    },
    /// The account uses client credentials, and a token request with them
    /// succeeded.
    AppOnly {
        /// Name of the account.
        account: String,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Authorized {
                account,
                scopes,
                refresh_token,
            } => {
                let refresh = match refresh_token {
                    true => "refresh token stored",
                    false => "no refresh token issued",
                };
                let scopes = scopes.join(" ");
                write!(
                    f,
                    "authorized account {account}: scopes {scopes:?}, {refresh}"
                )
            }
            Self::AppOnly { account } => write!(
                f,
                "account {account} uses app-only access (client_credentials), which needs \
                 no authorization; a token request with its client credentials succeeded"
            ),
        }
    }
}

/// Signs account `name` in by its grant and stores the tokens.
///
/// # Errors
///
/// [`AuthorizeError::UnknownAccount`] for a name the configuration lacks,
/// and the other variants when the sign-in, the token request or the save
/// fails. Nothing is stored on error.
pub async fn run(config: &Config, name: &str, options: Options) -> Result<Outcome, AuthorizeError> {
    let account = config
        .accounts
        .get(name)
        .ok_or_else(|| AuthorizeError::UnknownAccount {
            account: name.to_owned(),
            defined: config.accounts.keys().cloned().collect(),
        })?;
    let preset = resolve(name, account)?;
    let client = TokenClient::new(name, account, &preset, HttpSettings::default())?;

    let update = match account.oauth2.grant {
        Grant::ClientCredentials => {
            client.client_credentials().await?;
            let account = name.to_owned();
            return Ok(Outcome::AppOnly { account });
        }
        Grant::AuthorizationCode if !options.device => {
            code::authorize(name, account, &preset, &client, options).await?
        }
        Grant::AuthorizationCode | Grant::DeviceCode => device(&client).await?,
    };
    let tokens = StoredTokens::authorized(&preset.token_url, update, SystemTime::now());
    save(TokenStore::new(&config.state), name, tokens.clone()).await?;

    let scopes = match tokens.scopes.is_empty() {
        true => preset.scopes,
        false => tokens.scopes,
    };
    Ok(Outcome::Authorized {
        account: name.to_owned(),
        scopes,
        refresh_token: tokens.refresh_token.is_some(),
    })
}

/// Runs the device-code grant: prints where to sign in, then polls.
/// Saves the tokens of a new sign-in under the account's lock of the
/// store, so that a refresh running in another process does not
/// overwrite them with the tokens it read before.
async fn save(store: TokenStore, name: &str, tokens: StoredTokens) -> Result<(), StoreError> {
    let name = name.to_owned();
    let task = tokio::task::spawn_blocking(move || {
        let _lock = store.lock(&name)?;
        store.save(&name, &tokens)
    });
    task.await.expect("the token save does not panic")
}

async fn device(client: &TokenClient) -> Result<TokenUpdate, AuthorizeError> {
    let device = client.start_device().await?;
    eprintln!(
        "On any device, open the verification URI and enter the user code within {}:",
        humantime::format_duration(device.expires_in())
    );
    let mut lines = format!(
        "verification URI: {}\nuser code: {}\n",
        device.verification_uri(),
        device.user_code()
    );
    if let Some(complete) = device.verification_uri_complete() {
        lines.push_str(&format!("or open: {complete}\n"));
    }
    print_flushed(&lines)?;

    Ok(client.poll_device(&device).await?)
}

/// Writes `text` to standard output and flushes it, so that a process
/// reading the pipe receives it before the command starts waiting.
fn print_flushed(text: &str) -> Result<(), AuthorizeError> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|source| AuthorizeError::Output { source })
}

fn list(names: &[String]) -> String {
    match names.is_empty() {
        true => "none".to_owned(),
        false => names.join(", "),
    }
}

fn describe(description: &Option<String>) -> String {
    match description {
        Some(description) => format!(": {description}"),
        None => String::new(),
    }
}
