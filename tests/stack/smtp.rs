//! postfix submission: lettre sends over STARTTLS and implicit TLS with
//! XOAUTH2, and the mail then shows in the recipient's INBOX over IMAP.

use std::time::Duration;

use async_imap::Client;
use futures::TryStreamExt;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mailbridge::auth::{ChallengeClass, ErrorChallenge, error_reply};
use mailbridge::config::Mechanism as SaslMechanism;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::{
    OAuthAuthenticator, access_token, mail_address, port, stack, tls_connect, unique,
    xoauth2_response,
};

fn tls_parameters() -> TlsParameters {
    let pem = std::fs::read(stack("STACK_CA_FILE")).expect("read the stack's CA file");
    TlsParameters::builder(stack("STACK_SMTP_HOST"))
        .certificate_store(CertificateStore::None)
        .add_root_certificate(Certificate::from_pem(&pem).expect("parse the CA certificate"))
        .build_rustls()
        .expect("build TLS parameters")
}

fn transport(
    port_name: &str,
    tls: Tls,
    user: &str,
    token: &str,
) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(stack("STACK_SMTP_HOST"))
        .port(port(port_name))
        .tls(tls)
        .credentials(Credentials::new(user.to_string(), token.to_string()))
        .authentication(vec![Mechanism::Xoauth2])
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

fn message(from: &str, to: &str, subject: &str) -> Message {
    Message::builder()
        .from(from.parse::<Mailbox>().expect("sender address"))
        .to(to.parse::<Mailbox>().expect("recipient address"))
        .subject(subject)
        .body(String::from("sent by the stack test\r\n"))
        .expect("build message")
}

/// Waits until a mail with `subject` is in the INBOX of `user`, then returns
/// its raw bytes.
async fn wait_for_mail(user: &str, subject: &str) -> Vec<u8> {
    let token = access_token(user).await;
    let tcp = TcpStream::connect((stack("STACK_IMAP_HOST"), port("STACK_IMAPS_PORT")))
        .await
        .expect("connect to IMAPS");
    let mut client = Client::new(tls_connect(tcp).await);
    client.read_response().await.expect("read greeting");
    let mut session = client
        .authenticate(
            "XOAUTH2",
            OAuthAuthenticator::new(xoauth2_response(user, &token)),
        )
        .await
        .map_err(|(err, _)| err)
        .expect("recipient logs in");

    for _ in 0..100 {
        session.select("INBOX").await.expect("SELECT INBOX");
        let uids = session
            .uid_search(format!("HEADER Subject \"{subject}\""))
            .await
            .expect("UID SEARCH");
        if let Some(uid) = uids.into_iter().next() {
            let fetches: Vec<_> = session
                .uid_fetch(uid.to_string(), "BODY.PEEK[]")
                .await
                .expect("UID FETCH")
                .try_collect()
                .await
                .expect("read FETCH responses");
            let body = fetches
                .first()
                .and_then(|fetch| fetch.body())
                .expect("message body");
            return body.to_vec();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no mail with subject {subject:?} reached {user} within 10 s");
}

async fn assert_delivered(port_name: &str, tls: Tls) {
    let sender = mail_address(&unique("sender"));
    let recipient = mail_address(&unique("recipient"));
    let subject = unique("stack test");
    let token = access_token(&sender).await;

    let response = transport(port_name, tls, &sender, &token)
        .send(message(&sender, &recipient, &subject))
        .await
        .expect("postfix accepts the mail");

    assert!(response.is_positive(), "SMTP reply {:?}", response.code());
    let raw = String::from_utf8_lossy(&wait_for_mail(&recipient, &subject).await).into_owned();
    assert!(
        raw.contains(&format!("Subject: {subject}")),
        "delivered mail: {raw}"
    );
    assert!(
        raw.contains("sent by the stack test"),
        "delivered mail: {raw}"
    );
}

#[tokio::test]
async fn smtp_starttls_xoauth2_delivers() {
    assert_delivered("STACK_SMTP_PORT", Tls::Required(tls_parameters())).await;
}

#[tokio::test]
async fn smtp_implicit_tls_xoauth2_delivers() {
    assert_delivered("STACK_SMTPS_PORT", Tls::Wrapper(tls_parameters())).await;
}

async fn send_line<S: AsyncWrite + Unpin>(stream: &mut S, line: &str) {
    stream
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .expect("write SMTP command");
    stream.flush().await.expect("flush SMTP command");
}

/// Reads one SMTP reply, all lines of a multi-line one (RFC 5321 4.2.1).
async fn read_reply<S: AsyncBufRead + Unpin>(stream: &mut S) -> String {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        let read = stream.read_line(&mut line).await.expect("read SMTP reply");
        assert!(
            read > 0,
            "server closed the connection; reply so far: {reply:?}"
        );
        reply.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return reply;
        }
    }
}

/// postfix, like Gmail and Microsoft 365, reports a rejected XOAUTH2 token
/// as a 334 challenge carrying a JSON error; the client must answer it with
/// an empty line before the final 535 arrives. AUTH is offered only after
/// STARTTLS.
#[tokio::test]
async fn smtp_bad_token_gets_error_challenge() {
    let sender = mail_address(&unique("badsender"));
    let tcp = TcpStream::connect((stack("STACK_SMTP_HOST"), port("STACK_SMTP_PORT")))
        .await
        .expect("connect to the submission port");
    let mut plain = BufReader::new(tcp);
    assert!(read_reply(&mut plain).await.starts_with("220"));
    send_line(&mut plain, "EHLO client.example.test").await;
    let before_tls = read_reply(&mut plain).await;
    assert!(
        before_tls.contains("STARTTLS"),
        "EHLO before TLS: {before_tls}"
    );
    assert!(
        !before_tls.contains("AUTH"),
        "AUTH offered before TLS: {before_tls}"
    );
    send_line(&mut plain, "STARTTLS").await;
    assert!(read_reply(&mut plain).await.starts_with("220"));

    let mut tls = BufReader::new(tls_connect(plain.into_inner()).await);
    send_line(&mut tls, "EHLO client.example.test").await;
    let after_tls = read_reply(&mut tls).await;
    assert!(after_tls.contains("XOAUTH2"), "EHLO after TLS: {after_tls}");
    let response = xoauth2_response(&sender, "not-a-token").to_base64();
    send_line(&mut tls, &format!("AUTH XOAUTH2 {}", response.expose())).await;
    let challenge = read_reply(&mut tls).await;

    assert!(
        challenge.starts_with("334 "),
        "expected an error challenge: {challenge}"
    );
    let parsed = ErrorChallenge::parse(challenge[4..].trim());
    assert_eq!(parsed.status.as_deref(), Some("401"), "{parsed:?}");
    assert_eq!(parsed.class(), ChallengeClass::TokenRejected, "{parsed:?}");
    let reply = error_reply(SaslMechanism::Xoauth2);
    send_line(&mut tls, std::str::from_utf8(reply).expect("ASCII reply")).await;
    let outcome = read_reply(&mut tls).await;
    assert!(
        outcome.starts_with("535"),
        "expected 535 after the challenge: {outcome}"
    );
    send_line(&mut tls, "QUIT").await;
}
