use std::cell::Cell;
use std::time::{Duration, SystemTime};

use super::retry::{self, Next};
use super::*;
use crate::config::{Mechanism, OAuth2, Provider};

fn error(status: u16, retry_after: Option<&str>, body: &str) -> OAuth2Error {
    OAuth2Error::from_parts(
        "support",
        status,
        retry_after,
        body.as_bytes(),
        SystemTime::now(),
    )
}

fn unavailable(retry_after: Option<&str>) -> OAuth2Error {
    error(503, retry_after, r#"{"error":"temporarily_unavailable"}"#)
}

fn invalid_grant() -> OAuth2Error {
    error(400, None, r#"{"error":"invalid_grant"}"#)
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(60),
        recheck_delay: Duration::from_secs(30),
    }
}

fn account(grant: Grant) -> Account {
    Account {
        address: "support@example.test".to_owned(),
        login_hint: "support@example.test".to_owned(),
        oauth2: OAuth2 {
            provider: Provider::Generic,
            grant,
            client_id: "client".to_owned(),
            client_secret: None,
            tenant: None,
            scopes: Vec::new(),
            authorize_url: None,
            // Port 9 (discard) is never contacted by these tests.
            token_url: Some("http://127.0.0.1:9/token".to_owned()),
            device_authorization_url: None,
            redirect_port: None,
            mechanism: Mechanism::Xoauth2,
        },
        imap: None,
        smtp: None,
    }
}

#[test]
fn margin_is_tenth_of_lifetime() {
    assert_eq!(
        refresh_margin(Some(Duration::from_secs(5))),
        Duration::from_millis(500)
    );
    assert_eq!(
        refresh_margin(Some(Duration::from_secs(600))),
        Duration::from_secs(60)
    );
}

#[test]
fn margin_capped_at_five_minutes() {
    assert_eq!(
        refresh_margin(Some(Duration::from_secs(3599))),
        MAX_REFRESH_MARGIN
    );
    assert_eq!(
        refresh_margin(Some(Duration::from_secs(86_400))),
        MAX_REFRESH_MARGIN
    );
}

#[test]
fn margin_of_unknown_lifetime_is_maximum() {
    assert_eq!(refresh_margin(None), MAX_REFRESH_MARGIN);
}

#[test]
fn backoff_doubles_up_to_cap() {
    let policy = policy();
    let ceilings: Vec<_> = (1..=9)
        .map(|attempt| policy.backoff(attempt, 1.0))
        .collect();

    let expected = [500, 1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000];
    let expected: Vec<_> = expected.map(Duration::from_millis).to_vec();
    assert_eq!(ceilings, expected);
}

#[test]
fn backoff_full_jitter_scales_ceiling() {
    let policy = policy();

    assert_eq!(policy.backoff(3, 0.0), Duration::ZERO);
    assert_eq!(policy.backoff(3, 0.25), Duration::from_millis(500));
    assert_eq!(policy.backoff(3, 7.0), Duration::from_secs(2));
    assert_eq!(policy.backoff(u32::MAX, 0.5), Duration::from_secs(30));
}

#[test]
fn backoff_stays_within_ceiling_for_random_samples() {
    let policy = policy();
    for attempt in 1..=6 {
        let ceiling = policy.backoff(attempt, 1.0);
        for _ in 0..100 {
            let delay = policy.backoff(attempt, rand::random());
            assert!(delay <= ceiling, "attempt {attempt}: {delay:?}");
        }
    }
}

#[test]
fn next_retries_transient_until_max_attempts() {
    let policy = policy();
    let error = unavailable(None);

    assert_eq!(
        policy.next(&error, 1, false, 1.0),
        Next::Retry(Duration::from_millis(500))
    );
    assert_eq!(
        policy.next(&error, 4, false, 1.0),
        Next::Retry(Duration::from_secs(4))
    );
    assert_eq!(policy.next(&error, 5, false, 1.0), Next::Stop);
}

#[test]
fn next_waits_at_least_retry_after() {
    let policy = policy();

    assert_eq!(
        policy.next(&unavailable(Some("30")), 1, false, 1.0),
        Next::Retry(Duration::from_secs(30))
    );
    assert_eq!(
        policy.next(&unavailable(Some("0")), 3, false, 1.0),
        Next::Retry(Duration::from_secs(2))
    );
}

#[test]
fn next_stops_on_retry_after_beyond_cap() {
    assert_eq!(
        policy().next(&unavailable(Some("120")), 1, false, 1.0),
        Next::Stop
    );
}

#[test]
fn next_never_retries_configuration_errors() {
    let policy = policy();
    for code in ["invalid_client", "invalid_scope", "unauthorized_client"] {
        let error = error(400, None, &format!(r#"{{"error":"{code}"}}"#));

        assert_eq!(policy.next(&error, 1, false, 1.0), Next::Stop, "{code}");
    }
}

#[test]
fn next_rechecks_invalid_grant_once() {
    let policy = policy();

    assert_eq!(
        policy.next(&invalid_grant(), 1, false, 1.0),
        Next::Recheck(Duration::from_secs(30))
    );
    assert_eq!(policy.next(&invalid_grant(), 2, true, 1.0), Next::Stop);
}

/// Runs `retry::run` over scripted results and returns the outcome, the
/// number of requests and the time spent on the paused clock.
async fn run_script(
    mut script: Vec<Result<u32, OAuth2Error>>,
) -> (Result<u32, OAuth2Error>, usize, Duration) {
    script.reverse();
    let script = std::cell::RefCell::new(script);
    let calls = Cell::new(0);
    let started = tokio::time::Instant::now();
    let result = retry::run(
        "support",
        &policy(),
        || 1.0,
        || {
            calls.set(calls.get() + 1);
            let next = script.borrow_mut().pop().expect("script has a result");
            async move { next }
        },
    )
    .await;

    (result, calls.get(), started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn run_recovers_after_transient_failures() {
    let script = vec![Err(unavailable(Some("2"))), Err(unavailable(None)), Ok(7)];

    let (result, calls, elapsed) = run_script(script).await;

    assert_eq!(result.unwrap(), 7);
    assert_eq!(calls, 3);
    // Retry-After 2 s, then the second backoff ceiling of 1 s.
    assert_eq!(elapsed, Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn run_gives_up_after_max_attempts() {
    let mut script = Vec::new();
    for _ in 0..5 {
        script.push(Err(unavailable(None)));
    }

    let (result, calls, elapsed) = run_script(script).await;

    assert!(result.unwrap_err().is_transient());
    assert_eq!(calls, 5);
    assert_eq!(elapsed, Duration::from_millis(500 + 1000 + 2000 + 4000));
}

#[tokio::test(start_paused = true)]
async fn run_returns_invalid_client_at_once() {
    let script = vec![Err(error(401, None, r#"{"error":"invalid_client"}"#))];

    let (result, calls, elapsed) = run_script(script).await;

    assert_eq!(result.unwrap_err().kind(), "invalid_client");
    assert_eq!(calls, 1);
    assert_eq!(elapsed, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn run_rechecks_invalid_grant_after_delay() {
    let (result, calls, elapsed) = run_script(vec![Err(invalid_grant()), Ok(1)]).await;

    assert_eq!(result.unwrap(), 1);
    assert_eq!(calls, 2);
    assert_eq!(elapsed, Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn run_stops_on_second_invalid_grant() {
    let script = vec![Err(invalid_grant()), Err(invalid_grant())];

    let (result, calls, _) = run_script(script).await;

    assert_eq!(result.unwrap_err().kind(), "invalid_grant");
    assert_eq!(calls, 2);
}

fn cache_with(expires_in: Duration, lifetime: Option<Duration>, now: SystemTime) -> Cache {
    let update = TokenUpdate {
        access_token: AccessToken::new("AT-1"),
        expires_in: Some(expires_in),
        refresh_token: Some(RefreshToken::new("RT-1")),
        scopes: None,
    };
    Cache {
        tokens: Some(StoredTokens::authorized(
            "http://127.0.0.1:9/token",
            update,
            now,
        )),
        lifetime,
        ..Cache::default()
    }
}

#[test]
fn cache_usable_until_margin() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let cache = cache_with(Duration::from_secs(10), Some(Duration::from_secs(10)), now);

    assert!(cache.usable(now + Duration::from_secs(9), None).is_some());
    assert!(
        cache
            .usable(now + Duration::from_millis(9_100), None)
            .is_none()
    );
}

#[test]
fn cache_skips_rejected_token() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let cache = cache_with(Duration::from_secs(3600), None, now);

    assert!(cache.usable(now, Some(&AccessToken::new("AT-1"))).is_none());
    assert!(cache.usable(now, Some(&AccessToken::new("AT-0"))).is_some());
}

#[test]
fn cache_withholds_unsaved_token() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mut cache = cache_with(Duration::from_secs(3600), None, now);
    cache.unsaved = true;

    assert!(cache.usable(now, None).is_none());
}

#[tokio::test]
async fn provider_without_refresh_token_names_command() {
    let directory = tempfile::tempdir().unwrap();
    let state = State {
        directory: directory.path().to_path_buf(),
    };
    let provider = TokenProvider::new("support", &account(Grant::AuthorizationCode), &state)
        .expect("provider without a token file");

    assert!(provider.needs_authorization());
    let error = provider.access_token().await.unwrap_err();

    assert_eq!(error.kind(), "not_authorized");
    assert!(error.needs_authorization());
    assert!(
        error.to_string().contains("`mailbridge authorize support`"),
        "{error}"
    );
}

#[tokio::test]
async fn new_sign_in_clears_the_marking() {
    let directory = tempfile::tempdir().unwrap();
    let state = State {
        directory: directory.path().to_path_buf(),
    };
    let provider = TokenProvider::new("support", &account(Grant::AuthorizationCode), &state)
        .expect("provider without a token file");
    assert!(provider.needs_authorization());

    let update = TokenUpdate {
        access_token: AccessToken::new("AT-new"),
        expires_in: Some(Duration::from_secs(3600)),
        refresh_token: Some(RefreshToken::new("RT-new")),
        scopes: None,
    };
    let token_url = provider.preset().token_url.clone();
    let tokens = StoredTokens::authorized(token_url, update, SystemTime::now());
    TokenStore::new(&state).save("support", &tokens).unwrap();

    let token = provider
        .access_token()
        .await
        .expect("token of the new sign-in");
    assert_eq!(token, AccessToken::new("AT-new"));
    assert!(!provider.needs_authorization());
}

#[tokio::test]
async fn provider_rejects_tokens_of_other_endpoint() {
    let directory = tempfile::tempdir().unwrap();
    let state = State {
        directory: directory.path().to_path_buf(),
    };
    let store = TokenStore::new(&state);
    let update = TokenUpdate {
        access_token: AccessToken::new("AT-1"),
        expires_in: None,
        refresh_token: Some(RefreshToken::new("RT-1")),
        scopes: None,
    };
    let tokens = StoredTokens::authorized("https://other.example/token", update, SystemTime::now());
    store.save("support", &tokens).unwrap();

    let error = TokenProvider::new("support", &account(Grant::DeviceCode), &state).unwrap_err();

    assert_eq!(error.kind(), "other_issuer");
    assert!(
        error.to_string().contains("https://other.example/token"),
        "{error}"
    );
}

#[test]
fn client_credentials_provider_reads_no_file() {
    let directory = tempfile::tempdir().unwrap();
    let state = State {
        directory: directory.path().to_path_buf(),
    };
    std::fs::create_dir(directory.path().join("tokens")).unwrap();
    std::fs::write(directory.path().join("tokens/support.json"), "not json").unwrap();

    let provider = TokenProvider::new("support", &account(Grant::ClientCredentials), &state);

    assert!(!provider.unwrap().needs_authorization());
}
