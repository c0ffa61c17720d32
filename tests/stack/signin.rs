//! Signing an account in by the authorization-code grant with PKCE, as
//! `mailbridge authorize` does, for tests that build a token provider
//! themselves; and reading one sample from a metrics registry.

use std::time::SystemTime;

use mailbridge::auth::grant::{HttpSettings, TokenClient};
use mailbridge::auth::{StoredTokens, TokenStore, TokenUpdate};
use mailbridge::config::{Account, State};
use oauth2::{AuthorizationCode, PkceCodeChallenge, RedirectUrl};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::support::{authorization_redirect, stack};

/// Redirect URI of the tests' sign-ins; the stack's server accepts any
/// loopback URI and nothing listens on it, as the code is read from the
/// redirect itself.
const REDIRECT_URI: &str = "http://127.0.0.1:53682/callback";

/// Signs the login hint of `account` in, following the authorization
/// redirect the way a browser would, and exchanges the code.
pub async fn authorize(name: &str, account: &Account) -> TokenUpdate {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut url = url::Url::parse(&stack("STACK_OAUTH_AUTHORIZE_URL")).expect("authorize URL");
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &account.oauth2.client_id)
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("state", "state-1")
        .append_pair("scope", "imap smtp")
        .append_pair("code_challenge", challenge.as_str())
        .append_pair("code_challenge_method", "S256")
        .append_pair("login_hint", &account.login_hint);
    let location = authorization_redirect(url.as_str()).await;
    let redirect = url::Url::parse(&location).expect("Location is a URL");
    let code = redirect
        .query_pairs()
        .find(|(key, _)| key == "code")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| panic!("no code in {location}"));

    let preset = mailbridge::auth::resolve(name, account).expect("resolve endpoints");
    let client =
        TokenClient::new(name, account, &preset, HttpSettings::default()).expect("token client");
    let redirect_uri = RedirectUrl::new(REDIRECT_URI.to_owned()).expect("redirect URI");
    client
        .exchange_code(AuthorizationCode::new(code), verifier, redirect_uri)
        .await
        .expect("code exchange")
}

/// Stores the refresh token of `update` without its access token, so that
/// the first `access_token()` must refresh.
pub fn store_refresh_token(name: &str, state: &State, update: TokenUpdate) -> StoredTokens {
    let mut tokens =
        StoredTokens::authorized(stack("STACK_OAUTH_TOKEN_URL"), update, SystemTime::now());
    tokens.access_token = None;
    tokens.access_token_expires_at = None;
    TokenStore::new(state)
        .save(name, &tokens)
        .expect("save tokens");
    tokens
}

/// Signs `account` in and stores only its refresh token.
pub async fn sign_in(name: &str, account: &Account, state: &State) {
    let update = authorize(name, account).await;
    store_refresh_token(name, state, update);
}

/// Returns the value of the sample `series` (name and labels) in
/// `registry`, or 0 when it has none.
pub fn sample(registry: &Registry, series: &str) -> f64 {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buffer)
        .expect("encode metrics");
    let text = String::from_utf8(buffer).expect("metrics text is UTF-8");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("sample value is a number"))
        .unwrap_or(0.0)
}
