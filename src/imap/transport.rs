//! The byte stream under an IMAP session: TCP, optionally inside TLS, with
//! the instant of the last server output and a placeholder for the SASL
//! initial response.
//!
//! async-imap logs every command line it writes at trace level, through
//! the `log` crate. So the AUTHENTICATE line and the client response carry
//! [`SASL_PLACEHOLDER`] instead of the initial response, and
//! [`Transport`] swaps in the real base64 while writing, below any log.
//! It also passes what it reads through a [`Sanitizer`].

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::sanitize::Sanitizer;
use crate::config::Secret;

/// Bytes that the SASL authenticator hands to async-imap in place of the
/// initial response.
pub(crate) const SASL_PLACEHOLDER_RAW: &[u8] = b"mailbridge-initial-response";

/// The base64 of [`SASL_PLACEHOLDER_RAW`], as async-imap writes it.
pub(crate) const SASL_PLACEHOLDER: &str = "bWFpbGJyaWRnZS1pbml0aWFsLXJlc3BvbnNl";

/// Instant of the last bytes read from the server. Clones share it, so a
/// watcher can read it while the session waits in IDLE.
#[derive(Debug, Clone)]
pub struct Activity {
    last: Arc<Mutex<(Instant, SystemTime)>>,
}

impl Activity {
    fn new() -> Self {
        let now = (Instant::now(), SystemTime::now());
        Self {
            last: Arc::new(Mutex::new(now)),
        }
    }

    fn touch(&self) {
        let now = (Instant::now(), SystemTime::now());
        *self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = now;
    }

    /// Returns the monotonic instant of the last server output, or of the
    /// connection's start before any output.
    pub fn last(&self) -> Instant {
        self.read().0
    }

    /// Returns the wall-clock time of [`Activity::last`], for a timestamp
    /// metric.
    pub fn last_time(&self) -> SystemTime {
        self.read().1
    }

    fn read(&self) -> (Instant, SystemTime) {
        *self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// TCP, in plaintext or inside TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The stream that async-imap reads and writes.
pub(crate) struct Transport {
    stream: Stream,
    activity: Activity,
    /// The real SASL response, written in place of the next placeholder.
    sasl_response: Option<Secret>,
    /// Bytes of a rewritten line that the socket has not taken yet.
    pending: Vec<u8>,
    sanitizer: Sanitizer,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tls = matches!(self.stream, Stream::Tls(_));
        f.debug_struct("Transport")
            .field("tls", &tls)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Wraps a new plaintext TCP connection.
    pub(crate) fn plain(tcp: TcpStream) -> Self {
        Self {
            stream: Stream::Plain(tcp),
            activity: Activity::new(),
            sasl_response: None,
            pending: Vec::new(),
            sanitizer: Sanitizer::default(),
        }
    }

    /// Wraps a TLS connection, keeping the activity of `previous` for the
    /// TLS connection that STARTTLS started on it.
    pub(crate) fn tls(tls: TlsStream<TcpStream>, previous: Option<Activity>) -> Self {
        Self {
            stream: Stream::Tls(Box::new(tls)),
            activity: previous.unwrap_or_else(Activity::new),
            sasl_response: None,
            pending: Vec::new(),
            sanitizer: Sanitizer::default(),
        }
    }

    /// Returns the TCP connection of a plaintext transport, for STARTTLS.
    pub(crate) fn into_tcp(self) -> Option<(TcpStream, Activity)> {
        match self.stream {
            Stream::Plain(tcp) => Some((tcp, self.activity)),
            Stream::Tls(_) => None,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    pub(crate) fn activity(&self) -> Activity {
        self.activity.clone()
    }

    /// Arms the transport to write `base64` in place of the next
    /// [`SASL_PLACEHOLDER`]. A later call replaces an unused response.
    pub(crate) fn set_sasl_response(&mut self, base64: Secret) {
        self.sasl_response = Some(base64);
    }

    /// Writes pending bytes; `Ready(Ok)` once none are left.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let written = ready!(self.poll_write_stream(cx))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..written);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_stream(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let buf = &self.pending;
        match &mut self.stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    /// Returns `buf` with the placeholder replaced, when a response is armed
    /// and `buf` contains the placeholder.
    fn rewrite(&mut self, buf: &[u8]) -> Option<Vec<u8>> {
        let placeholder = SASL_PLACEHOLDER.as_bytes();
        let start = buf
            .windows(placeholder.len())
            .position(|window| window == placeholder)?;
        let secret = self.sasl_response.take()?;

        let mut line = Vec::with_capacity(buf.len() + secret.expose().len());
        line.extend_from_slice(&buf[..start]);
        line.extend_from_slice(secret.expose().as_bytes());
        line.extend_from_slice(&buf[start + placeholder.len()..]);
        Some(line)
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = match &mut this.stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        };

        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
            this.sanitizer.apply(&mut buf.filled_mut()[before..]);
        }
        polled
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;

        // A rewritten line is taken whole; what the socket does not take
        // now goes out on the next write or flush.
        if let Some(line) = this.rewrite(buf) {
            this.pending = line;
            if let Poll::Ready(Err(error)) = this.poll_pending(cx) {
                return Poll::Ready(Err(error));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        match &mut this.stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;

        match &mut this.stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn placeholder_is_base64_of_raw() {
        assert_eq!(STANDARD.encode(SASL_PLACEHOLDER_RAW), SASL_PLACEHOLDER);
    }

    async fn pair() -> (Transport, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = TcpStream::connect(address).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Transport::plain(client), server)
    }

    #[tokio::test]
    async fn placeholder_replaced_once() {
        let (mut transport, mut server) = pair().await;
        transport.set_sasl_response(Secret::new("c2VjcmV0"));

        let line = format!("A0001 AUTHENTICATE XOAUTH2 {SASL_PLACEHOLDER}\r\n");
        transport.write_all(line.as_bytes()).await.unwrap();
        transport.write_all(line.as_bytes()).await.unwrap();
        transport.flush().await.unwrap();
        drop(transport);

        let mut received = String::new();
        server.read_to_string(&mut received).await.unwrap();
        let expected = format!("A0001 AUTHENTICATE XOAUTH2 c2VjcmV0\r\n{line}");
        assert_eq!(received, expected);
    }

    #[tokio::test]
    async fn unarmed_placeholder_kept() {
        let (mut transport, mut server) = pair().await;

        transport
            .write_all(SASL_PLACEHOLDER.as_bytes())
            .await
            .unwrap();
        transport.flush().await.unwrap();
        drop(transport);

        let mut received = String::new();
        server.read_to_string(&mut received).await.unwrap();
        assert_eq!(received, SASL_PLACEHOLDER);
    }

    #[tokio::test]
    async fn read_records_activity() {
        let (mut transport, mut server) = pair().await;
        let activity = transport.activity();
        let before = activity.last();

        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        server.write_all(b"* OK ready\r\n").await.unwrap();
        let mut buffer = [0u8; 16];
        let read = transport.read(&mut buffer).await.unwrap();

        assert!(read > 0);
        assert!(activity.last() > before);
    }
}
