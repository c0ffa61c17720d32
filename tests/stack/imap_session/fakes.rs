//! Loopback fake servers for what Dovecot never sends: a missing or refused
//! STARTTLS, Microsoft 365's replies to an identity that cannot open the
//! mailbox, servers without IDLE or UIDPLUS, and special-use mailboxes with
//! localized names.

use super::*;

/// Returns a connector in plaintext to a fake server, with the real
/// token provider of `fixture`.
fn fake_connector(fixture: &Fixture, fake: &FakeImap, tls: Tls) -> Connector {
    let timeouts = Timeouts {
        response: Duration::from_secs(5),
        done: Duration::from_secs(1),
    };
    fixture
        .connector_via(fake.port, tls)
        .with_timeouts(timeouts)
}

fn assert_no_authenticate(fake: &FakeImap) {
    let received = fake.received();
    assert!(
        !received
            .iter()
            .any(|line| line.to_ascii_uppercase().contains("AUTHENTICATE")),
        "sent {received:?}"
    );
}

#[tokio::test]
async fn starttls_missing_in_greeting_rejected() {
    let fixture = Fixture::new(starttls()).await;
    let greeting = "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] fake ready";
    let fake = FakeImap::start(greeting, Vec::new()).await;

    let error = within(fake_connector(&fixture, &fake, Tls::Starttls).connect())
        .await
        .unwrap_err();

    assert_eq!(error.kind(), "tls_required_unavailable", "{error}");
    assert!(!error.is_transient());
    assert_eq!(
        fake.received(),
        Vec::<String>::new(),
        "sent a line after the greeting"
    );
}

#[tokio::test]
async fn starttls_missing_in_capability_rejected() {
    let fixture = Fixture::new(starttls()).await;
    let script = vec![step(
        "CAPABILITY",
        &[
            "* CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2",
            "{tag} OK done",
        ],
    )];
    let fake = FakeImap::start("* OK fake ready", script).await;

    let error = within(fake_connector(&fixture, &fake, Tls::Starttls).connect())
        .await
        .unwrap_err();

    assert_eq!(error.kind(), "tls_required_unavailable", "{error}");
    assert_eq!(fake.received(), ["M0001 CAPABILITY"]);
}

#[tokio::test]
async fn starttls_refused_rejected() {
    let fixture = Fixture::new(starttls()).await;
    let greeting = "* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=XOAUTH2] fake ready";
    let script = vec![step("STARTTLS", &["{tag} NO TLS not available for now"])];
    let fake = FakeImap::start(greeting, script).await;

    let error = within(fake_connector(&fixture, &fake, Tls::Starttls).connect())
        .await
        .unwrap_err();

    assert_eq!(error.kind(), "tls_required_unavailable", "{error}");
    assert!(error.is_transient(), "a refusal may be temporary");
    assert!(error.to_string().contains("TLS not available"), "{error}");
    assert_no_authenticate(&fake);
    assert_eq!(fake.received(), ["M0001 STARTTLS"]);
}

/// Starts a fake server that accepts any AUTHENTICATE, lists
/// `capabilities` after sign-in and then follows `script`.
async fn signed_in_fake(capabilities: &str, script: Vec<crate::support::Step>) -> FakeImap {
    let greeting = "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] fake ready";
    let mut steps = vec![
        step("AUTHENTICATE XOAUTH2 ", &["{tag} OK signed in"]),
        step(
            "CAPABILITY",
            &[&format!("* CAPABILITY {capabilities}"), "{tag} OK done"],
        ),
    ];
    steps.extend(script);
    FakeImap::start(greeting, steps).await
}

fn select_ok() -> crate::support::Step {
    step(
        "SELECT",
        &[
            "* 1 EXISTS",
            "* OK [UIDVALIDITY 7] UIDs valid",
            "{tag} OK [READ-WRITE] done",
        ],
    )
}

#[tokio::test]
async fn not_connected_reply_is_access_denied() {
    let fixture = Fixture::new(implicit()).await;
    let script = vec![step(
        "SELECT",
        &[
            "{tag} BAD User is authenticated but not connected.",
            "* BYE Connection closed. 14",
        ],
    )];
    let fake = signed_in_fake("IMAP4rev1 IDLE UIDPLUS", script).await;
    let mut session = within(fake_connector(&fixture, &fake, Tls::None).connect())
        .await
        .expect("AUTHENTICATE succeeds");

    let error = within(session.select("INBOX")).await.unwrap_err();

    assert_eq!(error.kind(), "mailbox_access_denied", "{error}");
    let text = error.to_string();
    assert!(
        text.contains("User is authenticated but not connected"),
        "{text}"
    );
    assert!(text.contains("IMAP is enabled"), "{text}");
    assert!(text.contains(&fixture.user), "{text}");
}

#[tokio::test]
async fn bye_after_sign_in_is_access_denied() {
    let fixture = Fixture::new(implicit()).await;
    let script = vec![step("SELECT", &["* BYE Connection closed. 14", "{close}"])];
    let fake = signed_in_fake("IMAP4rev1 IDLE", script).await;
    let mut session = within(fake_connector(&fixture, &fake, Tls::None).connect())
        .await
        .unwrap();

    let error = within(session.select("INBOX")).await.unwrap_err();

    assert_eq!(error.kind(), "mailbox_access_denied", "{error}");
}

#[tokio::test]
async fn bye_after_select_is_bye() {
    let fixture = Fixture::new(implicit()).await;
    let script = vec![
        select_ok(),
        step("IDLE", &["* BYE Autologout; idle for too long", "{close}"]),
    ];
    let fake = signed_in_fake("IMAP4rev1 IDLE", script).await;
    let mut session = within(fake_connector(&fixture, &fake, Tls::None).connect())
        .await
        .unwrap();
    within(session.select("INBOX")).await.unwrap();

    let error = within(session.idle(Duration::from_secs(5), Duration::from_secs(5)))
        .await
        .unwrap_err();

    assert_eq!(error.kind(), "bye", "{error}");
    assert!(error.is_transient());
    assert!(error.to_string().contains("Autologout"), "{error}");
}

#[tokio::test]
async fn idle_without_capability_points_to_poll() {
    let fixture = Fixture::new(implicit()).await;
    let fake = signed_in_fake("IMAP4rev1 UIDPLUS", vec![select_ok()]).await;
    let mut session = within(fake_connector(&fixture, &fake, Tls::None).connect())
        .await
        .unwrap();
    within(session.select("INBOX")).await.unwrap();

    let error = within(session.idle(Duration::from_secs(5), Duration::from_secs(5)))
        .await
        .unwrap_err();

    assert_eq!(error.kind(), "unsupported", "{error}");
    assert!(error.to_string().contains("mode = \"poll\""), "{error}");
    assert!(!fake.received().iter().any(|line| line.ends_with("IDLE")));
}

#[tokio::test]
async fn move_without_uidplus_refused() {
    let fixture = Fixture::new(implicit()).await;
    let fake = signed_in_fake("IMAP4rev1 IDLE", vec![select_ok()]).await;
    let mut session = within(fake_connector(&fixture, &fake, Tls::None).connect())
        .await
        .unwrap();
    within(session.select("INBOX")).await.unwrap();

    let moved = session
        .post_process(&[1], &PostProcess::Move("Archive".into()))
        .await;
    let deleted = session.post_process(&[1], &PostProcess::Delete).await;

    assert_eq!(moved.unwrap_err().kind(), "unsupported");
    let error = deleted.unwrap_err();
    assert_eq!(error.kind(), "unsupported");
    assert!(error.to_string().contains("UIDPLUS"), "{error}");
    let received = fake.received();
    assert!(
        !received
            .iter()
            .any(|line| line.contains("EXPUNGE") || line.contains("COPY")),
        "{received:?}"
    );
}

#[tokio::test]
async fn undecodable_challenge_answered_once() {
    let fixture = Fixture::new(implicit()).await;
    let greeting = "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] fake ready";
    let script = vec![
        step("AUTHENTICATE XOAUTH2 ", &["+ this is not base64!"]),
        step(
            "",
            &["{tag} NO [UNAVAILABLE] Temporary authentication failure."],
        ),
    ];
    let fake = FakeImap::start(greeting, script).await;

    let error = within(fake_connector(&fixture, &fake, Tls::None).connect())
        .await
        .unwrap_err();

    assert_eq!(error.kind(), "auth_unavailable", "{error}");
    assert!(error.is_transient());
    let received = fake.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(
        received[1], "",
        "the challenge was not answered with an empty line"
    );
    assert_eq!(fixture.imap_failures("auth_unavailable"), 1.0);
    assert_eq!(
        fixture.refreshes(),
        1.0,
        "an unavailable server forced a refresh"
    );
}

#[tokio::test]
async fn unavailable_reply_not_refreshed() {
    let fixture = Fixture::new(implicit()).await;
    let greeting = "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] fake ready";
    let reply = "{tag} NO [UNAVAILABLE] Temporary authentication failure.";
    let fake = FakeImap::start(greeting, vec![step("AUTHENTICATE XOAUTH2 ", &[reply])]).await;

    let error = within(fake_connector(&fixture, &fake, Tls::None).connect())
        .await
        .unwrap_err();

    assert_eq!(error.kind(), "auth_unavailable", "{error}");
    assert!(error.is_transient());
    assert!(
        error
            .to_string()
            .contains("Temporary authentication failure"),
        "{error}"
    );
    assert_eq!(fake.received().len(), 1, "AUTHENTICATE was retried");
    assert_eq!(fixture.refreshes(), 1.0);
}

#[tokio::test]
async fn sasl_response_never_in_error() {
    let fixture = Fixture::new(implicit()).await;
    let greeting = "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] fake ready";
    let script = vec![step(
        "AUTHENTICATE XOAUTH2 ",
        &["{tag} BAD mechanism disabled"],
    )];
    let fake = FakeImap::start(greeting, script).await;
    let token = fixture.tokens.access_token().await.unwrap();

    let error = within(fake_connector(&fixture, &fake, Tls::None).connect())
        .await
        .unwrap_err();

    assert_eq!(error.kind(), "authenticate", "{error}");
    let received = fake.received();
    let line = &received[0];
    let initial = line.rsplit(' ').next().unwrap();
    assert!(line.starts_with("A0001 AUTHENTICATE XOAUTH2 "), "{line}");
    assert!(initial.len() > 100, "the placeholder was sent: {line}");
    let text = format!("{error} {error:?}");
    assert!(!text.contains(initial), "{text}");
    assert!(!text.contains(token.expose()), "{text}");
}

#[tokio::test]
async fn initial_response_after_continuation_without_sasl_ir() {
    let fixture = Fixture::new(implicit()).await;
    let greeting = "* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] fake ready";
    let script = vec![
        step("AUTHENTICATE XOAUTH2", &["+ "]),
        step("", &["{tag} OK signed in"]),
        step("CAPABILITY", &["* CAPABILITY IMAP4rev1", "{tag} OK done"]),
    ];
    let fake = FakeImap::start(greeting, script).await;

    within(fake_connector(&fixture, &fake, Tls::None).connect())
        .await
        .expect("sign-in after the continuation");

    let received = fake.received();
    assert_eq!(received[0], "A0001 AUTHENTICATE XOAUTH2");
    let decoded = base64_decode(&received[1]);
    let expected_start = format!("user={}\x01auth=Bearer ", fixture.user);
    assert!(decoded.starts_with(&expected_start), "{decoded:?}");
    assert!(decoded.ends_with("\x01\x01"), "{decoded:?}");
}

#[tokio::test]
async fn oauthbearer_used_when_xoauth2_missing() {
    let fixture = Fixture::new(implicit()).await;
    let greeting = "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=OAUTHBEARER] fake ready";
    let script = vec![
        step("AUTHENTICATE OAUTHBEARER ", &["{tag} OK signed in"]),
        step("CAPABILITY", &["* CAPABILITY IMAP4rev1", "{tag} OK done"]),
    ];
    let fake = FakeImap::start(greeting, script).await;

    within(fake_connector(&fixture, &fake, Tls::None).connect())
        .await
        .expect("OAUTHBEARER sign-in");

    let received = fake.received();
    let initial = received[0].rsplit(' ').next().unwrap();
    let expected_start = format!("n,a={},\x01auth=Bearer ", fixture.user);
    assert!(base64_decode(initial).starts_with(&expected_start));
}

#[tokio::test]
async fn no_oauth2_mechanism_rejected() {
    let fixture = Fixture::new(implicit()).await;
    let greeting = "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=LOGIN] fake ready";
    let fake = FakeImap::start(greeting, Vec::new()).await;

    let error = within(fake_connector(&fixture, &fake, Tls::None).connect())
        .await
        .unwrap_err();

    assert_eq!(error.kind(), "no_mechanism", "{error}");
    assert!(
        error.to_string().contains("offered: PLAIN, LOGIN"),
        "{error}"
    );
    assert_eq!(fake.received(), Vec::<String>::new());
}

#[tokio::test]
async fn rejection_then_close_retries_on_new_connection() {
    let fixture = Fixture::new(implicit()).await;
    let greeting = "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] fake ready";
    let challenge = "+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=";
    let script = vec![
        step("AUTHENTICATE XOAUTH2 ", &[challenge]),
        step(
            "",
            &[
                "{tag} NO [AUTHENTICATIONFAILED] Authentication failed.",
                "{close}",
            ],
        ),
        step("AUTHENTICATE XOAUTH2 ", &["{tag} OK signed in"]),
        step("CAPABILITY", &["* CAPABILITY IMAP4rev1", "{tag} OK done"]),
    ];
    let fake = FakeImap::start(greeting, script).await;

    within(fake_connector(&fixture, &fake, Tls::None).connect())
        .await
        .expect("sign-in on a new connection");

    let received = fake.received();
    assert_eq!(received.len(), 4, "{received:?}");
    assert_ne!(
        received[0], received[2],
        "the retry reused the rejected token"
    );
    assert_eq!(fixture.refreshes(), 2.0);
    assert_eq!(fixture.imap_failures("token_rejected"), 1.0);
}

#[test]
fn session_futures_are_send() {
    fn assert_send<T: Send>(_: T) {}

    // Type-checked only: the watcher runs these futures in spawned tasks.
    let _ = |connector: Connector, mut session: Session| {
        assert_send(async move {
            let mut fresh = connector.connect().await.unwrap();
            let _ = fresh.select("INBOX").await;
            let _ = fresh.fetch(&[1]).await;
            let _ = fresh.post_process(&[1], &PostProcess::MarkSeen).await;
            let _ = session
                .idle(Duration::from_secs(1), Duration::from_secs(1))
                .await;
            session.logout().await;
        });
    };
}

fn base64_decode(text: &str) -> String {
    use base64::Engine as _;

    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|error| panic!("{text:?} is not base64: {error}"));
    String::from_utf8(bytes).expect("SASL response is UTF-8")
}

/// The LIST reply of a German Exchange mailbox, whose special-use
/// mailboxes have localized names.
const EXCHANGE_LIST: [&str; 9] = [
    "* LIST (\\HasChildren) \"/\" INBOX",
    "* LIST (\\HasNoChildren) \"/\" \"INBOX/&ZeVnLIqe-\"",
    "* LIST (\\HasNoChildren \\Trash) \"/\" \"Gel&APY-schte Elemente\"",
    "* LIST (\\HasNoChildren \\Drafts) \"/\" \"Entw&APw-rfe\"",
    "* LIST (\\HasNoChildren \\Sent) \"/\" \"Gesendete Elemente\"",
    "* LIST (\\HasNoChildren) \"/\" \"Rechnungen &- Belege\"",
    "* LIST (\\HasNoChildren) \"/\" \"Projekte &2D3cwQ-\"",
    "* LIST (\\HasNoChildren) \"/\" \"&BBIERQQ+BDQETwRJBDgENQ-/&BCEERwQ1BEIEMA-\"",
    "{tag} OK LIST completed.",
];

#[tokio::test]
async fn special_use_found_by_plain_list_without_capability() {
    let fixture = Fixture::new(implicit()).await;
    let script = vec![step("LIST \"\" \"*\"", &EXCHANGE_LIST)];
    let fake = signed_in_fake("IMAP4rev1 IDLE MOVE", script).await;
    let mut session = within(fake_connector(&fixture, &fake, Tls::None).connect())
        .await
        .unwrap();

    let found = within(session.find_special_use("move_to", "\\Trash"))
        .await
        .unwrap();

    assert_eq!(found, "Gelöschte Elemente");
    let received = fake.received();
    assert!(
        received.last().unwrap().ends_with(" LIST \"\" \"*\""),
        "{received:?}"
    );
}

#[tokio::test]
async fn special_use_listed_by_selection_option_when_offered() {
    let fixture = Fixture::new(implicit()).await;
    let script = vec![step(
        "LIST (SPECIAL-USE) \"\" \"*\"",
        &[
            "* LIST (\\HasNoChildren \\Drafts) \"/\" \"Entw&APw-rfe\"",
            "{tag} OK LIST completed.",
        ],
    )];
    let fake = signed_in_fake("IMAP4rev1 IDLE SPECIAL-USE", script).await;
    let mut session = within(fake_connector(&fixture, &fake, Tls::None).connect())
        .await
        .unwrap();

    let found = within(session.find_special_use("move_to", "\\Drafts"))
        .await
        .unwrap();

    assert_eq!(found, "Entwürfe");
}

#[tokio::test]
async fn special_use_missing_names_key_and_creates_nothing() {
    let fixture = Fixture::new(implicit()).await;
    let script = vec![step("LIST \"\" \"*\"", &EXCHANGE_LIST)];
    let fake = signed_in_fake("IMAP4rev1 IDLE MOVE", script).await;
    let mut session = within(fake_connector(&fixture, &fake, Tls::None).connect())
        .await
        .unwrap();

    let error = within(session.find_special_use("move_to", "\\Junk"))
        .await
        .unwrap_err();

    assert_eq!(error.kind(), "special_use_not_found", "{error}");
    let text = error.to_string();
    assert!(text.contains("\\Junk that move_to names"), "{text}");
    assert!(!error.is_transient());
    let received = fake.received();
    assert!(
        !received.iter().any(|line| line.contains("CREATE")),
        "{received:?}"
    );
}
