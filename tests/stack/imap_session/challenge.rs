//! The XOAUTH2 error challenge on servers without SASL-IR, replayed from
//! Gmail and Yandex transcripts on a loopback fake server. The tests check
//! the exact bytes sent and that nothing is pipelined before the tagged
//! reply. They also check the classification of the failure, and the
//! timeout when the tagged reply never comes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::*;

/// A greeting without SASL-IR, so the initial response waits for `+`.
const GREETING_WITHOUT_SASL_IR: &str = "* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] fake ready";

/// Gmail's challenge `{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`.
const GMAIL_400: &str = "+ eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==";

/// Gmail's challenge `{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`.
const GMAIL_401: &str = "+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==";

const YANDEX_NO: &str =
    "{tag} NO [AUTHENTICATIONFAILED] AUTHENTICATE invalid credentials or IMAP is disabled";

fn connector_with(fixture: &Fixture, fake: &FakeImap, response: Duration) -> Connector {
    let timeouts = Timeouts {
        response,
        done: Duration::from_secs(1),
    };
    fixture
        .connector_via(fake.port, Tls::None)
        .with_timeouts(timeouts)
}

/// Returns the base64 XOAUTH2 initial response, built here rather than by
/// the product's encoder.
fn expected_response(user: &str, token: &str) -> String {
    STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

#[tokio::test]
async fn challenge_400_without_sasl_ir_is_configuration() {
    let fixture = Fixture::new(implicit()).await;
    let script = vec![
        step("AUTHENTICATE XOAUTH2", &["+"]),
        step("", &[GMAIL_400]),
        step(
            "",
            &["{tag} NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"],
        ),
    ];
    let fake = FakeImap::start(GREETING_WITHOUT_SASL_IR, script).await;
    let token = fixture.tokens.access_token().await.unwrap();

    let error = within(connector_with(&fixture, &fake, Duration::from_secs(5)).connect())
        .await
        .unwrap_err();

    let initial = expected_response(&fixture.user, token.expose());
    assert_eq!(
        fake.received_text(),
        format!("A0001 AUTHENTICATE XOAUTH2\r\n{initial}\r\n\r\n"),
        "expected the command, the initial response after `+`, and one empty line"
    );
    assert_eq!(error.kind(), "auth_configuration", "{error}");
    assert!(!error.is_transient());
    let text = format!("{error} {error:?}");
    assert!(text.contains(r#"status "400""#), "{text}");
    assert!(
        text.contains(r#"scope "https://mail.google.com/""#),
        "{text}"
    );
    assert!(text.contains("Invalid credentials (Failure)"), "{text}");
    assert!(!text.contains(token.expose()), "{text}");
    assert!(!text.contains(&initial), "{text}");
    assert_eq!(fixture.refreshes(), 1.0, "a 400 challenge forced a refresh");
    assert_eq!(fixture.imap_failures("auth_configuration"), 1.0);
}

#[tokio::test]
async fn challenge_401_without_sasl_ir_refreshes_once() {
    let fixture = Fixture::new(implicit()).await;
    let script = vec![
        step("AUTHENTICATE XOAUTH2", &["+"]),
        step("", &[GMAIL_401]),
        step(
            "",
            &["{tag} NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"],
        ),
        step("AUTHENTICATE XOAUTH2", &["+"]),
        step("", &["{tag} OK signed in"]),
        step("CAPABILITY", &["* CAPABILITY IMAP4rev1", "{tag} OK done"]),
    ];
    let fake = FakeImap::start(GREETING_WITHOUT_SASL_IR, script).await;
    let rejected = fixture.tokens.access_token().await.unwrap();

    within(connector_with(&fixture, &fake, Duration::from_secs(5)).connect())
        .await
        .expect("sign-in with the refreshed token");

    let fresh = fixture.tokens.access_token().await.unwrap();
    assert_ne!(fresh, rejected);
    let (first, second) = (
        expected_response(&fixture.user, rejected.expose()),
        expected_response(&fixture.user, fresh.expose()),
    );
    assert_eq!(
        fake.received_text(),
        format!(
            "A0001 AUTHENTICATE XOAUTH2\r\n{first}\r\n\r\n\
             A0002 AUTHENTICATE XOAUTH2\r\n{second}\r\nM0001 CAPABILITY\r\n"
        )
    );
    assert_eq!(fixture.refreshes(), 2.0, "expected one forced refresh");
    assert_eq!(fixture.imap_failures("token_rejected"), 1.0);
}

/// The Yandex trace: no error challenge, and a tagged `NO` that comes
/// late. A client that pipelines its next command before the tagged
/// reply, as async-imap once did, sends `CAPABILITY` meanwhile and
/// reports the sign-in as successful.
#[tokio::test]
async fn late_tagged_no_without_sasl_ir_not_pipelined() {
    let fixture = Fixture::new(implicit()).await;
    let script = vec![
        step("AUTHENTICATE XOAUTH2", &["+"]),
        step("", &["{sleep 300}", YANDEX_NO]),
        step("AUTHENTICATE XOAUTH2", &["+"]),
        step("", &["{sleep 300}", YANDEX_NO]),
    ];
    let fake = FakeImap::start(GREETING_WITHOUT_SASL_IR, script).await;
    let rejected = fixture.tokens.access_token().await.unwrap();

    let error = within(connector_with(&fixture, &fake, Duration::from_secs(5)).connect())
        .await
        .unwrap_err();

    let fresh = fixture.tokens.access_token().await.unwrap();
    let (first, second) = (
        expected_response(&fixture.user, rejected.expose()),
        expected_response(&fixture.user, fresh.expose()),
    );
    assert_eq!(
        fake.received_text(),
        format!(
            "A0001 AUTHENTICATE XOAUTH2\r\n{first}\r\n\
             A0002 AUTHENTICATE XOAUTH2\r\n{second}\r\n"
        ),
        "a line was sent before the tagged reply, or the retry reused the token"
    );
    assert_eq!(error.kind(), "token_rejected", "{error}");
    assert!(!error.is_transient());
    assert!(error.to_string().contains("IMAP is disabled"), "{error}");
    assert_eq!(fixture.refreshes(), 2.0, "expected one forced refresh");
    assert_eq!(fixture.imap_failures("token_rejected"), 2.0);
}

#[tokio::test]
async fn missing_tagged_reply_after_challenge_times_out() {
    let fixture = Fixture::new(implicit()).await;
    let script = vec![
        step("AUTHENTICATE XOAUTH2", &["+"]),
        step("", &[GMAIL_401]),
        // The empty line gets no reply at all.
        step("", &[]),
    ];
    let fake = FakeImap::start(GREETING_WITHOUT_SASL_IR, script).await;
    let response_timeout = Duration::from_millis(800);

    let started = Instant::now();
    let error = within(connector_with(&fixture, &fake, response_timeout).connect())
        .await
        .unwrap_err();
    let waited = started.elapsed();

    assert_eq!(error.kind(), "timeout", "{error}");
    assert!(error.is_transient());
    assert!(
        error.to_string().contains("the reply to AUTHENTICATE"),
        "{error}"
    );
    assert!(waited >= response_timeout, "gave up after {waited:?}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    let received = fake.received();
    assert_eq!(received.len(), 3, "{received:?}");
    assert_eq!(received[2], "", "the challenge was not answered");
    assert_eq!(fixture.refreshes(), 1.0, "a timeout forced a refresh");
}
