//! `mailbridge::imap` sessions against the stack's Dovecot over both TLS
//! modes, with a real token provider. The tests cover fetching without
//! `\Seen`, every post-processing action seen from a second session, UID
//! searches, IDLE and broken connections, token refresh after a
//! rejection, and UTF-8 mailbox names. Loopback fake servers cover what Dovecot never
//! sends: a missing or rejected STARTTLS, and Microsoft 365's replies to
//! an identity that cannot open the mailbox.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use async_imap::Client;
use futures::TryStreamExt;
use mailbridge::auth::grant::{HttpSettings, TokenClient};
use mailbridge::auth::{ProviderSettings, StoredTokens, TokenProvider, TokenStore};
use mailbridge::config::{Account, Grant, Mechanism, OAuth2, Provider, Secret, Server, State, Tls};
use mailbridge::imap::{Connector, IdleEvent, PostProcess, Session, Timeouts, mailbox_name};
use mailbridge::telemetry::Metrics;
use oauth2::{AuthorizationCode, PkceCodeChallenge, RedirectUrl};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpStream;

use crate::support::{
    FakeImap, Forwarder, OAuthAuthenticator, access_token, authorization_redirect, http,
    mail_address, port, stack, step, tls_connect, unique, xoauth2_response,
};

const ACCOUNT: &str = "support";
const REDIRECT_URI: &str = "http://127.0.0.1:53682/callback";
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

// === Accounts and token providers ===

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
        connect_timeout: Duration::from_secs(5),
    }
}

fn implicit() -> Server {
    server(Tls::Implicit, port("STACK_IMAPS_PORT"))
}

fn starttls() -> Server {
    server(Tls::Starttls, port("STACK_IMAP_PORT"))
}

fn account(address: &str, login_hint: &str, imap: Server, mechanism: Mechanism) -> Account {
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
            mechanism,
        },
        imap: Some(imap),
        smtp: None,
    }
}

/// An account signed in by the authorization-code grant, with its own
/// state directory and metrics registry.
struct Fixture {
    _state: tempfile::TempDir,
    user: String,
    account: Account,
    tokens: TokenProvider,
    registry: Registry,
    metrics: Metrics,
}

impl Fixture {
    async fn new(imap: Server) -> Fixture {
        let user = mail_address(&unique("session"));
        Fixture::with_account(account(&user, &user, imap, Mechanism::Xoauth2)).await
    }

    async fn with_account(account: Account) -> Fixture {
        let state_dir = tempfile::tempdir().expect("temporary directory");
        let state = State {
            directory: state_dir.path().to_path_buf(),
        };
        sign_in(&account, &state).await;
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
            _state: state_dir,
            user: account.address.clone(),
            account,
            tokens,
            registry,
            metrics,
        }
    }

    fn connector(&self) -> Connector {
        Connector::new(
            ACCOUNT,
            &self.account,
            self.tokens.clone(),
            Some(self.metrics.clone()),
        )
        .expect("connector")
    }

    /// Returns a connector to `port` on loopback, such as a forwarder's.
    fn connector_via(&self, port: u16, tls: Tls) -> Connector {
        let mut account = self.account.clone();
        account.imap = Some(server(tls, port));
        Connector::new(
            ACCOUNT,
            &account,
            self.tokens.clone(),
            Some(self.metrics.clone()),
        )
        .expect("connector")
    }

    async fn session(&self) -> Session {
        let mut session = self.connector().connect().await.expect("connect");
        session.select("INBOX").await.expect("SELECT INBOX");
        session
    }

    fn metric(&self, series: &str) -> f64 {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encode metrics");
        let text = String::from_utf8(buffer).expect("metrics text is UTF-8");
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|value| value.parse().expect("sample value is a number"))
            .unwrap_or(0.0)
    }

    fn refreshes(&self) -> f64 {
        self.metric(&format!(
            r#"mailbridge_oauth2_token_refreshes_total{{account="{ACCOUNT}",result="success"}}"#
        ))
    }

    fn imap_failures(&self, reason: &str) -> f64 {
        self.metric(&format!(
            r#"mailbridge_auth_failures_total{{account="{ACCOUNT}",protocol="imap",reason="{reason}"}}"#
        ))
    }
}

/// Signs the account's login hint in by the authorization-code grant with
/// PKCE and stores only the refresh token, as `mailbridge authorize` does.
async fn sign_in(account: &Account, state: &State) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut url = url::Url::parse(&stack("STACK_OAUTH_AUTHORIZE_URL")).expect("authorize URL");
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &account.oauth2.client_id)
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("state", "state-1")
        .append_pair("scope", "imap smtp")
        .append_pair("code_challenge", challenge.as_str())
        .append_pair("code_challenge_method", "S256")
        .append_pair("login_hint", &account.login_hint);
    let location = authorization_redirect(url.as_str()).await;
    let redirect = url::Url::parse(&location).expect("Location is a URL");
    let code = redirect
        .query_pairs()
        .find(|(key, _)| key == "code")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| panic!("no code in {location}"));

    let preset = mailbridge::auth::resolve(ACCOUNT, account).expect("resolve endpoints");
    let client =
        TokenClient::new(ACCOUNT, account, &preset, HttpSettings::default()).expect("token client");
    let redirect_uri = RedirectUrl::new(REDIRECT_URI.to_owned()).expect("redirect URI");
    let update = client
        .exchange_code(AuthorizationCode::new(code), verifier, redirect_uri)
        .await
        .expect("code exchange");

    let mut tokens =
        StoredTokens::authorized(stack("STACK_OAUTH_TOKEN_URL"), update, SystemTime::now());
    tokens.access_token = None;
    tokens.access_token_expires_at = None;
    TokenStore::new(state)
        .save(ACCOUNT, &tokens)
        .expect("save tokens");
}

/// Revokes one access token (RFC 7009); its refresh token stays valid.
async fn revoke(token: &str) {
    let response = http()
        .post(stack("STACK_OAUTH_REVOKE_URL"))
        .form(&[("token", token)])
        .send()
        .await
        .expect("revocation request");
    assert!(response.status().is_success(), "{}", response.status());
}

// === A second session that watches the mailbox ===

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A plain async-imap session of the same user, to deliver mail and to
/// check what the session under test changed.
struct Observer {
    session: async_imap::Session<TlsStream>,
}

impl Observer {
    async fn new(user: &str) -> Observer {
        let tcp = TcpStream::connect((stack("STACK_IMAP_HOST"), port("STACK_IMAPS_PORT")))
            .await
            .expect("connect to the IMAPS port");
        let mut client = Client::new(tls_connect(tcp).await);
        client.read_response().await.expect("read greeting");
        let token = access_token(user).await;
        let authenticator = OAuthAuthenticator::new(xoauth2_response(user, &token));
        let session = client
            .authenticate("XOAUTH2", authenticator)
            .await
            .map_err(|(error, _)| error)
            .expect("observer sign-in");
        Observer { session }
    }

    /// Creates a mailbox given in UTF-8.
    async fn create(&mut self, mailbox: &str) {
        self.session
            .create(mailbox_name::encode(mailbox))
            .await
            .expect("CREATE");
    }

    /// Appends a mail to a mailbox given in UTF-8 and returns its body.
    async fn append(&mut self, mailbox: &str, subject: &str, flags: Option<&str>) -> Vec<u8> {
        let body = message(subject);
        self.session
            .append(mailbox_name::encode(mailbox), flags, None, &body)
            .await
            .expect("APPEND");
        body
    }

    async fn uids(&mut self, mailbox: &str) -> Vec<u32> {
        self.session
            .select(mailbox_name::encode(mailbox))
            .await
            .expect("observer SELECT");
        let mut uids: Vec<u32> = self
            .session
            .uid_search("ALL")
            .await
            .expect("UID SEARCH")
            .into_iter()
            .collect();
        uids.sort_unstable();
        uids
    }

    /// Returns the flags of a mail of INBOX, as the server writes them.
    async fn flags(&mut self, uid: u32) -> Vec<String> {
        self.session.select("INBOX").await.expect("observer SELECT");
        let fetches: Vec<_> = self
            .session
            .uid_fetch(uid.to_string(), "FLAGS")
            .await
            .expect("UID FETCH FLAGS")
            .try_collect()
            .await
            .expect("FETCH responses");
        let fetch = fetches
            .iter()
            .find(|fetch| fetch.uid == Some(uid))
            .unwrap_or_else(|| panic!("no FETCH for UID {uid}"));
        // `\Recent` depends on which session saw the mail first.
        fetch
            .flags()
            .map(|flag| format!("{flag:?}"))
            .filter(|flag| flag != "Recent")
            .collect()
    }
}

fn message(subject: &str) -> Vec<u8> {
    let id = unique("msg");
    format!(
        "From: Sender <sender@example.test>\r\nTo: support@example.test\r\n\
         Subject: {subject}\r\nMessage-ID: <{id}@example.test>\r\n\r\nBody of {subject}.\r\n"
    )
    .into_bytes()
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .expect("the test step hung")
}

// === Fetch ===

async fn assert_fetch_leaves_flags(imap: Server) {
    let fixture = Fixture::new(imap).await;
    let mut observer = Observer::new(&fixture.user).await;
    let first = observer.append("INBOX", "first", Some("(\\Flagged)")).await;
    let second = observer.append("INBOX", "second", None).await;

    let mut session = within(fixture.connector().connect())
        .await
        .expect("connect");
    let selected = within(session.select("INBOX")).await.expect("SELECT");
    let uids = within(session.uids_after(0)).await.expect("UID SEARCH");
    let fetched = within(session.fetch(&[uids[1], uids[0]]))
        .await
        .expect("FETCH");

    assert_eq!(selected.exists, 2);
    assert!(selected.uidnext.is_some_and(|next| next > uids[1]));
    assert_eq!(uids.len(), 2);
    assert_eq!(fetched.len(), 2);
    assert_eq!(fetched[0].uid, uids[0], "not sorted by UID");
    assert_eq!(fetched[0].body, first);
    assert_eq!(fetched[1].body, second);
    assert_eq!(fetched[0].size, Some(first.len() as u32));
    assert!(fetched[0].internal_date.is_some());
    assert!(fetched[0].flags.iter().any(|flag| flag == "\\Flagged"));
    for mail in &fetched {
        assert!(!mail.flags.iter().any(|flag| flag == "\\Seen"), "{mail:?}");
    }
    for uid in uids {
        let flags = observer.flags(uid).await;
        assert!(!flags.iter().any(|flag| flag.contains("Seen")), "{flags:?}");
    }
    session.logout().await;
}

#[tokio::test]
async fn session_fetch_implicit_tls_keeps_flags() {
    assert_fetch_leaves_flags(implicit()).await;
}

#[tokio::test]
async fn session_fetch_starttls_keeps_flags() {
    assert_fetch_leaves_flags(starttls()).await;
}

#[tokio::test]
async fn session_capabilities_after_sign_in() {
    let fixture = Fixture::new(implicit()).await;

    let session = within(fixture.connector().connect())
        .await
        .expect("connect");

    let capabilities = session.capabilities();
    assert!(capabilities.idle());
    assert!(capabilities.r#move());
    assert!(capabilities.uidplus());
    assert!(capabilities.has("IMAP4rev1"));
    assert_eq!(session.selected(), None);
}

#[tokio::test]
async fn session_uids_after_star_quirk() {
    let fixture = Fixture::new(implicit()).await;
    let mut observer = Observer::new(&fixture.user).await;
    observer.append("INBOX", "one", None).await;
    observer.append("INBOX", "two", None).await;
    let mut session = fixture.session().await;

    let all = within(session.uids_after(0)).await.expect("search all");
    let last = *all.last().expect("two mails");

    // `UID SEARCH UID n:*` with n above every UID matches the last mail.
    assert_eq!(all.len(), 2);
    assert_eq!(
        within(session.uids_after(last)).await.unwrap(),
        Vec::<u32>::new()
    );
    assert_eq!(within(session.uids_after(all[0])).await.unwrap(), [last]);
    assert_eq!(
        within(session.uids_after(last + 10)).await.unwrap(),
        Vec::<u32>::new()
    );
    assert_eq!(
        within(session.uids_after(u32::MAX)).await.unwrap(),
        Vec::<u32>::new()
    );
}

#[tokio::test]
async fn session_uids_unseen() {
    let fixture = Fixture::new(implicit()).await;
    let mut observer = Observer::new(&fixture.user).await;
    observer.append("INBOX", "seen", Some("(\\Seen)")).await;
    observer.append("INBOX", "unseen", None).await;
    let mut session = fixture.session().await;

    let all = within(session.uids_after(0)).await.unwrap();
    let unseen = within(session.uids_unseen()).await.unwrap();

    assert_eq!(unseen, [all[1]]);
}

#[tokio::test]
async fn session_search_before_select_rejected() {
    let fixture = Fixture::new(implicit()).await;
    let mut session = within(fixture.connector().connect()).await.unwrap();

    let error = session.uids_after(0).await.unwrap_err();

    assert_eq!(error.kind(), "not_selected");
}

// === Post-processing, seen from a second session ===

/// Appends two mails, post-processes the first and returns its UID, the
/// second's UID and the observer.
async fn post_process_first(fixture: &Fixture, action: PostProcess) -> (u32, u32, Observer) {
    let mut observer = Observer::new(&fixture.user).await;
    observer.append("INBOX", "processed", None).await;
    observer.append("INBOX", "untouched", None).await;
    let mut session = fixture.session().await;
    let uids = within(session.uids_after(0)).await.unwrap();

    within(session.post_process(&uids[..1], &action))
        .await
        .unwrap_or_else(|error| panic!("{action:?}: {error}"));
    session.logout().await;
    (uids[0], uids[1], observer)
}

#[tokio::test]
async fn post_process_mark_seen() {
    let fixture = Fixture::new(implicit()).await;

    let (first, second, mut observer) = post_process_first(&fixture, PostProcess::MarkSeen).await;

    assert!(observer.flags(first).await.iter().any(|f| f == "Seen"));
    assert!(!observer.flags(second).await.iter().any(|f| f == "Seen"));
}

#[tokio::test]
async fn post_process_add_keyword() {
    let fixture = Fixture::new(implicit()).await;
    let action = PostProcess::AddKeyword("$Published".to_owned());

    let (first, second, mut observer) = post_process_first(&fixture, action).await;

    let first_flags = observer.flags(first).await;
    assert!(
        first_flags.iter().any(|f| f.contains("$Published")),
        "{first_flags:?}"
    );
    assert!(!first_flags.iter().any(|f| f == "Seen"), "{first_flags:?}");
    let second_flags = observer.flags(second).await;
    assert!(!second_flags.iter().any(|f| f.contains("$Published")));
}

#[tokio::test]
async fn post_process_move_to_utf8_mailbox() {
    let fixture = Fixture::new(implicit()).await;
    let target = "Verarbeitet ✓ Grüße";
    Observer::new(&fixture.user).await.create(target).await;

    let action = PostProcess::Move(target.to_owned());
    let (_, second, mut observer) = post_process_first(&fixture, action).await;

    assert_eq!(observer.uids("INBOX").await, [second]);
    assert_eq!(observer.uids(target).await.len(), 1);
}

#[tokio::test]
async fn post_process_move_to_missing_mailbox() {
    let fixture = Fixture::new(implicit()).await;
    let mut observer = Observer::new(&fixture.user).await;
    observer.append("INBOX", "stays", None).await;
    let mut session = fixture.session().await;
    let uids = within(session.uids_after(0)).await.unwrap();

    let action = PostProcess::Move("Fehlt völlig".to_owned());
    let error = within(session.post_process(&uids, &action))
        .await
        .unwrap_err();

    assert_eq!(error.kind(), "mailbox_not_found", "{error}");
    assert!(error.to_string().contains("\"Fehlt völlig\""), "{error}");
    assert_eq!(observer.uids("INBOX").await, uids);
}

#[tokio::test]
async fn post_process_delete() {
    let fixture = Fixture::new(implicit()).await;

    let (_, second, mut observer) = post_process_first(&fixture, PostProcess::Delete).await;

    assert_eq!(observer.uids("INBOX").await, [second]);
}

#[tokio::test]
async fn post_process_delete_spares_other_deleted_mail() {
    let fixture = Fixture::new(implicit()).await;
    let mut observer = Observer::new(&fixture.user).await;
    observer
        .append("INBOX", "deleted by another client", Some("(\\Deleted)"))
        .await;
    observer.append("INBOX", "published", None).await;
    let mut session = fixture.session().await;
    let uids = within(session.uids_after(0)).await.unwrap();

    within(session.post_process(&uids[1..], &PostProcess::Delete))
        .await
        .unwrap();

    assert_eq!(observer.uids("INBOX").await, uids[..1]);
}

#[tokio::test]
async fn post_process_keep() {
    let fixture = Fixture::new(implicit()).await;

    let (first, second, mut observer) = post_process_first(&fixture, PostProcess::Keep).await;

    assert_eq!(observer.uids("INBOX").await, [first, second]);
    assert!(observer.flags(first).await.is_empty());
}

// === Mailbox names ===

#[tokio::test]
async fn session_selects_utf8_mailbox() {
    let fixture = Fixture::new(implicit()).await;
    let mailbox = "Entwürfe & Belege 📁";
    let mut observer = Observer::new(&fixture.user).await;
    observer.create(mailbox).await;
    let body = observer.append(mailbox, "draft", None).await;

    let mut session = within(fixture.connector().connect()).await.unwrap();
    let selected = within(session.select(mailbox))
        .await
        .expect("SELECT by UTF-8 name");
    let uids = within(session.uids_after(0)).await.unwrap();
    let fetched = within(session.fetch(&uids)).await.unwrap();

    assert_eq!(selected.exists, 1);
    assert_eq!(session.selected(), Some(mailbox));
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].body, body);
}

#[tokio::test]
async fn session_missing_mailbox_named() {
    let fixture = Fixture::new(implicit()).await;
    let mut session = within(fixture.connector().connect()).await.unwrap();

    let error = within(session.select("Gibt es nicht ä")).await.unwrap_err();

    assert_eq!(error.kind(), "mailbox_not_found", "{error}");
    assert!(error.to_string().contains("\"Gibt es nicht ä\""), "{error}");
    assert!(error.to_string().contains("127.0.0.1:"), "{error}");
    assert!(!error.is_transient());
}

// === IDLE ===

#[tokio::test]
async fn idle_returns_changed_on_append() {
    let fixture = Fixture::new(implicit()).await;
    let mut session = fixture.session().await;
    let mut observer = Observer::new(&fixture.user).await;

    let delivery = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        observer.append("INBOX", "pushed", None).await;
        Instant::now()
    });
    let event = within(session.idle(Duration::from_secs(60), Duration::from_secs(60))).await;
    let returned = Instant::now();
    let appended = delivery.await.expect("append task");

    assert_eq!(event.expect("IDLE"), IdleEvent::Changed);
    let delay = returned.saturating_duration_since(appended);
    assert!(
        delay < Duration::from_secs(2),
        "Changed came {delay:?} after APPEND"
    );
    assert_eq!(within(session.uids_after(0)).await.unwrap().len(), 1);
}

#[tokio::test]
async fn idle_times_out_then_idles_again() {
    let fixture = Fixture::new(starttls()).await;
    let mut session = fixture.session().await;
    let started = Instant::now();

    let first = within(session.idle(Duration::from_secs(1), Duration::from_secs(60))).await;
    let elapsed = started.elapsed();
    let second = within(session.idle(Duration::from_millis(500), Duration::from_secs(60))).await;

    assert_eq!(first.expect("first IDLE"), IdleEvent::Timeout);
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(second.expect("second IDLE"), IdleEvent::Timeout);
    assert!(
        session.last_activity() > started,
        "DONE's OK was not recorded"
    );
    within(session.noop(Duration::from_secs(5)))
        .await
        .expect("NOOP after IDLE");
}

#[tokio::test]
async fn idle_connection_cut_is_error() {
    let fixture = Fixture::new(implicit()).await;
    let forwarder = Forwarder::start((stack("STACK_IMAP_HOST"), port("STACK_IMAPS_PORT"))).await;
    let connector = fixture.connector_via(forwarder.port, Tls::Implicit);
    let mut session = within(connector.connect())
        .await
        .expect("connect through the forwarder");
    within(session.select("INBOX")).await.unwrap();

    let cut = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        forwarder.cut();
    };
    let idle = session.idle(Duration::from_secs(60), Duration::from_secs(60));
    let (result, ()) = within(async { tokio::join!(idle, cut) }).await;

    let error = result.expect_err("IDLE on a cut connection");
    assert!(
        matches!(error.kind(), "connection_lost" | "io"),
        "{}: {error}",
        error.kind()
    );
    assert!(error.is_transient());
}

#[tokio::test]
async fn idle_silent_connection_is_dead() {
    let fixture = Fixture::new(implicit()).await;
    let forwarder = Forwarder::start((stack("STACK_IMAP_HOST"), port("STACK_IMAPS_PORT"))).await;
    let timeouts = Timeouts {
        response: Duration::from_secs(5),
        done: Duration::from_secs(1),
    };
    let connector = fixture
        .connector_via(forwarder.port, Tls::Implicit)
        .with_timeouts(timeouts);
    let mut session = within(connector.connect()).await.unwrap();
    within(session.select("INBOX")).await.unwrap();
    let started = Instant::now();

    // The freeze comes after the continuation, so the liveness check and
    // DONE run into the silence.
    let freeze = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        forwarder.freeze();
    };
    let idle = session.idle(Duration::from_secs(60), Duration::from_secs(1));
    let (result, ()) = within(async { tokio::join!(idle, freeze) }).await;

    let error = result.expect_err("IDLE on a frozen connection");
    assert_eq!(error.kind(), "dead_connection", "{error}");
    assert!(error.is_transient());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2),
        "liveness and DONE took {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
}

#[tokio::test]
async fn noop_on_frozen_connection_is_dead() {
    let fixture = Fixture::new(implicit()).await;
    let forwarder = Forwarder::start((stack("STACK_IMAP_HOST"), port("STACK_IMAPS_PORT"))).await;
    let connector = fixture.connector_via(forwarder.port, Tls::Implicit);
    let mut session = within(connector.connect()).await.unwrap();
    within(session.noop(Duration::from_secs(5)))
        .await
        .expect("NOOP");
    forwarder.freeze();

    let error = within(session.noop(Duration::from_secs(1)))
        .await
        .unwrap_err();

    assert_eq!(error.kind(), "dead_connection", "{error}");
}

// === Tokens and mechanisms ===

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

// === Loopback fake servers ===

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
