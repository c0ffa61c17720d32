//! `mailbridge authorize` run as a process against the stack's OAuth2
//! server: the loopback redirect, a pasted redirect URL, the device-code
//! grant and a tampered `state`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::support::{authorization_redirect, http, mail_address, stack, unique};

const ACCOUNT: &str = "support";

/// A temporary directory with a configuration for the stack's generic
/// provider and a state directory inside it.
struct Setup {
    directory: tempfile::TempDir,
    user: String,
}

impl Setup {
    fn new(prefix: &str) -> Self {
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
            authorize_url = stack("STACK_OAUTH_AUTHORIZE_URL"),
            token_url = stack("STACK_OAUTH_TOKEN_URL"),
            device_url = stack("STACK_OAUTH_DEVICE_URL"),
        );
        std::fs::write(directory.path().join("mailbridge.toml"), config).expect("write config");
        Self { directory, user }
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
    assert_eq!(file["token_url"], stack("STACK_OAUTH_TOKEN_URL"));
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
