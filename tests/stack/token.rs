//! Token provider and grants against the stack's OAuth2 server: refresh
//! token rotation across restarts, one refresh for many callers, the
//! injected failure modes of the token endpoint, the device-code grant,
//! and token files that must not be used.
//!
//! Settings of the server's `/control` endpoint are global, so every case
//! that changes them runs in `token_control_cases_in_sequence`, which
//! restores the defaults when it ends. The other tests use their own users
//! and tolerate short token lifetimes.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mailbridge::auth::grant::{HttpSettings, TokenClient};
use mailbridge::auth::{
    Classification, ProviderSettings, RefreshToken, RetryPolicy, StoredTokens, TokenProvider,
    TokenStore, TokenUpdate,
};
use mailbridge::config::{Account, Grant, Mechanism, OAuth2, Provider, Secret, State};
use mailbridge::telemetry::Metrics;
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::{Value, json};

use crate::support::{http, introspect, mail_address, stack, unique};

const ACCOUNT: &str = "support";

fn account(user: &str, grant: Grant) -> Account {
    Account {
        address: user.to_owned(),
        login_hint: user.to_owned(),
        oauth2: OAuth2 {
            provider: Provider::Generic,
            grant,
            client_id: stack("STACK_OAUTH_CLIENT_ID"),
            client_secret: Some(Secret::new(stack("STACK_OAUTH_CLIENT_SECRET"))),
            tenant: None,
            scopes: vec!["imap".to_owned(), "smtp".to_owned()],
            authorize_url: Some(stack("STACK_OAUTH_AUTHORIZE_URL")),
            token_url: Some(stack("STACK_OAUTH_TOKEN_URL")),
            device_authorization_url: Some(stack("STACK_OAUTH_DEVICE_URL")),
            redirect_port: None,
            mechanism: Mechanism::Xoauth2,
        },
        imap: None,
        smtp: None,
    }
}

/// Retries fast enough for tests, with a short re-check of `invalid_grant`.
fn fast_settings() -> ProviderSettings {
    ProviderSettings {
        retry: RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(2),
            recheck_delay: Duration::from_millis(200),
        },
        http: HttpSettings::default(),
    }
}

fn token_client(account: &Account) -> TokenClient {
    let preset = mailbridge::auth::resolve(ACCOUNT, account).expect("resolve endpoints");
    TokenClient::new(ACCOUNT, account, &preset, HttpSettings::default()).expect("token client")
}

/// A state directory of its own, removed when the test ends.
struct StateDir {
    _directory: tempfile::TempDir,
    state: State,
}

fn state_dir() -> StateDir {
    let directory = tempfile::tempdir().expect("temporary directory");
    let state = State {
        directory: directory.path().to_path_buf(),
    };
    StateDir {
        _directory: directory,
        state,
    }
}

fn stored_refresh_token(state: &State) -> RefreshToken {
    TokenStore::new(state)
        .load(ACCOUNT)
        .expect("load tokens")
        .expect("token file exists")
        .refresh_token
        .expect("refresh token stored")
}

/// Signs a new user in and returns its account and provider.
async fn signed_in(state: &State, settings: ProviderSettings) -> (Account, TokenProvider) {
    let user = mail_address(&unique("token"));
    let account = account(&user, Grant::AuthorizationCode);
    store_refresh_token(state, authorize(&account).await);
    let provider =
        TokenProvider::with_settings(ACCOUNT, &account, state, settings).expect("provider");
    (account, provider)
}

/// Sends a refresh request without the provider and returns the status
/// and the `error` field.
async fn raw_refresh(refresh_token: &RefreshToken) -> (u16, Value) {
    let response = http()
        .post(stack("STACK_OAUTH_TOKEN_URL"))
        .basic_auth(
            stack("STACK_OAUTH_CLIENT_ID"),
            Some(stack("STACK_OAUTH_CLIENT_SECRET")),
        )
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ])
        .send()
        .await
        .expect("refresh request");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("token response is JSON");
    (status, body["error"].clone())
}

#[tokio::test]
async fn token_rotation_survives_restart() {
    let dir = state_dir();
    let (account, first) = signed_in(&dir.state, fast_settings()).await;
    let initial = stored_refresh_token(&dir.state);

    let token = first.access_token().await.expect("first access token");
    let rotated = stored_refresh_token(&dir.state);
    drop(first);

    assert_ne!(rotated, initial, "the rotated refresh token was not stored");
    assert_eq!(introspect(token.expose()).await["active"], true);
    assert_eq!(introspect(initial.expose()).await["active"], false);
    assert_eq!(introspect(rotated.expose()).await["active"], true);

    let second =
        TokenProvider::with_settings(ACCOUNT, &account, &dir.state, fast_settings()).unwrap();
    let renewed = second
        .force_refresh(&token)
        .await
        .expect("refresh after restart");

    assert_ne!(renewed, token);
    assert_ne!(stored_refresh_token(&dir.state), rotated);
    assert_eq!(introspect(renewed.expose()).await["active"], true);
    assert!(!second.needs_authorization());

    // Replaying a retired refresh token revokes its family, so this runs last.
    let (status, error) = raw_refresh(&initial).await;
    assert_eq!(status, 400);
    assert_eq!(error, "invalid_grant");
}

#[tokio::test]
async fn token_cached_until_rejected() {
    let dir = state_dir();
    let (_, provider) = signed_in(&dir.state, fast_settings()).await;

    let first = provider.access_token().await.expect("access token");
    let cached = provider.access_token().await.expect("cached access token");
    let clone = provider
        .clone()
        .access_token()
        .await
        .expect("token of a clone");

    assert_eq!(cached, first);
    assert_eq!(clone, first);

    let forced = provider
        .force_refresh(&first)
        .await
        .expect("forced refresh");
    let again = provider
        .force_refresh(&first)
        .await
        .expect("second rejection");

    assert_ne!(forced, first);
    assert_eq!(
        again, forced,
        "a second rejection of the same token refreshed again"
    );
}

fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buffer)
        .expect("encode metrics");
    String::from_utf8(buffer).expect("metrics text is UTF-8")
}

/// Returns the value of the sample that starts with `series`, such as
/// `name{account="support"}`, or 0 when it was not recorded.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("sample value is a number"))
        .unwrap_or(0.0)
}

#[tokio::test]
async fn token_refresh_metrics_move() {
    let dir = state_dir();
    let registry = Registry::new();
    let metrics = Metrics::new(&registry).expect("register metrics");
    let user = mail_address(&unique("metrics"));
    let account = account(&user, Grant::AuthorizationCode);
    store_refresh_token(&dir.state, authorize(&account).await);
    let provider =
        TokenProvider::with_metrics(ACCOUNT, &account, &dir.state, fast_settings(), metrics)
            .expect("provider");
    let successes = format!(
        r#"mailbridge_oauth2_token_refreshes_total{{account="{ACCOUNT}",result="success"}}"#
    );
    let expiry = format!(
        r#"mailbridge_oauth2_access_token_expiry_timestamp_seconds{{account="{ACCOUNT}"}}"#
    );
    let required = format!(r#"mailbridge_oauth2_authorization_required{{account="{ACCOUNT}"}}"#);
    let durations =
        format!(r#"mailbridge_oauth2_token_refresh_duration_seconds_count{{account="{ACCOUNT}"}}"#);
    let age = format!(r#"mailbridge_oauth2_refresh_token_age_seconds{{account="{ACCOUNT}"}}"#);
    let before = sample(&render(&registry), &successes);

    let token = provider.access_token().await.expect("access token");
    provider
        .force_refresh(&token)
        .await
        .expect("forced refresh");

    let text = render(&registry);
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(sample(&text, &successes), before + 2.0, "{text}");
    assert!(sample(&text, &durations) >= 2.0, "{text}");
    assert!(sample(&text, &expiry) > now, "{text}");
    assert_eq!(sample(&text, &required), 0.0, "{text}");
    assert!(text.contains(&age), "{text}");
    assert!(
        !text.contains(&user),
        "a label contains the address: {text}"
    );
    assert!(
        !text.contains(token.expose()),
        "a label contains the token: {text}"
    );
}

#[tokio::test]
async fn token_client_credentials_stores_nothing() {
    let dir = state_dir();
    let client_id = stack("STACK_OAUTH_CLIENT_ID");
    let account = account(&mail_address(&unique("app")), Grant::ClientCredentials);
    let provider =
        TokenProvider::with_settings(ACCOUNT, &account, &dir.state, fast_settings()).unwrap();

    let token = provider.access_token().await.expect("app-only token");
    let cached = provider
        .access_token()
        .await
        .expect("cached app-only token");

    assert_eq!(cached, token);
    let active = introspect(token.expose()).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["username"], client_id.as_str());
    assert!(!dir.state.directory.join("tokens").exists());
}

/// Approves or denies the device authorization of `user_code`.
async fn decide_device(user_code: &str, action: &str, user: &str) {
    let response = http()
        .get(format!("{}/device", stack("STACK_OAUTH_ISSUER")))
        .query(&[
            ("user_code", user_code),
            ("action", action),
            ("login_hint", user),
        ])
        .send()
        .await
        .expect("device decision request");
    assert!(
        response.status().is_success(),
        "device decision returned {}",
        response.status()
    );
}

#[tokio::test]
async fn token_device_grant_end_to_end() {
    let dir = state_dir();
    let user = mail_address(&unique("device"));
    let account = account(&user, Grant::DeviceCode);
    let client = Arc::new(token_client(&account));
    let device = client.start_device().await.expect("device authorization");
    assert!(!device.user_code().is_empty());
    assert!(device.verification_uri().ends_with("/device"));

    let started = Instant::now();
    let device = Arc::new(device);
    let poll = tokio::spawn({
        let (client, device) = (Arc::clone(&client), Arc::clone(&device));
        async move { client.poll_device(&device).await }
    });
    // Approve after the first poll was answered authorization_pending.
    tokio::time::sleep(Duration::from_millis(300)).await;
    decide_device(device.user_code(), "approve", &user).await;
    let update = poll.await.unwrap().expect("device grant tokens");

    assert!(started.elapsed() >= device.interval(), "polled only once");
    let active = introspect(update.access_token.expose()).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["username"], user.as_str());

    let refresh_token = update.refresh_token.clone().expect("refresh token issued");
    let tokens =
        StoredTokens::authorized(stack("STACK_OAUTH_TOKEN_URL"), update, SystemTime::now());
    TokenStore::new(&dir.state).save(ACCOUNT, &tokens).unwrap();
    let provider = TokenProvider::with_settings(ACCOUNT, &account, &dir.state, fast_settings());
    let provider = provider.expect("provider");
    let cached = provider.access_token().await.expect("access token");
    let forced = provider.force_refresh(&cached).await.expect("refresh");

    assert_ne!(forced, cached);
    assert_ne!(stored_refresh_token(&dir.state), refresh_token);
}

#[tokio::test]
async fn token_device_grant_denied() {
    let user = mail_address(&unique("device-deny"));
    let client = token_client(&account(&user, Grant::DeviceCode));
    let device = client.start_device().await.expect("device authorization");

    decide_device(device.user_code(), "deny", &user).await;
    let error = client.poll_device(&device).await.unwrap_err();

    assert_eq!(error.classification(), Classification::AccessDenied);
    assert!(
        error.to_string().contains("mailbridge authorize support"),
        "{error}"
    );
}

fn write_token_file(state: &State, content: &str, mode: u32) -> std::path::PathBuf {
    let directory = state.directory.join("tokens");
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join(format!("{ACCOUNT}.json"));
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[tokio::test]
async fn token_file_readable_by_others_rejected() {
    let dir = state_dir();
    let (account, _) = signed_in(&dir.state, fast_settings()).await;
    let path = TokenStore::new(&dir.state).path(ACCOUNT).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let error = TokenProvider::new(ACCOUNT, &account, &dir.state).unwrap_err();

    assert_eq!(error.kind(), "permissions");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn token_file_corrupt_rejected() {
    let dir = state_dir();
    let account = account(&mail_address(&unique("corrupt")), Grant::AuthorizationCode);
    let path = write_token_file(&dir.state, "{\"version\": 1, \"token_url\": ", 0o600);

    let error = TokenProvider::new(ACCOUNT, &account, &dir.state).unwrap_err();

    assert_eq!(error.kind(), "corrupt");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("mailbridge authorize support"),
        "{message}"
    );
}

/// Restores the server's defaults when dropped, even after a failed assert.
struct RestoreControl;

impl Drop for RestoreControl {
    fn drop(&mut self) {
        let restore = || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(control(json!({
                "access_token_lifetime": 3600,
                "device_expires_in": 600,
                "fail": {"endpoint": "token", "count": 0},
            })));
        };
        // A runtime cannot start inside the test's runtime thread.
        let _ = std::thread::spawn(restore).join();
    }
}

pub(crate) async fn control(body: Value) -> Value {
    let response = http()
        .post(stack("STACK_OAUTH_CONTROL_URL"))
        .json(&body)
        .send()
        .await
        .expect("control request");
    assert!(
        response.status().is_success(),
        "control returned {}",
        response.status()
    );
    response.json().await.expect("control response is JSON")
}

async fn fail_token(mode: &str, count: u32) {
    control(json!({"fail": {"endpoint": "token", "mode": mode, "count": count}})).await;
}

#[tokio::test]
async fn token_control_cases_in_sequence() {
    let _restore = RestoreControl;

    one_refresh_for_concurrent_callers().await;
    one_refresh_across_providers().await;
    failure_modes_classified().await;
    invalid_grant_rechecked_then_flagged().await;
    hang_times_out_and_retries().await;
    device_code_expires().await;
}

/// With 5 s tokens, 50 callers share one refresh. Two refreshes would use
/// one refresh token twice, which the server answers by revoking the
/// family, or would hand out different tokens.
async fn one_refresh_for_concurrent_callers() {
    control(json!({"access_token_lifetime": 5})).await;
    let dir = state_dir();
    let (_, provider) = signed_in(&dir.state, fast_settings()).await;

    let calls = (0..50).map(|_| {
        let provider = provider.clone();
        tokio::spawn(async move { provider.access_token().await })
    });
    let tokens: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|result| result.unwrap().expect("access token"))
        .collect();

    assert!(
        tokens.iter().all(|token| *token == tokens[0]),
        "callers got different tokens"
    );
    let stored = stored_refresh_token(&dir.state);
    assert_eq!(introspect(stored.expose()).await["active"], true);
    let active = introspect(tokens[0].expose()).await;
    assert_eq!(active["active"], true);

    // The token is refreshed once less than its margin (0.5 s) is left.
    let expires_at = TokenStore::new(&dir.state)
        .load(ACCOUNT)
        .unwrap()
        .unwrap()
        .access_token_expires_at
        .expect("expiry stored");
    let refresh_at = expires_at - Duration::from_millis(400);
    tokio::time::sleep(
        refresh_at
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    )
    .await;
    let renewed = provider.access_token().await.expect("renewed token");

    assert_ne!(
        renewed, tokens[0],
        "the token was not refreshed before its expiry"
    );
    control(json!({"access_token_lifetime": 3600})).await;
}

/// Two providers of one account on one state directory, as `mailbridge
/// run` and `mailbridge check` would have, refresh 2 s tokens for 6 s.
/// Without the lock of the token store, both would send the same refresh
/// token, and the server would reject the second with `invalid_grant` and
/// revoke the family.
async fn one_refresh_across_providers() {
    control(json!({"access_token_lifetime": 2})).await;
    let dir = state_dir();
    let (account, first) = signed_in(&dir.state, fast_settings()).await;
    let second =
        TokenProvider::with_settings(ACCOUNT, &account, &dir.state, fast_settings()).unwrap();

    let deadline = Instant::now() + Duration::from_secs(6);
    let callers = [first, second].map(|provider| {
        tokio::spawn(async move {
            let mut tokens = Vec::new();
            while Instant::now() < deadline {
                let token = provider.access_token().await;
                tokens.push(token.map_err(|error| error.to_string()));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokens
        })
    });
    let results = futures::future::join_all(callers).await;
    control(json!({"access_token_lifetime": 3600})).await;

    for (index, result) in results.into_iter().enumerate() {
        let tokens = result.expect("caller task");
        assert!(
            tokens.len() > 10,
            "provider {index} made {} calls",
            tokens.len()
        );
        let failures: Vec<_> = tokens
            .iter()
            .filter_map(|token| token.as_ref().err())
            .collect();
        assert!(
            failures.is_empty(),
            "provider {index} failed {} of {} calls, first: {}",
            failures.len(),
            tokens.len(),
            failures[0]
        );
    }
    let stored = stored_refresh_token(&dir.state);
    assert_eq!(
        introspect(stored.expose()).await["active"],
        true,
        "the stored refresh token was revoked"
    );
}

async fn failure_modes_classified() {
    let dir = state_dir();
    let (_, provider) = signed_in(&dir.state, fast_settings()).await;
    let mut token = provider.access_token().await.expect("access token");

    for mode in ["500", "503"] {
        fail_token(mode, 1).await;
        let started = Instant::now();
        let renewed = provider.force_refresh(&token).await;

        let renewed = renewed.unwrap_or_else(|error| panic!("{mode} was not retried: {error}"));
        assert_ne!(renewed, token);
        if mode == "503" {
            assert!(
                started.elapsed() >= Duration::from_secs(1),
                "Retry-After ignored"
            );
        }
        token = renewed;
    }

    fail_token("500", 20).await;
    let error = provider.force_refresh(&token).await.unwrap_err();
    fail_token("500", 0).await;
    assert!(error.is_transient(), "{error}");
    assert_eq!(error.oauth2().unwrap().status(), Some(500));

    // A retry would succeed, because each failure is injected once.
    let cases = [
        ("invalid_client", Classification::InvalidClient),
        ("garbage", Classification::InvalidResponse),
    ];
    for (mode, classification) in cases {
        fail_token(mode, 1).await;
        let error = provider.force_refresh(&token).await.unwrap_err();

        assert_eq!(
            error.oauth2().unwrap().classification(),
            classification,
            "{mode}"
        );
        assert!(!provider.needs_authorization(), "{mode}");
    }

    let renewed = provider
        .force_refresh(&token)
        .await
        .expect("refresh after failures");
    assert_ne!(renewed, token);
}

async fn invalid_grant_rechecked_then_flagged() {
    let dir = state_dir();
    let (account, provider) = signed_in(&dir.state, fast_settings()).await;
    let token = provider.access_token().await.expect("access token");

    fail_token("invalid_grant", 1).await;
    let recovered = provider
        .force_refresh(&token)
        .await
        .expect("re-check succeeded");
    assert!(!provider.needs_authorization());

    let kept_refresh_token = stored_refresh_token(&dir.state);
    fail_token("invalid_grant", 2).await;
    let error = provider.force_refresh(&recovered).await.unwrap_err();

    assert_eq!(error.kind(), "invalid_grant");
    assert!(provider.needs_authorization());
    assert!(
        error.to_string().contains("mailbridge authorize support"),
        "{error}"
    );
    assert_eq!(
        stored_refresh_token(&dir.state),
        kept_refresh_token,
        "the refresh token was not kept"
    );

    // No request is sent for a refresh token that was rejected for good.
    let again = provider.force_refresh(&recovered).await.unwrap_err();
    assert_eq!(again.kind(), "needs_authorization");

    // A new sign-in stores a new refresh token, which the provider adopts.
    store_refresh_token(&dir.state, authorize(&account).await);
    let token = provider
        .access_token()
        .await
        .expect("token after a new sign-in");
    assert_eq!(introspect(token.expose()).await["active"], true);
    assert!(!provider.needs_authorization());
}

async fn hang_times_out_and_retries() {
    let dir = state_dir();
    let mut settings = fast_settings();
    settings.http.request_timeout = Duration::from_millis(500);
    let (_, provider) = signed_in(&dir.state, settings).await;

    fail_token("hang", 1).await;
    let started = Instant::now();
    let token = provider
        .access_token()
        .await
        .expect("token after a timeout");

    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "no request timed out"
    );
    assert_eq!(introspect(token.expose()).await["active"], true);
}

async fn device_code_expires() {
    control(json!({"device_expires_in": 1})).await;
    let user = mail_address(&unique("device-expired"));
    let client = token_client(&account(&user, Grant::DeviceCode));
    let device = client.start_device().await.expect("device authorization");
    control(json!({"device_expires_in": 600})).await;

    let error = client.poll_device(&device).await.unwrap_err();

    assert_eq!(error.classification(), Classification::ExpiredToken);
}

/// Signs `account` in by the authorization-code grant.
async fn authorize(account: &Account) -> TokenUpdate {
    crate::signin::authorize(ACCOUNT, account).await
}

/// Stores the refresh token of `update` without its access token, so that
/// the first `access_token()` must refresh.
fn store_refresh_token(state: &State, update: TokenUpdate) -> RefreshToken {
    let tokens = crate::signin::store_refresh_token(ACCOUNT, state, update);
    tokens.refresh_token.expect("refresh token issued")
}
