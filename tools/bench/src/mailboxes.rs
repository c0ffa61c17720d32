//! Many watched mailboxes: `mailbridge run` watching N mailboxes over IDLE,
//! spread over several accounts, is timed until every mailbox has a
//! session. It is then sampled while idle: resident memory, CPU time,
//! threads and open file descriptors. Optionally one new mail per mailbox
//! is timed from the tagged OK of its APPEND to its document in Kafka.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use futures::future::try_join_all;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::ImapArgs;
use crate::broker::assigned_consumer;
use crate::imap::Session;
use crate::latency::{mail_index, milliseconds_between, summary, watch_documents};
use crate::mail;
use crate::metrics::series_total;
use crate::process::Measured;
use crate::tokens::http_get;

#[derive(Args)]
pub struct MailboxesArgs {
    /// Address of the command's metrics server, which serves /readyz and
    /// /metrics.
    #[arg(long)]
    ready: String,
    /// Users whose mailboxes the command watches, in the order of the
    /// tokens in BENCH_ACCESS_TOKENS.
    #[arg(long = "user", required = true)]
    users: Vec<String>,
    /// Mailboxes watched in each user's account.
    #[arg(long = "mailbox", required = true)]
    mailboxes: Vec<String>,
    /// OAuth2 access tokens of the users, separated by white space.
    #[arg(long, env = "BENCH_ACCESS_TOKENS", hide_env_values = true)]
    tokens: String,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Implicit-TLS port of the IMAP server.
    #[arg(long)]
    port: u16,
    /// PEM file of the CA that issued the server certificate.
    #[arg(long)]
    ca_file: PathBuf,
    /// Seconds to wait after every mailbox is connected before sampling.
    #[arg(long, default_value_t = 5)]
    settle: u64,
    /// Seconds of the idle window whose CPU time is measured.
    #[arg(long, default_value_t = 60)]
    idle: u64,
    /// Kafka bootstrap servers. With --topic, one mail is appended to every
    /// mailbox after the idle window and timed to its document.
    #[arg(long)]
    kafka: Option<String>,
    /// Topic of the measured inbound pipelines.
    #[arg(long, requires = "kafka")]
    topic: Option<String>,
    /// Run name that makes Message-IDs unique.
    #[arg(long, default_value = "mailboxes")]
    run: String,
    /// Seconds allowed for each phase: start, appending, and arrival.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// File that receives the command's standard output and error.
    #[arg(long)]
    log: PathBuf,
    /// Command to measure, such as `mailbridge --config FILE run`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Resources of the measured process at one moment.
struct Usage {
    rss_bytes: u64,
    cpu_seconds: f64,
    threads: u64,
    open_files: usize,
}

pub async fn measure(args: MailboxesArgs) -> Result<Value, String> {
    let accounts = accounts(&args)?;
    let expected = accounts.len() * args.mailboxes.len();
    let log = args.log.display().to_string();

    // The consumer is assigned before the start, so that no document of the
    // new-mail phase can be missed.
    let (document_sender, documents) = mpsc::unbounded_channel();
    let document_watch = match (&args.kafka, &args.topic) {
        (Some(kafka), Some(topic)) => {
            let consumer = assigned_consumer(kafka, topic)?;
            Some(tokio::spawn(watch_documents(consumer, document_sender)))
        }
        _ => None,
    };

    let started = Instant::now();
    let mut measured = Measured::start(&args.command, &args.log)?;
    let (ready_seconds, connected_seconds) = wait_connected(&args, &mut measured, expected)
        .await
        .map_err(|err| format!("{err}; see {log}"))?;
    let started_usage = usage(&mut measured)?;

    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let settled = usage(&mut measured)?;
    tokio::time::sleep(Duration::from_secs(args.idle)).await;
    let idled = usage(&mut measured).map_err(|err| format!("{err}; see {log}"))?;
    let connected_after_idle = connected(&args.ready).await?;
    if connected_after_idle < expected as f64 {
        return Err(format!(
            "{connected_after_idle} of {expected} mailboxes were still connected after the \
             idle window; see {log}"
        ));
    }

    let mut result = json!({
        "accounts": accounts.len(),
        "mailboxes": expected,
        "ready_seconds": ready_seconds,
        "connected_seconds": connected_seconds,
        "rss_bytes_at_connected": started_usage.rss_bytes,
        "rss_bytes": idled.rss_bytes,
        "peak_rss_bytes": measured.peak_rss_bytes,
        "settle_seconds": args.settle,
        "idle_seconds": args.idle,
        "idle_cpu_seconds": idled.cpu_seconds - settled.cpu_seconds,
        "start_cpu_seconds": started_usage.cpu_seconds,
        "threads": idled.threads,
        "open_files": idled.open_files,
    });
    if let Some(watch) = document_watch {
        let new_mail = new_mail(&args, &accounts, documents, &mut measured).await;
        watch.abort();
        result["new_mail"] = new_mail.map_err(|err| format!("{err}; see {log}"))?;
    }

    let stopping = Instant::now();
    let exit_code = measured.stop(Duration::from_secs(60)).await?;
    if exit_code != 0 {
        return Err(format!(
            "the measured process exited with status {exit_code} after SIGTERM; see {log}"
        ));
    }
    result["stop_seconds"] = json!(stopping.elapsed().as_secs_f64());
    result["total_seconds"] = json!(started.elapsed().as_secs_f64());
    Ok(result)
}

/// Pairs each user with its token from BENCH_ACCESS_TOKENS.
fn accounts(args: &MailboxesArgs) -> Result<Vec<ImapArgs>, String> {
    let tokens: Vec<&str> = args.tokens.split_whitespace().collect();
    if tokens.len() != args.users.len() {
        return Err(format!(
            "BENCH_ACCESS_TOKENS contains {} tokens for {} users; give one per --user",
            tokens.len(),
            args.users.len()
        ));
    }
    let accounts = args
        .users
        .iter()
        .zip(tokens)
        .map(|(user, token)| ImapArgs {
            host: args.host.clone(),
            port: args.port,
            ca_file: args.ca_file.clone(),
            user: user.clone(),
            token: token.to_owned(),
        })
        .collect();
    Ok(accounts)
}

/// Waits until /readyz returns 200 and the sessions reported by
/// `mailbridge_imap_connected` add up to `expected`; returns the seconds
/// from the start to each.
async fn wait_connected(
    args: &MailboxesArgs,
    measured: &mut Measured,
    expected: usize,
) -> Result<(f64, f64), String> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let (mut ready, mut all_connected) = (None, None);
    let mut count = 0.0;
    loop {
        measured.sample()?;
        if ready.is_none() && readyz(&args.ready).await {
            ready = Some(started.elapsed().as_secs_f64());
        }
        if all_connected.is_none() {
            count = connected(&args.ready).await.unwrap_or(0.0);
            if count >= expected as f64 {
                all_connected = Some(started.elapsed().as_secs_f64());
            }
        }
        if let (Some(ready), Some(all_connected)) = (ready, all_connected) {
            return Ok((ready, all_connected));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "after {} s, /readyz returned {} and {count} of {expected} mailboxes were \
                 connected",
                args.timeout,
                if ready.is_some() { "200" } else { "no 200" },
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn readyz(address: &str) -> bool {
    matches!(http_get(address, "/readyz").await, Ok((200, _)))
}

/// Returns the sum of `mailbridge_imap_connected` over every mailbox.
async fn connected(address: &str) -> Result<f64, String> {
    let (status, body) = http_get(address, "/metrics").await?;
    if status != 200 {
        return Err(format!("GET http://{address}/metrics returned {status}"));
    }
    Ok(series_total(&body, "mailbridge_imap_connected"))
}

/// Reads memory, CPU time, threads and open file descriptors from /proc.
fn usage(measured: &mut Measured) -> Result<Usage, String> {
    let sample = measured.sample()?;
    let pid = measured.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|err| format!("failed to read /proc/{pid}/status: {err}"))?;
    let threads = status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    let open_files = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|err| format!("failed to list /proc/{pid}/fd: {err}"))?
        .count();
    Ok(Usage {
        rss_bytes: sample.rss_bytes,
        cpu_seconds: sample.cpu_seconds,
        threads,
        open_files,
    })
}

/// Appends one mail to every mailbox, one session per account, and times
/// each from its APPEND's tagged OK to its document.
async fn new_mail(
    args: &MailboxesArgs,
    accounts: &[ImapArgs],
    mut documents: mpsc::UnboundedReceiver<(String, Instant)>,
    measured: &mut Measured,
) -> Result<Value, String> {
    let expected = accounts.len() * args.mailboxes.len();
    let cpu_before = measured.sample()?.cpu_seconds;
    let started = Instant::now();
    let appends = accounts
        .iter()
        .enumerate()
        .map(|(number, account)| append_one_each(args, account, number));
    let appended: HashMap<usize, Instant> =
        try_join_all(appends).await?.into_iter().flatten().collect();
    let appending_seconds = started.elapsed().as_secs_f64();

    let mut arrived: HashMap<usize, Instant> = HashMap::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    while arrived.len() < expected {
        tokio::select! {
            document = documents.recv() => match document {
                Some((message_id, at)) => {
                    if let Some(index) = mail_index(&message_id, &args.run) {
                        arrived.entry(index).or_insert(at);
                    }
                }
                None => return Err("the Kafka consumer ended early".into()),
            },
            _ = tokio::time::sleep_until(deadline) => {
                return Err(format!(
                    "{} of {expected} documents arrived within {} s of the appends",
                    arrived.len(),
                    args.timeout
                ));
            }
        }
    }
    let last = arrived.values().max().copied().unwrap_or(started);
    let cpu_seconds = measured.sample()?.cpu_seconds - cpu_before;

    let latencies: Vec<f64> = appended
        .iter()
        .map(|(index, appended_at)| milliseconds_between(*appended_at, arrived[index]))
        .collect();
    Ok(json!({
        "mails": expected,
        "appending_seconds": appending_seconds,
        "all_published_seconds": last.duration_since(started).as_secs_f64(),
        "latency": summary(&latencies),
        "cpu_seconds": cpu_seconds,
    }))
}

/// Appends mail `number * mailboxes + i` to mailbox `i` of one account and
/// returns each mail's index with the moment its APPEND completed.
async fn append_one_each(
    args: &MailboxesArgs,
    account: &ImapArgs,
    number: usize,
) -> Result<Vec<(usize, Instant)>, String> {
    let mut session = Session::open(account, &account.token).await?;
    let mut appended = Vec::with_capacity(args.mailboxes.len());
    for (offset, mailbox) in args.mailboxes.iter().enumerate() {
        let index = number * args.mailboxes.len() + offset;
        let message = mail::message(index, &args.run, &account.user, 2048, 0);
        session.append(mailbox, &[message]).await?;
        appended.push((index, Instant::now()));
    }
    session.logout().await;
    Ok(appended)
}
