//! `mailbridge::smtp::transport::Sender` against the stack's postfix over
//! STARTTLS and implicit TLS, with a real token provider, checking
//! delivery in the recipient's INBOX over IMAP. The tests cover the pool's
//! connection limit, idle timeout and reconnects, one forced refresh after
//! a revoked token, a token of another user, and untrusted certificates.
//! Loopback fake servers cover what postfix never sends: a missing or
//! refused STARTTLS and Microsoft 365's rejections.

use std::path::PathBuf;
use std::time::Duration;

use async_imap::Client;
use mailbridge::auth::{ProviderSettings, TokenProvider};
use mailbridge::config::{Account, Grant, Mechanism, OAuth2, Provider, Secret, Server, State, Tls};
use mailbridge::smtp::transport::{PoolSettings, Sender, SmtpError, TlsProblem};
use mailbridge::telemetry::Metrics;
use prometheus::Registry;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::support::{
    FakeSmtp, Forwarder, OAuthAuthenticator, Step, access_token, http, mail_address, port, stack,
    step, tls_connect, unique, xoauth2_response,
};

const ACCOUNT: &str = "outbound";
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

// === Accounts, token providers and senders ===

fn server(tls: Tls, port: u16) -> Server {
    Server {
        host: "127.0.0.1".to_owned(),
        port,
        tls,
        allow_plaintext: tls == Tls::None,
        ca_file: match tls {
            Tls::None => None,
            _ => Some(PathBuf::from(stack("STACK_CA_FILE"))),
        },
        danger_accept_invalid_certs: false,
        connect_timeout: Duration::from_secs(5),
    }
}

fn starttls() -> Server {
    server(Tls::Starttls, port("STACK_SMTP_PORT"))
}

fn implicit() -> Server {
    server(Tls::Implicit, port("STACK_SMTPS_PORT"))
}

fn account(address: &str, login_hint: &str, smtp: Server) -> Account {
    Account {
        address: address.to_owned(),
        login_hint: login_hint.to_owned(),
        oauth2: OAuth2 {
            provider: Provider::Generic,
            grant: Grant::AuthorizationCode,
            client_id: stack("STACK_OAUTH_CLIENT_ID"),
            client_secret: Some(Secret::new(stack("STACK_OAUTH_CLIENT_SECRET"))),
            tenant: None,
            scopes: vec!["imap".to_owned(), "smtp".to_owned()],
            authorize_url: Some(stack("STACK_OAUTH_AUTHORIZE_URL")),
            token_url: Some(stack("STACK_OAUTH_TOKEN_URL")),
            device_authorization_url: None,
            redirect_port: None,
            mechanism: Mechanism::Xoauth2,
        },
        imap: None,
        smtp: Some(smtp),
    }
}

/// An account signed in by the authorization-code grant, with its own
/// state directory and metrics registry.
struct Fixture {
    _state_dir: tempfile::TempDir,
    state: State,
    user: String,
    account: Account,
    tokens: TokenProvider,
    registry: Registry,
    metrics: Metrics,
}

impl Fixture {
    async fn new(smtp: Server) -> Fixture {
        let user = mail_address(&unique("outbound"));
        Fixture::with_account(account(&user, &user, smtp)).await
    }

    async fn with_account(account: Account) -> Fixture {
        let state_dir = tempfile::tempdir().expect("temporary directory");
        let state = State {
            directory: state_dir.path().to_path_buf(),
        };
        crate::signin::sign_in(ACCOUNT, &account, &state).await;
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).expect("register metrics");
        let tokens = TokenProvider::with_metrics(
            ACCOUNT,
            &account,
            &state,
            ProviderSettings::default(),
            metrics.clone(),
        )
        .expect("token provider");

        Fixture {
            _state_dir: state_dir,
            state,
            user: account.address.clone(),
            account,
            tokens,
            registry,
            metrics,
        }
    }

    fn sender(&self, pool: PoolSettings) -> Sender {
        let smtp = self.account.smtp.clone().expect("smtp table");
        self.sender_via(smtp, pool)
    }

    /// Returns a sender to another server, such as a forwarder or a fake.
    fn sender_via(&self, smtp: Server, pool: PoolSettings) -> Sender {
        let mut account = self.account.clone();
        account.smtp = Some(smtp);
        Sender::new(
            ACCOUNT,
            &account,
            self.tokens.clone(),
            Some(self.metrics.clone()),
            pool,
        )
        .expect("sender")
    }

    fn metric(&self, series: &str) -> f64 {
        crate::signin::sample(&self.registry, series)
    }

    fn refreshes(&self) -> f64 {
        self.metric(&format!(
            r#"mailbridge_oauth2_token_refreshes_total{{account="{ACCOUNT}",result="success"}}"#
        ))
    }

    fn smtp_failures(&self, reason: &str) -> f64 {
        self.metric(&format!(
            r#"mailbridge_auth_failures_total{{account="{ACCOUNT}",protocol="smtp",reason="{reason}"}}"#
        ))
    }
}

/// Revokes every token issued to `user` so far at the OAuth2 server.
async fn revoke_user(user: &str) -> Value {
    let response = http()
        .post(stack("STACK_OAUTH_CONTROL_URL"))
        .json(&json!({ "revoke_user": user }))
        .send()
        .await
        .expect("control request");
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.expect("control response is JSON")
}

// === Messages and the recipient's INBOX ===

/// Builds a message whose body has a line that starts with a dot, which
/// must arrive unchanged through dot-stuffing.
fn message(from: &str, to: &str, subject: &str) -> Vec<u8> {
    let id = unique("msg");
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Message-ID: <{id}@example.test>\r\n\r\nBody of {subject}.\r\n.dot line\r\n"
    )
    .into_bytes()
}

/// Waits until at least `expected` mails whose subject contains `subject`
/// are in the INBOX of `user`, then a little longer for late duplicates,
/// and returns their raw bytes.
async fn wait_for_mails(user: &str, subject: &str, expected: usize) -> Vec<Vec<u8>> {
    use futures::TryStreamExt;

    let token = access_token(user).await;
    let tcp = TcpStream::connect((stack("STACK_IMAP_HOST"), port("STACK_IMAPS_PORT")))
        .await
        .expect("connect to IMAPS");
    let mut client = Client::new(tls_connect(tcp).await);
    client.read_response().await.expect("read greeting");
    let authenticator = OAuthAuthenticator::new(xoauth2_response(user, &token));
    let mut session = client
        .authenticate("XOAUTH2", authenticator)
        .await
        .map_err(|(error, _)| error)
        .expect("recipient signs in");

    let mut settled = false;
    for _ in 0..100 {
        session.select("INBOX").await.expect("SELECT INBOX");
        let uids = session
            .uid_search(format!("HEADER Subject \"{subject}\""))
            .await
            .expect("UID SEARCH");
        if uids.len() >= expected && settled {
            let set: Vec<String> = uids.iter().map(u32::to_string).collect();
            let fetches: Vec<_> = session
                .uid_fetch(set.join(","), "BODY.PEEK[]")
                .await
                .expect("UID FETCH")
                .try_collect()
                .await
                .expect("read FETCH responses");
            let _ = session.logout().await;
            return fetches
                .iter()
                .map(|fetch| fetch.body().expect("message body").to_vec())
                .collect();
        }
        // Once enough mail is in, look once more after a pause.
        let pause = match uids.len() >= expected {
            true => Duration::from_millis(500),
            false => Duration::from_millis(100),
        };
        settled = uids.len() >= expected;
        tokio::time::sleep(pause).await;
    }
    panic!("fewer than {expected} mails with subject {subject:?} reached {user} within 10 s");
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .expect("the test step hung")
}

// === Delivery through postfix ===

async fn assert_delivered(smtp: Server) {
    let fixture = Fixture::new(smtp).await;
    let sender = fixture.sender(PoolSettings::default());
    let recipient = mail_address(&unique("recipient"));
    let subject = unique("transport");

    let accepted = within(sender.send(
        &fixture.user,
        std::slice::from_ref(&recipient),
        &message(&fixture.user, &recipient, &subject),
    ))
    .await
    .expect("postfix accepts the mail");

    assert_eq!(accepted.code, 250);
    assert_eq!(accepted.enhanced.as_deref(), Some("2.0.0"));
    assert!(accepted.text.contains("queued"), "{accepted:?}");
    assert!(accepted.rejected_recipients.is_empty());
    let mails = wait_for_mails(&recipient, &subject, 1).await;
    assert_eq!(mails.len(), 1);
    let raw = String::from_utf8_lossy(&mails[0]).into_owned();
    assert!(raw.contains(&format!("Subject: {subject}")), "{raw}");
    assert!(
        raw.contains("\r\n.dot line\r\n"),
        "dot-stuffing changed the body: {raw}"
    );
    assert_eq!(fixture.smtp_failures("token_rejected"), 0.0);
}

#[tokio::test]
async fn transport_starttls_delivers() {
    assert_delivered(starttls()).await;
}

#[tokio::test]
async fn transport_implicit_tls_delivers() {
    assert_delivered(implicit()).await;
}

#[tokio::test]
async fn transport_pool_limits_connections() {
    let fixture = Fixture::new(starttls()).await;
    let forwarder = Forwarder::start((stack("STACK_SMTP_HOST"), port("STACK_SMTP_PORT"))).await;
    let pool = PoolSettings {
        max_connections: 3,
        ..PoolSettings::default()
    };
    let sender = fixture.sender_via(server(Tls::Starttls, forwarder.port), pool);
    let recipient = mail_address(&unique("recipient"));
    let prefix = unique("pooled");

    let sends = (0..12).map(|number| {
        let (sender, from, to) = (sender.clone(), fixture.user.clone(), recipient.clone());
        let subject = format!("{prefix} {number}");
        tokio::spawn(async move {
            let message = message(&from, &to, &subject);
            sender
                .send(&from, std::slice::from_ref(&to), &message)
                .await
        })
    });
    let results = within(futures::future::join_all(sends)).await;

    for result in results {
        result
            .expect("send task")
            .expect("postfix accepts the mail");
    }
    let opened = forwarder.connections();
    assert!(
        (1..=3).contains(&opened),
        "{opened} connections for max_connections 3"
    );
    assert_eq!(sender.idle_connections(), opened);
    assert_eq!(wait_for_mails(&recipient, &prefix, 12).await.len(), 12);
}

#[tokio::test]
async fn transport_cut_connection_replaced() {
    let fixture = Fixture::new(starttls()).await;
    let forwarder = Forwarder::start((stack("STACK_SMTP_HOST"), port("STACK_SMTP_PORT"))).await;
    let sender = fixture.sender_via(
        server(Tls::Starttls, forwarder.port),
        PoolSettings::default(),
    );
    let recipient = mail_address(&unique("recipient"));
    let (first, second) = (unique("before cut"), unique("after cut"));
    let send = |subject: &str| {
        let message = message(&fixture.user, &recipient, subject);
        let sender = sender.clone();
        let (from, to) = (fixture.user.clone(), recipient.clone());
        async move { sender.send(&from, &[to], &message).await }
    };

    within(send(&first)).await.expect("first mail");
    forwarder.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    within(send(&second)).await.expect("mail after the cut");

    assert_eq!(
        forwarder.connections(),
        1,
        "one new connection after the cut"
    );
    assert_eq!(wait_for_mails(&recipient, &first, 1).await.len(), 1);
    assert_eq!(wait_for_mails(&recipient, &second, 1).await.len(), 1);
}

#[tokio::test]
async fn transport_idle_connection_closed() {
    let fixture = Fixture::new(starttls()).await;
    let forwarder = Forwarder::start((stack("STACK_SMTP_HOST"), port("STACK_SMTP_PORT"))).await;
    let pool = PoolSettings {
        max_connections: 2,
        idle_timeout: Duration::from_millis(300),
    };
    let sender = fixture.sender_via(server(Tls::Starttls, forwarder.port), pool);
    let recipient = mail_address(&unique("recipient"));
    let subject = unique("idle");
    let message = message(&fixture.user, &recipient, &subject);
    let recipients = [recipient.clone()];

    within(sender.send(&fixture.user, &recipients, &message))
        .await
        .expect("first mail");
    let idle_after_send = sender.idle_connections();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let idle_after_timeout = sender.idle_connections();
    within(sender.send(&fixture.user, &recipients, &message))
        .await
        .expect("second mail");

    assert_eq!(idle_after_send, 1);
    assert_eq!(idle_after_timeout, 0, "the idle connection was not closed");
    assert_eq!(forwarder.connections(), 2);
    assert_eq!(wait_for_mails(&recipient, &subject, 2).await.len(), 2);
}

/// postfix's `reject_sender_login_mismatch` rejects every recipient of a
/// mail whose sender the signed-in user does not own; the connection
/// then carries the next mail.
#[tokio::test]
async fn transport_foreign_sender_keeps_connection() {
    let fixture = Fixture::new(starttls()).await;
    let forwarder = Forwarder::start((stack("STACK_SMTP_HOST"), port("STACK_SMTP_PORT"))).await;
    let sender = fixture.sender_via(
        server(Tls::Starttls, forwarder.port),
        PoolSettings::default(),
    );
    let recipient = mail_address(&unique("recipient"));
    let foreign = mail_address(&unique("ceo"));
    let subject = unique("own sender");

    let rejected = within(sender.send(
        &foreign,
        std::slice::from_ref(&recipient),
        &message(&foreign, &recipient, "foreign sender"),
    ))
    .await
    .expect_err("postfix rejects the foreign sender");
    let accepted = within(sender.send(
        &fixture.user,
        std::slice::from_ref(&recipient),
        &message(&fixture.user, &recipient, &subject),
    ))
    .await;

    assert_eq!(rejected.kind(), "recipients_rejected", "{rejected}");
    assert!(rejected.is_permanent());
    assert!(!rejected.affects_account());
    assert_eq!(rejected.code(), Some(553), "{rejected}");
    assert!(accepted.is_ok(), "{accepted:?}");
    assert_eq!(forwarder.connections(), 1);
    assert_eq!(wait_for_mails(&recipient, &subject, 1).await.len(), 1);
}

#[tokio::test]
async fn transport_invalid_settings_rejected() {
    let fixture = Fixture::new(starttls()).await;
    let build = |smtp: Option<Server>, pool: PoolSettings| {
        let mut account = fixture.account.clone();
        account.smtp = smtp;
        Sender::new(ACCOUNT, &account, fixture.tokens.clone(), None, pool)
    };
    let plaintext = Server {
        allow_plaintext: false,
        ..server(Tls::None, port("STACK_SMTP_PORT"))
    };
    let no_connections = PoolSettings {
        max_connections: 0,
        ..PoolSettings::default()
    };

    let missing = build(None, PoolSettings::default()).expect_err("no smtp table");
    let unencrypted = build(Some(plaintext), PoolSettings::default()).expect_err("plaintext");
    let empty_pool = build(Some(starttls()), no_connections).expect_err("no connections");

    for error in [&missing, &unencrypted, &empty_pool] {
        assert_eq!(error.kind(), "config", "{error}");
        assert!(error.is_permanent());
        assert!(error.affects_account());
    }
    assert!(
        missing.to_string().contains("[accounts.NAME.smtp]"),
        "{missing}"
    );
    assert!(
        unencrypted.to_string().contains("allow_plaintext"),
        "{unencrypted}"
    );
    assert!(
        empty_pool.to_string().contains("max_connections"),
        "{empty_pool}"
    );
}

// === Tokens ===

/// After the OAuth2 server revoked the user's tokens and the user signed
/// in again, the cached token is rejected once, one forced refresh picks
/// up the new sign-in, and the mail goes out on a new connection.
#[tokio::test]
async fn transport_revoked_token_refreshed_once() {
    let fixture = Fixture::new(starttls()).await;
    let recipient = mail_address(&unique("recipient"));
    let subject = unique("after revocation");
    within(fixture.sender(PoolSettings::default()).send(
        &fixture.user,
        std::slice::from_ref(&recipient),
        &message(&fixture.user, &recipient, "before revocation"),
    ))
    .await
    .expect("mail with the first token");
    let refreshes_before = fixture.refreshes();

    let revoked = revoke_user(&fixture.user).await;
    crate::signin::sign_in(ACCOUNT, &fixture.account, &fixture.state).await;
    // A new pool, so the cached token signs in on a new connection.
    let accepted = within(fixture.sender(PoolSettings::default()).send(
        &fixture.user,
        std::slice::from_ref(&recipient),
        &message(&fixture.user, &recipient, &subject),
    ))
    .await;

    assert!(revoked["revoked"].as_u64().unwrap_or(0) > 0, "{revoked}");
    assert!(accepted.is_ok(), "{accepted:?}");
    assert_eq!(fixture.refreshes() - refreshes_before, 1.0);
    assert_eq!(fixture.smtp_failures("token_rejected"), 1.0);
    assert_eq!(wait_for_mails(&recipient, &subject, 1).await.len(), 1);
}

/// The token's user differs from the address sent as the SASL user, so
/// the forced refresh cannot help and the error names the fix.
#[tokio::test]
async fn transport_wrong_user_gets_hint() {
    let address = mail_address(&unique("mailbox"));
    let other = mail_address(&unique("delegate"));
    let fixture = Fixture::with_account(account(&address, &other, starttls())).await;
    let recipient = mail_address(&unique("recipient"));

    let error = within(fixture.sender(PoolSettings::default()).send(
        &address,
        std::slice::from_ref(&recipient),
        &message(&address, &recipient, "wrong user"),
    ))
    .await
    .expect_err("the token of another user is rejected");

    assert_eq!(error.kind(), "token_rejected", "{error}");
    assert!(error.is_permanent());
    assert!(error.affects_account());
    assert_eq!(error.code(), Some(535));
    let hint = error.hint().expect("a hint");
    assert!(
        hint.contains("token's user must match the account address"),
        "{hint}"
    );
    assert!(hint.contains("mailbridge authorize"), "{hint}");
    let text = error.to_string();
    assert!(text.contains(&address), "{text}");
    assert!(
        text.contains(&format!("mailbridge authorize {ACCOUNT}")),
        "{text}"
    );
    assert!(
        text.contains("status \"401\""),
        "the challenge is missing: {text}"
    );
    assert_eq!(fixture.smtp_failures("token_rejected"), 2.0);
    assert_eq!(
        fixture.refreshes(),
        2.0,
        "one refresh and one forced refresh"
    );
    let token = fixture.tokens.access_token().await.expect("token");
    let printed = format!("{error} {error:?}");
    assert!(
        !printed.contains(token.expose()),
        "the error contains the token"
    );
}

// === TLS ===

#[tokio::test]
async fn transport_untrusted_certificate_rejected() {
    let fixture = Fixture::new(starttls()).await;
    let untrusted = |tls, port| Server {
        ca_file: None,
        ..server(tls, port)
    };
    let recipients = [mail_address(&unique("recipient"))];
    let message = message(&fixture.user, &recipients[0], "untrusted");

    let starttls_sender = fixture.sender_via(
        untrusted(Tls::Starttls, port("STACK_SMTP_PORT")),
        PoolSettings::default(),
    );
    let implicit_sender = fixture.sender_via(
        untrusted(Tls::Implicit, port("STACK_SMTPS_PORT")),
        PoolSettings::default(),
    );

    let starttls = within(starttls_sender.send(&fixture.user, &recipients, &message))
        .await
        .expect_err("the test CA is not trusted");
    let implicit = within(implicit_sender.send(&fixture.user, &recipients, &message))
        .await
        .expect_err("the test CA is not trusted");

    assert!(
        matches!(
            starttls,
            SmtpError::TlsRequiredUnavailable {
                problem: TlsProblem::Handshake,
                ..
            }
        ),
        "{starttls}"
    );
    assert_eq!(starttls.kind(), "tls_required_unavailable");
    assert!(starttls.is_permanent());
    assert!(starttls.hint().unwrap().contains("ca_file"));
    assert_eq!(implicit.kind(), "tls_handshake", "{implicit}");
    assert!(implicit.is_permanent());
}

// === Loopback fakes ===

fn fake_server(fake: &FakeSmtp, tls: Tls) -> Server {
    Server {
        allow_plaintext: tls == Tls::None,
        ..server(tls, fake.port)
    }
}

/// Builds the EHLO reply that lists `extensions`.
fn ehlo(extensions: &[&str]) -> Step {
    let mut lines = vec!["fake.example.test"];
    lines.extend_from_slice(extensions);
    let last = lines.len() - 1;
    let reply = lines
        .iter()
        .enumerate()
        .map(|(index, line)| match index == last {
            true => format!("250 {line}"),
            false => format!("250-{line}"),
        })
        .collect();
    Step {
        expect: "EHLO ",
        reply,
    }
}

fn signed_in() -> Vec<Step> {
    vec![
        ehlo(&["AUTH XOAUTH2", "8BITMIME"]),
        step("AUTH XOAUTH2 ", &["235 2.7.0 Authentication successful"]),
    ]
}

/// Builds a transaction with one recipient whose message gets `final_reply`.
fn transaction(final_reply: &str) -> Vec<Step> {
    vec![
        step("MAIL FROM:", &["250 2.1.0 Sender OK"]),
        step("RCPT TO:", &["250 2.1.5 Recipient OK"]),
        step("DATA", &["354 Start mail input; end with <CRLF>.<CRLF>"]),
        step(".", &[final_reply]),
    ]
}

fn script(parts: Vec<Vec<Step>>) -> Vec<Step> {
    parts.into_iter().flatten().collect()
}

/// Counts the lines of a connection that start with `command`.
fn commands(lines: &[String], command: &str) -> usize {
    lines
        .iter()
        .filter(|line| line.starts_with(command))
        .count()
}

/// Counts the message data ends that a connection received.
fn data_ends(lines: &[String]) -> usize {
    lines.iter().filter(|line| *line == ".").count()
}

async fn fake_send(fixture: &Fixture, sender: &Sender) -> Result<(), SmtpError> {
    let recipient = "bob@example.test".to_owned();
    let message = message(&fixture.user, &recipient, "fake");
    within(sender.send(&fixture.user, &[recipient], &message))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn fake_missing_starttls_quits_after_ehlo() {
    let fixture = Fixture::new(starttls()).await;
    let fake = FakeSmtp::start(vec![vec![ehlo(&[
        "PIPELINING",
        "AUTH LOGIN XOAUTH2",
        "8BITMIME",
    ])]])
    .await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::Starttls), PoolSettings::default());

    let error = fake_send(&fixture, &sender).await.expect_err("no STARTTLS");

    assert_eq!(error.kind(), "tls_required_unavailable", "{error}");
    assert!(error.is_permanent());
    assert!(
        error.to_string().contains("does not offer STARTTLS"),
        "{error}"
    );
    let received = fake.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].len(), 2, "{received:?}");
    assert!(received[0][0].starts_with("EHLO "), "{received:?}");
    assert_eq!(received[0][1], "QUIT");
}

#[tokio::test]
async fn fake_starttls_refused_is_transient() {
    let fixture = Fixture::new(starttls()).await;
    let fake = FakeSmtp::start(vec![vec![
        ehlo(&["STARTTLS", "AUTH XOAUTH2"]),
        step(
            "STARTTLS",
            &["454 4.7.0 TLS not available due to temporary reason"],
        ),
    ]])
    .await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::Starttls), PoolSettings::default());

    let error = fake_send(&fixture, &sender)
        .await
        .expect_err("STARTTLS refused");

    assert_eq!(error.kind(), "tls_required_unavailable", "{error}");
    assert!(error.is_transient());
    assert_eq!(error.code(), Some(454));
    assert_eq!(error.enhanced(), Some("4.7.0"));
    let lines = &fake.received()[0];
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[1], "STARTTLS");
    assert_eq!(lines[2], "QUIT");
}

#[tokio::test]
async fn fake_starttls_handshake_failure() {
    let fixture = Fixture::new(starttls()).await;
    let fake = FakeSmtp::start(vec![vec![
        ehlo(&["STARTTLS", "AUTH XOAUTH2"]),
        step("STARTTLS", &["220 2.0.0 Ready to start TLS", "{close}"]),
    ]])
    .await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::Starttls), PoolSettings::default());

    let error = fake_send(&fixture, &sender)
        .await
        .expect_err("handshake fails");

    assert!(
        matches!(
            error,
            SmtpError::TlsRequiredUnavailable {
                problem: TlsProblem::Handshake,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(fake.received()[0].len(), 2, "{:?}", fake.received());
}

#[tokio::test]
async fn fake_auth_disabled_not_retried() {
    let fixture = Fixture::new(starttls()).await;
    let disabled = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is \
                    disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled";
    let fake = FakeSmtp::start(vec![vec![
        ehlo(&["AUTH LOGIN XOAUTH2", "SMTPUTF8"]),
        step("AUTH XOAUTH2 ", &[disabled]),
    ]])
    .await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::None), PoolSettings::default());

    let error = fake_send(&fixture, &sender)
        .await
        .expect_err("AUTH disabled");

    assert_eq!(error.kind(), "smtp_auth_disabled", "{error}");
    assert!(error.is_permanent());
    assert!(error.affects_account());
    assert_eq!(error.code(), Some(535));
    assert_eq!(error.enhanced(), Some("5.7.139"));
    assert!(
        error.hint().unwrap().contains("Set-CASMailbox"),
        "{error:?}"
    );
    assert!(error.to_string().contains(&fixture.user), "{error}");
    let received = fake.received();
    assert_eq!(received.len(), 1, "a second connection: {received:?}");
    assert!(!received[0].iter().any(|line| line.starts_with("MAIL")));
    assert_eq!(fixture.smtp_failures("smtp_auth_disabled"), 1.0);
    assert_eq!(fixture.refreshes(), 1.0, "no forced refresh");
}

#[tokio::test]
async fn fake_only_oauthbearer_used() {
    let fixture = Fixture::new(starttls()).await;
    let fake = FakeSmtp::start(vec![script(vec![
        vec![
            ehlo(&["AUTH PLAIN OAUTHBEARER"]),
            step("AUTH OAUTHBEARER ", &["235 2.7.0 Accepted"]),
        ],
        transaction("250 2.0.0 OK queued"),
    ])])
    .await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::None), PoolSettings::default());

    let result = fake_send(&fixture, &sender).await;

    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn fake_no_oauth_mechanism() {
    let fixture = Fixture::new(starttls()).await;
    let fake = FakeSmtp::start(vec![vec![ehlo(&["AUTH PLAIN LOGIN"])]]).await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::None), PoolSettings::default());

    let error = fake_send(&fixture, &sender)
        .await
        .expect_err("no OAuth2 mechanism");

    assert_eq!(error.kind(), "no_mechanism", "{error}");
    assert!(
        error.to_string().contains("offered: PLAIN, LOGIN"),
        "{error}"
    );
    assert!(
        !fake.received()[0]
            .iter()
            .any(|line| line.starts_with("AUTH"))
    );
}

/// Returns the sign-in steps of a server that announces PIPELINING (RFC 2920).
fn signed_in_pipelining() -> Vec<Step> {
    vec![
        ehlo(&["PIPELINING", "AUTH XOAUTH2", "8BITMIME"]),
        step("AUTH XOAUTH2 ", &["235 2.7.0 Authentication successful"]),
    ]
}

/// The fake replies to MAIL FROM and RCPT TO only once DATA arrived, so a
/// client that waited for each reply before the next command would time
/// out.
#[tokio::test]
async fn fake_pipelining_sends_commands_together() {
    let fixture = Fixture::new(starttls()).await;
    let fake = FakeSmtp::start(vec![script(vec![
        signed_in_pipelining(),
        vec![
            step("MAIL FROM:", &[]),
            step("RCPT TO:", &[]),
            step(
                "DATA",
                &[
                    "250 2.1.0 Sender OK",
                    "250 2.1.5 Recipient OK",
                    "354 Start mail input; end with <CRLF>.<CRLF>",
                ],
            ),
            step(".", &["250 2.0.0 OK first"]),
        ],
        transaction("250 2.0.0 OK second"),
    ])])
    .await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::None), PoolSettings::default());

    let first = fake_send(&fixture, &sender).await;
    let second = fake_send(&fixture, &sender).await;

    assert!(first.is_ok(), "{first:?}");
    assert!(second.is_ok(), "{second:?}");
    let received = fake.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(data_ends(&received[0]), 2, "{received:?}");
    assert_eq!(commands(&received[0], "RSET"), 0, "{received:?}");
}

/// A pipelining server that refuses the only recipient and still invites
/// the data with 354 gets an empty message end, and then RSET; the
/// message itself is never written.
#[tokio::test]
async fn fake_pipelining_refused_recipient_sends_no_data() {
    let fixture = Fixture::new(starttls()).await;
    let fake = FakeSmtp::start(vec![script(vec![
        signed_in_pipelining(),
        vec![
            step("MAIL FROM:", &["250 2.1.0 Sender OK"]),
            step("RCPT TO:", &["550 5.1.1 No such user"]),
            step("DATA", &["354 Start mail input"]),
            step(".", &["554 5.5.1 No valid recipients"]),
            step("RSET", &["250 2.0.0 Resetting"]),
        ],
        vec![
            step("MAIL FROM:", &["550 5.7.1 Sender refused"]),
            step("RCPT TO:", &["503 5.5.1 Need MAIL command"]),
            step("DATA", &["503 5.5.1 Need RCPT command"]),
            step("RSET", &["250 2.0.0 Resetting"]),
        ],
        transaction("250 2.0.0 OK third"),
    ])])
    .await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::None), PoolSettings::default());

    let refused = fake_send(&fixture, &sender).await.expect_err("550 RCPT");
    let sender_refused = fake_send(&fixture, &sender).await.expect_err("550 MAIL");
    let third = fake_send(&fixture, &sender).await;

    assert_eq!(refused.kind(), "recipients_rejected", "{refused}");
    assert!(refused.is_permanent());
    assert_eq!(sender_refused.code(), Some(550), "{sender_refused}");
    assert!(
        sender_refused.to_string().contains("MAIL FROM"),
        "{sender_refused}"
    );
    assert!(third.is_ok(), "{third:?}");
    let received = fake.received();
    assert_eq!(
        received.len(),
        1,
        "the connection was not reused: {received:?}"
    );
    let lines = &received[0];
    assert_eq!(data_ends(lines), 2, "{lines:?}");
    let first_data = lines.iter().position(|line| line == "DATA");
    let after_data = first_data.and_then(|index| lines.get(index + 1));
    assert_eq!(
        after_data.map(String::as_str),
        Some("."),
        "message content went out after a refusal: {lines:?}"
    );
}

/// A server that sends one unrequested reply puts every later reply
/// one step out: the 250 read for DATA must not pass for a refusal of
/// the message, but end the connection as a transient fault.
#[tokio::test]
async fn fake_unrequested_reply_is_protocol_error() {
    let fixture = Fixture::new(starttls()).await;
    let fake = FakeSmtp::start(vec![script(vec![
        signed_in_pipelining(),
        vec![
            step(
                "MAIL FROM:",
                &["250 2.1.0 Sender OK", "250 2.1.0 Sender OK again"],
            ),
            step("RCPT TO:", &["250 2.1.5 Recipient OK"]),
            step("DATA", &["354 Start mail input"]),
        ],
    ])])
    .await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::None), PoolSettings::default());

    let error = fake_send(&fixture, &sender).await.expect_err("out of step");

    assert_eq!(error.kind(), "protocol", "{error}");
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("expected 354"), "{error}");
    let received = fake.received();
    assert_eq!(data_ends(&received[0]), 0, "{received:?}");
}

/// A pooled connection whose server replies to MAIL FROM with 432 and then
/// closes refused the message: the 432 is the error, so that the
/// account's sends in flight go down, and the message is not resent at
/// once as over a stale connection.
#[tokio::test]
async fn fake_refusal_then_close_is_reported() {
    let fixture = Fixture::new(starttls()).await;
    let fake = FakeSmtp::start(vec![script(vec![
        signed_in_pipelining(),
        transaction("250 2.0.0 OK first"),
        vec![step(
            "MAIL FROM:",
            &[
                "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
                "{close}",
            ],
        )],
    ])])
    .await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::None), PoolSettings::default());

    let first = fake_send(&fixture, &sender).await;
    let error = fake_send(&fixture, &sender).await.expect_err("432");

    assert!(first.is_ok(), "{first:?}");
    assert_eq!(error.kind(), "concurrency_limit", "{error}");
    assert_eq!(error.code(), Some(432));
    let received = fake.received();
    assert_eq!(
        received.len(),
        1,
        "sent again on a new connection: {received:?}"
    );
}

#[tokio::test]
async fn fake_send_as_denied_keeps_connection() {
    let fixture = Fixture::new(starttls()).await;
    let denied = "554 5.2.252 SendAsDenied; noreply@example.test not allowed to send as \
                  ceo@example.test; STOREDRV.Submission.Exception:SendAsDeniedException";
    let fake = FakeSmtp::start(vec![script(vec![
        signed_in(),
        transaction(denied),
        transaction("250 2.0.0 OK <queued>"),
    ])])
    .await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::None), PoolSettings::default());

    let first = fake_send(&fixture, &sender)
        .await
        .expect_err("SendAsDenied");
    let second = fake_send(&fixture, &sender).await;

    assert_eq!(first.kind(), "send_as_denied", "{first}");
    assert!(first.is_permanent());
    assert!(!first.affects_account());
    assert_eq!(first.code(), Some(554));
    assert_eq!(first.enhanced(), Some("5.2.252"));
    assert!(second.is_ok(), "{second:?}");
    let received = fake.received();
    assert_eq!(
        received.len(),
        1,
        "the connection was not reused: {received:?}"
    );
    assert_eq!(data_ends(&received[0]), 2);
}

#[tokio::test]
async fn fake_concurrency_limit_is_transient() {
    let fixture = Fixture::new(starttls()).await;
    let limit = "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded";
    let fake = FakeSmtp::start(vec![script(vec![signed_in(), transaction(limit)])]).await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::None), PoolSettings::default());

    let error = fake_send(&fixture, &sender).await.expect_err("432");

    assert_eq!(error.kind(), "concurrency_limit", "{error}");
    assert!(error.is_transient());
    assert_eq!(error.code(), Some(432));
    assert_eq!(error.enhanced(), Some("4.3.2"));
    assert!(error.hint().is_some());
}

#[tokio::test]
async fn fake_not_authenticated_is_permanent() {
    let fixture = Fixture::new(starttls()).await;
    let fake = FakeSmtp::start(vec![script(vec![
        signed_in(),
        vec![
            step(
                "MAIL FROM:",
                &["530 5.7.57 Client not authenticated to send mail."],
            ),
            step("RSET", &["250 2.0.0 Resetting"]),
        ],
    ])])
    .await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::None), PoolSettings::default());

    let error = fake_send(&fixture, &sender).await.expect_err("530");

    assert_eq!(error.kind(), "not_authenticated", "{error}");
    assert!(error.is_permanent());
    assert_eq!(error.enhanced(), Some("5.7.57"));
}

#[tokio::test]
async fn fake_partial_recipients_reported() {
    let fixture = Fixture::new(starttls()).await;
    let fake = FakeSmtp::start(vec![script(vec![
        signed_in(),
        vec![
            step("MAIL FROM:", &["250 2.1.0 Sender OK"]),
            step("RCPT TO:<BOB@", &["250 2.1.5 Recipient OK"]),
            step(
                "RCPT TO:<NOBODY@",
                &["550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found"],
            ),
            step("DATA", &["354 Start mail input"]),
            step(".", &["250 2.0.0 OK <queued>"]),
        ],
        vec![
            step("MAIL FROM:", &["250 2.1.0 Sender OK"]),
            step("RCPT TO:", &["550 5.1.10 Recipient not found"]),
            step("RCPT TO:", &["450 4.2.1 Try again later"]),
            step("RSET", &["250 2.0.0 Resetting"]),
        ],
    ])])
    .await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::None), PoolSettings::default());
    let message = message(&fixture.user, "bob@example.test", "partial");
    let partial = [
        "bob@example.test".to_owned(),
        "nobody@example.invalid".to_owned(),
    ];
    let none = [
        "nobody@example.invalid".to_owned(),
        "later@example.test".to_owned(),
    ];

    let accepted = within(sender.send(&fixture.user, &partial, &message))
        .await
        .expect("delivered to bob");
    let error = within(sender.send(&fixture.user, &none, &message))
        .await
        .expect_err("no recipient accepted");

    assert_eq!(accepted.code, 250);
    assert_eq!(accepted.rejected_recipients.len(), 1);
    let (rejected, reply) = &accepted.rejected_recipients[0];
    assert_eq!(rejected, "nobody@example.invalid");
    assert_eq!(reply.code, 550);
    assert_eq!(reply.enhanced.as_deref(), Some("5.1.10"));
    assert_eq!(error.kind(), "recipients_rejected", "{error}");
    assert!(
        error.is_permanent(),
        "one of the two rejections is permanent"
    );
    let received = fake.received();
    assert_eq!(data_ends(&received[0]), 1, "{received:?}");
    assert_eq!(received[0].last().map(String::as_str), Some("RSET"));
}

#[tokio::test]
async fn fake_421_on_reused_connection_resent() {
    let fixture = Fixture::new(starttls()).await;
    let fake = FakeSmtp::start(vec![
        script(vec![
            signed_in(),
            transaction("250 2.0.0 OK first"),
            vec![step(
                "MAIL FROM:",
                &[
                    "421 4.3.2 Service not available, closing transmission channel",
                    "{close}",
                ],
            )],
        ]),
        script(vec![signed_in(), transaction("250 2.0.0 OK second")]),
    ])
    .await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::None), PoolSettings::default());

    let first = fake_send(&fixture, &sender).await;
    let second = fake_send(&fixture, &sender).await;

    assert!(first.is_ok(), "{first:?}");
    assert!(second.is_ok(), "{second:?}");
    let received = fake.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(commands(&received[0], "MAIL"), 2);
    assert_eq!(data_ends(&received[0]), 1);
    assert_eq!(data_ends(&received[1]), 1);
    assert_eq!(fixture.refreshes(), 1.0, "the cached token signs in again");
}

/// The server replies to the first command on a reused connection with
/// `221 Idle timeout` and closes, as a server does whose idle timeout
/// passed first.
#[tokio::test]
async fn fake_221_on_reuse_opens_new_connection() {
    let fixture = Fixture::new(starttls()).await;
    let fake = FakeSmtp::start(vec![
        script(vec![
            signed_in(),
            transaction("250 2.0.0 OK first"),
            vec![step(
                "MAIL FROM:",
                &["221 2.0.0 Idle timeout, closing connection", "{close}"],
            )],
        ]),
        script(vec![signed_in(), transaction("250 2.0.0 OK second")]),
    ])
    .await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::None), PoolSettings::default());

    let first = fake_send(&fixture, &sender).await;
    let second = fake_send(&fixture, &sender).await;

    assert!(first.is_ok(), "{first:?}");
    assert!(second.is_ok(), "{second:?}");
    let received = fake.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(commands(&received[0], "MAIL"), 2, "{received:?}");
    assert_eq!(data_ends(&received[0]), 1);
    assert_eq!(data_ends(&received[1]), 1);
}

#[tokio::test]
async fn fake_close_after_data_is_ambiguous() {
    let fixture = Fixture::new(starttls()).await;
    let fake = FakeSmtp::start(vec![script(vec![
        signed_in(),
        transaction("250 2.0.0 OK first"),
        transaction("{close}"),
    ])])
    .await;
    let sender = fixture.sender_via(fake_server(&fake, Tls::None), PoolSettings::default());

    let first = fake_send(&fixture, &sender).await;
    let error = fake_send(&fixture, &sender)
        .await
        .expect_err("no reply to the data");

    assert!(first.is_ok(), "{first:?}");
    assert_eq!(error.kind(), "ambiguous", "{error}");
    assert!(error.is_transient());
    assert!(error.hint().unwrap().contains("same Message-ID"));
    let received = fake.received();
    assert_eq!(
        received.len(),
        1,
        "the message was sent again: {received:?}"
    );
    assert_eq!(data_ends(&received[0]), 2);
}
