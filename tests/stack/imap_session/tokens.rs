//! Token refresh after a rejection, mechanisms and trust.

use super::*;

#[tokio::test]
async fn revoked_token_recovers_with_one_refresh() {
    let fixture = Fixture::new(implicit()).await;
    let token = fixture.tokens.access_token().await.expect("access token");
    assert_eq!(fixture.refreshes(), 1.0);
    revoke(token.expose()).await;

    let mut session = within(fixture.connector().connect())
        .await
        .expect("sign-in after one forced refresh");
    within(session.select("INBOX")).await.expect("SELECT");

    assert_eq!(
        fixture.refreshes(),
        2.0,
        "expected exactly one forced refresh"
    );
    assert_eq!(fixture.imap_failures("token_rejected"), 1.0);
    let current = fixture.tokens.access_token().await.unwrap();
    assert_ne!(current, token);
}

#[tokio::test]
async fn other_users_token_gets_matching_user_hint() {
    let owner = mail_address(&unique("owner"));
    let delegate = mail_address(&unique("delegate"));
    let account = account(&owner, &delegate, implicit(), Mechanism::Xoauth2);
    let fixture = Fixture::with_account(account).await;

    let error = within(fixture.connector().connect()).await.unwrap_err();

    assert_eq!(error.kind(), "token_rejected", "{error}");
    let text = error.to_string();
    assert!(text.contains(&owner), "{text}");
    assert!(text.contains("must match the account address"), "{text}");
    assert!(text.contains("mailbridge authorize support"), "{text}");
    assert!(text.contains("status \"401\""), "{text}");
    assert!(!error.is_transient());
    assert_eq!(fixture.imap_failures("token_rejected"), 2.0);
    assert_eq!(fixture.refreshes(), 2.0);
}

#[tokio::test]
async fn oauthbearer_signs_in() {
    let user = mail_address(&unique("bearer"));
    let account = account(&user, &user, starttls(), Mechanism::Oauthbearer);
    let fixture = Fixture::with_account(account).await;

    let mut session = within(fixture.connector().connect())
        .await
        .expect("OAUTHBEARER");

    within(session.select("INBOX")).await.expect("SELECT");
    assert_eq!(fixture.imap_failures("token_rejected"), 0.0);
}

#[tokio::test]
async fn connector_without_imap_table_rejected() {
    let fixture = Fixture::new(implicit()).await;
    let mut account = fixture.account.clone();
    account.imap = None;

    let error = Connector::new(ACCOUNT, &account, fixture.tokens.clone(), None).unwrap_err();

    assert_eq!(error.kind(), "config");
    assert!(error.to_string().contains("imap"), "{error}");
}

#[tokio::test]
async fn untrusted_certificate_rejected() {
    let fixture = Fixture::new(implicit()).await;
    let mut account = fixture.account.clone();
    let mut imap = implicit();
    imap.ca_file = None;
    account.imap = Some(imap);
    let connector = Connector::new(ACCOUNT, &account, fixture.tokens.clone(), None).unwrap();

    let error = within(connector.connect()).await.unwrap_err();

    assert_eq!(error.kind(), "tls_handshake", "{error}");
    assert!(!error.is_transient());
}
