//! Log lines of refresh failures, read through a subscriber that records
//! each event's fields as text.

use std::fmt::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tracing::field::Field;
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use super::cache::Cache;
use super::*;
use crate::config::{Mechanism, OAuth2, Provider};

/// Records each event as `name=value` pairs in the order of its fields.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl<S: Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut line = String::new();
        event.record(&mut |field: &Field, value: &dyn fmt::Debug| {
            let _ = write!(line, "{}={:?} ", field.name(), value);
        });
        self.0.lock().unwrap().push(line);
    }
}

fn account() -> Account {
    Account {
        address: "support@example.test".to_owned(),
        login_hint: "support@example.test".to_owned(),
        oauth2: OAuth2 {
            provider: Provider::Generic,
            grant: Grant::AuthorizationCode,
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

/// Builds a provider whose token file contains a refresh token, so that it
/// is not marked as needing authorization at start.
fn signed_in_provider(directory: &std::path::Path) -> TokenProvider {
    let state = State {
        directory: directory.to_path_buf(),
    };
    let update = TokenUpdate {
        access_token: AccessToken::new("AT-1"),
        expires_in: Some(Duration::from_secs(3600)),
        refresh_token: Some(RefreshToken::new("RT-1")),
        scopes: None,
    };
    let tokens = StoredTokens::authorized("http://127.0.0.1:9/token", update, SystemTime::now());
    TokenStore::new(&state).save("support", &tokens).unwrap();
    TokenProvider::new("support", &account(), &state).expect("provider")
}

/// Returns the log lines of one failed refresh that ended with the error
/// of `status` and `body`.
fn refresh_failure_lines(status: u16, body: &str) -> Vec<String> {
    let directory = tempfile::tempdir().unwrap();
    let provider = signed_in_provider(directory.path());
    let error =
        OAuth2Error::from_parts("support", status, None, body.as_bytes(), SystemTime::now());
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());

    tracing::subscriber::with_default(subscriber, || {
        let mut cache = Cache::default();
        provider
            .inner
            .refresh_failed(&mut cache, RefreshToken::new("RT-1"), error);
    });

    recorder.0.lock().unwrap().clone()
}

#[test]
fn refresh_failure_messages_distinct() {
    let cases = [
        (
            401,
            r#"{"error":"invalid_client"}"#,
            "message=Token endpoint rejected the client credentials",
        ),
        (
            400,
            r#"{"error":"invalid_scope"}"#,
            "message=Token endpoint rejected the requested scopes",
        ),
        (
            503,
            r#"{"error":"temporarily_unavailable"}"#,
            "message=Token endpoint unavailable after retries",
        ),
        (
            400,
            r#"{"error":"invalid_request"}"#,
            "message=Failed to refresh access token",
        ),
    ];

    for (status, body, message) in cases {
        let lines = refresh_failure_lines(status, body);

        assert_eq!(lines.len(), 1, "{body}: {lines:?}");
        assert!(lines[0].contains(message), "{body}: {}", lines[0]);
        assert!(
            lines[0].contains(r#"account="support""#),
            "{body}: {}",
            lines[0]
        );
    }
}

#[test]
fn invalid_client_line_names_aadsts_code() {
    let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#;

    let lines = refresh_failure_lines(401, body);

    assert!(
        lines[0].contains(r#"aadsts="AADSTS7000215""#),
        "{}",
        lines[0]
    );
}

#[test]
fn needs_authorization_line_names_aadsts_code() {
    let body = r#"{"error":"invalid_grant","error_description":"AADSTS70043: The refresh token has expired due to a sign-in frequency policy. Trace ID: 1"}"#;

    let lines = refresh_failure_lines(400, body);

    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(
        line.contains("message=Account needs authorization"),
        "{line}"
    );
    assert!(line.contains(r#"reason="invalid_grant""#), "{line}");
    assert!(line.contains(r#"aadsts="AADSTS70043""#), "{line}");
    assert!(
        line.contains(r#"command="mailbridge authorize support""#),
        "{line}"
    );
}

#[test]
fn needs_authorization_line_without_code() {
    let lines = refresh_failure_lines(400, r#"{"error":"invalid_grant"}"#);

    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("message=Account needs authorization"));
    assert!(!lines[0].contains("aadsts="), "{}", lines[0]);
}
