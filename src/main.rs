//! Command-line entry point of mailbridge.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mailbridge::config::{self, Config, ConfigError};

/// Exit status for invalid configuration: `EX_CONFIG` of sysexits.h.
const EX_CONFIG: u8 = 78;

/// Connects IMAP and SMTP mailboxes to Kafka and AMQP brokers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file. Without it, every key comes from
    /// MAILBRIDGE_ environment variables.
    #[arg(long, global = true, value_name = "FILE", env = config::CONFIG_ENV)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the merged, validated configuration as TOML, with every
    /// secret redacted.
    Config,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let config = match config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            report(&err);
            return Ok(ExitCode::from(EX_CONFIG));
        }
    };

    match cli.command {
        Command::Config => print_config(&config)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints every configuration problem on its own line, then the count.
fn report(err: &ConfigError) {
    for problem in err.problems() {
        eprintln!("{problem}");
    }
    eprintln!("error: {err}");
}

fn print_config(config: &Config) -> anyhow::Result<()> {
    let text = toml::to_string_pretty(config).context("failed to write configuration as TOML")?;
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("failed to write to standard output")?;

    Ok(())
}
