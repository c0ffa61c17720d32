//! Checks of an account's `oauth2` settings that depend on what the
//! provider and its mail servers accept. They find scopes that yield a
//! token IMAP or SMTP rejects, a Microsoft tenant that cannot be part of
//! an endpoint URL, and a client secret that a public client must not send.

use super::{GOOGLE_MAIL_SCOPE, MICROSOFT_APP_ONLY_SCOPE, OFFLINE_ACCESS};
use super::{MICROSOFT_IMAP_SCOPE, MICROSOFT_SMTP_SCOPE};
use crate::config::{self, Account, Config, Grant, Provider};

/// Scopes of OpenID Connect, which the Microsoft identity platform accepts
/// without a resource in front.
const OPENID_SCOPES: [&str; 4] = ["openid", "profile", "email", OFFLINE_ACCESS];

/// Application ID of Microsoft Graph, which may stand for its URL.
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// Reason that a Microsoft delegated grant needs `offline_access`.
const NO_REFRESH_TOKEN: &str = "without it Microsoft issues no refresh token, and the account \
                                needs authorization again when the access token expires";

/// One rejected setting of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, such as `accounts.support.oauth2.scopes`.
    pub key: String,
    /// Reason the value is rejected, in lowercase.
    pub message: String,
    /// Change that fixes it.
    pub fix: Option<String>,
}

/// Problems of account `name`, collected so that they can be reported
/// together.
struct Report<'a> {
    name: &'a str,
    account: &'a Account,
    problems: Vec<Problem>,
}

impl Report<'_> {
    fn add(&mut self, key: &str, message: String, fix: &str) {
        self.problems.push(Problem {
            key: format!("accounts.{}.oauth2.{key}", self.name),
            message,
            fix: Some(fix.to_owned()),
        });
    }

    fn is_microsoft(&self) -> bool {
        self.account.oauth2.provider == Provider::Microsoft
    }

    fn is_delegated(&self) -> bool {
        self.account.oauth2.grant != Grant::ClientCredentials
    }
}

/// Checks the `oauth2` settings of account `name` and returns every
/// problem found. An empty list means the settings are usable. Only scopes
/// set in the account are checked, because the presets are valid.
pub fn validate(name: &str, account: &Account) -> Vec<Problem> {
    let mut report = Report {
        name,
        account,
        problems: Vec::new(),
    };
    check_tenant(&mut report);
    check_client_secret(&mut report);
    for scope in &account.oauth2.scopes {
        check_scope(&mut report, scope);
    }
    if !account.oauth2.scopes.is_empty() {
        check_scope_list(&mut report);
    }

    report.problems
}

fn check_tenant(report: &mut Report<'_>) {
    let Some(tenant) = report.account.oauth2.tenant.as_deref() else {
        return;
    };
    let valid = tenant
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if report.is_microsoft() && (tenant.is_empty() || !valid) {
        let message = format!(
            "tenant {tenant:?} is not a tenant ID, a domain, organizations, common or consumers"
        );
        let fix = "use the directory (tenant) ID or a verified domain such as example.com";
        report.add("tenant", message, fix);
    }
}

fn check_client_secret(report: &mut Report<'_>) {
    let oauth2 = &report.account.oauth2;
    if report.is_microsoft() && oauth2.grant == Grant::DeviceCode && oauth2.client_secret.is_some()
    {
        let message = "grant device_code runs as a public client, and Microsoft rejects a \
                       client secret from a public client (AADSTS700025)"
            .to_owned();
        report.add("client_secret", message, "remove client_secret");
    }
}

fn check_scope(report: &mut Report<'_>, scope: &str) {
    if is_graph(scope) {
        let message = format!(
            "scope {scope:?} requests a Microsoft Graph token, whose audience is \
             graph.microsoft.com, and Exchange Online IMAP and SMTP reject such tokens"
        );
        let fix = format!("use {MICROSOFT_IMAP_SCOPE} and {MICROSOFT_SMTP_SCOPE}");
        report.add("scopes", message, &fix);
    } else if report.is_microsoft() && !scope.contains('/') && !OPENID_SCOPES.contains(&scope) {
        let message = format!(
            "scope {scope:?} names no resource, so the Microsoft identity platform takes it \
             as a Microsoft Graph scope, whose tokens Exchange Online IMAP and SMTP reject"
        );
        let fix = format!("write the resource in front, as in {MICROSOFT_IMAP_SCOPE}");
        report.add("scopes", message, &fix);
    } else if report.is_microsoft() {
        check_default_scope(report, scope);
    }
}

/// Checks that `.default` scopes, which request every permission of the
/// app registration, appear exactly with grant client_credentials.
fn check_default_scope(report: &mut Report<'_>, scope: &str) {
    let is_default = scope.ends_with("/.default") || scope == ".default";
    if report.is_delegated() && is_default {
        let message = format!(
            "scope {scope:?} requests every permission of the app registration and is \
             meant for grant client_credentials, not for a delegated grant"
        );
        let fix = format!(
            "list the delegated scopes, such as {MICROSOFT_IMAP_SCOPE}, {MICROSOFT_SMTP_SCOPE} \
             and {OFFLINE_ACCESS}"
        );
        report.add("scopes", message, &fix);
    } else if !report.is_delegated() && !is_default {
        let message =
            format!("grant client_credentials needs a RESOURCE/.default scope, not {scope:?}");
        report.add(
            "scopes",
            message,
            &format!("use {MICROSOFT_APP_ONLY_SCOPE}"),
        );
    }
}

/// Checks that overridden scopes still contain what the mail servers and
/// the refresh need.
fn check_scope_list(report: &mut Report<'_>) {
    for (scope, reason) in missing_scopes(report) {
        let message = format!("scopes lack {scope}, but {reason}");
        report.add("scopes", message, &format!("add {scope}"));
    }
}

/// Returns each needed scope that the account's list lacks, with the
/// reason it is needed.
fn missing_scopes(report: &Report<'_>) -> Vec<(&'static str, &'static str)> {
    let account = report.account;
    let has = |wanted: &str| {
        let scopes = &account.oauth2.scopes;
        scopes.iter().any(|scope| same_scope(scope, wanted))
    };
    let mut missing = Vec::new();
    match account.oauth2.provider {
        Provider::Microsoft if report.is_delegated() => {
            if account.imap.is_some() && !has(MICROSOFT_IMAP_SCOPE) {
                missing.push((MICROSOFT_IMAP_SCOPE, "the account has an imap server"));
            }
            if account.smtp.is_some() && !has(MICROSOFT_SMTP_SCOPE) {
                missing.push((MICROSOFT_SMTP_SCOPE, "the account has an smtp server"));
            }
            if !has(OFFLINE_ACCESS) {
                missing.push((OFFLINE_ACCESS, NO_REFRESH_TOKEN));
            }
        }
        Provider::Google if !has(GOOGLE_MAIL_SCOPE) => {
            missing.push((
                GOOGLE_MAIL_SCOPE,
                "Gmail IMAP and SMTP accept no other scope",
            ));
        }
        _ => {}
    }
    missing
}

/// Compares scopes, ignoring ASCII case and accepting outlook.office365.com
/// for outlook.office.com, since both name the Exchange Online resource.
fn same_scope(scope: &str, wanted: &str) -> bool {
    let normalize = |text: &str| {
        let lower = text.to_ascii_lowercase();
        lower.replace("://outlook.office365.com/", "://outlook.office.com/")
    };
    normalize(scope) == normalize(wanted)
}

fn is_graph(scope: &str) -> bool {
    let lower = scope.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    let resource = rest.split('/').next().unwrap_or_default();
    resource == "graph.microsoft.com" || resource == GRAPH_APP_ID
}

/// Checks the `oauth2` settings of every account of `config` and returns
/// the problems in the configuration's own form, so that they are reported
/// with the loading problems and the same exit status.
pub fn config_problems(config: &Config) -> Vec<config::Problem> {
    config
        .accounts
        .iter()
        .flat_map(|(name, account)| validate(name, account))
        .map(|problem| {
            // Names of accounts contain no dots, so the key splits cleanly.
            let path: Vec<String> = problem.key.split('.').map(str::to_owned).collect();
            let mut converted = config::Problem::new(&path, problem.message);
            converted.fix = problem.fix;
            converted
        })
        .collect()
}
