//! Failures of token-endpoint requests, built from the HTTP status, the
//! `Retry-After` header and the body: an RFC 6749 section 5.2 error
//! object, Microsoft's extensions of it (`error_codes`, `suberror`), or
//! anything else. The request, and with it every token and secret, is
//! never part of an error. Of a 2xx body, which may contain issued tokens,
//! only the fields of an error object are shown.

use std::fmt;
use std::time::{Duration, SystemTime};

use super::aadsts;

/// Maximum characters kept of a description or of a non-JSON error body.
const MAX_TEXT_CHARS: usize = 300;

/// Category of a token-endpoint failure, which decides its handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    /// `invalid_request`: the request is malformed or misses a parameter.
    InvalidRequest,
    /// `invalid_client`: the client ID or secret is wrong, or a public
    /// client sent a secret.
    InvalidClient,
    /// `invalid_grant`: the refresh token or code expired or was revoked.
    InvalidGrant,
    /// `unauthorized_client`: the app registration does not allow the grant.
    UnauthorizedClient,
    /// `unsupported_grant_type`: the server does not offer the grant.
    UnsupportedGrantType,
    /// `invalid_scope`: a requested scope is unknown or not allowed.
    InvalidScope,
    /// `access_denied`: the user or an administrator declined (RFC 8628).
    AccessDenied,
    /// `expired_token`: the device code expired before sign-in (RFC 8628).
    ExpiredToken,
    /// `interaction_required`, `login_required` or `consent_required`
    /// (OpenID Connect): a person must sign in again.
    InteractionRequired,
    /// HTTP 429 or 5xx, a timeout, a connection failure,
    /// `temporarily_unavailable`, `server_error`, or a device-code poll
    /// that is still pending (`authorization_pending`, `slow_down`).
    Transient,
    /// A body that is neither a token response nor an error object.
    InvalidResponse,
    /// An `error` code that none of the above covers.
    Unknown,
}

impl Classification {
    /// Short stable name, for metric labels.
    pub fn kind(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::ExpiredToken => "expired_token",
            Self::InteractionRequired => "interaction_required",
            Self::Transient => "transient",
            Self::InvalidResponse => "invalid_response",
            Self::Unknown => "unknown",
        }
    }

    /// Returns whether the same request may succeed later.
    pub fn is_transient(self) -> bool {
        self == Self::Transient
    }

    /// Returns whether a person must run `mailbridge authorize` again.
    pub fn needs_authorization(self) -> bool {
        matches!(
            self,
            Self::InvalidGrant
                | Self::AccessDenied
                | Self::ExpiredToken
                | Self::InteractionRequired
        )
    }

    /// Classifies an RFC 6749, RFC 8628 or OpenID Connect `error` code.
    pub fn from_code(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            "access_denied" => Self::AccessDenied,
            "expired_token" => Self::ExpiredToken,
            "interaction_required" | "login_required" | "consent_required" => {
                Self::InteractionRequired
            }
            "temporarily_unavailable" | "server_error" | "authorization_pending" | "slow_down" => {
                Self::Transient
            }
            _ => Self::Unknown,
        }
    }
}

/// The fields of an RFC 6749 section 5.2 error object that a classifier
/// needs. Texts are cut after 300 characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorResponse {
    /// `error`, such as `invalid_grant`.
    pub error: String,
    /// First line of `error_description`, without Microsoft's trailing
    /// `Trace ID` and later parts.
    pub description: Option<String>,
    /// Microsoft's `error_codes` merged with the `AADSTS` codes found in
    /// the description.
    pub codes: Vec<u32>,
    /// Microsoft's `suberror`, such as `token_expired` or `basic_action`.
    pub suberror: Option<String>,
}

/// A failed token request. `Display` names the account, the failure and
/// the fix, such as the `mailbridge authorize ACCOUNT` command to run.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.message())]
pub struct OAuth2Error {
    account: String,
    classification: Classification,
    status: Option<u16>,
    response: Option<ErrorResponse>,
    retry_after: Option<Duration>,
    /// Reason the body is invalid, or an excerpt of a non-2xx, non-JSON body.
    detail: Option<String>,
    timed_out: bool,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl OAuth2Error {
    /// Builds the error from a token-endpoint response of `account`.
    /// `now` turns an HTTP-date `Retry-After` into a delay.
    pub fn from_response(account: &str, response: &oauth2::HttpResponse, now: SystemTime) -> Self {
        let retry_after = response
            .headers()
            .get(oauth2::http::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok());

        let status = response.status().as_u16();
        Self::from_parts(account, status, retry_after, response.body(), now)
    }

    /// Builds the error from the parts of a response: the HTTP status, the
    /// `Retry-After` header (seconds or an HTTP date) and the body. A 2xx
    /// status means the body failed to parse as a token response.
    pub fn from_parts(
        account: &str,
        status: u16,
        retry_after: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Self {
        let response = parse_error_object(body);
        let classification = classify(status, response.as_ref());
        let mut error = Self::new(account, classification);
        error.status = Some(status);
        error.retry_after = retry_after.and_then(|value| parse_retry_after(value, now));
        if response.is_none() {
            error.detail = Some(describe_body(status, body));
        }

        error.response = response;
        error
    }

    /// Builds the error for a request that got no response: the connection
    /// failed, or no response came in time (`timed_out`). Both are transient.
    pub fn transport(
        account: &str,
        timed_out: bool,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        let mut error = Self::new(account, Classification::Transient);
        error.timed_out = timed_out;
        error.source = Some(source.into());
        error
    }

    fn new(account: &str, classification: Classification) -> Self {
        Self {
            account: account.to_owned(),
            classification,
            status: None,
            response: None,
            retry_after: None,
            detail: None,
            timed_out: false,
            source: None,
        }
    }

    /// Returns the account whose token request failed.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Returns the category of the failure.
    pub fn classification(&self) -> Classification {
        self.classification
    }

    /// Short stable name, for metric labels, such as `invalid_grant`.
    pub fn kind(&self) -> &'static str {
        self.classification.kind()
    }

    /// Returns whether a retry with backoff may succeed.
    pub fn is_transient(&self) -> bool {
        self.classification.is_transient()
    }

    /// Returns whether the account needs `mailbridge authorize` again. A
    /// caller should keep the refresh token and re-check once after a
    /// delay before marking the account, in case the rejection was passing.
    pub fn needs_authorization(&self) -> bool {
        self.classification.needs_authorization()
    }

    /// Returns the HTTP status, when a response came.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// Returns the parsed error object, when the body was one.
    pub fn response(&self) -> Option<&ErrorResponse> {
        self.response.as_ref()
    }

    /// Returns whether the request got no response in time.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Returns the delay from `Retry-After`, when the response had a valid one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Returns the hint for the first known Microsoft `AADSTS` code of the
    /// response.
    pub fn hint(&self) -> Option<&'static aadsts::Hint> {
        aadsts::first_hint(&self.response.as_ref()?.codes)
    }

    fn message(&self) -> String {
        let mut text = format!("token request for account {} ", self.account);
        text.push_str(&self.failure());
        if let Some(hint) = self.hint() {
            text.push_str(&format!(". AADSTS{} means {}", hint.code, hint.text));
        }

        text.push_str("; ");
        text.push_str(&self.action());
        text
    }

    fn failure(&self) -> String {
        let status = self.status.map(|status| format!(" (HTTP {status})"));
        let status = status.unwrap_or_default();
        match (&self.response, &self.source) {
            (Some(response), _) => {
                let error = &response.error;
                match &response.description {
                    Some(description) => format!("failed with {error}{status}: {description}"),
                    None => format!("failed with {error}{status}"),
                }
            }
            (None, Some(source)) if self.timed_out => format!("timed out: {source}"),
            (None, Some(source)) => format!("failed to reach the token endpoint: {source}"),
            (None, None) => {
                let detail = self.detail.as_deref().unwrap_or("no details");
                format!("failed with an unexpected response{status}: {detail}")
            }
        }
    }

    fn action(&self) -> String {
        let account = &self.account;
        let settings = format!("accounts.{account}.oauth2");
        match self.classification {
            class if class.needs_authorization() => {
                format!("run `mailbridge authorize {account}` to sign in again")
            }
            Classification::InvalidClient => {
                format!("check {settings}.client_id and client_secret")
            }
            Classification::InvalidScope => format!("check {settings}.scopes"),
            Classification::UnauthorizedClient | Classification::UnsupportedGrantType => {
                format!("check {settings}.grant against the app registration")
            }
            Classification::Transient => match self.retry_after {
                Some(delay) => format!("retry after {}", humantime::format_duration(delay)),
                None => "retry later with backoff".to_owned(),
            },
            Classification::InvalidResponse => format!("check {settings}.token_url"),
            _ => format!("check the settings in {settings}"),
        }
    }
}

/// Returns at most `max_chars` characters of `text`, with `…` appended
/// when something was cut.
pub(crate) fn excerpt(text: &str, max_chars: usize) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(max_chars).collect();
    match chars.next() {
        Some(_) => format!("{head}…"),
        None => head,
    }
}

fn classify(status: u16, response: Option<&ErrorResponse>) -> Classification {
    let codes = response.map(|response| response.codes.as_slice());
    let outage = aadsts::first_hint(codes.unwrap_or_default()).is_some_and(|hint| hint.transient);
    if status == 429 || (500..600).contains(&status) || outage {
        return Classification::Transient;
    }

    match response {
        Some(response) => Classification::from_code(&response.error),
        None => Classification::InvalidResponse,
    }
}

/// Parses an error object, tolerating fields of unexpected types. Returns
/// `None` unless the body is a JSON object with a string `error`.
fn parse_error_object(body: &[u8]) -> Option<ErrorResponse> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = |key: &str| json.get(key).and_then(|value| value.as_str());
    let error = text("error")?;
    let description = text("error_description").map(clean_description);
    let error_codes: Vec<u32> = json
        .get("error_codes")
        .and_then(|codes| codes.as_array())
        .map(|codes| codes.iter().filter_map(as_code).collect())
        .unwrap_or_default();

    Some(ErrorResponse {
        error: excerpt(error, MAX_TEXT_CHARS),
        codes: aadsts::codes(&error_codes, description.as_deref()),
        description,
        suberror: text("suberror").map(|text| excerpt(text, MAX_TEXT_CHARS)),
    })
}

fn as_code(value: &serde_json::Value) -> Option<u32> {
    u32::try_from(value.as_u64()?).ok()
}

/// Keeps the first line and drops Microsoft's ` Trace ID: …` suffix.
fn clean_description(description: &str) -> String {
    let line = description.lines().next().unwrap_or_default();
    let line = line.split(" Trace ID:").next().unwrap_or_default();
    excerpt(line.trim(), MAX_TEXT_CHARS)
}

fn describe_body(status: u16, body: &[u8]) -> String {
    let json = serde_json::from_slice::<serde_json::Value>(body).is_ok();
    match (status, json) {
        (200..=299, true) => "the JSON body is not a valid token response".to_owned(),
        (200..=299, false) => "the body is not JSON".to_owned(),
        (_, _) if body.is_empty() => "the body is empty".to_owned(),
        (_, true) => "the JSON body has no string `error` field".to_owned(),
        (_, false) => {
            let text = String::from_utf8_lossy(body);
            format!("body {:?}", excerpt(text.trim(), MAX_TEXT_CHARS))
        }
    }
}

/// Parses `Retry-After` (RFC 9110 section 10.2.3): a number of seconds or
/// an HTTP date, which counts from `now` and is zero when already past.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }

    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or_default())
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
