//! The HTTP client of token requests: reqwest without redirects, with
//! timeouts, wrapped so that a failed request can be classified from the
//! status, the `Retry-After` header and the body of its response. The
//! `oauth2` crate keeps only the parsed error object, which lacks both.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use oauth2::{AsyncHttpClient, ErrorResponse, HttpClientError, HttpRequest, HttpResponse};
use oauth2::{RequestTokenError, reqwest};

use crate::auth::OAuth2Error;

/// Error of one HTTP exchange, as the `oauth2` crate reports it.
pub(super) type TransportError = HttpClientError<reqwest::Error>;

/// Timeouts of token requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// Maximum time of one request, from connecting to the end of the
    /// body. Default: 30 s.
    pub request_timeout: Duration,
    /// Maximum time to establish the TCP and TLS connection. Default: 10 s.
    pub connect_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Builds the reqwest client. Redirects are not followed, so the client
/// secret and the tokens only ever go to the configured endpoints.
/// Servers are verified against the platform's root certificates, like
/// every other connection, so that a company CA installed on the host is
/// trusted; without any, reqwest's built-in Mozilla roots are used.
pub(super) fn build_client(settings: HttpSettings) -> Result<reqwest::Client, reqwest::Error> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.request_timeout)
        .connect_timeout(settings.connect_timeout);
    let builder = match crate::tls::client_config(None) {
        Ok(tls) => builder.use_preconfigured_tls(tls.as_ref().clone()),
        Err(err) => {
            tracing::warn!(error = %err, "Using built-in root certificates for token requests");
            builder
        }
    };

    builder.build()
}

/// The parts of the last response that classify a failure.
#[derive(Debug, Clone)]
struct Recorded {
    status: u16,
    retry_after: Option<String>,
    body: Vec<u8>,
}

/// A reqwest client that keeps the last response it received.
pub(super) struct Recorder<'a> {
    http: &'a reqwest::Client,
    last: Mutex<Option<Recorded>>,
}

impl<'a> Recorder<'a> {
    pub(super) fn new(http: &'a reqwest::Client) -> Self {
        Self {
            http,
            last: Mutex::new(None),
        }
    }

    fn record(&self, recorded: Option<Recorded>) {
        *self
            .last
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = recorded;
    }

    fn last(&self) -> Option<Recorded> {
        let last = self
            .last
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        last.clone()
    }

    /// Turns the failure of a request into an [`OAuth2Error`] of `account`.
    pub(super) fn error<T>(
        &self,
        account: &str,
        error: RequestTokenError<TransportError, T>,
    ) -> OAuth2Error
    where
        T: ErrorResponse + 'static,
    {
        match (error, self.last()) {
            (RequestTokenError::Request(source), _) => transport_error(account, source),
            (_, Some(last)) => OAuth2Error::from_parts(
                account,
                last.status,
                last.retry_after.as_deref(),
                &last.body,
                SystemTime::now(),
            ),
            // NOTE: only a request that could not be built fails without a
            // response. It is reported as a transport failure, which callers
            // retry a bounded number of times.
            (error, None) => OAuth2Error::transport(account, false, error.to_string()),
        }
    }
}

impl<'c> AsyncHttpClient<'c> for Recorder<'_> {
    type Error = TransportError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            self.record(None);
            let secrets = request_secrets(request.body());
            let response = self.http.call(request).await?;
            let retry_after = response
                .headers()
                .get(oauth2::http::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            self.record(Some(Recorded {
                status: response.status().as_u16(),
                retry_after,
                body: redact(response.body(), &secrets),
            }));

            Ok(response)
        })
    }
}

/// Form fields of a token request whose values are secrets: the client
/// secret, the grants' tokens and codes, and the PKCE verifier.
const SECRET_FIELDS: [&str; 5] = [
    "client_secret",
    "refresh_token",
    "code",
    "code_verifier",
    "device_code",
];

/// Returns the secret values of a form-encoded token request, each as
/// sent and decoded, for [`redact`].
fn request_secrets(body: &[u8]) -> Vec<Vec<u8>> {
    let mut secrets = Vec::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        if !SECRET_FIELDS.contains(&name.as_ref()) || value.is_empty() {
            continue;
        }
        let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
        secrets.push(encoded.into_bytes());
        secrets.push(value.into_owned().into_bytes());
    }
    secrets
}

/// Replaces each of `secrets` in a response body with `[redacted]`. A
/// server may quote the request in an error description, and that text
/// goes into error messages and logs.
///
/// NOTE: a secret is found only as it was sent or percent-decoded. A
/// server that quotes it in another encoding, such as base64, is not
/// covered.
fn redact(body: &[u8], secrets: &[Vec<u8>]) -> Vec<u8> {
    let mut body = body.to_vec();
    for secret in secrets {
        body = replace_all(&body, secret, b"[redacted]");
    }
    body
}

fn replace_all(text: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut result = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(position) = rest.windows(from.len()).position(|window| window == from) {
        result.extend_from_slice(&rest[..position]);
        result.extend_from_slice(to);
        rest = &rest[position + from.len()..];
    }
    result.extend_from_slice(rest);
    result
}

fn transport_error(account: &str, error: TransportError) -> OAuth2Error {
    match error {
        HttpClientError::Reqwest(source) => {
            let timed_out = source.is_timeout();
            OAuth2Error::transport(account, timed_out, source)
        }
        other => OAuth2Error::transport(account, false, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_request_secrets_redacted() {
        let request =
            b"grant_type=refresh_token&refresh_token=rt%2Fone&client_id=app&client_secret=s3cret";
        let body = br#"{"error":"invalid_client","error_description":"got client_secret=s3cret and rt/one, rt%2Fone for app"}"#;

        let redacted = String::from_utf8(redact(body, &request_secrets(request))).unwrap();

        assert!(!redacted.contains("s3cret"), "{redacted}");
        assert!(!redacted.contains("rt/one"), "{redacted}");
        assert!(!redacted.contains("rt%2Fone"), "{redacted}");
        assert!(redacted.contains("for app"), "{redacted}");
    }

    #[test]
    fn response_without_secrets_unchanged() {
        let request = b"grant_type=client_credentials&client_id=app&client_secret=s3cret";
        let body = br#"{"error":"invalid_client"}"#;

        assert_eq!(redact(body, &request_secrets(request)), body);
    }
}
