//! Command-line entry point of mailbridge.

#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mailbridge::config::{self, Config, ConfigError};
use mailbridge::{auth, check, pipeline};

/// Exit status for invalid configuration: `EX_CONFIG` of sysexits.h.
const EX_CONFIG: u8 = 78;

/// Exit status for a wrong command line, such as an unknown account:
/// `EX_USAGE` of sysexits.h.
const EX_USAGE: u8 = 64;

/// Connects IMAP and SMTP mailboxes to Kafka and AMQP brokers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file. Default: the MAILBRIDGE_CONFIG environment
    /// variable, where an empty value means no file. Without a file, every
    /// key comes from MAILBRIDGE_ environment variables.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every configured pipeline until SIGTERM or Ctrl-C, then let
    /// each mailbox finish its batch and stop. Exit status: 0 after a
    /// stop signal, 78 for invalid configuration, 1 when a pipeline
    /// cannot start.
    Run,

    /// Print the merged, validated configuration as TOML, with every
    /// secret redacted.
    Config,

    /// Sign in to an account once and store its tokens in the token store
    /// of the state directory. Exit status: 0 on success, 64 for an
    /// unknown ACCOUNT, 78 for invalid configuration, 1 when the sign-in
    /// fails.
    Authorize {
        /// Name of the account, as in `[accounts.NAME]`.
        account: String,
        /// Use the device-code grant: print a URL and a code to enter on
        /// any device.
        #[arg(long)]
        device: bool,
        /// Only print the authorization URL; do not start a browser.
        #[arg(long)]
        no_browser: bool,
        /// Read the address the browser was redirected to from standard
        /// input instead of listening on 127.0.0.1.
        #[arg(long, conflicts_with = "device")]
        paste: bool,
    },

    /// Diagnose the IMAP and SMTP endpoints of accounts step by step:
    /// resolution, TCP, TLS, certificates, capabilities, token, sign-in and
    /// SELECT. Sends no mail. Exit status: 0 when every step passed, 1
    /// when one failed, 64 for an unknown ACCOUNT, 78 for invalid
    /// configuration.
    Check {
        /// Name of the account, as in `[accounts.NAME]`. Default: every
        /// account.
        account: Option<String>,
        /// Check IMAP. Without --imap or --smtp, both are checked.
        #[arg(long)]
        imap: bool,
        /// Check SMTP.
        #[arg(long)]
        smtp: bool,
        /// Print one JSON object with every step instead of text lines.
        #[arg(long)]
        json: bool,
    },

    /// Request /healthz of a running `mailbridge run` on the [metrics]
    /// listen address (a wildcard address over loopback), as a container
    /// health check. Exit status: 0 when it returned 200 within 5 s, 1
    /// otherwise, 78 for invalid configuration.
    Health,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let file = cli.config.or_else(config_file_from_env);
    let config = match config::load(file.as_deref()).and_then(check_oauth2) {
        Ok(config) => config,
        Err(err) => {
            report(&err);
            return Ok(ExitCode::from(EX_CONFIG));
        }
    };

    match cli.command {
        Command::Run => return run(config),
        Command::Config => print_config(&config)?,
        Command::Authorize {
            account,
            device,
            no_browser,
            paste,
        } => {
            let options = auth::authorize::Options {
                device,
                open_browser: !no_browser,
                paste,
            };
            return authorize(&config, &account, options);
        }
        Command::Check {
            account,
            imap,
            smtp,
            json,
        } => {
            let options = check::Options {
                account,
                imap,
                smtp,
            };
            return run_check(&config, &options, json);
        }
        Command::Health => return health(&config),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the pipelines until a stop signal.
fn run(config: Config) -> anyhow::Result<ExitCode> {
    mailbridge::telemetry::logging::init(&config.log);
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let result = runtime.block_on(async move {
        tokio::spawn(async move {
            stop_signal().await;
            tracing::info!("Stop signal received; finishing the current batches");
            let _ = stop.send(true);
        });
        pipeline::runner::run(config, shutdown).await
    });

    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err) => {
            match &err {
                pipeline::runner::RunError::Stopped(_) => {
                    tracing::error!(error = %err, "mailbridge stopped after a failure no retry can fix");
                }
                _ => tracing::error!(error = %err, "mailbridge failed to start"),
            }
            eprintln!("error: {err}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Waits for SIGTERM, as sent by container runtimes, or Ctrl-C.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};

    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Runs `mailbridge authorize` and prints its one-line outcome.
fn authorize(
    config: &Config,
    account: &str,
    options: auth::authorize::Options,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    match runtime.block_on(auth::authorize::run(config, account, options)) {
        Ok(outcome) => {
            println!("{outcome}");
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("error: {err}");
            match err.is_usage() {
                true => Ok(ExitCode::from(EX_USAGE)),
                false => Ok(ExitCode::FAILURE),
            }
        }
    }
}

/// Runs `mailbridge check`, printing each text line as its step ends, or
/// one JSON object at the end.
fn run_check(config: &Config, options: &check::Options, json: bool) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    let mut steps = Vec::new();
    let mut sink = |step: check::Step| match json {
        true => steps.push(step),
        false => println!("{}", check::report::line(&step)),
    };
    let passed = match runtime.block_on(check::run(config, options, &mut sink)) {
        Ok(passed) => passed,
        Err(err) => {
            eprintln!("error: {err}");
            let status = if err.is_usage() { EX_USAGE } else { EX_CONFIG };
            return Ok(ExitCode::from(status));
        }
    };

    if json {
        println!("{}", check::report::json(&steps, passed));
    }
    match passed {
        true => Ok(ExitCode::SUCCESS),
        false => Ok(ExitCode::FAILURE),
    }
}

/// Runs `mailbridge health` and prints its one-line outcome.
fn health(config: &Config) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    match runtime.block_on(mailbridge::telemetry::health::probe(config.metrics.listen)) {
        Ok(url) => {
            println!("ok: GET {url} returned 200");
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("error: {err}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Rejects OAuth2 settings that yield tokens the mail servers refuse, such
/// as Microsoft Graph scopes.
fn check_oauth2(config: Config) -> Result<Config, ConfigError> {
    let problems = auth::presets::config_problems(&config);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Validate(problems))
    }
}

/// Returns the file named by `MAILBRIDGE_CONFIG`. An empty value names no
/// file, so that `MAILBRIDGE_CONFIG=` unsets it. clap's own `env` option
/// would reject the empty value.
fn config_file_from_env() -> Option<PathBuf> {
    std::env::var_os(config::CONFIG_ENV)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
}

/// Prints every configuration problem on its own line, then the count.
fn report(err: &ConfigError) {
    for problem in err.problems() {
        eprintln!("{problem}");
    }
    eprintln!("error: {err}");
}

/// Prints the configuration as TOML. When the reader closes the pipe early,
/// as `head` does, the output stops without a message and the command
/// succeeds. `cat` also stops without a message, but it is killed by
/// SIGPIPE, so its shell status is 141.
fn print_config(config: &Config) -> anyhow::Result<()> {
    let text = toml::to_string_pretty(config).context("failed to write configuration as TOML")?;
    let mut stdout = io::stdout().lock();
    let written = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());

    match written {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("failed to write to standard output"),
    }
}
