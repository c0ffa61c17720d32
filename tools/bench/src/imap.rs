//! Minimal IMAP client over implicit TLS with XOAUTH2: enough to seed a
//! mailbox (MULTIAPPEND with LITERAL+, RFC 3502 and RFC 7888) and to fetch
//! every mail with `UID FETCH ... BODY.PEEK[]`, the IMAP limit of a backfill.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::ImapArgs;

/// One server response with its literals read: the text outside the
/// literals, and the total size of the literals.
pub struct Response {
    pub text: String,
    pub literal_bytes: usize,
}

pub struct Session {
    stream: BufReader<TlsStream<TcpStream>>,
    next_tag: u32,
    literal: Vec<u8>,
    /// Appends the literals to the response text instead of dropping them.
    pub keep_literals: bool,
}

impl Session {
    /// Connects with implicit TLS, reads the greeting and signs in with
    /// XOAUTH2 (SASL-IR), checking that the server offers LITERAL+.
    pub async fn open(args: &ImapArgs, token: &str) -> Result<Self, String> {
        let tcp = TcpStream::connect((args.host.as_str(), args.port))
            .await
            .map_err(|err| format!("failed to connect to {}:{}: {err}", args.host, args.port))?;
        tcp.set_nodelay(true).ok();
        let connector = TlsConnector::from(tls_config(&args.ca_file)?);
        let name = ServerName::try_from(args.host.clone())
            .map_err(|err| format!("invalid IMAP host {:?}: {err}", args.host))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|err| format!("TLS handshake with {} failed: {err}", args.host))?;
        let mut session = Session {
            stream: BufReader::with_capacity(256 * 1024, tls),
            next_tag: 1,
            literal: Vec::new(),
            keep_literals: false,
        };
        let greeting = session.read_response().await?;
        if !greeting.text.starts_with("* OK") {
            return Err(format!(
                "unexpected IMAP greeting: {}",
                greeting.text.trim_end()
            ));
        }

        let sasl = format!("user={}\x01auth=Bearer {token}\x01\x01", args.user);
        let command = format!("AUTHENTICATE XOAUTH2 {}", STANDARD.encode(sasl));
        let tag = session.send(command.as_bytes()).await?;
        let reply = session.read_response().await?;
        if reply.text.starts_with('+') {
            // Dovecot sends an error challenge, and the client must reply to
            // it before the tagged NO arrives.
            session.write(b"\r\n").await?;
            let refusal = session.read_response().await?;
            return Err(format!(
                "XOAUTH2 sign-in of {} rejected: {}",
                args.user,
                refusal.text.trim_end()
            ));
        }
        check_tagged(&tag, &reply)?;

        let capabilities = session.command("CAPABILITY").await?;
        let offered = capabilities
            .iter()
            .any(|line| line.text.starts_with("* CAPABILITY") && line.text.contains("LITERAL+"));
        if !offered {
            return Err("the IMAP server does not offer LITERAL+".into());
        }
        Ok(session)
    }

    /// Sends a command and returns its untagged responses; fails unless the
    /// tagged reply is OK.
    pub async fn command(&mut self, command: &str) -> Result<Vec<Response>, String> {
        let tag = self.send(command.as_bytes()).await?;
        self.collect(&tag).await
    }

    /// Appends `messages` to `mailbox` in one MULTIAPPEND command whose
    /// literals are all non-synchronizing, so no continuation is awaited.
    pub async fn append(&mut self, mailbox: &str, messages: &[Vec<u8>]) -> Result<(), String> {
        let mut command = format!("APPEND {}", quote(mailbox)).into_bytes();
        for message in messages {
            command.extend_from_slice(format!(" {{{}+}}\r\n", message.len()).as_bytes());
            command.extend_from_slice(message);
        }
        let tag = self.send(&command).await?;
        self.collect(&tag).await.map(drop)
    }

    /// Runs one `UID FETCH first:last (UID BODY.PEEK[])` and returns the
    /// number of mails and body bytes received.
    pub async fn fetch_bodies(&mut self, first: u32, last: u32) -> Result<(usize, usize), String> {
        let responses = self
            .command(&format!("UID FETCH {first}:{last} (UID BODY.PEEK[])"))
            .await?;
        let fetched = responses
            .iter()
            .filter(|response| response.text.contains(" FETCH ("))
            .fold((0, 0), |(mails, bytes), response| {
                (mails + 1, bytes + response.literal_bytes)
            });
        Ok(fetched)
    }

    pub async fn logout(mut self) {
        let _ = self.command("LOGOUT").await;
    }

    pub async fn send(&mut self, command: &[u8]) -> Result<String, String> {
        let tag = format!("b{}", self.next_tag);
        self.next_tag += 1;
        let mut line = Vec::with_capacity(command.len() + tag.len() + 3);
        line.extend_from_slice(tag.as_bytes());
        line.push(b' ');
        line.extend_from_slice(command);
        line.extend_from_slice(b"\r\n");
        self.write(&line).await?;
        Ok(tag)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let stream = self.stream.get_mut();
        stream
            .write_all(bytes)
            .await
            .map_err(|err| format!("failed to write to the IMAP server: {err}"))?;
        stream
            .flush()
            .await
            .map_err(|err| format!("failed to write to the IMAP server: {err}"))
    }

    async fn collect(&mut self, tag: &str) -> Result<Vec<Response>, String> {
        let mut untagged = Vec::new();
        loop {
            let response = self.read_response().await?;
            if response.text.starts_with(tag) && response.text[tag.len()..].starts_with(' ') {
                check_tagged(tag, &response)?;
                return Ok(untagged);
            }
            untagged.push(response);
        }
    }

    /// Reads one response, following every `{N}` literal to the end of the
    /// response. Literal bytes are read into memory, as a real client does,
    /// and then dropped.
    pub async fn read_response(&mut self) -> Result<Response, String> {
        let mut response = Response {
            text: String::new(),
            literal_bytes: 0,
        };
        loop {
            let mut line = Vec::new();
            let read = self
                .stream
                .read_until(b'\n', &mut line)
                .await
                .map_err(|err| format!("failed to read from the IMAP server: {err}"))?;
            if read == 0 {
                return Err("the IMAP server closed the connection".into());
            }
            let text = String::from_utf8_lossy(&line);
            response.text.push_str(&text);
            let Some(size) = literal_size(&text) else {
                return Ok(response);
            };
            self.literal.resize(size, 0);
            self.stream
                .read_exact(&mut self.literal)
                .await
                .map_err(|err| format!("failed to read a literal of {size} bytes: {err}"))?;
            response.literal_bytes += size;
            if self.keep_literals {
                response
                    .text
                    .push_str(&String::from_utf8_lossy(&self.literal));
            }
        }
    }
}

/// Fetches every mail of `mailbox` in batches of `batch` UIDs and returns the
/// mails, body bytes and seconds from connecting to the last body.
pub async fn fetch_all(
    args: &ImapArgs,
    token: &str,
    mailbox: &str,
    batch: usize,
) -> Result<(usize, usize, f64), String> {
    let started = Instant::now();
    let mut session = Session::open(args, token).await?;
    session
        .command(&format!("SELECT {}", quote(mailbox)))
        .await?;
    let search = session.command("UID SEARCH ALL").await?;
    let mut uids: Vec<u32> = search
        .iter()
        .filter_map(|response| response.text.strip_prefix("* SEARCH"))
        .flat_map(|numbers| {
            numbers
                .split_whitespace()
                .filter_map(|uid| uid.parse().ok())
        })
        .collect();
    uids.sort_unstable();

    let (mut mails, mut bytes) = (0, 0);
    for chunk in uids.chunks(batch.max(1)) {
        let (first, last) = (chunk[0], chunk[chunk.len() - 1]);
        let (fetched, size) = session.fetch_bodies(first, last).await?;
        mails += fetched;
        bytes += size;
    }
    let seconds = started.elapsed().as_secs_f64();
    session.logout().await;
    Ok((mails, bytes, seconds))
}

pub fn tls_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(ca_file)
        .map_err(|err| format!("failed to read CA file {}: {err}", ca_file.display()))?;
    for certificate in certificates {
        let certificate = certificate
            .map_err(|err| format!("invalid certificate in {}: {err}", ca_file.display()))?;
        roots
            .add(certificate)
            .map_err(|err| format!("unusable certificate in {}: {err}", ca_file.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("failed to configure TLS: {err}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn check_tagged(tag: &str, response: &Response) -> Result<(), String> {
    let status = response.text[tag.len()..].trim_start();
    if status.starts_with("OK") {
        return Ok(());
    }
    Err(format!("IMAP command failed: {}", response.text.trim_end()))
}

/// Returns N when a response line ends with a literal announcement `{N}`
/// (or `{N+}`).
fn literal_size(line: &str) -> Option<usize> {
    let line = line.strip_suffix("\r\n")?.strip_suffix('}')?;
    let open = line.rfind('{')?;
    line[open + 1..].trim_end_matches('+').parse().ok()
}

pub fn quote(mailbox: &str) -> String {
    format!("\"{}\"", mailbox.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_size_reads_announcements() {
        assert_eq!(
            literal_size("* 1 FETCH (UID 4 BODY[] {5120}\r\n"),
            Some(5120)
        );
        assert_eq!(literal_size("{12+}\r\n"), Some(12));
        assert_eq!(literal_size("* OK done\r\n"), None);
        assert_eq!(literal_size("* 1 FETCH (UID 4 BODY[] {5120}"), None);
    }
}
