//! Measuring helper of `scripts/bench`. Each subcommand takes one
//! measurement and prints its result as one JSON object on standard output.
//! `report` turns a run directory of those results into BENCHMARKS.md.
//! Errors go to standard error with exit status 1, so that a failed or
//! short measurement fails the benchmark run.

mod broker;
mod chaos;
mod groups;
mod imap;
mod latency;
mod mail;
mod mailboxes;
mod metrics;
mod outbound;
mod peer;
mod process;
mod profile;
mod report;
mod report_latency;
mod report_outbound;
mod report_peer;
mod smtp;
mod tokens;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use broker::{Identity, Progress};
use metrics::Histogram;
use process::{MachineCpu, Measured};

#[derive(Parser)]
#[command(about = "Measurements of scripts/bench and scripts/chaos; each prints one JSON object")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Append generated mails to a mailbox (IMAP MULTIAPPEND with LITERAL+).
    Seed(SeedArgs),
    /// Create mailboxes.
    Create(CreateArgs),
    /// Delete every mail of a mailbox, so that seeded mail does not pile up.
    Empty(EmptyArgs),
    /// Fetch every mail of a mailbox with UID FETCH BODY.PEEK[] in batches.
    Fetch(FetchArgs),
    /// Run a command and time it until the broker contains N distinct documents.
    Backfill(BackfillArgs),
    /// Run a peer that exits by itself and time it until the broker contains N mails.
    Peer(peer::PeerArgs),
    /// Send N documents with a minimal producer and time them until counted.
    Produce(ProduceArgs),
    /// Run a command until its /readyz returns 200 and report its memory.
    Idle(IdleArgs),
    /// Run a command, end its IMAP sessions over and over, and count its token requests.
    Tokens(tokens::TokensArgs),
    /// Time new mail from APPEND to its document, beside an IDLE client.
    Latency(latency::LatencyArgs),
    /// Run a command watching many mailboxes, time its start and sample it idle.
    Mailboxes(mailboxes::MailboxesArgs),
    /// Time send requests through a command until their status events.
    Outbound(outbound::OutboundArgs),
    /// Send N mails with the minimal SMTP client over one or more connections.
    SmtpLimit(outbound::SmtpLimitArgs),
    /// Wait until a mailbox contains N mails.
    MailboxCount(outbound::DeliveredArgs),
    /// Print a free TCP port on 127.0.0.1.
    FreePort,
    /// Write BENCHMARKS.md from the results of a run directory.
    Report(report::ReportArgs),
    /// Record a target's documents until SIGTERM and print lost and duplicated items.
    Collect(chaos::CollectArgs),
    /// Append mails slowly, connecting again after every failure.
    Trickle(chaos::TrickleArgs),
    /// Produce outbound send requests addressed to one mailbox.
    Send(chaos::SendArgs),
    /// Count the send requests that reached a mailbox or the dead-letter target.
    Delivered(chaos::DeliveredArgs),
}

/// IMAP server and user. The access token comes from the environment, so
/// that it never shows in a process list.
#[derive(Args)]
pub struct ImapArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Implicit-TLS port.
    #[arg(long)]
    port: u16,
    /// PEM file of the CA that issued the server certificate.
    #[arg(long)]
    ca_file: PathBuf,
    /// User to sign in as; the token's user claim must match.
    #[arg(long)]
    user: String,
    /// OAuth2 access token of the user.
    #[arg(long, env = "BENCH_ACCESS_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Args)]
struct SeedArgs {
    #[command(flatten)]
    imap: ImapArgs,
    #[arg(long, default_value = "INBOX")]
    mailbox: String,
    /// Number of mails.
    #[arg(long)]
    count: usize,
    /// Size of each mail's text part, in bytes.
    #[arg(long, default_value_t = 5 * 1024)]
    mail_bytes: usize,
    /// Size of each mail's attachment before base64, in bytes; 0 for none.
    #[arg(long, default_value_t = 0)]
    attachment_bytes: usize,
    /// Run name that makes Message-IDs unique.
    #[arg(long)]
    run: String,
}

#[derive(Args)]
struct CreateArgs {
    #[command(flatten)]
    imap: ImapArgs,
    /// Mailboxes to create.
    #[arg(required = true)]
    mailboxes: Vec<String>,
}

#[derive(Args)]
struct EmptyArgs {
    #[command(flatten)]
    imap: ImapArgs,
    #[arg(long, default_value = "INBOX")]
    mailbox: String,
}

#[derive(Args)]
struct FetchArgs {
    #[command(flatten)]
    imap: ImapArgs,
    #[arg(long, default_value = "INBOX")]
    mailbox: String,
    /// UIDs per UID FETCH command, as mailbridge's `batch_size`.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Number of mails the mailbox must hold.
    #[arg(long)]
    expect: usize,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum BrokerKind {
    Kafka,
    Amqp,
}

#[derive(Args, Clone)]
pub struct BrokerArgs {
    #[arg(long, value_enum)]
    broker: BrokerKind,
    /// Kafka bootstrap servers, or AMQP URL.
    #[arg(long)]
    address: String,
    /// Kafka topic or AMQP queue.
    #[arg(long)]
    target: String,
}

#[derive(Args)]
struct BackfillArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Number of distinct documents that ends the measurement.
    #[arg(long)]
    expect: usize,
    /// Seconds allowed before the measurement fails.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// File that receives the command's standard output and error.
    #[arg(long)]
    log: PathBuf,
    /// Address of the command's metrics server. With it, the result also
    /// gives the mean time of a batch and of its publication, read from
    /// the command's metrics after the last document.
    #[arg(long)]
    metrics: Option<String>,
    /// Command to measure, such as `mailbridge --config FILE run`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Args)]
struct ProduceArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Number of documents.
    #[arg(long)]
    count: usize,
    /// Size of each JSON document, in bytes.
    #[arg(long)]
    document_bytes: usize,
    /// Documents sent before waiting for all their confirmations.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Seconds allowed before the measurement fails.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

#[derive(Args)]
struct IdleArgs {
    /// Address of the command's metrics server, which serves /readyz.
    #[arg(long)]
    ready: String,
    /// Seconds to wait after /readyz first returns 200 before sampling.
    #[arg(long, default_value_t = 5)]
    settle: u64,
    /// Seconds allowed for /readyz to return 200.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Number of mailboxes the command watches, copied to the result.
    #[arg(long)]
    mailboxes: usize,
    /// File that receives the command's standard output and error.
    #[arg(long)]
    log: PathBuf,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Seed(args) => seed(args).await,
        Command::Create(args) => create(args).await,
        Command::Empty(args) => empty(args).await,
        Command::Fetch(args) => fetch(args).await,
        Command::Backfill(args) => backfill(args).await,
        Command::Peer(args) => peer::measure(args).await,
        Command::Produce(args) => produce(args).await,
        Command::Idle(args) => idle(args).await,
        Command::Tokens(args) => tokens::measure(args).await,
        Command::Latency(args) => latency::measure(args).await,
        Command::Mailboxes(args) => mailboxes::measure(args).await,
        Command::Outbound(args) => outbound::measure(args).await,
        Command::SmtpLimit(args) => outbound::limit(args).await,
        Command::MailboxCount(args) => outbound::delivered(args).await,
        Command::FreePort => free_port(),
        Command::Report(args) => report::write(&args).map(|()| json!({"written": args.output})),
        Command::Collect(args) => chaos::collect(args).await,
        Command::Trickle(args) => chaos::trickle(args).await,
        Command::Send(args) => chaos::send(args).await,
        Command::Delivered(args) => chaos::delivered(args).await,
    };
    match result {
        Ok(value) => {
            println!("{value}");
            // Exiting here skips the Kafka clients' shutdown, which can wait
            // for broker threads long after the measurement is complete.
            std::process::exit(0);
        }
        Err(err) => {
            eprintln!("mailbridge-bench: {err}");
            std::process::exit(1);
        }
    }
}

async fn seed(args: SeedArgs) -> Result<serde_json::Value, String> {
    let started = Instant::now();
    let mut session = imap::Session::open(&args.imap, &args.imap.token).await?;
    // About 1 MB per APPEND command keeps the server's memory small.
    let per_command = (1024 * 1024 / (args.mail_bytes + args.attachment_bytes * 4 / 3)).max(1);
    let (mut appended, mut bytes) = (0, 0);
    while appended < args.count {
        let end = (appended + per_command).min(args.count);
        let messages: Vec<Vec<u8>> = (appended..end)
            .map(|index| {
                mail::message(
                    index,
                    &args.run,
                    &args.imap.user,
                    args.mail_bytes,
                    args.attachment_bytes,
                )
            })
            .collect();
        bytes += messages.iter().map(Vec::len).sum::<usize>();
        session.append(&args.mailbox, &messages).await?;
        appended = end;
    }
    let seconds = started.elapsed().as_secs_f64();
    session.logout().await;
    Ok(json!({
        "mails": appended,
        "bytes": bytes,
        "seconds": seconds,
        "method": "IMAP MULTIAPPEND with LITERAL+ over TLS, signed in with XOAUTH2",
    }))
}

async fn create(args: CreateArgs) -> Result<serde_json::Value, String> {
    let mut session = imap::Session::open(&args.imap, &args.imap.token).await?;
    for mailbox in &args.mailboxes {
        session.command(&format!("CREATE \"{mailbox}\"")).await?;
    }
    session.logout().await;
    Ok(json!({ "created": args.mailboxes }))
}

async fn empty(args: EmptyArgs) -> Result<serde_json::Value, String> {
    let mut session = imap::Session::open(&args.imap, &args.imap.token).await?;
    session
        .command(&format!("SELECT \"{}\"", args.mailbox))
        .await?;
    session
        .command("STORE 1:* +FLAGS.SILENT (\\Deleted)")
        .await?;
    session.command("EXPUNGE").await?;
    session.logout().await;
    Ok(json!({ "emptied": args.mailbox }))
}

async fn fetch(args: FetchArgs) -> Result<serde_json::Value, String> {
    let machine_before = MachineCpu::now()?;
    let (mails, bytes, seconds) =
        imap::fetch_all(&args.imap, &args.imap.token, &args.mailbox, args.batch).await?;
    let machine = MachineCpu::now()?.since(&machine_before);
    if mails != args.expect {
        return Err(format!(
            "fetched {mails} mails from {}, expected {}",
            args.mailbox, args.expect
        ));
    }
    Ok(json!({
        "mails": mails,
        "bytes": bytes,
        "seconds": seconds,
        "batch": args.batch,
        "machine": machine.to_json(),
    }))
}

/// Starts the counting consumer and returns once it is assigned.
pub(crate) async fn start_counter(
    broker: BrokerArgs,
    expected: usize,
    identity: Identity,
    prefix: &str,
) -> Result<
    (
        tokio::task::JoinHandle<Result<Instant, String>>,
        Arc<Progress>,
    ),
    String,
> {
    let progress = Arc::new(Progress {
        prefix: prefix.as_bytes().to_vec(),
        ..Progress::default()
    });
    let (ready_sender, ready) = oneshot::channel();
    let counted = Arc::clone(&progress);
    let mut counter = tokio::spawn(async move {
        broker::count(&broker, expected, identity, counted, ready_sender).await
    });
    tokio::select! {
        _ = ready => Ok((counter, progress)),
        joined = &mut counter => Err(match joined {
            Ok(Err(err)) => err,
            Ok(Ok(_)) => "the counter ended before it was ready".into(),
            Err(err) => format!("the counter failed: {err}"),
        }),
    }
}

pub(crate) fn counter_result(
    joined: Result<Result<Instant, String>, tokio::task::JoinError>,
) -> Result<Instant, String> {
    joined.map_err(|err| format!("the counter failed: {err}"))?
}

async fn backfill(args: BackfillArgs) -> Result<serde_json::Value, String> {
    let target = args.broker.target.clone();
    let broker = args.broker.clone();
    let (mut counter, progress) =
        start_counter(args.broker, args.expect, Identity::Key, "").await?;

    let machine_before = MachineCpu::now()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let mut measured = Measured::start(&args.command, &args.log)?;
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    let last = loop {
        tokio::select! {
            joined = &mut counter => break counter_result(joined)?,
            _ = ticker.tick() => {
                measured.sample().map_err(|err| {
                    format!("{err}; see {}", args.log.display())
                })?;
                if Instant::now() > deadline {
                    return Err(format!(
                        "{} of {} documents in {target} after {} s; see {}",
                        progress.distinct.load(Ordering::Relaxed),
                        args.expect,
                        args.timeout,
                        args.log.display()
                    ));
                }
            }
        }
    };
    let sample = measured.sample()?;
    let machine = MachineCpu::now()?.since(&machine_before);
    let batches = match &args.metrics {
        Some(address) => batch_times(address).await?,
        None => json!(null),
    };
    let peak_rss_bytes = measured.peak_rss_bytes;
    let exit_code = measured.stop(Duration::from_secs(40)).await?;
    if exit_code != 0 {
        return Err(format!(
            "the measured process exited with status {exit_code} after SIGTERM; see {}",
            args.log.display()
        ));
    }
    broker::remove_target(&broker).await?;
    let documents = progress.distinct.load(Ordering::Relaxed);
    let bytes = progress.bytes.load(Ordering::Relaxed);
    Ok(json!({
        "documents": documents,
        "document_bytes": bytes / documents.max(1) as u64,
        "seconds": last.duration_since(started).as_secs_f64(),
        "first_seconds": progress
            .first
            .get()
            .map_or(0.0, |first| first.duration_since(started).as_secs_f64()),
        "peak_rss_bytes": peak_rss_bytes,
        "cpu_seconds": sample.cpu_seconds,
        "machine": machine.to_json(),
        "batches": batches,
    }))
}

/// Reads the number of published batches, their mean fetch cycle, their
/// mean publication, UID FETCH and build from the metrics at `address`. The broker hands
/// out the last document before mailbridge records its batch, so the
/// metrics are read a moment later.
async fn batch_times(address: &str) -> Result<serde_json::Value, String> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exposition = metrics::get(address, "/metrics").await.ok_or_else(|| {
        format!(
            "failed to read http://{address}/metrics: no 200 reply; check [metrics] listen \
                 in the measured configuration"
        )
    })?;
    let cycles = Histogram::read(&exposition, "mailbridge_imap_poll_duration_seconds");
    let published = Histogram::read(&exposition, "mailbridge_publish_duration_seconds");
    let fetches = Histogram::read(&exposition, "mailbridge_imap_fetch_duration_seconds");
    let builds = Histogram::read(&exposition, "mailbridge_build_duration_seconds");
    let batches = published.count.max(1.0);
    Ok(json!({
        "count": published.count,
        "cycle_ms": cycles.sum * 1000.0 / batches,
        "publish_ms": published.sum * 1000.0 / batches,
        "fetch_ms": fetches.sum * 1000.0 / fetches.count.max(1.0),
        "build_ms": builds.sum * 1000.0 / builds.count.max(1.0),
    }))
}

async fn produce(args: ProduceArgs) -> Result<serde_json::Value, String> {
    let ProduceArgs {
        broker,
        count,
        document_bytes,
        batch,
        timeout,
    } = args;
    let producer_broker = broker.clone();
    let (counter, progress) =
        start_counter(broker, count, Identity::Key, broker::run_prefix()).await?;
    let producer = tokio::time::timeout(
        Duration::from_secs(timeout),
        broker::Producer::connect(&producer_broker, Duration::from_secs(timeout)),
    )
    .await
    .map_err(|_| {
        format!(
            "failed to connect to {} within {timeout} s",
            producer_broker.address
        )
    })??;
    let machine_before = MachineCpu::now()?;
    let started = Instant::now();
    let measurement = async {
        let confirmed_seconds = producer
            .produce(&producer_broker, count, document_bytes, batch)
            .await?;
        let last = counter_result(counter.await)?;
        Ok::<_, String>((confirmed_seconds, last))
    };
    let (confirmed_seconds, last) =
        match tokio::time::timeout(Duration::from_secs(timeout), measurement).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(format!(
                    "{} of {count} documents counted in {} after {timeout} s",
                    progress.distinct.load(Ordering::Relaxed),
                    producer_broker.target
                ));
            }
        };
    let machine = MachineCpu::now()?.since(&machine_before);
    broker::remove_target(&producer_broker).await?;
    Ok(json!({
        "documents": progress.distinct.load(Ordering::Relaxed),
        "document_bytes": document_bytes,
        "batch": batch,
        "machine": machine.to_json(),
        "seconds": last.duration_since(started).as_secs_f64(),
        "confirmed_seconds": confirmed_seconds,
    }))
}

async fn idle(args: IdleArgs) -> Result<serde_json::Value, String> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let mut measured = Measured::start(&args.command, &args.log)?;
    loop {
        measured
            .sample()
            .map_err(|err| format!("{err}; see {}", args.log.display()))?;
        if readyz_status(&args.ready).await == Some(200) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "http://{}/readyz did not answer 200 within {} s; see {}",
                args.ready,
                args.timeout,
                args.log.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let sample = measured.sample()?;
    if readyz_status(&args.ready).await != Some(200) {
        return Err(format!(
            "http://{}/readyz stopped answering 200 while idle; see {}",
            args.ready,
            args.log.display()
        ));
    }
    let exit_code = measured.stop(Duration::from_secs(40)).await?;
    if exit_code != 0 {
        return Err(format!(
            "the measured process exited with status {exit_code} after SIGTERM; see {}",
            args.log.display()
        ));
    }
    Ok(json!({
        "mailboxes": args.mailboxes,
        "rss_bytes": sample.rss_bytes,
        "ready_seconds": ready_seconds,
        "settle_seconds": args.settle,
    }))
}

/// Returns the HTTP status of GET /readyz, or None when the server does not
/// respond.
async fn readyz_status(address: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.ok()?;
    let reply = String::from_utf8_lossy(&reply);
    reply.split_whitespace().nth(1)?.parse().ok()
}

fn free_port() -> Result<serde_json::Value, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|err| format!("failed to bind 127.0.0.1:0: {err}"))?;
    let port = listener
        .local_addr()
        .map_err(|err| format!("failed to read the bound port: {err}"))?
        .port();
    Ok(json!(port))
}
