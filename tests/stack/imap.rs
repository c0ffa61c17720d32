//! Dovecot: XOAUTH2 and OAUTHBEARER over implicit TLS and STARTTLS, checked
//! against the OAuth2 server by token introspection.

use std::time::Duration;

use async_imap::{Client, Session};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;

use mailbridge::auth::{ChallengeClass, InitialResponse};

use crate::support::{
    OAuthAuthenticator, access_token, mail_address, oauthbearer_response, port, stack, tls_connect,
    unique, xoauth2_response,
};

const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect_implicit() -> Client<TlsStream> {
    let tcp = TcpStream::connect((stack("STACK_IMAP_HOST"), port("STACK_IMAPS_PORT")))
        .await
        .expect("connect to the IMAPS port");
    let mut client = Client::new(tls_connect(tcp).await);
    let greeting = client.read_response().await.expect("read greeting");
    assert!(greeting.is_some(), "server closed before its greeting");
    client
}

async fn connect_starttls() -> Client<TlsStream> {
    let tcp = TcpStream::connect((stack("STACK_IMAP_HOST"), port("STACK_IMAP_PORT")))
        .await
        .expect("connect to the IMAP port");
    let mut plain = Client::new(tcp);
    let greeting = plain
        .read_response()
        .await
        .expect("read greeting")
        .expect("server sent a greeting");
    // Dovecot lists its capabilities in the greeting's response code.
    let greeting = format!("{:?}", greeting.parsed());
    assert!(
        greeting.contains("STARTTLS"),
        "greeting does not offer STARTTLS: {greeting}"
    );
    plain
        .run_command_and_check_ok("STARTTLS", None)
        .await
        .expect("STARTTLS accepted");
    Client::new(tls_connect(plain.into_inner()).await)
}

async fn login<T>(client: Client<T>, mechanism: &str, response: InitialResponse) -> Session<T>
where
    T: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let login = client.authenticate(mechanism, OAuthAuthenticator::new(response));
    match timeout(LOGIN_TIMEOUT, login).await {
        Ok(Ok(session)) => session,
        Ok(Err((err, _))) => panic!("{mechanism} login failed: {err}"),
        Err(_) => panic!("{mechanism} login hung for {LOGIN_TIMEOUT:?}"),
    }
}

async fn assert_inbox_opens<T>(mut session: Session<T>)
where
    T: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let inbox = session.select("INBOX").await.expect("SELECT INBOX");
    assert!(
        inbox.uid_validity.is_some(),
        "SELECT returned no UIDVALIDITY"
    );
    session.logout().await.expect("LOGOUT");
}

#[tokio::test]
async fn imap_xoauth2_implicit_tls() {
    let user = mail_address(&unique("imaps"));
    let token = access_token(&user).await;

    let session = login(
        connect_implicit().await,
        "XOAUTH2",
        xoauth2_response(&user, &token),
    )
    .await;

    assert_inbox_opens(session).await;
}

#[tokio::test]
async fn imap_xoauth2_starttls() {
    let user = mail_address(&unique("starttls"));
    let token = access_token(&user).await;

    let session = login(
        connect_starttls().await,
        "XOAUTH2",
        xoauth2_response(&user, &token),
    )
    .await;

    assert_inbox_opens(session).await;
}

#[tokio::test]
async fn imap_oauthbearer_implicit_tls() {
    let user = mail_address(&unique("bearer"));
    let token = access_token(&user).await;

    let session = login(
        connect_implicit().await,
        "OAUTHBEARER",
        oauthbearer_response(&user, &token),
    )
    .await;

    assert_inbox_opens(session).await;
}

/// Dovecot reports a rejected token as a SASL challenge that carries a JSON
/// error; the client must answer it before the tagged NO arrives.
async fn assert_rejected(mechanism: &str, response: InitialResponse, expected_status: &str) {
    let authenticator = OAuthAuthenticator::new(response);
    let challenges = authenticator.error_challenges.clone();
    let login = connect_implicit()
        .await
        .authenticate(mechanism, authenticator);

    let err = match timeout(LOGIN_TIMEOUT, login).await {
        Err(_) => panic!("{mechanism} login with a bad token hung"),
        Ok(Ok(_)) => panic!("{mechanism} login with a bad token succeeded"),
        Ok(Err((err, _))) => err.to_string(),
    };
    assert!(
        err.contains("Authentication failed"),
        "unexpected login error: {err}"
    );
    let challenges = challenges.lock().unwrap();
    assert_eq!(challenges.len(), 1, "expected one error challenge");
    let challenge = &challenges[0];
    assert_eq!(
        challenge.status.as_deref(),
        Some(expected_status),
        "{challenge:?}"
    );
    assert_eq!(
        challenge.class(),
        ChallengeClass::TokenRejected,
        "{challenge:?}"
    );
}

#[tokio::test]
async fn imap_xoauth2_bad_token_rejected() {
    let user = mail_address(&unique("badtoken"));

    assert_rejected("XOAUTH2", xoauth2_response(&user, "not-a-token"), "401").await;
}

#[tokio::test]
async fn imap_oauthbearer_bad_token_rejected() {
    let user = mail_address(&unique("badbearer"));

    assert_rejected(
        "OAUTHBEARER",
        oauthbearer_response(&user, "not-a-token"),
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn imap_other_users_token_rejected() {
    let user = mail_address(&unique("owner"));
    let intruder_token = access_token(&mail_address(&unique("intruder"))).await;

    assert_rejected("XOAUTH2", xoauth2_response(&user, &intruder_token), "401").await;
}
