//! One-line diagnoses of failed steps: the likely cause and the fix.

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

/// A token for Microsoft Graph, which the mail servers reject.
pub(crate) const GRAPH_AUDIENCE: &str = "the token is for Microsoft Graph, so the wrong scope \
     was requested: use the Exchange Online scopes of the preset";

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

    #[test]
    fn wrong_user_names_both() {
        let text = wrong_user("box@example.test", Some("other@example.test"));

        assert!(text.contains("other@example.test"));
        assert!(text.contains("box@example.test"));
        assert!(text.contains("login_hint"));
    }
}
