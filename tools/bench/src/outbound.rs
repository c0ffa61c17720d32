//! Outbound throughput. Send requests go through `mailbridge run` until
//! its status events report every mail as accepted by the SMTP server.
//! The limits send the same number of mails with the minimal SMTP client
//! over one and over N connections. Each step ends by counting the mails
//! delivered to its recipient.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use futures::future::try_join_all;
use lapin::BasicProperties;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::broker::{assigned_consumer, declare_queues};
use crate::imap::{Session, quote};
use crate::latency::skip_transient;
use crate::mail;
use crate::metrics::{self, Histogram};
use crate::process::{MachineCpu, Measured};
use crate::smtp::{Client, SmtpArgs};
use crate::{BrokerKind, ImapArgs};

#[derive(Args)]
pub struct OutboundArgs {
    #[arg(long, value_enum)]
    broker: BrokerKind,
    /// Kafka bootstrap servers, or AMQP URL.
    #[arg(long)]
    address: String,
    /// Topic or queue of the send requests.
    #[arg(long)]
    requests: String,
    /// Topic or queue of mailbridge's status events.
    #[arg(long)]
    status: String,
    /// Dead-letter topic or queue of the pipeline.
    #[arg(long)]
    dead_letter: String,
    /// Number of send requests.
    #[arg(long)]
    count: usize,
    /// Recipient of every request.
    #[arg(long)]
    to: String,
    /// Size of each request's text, in bytes.
    #[arg(long, default_value_t = 2048)]
    text_bytes: usize,
    /// Run name that makes request ids unique.
    #[arg(long)]
    run: String,
    /// Address of the command's metrics server, which serves /readyz.
    #[arg(long)]
    ready: String,
    /// Seconds allowed for the start and for the sending, each.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// File that receives the command's standard output and error.
    #[arg(long)]
    log: PathBuf,
    /// Command to measure, such as `mailbridge --config FILE run`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct SmtpLimitArgs {
    #[command(flatten)]
    smtp: SmtpArgs,
    /// Recipient of every mail.
    #[arg(long)]
    to: String,
    /// Number of mails.
    #[arg(long)]
    count: usize,
    /// Connections that send at the same time.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Size of each mail's text, in bytes.
    #[arg(long, default_value_t = 2048)]
    text_bytes: usize,
    /// Run name that makes Message-IDs unique.
    #[arg(long)]
    run: String,
    /// Seconds allowed before the measurement fails.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[derive(Args)]
pub struct DeliveredArgs {
    #[command(flatten)]
    imap: ImapArgs,
    #[arg(long, default_value = "INBOX")]
    mailbox: String,
    /// Number of mails the mailbox must reach.
    #[arg(long)]
    expect: usize,
    /// Seconds allowed before the check fails.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

/// Sends `count` requests through the measured `mailbridge run` once it is
/// ready, and times them from the first request until the status event of
/// the last one.
pub async fn measure(args: OutboundArgs) -> Result<Value, String> {
    let timeout = Duration::from_secs(args.timeout);
    let log = args.log.display().to_string();
    let (status_sender, mut statuses) = mpsc::unbounded_channel();
    let mut amqp = None;
    let mut status_watch = match args.broker {
        BrokerKind::Kafka => {
            let consumer = assigned_consumer(&args.address, &args.status)?;
            tokio::spawn(watch_kafka_status(consumer, status_sender))
        }
        BrokerKind::Amqp => {
            let queues = [&*args.requests, &*args.status, &*args.dead_letter];
            let (connection, channel) = declare_queues(&args.address, &queues).await?;
            let watch = tokio::spawn(watch_amqp_status(
                channel.clone(),
                args.status.clone(),
                status_sender,
            ));
            amqp = Some((connection, channel));
            watch
        }
    };

    let mut measured = Measured::start(&args.command, &args.log)?;
    metrics::wait_ready(&mut measured, &args.ready, timeout)
        .await
        .map_err(|err| format!("{err}; see {log}"))?;

    let requests: Vec<(String, Vec<u8>)> = (0..args.count)
        .map(|index| {
            let id = format!("{}-{index}", args.run);
            let request = request(&id, index, &args.to, args.text_bytes);
            (id, request)
        })
        .collect();
    let request_bytes = requests.iter().map(|(_, body)| body.len()).sum::<usize>();
    let producer = match &amqp {
        None => Some(kafka_producer(&args.address, &args.requests)?),
        Some(_) => None,
    };
    let cpu_before = measured.sample()?.cpu_seconds;
    let machine_before = MachineCpu::now()?;
    let started = Instant::now();
    match (&producer, &amqp) {
        (Some(producer), _) => produce_kafka(producer, &args.requests, &requests).await?,
        (None, Some((_, channel))) => produce_amqp(channel, &args.requests, &requests).await?,
        (None, None) => unreachable!("a pipeline has a Kafka producer or an AMQP channel"),
    }
    let produced_seconds = started.elapsed().as_secs_f64();

    let mut sent = HashSet::with_capacity(args.count);
    let mut last = started;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    while sent.len() < args.count {
        tokio::select! {
            event = statuses.recv() => match event {
                Some((event, at)) => {
                    let id = event["id"].as_str().unwrap_or_default().to_string();
                    if event["status"] != "sent" {
                        return Err(format!(
                            "request {id} failed: {} ({}); see {log}",
                            event["reason"], event["detail"]
                        ));
                    }
                    if id.starts_with(&args.run) && sent.insert(id) {
                        last = at;
                    }
                }
                None => {
                    let joined = (&mut status_watch).await;
                    return Err(match joined {
                        Ok(Err(err)) => format!("the status consumer failed: {err}"),
                        _ => "the status consumer ended early".into(),
                    });
                }
            },
            _ = ticker.tick() => {
                measured.sample().map_err(|err| format!("{err}; see {log}"))?;
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(format!(
                    "{} of {} requests reported sent in {} after {} s; see {log}",
                    sent.len(), args.count, args.status, args.timeout
                ));
            }
        }
    }
    let cpu_seconds = measured.sample()?.cpu_seconds - cpu_before;
    let machine = MachineCpu::now()?.since(&machine_before);
    let exposition = metrics::get(&args.ready, "/metrics")
        .await
        .unwrap_or_default();
    let send = Histogram::read(&exposition, "mailbridge_smtp_send_duration_seconds");
    status_watch.abort();
    let exit_code = measured.stop(Duration::from_secs(40)).await?;
    if exit_code != 0 {
        return Err(format!(
            "the measured process exited with status {exit_code} after SIGTERM; see {log}"
        ));
    }
    if let Some((connection, channel)) = amqp {
        for queue in [&args.requests, &args.status, &args.dead_letter] {
            channel
                .queue_delete(queue, QueueDeleteOptions::default())
                .await
                .map_err(|err| format!("failed to delete queue {queue}: {err}"))?;
        }
        let _ = connection.close(200, "done").await;
    }
    Ok(json!({
        "requests": sent.len(),
        "request_bytes": request_bytes / args.count.max(1),
        "text_bytes": args.text_bytes,
        "seconds": last.duration_since(started).as_secs_f64(),
        "produced_seconds": produced_seconds,
        "cpu_seconds": cpu_seconds,
        "sends": send.count,
        "send_mean_ms": send.mean() * 1000.0,
        "machine": machine.to_json(),
    }))
}

/// Sends `count` mails over `connections` connections of the minimal SMTP
/// client, timed from the first connect to the last accepted message.
pub async fn limit(args: SmtpLimitArgs) -> Result<Value, String> {
    let connections = args.connections.max(1);
    let next = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let args = Arc::new(args);
    let machine_before = MachineCpu::now()?;
    let started = Instant::now();
    let senders = (0..connections).map(|_| {
        let (args, next, bytes) = (Arc::clone(&args), Arc::clone(&next), Arc::clone(&bytes));
        async move {
            let mut client = Client::connect(&args.smtp).await?;
            let mut last = Instant::now();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= args.count {
                    break;
                }
                let message = message(&args, index);
                client.send(&args.smtp.from, &args.to, &message).await?;
                bytes.fetch_add(message.len(), Ordering::Relaxed);
                last = Instant::now();
            }
            client.quit().await;
            Ok::<_, String>(last)
        }
    });
    let finished = tokio::time::timeout(Duration::from_secs(args.timeout), try_join_all(senders))
        .await
        .map_err(|_| format!("the SMTP limit did not finish within {} s", args.timeout))??;
    let machine = MachineCpu::now()?.since(&machine_before);
    let last = finished.into_iter().max().unwrap_or(started);
    let sent = next.load(Ordering::Relaxed).min(args.count);
    Ok(json!({
        "machine": machine.to_json(),
        "mails": sent,
        "connections": connections,
        "message_bytes": bytes.load(Ordering::Relaxed) / sent.max(1),
        "seconds": last.duration_since(started).as_secs_f64(),
    }))
}

/// Waits until the mailbox contains `expect` mails, which fails the run
/// when fewer were delivered than sent.
pub async fn delivered(args: DeliveredArgs) -> Result<Value, String> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let mut session = Session::open(&args.imap, &args.imap.token).await?;
    let command = format!("STATUS {} (MESSAGES)", quote(&args.mailbox));
    loop {
        let responses = session.command(&command).await?;
        let messages = responses
            .iter()
            .find_map(|response| status_messages(&response.text))
            .ok_or("the server sent no STATUS MESSAGES")?;
        if messages >= args.expect {
            session.logout().await;
            if messages > args.expect {
                return Err(format!(
                    "{} contains {messages} mails, expected {}",
                    args.mailbox, args.expect
                ));
            }
            return Ok(json!({
                "messages": messages,
                "wait_seconds": started.elapsed().as_secs_f64(),
            }));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{messages} of {} mails delivered to {} of {} after {} s",
                args.expect, args.mailbox, args.imap.user, args.timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Builds the send request number `index` as JSON.
fn request(id: &str, index: usize, to: &str, text_bytes: usize) -> Vec<u8> {
    let text = mail::body_text(index, text_bytes).replace("\r\n", "\n");
    let request = json!({
        "id": id,
        "to": [to],
        "subject": format!("Benchmark request {id}"),
        "text": text,
    });
    request.to_string().into_bytes()
}

/// Builds mail number `index` of the SMTP limit with the header fields
/// that mailbridge writes for a request with only `to`, `subject` and
/// `text`, and the same text.
fn message(args: &SmtpLimitArgs, index: usize) -> Vec<u8> {
    let from = &args.smtp.from;
    let domain = from
        .rsplit_once('@')
        .map_or("example.test", |(_, domain)| domain);
    let mut message = format!(
        "From: {from}\r\n\
         To: {}\r\n\
         Subject: Benchmark request {}-{index}\r\n\
         Date: Sat, 05 Dec 2026 12:00:00 +0000\r\n\
         Message-ID: <{index}.{}@bench.{domain}>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 7bit\r\n\r\n",
        args.to, args.run, args.run
    );
    message.push_str(&mail::body_text(index, args.text_bytes));
    message.into_bytes()
}

/// Creates the producer of the requests and connects it before the
/// measurement starts, by reading the topic's metadata.
fn kafka_producer(address: &str, topic: &str) -> Result<FutureProducer, String> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("client.id", "mailbridge-bench")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .map_err(|err| format!("failed to create the Kafka producer: {err}"))?;
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|err| format!("failed to read the metadata of topic {topic}: {err}"))?;
    Ok(producer)
}

async fn produce_kafka(
    producer: &FutureProducer,
    topic: &str,
    requests: &[(String, Vec<u8>)],
) -> Result<(), String> {
    let sends = requests.iter().map(|(id, body)| {
        let record = FutureRecord::to(topic)
            .key(id.as_str())
            .payload(body.as_slice());
        let delivery = producer.send(record, Duration::from_secs(30));
        async move { delivery.await.map_err(|(err, _)| err) }
    });
    try_join_all(sends)
        .await
        .map_err(|err| format!("failed to send a request to topic {topic}: {err}"))?;
    Ok(())
}

async fn produce_amqp(
    channel: &lapin::Channel,
    queue: &str,
    requests: &[(String, Vec<u8>)],
) -> Result<(), String> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|err| format!("failed to enable publisher confirms: {err}"))?;
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let mut confirms = Vec::with_capacity(requests.len());
    for (id, body) in requests {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(id.as_str().into());
        let confirm = channel
            .basic_publish("", queue, options, body, properties)
            .await
            .map_err(|err| format!("failed to publish to queue {queue}: {err}"))?;
        confirms.push(confirm);
    }
    for confirm in confirms {
        let confirmation = confirm
            .await
            .map_err(|err| format!("publish to queue {queue} failed: {err}"))?;
        if !confirmation.is_ack() || confirmation.take_message().is_some() {
            return Err(format!("queue {queue} did not accept a request"));
        }
    }
    Ok(())
}

async fn watch_kafka_status(
    consumer: rdkafka::consumer::StreamConsumer,
    events: mpsc::UnboundedSender<(Value, Instant)>,
) -> Result<(), String> {
    loop {
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(err) => {
                skip_transient(err)?;
                continue;
            }
        };
        let at = Instant::now();
        let event = parse_event(message.payload().unwrap_or_default())?;
        events
            .send((event, at))
            .map_err(|_| "the status receiver was dropped".to_string())?;
    }
}

async fn watch_amqp_status(
    channel: lapin::Channel,
    queue: String,
    events: mpsc::UnboundedSender<(Value, Instant)>,
) -> Result<(), String> {
    let options = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut consumer = channel
        .basic_consume(
            &queue,
            "mailbridge-bench-status",
            options,
            FieldTable::default(),
        )
        .await
        .map_err(|err| format!("failed to consume from queue {queue}: {err}"))?;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.map_err(|err| format!("failed to read from {queue}: {err}"))?;
        let at = Instant::now();
        let event = parse_event(&delivery.data)?;
        events
            .send((event, at))
            .map_err(|_| "the status receiver was dropped".to_string())?;
    }
    Err(format!("the consumer of queue {queue} was cancelled"))
}

fn parse_event(payload: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(payload).map_err(|err| format!("invalid JSON status event: {err}"))
}

/// Returns N of an untagged `* STATUS mailbox (MESSAGES N)` response.
fn status_messages(text: &str) -> Option<usize> {
    if !text.starts_with("* STATUS") {
        return None;
    }
    let after = &text[text.rfind("MESSAGES")? + "MESSAGES".len()..];
    after
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_messages_reads_count() {
        assert_eq!(
            status_messages("* STATUS INBOX (MESSAGES 231)\r\n"),
            Some(231)
        );
        assert_eq!(
            status_messages("* STATUS \"A b\" (MESSAGES 0)\r\n"),
            Some(0)
        );
        assert_eq!(status_messages("* OK done\r\n"), None);
    }

    #[test]
    fn request_is_valid_json() {
        let request = request("r1-3", 3, "to@example.test", 2048);
        let value: Value = serde_json::from_slice(&request).unwrap();
        assert_eq!(value["id"], "r1-3");
        assert_eq!(value["to"][0], "to@example.test");
        assert!(value["text"].as_str().unwrap().len() >= 2000);
    }
}
