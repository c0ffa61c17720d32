//! Stack addresses, TLS trust of the test CA, tokens and SASL strings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_imap::Authenticator;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mailbridge::auth::{AccessToken, ErrorChallenge, InitialResponse, error_reply};
use mailbridge::config::Mechanism;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Reads a `STACK_*` address: from the environment when set, else from the
/// file that `scripts/stack up` writes.
pub fn stack(name: &str) -> String {
    if let Ok(value) = std::env::var(name)
        && !value.is_empty()
    {
        return value;
    }
    let file = stack_env_file();
    stack_file_vars(&file)
        .get(name)
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} is not set and {} has no value for it: run `scripts/stack up` first",
                file.display()
            )
        })
}

/// Finds `.stack/env` in the working directory, which cargo sets to the
/// package root of the checkout under test, before the directory the test
/// binary was built from.
fn stack_env_file() -> PathBuf {
    let relative = Path::new(".stack/env");
    if relative.exists() {
        return relative.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn stack_file_vars(file: &Path) -> &'static HashMap<String, String> {
    static VARS: OnceLock<HashMap<String, String>> = OnceLock::new();
    VARS.get_or_init(|| {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        text.lines()
            .filter_map(|line| line.strip_prefix("export "))
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.to_string(), value.trim_matches('\'').to_string()))
            .collect()
    })
}

pub fn port(name: &str) -> u16 {
    let value = stack(name);
    value
        .parse()
        .unwrap_or_else(|_| panic!("{name}={value} is not a port number"))
}

/// Returns a name that no earlier test run used, for users, topics and queues.
pub fn unique(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{nanos:x}-{count}")
}

pub fn mail_address(local_part: &str) -> String {
    format!("{local_part}@{}", stack("STACK_MAIL_DOMAIN"))
}

/// TLS client configuration that trusts only the stack's test CA.
pub fn tls_config() -> Arc<ClientConfig> {
    let pem = std::fs::read(stack("STACK_CA_FILE")).expect("read the stack's CA file");
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.expect("parse the CA certificate"))
            .expect("add the CA certificate");
    }
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

pub async fn tls_connect(stream: TcpStream) -> TlsStream<TcpStream> {
    let name = ServerName::try_from("localhost").expect("valid server name");
    TlsConnector::from(tls_config())
        .connect(name, stream)
        .await
        .expect("TLS handshake with the stack's certificate")
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("build HTTP client")
}

/// Requests the authorization URL as a browser would, without following
/// the redirect, and returns the `Location` it points to.
pub async fn authorization_redirect(url: &str) -> String {
    let response = http().get(url).send().await.expect("authorize request");
    assert!(
        response.status().is_redirection(),
        "authorize returned {}",
        response.status()
    );
    let location = response.headers()["location"].to_str().expect("Location");
    location.to_owned()
}

/// Returns the OAuth2 server's RFC 7662 introspection of `token`.
pub async fn introspect(token: &str) -> Value {
    http()
        .post(stack("STACK_OAUTH_INTROSPECT_URL"))
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspection request")
        .json()
        .await
        .expect("introspection response is JSON")
}

/// Obtains an access token for `user` by the client credentials grant.
pub async fn access_token(user: &str) -> String {
    let response = http()
        .post(stack("STACK_OAUTH_TOKEN_URL"))
        .basic_auth(
            stack("STACK_OAUTH_CLIENT_ID"),
            Some(stack("STACK_OAUTH_CLIENT_SECRET")),
        )
        .form(&[
            ("grant_type", "client_credentials"),
            ("username", user),
            ("scope", "imap smtp"),
        ])
        .send()
        .await
        .expect("token request");
    assert!(
        response.status().is_success(),
        "token endpoint returned {}",
        response.status()
    );
    let body: Value = response.json().await.expect("token response is JSON");
    body["access_token"]
        .as_str()
        .expect("access_token in token response")
        .to_string()
}

/// Builds the product's XOAUTH2 initial response for `user` and `token`.
pub fn xoauth2_response(user: &str, token: &str) -> InitialResponse {
    InitialResponse::new(Mechanism::Xoauth2, user, &AccessToken::new(token))
        .expect("valid SASL user")
}

/// Builds the product's OAUTHBEARER initial response (RFC 7628 section 3.1).
pub fn oauthbearer_response(user: &str, token: &str) -> InitialResponse {
    InitialResponse::new(Mechanism::Oauthbearer, user, &AccessToken::new(token))
        .expect("valid SASL user")
}

/// An IMAP authenticator that sends the product's initial response to the
/// first (empty) challenge and answers any later challenge, which is the
/// server's error report, with the product's error reply, so that the
/// tagged NO follows.
pub struct OAuthAuthenticator {
    response: InitialResponse,
    sent: bool,
    pub error_challenges: Arc<Mutex<Vec<ErrorChallenge>>>,
}

impl OAuthAuthenticator {
    pub fn new(response: InitialResponse) -> Self {
        Self {
            response,
            sent: false,
            error_challenges: Arc::default(),
        }
    }
}

impl Authenticator for OAuthAuthenticator {
    type Response = Vec<u8>;

    fn process(&mut self, challenge: &[u8]) -> Vec<u8> {
        if !self.sent {
            self.sent = true;
            return self.response.expose_bytes().to_vec();
        }
        // async-imap hands over the decoded challenge; the parser takes the
        // base64 text as it appears on the wire.
        let parsed = ErrorChallenge::parse(&BASE64.encode(challenge));
        self.error_challenges.lock().unwrap().push(parsed);
        error_reply(self.response.mechanism()).to_vec()
    }
}

/// A loopback TCP forwarder to `target` that a test can cut, refuse or
/// freeze, to break a connection the way a network does.
pub struct Forwarder {
    pub port: u16,
    frozen: Arc<std::sync::atomic::AtomicBool>,
    refusing: Arc<std::sync::atomic::AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
    relays: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Forwarder {
    /// Listens on 127.0.0.1 and relays every connection to `target`.
    pub async fn start(target: (String, u16)) -> Forwarder {
        use std::sync::atomic::{AtomicBool, Ordering};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the forwarder");
        let port = listener.local_addr().expect("forwarder address").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let refusing = Arc::new(AtomicBool::new(false));
        let relays: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();

        let (tasks, relay_frozen, refuse) = (
            Arc::clone(&relays),
            Arc::clone(&frozen),
            Arc::clone(&refusing),
        );
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(target.clone()).await else {
                    continue;
                };
                let (inbound_read, inbound_write) = inbound.into_split();
                let (outbound_read, outbound_write) = outbound.into_split();
                let mut tasks = tasks.lock().unwrap();
                let frozen = Arc::clone(&relay_frozen);
                tasks.push(tokio::spawn(relay(inbound_read, outbound_write, frozen)));
                let frozen = Arc::clone(&relay_frozen);
                tasks.push(tokio::spawn(relay(outbound_read, inbound_write, frozen)));
            }
        });

        Forwarder {
            port,
            frozen,
            refusing,
            accept,
            relays,
        }
    }

    /// Closes every relayed connection at once, in both directions; new
    /// connections are still relayed.
    pub fn cut(&self) {
        for task in self.relays.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Cuts every connection and closes new ones at once, like a server
    /// that went away, until [`Forwarder::restore`].
    pub fn refuse(&self) {
        self.refusing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut();
    }

    /// Relays new connections again after [`Forwarder::refuse`].
    pub fn restore(&self) {
        self.refusing
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops relaying while keeping the sockets open, like a half-open
    /// connection behind a NAT that forgot it.
    pub fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if frozen.load(std::sync::atomic::Ordering::SeqCst) {
            // Swallow everything from now on, keeping both sockets open.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// One step of a [`FakeImap`] script: the start of the client line it
/// expects after the tag, and the reply lines, where `{tag}` is replaced
/// by the tag of the last tagged client line. A reply line `{close}` closes
/// the connection, and `{sleep MS}` waits MS milliseconds before the next
/// reply line.
pub struct Step {
    pub expect: &'static str,
    pub reply: Vec<String>,
}

/// Builds a [`Step`].
pub fn step(expect: &'static str, reply: &[&str]) -> Step {
    Step {
        expect,
        reply: reply.iter().map(|line| line.to_string()).collect(),
    }
}

/// A plaintext IMAP server on loopback that sends `greeting`, replies to
/// the client's lines by a script and records every line it received.
pub struct FakeImap {
    pub port: u16,
    pub received: Arc<Mutex<Vec<String>>>,
    /// Every byte received, over all connections, line endings included.
    received_bytes: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeImap {
    pub async fn start(greeting: &str, script: Vec<Step>) -> FakeImap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake IMAP server");
        let port = listener.local_addr().expect("fake server address").port();
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let received_bytes: Arc<Mutex<Vec<u8>>> = Arc::default();
        let greeting = greeting.to_owned();

        let log = FakeLog {
            lines: Arc::clone(&received),
            bytes: Arc::clone(&received_bytes),
        };
        let task = tokio::spawn(async move {
            let mut script = script.into_iter();
            while let Ok((stream, _)) = listener.accept().await {
                serve_fake(stream, &greeting, &mut script, &log).await;
            }
        });
        FakeImap {
            port,
            received,
            received_bytes,
            task,
        }
    }

    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// Returns the bytes received so far as text, with `\r\n` intact.
    pub fn received_text(&self) -> String {
        String::from_utf8_lossy(&self.received_bytes.lock().unwrap()).into_owned()
    }
}

/// What a [`FakeImap`] records: each line without its line ending, and
/// the raw bytes.
struct FakeLog {
    lines: Arc<Mutex<Vec<String>>>,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl Drop for FakeImap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_fake(
    stream: TcpStream,
    greeting: &str,
    script: &mut impl Iterator<Item = Step>,
    log: &FakeLog,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut tag = String::new();
    if write
        .write_all(format!("{greeting}\r\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        log.bytes.lock().unwrap().extend_from_slice(&raw);
        let text = String::from_utf8_lossy(&raw);
        let line = text
            .trim_end_matches('\n')
            .trim_end_matches('\r')
            .to_owned();
        log.lines.lock().unwrap().push(line.clone());
        let (line_tag, rest) = split_tag(&line);
        if let Some(line_tag) = line_tag {
            tag = line_tag.to_owned();
        }
        let replies = match script.next() {
            Some(step) if rest.to_ascii_uppercase().starts_with(step.expect) => step.reply,
            _ => vec![format!("{tag} BAD unexpected line in the test script")],
        };
        for reply in replies {
            if reply == "{close}" {
                return;
            }
            if let Some(millis) = reply
                .strip_prefix("{sleep ")
                .and_then(|rest| rest.strip_suffix('}'))
            {
                let millis = millis.parse().expect("milliseconds in {sleep MS}");
                tokio::time::sleep(Duration::from_millis(millis)).await;
                continue;
            }
            let reply = reply.replace("{tag}", &tag) + "\r\n";
            if write.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// Splits a client line into its tag, when it has one of the form
/// `A0001` or `M0001`, and the rest.
fn split_tag(line: &str) -> (Option<&str>, &str) {
    let Some((first, rest)) = line.split_once(' ') else {
        return (None, line);
    };
    let tagged = first.len() == 5
        && first.starts_with(['A', 'M'])
        && first[1..].chars().all(|c| c.is_ascii_digit());
    match tagged {
        true => (Some(first), rest),
        false => (None, line),
    }
}

impl Forwarder {
    /// Returns the number of connections relayed since the start or the
    /// last [`Forwarder::cut`].
    pub fn connections(&self) -> usize {
        self.relays.lock().unwrap().len() / 2
    }
}

/// A plaintext SMTP server on loopback that records every line it
/// receives, per connection. Each connection greets with 220 and replies
/// by its own script, the first connection by the first script and so on.
/// A connection beyond the scripts gets a 421 greeting. After a reply that
/// starts with `354` the lines up to `.` are message data, and the `.`
/// line is matched against the next step. QUIT that no step expects gets
/// `221` and closes the connection.
pub struct FakeSmtp {
    pub port: u16,
    received: Arc<Mutex<Vec<Vec<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeSmtp {
    pub async fn start(scripts: Vec<Vec<Step>>) -> FakeSmtp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake SMTP server");
        let port = listener.local_addr().expect("fake server address").port();
        let received: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();

        let log = Arc::clone(&received);
        let task = tokio::spawn(async move {
            let mut scripts = scripts.into_iter();
            while let Ok((stream, _)) = listener.accept().await {
                let index = {
                    let mut log = log.lock().unwrap();
                    log.push(Vec::new());
                    log.len() - 1
                };
                let script = scripts.next();
                tokio::spawn(serve_smtp(stream, script, Arc::clone(&log), index));
            }
        });
        FakeSmtp {
            port,
            received,
            task,
        }
    }

    /// Returns the lines received, one list per connection.
    pub fn received(&self) -> Vec<Vec<String>> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_smtp(
    stream: TcpStream,
    script: Option<Vec<Step>>,
    log: Arc<Mutex<Vec<Vec<String>>>>,
    index: usize,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Some(script) = script else {
        let _ = write
            .write_all(b"421 4.3.2 no script left for this connection\r\n")
            .await;
        return;
    };
    let mut script = script.into_iter().peekable();
    if write
        .write_all(b"220 fake.example.test ESMTP\r\n")
        .await
        .is_err()
    {
        return;
    }

    let mut in_data = false;
    while let Ok(Some(line)) = lines.next_line().await {
        log.lock().unwrap()[index].push(line.clone());
        if in_data && line != "." {
            continue;
        }
        in_data = false;
        let upper = line.to_ascii_uppercase();
        let expected = script
            .peek()
            .is_some_and(|step| upper.starts_with(step.expect));
        let replies = match script.next_if(|_| expected) {
            Some(step) => step.reply,
            None if upper.starts_with("QUIT") => {
                vec!["221 2.0.0 Bye".to_owned(), "{close}".to_owned()]
            }
            None => vec!["500 5.5.2 unexpected line in the test script".to_owned()],
        };
        for reply in replies {
            if reply == "{close}" {
                return;
            }
            in_data |= reply.starts_with("354");
            if write
                .write_all(format!("{reply}\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
