//! The test's side of the mailbox: delivering mail through postfix,
//! appending it over IMAP, reading flags, and recreating a mailbox.

use std::time::Duration;

use async_imap::Session;
use futures::TryStreamExt;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use mailbridge::imap::mailbox_name::encode;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::{
    OAuthAuthenticator, access_token, mail_address, port, stack, tls_connect, xoauth2_response,
};

/// Sends `raw` to `user` through the stack's postfix, over STARTTLS with
/// XOAUTH2, as a separate sender.
pub async fn deliver(user: &str, raw: &[u8]) {
    let sender = mail_address("inbound-sender");
    let pem = std::fs::read(stack("STACK_CA_FILE")).expect("read the stack's CA file");
    let tls = TlsParameters::builder(stack("STACK_SMTP_HOST"))
        .certificate_store(CertificateStore::None)
        .add_root_certificate(Certificate::from_pem(&pem).expect("CA certificate"))
        .build_rustls()
        .expect("TLS parameters");
    let token = access_token(&sender).await;
    let transport =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(stack("STACK_SMTP_HOST"))
            .port(port("STACK_SMTP_PORT"))
            .tls(Tls::Required(tls))
            .credentials(Credentials::new(sender.clone(), token))
            .authentication(vec![Mechanism::Xoauth2])
            .timeout(Some(Duration::from_secs(10)))
            .build();
    let envelope = Envelope::new(
        Some(sender.parse().expect("sender")),
        vec![user.parse().expect("recipient")],
    )
    .expect("envelope");
    transport
        .send_raw(&envelope, raw)
        .await
        .expect("postfix accepts the mail");
}

/// An IMAP session of `user`, signed in with a token of its own.
pub async fn session(user: &str) -> Session<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect((stack("STACK_IMAP_HOST"), port("STACK_IMAPS_PORT")))
        .await
        .expect("connect to IMAPS");
    let mut client = async_imap::Client::new(tls_connect(tcp).await);
    client.read_response().await.expect("greeting");
    let token = access_token(user).await;
    let authenticator = OAuthAuthenticator::new(xoauth2_response(user, &token));
    client
        .authenticate("XOAUTH2", authenticator)
        .await
        .map_err(|(err, _)| err)
        .expect("sign in")
}

/// Appends `raw` to `mailbox` (UTF-8) of `user`, creating the mailbox if
/// needed.
pub async fn append(user: &str, mailbox: &str, raw: &[u8]) {
    let mailbox = &encode(mailbox);
    let mut session = session(user).await;
    if mailbox != "INBOX" {
        let _ = session.create(mailbox).await;
    }
    session
        .append(mailbox, None, None, raw)
        .await
        .expect("append");
    session.logout().await.expect("logout");
}

/// Returns the flags of every mail in `mailbox`, by UID.
pub async fn flags(user: &str, mailbox: &str) -> Vec<(u32, Vec<String>)> {
    let mailbox = &encode(mailbox);
    let mut session = session(user).await;
    session.examine(mailbox).await.expect("examine");
    let fetches: Vec<_> = session
        .uid_fetch("1:*", "(UID FLAGS)")
        .await
        .expect("fetch flags")
        .try_collect()
        .await
        .expect("read flags");
    let mut flags: Vec<(u32, Vec<String>)> = fetches
        .iter()
        .map(|fetch| {
            let names = fetch.flags().map(|flag| format!("{flag:?}")).collect();
            (fetch.uid.expect("UID"), names)
        })
        .collect();
    drop(fetches);
    session.logout().await.expect("logout");
    flags.sort();
    flags
}

/// Sets `\Seen` on the INBOX mail with `uid`.
pub async fn mark_seen(user: &str, uid: u32) {
    let mut session = session(user).await;
    session.select("INBOX").await.expect("select");
    let updates: Vec<_> = session
        .uid_store(uid.to_string(), "+FLAGS.SILENT (\\Seen)")
        .await
        .expect("store")
        .try_collect()
        .await
        .expect("read store");
    drop(updates);
    session.logout().await.expect("logout");
}

/// Deletes and recreates `mailbox`, which gives it a new UIDVALIDITY,
/// then appends `mails` to it.
pub async fn recreate(user: &str, mailbox: &str, mails: &[&[u8]]) {
    let mailbox = &encode(mailbox);
    let mut session = session(user).await;
    session.delete(mailbox).await.expect("delete mailbox");
    session.create(mailbox).await.expect("create mailbox");
    for raw in mails {
        session
            .append(mailbox, None, None, raw)
            .await
            .expect("append");
    }
    session.logout().await.expect("logout");
}

/// A small mail with a Message-ID and subject of its own.
pub fn mail(id: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: Inbound Test <inbound-test@example.test>\r\n\
         To: Watched <watched@example.test>\r\n\
         Subject: {subject}\r\n\
         Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n\
         Message-ID: <{id}@example.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Body of {subject}.\r\n"
    )
    .into_bytes()
}

/// Waits until the INBOX of `user` holds `count` mails and returns their
/// raw bytes in UID order.
pub async fn wait_for_mails(user: &str, count: usize, wait: Duration) -> Vec<Vec<u8>> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let mails = fetch_all(user).await;
        if mails.len() >= count || std::time::Instant::now() > deadline {
            return mails;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn fetch_all(user: &str) -> Vec<Vec<u8>> {
    let mut session = session(user).await;
    session.examine("INBOX").await.expect("examine");
    let fetches: Vec<_> = session
        .uid_fetch("1:*", "(UID BODY.PEEK[])")
        .await
        .expect("fetch")
        .try_collect()
        .await
        .expect("read mails");
    let mut mails: Vec<(u32, Vec<u8>)> = fetches
        .iter()
        .filter_map(|fetch| Some((fetch.uid?, fetch.body()?.to_vec())))
        .collect();
    drop(fetches);
    session.logout().await.expect("logout");
    mails.sort();
    mails.into_iter().map(|(_, body)| body).collect()
}
