//! A `mailbridge run` process for the pipeline tests: its configuration
//! file, its own state directory and metrics port, the account signed in
//! by `mailbridge authorize` (with IMAP and SMTP settings), and its log,
//! which must never contain a token.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{authorization_redirect, http, mail_address, stack, unique};

pub const ACCOUNT: &str = "watched";

/// How long a test waits for a state it expects.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Settings of one bridge; `pipelines` is TOML appended to the account
/// and broker tables.
pub struct Setup {
    pub user: String,
    directory: tempfile::TempDir,
    metrics_port: u16,
    /// IMAP port the account connects to: the stack's, or a forwarder's.
    pub imap_port: u16,
    /// IMAP `tls` setting: `implicit` for the stack, `none` for a fake
    /// server on loopback, which also sets `allow_plaintext`.
    pub imap_tls: &'static str,
    /// SMTP port the account connects to: the stack's, or a forwarder's.
    pub smtp_port: u16,
    /// SMTP `tls` setting, as [`Setup::imap_tls`] is for IMAP.
    pub smtp_tls: &'static str,
    /// AMQP URL of the `rabbitmq` broker: the stack's, or a forwarder's.
    pub amqp_url: String,
    /// Whether the IMAP and SMTP tables set the stack's CA as `ca_file`.
    /// Without it, the stack's certificates come from an unknown CA.
    pub trust_stack_ca: bool,
    /// TOML lines added to the IMAP and SMTP tables.
    pub server_extra: String,
    /// Environment variables of every command run with this setup.
    pub env: Vec<(String, String)>,
}

impl Setup {
    /// A new mailbox user and state directory.
    pub fn new(prefix: &str) -> Self {
        Self {
            user: mail_address(&unique(prefix)),
            directory: tempfile::tempdir().expect("temporary directory"),
            metrics_port: free_port(),
            imap_port: crate::support::port("STACK_IMAPS_PORT"),
            imap_tls: "implicit",
            smtp_port: crate::support::port("STACK_SMTP_PORT"),
            smtp_tls: "starttls",
            amqp_url: stack("STACK_AMQP_URL"),
            trust_stack_ca: true,
            server_extra: String::new(),
            env: Vec::new(),
        }
    }

    pub fn state(&self) -> PathBuf {
        self.directory.path().join("state")
    }

    fn config_file(&self) -> PathBuf {
        self.directory.path().join("mailbridge.toml")
    }

    fn log_file(&self) -> PathBuf {
        self.directory.path().join("mailbridge.log")
    }

    /// Writes the configuration with `pipelines` and signs the account in.
    pub async fn prepare(&self, pipelines: &str) {
        std::fs::write(self.config_file(), self.config(pipelines)).expect("write config");
        self.authorize().await;
    }

    fn config(&self, pipelines: &str) -> String {
        let secret_file = self.directory.path().join("client-secret");
        std::fs::write(&secret_file, stack("STACK_OAUTH_CLIENT_SECRET")).expect("write secret");
        format!(
            r#"
[state]
directory = "{state}"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[log]
level = "debug,rdkafka=info,lapin=info,async_imap=info,h2=info,hyper=info,reqwest=info,rustls=info"

[accounts.{ACCOUNT}]
address = "{user}"

[accounts.{ACCOUNT}.oauth2]
provider = "generic"
client_id = "{client_id}"
client_secret_file = "{secret_file}"
authorize_url = "{authorize_url}"
token_url = "{token_url}"
scopes = ["imap", "smtp"]

[accounts.{ACCOUNT}.imap]
host = "{imap_host}"
port = {imap_port}
{imap_tls}
connect_timeout = "5s"
{server_extra}

[accounts.{ACCOUNT}.smtp]
host = "{smtp_host}"
port = {smtp_port}
{smtp_tls}
connect_timeout = "5s"
{server_extra}

[brokers.kafka]
kind = "kafka"
bootstrap_servers = "{bootstrap}"
properties = {{ "message.timeout.ms" = "5000", "session.timeout.ms" = "6000" }}

[brokers.rabbitmq]
kind = "amqp"
url = "{amqp_url}"
{pipelines}
"#,
            state = self.state().display(),
            metrics_port = self.metrics_port,
            user = self.user,
            client_id = stack("STACK_OAUTH_CLIENT_ID"),
            secret_file = secret_file.display(),
            authorize_url = stack("STACK_OAUTH_AUTHORIZE_URL"),
            token_url = stack("STACK_OAUTH_TOKEN_URL"),
            imap_host = stack("STACK_IMAP_HOST"),
            imap_port = self.imap_port,
            imap_tls = tls_settings(self.imap_tls, self.trust_stack_ca),
            smtp_tls = tls_settings(self.smtp_tls, self.trust_stack_ca),
            server_extra = self.server_extra,
            smtp_host = stack("STACK_SMTP_HOST"),
            smtp_port = self.smtp_port,
            bootstrap = stack("STACK_KAFKA_BOOTSTRAP"),
            amqp_url = self.amqp_url,
        )
    }

    /// Runs `mailbridge authorize` and completes the sign-in as a
    /// browser would.
    async fn authorize(&self) {
        let mut child = self
            .command()
            .args(["authorize", ACCOUNT, "--no-browser"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mailbridge authorize");
        let stdout = child.stdout.take().expect("stdout");
        let url = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            let url = lines
                .find_map(|line| line.ok().filter(|line| line.starts_with("http")))
                .expect("authorize prints the URL");
            // The summary line follows; a closed pipe would fail it.
            std::thread::spawn(move || lines.for_each(drop));
            url
        })
        .await
        .expect("read URL");
        let location = authorization_redirect(&url).await;
        http()
            .get(&location)
            .send()
            .await
            .expect("redirect reaches mailbridge");
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait for authorize");
        assert!(
            status.success(),
            "mailbridge authorize exited with {status}"
        );
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mailbridge"));
        command
            .arg("--config")
            .arg(self.config_file())
            .env_remove("MAILBRIDGE_CONFIG")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null());
        command
    }

    /// Runs `mailbridge ARGS` with this setup's configuration and returns
    /// its exit status and output.
    pub async fn output(&self, args: &[&str]) -> std::process::Output {
        let mut command = self.command();
        command.args(args);
        tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("join")
            .expect("run mailbridge")
    }

    /// Starts `mailbridge run`, appending to the log file.
    pub fn start(&self) -> Bridge<'_> {
        self.start_with_stdout(Stdio::null())
    }

    /// Starts `mailbridge run` with its standard output sent to `stdout`.
    pub fn start_with_stdout(&self, stdout: impl Into<Stdio>) -> Bridge<'_> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .expect("open log file");
        let child = self
            .command()
            .arg("run")
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .expect("start mailbridge run");
        Bridge { setup: self, child }
    }

    /// The log of every run so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// Checks that no token of the account's token file is in the log.
    pub fn assert_log_has_no_token(&self) {
        let file = self.state().join("tokens").join(format!("{ACCOUNT}.json"));
        let tokens: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("token file"))
                .expect("token file is JSON");
        let log = self.log();
        assert!(
            log.contains("mailbridge started"),
            "the log is empty: {log}"
        );
        for field in ["access_token", "refresh_token"] {
            let token = tokens[field].as_str().expect("token stored");
            assert!(!log.contains(token), "the log contains the {field}");
        }
    }

    /// The checkpoint of `pipeline` and `mailbox`, when one was saved.
    pub fn checkpoint(&self, pipeline: &str, mailbox: &str) -> Option<Value> {
        let file = self
            .state()
            .join("checkpoints")
            .join(mailbridge::state::file_name(pipeline))
            .join(format!("{}.json", mailbridge::state::file_name(mailbox)));
        let text = std::fs::read_to_string(file).ok()?;
        Some(serde_json::from_str(&text).expect("checkpoint is JSON"))
    }

    /// Fetches `/metrics`.
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let response = http().get(url).send().await.expect("metrics request");
        response.text().await.expect("metrics body")
    }

    /// Returns the value of the metric line that starts with `series`, or
    /// `None` while the metrics endpoint is not listening yet.
    pub async fn sample_if_listening(&self, series: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let response = http().get(url).send().await.ok()?;
        let text = response.text().await.ok()?;
        let line = text.lines().find(|line| line.starts_with(series))?;
        line.rsplit(' ').next()?.parse().ok()
    }

    /// Returns the value of the metric line that starts with `series`.
    pub async fn sample(&self, series: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .find(|line| line.starts_with(series))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.metrics_port);
        let deadline = Instant::now() + PATIENCE;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(response) = http().get(&url).send().await {
                if response.status() == 200 {
                    return;
                }
                last = response.text().await.unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("not ready after {PATIENCE:?}: {last}\nlog:\n{}", self.log());
    }
}

/// A running `mailbridge run`; killed when dropped.
pub struct Bridge<'a> {
    setup: &'a Setup,
    child: Child,
}

impl Bridge<'_> {
    /// Sends SIGTERM and waits for the exit.
    pub async fn stop(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("send SIGTERM");
        let mut child = std::mem::replace(&mut self.child, dummy_child());
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait for mailbridge");
        assert!(
            status.success(),
            "mailbridge exited with {status}:\n{}",
            self.setup.log()
        );
        status
    }
}

impl Drop for Bridge<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An exited child that takes the place of the real one after `stop`.
fn dummy_child() -> Child {
    let mut child = Command::new("true").spawn().expect("run true");
    let _ = child.wait();
    child
}

/// Returns a loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// Returns the errors of `document` against `schemas/NAME`.
pub fn schema_errors(name: &str, document: &Value) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(name);
    let schema: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read schema")).expect("schema JSON");
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles");
    validator
        .iter_errors(document)
        .map(|error| format!("{error} at {}", error.instance_path))
        .collect()
}

/// Returns the `tls` line of a server table for `tls`, with the stack's CA
/// file when `trust_stack_ca` is set or, for plaintext, `allow_plaintext`.
fn tls_settings(tls: &str, trust_stack_ca: bool) -> String {
    match tls {
        "none" => "tls = \"none\"\nallow_plaintext = true".to_owned(),
        tls if trust_stack_ca => {
            format!("tls = \"{tls}\"\nca_file = \"{}\"", stack("STACK_CA_FILE"))
        }
        tls => format!("tls = \"{tls}\""),
    }
}

/// Reads one of the demo mails.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("demo/mails")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

impl Bridge<'_> {
    /// Sends SIGKILL and waits for the exit, as a crash ends the process:
    /// nothing is drained or committed.
    pub async fn kill(mut self) {
        let mut child = std::mem::replace(&mut self.child, dummy_child());
        child.kill().expect("send SIGKILL");
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait for mailbridge");
    }
}

impl Setup {
    /// The port of `/metrics`, `/healthz` and `/readyz`.
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// Starts `mailbridge run` with `env` set and standard output piped,
    /// appending to the log file.
    pub fn start_piped(&self, env: &[(&str, &str)]) -> Bridge<'_> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .expect("open log file");
        let child = self
            .command()
            .envs(env.iter().copied())
            .arg("run")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start mailbridge run");
        Bridge { setup: self, child }
    }

    /// Runs `mailbridge authorize` again, as an operator would while the
    /// bridge runs.
    pub async fn authorize_again(&self) {
        self.authorize().await;
    }
}

impl Bridge<'_> {
    /// Takes the read end of standard output, when it is piped.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Waits up to `wait` for the process to exit on its own, and returns
    /// its status, or `None` while it still runs.
    pub async fn exit_within(&mut self, wait: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("check the exit") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}

impl Setup {
    /// Fetches `/readyz` and returns its status and JSON body, or `None`
    /// while nothing listens yet.
    pub async fn readyz(&self) -> Option<(u16, Value)> {
        let url = format!("http://127.0.0.1:{}/readyz", self.metrics_port);
        let response = http().get(url).send().await.ok()?;
        let status = response.status().as_u16();
        let body = response.json().await.expect("readyz body is JSON");
        Some((status, body))
    }

    /// Polls `/readyz` until `accept` holds for its status and body, and
    /// returns them. Fails after `wait` with the last body and the log.
    pub async fn wait_readyz(
        &self,
        wait: Duration,
        accept: impl Fn(u16, &Value) -> bool,
    ) -> (u16, Value) {
        let deadline = Instant::now() + wait;
        let mut last = (0, Value::Null);
        while Instant::now() < deadline {
            if let Some((status, body)) = self.readyz().await {
                if accept(status, &body) {
                    return (status, body);
                }
                last = (status, body);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "/readyz did not reach the expected state in {wait:?}: {} {}\nlog:\n{}",
            last.0,
            last.1,
            self.log()
        );
    }

    /// Returns the path of the token file of `account`.
    pub fn token_file(&self, account: &str) -> PathBuf {
        self.state().join("tokens").join(format!("{account}.json"))
    }
}
