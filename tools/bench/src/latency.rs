//! New-mail latency: mails appended one at a time at random intervals into
//! a mailbox that `mailbridge run` watches over IDLE, timed from the tagged
//! OK of each APPEND to the moment a Kafka consumer receives the mail's
//! document. A minimal IDLE client on the same mailbox records when the
//! server's untagged EXISTS arrives, which is the server's own
//! notification latency.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::ImapArgs;
use crate::broker::assigned_consumer;
use crate::imap::{Session, quote};
use crate::mail;
use crate::metrics::{self, Histogram};
use crate::process::Measured;

#[derive(Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    imap: ImapArgs,
    #[arg(long, default_value = "INBOX")]
    mailbox: String,
    /// Kafka bootstrap servers.
    #[arg(long)]
    kafka: String,
    /// Topic of the measured inbound pipeline.
    #[arg(long)]
    topic: String,
    /// Number of mails appended.
    #[arg(long)]
    count: usize,
    /// Minimum wait before an APPEND, in milliseconds.
    #[arg(long, default_value_t = 50)]
    min_interval_ms: u64,
    /// Maximum wait before an APPEND, in milliseconds.
    #[arg(long, default_value_t = 500)]
    max_interval_ms: u64,
    /// Seed of the generator of the waits, so that runs repeat them.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Size of each mail, in bytes.
    #[arg(long, default_value_t = 2048)]
    mail_bytes: usize,
    /// Run name that makes Message-IDs unique.
    #[arg(long)]
    run: String,
    /// Address of the command's metrics server, which serves /readyz.
    #[arg(long)]
    ready: String,
    /// Seconds allowed for each phase: start, appending, and arrival.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// File that receives the command's standard output and error.
    #[arg(long)]
    log: PathBuf,
    /// Command to measure, such as `mailbridge --config FILE run`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub async fn measure(args: LatencyArgs) -> Result<Value, String> {
    if args.min_interval_ms > args.max_interval_ms {
        return Err("--min-interval-ms must not be above --max-interval-ms".into());
    }
    let timeout = Duration::from_secs(args.timeout);
    let log = args.log.display().to_string();
    let consumer = assigned_consumer(&args.kafka, &args.topic)?;
    let (document_sender, mut documents) = mpsc::unbounded_channel();
    let mut document_watch = tokio::spawn(watch_documents(consumer, document_sender));

    let mut measured = Measured::start(&args.command, &args.log)?;
    metrics::wait_ready(&mut measured, &args.ready, timeout)
        .await
        .map_err(|err| format!("{err}; see {log}"))?;
    // /readyz turns 200 once the mailbox is selected, and the catch-up
    // search still runs before mailbridge enters IDLE.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (notice_sender, mut notices) = mpsc::unbounded_channel();
    let idle_session = start_idle(&args.imap, &args.mailbox).await?;
    let mut idle_watch = tokio::spawn(watch_exists(idle_session, notice_sender));

    let cpu_before = measured.sample()?.cpu_seconds;
    let started = Instant::now();
    let appended = append_mails(&args).await?;
    let appending_seconds = started.elapsed().as_secs_f64();

    let mut arrived: HashMap<usize, Instant> = HashMap::with_capacity(args.count);
    let mut exists: Vec<(usize, Instant)> = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    let notified = |exists: &[(usize, Instant)]| exists.last().map_or(0, |last| last.0);
    while arrived.len() < args.count || notified(&exists) < args.count {
        tokio::select! {
            document = documents.recv() => match document {
                Some((message_id, at)) => {
                    if let Some(index) = mail_index(&message_id, &args.run) {
                        arrived.entry(index).or_insert(at);
                    }
                }
                None => return Err(ended("the Kafka consumer", &mut document_watch).await),
            },
            notice = notices.recv() => match notice {
                Some(notice) => exists.push(notice),
                None => return Err(ended("the IDLE client", &mut idle_watch).await),
            },
            _ = ticker.tick() => {
                measured.sample().map_err(|err| format!("{err}; see {log}"))?;
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(format!(
                    "{} of {} documents in topic {} and EXISTS for {} mails after {} s; see {log}",
                    arrived.len(),
                    args.count,
                    args.topic,
                    notified(&exists),
                    args.timeout
                ));
            }
        }
    }
    let cpu_seconds = measured.sample()?.cpu_seconds - cpu_before;
    let exposition = metrics::get(&args.ready, "/metrics")
        .await
        .unwrap_or_default();
    let poll = Histogram::read(&exposition, "mailbridge_imap_poll_duration_seconds");
    let publish = Histogram::read(&exposition, "mailbridge_publish_duration_seconds");
    idle_watch.abort();
    document_watch.abort();
    let exit_code = measured.stop(Duration::from_secs(40)).await?;
    if exit_code != 0 {
        return Err(format!(
            "the measured process exited with status {exit_code} after SIGTERM; see {log}"
        ));
    }

    let mut bridge_ms = Vec::with_capacity(args.count);
    let mut server_ms = Vec::with_capacity(args.count);
    for (index, appended_at) in appended.iter().enumerate() {
        let document = arrived
            .get(&index)
            .ok_or_else(|| format!("no document arrived for mail {index}"))?;
        bridge_ms.push(milliseconds_between(*appended_at, *document));
        // The mailbox was empty, so mail `index` is message number
        // `index + 1`, and the first EXISTS of at least that number
        // announced it.
        let notice = exists
            .iter()
            .find(|(number, _)| *number > index)
            .map(|(_, at)| *at)
            .ok_or_else(|| format!("no EXISTS announced mail {}", index + 1))?;
        server_ms.push(milliseconds_between(*appended_at, notice));
    }
    Ok(json!({
        "mails": args.count,
        "mail_bytes": args.mail_bytes,
        "min_interval_ms": args.min_interval_ms,
        "max_interval_ms": args.max_interval_ms,
        "seed": args.seed,
        "appending_seconds": appending_seconds,
        "mailbridge": summary(&bridge_ms),
        "server": summary(&server_ms),
        "cpu_seconds": cpu_seconds,
        "poll_cycles": poll.count,
        "poll_cycle_mean_ms": poll.mean() * 1000.0,
        "publish_mean_ms": publish.mean() * 1000.0,
        "mailbridge_ms": bridge_ms,
        "server_ms": server_ms,
    }))
}

/// Appends mail 0 to `count - 1`, each after a random wait, and returns
/// the moment each APPEND's tagged OK arrived.
async fn append_mails(args: &LatencyArgs) -> Result<Vec<Instant>, String> {
    let mut session = Session::open(&args.imap, &args.imap.token).await?;
    let mut random = XorShift::new(args.seed);
    let spread = args.max_interval_ms - args.min_interval_ms + 1;
    let mut appended = Vec::with_capacity(args.count);
    for index in 0..args.count {
        let wait = args.min_interval_ms + random.next() % spread;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let message = mail::message(index, &args.run, &args.imap.user, args.mail_bytes, 0);
        session.append(&args.mailbox, &[message]).await?;
        appended.push(Instant::now());
    }
    session.logout().await;
    Ok(appended)
}

/// Signs in, selects the mailbox and starts IDLE (RFC 2177).
async fn start_idle(imap: &ImapArgs, mailbox: &str) -> Result<Session, String> {
    let mut session = Session::open(imap, &imap.token).await?;
    session
        .command(&format!("SELECT {}", quote(mailbox)))
        .await?;
    session.send(b"IDLE").await?;
    let reply = session.read_response().await?;
    if !reply.text.starts_with('+') {
        return Err(format!("IDLE was not accepted: {}", reply.text.trim_end()));
    }
    Ok(session)
}

/// Sends the number and arrival time of every untagged EXISTS.
async fn watch_exists(
    mut session: Session,
    notices: mpsc::UnboundedSender<(usize, Instant)>,
) -> Result<(), String> {
    loop {
        let response = session.read_response().await?;
        let at = Instant::now();
        if let Some(number) = exists_number(&response.text) {
            notices
                .send((number, at))
                .map_err(|_| "the EXISTS receiver was dropped".to_string())?;
        }
    }
}

/// Sends the `message_id` and arrival time of every document.
pub async fn watch_documents(
    consumer: StreamConsumer,
    documents: mpsc::UnboundedSender<(String, Instant)>,
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
        let Some(payload) = message.payload() else {
            continue;
        };
        let document: Value = serde_json::from_slice(payload)
            .map_err(|err| format!("invalid JSON document in the topic: {err}"))?;
        if let Some(message_id) = document["message_id"].as_str() {
            documents
                .send((message_id.to_string(), at))
                .map_err(|_| "the document receiver was dropped".to_string())?;
        }
    }
}

/// Logs a consumer error that librdkafka recovers from by itself, such as
/// a broker connection that was closed and is reconnected, and returns
/// every other error.
pub fn skip_transient(err: KafkaError) -> Result<(), String> {
    match err {
        KafkaError::MessageConsumption(code) => {
            eprintln!("mailbridge-bench: the Kafka consumer reported {code}; it reconnects");
            Ok(())
        }
        err => Err(format!("failed to read from Kafka: {err}")),
    }
}

/// Returns the error of a watch task that ended.
async fn ended(watch: &str, handle: &mut tokio::task::JoinHandle<Result<(), String>>) -> String {
    match handle.await {
        Ok(Err(err)) => format!("{watch} failed: {err}"),
        Ok(Ok(())) => format!("{watch} ended early"),
        Err(err) => format!("{watch} failed: {err}"),
    }
}

/// Returns N of an untagged `* N EXISTS` response.
fn exists_number(text: &str) -> Option<usize> {
    let mut words = text.split_whitespace();
    let (Some("*"), Some(number), Some(keyword)) = (words.next(), words.next(), words.next())
    else {
        return None;
    };
    if !keyword.eq_ignore_ascii_case("EXISTS") {
        return None;
    }
    number.parse().ok()
}

/// Returns the index of a benchmark mail of `run` from its Message-ID
/// without angle brackets, `INDEX.RUN@bench.DOMAIN` as [`mail::message`]
/// writes it.
pub fn mail_index(message_id: &str, run: &str) -> Option<usize> {
    let (index, rest) = message_id.split_once('.')?;
    let rest = rest.strip_prefix(run)?;
    if !rest.starts_with("@bench.") {
        return None;
    }
    index.parse().ok()
}

/// Returns the milliseconds from `start` to `end`, negative when `end`
/// came first.
pub fn milliseconds_between(start: Instant, end: Instant) -> f64 {
    if end >= start {
        end.duration_since(start).as_secs_f64() * 1000.0
    } else {
        -(start.duration_since(end).as_secs_f64() * 1000.0)
    }
}

/// Summarizes latencies in milliseconds as p50, p99, mean and maximum.
pub fn summary(latencies: &[f64]) -> Value {
    let mut sorted = latencies.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mean = sorted.iter().sum::<f64>() / sorted.len().max(1) as f64;
    json!({
        "p50_ms": percentile(&sorted, 50.0),
        "p99_ms": percentile(&sorted, 99.0),
        "mean_ms": mean,
        "max_ms": sorted.last().copied().unwrap_or(0.0),
    })
}

/// Nearest-rank percentile of sorted values: the smallest value that at
/// least `percent` percent of the values do not exceed.
fn percentile(sorted: &[f64], percent: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// xorshift64 generator of the waits between APPENDs.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exists_number_reads_untagged_exists() {
        assert_eq!(exists_number("* 12 EXISTS\r\n"), Some(12));
        assert_eq!(exists_number("* 3 exists\r\n"), Some(3));
        assert_eq!(exists_number("* 2 RECENT\r\n"), None);
        assert_eq!(exists_number("* OK Still here\r\n"), None);
    }

    #[test]
    fn mail_index_matches_run() {
        assert_eq!(
            mail_index("17.r1-latency@bench.example.test", "r1-latency"),
            Some(17)
        );
        assert_eq!(
            mail_index("17.r2-latency@bench.example.test", "r1-latency"),
            None
        );
        assert_eq!(
            mail_index("17.r1-latency-x@bench.example.test", "r1-latency"),
            None
        );
    }

    #[test]
    fn percentile_uses_nearest_rank() {
        let sorted: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), 100.0);
        assert_eq!(percentile(&sorted, 99.0), 198.0);
        assert_eq!(percentile(&sorted[..20], 99.0), 20.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }

    #[test]
    fn xorshift_repeats_for_a_seed() {
        let mut first = XorShift::new(7);
        let mut second = XorShift::new(7);
        assert_eq!(first.next(), second.next());
        assert_ne!(first.next(), XorShift::new(8).next());
    }
}
