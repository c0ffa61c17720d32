//! Token endpoint requests of one account whose IMAP sessions are ended
//! over and over, so that every session signs in again.

use std::path::PathBuf;
use std::process::Command as Process;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::Measured;

#[derive(Args)]
pub struct TokensArgs {
    /// Address of the command's metrics server, which serves /readyz and /metrics.
    #[arg(long)]
    ready: String,
    /// Address (HOST:PORT) of the stack's OAuth2 server, whose /control
    /// counts token requests by grant type.
    #[arg(long)]
    oauth2: String,
    /// Dovecot configuration file that `doveadm kick` runs with.
    #[arg(long)]
    doveadm_config: PathBuf,
    /// User whose IMAP sessions are ended.
    #[arg(long)]
    user: String,
    /// Access token lifetime set at the OAuth2 server, in seconds, copied
    /// to the result.
    #[arg(long)]
    lifetime: u64,
    /// Number of mailboxes the command watches, one IMAP session each,
    /// copied to the result.
    #[arg(long)]
    mailboxes: usize,
    /// Seconds measured, from the first /readyz 200.
    #[arg(long)]
    duration: u64,
    /// Seconds between two `doveadm kick` runs.
    #[arg(long)]
    kick_every: u64,
    /// Seconds allowed for /readyz to return 200, at the start and after
    /// the last kick.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// File that receives the command's standard output and error.
    #[arg(long)]
    log: PathBuf,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Counter values read at one moment.
struct Counters {
    /// Refresh-token grants counted by the OAuth2 server, from every client.
    server_refreshes: f64,
    /// Token requests counted by mailbridge itself, of every result.
    mailbridge_requests: f64,
    /// IMAP sessions that mailbridge had to open again.
    reconnects: f64,
}

pub async fn measure(args: TokensArgs) -> Result<serde_json::Value, String> {
    let mut measured = Measured::start(&args.command, &args.log)?;
    wait_ready(&args, &mut measured).await?;
    let before = read_counters(&args).await?;
    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration);

    let mut kicks = 0u64;
    let mut missed = 0u64;
    let mut next_kick = started + Duration::from_secs(args.kick_every);
    while next_kick < end {
        tokio::time::sleep_until(next_kick.into()).await;
        measured
            .sample()
            .map_err(|err| format!("{err}; see {}", args.log.display()))?;
        match kick(&args).await? {
            true => kicks += 1,
            false => missed += 1,
        }
        next_kick += Duration::from_secs(args.kick_every);
    }
    tokio::time::sleep_until(end.into()).await;
    // Every session must be back before the counters are read, so that the
    // sign-ins of the last kick are part of the count.
    wait_ready(&args, &mut measured).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = read_counters(&args).await?;

    let exit_code = measured.stop(Duration::from_secs(40)).await?;
    if exit_code != 0 {
        return Err(format!(
            "the measured process exited with status {exit_code} after SIGTERM; see {}",
            args.log.display()
        ));
    }
    let reconnects = after.reconnects - before.reconnects;
    if kicks > 0 && reconnects < kicks as f64 {
        return Err(format!(
            "{kicks} kicks but only {reconnects} IMAP reconnects: the sessions were not ended; see {}",
            args.log.display()
        ));
    }
    Ok(json!({
        "mailboxes": args.mailboxes,
        "lifetime_seconds": args.lifetime,
        "seconds": elapsed,
        "kicks": kicks,
        "missed_kicks": missed,
        "reconnects": reconnects,
        "server_refreshes": after.server_refreshes - before.server_refreshes,
        "mailbridge_requests": after.mailbridge_requests - before.mailbridge_requests,
    }))
}

async fn wait_ready(args: &TokensArgs, measured: &mut Measured) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        measured
            .sample()
            .map_err(|err| format!("{err}; see {}", args.log.display()))?;
        if let Ok((200, _)) = http_get(&args.ready, "/readyz").await {
            return Ok(());
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
}

/// Exit status of `doveadm kick` when it found no session of the user
/// (EX_NOUSER).
const NO_SESSION: i32 = 68;

/// Ends every IMAP session of the user with `doveadm kick`, and returns
/// whether it found any. Dovecot 2.3.19 at times reports no session while
/// all ten are signed in, so that result is retried twice, 200 ms apart,
/// and then counted as a missed kick instead of failing the step.
async fn kick(args: &TokensArgs) -> Result<bool, String> {
    let mut attempts = 0;
    let output = loop {
        attempts += 1;
        let output = Process::new("doveadm")
            .arg("-c")
            .arg(&args.doveadm_config)
            .args(["kick", &args.user])
            .output()
            .map_err(|err| format!("failed to run doveadm: {err}"))?;
        if output.status.code() != Some(NO_SESSION) {
            break output;
        }
        if attempts == 3 {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !output.status.success() {
        return Err(format!(
            "doveadm kick {} failed with {}: {}",
            args.user,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(true)
}

async fn read_counters(args: &TokensArgs) -> Result<Counters, String> {
    let (status, control) = http_get(&args.oauth2, "/control").await?;
    if status != 200 {
        return Err(format!(
            "GET http://{}/control returned {status}",
            args.oauth2
        ));
    }
    let control: serde_json::Value = serde_json::from_str(&control).map_err(|err| {
        format!(
            "GET http://{}/control returned invalid JSON: {err}",
            args.oauth2
        )
    })?;
    let server_refreshes = control["grant_types"]["refresh_token"]
        .as_f64()
        .ok_or_else(|| {
            format!(
                "GET http://{}/control has no grant_types.refresh_token",
                args.oauth2
            )
        })?;

    let (status, metrics) = http_get(&args.ready, "/metrics").await?;
    if status != 200 {
        return Err(format!(
            "GET http://{}/metrics returned {status}",
            args.ready
        ));
    }
    Ok(Counters {
        server_refreshes,
        mailbridge_requests: sum_samples(&metrics, "mailbridge_oauth2_token_refreshes_total"),
        reconnects: sum_samples(&metrics, "mailbridge_imap_reconnects_total"),
    })
}

/// Sums every sample of a metric in Prometheus text format, whatever its labels.
fn sum_samples(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends GET over plain HTTP to a loopback address and returns the status
/// and body. HTTP/1.0 keeps the body free of chunked encoding.
pub async fn http_get(address: &str, path: &str) -> Result<(u16, String), String> {
    let failed = |err: std::io::Error| format!("GET http://{address}{path} failed: {err}");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(failed)?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(failed)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.map_err(failed)?;
    let reply = String::from_utf8_lossy(&reply);
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("GET http://{address}{path} returned no HTTP status"))?;
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_samples_adds_every_label_set() {
        let text = "# HELP mailbridge_x_total x\n\
                    mailbridge_x_total{result=\"success\"} 3\n\
                    mailbridge_x_total{result=\"network\"} 2\n\
                    mailbridge_x_total_other 100\n\
                    mailbridge_y_total 7\n";
        assert_eq!(sum_samples(text, "mailbridge_x_total"), 5.0);
        assert_eq!(sum_samples(text, "mailbridge_y_total"), 7.0);
        assert_eq!(sum_samples(text, "mailbridge_z_total"), 0.0);
    }
}
