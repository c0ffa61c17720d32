//! `mailbridge authorize` run as a process against the stack's OAuth2
//! server: the loopback redirect, a pasted redirect URL, the device-code
//! grant and a tampered `state`. A `slow_down` of the device-code grant
//! runs against an instance of the same server started by its test.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::support::{authorization_redirect, http, mail_address, stack, unique};

const ACCOUNT: &str = "support";

/// The OAuth2 endpoints that a [`Setup`] configures.
struct Endpoints {
    authorize: String,
    token: String,
    device: String,
}

/// A temporary directory with a configuration for a generic provider, by
/// default the stack's OAuth2 server, and a state directory inside it.
struct Setup {
    directory: tempfile::TempDir,
    user: String,
    token_url: String,
}

impl Setup {
    fn new(prefix: &str) -> Self {
        let endpoints = Endpoints {
            authorize: stack("STACK_OAUTH_AUTHORIZE_URL"),
            token: stack("STACK_OAUTH_TOKEN_URL"),
            device: stack("STACK_OAUTH_DEVICE_URL"),
        };
        Self::with_endpoints(prefix, endpoints)
    }

    fn with_endpoints(prefix: &str, endpoints: Endpoints) -> Self {
        let directory = tempfile::tempdir().expect("temporary directory");
        let user = mail_address(&unique(prefix));
        let config = format!(
            r#"
[state]
directory = "{state}"

[accounts.{ACCOUNT}]
address = "{user}"

[accounts.{ACCOUNT}.oauth2]
provider = "generic"
client_id = "{client_id}"
client_secret = "{client_secret}"
authorize_url = "{authorize_url}"
token_url = "{token_url}"
device_authorization_url = "{device_url}"
scopes = ["imap", "smtp"]
"#,
            state = directory.path().join("state").display(),
            client_id = stack("STACK_OAUTH_CLIENT_ID"),
            client_secret = stack("STACK_OAUTH_CLIENT_SECRET"),
            authorize_url = endpoints.authorize,
            token_url = endpoints.token,
            device_url = endpoints.device,
        );
        std::fs::write(directory.path().join("mailbridge.toml"), config).expect("write config");
        Self {
            directory,
            user,
            token_url: endpoints.token,
        }
    }

    fn token_file(&self) -> PathBuf {
        self.directory
            .path()
            .join(format!("state/tokens/{ACCOUNT}.json"))
    }

    /// Starts `mailbridge authorize` with `flags`, with pipes on all
    /// three standard streams.
    fn spawn(&self, account: &str, flags: &[&str]) -> Running {
        let config = self.directory.path().join("mailbridge.toml");
        let mut child = Command::new(env!("CARGO_BIN_EXE_mailbridge"))
            .arg("--config")
            .arg(&config)
            .arg("authorize")
            .arg(account)
            .args(flags)
            .current_dir(self.directory.path())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("mailbridge starts");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Running {
            child,
            stdout,
            seen: String::new(),
        }
    }
}

/// A running command and the standard output read so far.
struct Running {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    seen: String,
}

/// What a finished command wrote, and its status.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Running {
    /// Reads standard output up to the first line that `pick` accepts and
    /// returns what it returned.
    async fn line<T>(&mut self, pick: impl Fn(&str) -> Option<T>) -> T {
        loop {
            let line = self
                .stdout
                .next_line()
                .await
                .expect("read stdout")
                .unwrap_or_else(|| panic!("stdout ended before the expected line: {}", self.seen));
            self.seen.push_str(&line);
            self.seen.push('\n');
            if let Some(value) = pick(&line) {
                return value;
            }
        }
    }

    async fn authorization_url(&mut self) -> String {
        self.line(|line| line.starts_with("http").then(|| line.to_owned()))
            .await
    }

    async fn paste(&mut self, text: &str) {
        let mut stdin = self.child.stdin.take().expect("stdin");
        stdin
            .write_all(format!("{text}\n").as_bytes())
            .await
            .expect("write stdin");
    }

    async fn finish(mut self) -> Finished {
        let wait = async {
            while let Some(line) = self.stdout.next_line().await.expect("read stdout") {
                self.seen.push_str(&line);
                self.seen.push('\n');
            }
            let mut stderr = String::new();
            let mut pipe = self.child.stderr.take().expect("stderr");
            pipe.read_to_string(&mut stderr).await.expect("read stderr");
            let status = self.child.wait().await.expect("wait for mailbridge");
            (status, stderr)
        };
        let (status, stderr) = tokio::time::timeout(std::time::Duration::from_secs(30), wait)
            .await
            .expect("mailbridge exits within 30 s");
        Finished {
            status,
            stdout: self.seen,
            stderr,
        }
    }
}

/// Follows the authorization URL as a browser would, without following
/// the redirect, and returns the `Location`.
async fn redirect_location(url: &str) -> String {
    let location = authorization_redirect(url).await;
    assert!(
        location.starts_with("http://127.0.0.1:"),
        "redirected to {location}"
    );
    location
}

/// Checks the summary line, the token file and that no token was printed.
fn assert_authorized(setup: &Setup, finished: &Finished) {
    assert!(
        finished.status.success(),
        "status {}, stderr: {}",
        finished.status,
        finished.stderr
    );
    assert!(
        finished.stdout.contains(&format!(
            "authorized account {ACCOUNT}: scopes \"imap smtp\", refresh token stored"
        )),
        "stdout: {}",
        finished.stdout
    );

    let path = setup.token_file();
    let mode = std::fs::metadata(&path)
        .expect("token file exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read token file"))
            .expect("token file is JSON");
    assert_eq!(file["token_url"], setup.token_url.as_str());
    for field in ["refresh_token", "access_token"] {
        let token = file[field].as_str().expect("token stored");
        assert!(!token.is_empty());
        assert!(
            !finished.stdout.contains(token),
            "stdout contains the {field}"
        );
        assert!(
            !finished.stderr.contains(token),
            "stderr contains the {field}"
        );
    }
}

fn assert_nothing_stored(setup: &Setup) {
    assert!(
        !Path::new(&setup.token_file()).exists(),
        "a token file was stored"
    );
}

#[tokio::test]
async fn authorize_loopback_redirect() {
    let setup = Setup::new("authorize-loopback");
    let mut running = setup.spawn(ACCOUNT, &["--no-browser"]);

    let url = running.authorization_url().await;
    let location = redirect_location(&url).await;
    let page = http()
        .get(&location)
        .send()
        .await
        .expect("loopback request");
    let status = page.status();
    let body = page.text().await.expect("page body");
    let finished = running.finish().await;

    assert_eq!(status, 200, "page: {body}");
    assert!(body.contains("close this window"), "page: {body}");
    assert!(url.contains("code_challenge_method=S256"), "URL: {url}");
    assert!(url.contains("login_hint="), "URL: {url}");
    assert_authorized(&setup, &finished);
}

#[tokio::test]
async fn authorize_pasted_redirect() {
    let setup = Setup::new("authorize-paste");
    let mut running = setup.spawn(ACCOUNT, &["--no-browser", "--paste"]);

    let url = running.authorization_url().await;
    let location = redirect_location(&url).await;
    running.paste(&location).await;
    let finished = running.finish().await;

    assert_authorized(&setup, &finished);
}

#[tokio::test]
async fn authorize_device_code() {
    let setup = Setup::new("authorize-device");
    let mut running = setup.spawn(ACCOUNT, &["--device"]);

    let user_code = running
        .line(|line| line.strip_prefix("user code: ").map(str::to_owned))
        .await;
    let response = http()
        .get(format!("{}/device", stack("STACK_OAUTH_ISSUER")))
        .query(&[
            ("user_code", user_code.as_str()),
            ("action", "approve"),
            ("login_hint", setup.user.as_str()),
        ])
        .send()
        .await
        .expect("device approval request");
    assert!(
        response.status().is_success(),
        "device approval returned {}",
        response.status()
    );
    let finished = running.finish().await;

    assert!(
        finished.stdout.contains("verification URI: "),
        "stdout: {}",
        finished.stdout
    );
    assert_authorized(&setup, &finished);
}

#[tokio::test]
async fn authorize_state_mismatch() {
    let setup = Setup::new("authorize-state");
    let mut running = setup.spawn(ACCOUNT, &["--no-browser", "--paste"]);

    let url = running.authorization_url().await;
    let location = redirect_location(&url).await;
    let mut tampered = url::Url::parse(&location).expect("Location is a URL");
    let pairs: Vec<(String, String)> = tampered
        .query_pairs()
        .into_owned()
        .map(|(key, value)| match key.as_str() {
            "state" => (key, format!("{value}x")),
            _ => (key, value),
        })
        .collect();
    tampered.query_pairs_mut().clear().extend_pairs(pairs);
    running.paste(tampered.as_str()).await;
    let finished = running.finish().await;

    assert!(!finished.status.success(), "tampered state was accepted");
    assert!(
        finished
            .stderr
            .contains("state of the redirect does not match"),
        "stderr: {}",
        finished.stderr
    );
    assert_nothing_stored(&setup);
}

#[tokio::test]
async fn authorize_unknown_account() {
    let setup = Setup::new("authorize-unknown");
    let finished = setup.spawn("sales", &["--no-browser"]).finish().await;

    assert_eq!(finished.status.code(), Some(64));
    assert!(
        finished.stderr.contains("defined accounts: support"),
        "stderr: {}",
        finished.stderr
    );
    assert_nothing_stored(&setup);
}

/// The redirect a provider sends when the user declines consent.
#[tokio::test]
async fn authorize_error_redirect_reported() {
    let setup = Setup::new("authorize-denied");
    let mut running = setup.spawn(ACCOUNT, &["--no-browser"]);

    let url = url::Url::parse(&running.authorization_url().await).expect("URL");
    let pair = |name: &str| {
        url.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
            .unwrap_or_else(|| panic!("no {name} in {url}"))
    };
    let mut denied = url::Url::parse(&pair("redirect_uri")).expect("redirect URI");
    denied
        .query_pairs_mut()
        .append_pair("error", "access_denied")
        .append_pair("error_description", "The user declined consent.")
        .append_pair("state", &pair("state"));
    let page = http().get(denied.as_str()).send().await.expect("redirect");
    let finished = running.finish().await;

    assert!(page.status().is_client_error() || page.status().is_success());
    assert_eq!(
        finished.status.code(),
        Some(1),
        "stderr: {}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("access_denied"),
        "stderr: {}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("declined consent"),
        "stderr: {}",
        finished.stderr
    );
    assert_nothing_stored(&setup);
}

/// An OAuth2 server of this repository's stack, started for one test from
/// `stack/oauth2-server` on a free loopback port, so that its injected
/// failures reach no other test. `scripts/stack up` installs its npm
/// packages. Its request log is collected from standard output.
struct OwnOAuthServer {
    issuer: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _child: Child,
}

impl OwnOAuthServer {
    async fn start() -> Self {
        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("stack/oauth2-server");
        assert!(
            directory.join("node_modules").is_dir(),
            "run `npm ci` in {} first, as `scripts/stack up` does",
            directory.display()
        );
        let mut child = Command::new("node")
            .arg(directory.join("server.js"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
            .await
            .expect("the OAuth2 server starts within 10 s")
            .expect("read stdout")
            .expect("the OAuth2 server prints its address");
        let issuer = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_owned();

        let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let collected = std::sync::Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                collected.lock().unwrap().push(line);
            }
        });
        Self {
            issuer,
            log,
            _child: child,
        }
    }

    fn endpoints(&self) -> Endpoints {
        Endpoints {
            authorize: format!("{}/authorize", self.issuer),
            token: format!("{}/token", self.issuer),
            device: format!("{}/device_authorization", self.issuer),
        }
    }

    async fn control(&self, body: Value) {
        let response = http()
            .post(format!("{}/control", self.issuer))
            .json(&body)
            .send()
            .await
            .expect("control request");
        assert!(
            response.status().is_success(),
            "control: {}",
            response.status()
        );
    }

    /// Returns the log lines of device-code token requests.
    fn device_polls(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|line| {
                line.contains("POST /token grant_type=urn:ietf:params:oauth:grant-type:device_code")
            })
            .cloned()
            .collect()
    }
}

/// Returns the time at the start of a log line of the OAuth2 server.
fn logged_at(line: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let stamp = line.split(' ').next().unwrap_or_default();
    chrono::DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|error| panic!("no time at the start of {line:?}: {error}"))
}

/// A `slow_down` reply adds 5 s to the polling interval for every later
/// poll (RFC 8628 section 3.5). The server also raises the device code's
/// own interval, so a poll that comes sooner gets another `slow_down`.
#[tokio::test]
async fn authorize_device_code_slow_down_grows_interval() {
    let server = OwnOAuthServer::start().await;
    server
        .control(serde_json::json!({
            "device_interval": 1,
            "fail": {"endpoint": "token", "mode": "slow_down", "count": 1},
        }))
        .await;
    let setup = Setup::with_endpoints("authorize-slow", server.endpoints());
    let mut running = setup.spawn(ACCOUNT, &["--device"]);

    let user_code = running
        .line(|line| line.strip_prefix("user code: ").map(str::to_owned))
        .await;
    let response = http()
        .get(format!("{}/device", server.issuer))
        .query(&[
            ("user_code", user_code.as_str()),
            ("action", "approve"),
            ("login_hint", setup.user.as_str()),
        ])
        .send()
        .await
        .expect("device approval request");
    assert!(response.status().is_success(), "{}", response.status());
    let finished = running.finish().await;

    assert_authorized(&setup, &finished);
    let polls = server.device_polls();
    assert_eq!(polls.len(), 2, "{polls:#?}");
    assert!(
        polls[0].contains("status=400") && polls[0].contains("injected=slow_down"),
        "{polls:#?}"
    );
    assert!(polls[1].contains("status=200"), "{polls:#?}");
    let gap = logged_at(&polls[1]) - logged_at(&polls[0]);
    assert!(
        gap >= chrono::TimeDelta::milliseconds(6000 - 200),
        "polled again {gap} after slow_down, before the grown interval of 6 s"
    );
}
