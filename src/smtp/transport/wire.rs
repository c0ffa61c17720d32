//! Lines on an SMTP connection: commands out, replies in, and the message
//! data with its dot-stuffing (RFC 5321 section 4.5.2).
//!
//! Nothing here logs what it writes, because the AUTH command line carries
//! the access token.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::reply::{Reply, ReplyLines};

/// Maximum length of one reply line in bytes. RFC 5321 section 4.5.3.1.5
/// sets 512 bytes, but servers send longer lines, such as Microsoft 365's
/// diagnostic texts and 334 challenges.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// A byte stream that an SMTP session runs on.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Failure to exchange lines, before the server and step are known.
#[derive(Debug)]
pub(crate) enum WireError {
    /// No complete reply, or no progress writing, within the time limit.
    Timeout(Duration),
    /// The server closed the connection.
    Closed,
    /// Reading or writing failed.
    Io(io::Error),
    /// The server sent something that is not an SMTP reply.
    Protocol(String),
}

/// Reads replies from and writes commands to a stream.
pub(crate) struct Wire<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    pub(crate) fn new(stream: S) -> Self {
        Self {
            stream: BufReader::new(stream),
        }
    }

    /// Returns the stream. Bytes read ahead and not yet parsed are
    /// dropped, which STARTTLS relies on: anything sent before the TLS
    /// handshake cannot pass for a reply after it.
    pub(crate) fn into_inner(self) -> S {
        self.stream.into_inner()
    }

    /// Writes `line`, which must end with CRLF, and flushes it.
    pub(crate) async fn send(&mut self, line: &str, timeout: Duration) -> Result<(), WireError> {
        self.write(line.as_bytes(), timeout).await
    }

    /// Writes the message content and then the `.` line that ends it.
    /// Returns [`DataError::Content`] when writing the content failed, so
    /// that the server cannot have accepted the message, and
    /// [`DataError::End`] when the end line may have been sent.
    pub(crate) async fn send_data(
        &mut self,
        message: &[u8],
        timeout: Duration,
    ) -> Result<(), DataError> {
        let content = dot_stuff(message);
        self.write(&content, timeout)
            .await
            .map_err(DataError::Content)?;

        self.write(b".\r\n", timeout).await.map_err(DataError::End)
    }

    /// Reads one complete reply.
    pub(crate) async fn reply(&mut self, timeout: Duration) -> Result<Reply, WireError> {
        let read = async {
            let mut lines = ReplyLines::default();
            loop {
                let line = self.line().await?;
                if let Some(reply) = lines.push(&line).map_err(WireError::Protocol)? {
                    return Ok(reply);
                }
            }
        };

        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| WireError::Timeout(timeout))?
    }

    async fn line(&mut self) -> Result<String, WireError> {
        let mut line = Vec::new();
        let mut limited = (&mut self.stream).take(MAX_LINE_BYTES as u64 + 2);
        let read = limited
            .read_until(b'\n', &mut line)
            .await
            .map_err(WireError::Io)?;

        if read == 0 {
            return Err(WireError::Closed);
        }
        if line.last() != Some(&b'\n') {
            return match read > MAX_LINE_BYTES {
                true => Err(WireError::Protocol(format!(
                    "reply line longer than {MAX_LINE_BYTES} bytes"
                ))),
                false => Err(WireError::Closed),
            };
        }
        let text = String::from_utf8_lossy(&line);
        Ok(text.trim_end_matches(['\r', '\n']).to_owned())
    }

    async fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), WireError> {
        let write = async {
            let stream = self.stream.get_mut();
            stream.write_all(bytes).await?;
            stream.flush().await
        };

        match tokio::time::timeout(timeout, write).await {
            Err(_) => Err(WireError::Timeout(timeout)),
            Ok(Err(error)) if is_closed(&error) => Err(WireError::Closed),
            Ok(Err(error)) => Err(WireError::Io(error)),
            Ok(Ok(())) => Ok(()),
        }
    }
}

/// Failure to send the message content after DATA.
#[derive(Debug)]
pub(crate) enum DataError {
    /// Writing the content failed before its end line went out.
    Content(WireError),
    /// Writing the end line failed, so the server may have received it.
    End(WireError),
}

fn is_closed(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
    )
}

/// Returns the message with a `.` added before every line that starts
/// with `.` (RFC 5321 section 4.5.2), ending with CRLF.
fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(message.len() + message.len() / 64 + 2);
    let mut line_start = true;
    for &byte in message {
        if line_start && byte == b'.' {
            content.push(b'.');
        }
        content.push(byte);
        line_start = byte == b'\n';
    }

    if !content.ends_with(b"\r\n") {
        if content.ends_with(b"\r") {
            content.push(b'\n');
        } else {
            content.extend_from_slice(b"\r\n");
        }
    }
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn leading_dots_doubled() {
        let stuffed = dot_stuff(b".first\r\nmiddle.\r\n..two\r\n.\r\n");

        assert_eq!(stuffed, b"..first\r\nmiddle.\r\n...two\r\n..\r\n");
    }

    #[test]
    fn missing_final_crlf_added() {
        assert_eq!(dot_stuff(b"body"), b"body\r\n");
        assert_eq!(dot_stuff(b"body\r"), b"body\r\n");
        assert_eq!(dot_stuff(b""), b"\r\n");
    }

    #[test]
    fn dot_after_bare_lf_doubled() {
        assert_eq!(dot_stuff(b"a\n.b\r\n"), b"a\n..b\r\n");
    }

    #[tokio::test]
    async fn reply_read_across_lines() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut wire = Wire::new(client);

        server.write_all(b"250-one\r\n250 two\r\n").await.unwrap();
        let reply = wire.reply(SECOND).await.unwrap();

        assert_eq!(reply.code, 250);
        assert_eq!(reply.lines, ["one", "two"]);
    }

    #[tokio::test]
    async fn eof_is_closed() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut wire = Wire::new(client);

        server.write_all(b"250-one\r\n250 tw").await.unwrap();
        drop(server);

        assert!(matches!(wire.reply(SECOND).await, Err(WireError::Closed)));
    }

    #[tokio::test]
    async fn long_line_is_protocol_error() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let mut wire = Wire::new(client);

        let line = format!("250 {}\r\n", "x".repeat(MAX_LINE_BYTES + 10));
        server.write_all(line.as_bytes()).await.unwrap();

        assert!(matches!(
            wire.reply(SECOND).await,
            Err(WireError::Protocol(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_server_times_out() {
        let (client, _server) = tokio::io::duplex(1024);
        let mut wire = Wire::new(client);

        let result = wire.reply(Duration::from_secs(30)).await;

        assert!(matches!(result, Err(WireError::Timeout(after)) if after.as_secs() == 30));
    }

    #[tokio::test]
    async fn data_written_with_end_line() {
        let (client, server) = tokio::io::duplex(1024);
        let mut wire = Wire::new(client);

        wire.send_data(b"Subject: x\r\n\r\n.hidden\r\n", SECOND)
            .await
            .unwrap();
        drop(wire);
        let mut received = Vec::new();
        BufReader::new(server)
            .read_to_end(&mut received)
            .await
            .unwrap();

        assert_eq!(received, b"Subject: x\r\n\r\n..hidden\r\n.\r\n");
    }
}
