//! Minimal SMTP submission client: STARTTLS, AUTH XOAUTH2 with an initial
//! response, then one mail after another without pipelining. It measures
//! the submission limit that mailbridge's outbound pipelines are compared
//! with.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::Args;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::imap::tls_config;

/// SMTP submission server and sender. The access token comes from the
/// environment, so that it never shows in a process list.
#[derive(Args, Clone)]
pub struct SmtpArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub smtp_host: String,
    /// Submission port that offers STARTTLS.
    #[arg(long)]
    pub smtp_port: u16,
    /// PEM file of the CA that issued the server certificate.
    #[arg(long)]
    pub ca_file: PathBuf,
    /// Sender, who signs in. The token's user claim must match it.
    #[arg(long)]
    pub from: String,
    /// OAuth2 access token of the sender.
    #[arg(long, env = "BENCH_ACCESS_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// One server reply: its code and the text of every line.
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines.join(" ")
    }
}

pub struct Client {
    stream: BufReader<TlsStream<TcpStream>>,
}

impl Client {
    /// Connects, upgrades with STARTTLS and signs in with XOAUTH2.
    pub async fn connect(args: &SmtpArgs) -> Result<Self, String> {
        let address = format!("{}:{}", args.smtp_host, args.smtp_port);
        let tcp = TcpStream::connect(&address)
            .await
            .map_err(|err| format!("failed to connect to {address}: {err}"))?;
        tcp.set_nodelay(true).ok();
        let mut plain = BufReader::new(tcp);
        expect(&mut plain, 220, "the greeting").await?;
        command(&mut plain, "EHLO mailbridge-bench", 250).await?;
        command(&mut plain, "STARTTLS", 220).await?;
        if !plain.buffer().is_empty() {
            return Err(format!("{address} sent data before the TLS handshake"));
        }

        let connector = TlsConnector::from(tls_config(&args.ca_file)?);
        let name = ServerName::try_from(args.smtp_host.clone())
            .map_err(|err| format!("invalid SMTP host {:?}: {err}", args.smtp_host))?;
        let tls = connector
            .connect(name, plain.into_inner())
            .await
            .map_err(|err| format!("TLS handshake with {address} failed: {err}"))?;
        let mut stream = BufReader::new(tls);
        let ehlo = command(&mut stream, "EHLO mailbridge-bench", 250).await?;
        let offers_xoauth2 = ehlo.lines.iter().any(|line| {
            let upper = line.to_ascii_uppercase();
            upper.starts_with("AUTH") && upper.split_whitespace().any(|word| word == "XOAUTH2")
        });
        if !offers_xoauth2 {
            return Err(format!(
                "{address} does not offer AUTH XOAUTH2 after STARTTLS"
            ));
        }

        let sasl = format!("user={}\x01auth=Bearer {}\x01\x01", args.from, args.token);
        let auth = format!("AUTH XOAUTH2 {}\r\n", STANDARD.encode(sasl));
        write(&mut stream, auth.as_bytes()).await?;
        let reply = read_reply(&mut stream).await?;
        if reply.code == 334 {
            // The server sends its final reply only after the client replied
            // to the error challenge.
            write(&mut stream, b"\r\n").await?;
            let refusal = read_reply(&mut stream).await?;
            return Err(format!(
                "XOAUTH2 sign-in of {} rejected: {} {}",
                args.from,
                refusal.code,
                refusal.text()
            ));
        }
        if reply.code != 235 {
            return Err(format!(
                "XOAUTH2 sign-in of {} rejected: {} {}",
                args.from,
                reply.code,
                reply.text()
            ));
        }
        Ok(Self { stream })
    }

    /// Submits one message and returns once the server accepted its data.
    pub async fn send(&mut self, from: &str, to: &str, message: &[u8]) -> Result<(), String> {
        command(&mut self.stream, &format!("MAIL FROM:<{from}>"), 250).await?;
        command(&mut self.stream, &format!("RCPT TO:<{to}>"), 250).await?;
        command(&mut self.stream, "DATA", 354).await?;
        write(&mut self.stream, &dot_stuff(message)).await?;
        expect(&mut self.stream, 250, "the message data").await?;
        Ok(())
    }

    pub async fn quit(mut self) {
        let _ = command(&mut self.stream, "QUIT", 221).await;
    }
}

async fn command<S>(stream: &mut S, line: &str, expected: u16) -> Result<Reply, String>
where
    S: AsyncBufRead + AsyncWrite + Unpin,
{
    write(stream, format!("{line}\r\n").as_bytes()).await?;
    let verb = line.split_whitespace().next().unwrap_or(line);
    expect(stream, expected, verb).await
}

async fn expect<S>(stream: &mut S, expected: u16, context: &str) -> Result<Reply, String>
where
    S: AsyncBufRead + Unpin,
{
    let reply = read_reply(stream).await?;
    if reply.code != expected {
        return Err(format!(
            "SMTP server replied {} {} to {context}, expected {expected}",
            reply.code,
            reply.text()
        ));
    }
    Ok(reply)
}

/// Reads one reply, following `250-` continuation lines to the last line.
async fn read_reply<S>(stream: &mut S) -> Result<Reply, String>
where
    S: AsyncBufRead + Unpin,
{
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let read = stream
            .read_line(&mut line)
            .await
            .map_err(|err| format!("failed to read from the SMTP server: {err}"))?;
        if read == 0 {
            return Err("the SMTP server closed the connection".into());
        }
        let line = line.trim_end();
        let code = line
            .get(..3)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| format!("invalid SMTP reply line {line:?}"))?;
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line.get(4..).unwrap_or_default().to_string());
        if last {
            return Ok(Reply { code, lines });
        }
    }
}

async fn write<S>(stream: &mut S, bytes: &[u8]) -> Result<(), String>
where
    S: AsyncWrite + Unpin,
{
    stream
        .write_all(bytes)
        .await
        .map_err(|err| format!("failed to write to the SMTP server: {err}"))?;
    stream
        .flush()
        .await
        .map_err(|err| format!("failed to write to the SMTP server: {err}"))
}

/// Returns the message with every line that starts with a dot doubled
/// (RFC 5321 section 4.5.2), ended by CRLF and the final `.` line.
fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(message.len() + 8);
    let mut line_start = true;
    for &byte in message {
        if line_start && byte == b'.' {
            data.push(b'.');
        }
        data.push(byte);
        line_start = byte == b'\n';
    }
    if !data.ends_with(b"\r\n") {
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuff_doubles_leading_dots() {
        assert_eq!(
            dot_stuff(b".a\r\nb.\r\n..c\r\n"),
            b"..a\r\nb.\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"body"), b"body\r\n.\r\n");
    }

    #[tokio::test]
    async fn read_reply_follows_continuations() {
        let mut input: &[u8] = b"250-first\r\n250-AUTH XOAUTH2\r\n250 last\r\n";
        let reply = read_reply(&mut input).await.unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(reply.lines, ["first", "AUTH XOAUTH2", "last"]);
    }
}
