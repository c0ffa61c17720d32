//! The peer of the inbound backfill: a command that fetches every mail of
//! the mailbox, publishes each one and then exits, such as fetchmail
//! handing each mail to `kcat`. It is timed like mailbridge, from its start
//! to the last distinct mail counted in the broker.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use crate::broker::Identity;
use crate::process::{self, Measured};
use crate::{BrokerArgs, counter_result, start_counter};

/// Time allowed for the last records to be counted after the command
/// exited. Its delivery commands have returned by then, so every record is
/// already in the broker.
const AFTER_EXIT: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct PeerArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Number of distinct mails, identified by their Message-ID header,
    /// that ends the measurement.
    #[arg(long)]
    expect: usize,
    /// Seconds allowed before the measurement fails.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Name and version of the peer, copied to the result.
    #[arg(long)]
    name: String,
    /// File that receives the command's standard output and error.
    #[arg(long)]
    log: PathBuf,
    /// Command to measure, which must exit with status 0 once done.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub async fn measure(args: PeerArgs) -> Result<Value, String> {
    let target = args.broker.target.clone();
    let (mut counter, progress) =
        start_counter(args.broker, args.expect, Identity::MessageId, "").await?;

    let started = Instant::now();
    let mut deadline = started + Duration::from_secs(args.timeout);
    let mut measured = Measured::start(&args.command, &args.log)?;
    let mut exit_code = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    let last = loop {
        tokio::select! {
            joined = &mut counter => break counter_result(joined)?,
            _ = ticker.tick() => {
                if exit_code.is_none() {
                    exit_code = exited(&mut measured, &args.log)?;
                    if exit_code.is_some() {
                        deadline = deadline.min(Instant::now() + AFTER_EXIT);
                    }
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{} of {} mails in {target} after {:.0} s; see {}",
                        progress.distinct.load(Ordering::Relaxed),
                        args.expect,
                        started.elapsed().as_secs_f64(),
                        args.log.display()
                    ));
                }
            }
        }
    };
    let peak_rss_bytes = measured.peak_rss_bytes;
    if exit_code.is_none() {
        let code = measured.wait(AFTER_EXIT).await?;
        check_exit(code, &args.log)?;
    }
    let exit_seconds = started.elapsed().as_secs_f64();

    let usage = process::children_usage()?;
    let documents = progress.distinct.load(Ordering::Relaxed);
    let bytes = progress.bytes.load(Ordering::Relaxed);
    Ok(json!({
        "peer": args.name,
        "documents": documents,
        "document_bytes": bytes / documents.max(1) as u64,
        "seconds": last.duration_since(started).as_secs_f64(),
        "exit_seconds": exit_seconds,
        "peak_rss_bytes": peak_rss_bytes.max(usage.max_rss_bytes),
        "cpu_seconds": usage.cpu_seconds,
    }))
}

/// Samples the command and returns its exit code once it has exited with
/// status 0; fails on any other status.
fn exited(measured: &mut Measured, log: &std::path::Path) -> Result<Option<i32>, String> {
    match measured.sample_or_exit()? {
        Ok(_) => Ok(None),
        Err(code) => check_exit(code, log).map(|()| Some(code)),
    }
}

fn check_exit(code: i32, log: &std::path::Path) -> Result<(), String> {
    if code == 0 {
        return Ok(());
    }
    Err(format!(
        "the measured process exited with status {code}; see {}",
        log.display()
    ))
}
