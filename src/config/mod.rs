//! Configuration: an optional TOML file merged with `MAILBRIDGE_`
//! environment variables by figment, then read key by key so that every
//! problem is reported at once, with secrets kept out of every message.
//!
//! Relative paths (`ca_file`, `*_file` secrets, `state.directory`) are
//! relative to the working directory.

mod account;
mod broker;
mod error;
mod inbound;
pub mod keys;
mod log;
mod loops;
mod outbound;
mod properties;
mod reader;
mod refs;
mod secret;
mod secret_forms;
mod server;
mod servers;
mod sources;
mod values;

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail closures return figment::Error, which is large"
)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use account::{Account, Grant, Mechanism, OAuth2, Provider};
pub use broker::{Amqp, Broker, BrokerKind, Kafka, Property};
pub use error::{ConfigError, ENV_PREFIX, Origin, Problem};
pub use inbound::{
    AfterPublish, Coordination, DEFAULT_COORDINATION_PARTITIONS, DEFAULT_KEYWORD, Inbound, Mode,
    SPECIAL_USES, StartFrom, UidvalidityChange, default_coordination_group, is_special_use,
};
pub use log::{LOG_ENV, LOG_FORMAT_ENV, Log, LogFormat, RUST_LOG_ENV};
pub use outbound::Outbound;
pub(crate) use properties::delivery_problem;
pub use secret::{REDACTED, Secret};
pub use server::{Server, Tls};
pub use sources::CONFIG_ENV;

use reader::{Context, Table};
use refs::Refs;

/// The whole configuration, merged and validated.
///
/// `Serialize` writes every secret as [`REDACTED`], so the serialized form
/// is safe to print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub state: State,
    pub metrics: Metrics,
    pub log: Log,
    pub shutdown: Shutdown,
    /// Mailboxes, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub accounts: BTreeMap<String, Account>,
    /// Broker connections, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub brokers: BTreeMap<String, Broker>,
    /// Pipelines from mailboxes to brokers, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub inbound: BTreeMap<String, Inbound>,
    /// Pipelines from brokers to SMTP, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outbound: BTreeMap<String, Outbound>,
}

/// `[state]`: where checkpoints and tokens are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct State {
    /// Directory of the checkpoints and the token store. Default: `state`,
    /// relative to the working directory; containers mount a volume and
    /// set an absolute path.
    pub directory: PathBuf,
}

/// `[metrics]`: the Prometheus and health endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metrics {
    /// Address the HTTP server listens on. Default: `127.0.0.1:9464`;
    /// containers set `0.0.0.0:9464` to be scraped from outside.
    pub listen: SocketAddr,
}

/// `[shutdown]`: how a stop signal ends `mailbridge run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shutdown {
    /// Time the pipelines get to finish their batches and flush their
    /// publishers after a stop signal; the rest are aborted. Default: 30 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// Loads the configuration from the optional TOML `file` and the
/// `MAILBRIDGE_` environment variables, which win over the file.
///
/// # Errors
///
/// [`ConfigError::Validate`] lists every missing, unknown or invalid key;
/// the other variants stop at an unreadable or unparsable file.
pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    let env = sources::environment();
    let figment = sources::figment(file, &env)?;
    let dict = sources::merged(&figment)?;
    let cx = Context::new(&figment, &env);
    for problem in sources::empty_levels() {
        cx.report(problem);
    }
    let config = read(Table::root(&cx, &dict));
    let problems = cx.into_problems();

    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ConfigError::Validate(problems)),
    }
}

fn read(mut root: Table<'_>) -> Option<Config> {
    let state = read_state(&mut root);
    let metrics = read_metrics(&mut root);
    let log = log::read(&mut root);
    let shutdown = read_shutdown(&mut root);
    let mut refs = Refs::default();
    let accounts = read_accounts(&mut root, &mut refs);
    let brokers = read_brokers(&mut root, &mut refs);
    let inbound: Vec<_> = root
        .sections("inbound")
        .into_iter()
        .map(|(name, table)| {
            let pipeline = inbound::read(table, &name, &refs);
            (name, pipeline)
        })
        .collect();
    let outbound: Vec<_> = root
        .sections("outbound")
        .into_iter()
        .map(|(name, table)| {
            let pipeline = outbound::read(table, &name, &refs);
            (name, pipeline)
        })
        .collect();
    loops::check(&root, &inbound, &outbound);
    root.finish();

    Some(Config {
        state,
        metrics,
        log,
        shutdown,
        accounts: all(accounts)?,
        brokers: all(brokers)?,
        inbound: all(inbound)?,
        outbound: all(outbound)?,
    })
}

/// Returns the map when every entry was read without a problem.
fn all<T>(entries: Vec<(String, Option<T>)>) -> Option<BTreeMap<String, T>> {
    entries
        .into_iter()
        .map(|(name, entry)| Some((name, entry?)))
        .collect()
}

fn read_state(root: &mut Table<'_>) -> State {
    let mut directory = None;
    if let Some(mut table) = root.table("state") {
        directory = table.get::<PathBuf>("directory");
        table.finish();
    }

    State {
        directory: directory.unwrap_or_else(|| PathBuf::from("state")),
    }
}

fn read_metrics(root: &mut Table<'_>) -> Metrics {
    let mut listen = None;
    if let Some(mut table) = root.table("metrics") {
        listen = table.get::<SocketAddr>("listen");
        table.finish();
    }

    Metrics {
        listen: listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9464))),
    }
}

fn read_shutdown(root: &mut Table<'_>) -> Shutdown {
    let mut timeout = None;
    if let Some(mut table) = root.table("shutdown") {
        timeout = table.get::<Duration>("timeout");
        table.finish();
    }

    Shutdown {
        timeout: timeout.unwrap_or(Duration::from_secs(30)),
    }
}

fn read_accounts(root: &mut Table<'_>, refs: &mut Refs) -> Vec<(String, Option<Account>)> {
    let mut accounts = Vec::new();
    for (name, table) in root.sections("accounts") {
        refs.add_account(&name, &table);
        accounts.push((name, account::read(table)));
    }
    accounts
}

fn read_brokers(root: &mut Table<'_>, refs: &mut Refs) -> Vec<(String, Option<Broker>)> {
    let mut brokers = Vec::new();
    for (name, table) in root.sections("brokers") {
        let (kind, broker) = broker::read(table);
        refs.add_broker(&name, kind);
        brokers.push((name, broker));
    }
    brokers
}
