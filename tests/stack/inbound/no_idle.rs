//! `mode = "idle"` against a server that does not offer IDLE: the watch
//! polls every `poll_interval` instead of failing and reconnecting. The
//! server is a fake on loopback, because Dovecot always offers IDLE. It
//! also omits INTERNALDATE, which Dovecot always sends, so the published
//! count is shown to follow the broker's confirmations.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::bridge::{PATIENCE, Setup};
use crate::mailbox::mail;
use crate::records::{create_topic, kafka_records, kafka_settled};
use crate::support::unique;

/// Mail and received lines of an [`ImapWithoutIdle`], shared with its task.
#[derive(Default)]
struct Mailbox {
    /// Raw mails; the UID of each is its index plus one.
    mails: Vec<Vec<u8>>,
    /// Client lines, without their tags and SASL responses.
    received: Vec<String>,
}

/// A plaintext IMAP server with one mailbox that replies to the commands of
/// a mailbox watch, lists no IDLE capability and rejects IDLE.
struct ImapWithoutIdle {
    port: u16,
    mailbox: Arc<Mutex<Mailbox>>,
    task: tokio::task::JoinHandle<()>,
}

impl ImapWithoutIdle {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake IMAP server");
        let port = listener.local_addr().expect("fake server address").port();
        let mailbox: Arc<Mutex<Mailbox>> = Arc::default();
        let shared = Arc::clone(&mailbox);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&shared)));
            }
        });
        Self {
            port,
            mailbox,
            task,
        }
    }

    fn add(&self, raw: Vec<u8>) {
        self.mailbox.lock().unwrap().mails.push(raw);
    }

    fn received(&self) -> Vec<String> {
        self.mailbox.lock().unwrap().received.clone()
    }
}

impl Drop for ImapWithoutIdle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(stream: TcpStream, mailbox: Arc<Mutex<Mailbox>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let greeting = b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] fake ready\r\n";
    if write.write_all(greeting).await.is_err() {
        return;
    }
    while let Ok(Some(line)) = lines.next_line().await {
        let (tag, command) = line.split_once(' ').unwrap_or((&line, ""));
        let reply = {
            let mut mailbox = mailbox.lock().unwrap();
            mailbox.received.push(without_secret(command));
            respond(tag, command, &mailbox.mails)
        };
        if write.write_all(&reply).await.is_err() {
            return;
        }
        if command.eq_ignore_ascii_case("LOGOUT") {
            return;
        }
    }
}

/// Returns `command` without the SASL initial response of AUTHENTICATE,
/// which contains the access token.
fn without_secret(command: &str) -> String {
    let words: Vec<&str> = command.splitn(3, ' ').collect();
    match words.as_slice() {
        [verb, mechanism, _] if verb.eq_ignore_ascii_case("AUTHENTICATE") => {
            format!("{verb} {mechanism}")
        }
        _ => command.to_owned(),
    }
}

/// Returns the reply to `command` of `tag`, given the mails of the mailbox.
fn respond(tag: &str, command: &str, mails: &[Vec<u8>]) -> Vec<u8> {
    let upper = command.to_ascii_uppercase();
    let untagged = if upper.starts_with("CAPABILITY") {
        "* CAPABILITY IMAP4rev1 UIDPLUS\r\n".to_owned()
    } else if upper.starts_with("SELECT") {
        format!(
            "* {} EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\n* OK [UIDNEXT {}] next\r\n",
            mails.len(),
            mails.len() + 1
        )
    } else if let Some(criteria) = upper.strip_prefix("UID SEARCH UID ") {
        let uids = matching(criteria, mails.len());
        let list: Vec<String> = uids.iter().map(u32::to_string).collect();
        format!("* SEARCH {}\r\n", list.join(" ")).replace(" \r\n", "\r\n")
    } else if let Some(rest) = upper.strip_prefix("UID FETCH ") {
        let (set, items) = rest.split_once(' ').unwrap_or((rest, ""));
        return fetch(tag, set, items, mails);
    } else if upper.starts_with("LOGOUT") {
        "* BYE fake logging out\r\n".to_owned()
    } else if upper.starts_with("IDLE") {
        return format!("{tag} BAD IDLE is not supported\r\n").into_bytes();
    } else if upper.starts_with("AUTHENTICATE") || upper.starts_with("NOOP") {
        String::new()
    } else {
        return format!("{tag} BAD unexpected command\r\n").into_bytes();
    };
    format!("{untagged}{tag} OK done\r\n").into_bytes()
}

/// Returns the UIDs of `set` (such as `2:*`, `1:3` or `1,4`) among
/// `count` mails. Like RFC 3501 servers, `n:*` above the highest UID
/// matches the highest UID.
fn matching(set: &str, count: usize) -> Vec<u32> {
    let highest = count as u32;
    let mut uids = Vec::new();
    for part in set.trim().split(',') {
        let (first, last) = part.split_once(':').unwrap_or((part, part));
        let bound = |text: &str| match text {
            "*" => highest,
            number => number.parse().expect("a UID in the UID set"),
        };
        let (first, last) = (bound(first), bound(last));
        let (low, high) = (first.min(last), first.max(last));
        uids.extend((low..=high).filter(|uid| (1..=highest).contains(uid)));
    }
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// Returns the FETCH responses for `set`, without INTERNALDATE.
fn fetch(tag: &str, set: &str, items: &str, mails: &[Vec<u8>]) -> Vec<u8> {
    let mut reply = Vec::new();
    for uid in matching(set, mails.len()) {
        let raw = &mails[uid as usize - 1];
        let size = raw.len();
        if items.contains("BODY.PEEK[]") {
            let head = format!(
                "* {uid} FETCH (UID {uid} FLAGS () RFC822.SIZE {size} BODY[] {{{size}}}\r\n"
            );
            reply.extend(head.into_bytes());
            reply.extend_from_slice(raw);
            reply.extend(b")\r\n");
        } else {
            reply.extend(format!("* {uid} FETCH (UID {uid} RFC822.SIZE {size})\r\n").into_bytes());
        }
    }
    reply.extend(format!("{tag} OK done\r\n").into_bytes());
    reply
}

#[tokio::test]
async fn inbound_idle_mode_without_idle_polls() {
    let fake = ImapWithoutIdle::start().await;
    fake.add(mail(&unique("first"), "first"));
    let mut setup = Setup::new("inbound-no-idle");
    setup.imap_port = fake.port;
    setup.imap_tls = "none";
    let topic = unique("no-idle.kafka");
    create_topic(&topic).await;
    let pipeline = format!(
        "[inbound.kafka]\naccount = \"watched\"\nbroker = \"kafka\"\ntopic = \"{topic}\"\n\
         mode = \"idle\"\npoll_interval = \"1s\"\n"
    );
    setup.prepare(&pipeline).await;

    let bridge = setup.start();
    let first = kafka_records(&topic, 1, PATIENCE).await;
    fake.add(mail(&unique("second"), "second"));
    let records = kafka_settled(&topic, 2, PATIENCE).await;
    // A few more polls, each of which could log the warning again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = setup.metrics().await;
    bridge.stop().await;

    let log = setup.log();
    assert_eq!(first.len(), 1, "log:\n{log}");
    assert_eq!(records.len(), 2, "log:\n{log}");
    assert_eq!(records[1].document["subject"], "second");
    assert!(records[1].document["received_at"].is_null());
    let received = fake.received();
    assert!(
        !received
            .iter()
            .any(|line| line.eq_ignore_ascii_case("IDLE")),
        "IDLE was sent: {received:?}"
    );
    let noops = received.iter().filter(|line| *line == "NOOP").count();
    assert!(noops >= 3, "{noops} polls: {received:?}");
    let warnings = log.matches("IMAP server does not support IDLE").count();
    assert_eq!(warnings, 1, "log:\n{log}");
    assert!(!log.contains("Mailbox watch failed"), "{log}");
    assert!(
        !metrics.contains("mailbridge_imap_reconnects_total{"),
        "{metrics}"
    );
    let published = "mailbridge_messages_published_total{pipeline=\"kafka\",result=\"success\"} 2";
    assert!(metrics.contains(published), "{metrics}");
    let ages = metrics
        .lines()
        .find(|line| line.starts_with("mailbridge_mail_age_at_publish_seconds_count{"));
    assert!(
        ages.is_none_or(|line| line.ends_with(" 0")),
        "a mail age without INTERNALDATE: {ages:?}"
    );
}
