//! The loopback listener of the redirect URI: plain HTTP/1.1, one `GET`
//! request per connection, and a short HTML page in response.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

/// Maximum size of a request head; a redirect with a code is far smaller.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Time a connection has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The redirect request: its query pairs and the connection to respond on.
pub(super) struct Callback {
    pub pairs: Vec<(String, String)>,
    pub stream: TcpStream,
}

/// The page shown to the browser after the redirect.
pub(super) enum Page {
    Success,
    /// The error message, which contains no token or code.
    Failure(String),
}

/// Accepts connections until one sends `GET` for `path` with a query.
/// Other requests, such as for `/favicon.ico`, get 404 and are ignored.
pub(super) async fn receive(listener: &TcpListener, path: &str) -> io::Result<Callback> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let target = match tokio::time::timeout(READ_TIMEOUT, read_target(&mut stream)).await {
            Ok(Ok(target)) => target,
            Ok(Err(error)) => {
                tracing::debug!(error = %error, "Ignoring invalid redirect request");
                continue;
            }
            Err(_) => continue,
        };
        let url = target.and_then(|target| Url::parse(&format!("http://127.0.0.1{target}")).ok());
        match url {
            Some(url) if url.path() == path && url.query().is_some() => {
                let pairs = url.query_pairs().into_owned().collect();
                return Ok(Callback { pairs, stream });
            }
            _ => write_response(&mut stream, "404 Not Found", "Not found", "").await,
        }
    }
}

/// Sends `page` in response to the redirect request. A browser that has gone away
/// is not an error, because the outcome is printed as well.
pub(super) async fn respond(mut stream: TcpStream, page: &Page) {
    match page {
        Page::Success => {
            let text = "Signed in. mailbridge stored the tokens; you can close this window.";
            write_response(&mut stream, "200 OK", "Signed in", text).await;
        }
        Page::Failure(message) => {
            let text = format!("Sign-in failed: {message}");
            write_response(&mut stream, "400 Bad Request", "Sign-in failed", &text).await;
        }
    }
}

/// Reads the request head and returns the target of a `GET`, or `None`
/// for another method.
async fn read_target(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut buffer = [0; 2048];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 || head.len() + read > MAX_HEAD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "incomplete or oversized request head",
            ));
        }
        head.extend_from_slice(&buffer[..read]);
    }

    let head = String::from_utf8_lossy(&head);
    let mut parts = head.lines().next().unwrap_or_default().split(' ');
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) if target.starts_with('/') => Ok(Some(target.to_owned())),
        _ => Ok(None),
    }
}

async fn write_response(stream: &mut TcpStream, status: &str, title: &str, text: &str) {
    let body = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\
         <body><p>{}</p></body></html>\n",
        escape(title),
        escape(text)
    );
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let written = stream.write_all(response.as_bytes()).await;
    if let Err(error) = written.and(stream.shutdown().await) {
        tracing::debug!(error = %error, "Failed to send the page to the browser");
    }
}

/// Escapes text for HTML, because the error description comes from the
/// redirect's query.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escape_markup() {
        assert_eq!(
            escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
