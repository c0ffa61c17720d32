use std::time::Duration;

use super::*;
use crate::config::{Mechanism, OAuth2, Secret, Server, Tls};

fn server(host: &str, port: u16) -> Server {
    Server {
        host: host.to_owned(),
        port,
        tls: Tls::Implicit,
        allow_plaintext: false,
        ca_file: None,
        danger_accept_invalid_certs: false,
        connect_timeout: Duration::from_secs(30),
    }
}

fn account(provider: Provider, grant: Grant) -> Account {
    let tenant = (provider == Provider::Microsoft).then(|| DEFAULT_TENANT.to_owned());
    Account {
        address: "support@example.test".to_owned(),
        login_hint: "support@example.test".to_owned(),
        oauth2: OAuth2 {
            provider,
            grant,
            client_id: "11111111-1111-1111-1111-111111111111".to_owned(),
            client_secret: None,
            tenant,
            scopes: Vec::new(),
            authorize_url: None,
            token_url: None,
            device_authorization_url: None,
            redirect_port: None,
            mechanism: Mechanism::Xoauth2,
        },
        imap: Some(server("outlook.office365.com", 993)),
        smtp: Some(server("smtp.office365.com", 587)),
    }
}

fn microsoft() -> Account {
    account(Provider::Microsoft, Grant::AuthorizationCode)
}

fn with_scopes(mut account: Account, scopes: &[&str]) -> Account {
    account.oauth2.scopes = scopes.iter().map(|scope| scope.to_string()).collect();
    account
}

fn problem_keys(account: &Account) -> Vec<String> {
    validate("support", account)
        .into_iter()
        .map(|problem| problem.key)
        .collect()
}

fn messages(account: &Account) -> String {
    let problems = validate("support", account);
    let texts: Vec<String> = problems
        .iter()
        .map(|problem| format!("{}: {} ({:?})", problem.key, problem.message, problem.fix))
        .collect();
    texts.join("\n")
}

#[test]
fn microsoft_endpoints_default_tenant() {
    let preset = resolve("support", &microsoft()).unwrap();

    let base = "https://login.microsoftonline.com/organizations/oauth2/v2.0";
    assert_eq!(preset.authorize_url, Some(format!("{base}/authorize")));
    assert_eq!(preset.token_url, format!("{base}/token"));
    assert_eq!(
        preset.device_authorization_url,
        Some(format!("{base}/devicecode"))
    );
}

#[test]
fn microsoft_endpoints_without_tenant_use_organizations() {
    let mut account = microsoft();
    account.oauth2.tenant = None;

    let preset = resolve("support", &account).unwrap();

    assert!(
        preset.token_url.contains("/organizations/"),
        "{}",
        preset.token_url
    );
}

#[test]
fn microsoft_endpoints_use_tenant() {
    for tenant in [
        "common",
        "contoso.example",
        "22222222-2222-2222-2222-222222222222",
    ] {
        let mut account = microsoft();
        account.oauth2.tenant = Some(tenant.to_owned());

        let preset = resolve("support", &account).unwrap();

        let expected = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token");
        assert_eq!(preset.token_url, expected);
    }
}

#[test]
fn microsoft_delegated_scopes_for_both_protocols() {
    let preset = resolve("support", &microsoft()).unwrap();

    let expected = [MICROSOFT_IMAP_SCOPE, MICROSOFT_SMTP_SCOPE, OFFLINE_ACCESS];
    assert_eq!(preset.scopes, expected);
    assert!(preset.offline_access);
}

#[test]
fn microsoft_scopes_only_for_imap() {
    let mut account = microsoft();
    account.smtp = None;

    let preset = resolve("support", &account).unwrap();

    assert_eq!(preset.scopes, [MICROSOFT_IMAP_SCOPE, OFFLINE_ACCESS]);
}

#[test]
fn microsoft_scopes_only_for_smtp() {
    let mut account = account(Provider::Microsoft, Grant::DeviceCode);
    account.imap = None;

    let preset = resolve("support", &account).unwrap();

    assert_eq!(preset.scopes, [MICROSOFT_SMTP_SCOPE, OFFLINE_ACCESS]);
}

#[test]
fn microsoft_client_credentials_scope() {
    let mut account = account(Provider::Microsoft, Grant::ClientCredentials);
    account.oauth2.tenant = Some("contoso.example".to_owned());

    let preset = resolve("support", &account).unwrap();

    assert_eq!(preset.scopes, [MICROSOFT_APP_ONLY_SCOPE]);
    assert!(!preset.offline_access);
}

#[test]
fn google_preset() {
    let preset = resolve(
        "gmail",
        &account(Provider::Google, Grant::AuthorizationCode),
    )
    .unwrap();

    let authorize = "https://accounts.google.com/o/oauth2/v2/auth";
    assert_eq!(preset.authorize_url.as_deref(), Some(authorize));
    assert_eq!(preset.token_url, "https://oauth2.googleapis.com/token");
    let device = "https://oauth2.googleapis.com/device/code";
    assert_eq!(preset.device_authorization_url.as_deref(), Some(device));
    assert_eq!(preset.scopes, [GOOGLE_MAIL_SCOPE]);
    assert!(preset.offline_access);
}

#[test]
fn generic_uses_configured_endpoints() {
    let mut account = account(Provider::Generic, Grant::AuthorizationCode);
    account.oauth2.authorize_url = Some("https://idp.example.test/authorize".to_owned());
    account.oauth2.token_url = Some("https://idp.example.test/token".to_owned());

    let preset = resolve("local", &account).unwrap();

    let authorize = Some("https://idp.example.test/authorize");
    assert_eq!(preset.authorize_url.as_deref(), authorize);
    assert_eq!(preset.token_url, "https://idp.example.test/token");
    assert_eq!(preset.device_authorization_url, None);
    assert!(preset.scopes.is_empty());
    assert!(preset.offline_access);
}

#[test]
fn generic_without_token_url_fails() {
    let account = account(Provider::Generic, Grant::ClientCredentials);

    let error = resolve("local", &account).unwrap_err();

    assert_eq!(error.kind(), "missing_token_url");
    assert!(
        error
            .to_string()
            .contains("set accounts.local.oauth2.token_url"),
        "{error}"
    );
}

#[test]
fn endpoint_overrides_win() {
    let mut account = microsoft();
    account.oauth2.token_url = Some("https://proxy.example.test/token".to_owned());
    account.oauth2.device_authorization_url = Some("https://proxy.example.test/device".to_owned());

    let preset = resolve("support", &account).unwrap();

    assert_eq!(preset.token_url, "https://proxy.example.test/token");
    let device = Some("https://proxy.example.test/device");
    assert_eq!(preset.device_authorization_url.as_deref(), device);
    assert!(
        preset
            .authorize_url
            .unwrap()
            .starts_with("https://login.microsoftonline.com/")
    );
}

#[test]
fn scope_override_wins() {
    let account = with_scopes(microsoft(), &[MICROSOFT_IMAP_SCOPE]);

    let preset = resolve("support", &account).unwrap();

    assert_eq!(preset.scopes, [MICROSOFT_IMAP_SCOPE]);
    assert!(
        !preset.offline_access,
        "no offline_access, no refresh token"
    );
}

#[test]
fn presets_pass_validation() {
    let accounts = [
        microsoft(),
        account(Provider::Microsoft, Grant::DeviceCode),
        account(Provider::Google, Grant::AuthorizationCode),
        account(Provider::Generic, Grant::AuthorizationCode),
    ];

    for account in accounts {
        assert_eq!(messages(&account), "");
    }
}

#[test]
fn full_delegated_override_passes() {
    let scopes = [
        MICROSOFT_IMAP_SCOPE,
        MICROSOFT_SMTP_SCOPE,
        OFFLINE_ACCESS,
        "openid",
    ];

    assert_eq!(messages(&with_scopes(microsoft(), &scopes)), "");
}

#[test]
fn office365_host_accepted_for_scopes() {
    let scopes = [
        "https://outlook.office365.com/IMAP.AccessAsUser.All",
        "https://outlook.office365.com/SMTP.Send",
        "offline_access",
    ];

    assert_eq!(messages(&with_scopes(microsoft(), &scopes)), "");
}

#[test]
fn graph_scope_rejected_with_reason() {
    let account = with_scopes(
        microsoft(),
        &[
            "https://graph.microsoft.com/IMAP.AccessAsUser.All",
            MICROSOFT_SMTP_SCOPE,
            OFFLINE_ACCESS,
        ],
    );

    let problems = validate("support", &account);

    let graph = &problems[0];
    assert_eq!(graph.key, "accounts.support.oauth2.scopes");
    assert!(
        graph.message.contains("audience is graph.microsoft.com"),
        "{}",
        graph.message
    );
    assert!(graph.fix.as_deref().unwrap().contains(MICROSOFT_IMAP_SCOPE));
}

#[test]
fn graph_scope_forms_rejected() {
    let forms = [
        "https://graph.microsoft.com/Mail.Read",
        "https://GRAPH.microsoft.com/.default",
        "graph.microsoft.com/SMTP.Send",
        "00000003-0000-0000-c000-000000000000/IMAP.AccessAsUser.All",
    ];

    for form in forms {
        let account = with_scopes(microsoft(), &[form, MICROSOFT_IMAP_SCOPE, OFFLINE_ACCESS]);
        assert!(messages(&account).contains("Microsoft Graph"), "{form}");
    }
}

#[test]
fn graph_scope_rejected_for_generic() {
    let account = account(Provider::Generic, Grant::AuthorizationCode);
    let account = with_scopes(account, &["https://graph.microsoft.com/Mail.Read"]);

    assert_eq!(problem_keys(&account), ["accounts.support.oauth2.scopes"]);
}

#[test]
fn scope_without_resource_rejected() {
    let account = with_scopes(
        microsoft(),
        &[
            "IMAP.AccessAsUser.All",
            MICROSOFT_SMTP_SCOPE,
            OFFLINE_ACCESS,
        ],
    );

    let text = messages(&account);

    assert!(text.contains("names no resource"), "{text}");
    assert!(
        text.contains("lack https://outlook.office.com/IMAP.AccessAsUser.All"),
        "{text}"
    );
}

#[test]
fn default_scope_rejected_for_delegated_grant() {
    for grant in [Grant::AuthorizationCode, Grant::DeviceCode] {
        let scopes = ["https://outlook.office365.com/.default", OFFLINE_ACCESS];
        let account = with_scopes(account(Provider::Microsoft, grant), &scopes);

        let text = messages(&account);

        assert!(
            text.contains("meant for grant client_credentials"),
            "{text}"
        );
    }
}

#[test]
fn client_credentials_needs_default_scope() {
    let mut account = account(Provider::Microsoft, Grant::ClientCredentials);
    account.oauth2.tenant = Some("contoso.example".to_owned());
    let account = with_scopes(account, &[MICROSOFT_IMAP_SCOPE]);

    let text = messages(&account);

    assert!(text.contains("needs a RESOURCE/.default scope"), "{text}");
    assert!(
        text.contains("use https://outlook.office365.com/.default"),
        "{text}"
    );
}

#[test]
fn client_credentials_default_scope_passes() {
    let mut account = account(Provider::Microsoft, Grant::ClientCredentials);
    account.oauth2.tenant = Some("contoso.example".to_owned());
    account.oauth2.client_secret = Some(Secret::new("app-secret"));

    assert_eq!(
        messages(&with_scopes(account, &[MICROSOFT_APP_ONLY_SCOPE])),
        ""
    );
}

#[test]
fn missing_offline_access_rejected() {
    let account = with_scopes(microsoft(), &[MICROSOFT_IMAP_SCOPE, MICROSOFT_SMTP_SCOPE]);

    let problems = validate("support", &account);

    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].message.contains("no refresh token"),
        "{}",
        problems[0].message
    );
    assert_eq!(problems[0].fix.as_deref(), Some("add offline_access"));
}

#[test]
fn missing_smtp_scope_rejected() {
    let account = with_scopes(microsoft(), &[MICROSOFT_IMAP_SCOPE, OFFLINE_ACCESS]);

    let text = messages(&account);

    assert!(
        text.contains("lack https://outlook.office.com/SMTP.Send"),
        "{text}"
    );
    assert!(text.contains("has an smtp server"), "{text}");
}

#[test]
fn missing_smtp_scope_ignored_without_smtp() {
    let mut account = with_scopes(microsoft(), &[MICROSOFT_IMAP_SCOPE, OFFLINE_ACCESS]);
    account.smtp = None;

    assert_eq!(messages(&account), "");
}

#[test]
fn google_override_without_mail_scope_rejected() {
    let account = account(Provider::Google, Grant::AuthorizationCode);
    let account = with_scopes(account, &["https://www.googleapis.com/auth/gmail.readonly"]);

    let text = messages(&account);

    assert!(text.contains("lack https://mail.google.com/"), "{text}");
}

#[test]
fn device_code_with_secret_rejected() {
    let mut account = account(Provider::Microsoft, Grant::DeviceCode);
    account.oauth2.client_secret = Some(Secret::new("NOT-ALLOWED"));

    let problems = validate("support", &account);

    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "accounts.support.oauth2.client_secret");
    assert_eq!(problems[0].fix.as_deref(), Some("remove client_secret"));
    assert!(!format!("{problems:?}").contains("NOT-ALLOWED"));
}

#[test]
fn authorization_code_with_secret_accepted() {
    let mut account = microsoft();
    account.oauth2.client_secret = Some(Secret::new("confidential"));

    assert_eq!(messages(&account), "");
}

#[test]
fn invalid_tenant_rejected() {
    for tenant in ["", "contoso.example/evil", "a b", "tenant?x=1"] {
        let mut account = microsoft();
        account.oauth2.tenant = Some(tenant.to_owned());

        assert_eq!(
            problem_keys(&account),
            ["accounts.support.oauth2.tenant"],
            "{tenant:?}"
        );
    }
}

#[test]
fn problems_are_lowercase() {
    let mut account = with_scopes(microsoft(), &["Mail.Read"]);
    account.oauth2.tenant = Some("bad/tenant".to_owned());

    let problems = validate("support", &account);

    assert!(problems.len() >= 3, "{problems:?}");
    for problem in problems {
        assert!(
            problem.message.starts_with(char::is_lowercase),
            "{}",
            problem.message
        );
    }
}
