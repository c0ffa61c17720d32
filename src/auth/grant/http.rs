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
            let response = self.http.call(request).await?;
            let retry_after = response
                .headers()
                .get(oauth2::http::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            self.record(Some(Recorded {
                status: response.status().as_u16(),
                retry_after,
                body: response.body().clone(),
            }));

            Ok(response)
        })
    }
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
