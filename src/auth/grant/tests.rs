use std::time::Duration;

use oauth2::basic::BasicTokenResponse;

use super::*;
use crate::auth::presets::Preset;
use crate::config::{Grant, Mechanism, OAuth2, Provider, Secret};

fn account() -> Account {
    Account {
        address: "support@example.test".to_owned(),
        login_hint: "support@example.test".to_owned(),
        oauth2: OAuth2 {
            provider: Provider::Generic,
            grant: Grant::AuthorizationCode,
            client_id: "client".to_owned(),
            client_secret: Some(Secret::new("secret")),
            tenant: None,
            scopes: Vec::new(),
            authorize_url: None,
            token_url: None,
            device_authorization_url: None,
            redirect_port: None,
            mechanism: Mechanism::Xoauth2,
        },
        imap: None,
        smtp: None,
    }
}

fn preset(token_url: &str) -> Preset {
    Preset {
        authorize_url: None,
        token_url: token_url.to_owned(),
        device_authorization_url: None,
        scopes: vec!["imap".to_owned()],
        offline_access: true,
    }
}

#[test]
fn token_update_keeps_every_field() {
    let response: BasicTokenResponse = serde_json::from_str(
        r#"{"access_token":"AT-1","token_type":"Bearer","expires_in":3599,
            "refresh_token":"RT-2","scope":"imap smtp"}"#,
    )
    .unwrap();

    let update = token_update(&response);

    assert_eq!(update.access_token.expose(), "AT-1");
    assert_eq!(update.expires_in, Some(Duration::from_secs(3599)));
    assert_eq!(update.refresh_token.unwrap().expose(), "RT-2");
    assert_eq!(
        update.scopes,
        Some(vec!["imap".to_owned(), "smtp".to_owned()])
    );
}

#[test]
fn token_update_without_optional_fields() {
    let response: BasicTokenResponse =
        serde_json::from_str(r#"{"access_token":"AT-1","token_type":"Bearer"}"#).unwrap();

    let update = token_update(&response);

    assert_eq!(update.expires_in, None);
    assert!(update.refresh_token.is_none());
    assert_eq!(update.scopes, None);
}

#[test]
fn invalid_token_url_names_key() {
    let error = TokenClient::new(
        "support",
        &account(),
        &preset("not a url"),
        HttpSettings::default(),
    )
    .unwrap_err();

    assert_eq!(error.kind(), "invalid_url");
    let message = error.to_string();
    assert!(
        message.contains("accounts.support.oauth2.token_url"),
        "{message}"
    );
}

#[tokio::test]
async fn start_device_needs_device_url() {
    let preset = preset("http://127.0.0.1:9/token");
    let client = TokenClient::new("support", &account(), &preset, HttpSettings::default()).unwrap();

    let error = client.start_device().await.unwrap_err();

    assert_eq!(error.kind(), "missing_device_url");
    assert!(!error.is_transient());
}

#[tokio::test]
async fn refresh_connection_refused_is_transient() {
    // Port 9 (discard) has no listener on a test machine.
    let preset = preset("http://127.0.0.1:9/token");
    let client = TokenClient::new("support", &account(), &preset, HttpSettings::default()).unwrap();

    let error = client
        .refresh(&RefreshToken::new("RT-1"))
        .await
        .unwrap_err();

    assert!(error.is_transient(), "{error}");
    assert_eq!(error.status(), None);
    assert!(!error.to_string().contains("RT-1"), "{error}");
}

#[test]
fn device_authorization_debug_hides_device_code() {
    let response = serde_json::from_str(
        r#"{"device_code":"DEVICE-SECRET","user_code":"BCDF-GHJK",
            "verification_uri":"http://127.0.0.1:9/device","expires_in":600}"#,
    )
    .unwrap();
    let device = DeviceAuthorization {
        response,
        expires_at: tokio::time::Instant::now(),
    };

    let printed = format!("{device:?}");

    assert!(!printed.contains("DEVICE-SECRET"), "{printed}");
    assert!(printed.contains("BCDF-GHJK"), "{printed}");
    assert_eq!(device.interval(), Duration::from_secs(5));
}
