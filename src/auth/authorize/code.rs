//! The authorization-code grant with PKCE S256 (RFC 7636) on a loopback
//! redirect URI `http://127.0.0.1:PORT/` (RFC 8252 section 7.3).

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use oauth2::{AuthorizationCode, CsrfToken, PkceCodeChallenge, RedirectUrl};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use url::Url;

use super::loopback::{self, Page};
use super::{AuthorizeError, Options, WAIT_TIMEOUT, print_flushed};
use crate::auth::grant::{GrantError, TokenClient};
use crate::auth::presets::Preset;
use crate::auth::store::TokenUpdate;
use crate::config::Account;

/// Path of the redirect URI.
const REDIRECT_PATH: &str = "/";

/// Signs account `name` in through a browser and exchanges the code once.
pub(super) async fn authorize(
    name: &str,
    account: &Account,
    preset: &Preset,
    client: &TokenClient,
    options: Options,
) -> Result<TokenUpdate, AuthorizeError> {
    let requested_port = account.oauth2.redirect_port.unwrap_or(0);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, requested_port))
        .await
        .map_err(|source| listen_error(name, requested_port, source))?;
    let port = listener
        .local_addr()
        .map_err(|source| listen_error(name, requested_port, source))?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}{REDIRECT_PATH}");

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let state = CsrfToken::new_random();
    let url = authorization_url(name, account, preset, &redirect_uri, &challenge, &state)?;
    eprintln!(
        "Open this address in a browser and sign in as {}:",
        account.login_hint
    );
    print_flushed(&format!("{url}\n"))?;
    if options.open_browser {
        open_browser(url.as_str());
    }

    let (pairs, browser) = match options.paste {
        true => {
            // The port stays reserved, so no other program receives the redirect.
            eprintln!("Then paste the address the browser was sent to, and press Enter:");
            (read_pasted().await?, None)
        }
        false => {
            let callback = wait(loopback::receive(&listener, REDIRECT_PATH)).await?;
            (callback.pairs, Some(callback.stream))
        }
    };
    drop(listener);

    let result = exchange(client, &pairs, &state, verifier, redirect_uri).await;
    if let Some(stream) = browser {
        let page = match &result {
            Ok(_) => Page::Success,
            Err(error) => Page::Failure(error.to_string()),
        };
        loopback::respond(stream, &page).await;
    }
    result
}

/// Checks the redirect's `state` and takes its code or error, then
/// exchanges the code.
async fn exchange(
    client: &TokenClient,
    pairs: &[(String, String)],
    state: &CsrfToken,
    verifier: oauth2::PkceCodeVerifier,
    redirect_uri: String,
) -> Result<TokenUpdate, AuthorizeError> {
    let value = |key: &str| {
        pairs
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
    };
    if value("state").as_deref() != Some(state.secret().as_str()) {
        return Err(AuthorizeError::StateMismatch);
    }
    if let Some(error) = value("error") {
        let description = value("error_description");
        return Err(AuthorizeError::Denied { error, description });
    }
    let code = value("code").ok_or(AuthorizeError::MissingParameter { parameter: "code" })?;

    let redirect_uri = RedirectUrl::new(redirect_uri).expect("loopback URI is a valid URL");
    let update = client
        .exchange_code(AuthorizationCode::new(code), verifier, redirect_uri)
        .await?;
    Ok(update)
}

/// Builds the authorization request URL (RFC 6749 section 4.1.1).
fn authorization_url(
    name: &str,
    account: &Account,
    preset: &Preset,
    redirect_uri: &str,
    challenge: &PkceCodeChallenge,
    state: &CsrfToken,
) -> Result<Url, AuthorizeError> {
    let endpoint =
        preset
            .authorize_url
            .as_deref()
            .ok_or_else(|| AuthorizeError::MissingAuthorizeUrl {
                account: name.to_owned(),
            })?;
    let mut url = Url::parse(endpoint).map_err(|error| GrantError::InvalidUrl {
        account: name.to_owned(),
        key: "authorize_url",
        url: endpoint.to_owned(),
        reason: error.to_string(),
    })?;

    let mut query = url.query_pairs_mut();
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", &account.oauth2.client_id)
        .append_pair("redirect_uri", redirect_uri);
    if !preset.scopes.is_empty() {
        query.append_pair("scope", &preset.scopes.join(" "));
    }
    query
        .append_pair("state", state.secret())
        .append_pair("code_challenge", challenge.as_str())
        .append_pair("code_challenge_method", challenge.method().as_str())
        .append_pair("login_hint", &account.login_hint);
    drop(query);

    Ok(url)
}

/// Reads one line from standard input: the whole redirect URL, or only its
/// query, with or without the leading `?`.
async fn read_pasted() -> Result<Vec<(String, String)>, AuthorizeError> {
    let mut line = String::new();
    let mut stdin = BufReader::new(tokio::io::stdin());
    wait(async { stdin.read_line(&mut line).await }).await?;

    let line = line.trim();
    let query = match Url::parse(line) {
        Ok(url) => url.query().unwrap_or_default().to_owned(),
        Err(_) => line.trim_start_matches('?').to_owned(),
    };
    Ok(url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect())
}

/// Awaits `io` for at most [`WAIT_TIMEOUT`].
async fn wait<T>(io: impl Future<Output = std::io::Result<T>>) -> Result<T, AuthorizeError> {
    match tokio::time::timeout(WAIT_TIMEOUT, io).await {
        Ok(result) => result.map_err(|source| AuthorizeError::Receive { source }),
        Err(_) => Err(AuthorizeError::Timeout {
            timeout: WAIT_TIMEOUT,
        }),
    }
}

/// Starts `xdg-open` when a graphical session is present. Failing to open
/// a browser is not an error, because the URL is printed as well.
fn open_browser(url: &str) {
    let graphical = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
    if !graphical {
        return;
    }
    let started = Command::new("xdg-open")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(error) = started {
        tracing::debug!(error = %error, "Failed to start xdg-open");
    }
}

fn listen_error(name: &str, port: u16, source: std::io::Error) -> AuthorizeError {
    AuthorizeError::Listen {
        account: name.to_owned(),
        port,
        source,
    }
}
