//! `mailbridge health`: a liveness probe for container runtimes, which
//! requests `/healthz` of a running `mailbridge run` on the `[metrics]
//! listen` address. The slim image has no curl, so the binary probes
//! itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use oauth2::reqwest;

/// Time limit of the whole request, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Failure of the probe. `Display` names the URL and what to check.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// No connection, no response in time, or an unreadable response.
    #[error(
        "GET {url} failed: {source}; check that mailbridge run is running with the same \
         [metrics] listen address"
    )]
    Request {
        /// The requested URL.
        url: String,
        /// Cause of the failure.
        #[source]
        source: reqwest::Error,
    },
    /// The endpoint returned a status other than 200.
    #[error("GET {url} returned HTTP {status}; check the log of mailbridge run")]
    Status {
        /// The requested URL.
        url: String,
        /// The HTTP status of the response.
        status: u16,
    },
}

/// Returns the URL of `/healthz` for the server listening on `listen`.
/// A wildcard address (`0.0.0.0`, `::`) is reached over loopback of the
/// same family.
pub fn url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/healthz", SocketAddr::new(ip, listen.port()))
}

/// Requests `/healthz` of the server on `listen`. Returns the URL when it
/// returned 200.
///
/// # Errors
///
/// [`HealthError`] for a failed request or any other status.
pub async fn probe(listen: SocketAddr) -> Result<String, HealthError> {
    let url = url(listen);
    let failed = |source| HealthError::Request {
        url: url.clone(),
        source,
    };
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(failed)?;
    let response = client.get(&url).send().await.map_err(failed)?;

    match response.status().as_u16() {
        200 => Ok(url),
        status => Err(HealthError::Status { url, status }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_reached_over_loopback() {
        let v4: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        let v6: SocketAddr = "[::]:9464".parse().unwrap();
        let fixed: SocketAddr = "10.1.2.3:80".parse().unwrap();

        assert_eq!(url(v4), "http://127.0.0.1:9464/healthz");
        assert_eq!(url(v6), "http://[::1]:9464/healthz");
        assert_eq!(url(fixed), "http://10.1.2.3:80/healthz");
    }

    #[tokio::test]
    async fn closed_port_fails() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);

        let error = probe(address).await.unwrap_err();

        assert!(matches!(error, HealthError::Request { .. }), "{error}");
        assert!(error.to_string().contains("[metrics] listen"), "{error}");
    }
}
