//! A session that the server ends because its access token expired, as
//! Exchange Online does in the middle of a long backfill. A proxy in front
//! of Dovecot's IMAP port replies to one FETCH with
//! `* BYE Session invalidated - AccessTokenExpired` and revokes the token,
//! so that Dovecot rejects it afterwards as Exchange does.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::bridge::{PATIENCE, Setup};
use crate::mailbox::{append, mail};
use crate::records::{create_topic, kafka_settled};
use crate::support::{http, port, stack, unique};

/// The `BYE` that Exchange Online sends when the session's token expires.
const TOKEN_EXPIRED_BYE: &str = "* BYE Session invalidated - AccessTokenExpired\r\n";

/// The number of the whole-message fetch that gets
/// [`TOKEN_EXPIRED_BYE`] as its reply, counted over all connections.
const EXPIRING_FETCH: usize = 2;

/// What the proxy saw, over all connections.
#[derive(Default)]
struct Seen {
    /// The access token of each AUTHENTICATE with an initial response.
    tokens: Vec<String>,
    /// Each `UID FETCH` line of whole messages, with its tag.
    fetches: Vec<String>,
}

/// A plaintext proxy to Dovecot's IMAP port that ends a session with
/// [`TOKEN_EXPIRED_BYE`] at the [`EXPIRING_FETCH`]th fetch of whole
/// messages, instead of forwarding that command.
struct ExpiringProxy {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl ExpiringProxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let seen: Arc<Mutex<Seen>> = Arc::default();

        let shared = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, Arc::clone(&shared)));
            }
        });
        Self { port, seen, task }
    }

    fn tokens(&self) -> Vec<String> {
        self.seen.lock().unwrap().tokens.clone()
    }

    fn fetches(&self) -> Vec<String> {
        self.seen.lock().unwrap().fetches.clone()
    }
}

impl Drop for ExpiringProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays one client connection to Dovecot, line by line from the client
/// and unchanged from the server.
async fn relay(client: TcpStream, seen: Arc<Mutex<Seen>>) {
    let target = (stack("STACK_IMAP_HOST"), port("STACK_IMAP_PORT"));
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let client_write = Arc::new(tokio::sync::Mutex::new(client_write));

    let writer = Arc::clone(&client_write);
    let downstream = tokio::spawn(async move {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(read @ 1..) = server_read.read(&mut buffer).await {
            if writer
                .lock()
                .await
                .write_all(&buffer[..read])
                .await
                .is_err()
            {
                return;
            }
        }
    });

    let mut reader = BufReader::new(client_read);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        if expires_session(&text, &seen) {
            let token = seen.lock().unwrap().tokens.last().cloned();
            if let Some(token) = token {
                revoke(&token).await;
            }
            let mut writer = client_write.lock().await;
            let _ = writer.write_all(TOKEN_EXPIRED_BYE.as_bytes()).await;
            let _ = writer.shutdown().await;
            break;
        }
        if server_write.write_all(&line).await.is_err() {
            break;
        }
    }
    downstream.abort();
}

/// Records `line` and returns whether it is the fetch that gets
/// [`TOKEN_EXPIRED_BYE`] as its reply.
fn expires_session(line: &str, seen: &Mutex<Seen>) -> bool {
    let mut seen = seen.lock().unwrap();
    if let Some(token) = xoauth2_token(line) {
        seen.tokens.push(token);
    }
    if !(line.contains(" UID FETCH ") && line.contains("BODY.PEEK[]")) {
        return false;
    }
    seen.fetches.push(line.to_owned());
    seen.fetches.len() == EXPIRING_FETCH
}

/// Returns the token of an `AUTHENTICATE XOAUTH2` line with an initial
/// response.
fn xoauth2_token(line: &str) -> Option<String> {
    let initial = line.split_once(" AUTHENTICATE XOAUTH2 ")?.1;
    let decoded = String::from_utf8(STANDARD.decode(initial.trim()).ok()?).ok()?;
    let token = decoded.split_once("auth=Bearer ")?.1;
    Some(token.trim_end_matches('\x01').to_owned())
}

/// Revokes an access token (RFC 7009), so Dovecot rejects it from now on.
async fn revoke(token: &str) {
    let response = http()
        .post(stack("STACK_OAUTH_REVOKE_URL"))
        .form(&[("token", token)])
        .send()
        .await
        .expect("revocation request");
    assert!(response.status().is_success(), "{}", response.status());
}

#[tokio::test]
async fn inbound_token_expired_bye_resumes_after_refresh() {
    let mut setup = Setup::new("inbound-expired-bye");
    let proxy = ExpiringProxy::start().await;
    setup.imap_port = proxy.port;
    setup.imap_tls = "none";
    let topic = unique("expired-bye.kafka");
    create_topic(&topic).await;
    let pipeline = format!(
        "[inbound.kafka]\naccount = \"watched\"\nbroker = \"kafka\"\ntopic = \"{topic}\"\n\
         batch_size = 2\n"
    );
    setup.prepare(&pipeline).await;
    for subject in ["first", "second", "third"] {
        append(&setup.user, "INBOX", &mail(&unique("bye"), subject)).await;
    }

    let bridge = setup.start();
    let records = kafka_settled(&topic, 3, PATIENCE).await;
    let metrics = setup.metrics().await;
    bridge.stop().await;

    let log = setup.log();
    let subjects: Vec<&str> = records
        .iter()
        .map(|record| record.document["subject"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(subjects, ["first", "second", "third"], "log:\n{log}");
    let uids: Vec<u64> = records
        .iter()
        .map(|record| record.document["uid"].as_u64().expect("uid"))
        .collect();
    assert_eq!(uids, [1, 2, 3], "each mail once");

    let fetches = proxy.fetches();
    assert_eq!(fetches.len(), 3, "{fetches:?}");
    assert!(fetches[0].contains("UID FETCH 1:2 "), "{fetches:?}");
    assert!(
        fetches[1].contains("UID FETCH 3 ") && fetches[2].contains("UID FETCH 3 "),
        "the fetch after the reconnect did not resume at the last committed UID + 1: {fetches:?}"
    );
    let tokens = proxy.tokens();
    assert_eq!(tokens.len(), 2, "expected two sign-ins, log:\n{log}");
    assert_ne!(
        tokens[0], tokens[1],
        "the reconnect reused the expired token"
    );

    let sample = |series: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with(series))
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let refreshes =
        sample("mailbridge_oauth2_token_refreshes_total{account=\"watched\",result=\"success\"}");
    assert_eq!(refreshes, Some(1.0), "expected one forced refresh");
    let rejected = sample(
        "mailbridge_auth_failures_total{account=\"watched\",protocol=\"imap\",\
         reason=\"token_rejected\"}",
    );
    assert_eq!(rejected, None, "a sign-in presented the expired token");
    let byes = sample(
        "mailbridge_imap_reconnects_total{account=\"watched\",mailbox=\"INBOX\",reason=\"bye\"}",
    );
    assert_eq!(byes, Some(1.0), "{metrics}");
    let resets = sample("mailbridge_mailbox_resets_total{account=\"watched\"");
    assert_eq!(resets.unwrap_or(0.0), 0.0, "the UIDVALIDITY did not change");
    let checkpoint = setup.checkpoint("kafka", "INBOX").expect("checkpoint");
    assert_eq!(checkpoint["last_uid"], 3);
    assert!(
        log.contains("the access token expired; refreshing it"),
        "{log}"
    );
    setup.assert_log_has_no_token();
}
