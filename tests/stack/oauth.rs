//! OAuth2 server: authorization code with PKCE driven over HTTP, rotating
//! refresh tokens, and introspection as Dovecot uses it.

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge, RedirectUrl,
    RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};

use crate::support::{http, introspect, mail_address, stack, unique};

const REDIRECT_URI: &str = "http://127.0.0.1:53682/callback";

type Client = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    oauth2::basic::BasicTokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

fn client() -> Client {
    BasicClient::new(ClientId::new(stack("STACK_OAUTH_CLIENT_ID")))
        .set_client_secret(ClientSecret::new(stack("STACK_OAUTH_CLIENT_SECRET")))
        .set_auth_uri(AuthUrl::new(stack("STACK_OAUTH_AUTHORIZE_URL")).expect("authorize URL"))
        .set_token_uri(TokenUrl::new(stack("STACK_OAUTH_TOKEN_URL")).expect("token URL"))
        .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.to_string()).expect("redirect URI"))
}

/// Follows the authorization URL the way a browser would and returns the
/// query pairs of the redirect to the loopback URI.
async fn authorize(url: &url::Url) -> Vec<(String, String)> {
    let response = http()
        .get(url.as_str())
        .send()
        .await
        .expect("authorize request");
    assert!(
        response.status().is_redirection(),
        "authorize returned {}",
        response.status()
    );
    let location = response
        .headers()
        .get("location")
        .expect("redirect has a Location")
        .to_str()
        .expect("Location is text");
    assert!(
        location.starts_with(REDIRECT_URI),
        "redirected to {location}"
    );
    let redirect = url::Url::parse(location).expect("Location is a URL");
    redirect.query_pairs().into_owned().collect()
}

fn query_value<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("redirect lacks {name}: {pairs:?}"))
}

fn is_invalid_grant<E: std::error::Error>(
    result: &Result<
        oauth2::basic::BasicTokenResponse,
        RequestTokenError<E, oauth2::basic::BasicErrorResponse>,
    >,
) -> bool {
    matches!(
        result,
        Err(RequestTokenError::ServerResponse(response))
            if *response.error() == BasicErrorResponseType::InvalidGrant
    )
}

#[tokio::test]
async fn oauth_authorization_code_pkce_and_rotation() {
    let user = mail_address(&unique("pkce"));
    let client = client();
    let http = http();
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("imap".to_string()))
        .add_extra_param("login_hint", &user)
        .set_pkce_challenge(challenge)
        .url();

    let pairs = authorize(&url).await;
    assert_eq!(query_value(&pairs, "state"), state.secret());
    let code = AuthorizationCode::new(query_value(&pairs, "code").to_string());
    let tokens = client
        .exchange_code(code)
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");

    let active = introspect(tokens.access_token().secret()).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["username"], user.as_str());

    let first_refresh = tokens
        .refresh_token()
        .expect("refresh token issued")
        .clone();
    let rotated = client
        .exchange_refresh_token(&first_refresh)
        .request_async(&http)
        .await
        .expect("refresh");
    let second_refresh = rotated.refresh_token().expect("rotated refresh token");
    assert_ne!(second_refresh.secret(), first_refresh.secret());

    let replayed = client
        .exchange_refresh_token(&RefreshToken::new(first_refresh.secret().clone()))
        .request_async(&http)
        .await;
    assert!(
        is_invalid_grant(&replayed),
        "reuse of a rotated refresh token was accepted"
    );
}

/// RFC 6749 section 10.5: a code used twice revokes what it was exchanged for.
#[tokio::test]
async fn oauth_code_reuse_revokes_its_tokens() {
    let user = mail_address(&unique("code-reuse"));
    let client = client();
    let http = http();
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, _state) = client
        .authorize_url(CsrfToken::new_random)
        .add_extra_param("login_hint", &user)
        .set_pkce_challenge(challenge)
        .url();
    let pairs = authorize(&url).await;
    let code = AuthorizationCode::new(query_value(&pairs, "code").to_string());
    let tokens = client
        .exchange_code(code.clone())
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");

    let reused = client.exchange_code(code).request_async(&http).await;

    assert!(
        is_invalid_grant(&reused),
        "second use of a code was not invalid_grant"
    );
    let revoked = introspect(tokens.access_token().secret()).await;
    assert_eq!(
        revoked["active"], false,
        "token of a reused code is still active"
    );
}

#[tokio::test]
async fn oauth_pkce_verifier_mismatch_rejected() {
    let user = mail_address(&unique("pkce-bad"));
    let client = client();
    let (challenge, _verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, _state) = client
        .authorize_url(CsrfToken::new_random)
        .add_extra_param("login_hint", &user)
        .set_pkce_challenge(challenge)
        .url();
    let pairs = authorize(&url).await;
    let code = AuthorizationCode::new(query_value(&pairs, "code").to_string());

    let (_other_challenge, wrong_verifier) = PkceCodeChallenge::new_random_sha256();
    let result = client
        .exchange_code(code)
        .set_pkce_verifier(wrong_verifier)
        .request_async(&http())
        .await;

    assert!(
        is_invalid_grant(&result),
        "a wrong PKCE verifier was accepted"
    );
}

#[tokio::test]
async fn oauth_introspection_rejects_forged_token() {
    let answer = introspect("eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0.").await;

    assert_eq!(answer["active"], false);
}
