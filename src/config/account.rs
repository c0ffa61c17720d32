//! `[accounts.NAME]`: a mailbox, the OAuth2 client that signs in to it,
//! and its IMAP and SMTP servers.

use serde::Serialize;

use super::reader::Table;
use super::secret::Secret;
use super::server::{self, Protocol, Server};
use super::values::{HttpUrl, Invalid, Port, choice};

choice! {
    /// OAuth2 provider, which selects the endpoint and scope presets.
    pub enum Provider {
        /// Microsoft identity platform (Microsoft 365, Outlook.com).
        Microsoft = "microsoft",
        /// Google (Gmail, Google Workspace).
        Google = "google",
        /// Any other authorization server; every endpoint is given.
        Generic = "generic",
    }
}

choice! {
    /// OAuth2 grant that obtains the tokens (RFC 6749, RFC 8628).
    pub enum Grant {
        /// A person signs in once in a browser; the refresh token is kept.
        AuthorizationCode = "authorization_code",
        /// A person signs in on another device with a user code.
        DeviceCode = "device_code",
        /// App-only access with the client's own credentials.
        ClientCredentials = "client_credentials",
    }
}

choice! {
    /// SASL mechanism that carries the access token.
    pub enum Mechanism {
        /// Google's and Microsoft's `XOAUTH2`.
        Xoauth2 = "xoauth2",
        /// `OAUTHBEARER` of RFC 7628.
        Oauthbearer = "oauthbearer",
    }
}

/// One mailbox and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    /// Address of the mailbox that is opened, also sent as the SASL user.
    /// Required.
    pub address: String,
    /// Identity that signs in, such as a delegate of a shared mailbox.
    /// Default: the address.
    pub login_hint: String,
    /// OAuth2 client settings. Required.
    pub oauth2: OAuth2,
    /// IMAP server, needed by inbound pipelines. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap: Option<Server>,
    /// SMTP submission server, needed by outbound pipelines. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp: Option<Server>,
}

/// OAuth2 client of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OAuth2 {
    /// Provider, which selects endpoint and scope presets. Required.
    pub provider: Provider,
    /// Grant used to get tokens. Default: `authorization_code`.
    pub grant: Grant,
    /// Client (application) ID registered with the provider. Required.
    pub client_id: String,
    /// Client secret, for confidential clients. Required by
    /// `client_credentials`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// Microsoft tenant ID or domain. Default: `organizations` for
    /// microsoft, none for the other providers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Scopes requested. Default: empty, which means the provider preset.
    pub scopes: Vec<String>,
    /// Authorization endpoint. Default: the provider preset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorize_url: Option<String>,
    /// Token endpoint. Default: the provider preset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// Device authorization endpoint (RFC 8628). Default: the provider preset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_authorization_url: Option<String>,
    /// Loopback port of the redirect URI (RFC 8252), only for
    /// `authorization_code`. Default: a free port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_port: Option<u16>,
    /// SASL mechanism. Default: `xoauth2`.
    pub mechanism: Mechanism,
}

/// Reads one `[accounts.NAME]` table.
pub(crate) fn read(mut table: Table<'_>) -> Option<Account> {
    let address = table.require_checked("address", |address: &String| check_address(address));
    let login_hint = table.get::<String>("login_hint");
    if !table.contains("oauth2") {
        let fix = "add an oauth2 table with provider and client_id";
        table.missing("oauth2", Some(fix.into()));
    }
    let oauth2 = table.table("oauth2").and_then(read_oauth2);
    let imap = table
        .table("imap")
        .map(|imap| server::read(imap, Protocol::Imap));
    let smtp = table
        .table("smtp")
        .map(|smtp| server::read(smtp, Protocol::Smtp));
    table.finish();

    // A server table that is present but invalid fails the account.
    let imap = imap.map(|server| server.ok_or(())).transpose().ok()?;
    let smtp = smtp.map(|server| server.ok_or(())).transpose().ok()?;
    let address = address?;
    Some(Account {
        login_hint: login_hint.unwrap_or_else(|| address.clone()),
        address,
        oauth2: oauth2?,
        imap,
        smtp,
    })
}

fn check_address(address: &str) -> Result<(), Invalid> {
    let valid = address
        .rsplit_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    match valid && !address.contains(char::is_whitespace) {
        true => Ok(()),
        false => Err(Invalid::new(
            "expected a mail address such as support@example.com",
        )),
    }
}

fn read_oauth2(mut table: Table<'_>) -> Option<OAuth2> {
    let provider = table.require::<Provider>("provider");
    let grant = table
        .get::<Grant>("grant")
        .unwrap_or(Grant::AuthorizationCode);
    let client_id = table.require::<String>("client_id");
    let client_secret = table.secret("client_secret");
    if grant == Grant::ClientCredentials {
        table.required_for("client_secret", "by grant client_credentials");
    }
    let tenant = read_tenant(&mut table, provider, grant);
    check_grant(&mut table, provider, grant);
    let endpoints = read_endpoints(&mut table, provider, grant);
    let scopes = table.get::<Vec<String>>("scopes").unwrap_or_default();
    let redirect_port = read_redirect_port(&mut table, grant);
    let mechanism = table
        .get::<Mechanism>("mechanism")
        .unwrap_or(Mechanism::Xoauth2);
    table.finish();

    let [authorize_url, token_url, device_authorization_url] = endpoints;
    Some(OAuth2 {
        provider: provider?,
        grant,
        client_id: client_id?,
        client_secret,
        tenant,
        scopes,
        authorize_url,
        token_url,
        device_authorization_url,
        redirect_port,
        mechanism,
    })
}

/// Reads the port of the loopback redirect URI, which only the browser
/// sign-in of `authorization_code` uses.
fn read_redirect_port(table: &mut Table<'_>, grant: Grant) -> Option<u16> {
    if grant != Grant::AuthorizationCode {
        let reason = "applies only to grant authorization_code, which signs in through a browser";
        table.reject(
            "redirect_port",
            Invalid::new(reason).with_fix(Some("remove it".into())),
        );
        return None;
    }

    table.get::<Port>("redirect_port").map(|port| port.0)
}

/// Reads the Microsoft tenant, which only Microsoft has.
fn read_tenant(table: &mut Table<'_>, provider: Option<Provider>, grant: Grant) -> Option<String> {
    if provider.is_some_and(|provider| provider != Provider::Microsoft) {
        let reason = "applies only to provider microsoft";
        table.reject(
            "tenant",
            Invalid::new(reason).with_fix(Some("remove it".into())),
        );
        return None;
    }
    let tenant = table.get::<String>("tenant");
    let tenant = tenant.unwrap_or_else(|| "organizations".to_owned());

    // App-only tokens are issued by one tenant, never by a shared endpoint.
    let shared = ["organizations", "common", "consumers"].contains(&tenant.as_str());
    if provider == Some(Provider::Microsoft) && grant == Grant::ClientCredentials && shared {
        let reason =
            format!("grant client_credentials needs a tenant ID or domain, not {tenant:?}");
        table.required_for(
            "tenant",
            "by grant client_credentials with provider microsoft",
        );
        table.reject("tenant", Invalid::new(reason));
    }

    Some(tenant)
}

fn check_grant(table: &mut Table<'_>, provider: Option<Provider>, grant: Grant) {
    if provider == Some(Provider::Google) && grant == Grant::ClientCredentials {
        let reason = "Google does not offer the client_credentials grant";
        let fix = "use authorization_code or device_code";
        table.reject("grant", Invalid::new(reason).with_fix(Some(fix.into())));
    }
}

/// Reads the endpoint overrides, which a generic provider must give.
fn read_endpoints(
    table: &mut Table<'_>,
    provider: Option<Provider>,
    grant: Grant,
) -> [Option<String>; 3] {
    if provider == Some(Provider::Generic) {
        table.required_for("token_url", "by provider generic");
        if grant == Grant::AuthorizationCode {
            table.required_for(
                "authorize_url",
                "by provider generic with grant authorization_code",
            );
        }
        if grant == Grant::DeviceCode {
            let condition = "by provider generic with grant device_code";
            table.required_for("device_authorization_url", condition);
        }
    }

    ["authorize_url", "token_url", "device_authorization_url"]
        .map(|key| table.get::<HttpUrl>(key).map(|url| url.0))
}
