//! `mailbridge::imap` sessions against the stack's Dovecot over both TLS
//! modes, with a real token provider. The tests cover fetching without
//! `\Seen`, every post-processing action seen from a second session, UID
//! searches, IDLE and broken connections, token refresh after a
//! rejection, and UTF-8 mailbox names. Loopback fake servers cover what Dovecot never
//! sends: a missing or rejected STARTTLS, and Microsoft 365's replies to
//! an identity that cannot open the mailbox.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_imap::Client;
use futures::TryStreamExt;
use mailbridge::auth::{ProviderSettings, TokenProvider};
use mailbridge::config::{Account, Grant, Mechanism, OAuth2, Provider, Secret, Server, State, Tls};
use mailbridge::imap::{Connector, IdleEvent, PostProcess, Session, Timeouts, mailbox_name};
use mailbridge::telemetry::Metrics;
use prometheus::Registry;
use tokio::net::TcpStream;

use crate::support::{
    FakeImap, Forwarder, OAuthAuthenticator, access_token, http, mail_address, port, stack, step,
    tls_connect, unique, xoauth2_response,
};

mod challenge;
mod fakes;
mod fetch;
mod idle;
mod post_process;
mod tokens;

const ACCOUNT: &str = "support";
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
        danger_accept_invalid_certs: false,
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
        crate::signin::sample(&self.registry, series)
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
