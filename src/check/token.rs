//! The token step: obtain an access token and, when it is a JWT (RFC
//! 7519), decode the claims that explain most rejections. The token and
//! its signature are never printed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use std::time::Duration;

use super::Steps;
use super::diagnosis;
use crate::auth::{HttpSettings, ProviderSettings, RetryPolicy, TokenProvider};
use crate::config::Config;

/// Claims of a JWT access token.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Claims {
    pub(crate) audience: Vec<String>,
    pub(crate) scopes: Vec<String>,
    /// The signed-in user: `upn`, `preferred_username`, `email` or `sub`.
    pub(crate) user: Option<String>,
}

/// Builds the token provider of `account`, which reads the token file
/// but sends no request. Returns `None` after a failed step.
pub(crate) fn provider(
    config: &Config,
    account: &str,
    steps: &mut Steps<'_>,
) -> Option<TokenProvider> {
    let settings = &config.accounts[account];
    match TokenProvider::with_settings(account, settings, &config.state, check_settings()) {
        Ok(provider) => Some(provider),
        Err(err) => {
            let fix = diagnosis::provider_failure(&err, account);
            steps.fail("token", err.to_string(), fix);
            None
        }
    }
}

/// Time limit of one token request. Two attempts bound the token step
/// to about twice this long when the token endpoint does not respond.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns provider settings that give up within seconds, because a
/// person waits for the check. A `mailbridge run` that refreshes the same
/// account meanwhile does not get in the way, because both take the
/// account's lock of the token store and read the file after taking it.
///
/// NOTE: the check waits for that lock without a timeout, as long as a
/// refresh of `mailbridge run` retries. With the default retry policy (5
/// requests of up to 30 s, up to 60 s apart) that is about 7 minutes at
/// most.
fn check_settings() -> ProviderSettings {
    let retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(5),
        recheck_delay: Duration::from_secs(2),
    };
    let http = HttpSettings {
        request_timeout: REQUEST_TIMEOUT,
        connect_timeout: Duration::from_secs(5),
    };
    ProviderSettings { retry, http }
}

/// Obtains a token. Returns the JWT claims (`None` for an opaque token),
/// or `None` after a failed step.
pub(crate) async fn obtain(
    provider: &TokenProvider,
    account: &str,
    steps: &mut Steps<'_>,
) -> Option<Option<Claims>> {
    let token = match provider.access_token().await {
        Ok(token) => token,
        Err(err) => {
            let fix = diagnosis::token_failure(&err, account, REQUEST_TIMEOUT);
            steps.fail("token", err.to_string(), fix);
            return None;
        }
    };
    let claims = decode(token.expose());

    match &claims {
        Some(claims) if claims.audience.iter().any(|aud| diagnosis::is_graph(aud)) => {
            let fix = diagnosis::graph_audience(account);
            steps.fail("token", describe(claims), fix);
            return None;
        }
        Some(claims) => steps.pass("token", describe(claims)),
        None => steps.pass("token", "obtained an opaque token (not a JWT)"),
    }
    Some(claims)
}

fn describe(claims: &Claims) -> String {
    format!(
        "obtained a JWT: aud={} scp={} user={}",
        claims.audience.join(","),
        claims.scopes.join(" "),
        claims.user.as_deref().unwrap_or("-"),
    )
}

/// Decodes the payload of a JWT, ignoring the header and the signature.
/// Returns `None` for a token that is not a JWT.
pub(crate) fn decode(token: &str) -> Option<Claims> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let payload: Value = serde_json::from_slice(&bytes).ok()?;

    // Microsoft puts delegated scopes in `scp`, app roles in `roles`;
    // other servers use `scope` (RFC 8693 section 4.2).
    let mut scopes = words(&payload["scp"]);
    scopes.extend(words(&payload["roles"]));
    scopes.extend(words(&payload["scope"]));
    let user = ["upn", "preferred_username", "email", "unique_name", "sub"]
        .iter()
        .find_map(|claim| payload[claim].as_str().map(str::to_owned));

    Some(Claims {
        audience: words(&payload["aud"]),
        scopes,
        user,
    })
}

/// Returns a claim that is a space-separated string or a list of strings.
fn words(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => text.split_whitespace().map(str::to_owned).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!(
            "eyJhbGciOiJub25lIn0.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn microsoft_claims_decoded() {
        let token = jwt(
            r#"{"aud":"https://outlook.office.com","scp":"IMAP.AccessAsUser.All SMTP.Send",
                "upn":"a@example.test","sub":"x"}"#,
        );
        let claims = decode(&token).unwrap();

        assert_eq!(claims.audience, ["https://outlook.office.com"]);
        assert_eq!(claims.scopes, ["IMAP.AccessAsUser.All", "SMTP.Send"]);
        assert_eq!(claims.user.as_deref(), Some("a@example.test"));
    }

    #[test]
    fn app_roles_and_audience_list_decoded() {
        let claims = decode(&jwt(r#"{"aud":["a","b"],"roles":["IMAP.AccessAsApp"]}"#)).unwrap();

        assert_eq!(claims.audience, ["a", "b"]);
        assert_eq!(claims.scopes, ["IMAP.AccessAsApp"]);
        assert_eq!(claims.user, None);
    }

    #[test]
    fn opaque_token_is_no_jwt() {
        assert_eq!(decode("ya29.opaque-token"), None);
        assert_eq!(decode("a.b.c.d"), None);
        assert_eq!(decode("a.!!.c"), None);
    }
}
