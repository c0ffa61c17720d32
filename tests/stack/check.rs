//! `mailbridge check` against the stack: a healthy account, and one fault
//! per test with the diagnosis it must print. No output may contain a
//! token of the account's token file.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bridge::{ACCOUNT, Setup, free_port};
use crate::support::{http, mail_address, port, stack, unique};

/// Result of one `mailbridge check` run.
struct Output {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Returns the configuration file that [`Setup::prepare`] wrote.
fn config_file(setup: &Setup) -> PathBuf {
    let directory = setup
        .state()
        .parent()
        .expect("state has a parent")
        .to_owned();
    directory.join("mailbridge.toml")
}

/// Runs `mailbridge check ARGS` with the configuration changed by `edit`
/// and the variables `env`, and checks that no token is in its output.
fn run_check(
    setup: &Setup,
    args: &[&str],
    env: &[(&str, &str)],
    edit: impl Fn(String) -> String,
) -> Output {
    let tokens = stored_tokens(setup);
    let text = std::fs::read_to_string(config_file(setup)).expect("read config");
    let file = config_file(setup).with_file_name(format!("{}.toml", unique("check")));
    std::fs::write(&file, edit(text)).expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_mailbridge"))
        .arg("--config")
        .arg(&file)
        .arg("check")
        .args(args)
        .envs(env.iter().copied())
        .env_remove("MAILBRIDGE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run mailbridge check");
    let output = Output {
        status: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };

    assert_no_token(&tokens, &output);
    assert_no_token(&stored_tokens(setup), &output);
    output
}

fn token_file(setup: &Setup) -> PathBuf {
    setup.state().join("tokens").join(format!("{ACCOUNT}.json"))
}

fn stored_tokens(setup: &Setup) -> Value {
    let text = std::fs::read_to_string(token_file(setup)).expect("token file");
    serde_json::from_str(&text).expect("token file is JSON")
}

/// Checks that no token of `tokens`, the token file's content, is in the
/// output. At least the refresh token must be stored.
fn assert_no_token(tokens: &Value, output: &Output) {
    assert!(
        tokens["refresh_token"].is_string(),
        "no refresh token stored"
    );
    for field in ["access_token", "refresh_token"] {
        let Some(token) = tokens[field].as_str() else {
            continue;
        };
        assert!(
            !output.stdout.contains(token),
            "stdout contains the {field}"
        );
        assert!(
            !output.stderr.contains(token),
            "stderr contains the {field}"
        );
        // The signature of a JWT must not appear either.
        if let Some(signature) = token.rsplit('.').next().filter(|s| s.len() > 16) {
            assert!(
                !output.stdout.contains(signature),
                "stdout has the signature"
            );
        }
    }
}

/// Returns the line of `step` of `protocol`, which must exist.
fn step_line<'a>(output: &'a Output, protocol: &str, step: &str) -> &'a str {
    let prefix = format!("{ACCOUNT} {protocol:<4} ");
    output
        .stdout
        .lines()
        .find(|line| {
            line.starts_with(&prefix) && line[prefix.len() + 5..].starts_with(&format!("{step} "))
        })
        .unwrap_or_else(|| panic!("no {protocol} {step} line in:\n{}", output.stdout))
}

/// Returns the diagnosis line after the failed step.
fn diagnosis(output: &Output) -> &str {
    output
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("  diagnosis: "))
        .unwrap_or_else(|| panic!("no diagnosis in:\n{}", output.stdout))
}

const PIPELINE: &str = "[inbound.lines]\naccount = \"watched\"\nmailboxes = [\"INBOX\"]\n";

#[tokio::test]
async fn check_healthy_account_passes() {
    let setup = Setup::new("check-ok");
    setup.prepare(PIPELINE).await;

    let output = run_check(&setup, &[ACCOUNT], &[], |text| text);

    assert_eq!(output.status, Some(0), "{}{}", output.stdout, output.stderr);
    assert!(!output.stdout.contains("FAIL"), "{}", output.stdout);
    for step in [
        "resolve",
        "tcp",
        "tls",
        "certificate",
        "capabilities",
        "token",
    ] {
        assert!(step_line(&output, "imap", step).contains(" ok "));
    }
    assert!(step_line(&output, "imap", "tls").contains("TLSv1_"));
    assert!(step_line(&output, "imap", "certificate").contains("verified"));
    assert!(step_line(&output, "imap", "capabilities").contains("AUTH=XOAUTH2 yes"));
    assert!(step_line(&output, "imap", "token").contains(&setup.user));
    assert!(step_line(&output, "imap", "login").contains(" ok "));
    assert!(step_line(&output, "imap", "select").contains("\"INBOX\""));
    assert!(step_line(&output, "smtp", "starttls").contains(" ok "));
    assert!(step_line(&output, "smtp", "ehlo").contains("XOAUTH2"));
    assert!(step_line(&output, "smtp", "login").contains(" ok "));
}

#[tokio::test]
async fn check_json_is_one_object() {
    let setup = Setup::new("check-json");
    setup.prepare(PIPELINE).await;

    let output = run_check(&setup, &["--json", "--smtp"], &[], |text| text);
    let value: Value = serde_json::from_str(&output.stdout).expect("stdout is JSON");

    assert_eq!(output.status, Some(0), "{}", output.stdout);
    assert_eq!(value["ok"], true);
    let steps = value["steps"].as_array().expect("steps");
    assert!(steps.iter().all(|step| step["protocol"] == "smtp"));
    assert!(steps.iter().any(|step| step["step"] == "login"));
}

#[tokio::test]
async fn check_token_for_other_user() {
    let setup = Setup::new("check-user");
    setup.prepare(PIPELINE).await;
    let other = mail_address(&unique("check-other"));
    let env = [
        ("MAILBRIDGE_ACCOUNTS__WATCHED__ADDRESS", other.as_str()),
        (
            "MAILBRIDGE_ACCOUNTS__WATCHED__LOGIN_HINT",
            setup.user.as_str(),
        ),
    ];

    let output = run_check(&setup, &["--imap"], &env, |text| text);

    assert_eq!(output.status, Some(1), "{}", output.stdout);
    assert!(step_line(&output, "imap", "login").contains("FAIL"));
    let fix = diagnosis(&output);
    assert!(
        fix.contains(&format!("not for the address {other}")),
        "{fix}"
    );
    assert!(fix.contains("login_hint"), "{fix}");
}

#[tokio::test]
async fn check_untrusted_certificate() {
    let setup = Setup::new("check-ca");
    setup.prepare(PIPELINE).await;
    let ca_line = format!("ca_file = \"{}\"\n", stack("STACK_CA_FILE"));

    let output = run_check(&setup, &["--imap"], &[], |text| text.replace(&ca_line, ""));

    assert_eq!(output.status, Some(1), "{}", output.stdout);
    let line = step_line(&output, "imap", "certificate");
    assert!(line.contains("FAIL"), "{line}");
    assert!(line.contains("subject="), "{line}");
    assert!(diagnosis(&output).contains("set ca_file"));
}

#[tokio::test]
async fn check_implicit_tls_on_starttls_port() {
    let setup = Setup::new("check-plain");
    setup.prepare(PIPELINE).await;
    let starttls_port = port("STACK_IMAP_PORT").to_string();
    let env = [(
        "MAILBRIDGE_ACCOUNTS__WATCHED__IMAP__PORT",
        starttls_port.as_str(),
    )];

    let output = run_check(&setup, &["--imap"], &env, |text| text);

    assert_eq!(output.status, Some(1), "{}", output.stdout);
    assert!(step_line(&output, "imap", "tls").contains("FAIL"));
    assert!(diagnosis(&output).contains("tls = \"starttls\""));
}

#[tokio::test]
async fn check_imap_starttls_passes() {
    let setup = Setup::new("check-starttls");
    setup.prepare(PIPELINE).await;
    let starttls_port = port("STACK_IMAP_PORT").to_string();
    let env = [
        (
            "MAILBRIDGE_ACCOUNTS__WATCHED__IMAP__PORT",
            starttls_port.as_str(),
        ),
        ("MAILBRIDGE_ACCOUNTS__WATCHED__IMAP__TLS", "starttls"),
    ];

    let output = run_check(&setup, &["--imap"], &env, |text| text);

    assert_eq!(output.status, Some(0), "{}", output.stdout);
    assert!(step_line(&output, "imap", "starttls").contains(" ok "));
    assert!(step_line(&output, "imap", "select").contains(" ok "));
}

#[tokio::test]
async fn check_missing_mailbox_named() {
    let setup = Setup::new("check-box");
    let mailbox = unique("Missing");
    let pipeline = format!("[inbound.lines]\naccount = \"watched\"\nmailboxes = [\"{mailbox}\"]\n");
    setup.prepare(&pipeline).await;

    let output = run_check(&setup, &["--imap"], &[], |text| text);

    assert_eq!(output.status, Some(1), "{}", output.stdout);
    let line = step_line(&output, "imap", "select");
    assert!(line.contains("FAIL"), "{line}");
    assert!(line.contains(&mailbox), "{line}");
    assert!(diagnosis(&output).contains("mailboxes list"));
}

#[tokio::test]
async fn check_rejected_refresh_token() {
    let setup = Setup::new("check-grant");
    setup.prepare(PIPELINE).await;
    let mut tokens = stored_tokens(&setup);
    tokens["refresh_token"] = Value::from(unique("not-a-refresh-token"));
    tokens["access_token"] = Value::Null;
    tokens["access_token_expires_at"] = Value::Null;
    std::fs::write(token_file(&setup), tokens.to_string()).expect("write token file");

    let output = run_check(&setup, &["--smtp"], &[], |text| text);

    assert_eq!(output.status, Some(1), "{}{}", output.stdout, output.stderr);
    let line = step_line(&output, "smtp", "token");
    assert!(line.contains("FAIL"), "{line}");
    assert!(diagnosis(&output).contains("run `mailbridge authorize watched`"));
}

#[tokio::test]
async fn check_unknown_account_exits_64() {
    let setup = Setup::new("check-unknown");
    setup.prepare(PIPELINE).await;

    let output = run_check(&setup, &["nobody"], &[], |text| text);

    assert_eq!(output.status, Some(64), "{}", output.stderr);
    assert!(output.stderr.contains("nobody"), "{}", output.stderr);
}

// === Faults of the OAuth2 server ===

/// Token requests that fail after an injection: more than the check's two
/// attempts, so that every attempt of one check fails.
const INJECTED_FAILURES: u32 = 4;

/// Upper bound of a check whose token endpoint never responds: two
/// attempts of 10 s each, plus the connection steps and some slack.
const HANG_BOUND: Duration = Duration::from_secs(40);

/// Sends `body` to the OAuth2 server's control endpoint.
async fn control(body: Value) -> Value {
    let response = http()
        .post(stack("STACK_OAUTH_CONTROL_URL"))
        .json(&body)
        .send()
        .await
        .expect("control request");
    assert!(
        response.status().is_success(),
        "control: {}",
        response.status()
    );
    response.json().await.expect("control response is JSON")
}

/// Makes the next token requests fail in `mode`, and clears the failure
/// when dropped, even after a failed assert, because every test shares
/// the OAuth2 server.
struct InjectedFailure;

impl InjectedFailure {
    async fn token(mode: &str) -> Self {
        let fail = json!({
            "endpoint": "token",
            "mode": mode,
            "count": INJECTED_FAILURES,
            "retry_after": 1,
        });
        control(json!({ "fail": fail })).await;
        Self
    }
}

impl Drop for InjectedFailure {
    fn drop(&mut self) {
        let clear = || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(control(json!({"fail": {"endpoint": "token", "count": 0}})));
        };
        // A runtime cannot start inside the test's runtime thread.
        let _ = std::thread::spawn(clear).join();
    }
}

/// Removes the cached access token, so that the token step sends a
/// refresh request.
fn forget_access_token(setup: &Setup) {
    let mut tokens = stored_tokens(setup);
    tokens["access_token"] = Value::Null;
    tokens["access_token_expires_at"] = Value::Null;
    std::fs::write(token_file(setup), tokens.to_string()).expect("write token file");
}

/// Runs `check --smtp` of a signed-in account whose token endpoint fails
/// in `mode`, and checks that the token step failed with exit status 1.
async fn check_token_fault(prefix: &str, mode: &str) -> Output {
    let setup = Setup::new(prefix);
    setup.prepare(PIPELINE).await;
    forget_access_token(&setup);
    let _failure = InjectedFailure::token(mode).await;

    let output = run_check(&setup, &["--smtp"], &[], |text| text);

    assert_eq!(output.status, Some(1), "{}{}", output.stdout, output.stderr);
    let line = step_line(&output, "smtp", "token");
    assert!(line.contains("FAIL"), "{line}");
    assert!(!output.stdout.contains("smtp login"), "{}", output.stdout);
    output
}

#[tokio::test]
async fn check_token_invalid_client_in_sequence() {
    let output = check_token_fault("check-client", "invalid_client").await;

    assert!(step_line(&output, "smtp", "token").contains("invalid_client"));
    let fix = diagnosis(&output);
    assert!(fix.contains("rejected the client"), "{fix}");
    assert!(fix.contains("accounts.watched.oauth2.client_id"), "{fix}");
}

#[tokio::test]
async fn check_token_server_error_in_sequence() {
    let output = check_token_fault("check-500", "500").await;

    assert!(step_line(&output, "smtp", "token").contains("HTTP 500"));
    let fix = diagnosis(&output);
    assert!(fix.contains("failed with HTTP 500"), "{fix}");
    assert!(fix.contains("provider's side"), "{fix}");
}

#[tokio::test]
async fn check_token_unavailable_in_sequence() {
    let output = check_token_fault("check-503", "503").await;

    let line = step_line(&output, "smtp", "token");
    assert!(line.contains("temporarily_unavailable"), "{line}");
    let fix = diagnosis(&output);
    assert!(fix.contains("HTTP 503"), "{fix}");
    assert!(
        fix.contains("again after 1s, as its Retry-After asks"),
        "{fix}"
    );
}

#[tokio::test]
async fn check_token_garbage_body_in_sequence() {
    let output = check_token_fault("check-garbage", "garbage").await;

    let line = step_line(&output, "smtp", "token");
    assert!(line.contains("not JSON"), "{line}");
    let fix = diagnosis(&output);
    assert!(fix.contains("no OAuth2 token response"), "{fix}");
    assert!(fix.contains("accounts.watched.oauth2.token_url"), "{fix}");
}

#[tokio::test]
async fn check_token_endpoint_hang_in_sequence() {
    let started = Instant::now();

    let output = check_token_fault("check-hang", "hang").await;

    let elapsed = started.elapsed();
    assert!(elapsed < HANG_BOUND, "the check took {elapsed:?}");
    assert!(step_line(&output, "smtp", "token").contains("timed out"));
    let fix = diagnosis(&output);
    assert!(fix.contains("did not respond within 10s"), "{fix}");
}

#[tokio::test]
async fn check_revoked_user_needs_sign_in() {
    let setup = Setup::new("check-revoked");
    setup.prepare(PIPELINE).await;
    let revoked = control(json!({ "revoke_user": setup.user })).await;
    assert!(revoked["revoked"].as_u64() > Some(0), "{revoked}");

    let output = run_check(&setup, &["--imap"], &[], |text| text);

    assert_eq!(output.status, Some(1), "{}{}", output.stdout, output.stderr);
    // The cached token still decodes; the server rejects it at sign-in,
    // and the forced refresh finds the refresh token revoked.
    assert!(step_line(&output, "imap", "token").contains(" ok "));
    let line = step_line(&output, "imap", "login");
    assert!(line.contains("FAIL"), "{line}");
    let fix = diagnosis(&output);
    assert!(fix.contains("run `mailbridge authorize watched`"), "{fix}");
}

/// Redeems the stored refresh token for an access token whose audience
/// is Microsoft Graph (RFC 8707 `resource`), and stores both new tokens.
async fn store_graph_token(setup: &Setup) {
    let mut tokens = stored_tokens(setup);
    let refresh_token = tokens["refresh_token"].as_str().expect("refresh token");
    let response = http()
        .post(stack("STACK_OAUTH_TOKEN_URL"))
        .basic_auth(
            stack("STACK_OAUTH_CLIENT_ID"),
            Some(stack("STACK_OAUTH_CLIENT_SECRET")),
        )
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("resource", "https://graph.microsoft.com"),
        ])
        .send()
        .await
        .expect("token request");
    assert!(response.status().is_success(), "{}", response.status());
    let body: Value = response.json().await.expect("token response is JSON");

    tokens["access_token"] = body["access_token"].clone();
    tokens["refresh_token"] = body["refresh_token"].clone();
    assert!(
        !tokens["access_token_expires_at"].is_null(),
        "no expiry stored"
    );
    std::fs::write(token_file(setup), tokens.to_string()).expect("write token file");
}

#[tokio::test]
async fn check_graph_audience_named() {
    let setup = Setup::new("check-graph");
    setup.prepare(PIPELINE).await;
    store_graph_token(&setup).await;

    let output = run_check(&setup, &["--smtp"], &[], |text| text);

    assert_eq!(output.status, Some(1), "{}{}", output.stdout, output.stderr);
    let line = step_line(&output, "smtp", "token");
    assert!(line.contains("FAIL"), "{line}");
    assert!(line.contains("aud=https://graph.microsoft.com"), "{line}");
    let fix = diagnosis(&output);
    assert!(fix.contains("Microsoft Graph"), "{fix}");
    assert!(fix.contains("accounts.watched.oauth2.scopes"), "{fix}");
}

#[tokio::test]
async fn check_refused_connection() {
    let setup = Setup::new("check-refused");
    setup.prepare(PIPELINE).await;
    // Nothing listens on a port that was free a moment ago.
    let closed = free_port().to_string();
    let env = [("MAILBRIDGE_ACCOUNTS__WATCHED__IMAP__PORT", closed.as_str())];

    let output = run_check(&setup, &["--imap"], &env, |text| text);

    assert_eq!(output.status, Some(1), "{}{}", output.stdout, output.stderr);
    let line = step_line(&output, "imap", "tcp");
    assert!(line.contains("FAIL"), "{line}");
    assert!(line.contains(&format!("127.0.0.1:{closed}")), "{line}");
    assert!(line.to_lowercase().contains("refused"), "{line}");
    let fix = diagnosis(&output);
    assert!(
        fix.contains(&format!("nothing listens on port {closed}")),
        "{fix}"
    );
}

// === Certificate anchor ===

#[tokio::test]
async fn check_certificate_anchor_from_ca_file() {
    let setup = Setup::new("check-anchor");
    setup.prepare(PIPELINE).await;

    let text = run_check(&setup, &["--imap"], &[], |text| text);
    let json = run_check(&setup, &["--imap", "--json"], &[], |text| text);

    let line = step_line(&text, "imap", "certificate");
    assert!(line.contains(" ok "), "{line}");
    assert!(
        line.contains("anchor=O=mailbridge test stack, CN=mailbridge test CA (ca_file)"),
        "{line}"
    );
    let value: Value = serde_json::from_str(&json.stdout).expect("stdout is JSON");
    let steps = value["steps"].as_array().expect("steps");
    let certificate = steps
        .iter()
        .find(|step| step["step"] == "certificate")
        .expect("a certificate step");
    assert_eq!(certificate["anchor"]["source"], "ca_file");
    assert_eq!(
        certificate["anchor"]["subject"],
        "O=mailbridge test stack, CN=mailbridge test CA"
    );
}
