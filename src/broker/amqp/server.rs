//! The AMQP server of a broker: its URL, TLS settings and the opening of a
//! connection. Logs and errors name the host, port and virtual host, never
//! the URL, because the URL carries the password.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use lapin::tcp::{HandshakeResult, RustlsConnector, TcpStream};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};

use crate::broker::PublishError;
use crate::broker::error::redact;
use crate::config::Amqp;

/// Time allowed for the TCP connection, per address of the host.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed from the TCP connection to the end of connection.open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Connection settings of an AMQP server. They contain the password, so
/// the type has no Debug on purpose.
pub(in crate::broker) struct Server {
    uri: AMQPUri,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Host without IPv6 brackets, as TCP and TLS take it.
    pub(in crate::broker) host: String,
    pub(in crate::broker) port: u16,
    pub(in crate::broker) vhost: String,
}

impl Server {
    /// Reads the `url` and `ca_file` of broker `broker`.
    pub(in crate::broker) fn new(broker: &str, amqp: &Amqp) -> Result<Self, PublishError> {
        let text = amqp.url.expose();
        let invalid = |reason: String| PublishError::Config {
            broker: broker.to_owned(),
            reason: format!("invalid url: {}", redact(&reason, [text])),
            fix: "write it as amqp://user:password@host:5672/vhost".to_owned(),
        };
        let url = url::Url::parse(text).map_err(|err| invalid(err.to_string()))?;
        let mut uri: AMQPUri = text.parse().map_err(invalid)?;

        // amq-protocol-uri 7.2 takes the host from Url::domain, which is
        // empty for an IP address, and then falls back to "localhost".
        let host = match url.host() {
            Some(url::Host::Ipv6(address)) => address.to_string(),
            Some(host) => host.to_string(),
            None => return Err(invalid("the URL has no host".to_owned())),
        };
        uri.authority.host = host.clone();

        let tls = match uri.scheme {
            AMQPScheme::AMQPS => Some(tls_config(broker, amqp)?),
            AMQPScheme::AMQP => None,
        };

        Ok(Self {
            port: uri.authority.port,
            vhost: uri.vhost.clone(),
            host,
            tls,
            uri,
        })
    }

    /// Returns `host:port`, with an IPv6 address in brackets.
    pub(in crate::broker) fn address(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }

    /// Opens a connection, over TLS for `amqps://`.
    pub(in crate::broker) async fn open(&self, broker: &str) -> Result<Connection, PublishError> {
        let name = format!("mailbridge {broker}");
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let handshake = handshake(self.tls.clone(), self.host.clone(), self.port);
        let connecting = Connection::connector(self.uri.clone(), Box::new(handshake), properties);

        match tokio::time::timeout(OPEN_TIMEOUT, connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(err)) => Err(self.connect_error(broker, &err)),
            Err(_elapsed) => Err(PublishError::Connect {
                broker: broker.to_owned(),
                address: self.address(),
                reason: format!("no AMQP handshake within {} s", OPEN_TIMEOUT.as_secs()),
                fix: Some("check that the port is an AMQP server and the scheme fits it".into()),
                transient: true,
            }),
        }
    }

    /// Removes the password from a message of lapin or the server.
    pub(in crate::broker) fn redact(&self, text: &str) -> String {
        redact(text, [self.uri.authority.userinfo.password.as_str()])
    }

    fn connect_error(&self, broker: &str, err: &lapin::Error) -> PublishError {
        let (transient, fix) = connect_failure(err, &self.address());

        PublishError::Connect {
            broker: broker.to_owned(),
            address: self.address(),
            reason: self.redact(&err.to_string()),
            fix: Some(fix),
            transient,
        }
    }
}

fn tls_config(broker: &str, amqp: &Amqp) -> Result<Arc<rustls::ClientConfig>, PublishError> {
    crate::tls::client_config(amqp.ca_file.as_deref()).map_err(|err| PublishError::Config {
        broker: broker.to_owned(),
        reason: err.to_string(),
        fix: "set ca_file to a PEM file of the CA that signed the server's certificate".into(),
    })
}

/// Returns the blocking TCP and TLS connect that lapin runs on its own
/// thread. lapin 2.5 takes TLS settings only as PEM text, so a rustls
/// configuration with the platform roots goes in through this connector.
#[allow(
    clippy::result_large_err,
    reason = "lapin's connector fixes the HandshakeResult type"
)]
fn handshake(
    tls: Option<Arc<rustls::ClientConfig>>,
    host: String,
    port: u16,
) -> impl FnOnce(&AMQPUri) -> HandshakeResult + Send + Sync + 'static {
    move |_uri| {
        let stream = TcpStream::connect_timeout((host.as_str(), port), TCP_CONNECT_TIMEOUT)?;
        let stream = match tls {
            Some(config) => stream.into_rustls(&RustlsConnector::from(config), &host)?,
            None => stream,
        };
        stream.set_nonblocking(true)?;

        Ok(stream)
    }
}

/// Tells whether a failed connection may work later, and what to check.
fn connect_failure(err: &lapin::Error, address: &str) -> (bool, String) {
    use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};

    match err {
        // rustls reports certificate and protocol failures as InvalidData.
        lapin::Error::IOError(io) if io.kind() == io::ErrorKind::InvalidData => (
            false,
            format!(
                "check that the server's certificate is signed by a platform CA or one in \
                 ca_file and names the host of {address}"
            ),
        ),
        lapin::Error::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => (
                false,
                "check the user name and password in the broker's url".into(),
            ),
            AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => (
                false,
                "check that the virtual host in the url exists and the user may open it".into(),
            ),
            _ => (true, "check the AMQP server's log".into()),
        },
        _ => (
            true,
            format!("check that an AMQP server listens on {address}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn server(url: &str) -> Result<Server, PublishError> {
        let amqp = Amqp {
            url: Secret::new(url),
            ca_file: None,
        };
        Server::new("rabbit", &amqp)
    }

    #[test]
    fn ip_host_is_kept() {
        let server = server("amqp://user:hunter2@127.0.0.2:5673/%2f").unwrap();

        assert_eq!(server.host, "127.0.0.2");
        assert_eq!(server.uri.authority.host, "127.0.0.2");
        assert_eq!(server.address(), "127.0.0.2:5673");
        assert_eq!(server.vhost, "/");
        assert!(server.tls.is_none());
    }

    #[test]
    fn ipv6_host_loses_brackets_but_address_keeps_them() {
        let server = server("amqp://user:hunter2@[::1]/mail").unwrap();

        assert_eq!(server.host, "::1");
        assert_eq!(server.address(), "[::1]:5672");
        assert_eq!(server.vhost, "mail");
    }

    #[test]
    fn amqps_gets_tls_and_port_5671() {
        let server = server("amqps://user:hunter2@rabbit.example/%2f").unwrap();

        assert!(server.tls.is_some());
        assert_eq!(server.port, 5671);
    }

    #[test]
    fn invalid_url_error_hides_the_url() {
        let err = server("amqp:hunter2").err().unwrap();

        assert_eq!(err.kind(), "config");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn refused_login_is_permanent() {
        let refused = lapin::protocol::AMQPError::from_id(403, "ACCESS_REFUSED".into()).unwrap();
        let (transient, fix) =
            connect_failure(&lapin::Error::ProtocolError(refused), "127.0.0.1:5672");

        assert!(!transient);
        assert!(fix.contains("password"), "{fix}");
    }
}
