//! Helpers of `scripts/chaos`. A collector records every document that a
//! broker target receives while faults are injected. A seeder keeps
//! appending mail through server outages. A producer sends send requests,
//! and a count reports the requests that reached a mailbox.
//!
//! Mails and requests of one run are numbered from 0. A mail's Message-ID
//! is `<INDEX.RUN@bench.DOMAIN>` (see [`crate::mail::message`]) and a send
//! request's `id` is `INDEX.RUN`, so [`item_index`] maps both back to the
//! number that was sent.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Mutex;

use crate::{BrokerArgs, BrokerKind, ImapArgs, imap, mail};

#[derive(Args)]
pub struct CollectArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Payload field that names the item: `message_id` for mail documents,
    /// `id` for send requests.
    #[arg(long, default_value = "message_id")]
    field: String,
    /// Run name of the items. Records of other runs are counted apart.
    #[arg(long)]
    run: String,
    /// Number of items sent, numbered from 0.
    #[arg(long)]
    expect: usize,
    /// File rewritten every 200 ms with the number of distinct items seen.
    #[arg(long)]
    progress: PathBuf,
    /// File that receives one line `INDEX DOCUMENT_ID` per record at the end.
    #[arg(long)]
    records: Option<PathBuf>,
}

#[derive(Args)]
pub struct TrickleArgs {
    #[command(flatten)]
    imap: ImapArgs,
    #[arg(long, default_value = "INBOX")]
    mailbox: String,
    /// Number of mails to append, numbered from 0.
    #[arg(long)]
    count: usize,
    /// Mails per APPEND command.
    #[arg(long, default_value_t = 1)]
    per_append: usize,
    /// Milliseconds between two APPEND commands.
    #[arg(long, default_value_t = 200)]
    interval_ms: u64,
    /// Size of each mail's text part, in bytes.
    #[arg(long, default_value_t = 1024)]
    mail_bytes: usize,
    #[arg(long)]
    run: String,
}

#[derive(Args)]
pub struct SendArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Number of send requests, numbered from 0.
    #[arg(long)]
    count: usize,
    /// Recipient address of every request.
    #[arg(long)]
    to: String,
    /// Milliseconds between two requests. With 0, each request follows the
    /// broker's confirmation of the previous one.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    #[arg(long)]
    run: String,
}

#[derive(Args)]
pub struct DeliveredArgs {
    #[command(flatten)]
    imap: ImapArgs,
    #[arg(long, default_value = "INBOX")]
    mailbox: String,
    #[arg(long)]
    run: String,
    /// Number of send requests, numbered from 0.
    #[arg(long)]
    expect: usize,
    /// Records file of the collector of the dead-letter target.
    #[arg(long)]
    dead_letter: Option<PathBuf>,
    /// Seconds to wait until every request is delivered or dead-lettered.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

/// Header that carries a send request's `id` into the delivered mail.
const REQUEST_HEADER: &str = "X-Chaos-Request";

/// Returns the index of an item of `run`: a Message-ID `<INDEX.RUN@...>`
/// or a request id `INDEX.RUN`.
pub fn item_index(item: &str, run: &str) -> Option<usize> {
    let item = item.trim().trim_start_matches('<');
    let (index, rest) = item.split_once('.')?;
    let rest = rest.strip_prefix(run)?;
    if !(rest.is_empty() || rest.starts_with('@') || rest.starts_with('>')) {
        return None;
    }
    index.parse().ok()
}

/// Every record seen, per item index, with the document id of each copy.
#[derive(Default)]
struct Tally {
    copies: HashMap<usize, Vec<String>>,
    records: usize,
    foreign: usize,
}

impl Tally {
    fn record(&mut self, index: Option<usize>, document_id: String) {
        self.records += 1;
        match index {
            Some(index) => self.copies.entry(index).or_default().push(document_id),
            None => self.foreign += 1,
        }
    }

    fn summary(&self, expect: usize) -> serde_json::Value {
        let (mut same_id, mut other_id, mut max_copies) = (0, 0, 0);
        for ids in self.copies.values() {
            max_copies = max_copies.max(ids.len());
            let distinct: BTreeSet<&String> = ids.iter().collect();
            other_id += distinct.len() - 1;
            same_id += ids.len() - distinct.len();
        }
        let lost: Vec<usize> = (0..expect)
            .filter(|index| !self.copies.contains_key(index))
            .collect();
        json!({
            "expected": expect,
            "records": self.records,
            "received": self.copies.len(),
            "lost": lost.len(),
            "lost_sample": &lost[..lost.len().min(20)],
            "duplicates": same_id + other_id,
            "duplicates_same_id": same_id,
            "duplicates_other_id": other_id,
            "max_copies": max_copies,
            "foreign_records": self.foreign,
        })
    }
}

/// Consumes the target from its start until SIGTERM or SIGINT, then prints
/// the tally of items received, lost and duplicated.
pub async fn collect(args: CollectArgs) -> Result<serde_json::Value, String> {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
        let (broker, field, run) = (args.broker.clone(), args.field.clone(), args.run.clone());
        tokio::spawn(async move {
            match broker.broker {
                BrokerKind::Kafka => consume_kafka(&broker, &field, &run, &tally, &stop).await,
                BrokerKind::Amqp => consume_amqp(&broker, &field, &run, &tally, &stop).await,
            }
        })
    };

    let mut terminate = signal(SignalKind::terminate())
        .map_err(|err| format!("failed to handle SIGTERM: {err}"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|err| format!("failed to handle SIGINT: {err}"))?;
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = ticker.tick() => {
                let received = tally.lock().await.copies.len();
                write_progress(&args.progress, received)?;
            }
        }
        if consumer.is_finished() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    if consumer.is_finished() {
        consumer
            .await
            .map_err(|err| format!("the collector failed: {err}"))??;
    } else {
        consumer.abort();
    }

    let tally = tally.lock().await;
    write_progress(&args.progress, tally.copies.len())?;
    if let Some(path) = &args.records {
        let mut lines = String::new();
        for (index, ids) in &tally.copies {
            for id in ids {
                lines.push_str(&format!("{index} {id}\n"));
            }
        }
        std::fs::write(path, lines)
            .map_err(|err| format!("failed to write {}: {err}", path.display()))?;
    }
    Ok(tally.summary(args.expect))
}

fn write_progress(path: &PathBuf, received: usize) -> Result<(), String> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, format!("{received}\n"))
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|err| format!("failed to write {}: {err}", path.display()))
}

/// Returns the string field `field` of a JSON payload.
fn payload_field(payload: &[u8], field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    value.get(field)?.as_str().map(str::to_owned)
}

/// Reads every partition from the beginning. librdkafka reconnects by
/// itself when the broker comes back, and keeps its fetch positions, so an
/// outage adds no repeats here.
async fn consume_kafka(
    broker: &BrokerArgs,
    field: &str,
    run: &str,
    tally: &Mutex<Tally>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let topic = &broker.target;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set(
            "group.id",
            format!("mailbridge-chaos-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(|err| format!("failed to create the Kafka consumer: {err}"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|err| format!("failed to read the metadata of topic {topic}: {err}"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|entry| entry.name() == topic)
        .map_or(0, |entry| entry.partitions().len());
    if partitions == 0 {
        return Err(format!("topic {topic} does not exist: create it first"));
    }
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition as i32, Offset::Beginning)
            .map_err(|err| format!("failed to assign {topic}/{partition}: {err}"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|err| format!("failed to assign topic {topic}: {err}"))?;
    while !stop.load(Ordering::Relaxed) {
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(err) => {
                eprintln!("mailbridge-bench: reading {topic} failed, retrying: {err}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let key = message
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .unwrap_or_default();
        let item = message
            .payload()
            .and_then(|payload| payload_field(payload, field));
        let index = item.and_then(|item| item_index(&item, run));
        tally.lock().await.record(index, key);
    }
    Ok(())
}

/// Consumes with manual acks and connects again after a broker outage. A
/// message that comes back with `redelivered` set after the collector
/// already recorded it is the collector's own repeat (its ack was lost with
/// the connection), so it is not counted as a duplicate of mailbridge.
async fn consume_amqp(
    broker: &BrokerArgs,
    field: &str,
    run: &str,
    tally: &Mutex<Tally>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let queue = &broker.target;
    let mut seen_deliveries: BTreeSet<(String, String)> = BTreeSet::new();
    while !stop.load(Ordering::Relaxed) {
        let result =
            consume_amqp_connection(broker, field, run, tally, stop, &mut seen_deliveries).await;
        if let Err(err) = result {
            eprintln!("mailbridge-bench: consuming {queue} failed, connecting again: {err}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

async fn consume_amqp_connection(
    broker: &BrokerArgs,
    field: &str,
    run: &str,
    tally: &Mutex<Tally>,
    stop: &AtomicBool,
    seen_deliveries: &mut BTreeSet<(String, String)>,
) -> Result<(), String> {
    let queue = &broker.target;
    let connection = Connection::connect(&broker.address, ConnectionProperties::default())
        .await
        .map_err(|err| format!("failed to connect to the AMQP broker: {err}"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|err| format!("failed to open an AMQP channel: {err}"))?;
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue, options, FieldTable::default())
        .await
        .map_err(|err| format!("failed to declare queue {queue}: {err}"))?;
    let mut consumer = channel
        .basic_consume(
            queue,
            "mailbridge-chaos",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|err| format!("failed to consume from queue {queue}: {err}"))?;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.map_err(|err| format!("failed to read from {queue}: {err}"))?;
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default();
        let item = payload_field(&delivery.data, field).unwrap_or_default();
        let key = (message_id.clone(), item.clone());
        let repeat = delivery.redelivered && seen_deliveries.contains(&key);
        if !repeat {
            seen_deliveries.insert(key);
            tally
                .lock()
                .await
                .record(item_index(&item, run), message_id);
        }
        delivery
            .ack(BasicAckOptions::default())
            .await
            .map_err(|err| format!("failed to ack a message of {queue}: {err}"))?;
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    Err(format!("the consumer of queue {queue} ended"))
}

/// Appends `count` mails in small APPEND commands, opening the session
/// again after every failure, so that seeding goes on across outages of
/// the IMAP server or of its token introspection.
pub async fn trickle(args: TrickleArgs) -> Result<serde_json::Value, String> {
    let started = Instant::now();
    let (mut appended, mut failures) = (0, 0);
    let mut session: Option<imap::Session> = None;
    while appended < args.count {
        if session.is_none() {
            match imap::Session::open(&args.imap, &args.imap.token).await {
                Ok(opened) => session = Some(opened),
                Err(err) => {
                    failures += 1;
                    eprintln!("mailbridge-bench: seeding paused: {err}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let end = (appended + args.per_append.max(1)).min(args.count);
        let messages: Vec<Vec<u8>> = (appended..end)
            .map(|index| mail::message(index, &args.run, &args.imap.user, args.mail_bytes, 0))
            .collect();
        let Some(open) = session.as_mut() else {
            continue;
        };
        // NOTE: an APPEND cut off by an outage may have been stored anyway.
        // It is sent again, so the mailbox can then contain the mail twice,
        // and the collector reports a duplicate with another document id.
        match open.append(&args.mailbox, &messages).await {
            Ok(()) => appended = end,
            Err(err) => {
                failures += 1;
                eprintln!("mailbridge-bench: append failed, connecting again: {err}");
                session = None;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    if let Some(open) = session {
        open.logout().await;
    }
    Ok(json!({
        "appended": appended,
        "failures": failures,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

/// Builds send request number `index` of a run, addressed to `to`.
pub fn send_request(index: usize, run: &str, to: &str) -> Vec<u8> {
    let id = format!("{index}.{run}");
    json!({
        "id": id,
        "to": [to],
        "subject": format!("Chaos request {index} of run {run}"),
        "text": format!("Send request {id} of a fault-injection run."),
        "headers": { REQUEST_HEADER: id },
    })
    .to_string()
    .into_bytes()
}

/// Produces `count` send requests, each confirmed by the broker before the
/// next one.
pub async fn send(args: SendArgs) -> Result<serde_json::Value, String> {
    let started = Instant::now();
    let target = &args.broker.target;
    let interval = Duration::from_millis(args.interval_ms);
    match args.broker.broker {
        BrokerKind::Kafka => {
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", &args.broker.address)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .create()
                .map_err(|err| format!("failed to create the Kafka producer: {err}"))?;
            for index in 0..args.count {
                let key = format!("{index}.{}", args.run);
                let payload = send_request(index, &args.run, &args.to);
                let record = FutureRecord::to(target).key(&key).payload(&payload);
                producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map_err(|(err, _)| format!("failed to send to topic {target}: {err}"))?;
                tokio::time::sleep(interval).await;
            }
        }
        BrokerKind::Amqp => {
            let connection =
                Connection::connect(&args.broker.address, ConnectionProperties::default())
                    .await
                    .map_err(|err| format!("failed to connect to the AMQP broker: {err}"))?;
            let channel = connection
                .create_channel()
                .await
                .map_err(|err| format!("failed to open an AMQP channel: {err}"))?;
            let durable = QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(target, durable, FieldTable::default())
                .await
                .map_err(|err| format!("failed to declare queue {target}: {err}"))?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|err| format!("failed to enable publisher confirms: {err}"))?;
            let options = BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            };
            for index in 0..args.count {
                let payload = send_request(index, &args.run, &args.to);
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into());
                let confirmation = channel
                    .basic_publish("", target, options, &payload, properties)
                    .await
                    .map_err(|err| format!("failed to publish to queue {target}: {err}"))?
                    .await
                    .map_err(|err| format!("publish to queue {target} failed: {err}"))?;
                if !confirmation.is_ack() || confirmation.take_message().is_some() {
                    return Err(format!("queue {target} did not accept request {index}"));
                }
                tokio::time::sleep(interval).await;
            }
            let _ = connection.close(200, "done").await;
        }
    }
    Ok(json!({ "sent": args.count, "seconds": started.elapsed().as_secs_f64() }))
}

/// Counts the send requests of a run that reached the mailbox, by their
/// request header, and joins them with the dead-letter records. Polls
/// until every request is in one of them or the timeout passes.
pub async fn delivered(args: DeliveredArgs) -> Result<serde_json::Value, String> {
    let dead_lettered: BTreeSet<usize> = match &args.dead_letter {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|err| format!("failed to read {}: {err}", path.display()))?
            .lines()
            .filter_map(|line| line.split_whitespace().next()?.parse().ok())
            .collect(),
        None => BTreeSet::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    // One session for every poll, because the access token may expire
    // long before the timeout does.
    let mut session = imap::Session::open(&args.imap, &args.imap.token).await?;
    session.keep_literals = true;
    loop {
        let copies = delivered_copies(&mut session, &args).await?;
        let missing: Vec<usize> = (0..args.expect)
            .filter(|index| !copies.contains_key(index) && !dead_lettered.contains(index))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            session.logout().await;
            let mails: usize = copies.values().sum();
            return Ok(json!({
                "expected": args.expect,
                "delivered": copies.len(),
                "dead_lettered": dead_lettered.len(),
                "lost": missing.len(),
                "lost_sample": &missing[..missing.len().min(20)],
                "duplicates": mails - copies.len(),
                "max_copies": copies.values().max().copied().unwrap_or(0),
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Returns, per request index of the run, how many mails carry it.
async fn delivered_copies(
    session: &mut imap::Session,
    args: &DeliveredArgs,
) -> Result<HashMap<usize, usize>, String> {
    session
        .command(&format!("EXAMINE {}", imap::quote(&args.mailbox)))
        .await?;
    let responses = session
        .command(&format!(
            "FETCH 1:* (BODY.PEEK[HEADER.FIELDS ({})])",
            REQUEST_HEADER.to_uppercase()
        ))
        .await
        // Dovecot rejects FETCH 1:* on an empty mailbox with BAD.
        .unwrap_or_default();
    let prefix = format!("{}:", REQUEST_HEADER.to_lowercase());
    let mut copies = HashMap::new();
    for response in responses {
        for line in response.text.lines() {
            let lower = line.to_lowercase();
            let Some(value) = lower.strip_prefix(&prefix) else {
                continue;
            };
            if let Some(index) = item_index(value, &args.run.to_lowercase()) {
                *copies.entry(index).or_insert(0) += 1;
            }
        }
    }
    Ok(copies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_index_reads_message_ids() {
        assert_eq!(item_index("17.r1@bench.example.test", "r1"), Some(17));
        assert_eq!(item_index("<3.r1@bench.example.test>", "r1"), Some(3));
        assert_eq!(item_index("3.r12@bench.example.test", "r1"), None);
        assert_eq!(item_index("3.r2@bench.example.test", "r1"), None);
    }

    #[test]
    fn item_index_reads_request_ids() {
        assert_eq!(item_index("42.run-a", "run-a"), Some(42));
        assert_eq!(item_index(" 42.run-a", "run-a"), Some(42));
        assert_eq!(item_index("x.run-a", "run-a"), None);
    }

    #[test]
    fn tally_separates_duplicate_kinds() {
        let mut tally = Tally::default();
        tally.record(Some(0), "a".into());
        tally.record(Some(0), "a".into());
        tally.record(Some(1), "b".into());
        tally.record(Some(1), "c".into());
        tally.record(None, "d".into());
        let summary = tally.summary(3);
        assert_eq!(summary["received"], 2);
        assert_eq!(summary["lost"], 1);
        assert_eq!(summary["duplicates_same_id"], 1);
        assert_eq!(summary["duplicates_other_id"], 1);
        assert_eq!(summary["max_copies"], 2);
        assert_eq!(summary["foreign_records"], 1);
    }

    #[test]
    fn send_request_carries_its_id() {
        let request: serde_json::Value =
            serde_json::from_slice(&send_request(5, "r9", "bob@example.test")).unwrap();
        assert_eq!(request["id"], "5.r9");
        assert_eq!(request["headers"][REQUEST_HEADER], "5.r9");
        assert_eq!(request["to"][0], "bob@example.test");
    }
}
