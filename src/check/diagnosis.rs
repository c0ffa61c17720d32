//! One-line diagnoses of failed steps: the likely cause and the fix.

use std::time::Duration;

use crate::auth::{Classification, OAuth2Error, ProviderError, StoreError};

/// Returns the diagnosis for a signed-in identity that cannot open the
/// mailbox, naming the token's user when it differs from the address.
pub(crate) fn wrong_user(address: &str, token_user: Option<&str>) -> String {
    let user = match token_user {
        Some(user) if !user.eq_ignore_ascii_case(address) => {
            format!("the token is for {user}, not for the address {address}")
        }
        _ => format!("the token's user has no access to {address}"),
    };
    format!(
        "{user}: check the user name and login_hint, the mailbox permission or the \
         app-only service principal"
    )
}

/// The certificate chain does not end at a trusted root.
pub(crate) const UNKNOWN_ISSUER: &str =
    "the certificate's issuer is unknown: set ca_file to the CA that issued it";

/// The server spoke plaintext where a TLS handshake was expected.
pub(crate) const PLAINTEXT: &str = "the server sent plaintext where TLS was expected: set \
     tls = \"starttls\" for this port, or use the implicit-TLS port";

/// Microsoft 365's `535 5.7.139`.
pub(crate) const SMTP_AUTH_DISABLED: &str =
    "SMTP AUTH is disabled for the tenant or the mailbox: enable Authenticated SMTP for it";

/// Returns the diagnosis for a token for Microsoft Graph, which the mail
/// servers reject.
pub(crate) fn graph_audience(account: &str) -> String {
    format!(
        "the token's audience is Microsoft Graph, which IMAP and SMTP reject, so a Graph \
         scope or resource was requested: remove it from accounts.{account}.oauth2.scopes, \
         keep the Exchange Online scopes of the microsoft preset, and run \
         `mailbridge authorize {account}`"
    )
}

/// Returns the diagnosis of a failed token request of `account`, from
/// the classification of the token endpoint's response. `timeout` is the
/// time limit of one token request.
pub(crate) fn token_failure(error: &ProviderError, account: &str, timeout: Duration) -> String {
    if error.needs_authorization() {
        return authorize(account);
    }
    if let ProviderError::Store(store) = error {
        return token_store(store, account);
    }
    let Some(oauth2) = error.oauth2() else {
        return SEE_ERROR.to_owned();
    };
    let settings = format!("accounts.{account}.oauth2");
    match (oauth2.classification(), oauth2.status()) {
        (Classification::InvalidClient, _) => format!(
            "the token endpoint rejected the client: check {settings}.client_id and the \
             client secret, which may have expired; a public client must send no secret"
        ),
        (Classification::InvalidScope, _) => {
            format!("the token endpoint rejected a requested scope: check {settings}.scopes")
        }
        (Classification::UnauthorizedClient | Classification::UnsupportedGrantType, _) => {
            format!("the app registration does not allow this grant: check {settings}.grant")
        }
        (Classification::InvalidResponse, _) => format!(
            "the token endpoint's response is no OAuth2 token response: check that \
             {settings}.token_url is the token endpoint itself, not a login page or a proxy"
        ),
        (Classification::Transient, Some(status)) => unavailable(oauth2, status),
        (Classification::Transient, None) if oauth2.timed_out() => format!(
            "the token endpoint did not respond within {}: check {settings}.token_url and \
             the identity provider's status, then run the check again",
            humantime::format_duration(timeout)
        ),
        (Classification::Transient, None) => format!(
            "the token endpoint cannot be reached: check {settings}.token_url, the DNS \
             and proxy settings, and that a firewall lets HTTPS through"
        ),
        _ => SEE_ERROR.to_owned(),
    }
}

/// Returns the diagnosis of a token provider that could not be built,
/// which happens before any token request.
pub(crate) fn provider_failure(error: &ProviderError, account: &str) -> String {
    match error {
        ProviderError::Store(store) => token_store(store, account),
        error if error.needs_authorization() => authorize(account),
        _ => SEE_ERROR.to_owned(),
    }
}

/// Returns the diagnosis of a token file that cannot be used. A new
/// sign-in fixes none of these while the file stays where it is, because
/// `mailbridge authorize` reads the same file.
fn token_store(error: &StoreError, account: &str) -> String {
    let authorize = format!("`mailbridge authorize {account}`");
    match error {
        StoreError::Permissions { path, .. } => format!(
            "the token file is accessible by group or others: run `chmod 600 {}`, then \
             run the check again",
            path.display()
        ),
        StoreError::Corrupt { path, .. } | StoreError::NotAFile { path } => format!(
            "the token file cannot be used: move {} away, then run {authorize} to sign in \
             again",
            path.display()
        ),
        StoreError::UnsupportedVersion { path, .. } => format!(
            "a newer mailbridge wrote the token file: upgrade mailbridge, or move {} away \
             and run {authorize}",
            path.display()
        ),
        _ => SEE_ERROR.to_owned(),
    }
}

/// Returns the diagnosis of a token endpoint that responded with HTTP 429
/// or 5xx, naming its `Retry-After` delay.
fn unavailable(error: &OAuth2Error, status: u16) -> String {
    let retry = match error.retry_after() {
        Some(delay) => format!(
            "run the check again after {}, as its Retry-After asks",
            humantime::format_duration(delay)
        ),
        None => "run the check again later".to_owned(),
    };
    format!(
        "the identity provider's token endpoint failed with HTTP {status}, an error on the \
         provider's side that the configuration cannot fix: {retry}; if it persists, check \
         the provider's status"
    )
}

/// Returns the diagnosis for a refresh token that is missing or rejected.
pub(crate) fn authorize(account: &str) -> String {
    format!("the account needs a new sign-in: run `mailbridge authorize {account}`")
}

/// A configured mailbox that the server does not have.
pub(crate) const MAILBOX_NOT_FOUND: &str = "the mailbox does not exist for this user: correct \
     the mailboxes list of the inbound pipeline, or create the mailbox";

/// A step whose cause has no known fix beyond its error text.
pub(crate) const SEE_ERROR: &str = "see the error above";

/// Returns the diagnosis of a failed sign-in or SELECT from the error's
/// `kind()` label and the token's user claim.
pub(crate) fn sign_in(
    kind: &str,
    account: &str,
    address: &str,
    token_user: Option<&str>,
) -> String {
    let other_user = token_user.is_some_and(|user| !user.eq_ignore_ascii_case(address));
    match kind {
        "smtp_auth_disabled" => SMTP_AUTH_DISABLED.to_owned(),
        "token" => authorize(account),
        "mailbox_access_denied" | "send_as_denied" => wrong_user(address, token_user),
        "mailbox_not_found" => MAILBOX_NOT_FOUND.to_owned(),
        _ if other_user => wrong_user(address, token_user),
        _ => SEE_ERROR.to_owned(),
    }
}

/// Returns whether `audience` is Microsoft Graph, by name or application ID.
pub(crate) fn is_graph(audience: &str) -> bool {
    audience.contains("graph.microsoft.com")
        || audience.eq_ignore_ascii_case("00000003-0000-0000-c000-000000000000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_audience_detected() {
        assert!(is_graph("https://graph.microsoft.com"));
        assert!(is_graph("00000003-0000-0000-C000-000000000000"));
        assert!(!is_graph("https://outlook.office.com"));
    }

    #[test]
    fn sign_in_diagnoses_by_kind() {
        let auth_disabled = sign_in("smtp_auth_disabled", "box", "a@x.test", None);
        let token = sign_in("token", "box", "a@x.test", None);
        let matching = sign_in("authenticate", "box", "a@x.test", Some("A@x.test"));
        let other = sign_in("authenticate", "box", "a@x.test", Some("b@x.test"));

        assert_eq!(auth_disabled, SMTP_AUTH_DISABLED);
        assert!(token.contains("mailbridge authorize box"), "{token}");
        assert_eq!(matching, SEE_ERROR);
        assert!(other.contains("not for the address a@x.test"), "{other}");
    }

    fn token_error(status: u16, retry_after: Option<&str>, body: &str) -> ProviderError {
        let now = std::time::SystemTime::now();
        OAuth2Error::from_parts("box", status, retry_after, body.as_bytes(), now).into()
    }

    #[test]
    fn token_failure_by_classification() {
        let timeout = Duration::from_secs(10);
        let client = token_error(401, None, r#"{"error":"invalid_client"}"#);
        let busy = token_error(503, Some("7"), r#"{"error":"temporarily_unavailable"}"#);
        let garbage = token_error(200, None, "<html>");
        let grant = token_error(400, None, r#"{"error":"invalid_grant"}"#);
        let hang: ProviderError = OAuth2Error::transport("box", true, "deadline").into();

        let client = token_failure(&client, "box", timeout);
        let busy = token_failure(&busy, "box", timeout);
        let garbage = token_failure(&garbage, "box", timeout);
        let grant = token_failure(&grant, "box", timeout);
        let hang = token_failure(&hang, "box", timeout);

        assert!(client.contains("accounts.box.oauth2.client_id"), "{client}");
        assert!(busy.contains("HTTP 503"), "{busy}");
        assert!(busy.contains("after 7s"), "{busy}");
        assert!(
            garbage.contains("accounts.box.oauth2.token_url"),
            "{garbage}"
        );
        assert_eq!(grant, authorize("box"));
        assert!(hang.contains("did not respond within 10s"), "{hang}");
    }

    #[test]
    fn token_store_problems_name_their_fix() {
        let path = std::path::PathBuf::from("/state/tokens/box.json");
        let permissions: ProviderError = StoreError::Permissions {
            path: path.clone(),
            mode: 0o644,
        }
        .into();
        let corrupt: ProviderError = StoreError::Corrupt {
            path: path.clone(),
            account: "box".into(),
            reason: "expected value at line 1 column 1".into(),
        }
        .into();
        let not_a_file: ProviderError = StoreError::NotAFile { path: path.clone() }.into();
        let newer: ProviderError = StoreError::UnsupportedVersion {
            path: path.clone(),
            account: "box".into(),
            version: 99,
        }
        .into();
        let not_authorized = ProviderError::NotAuthorized {
            account: "box".into(),
        };
        let timeout = Duration::from_secs(10);

        let permissions_fix = provider_failure(&permissions, "box");
        let corrupt_fix = provider_failure(&corrupt, "box");
        let not_a_file_fix = provider_failure(&not_a_file, "box");
        let newer_fix = provider_failure(&newer, "box");

        assert_eq!(
            permissions_fix,
            "the token file is accessible by group or others: run \
             `chmod 600 /state/tokens/box.json`, then run the check again"
        );
        assert!(!permissions_fix.contains("authorize"), "{permissions_fix}");
        assert_eq!(
            corrupt_fix,
            "the token file cannot be used: move /state/tokens/box.json away, then run \
             `mailbridge authorize box` to sign in again"
        );
        assert_eq!(not_a_file_fix, corrupt_fix);
        assert!(newer_fix.contains("upgrade mailbridge"), "{newer_fix}");
        assert_eq!(provider_failure(&not_authorized, "box"), authorize("box"));
        assert_eq!(token_failure(&permissions, "box", timeout), permissions_fix);
        assert_eq!(token_failure(&corrupt, "box", timeout), corrupt_fix);
    }

    #[test]
    fn wrong_user_names_both() {
        let text = wrong_user("box@example.test", Some("other@example.test"));

        assert!(text.contains("other@example.test"));
        assert!(text.contains("box@example.test"));
        assert!(text.contains("login_hint"));
    }
}
