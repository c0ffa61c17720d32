//! `mailbridge run`: builds every pipeline of the configuration, serves
//! the metrics endpoint, and on shutdown lets each mailbox finish its
//! batch before the publishers are flushed and closed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use prometheus::Registry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, info};

mod accounts;
mod inbound;
mod lock;
mod outbound;

pub use lock::{LockError, StateLock};

use crate::auth::ProviderError;
use crate::config::Config;
use crate::imap::ImapError;
use crate::pipeline::inbound::WatchError;
use crate::smtp::transport::SmtpError;
use crate::telemetry::{InboundMetrics, Metrics, OutboundMetrics, Readiness, http, process};

/// How often account readiness follows the token providers.
const ACCOUNT_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Failure to start, or a failure that stopped the process.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another process uses the state directory, or it cannot be locked.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The metrics endpoint could not listen.
    #[error("failed to listen on {address} (metrics.listen): {source}; choose a free address")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    /// An account's endpoints are invalid. A token file that cannot be
    /// used stops only its account's pipelines.
    #[error(transparent)]
    Tokens(#[from] ProviderError),
    /// An account has no usable IMAP settings.
    #[error(transparent)]
    Imap(#[from] ImapError),
    /// An account has no usable SMTP settings.
    #[error(transparent)]
    Smtp(#[from] SmtpError),
    /// The metrics could not be registered.
    #[error("failed to register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A pipeline failed in a way no retry can fix, so every pipeline was
    /// stopped.
    #[error("stopped every pipeline: {0}")]
    Stopped(#[source] Box<WatchError>),
}

/// State that every pipeline shares.
struct Context {
    registry: Registry,
    metrics: Metrics,
    inbound: InboundMetrics,
    outbound: OutboundMetrics,
    readiness: Readiness,
    shutdown: watch::Receiver<bool>,
    fatal: mpsc::UnboundedSender<WatchError>,
}

/// Runs every pipeline until `signal` becomes true or a pipeline fails
/// fatally, then drains them. The state directory stays locked meanwhile.
pub async fn run(config: Config, signal: watch::Receiver<bool>) -> Result<(), RunError> {
    let _lock = StateLock::take(&config.state.directory)?;

    // The pipelines follow a stop of their own, so that a fatal failure
    // stops them as a stop signal does.
    let (stop, shutdown) = watch::channel(false);
    let (fatal, mut fatal_errors) = mpsc::unbounded_channel();
    let registry = Registry::new();
    process::register(&registry)?;
    let cx = Context {
        metrics: Metrics::new(&registry)?,
        inbound: InboundMetrics::new(&registry)?,
        outbound: OutboundMetrics::new(&registry)?,
        readiness: Readiness::registered(&registry)?,
        registry,
        shutdown,
        fatal,
    };
    init_series(&config, &cx);
    let address = config.metrics.listen;
    let listener = http::bind(address)
        .await
        .map_err(|source| RunError::Listen { address, source })?;
    let accounts = accounts::token_providers(&config, &cx)?;
    let mut tasks = JoinSet::new();
    for (name, inbound) in &config.inbound {
        let component = format!("inbound/{name}");
        if accounts.skip_pipeline(&cx.readiness, &component, &inbound.account) {
            continue;
        }
        let pipeline = inbound::start(&config, &cx, &accounts.providers, name, inbound)?;
        tasks.spawn(pipeline);
    }
    let mut sending = BTreeMap::new();
    for (name, outbound) in &config.outbound {
        let component = format!("outbound/{name}");
        if accounts.skip_pipeline(&cx.readiness, &component, &outbound.account) {
            continue;
        }
        let tokens = accounts.providers[&outbound.account].clone();
        let pipeline = outbound::start(&config, &cx, tokens, name, outbound, &mut sending)?;
        tasks.spawn(pipeline);
    }
    tasks.spawn(accounts::watch_accounts(
        accounts.providers,
        cx.readiness.clone(),
        cx.shutdown.clone(),
    ));
    let server = tokio::spawn(http::serve(
        listener,
        cx.registry.clone(),
        cx.readiness.clone(),
        stopped(cx.shutdown.clone()),
    ));
    log_summary(&config, address);

    let failure = tokio::select! {
        () = stopped(signal) => None,
        Some(err) = fatal_errors.recv() => Some(err),
    };
    // The caller logs the error itself once the pipelines have stopped.
    if let Some(err) = &failure {
        info!(
            error_type = err.kind(),
            "Pipeline failed for good; stopping every pipeline"
        );
    }
    let _ = stop.send(true);
    drain(tasks, config.shutdown.timeout).await;
    server.abort();
    info!("mailbridge stopped");

    match failure {
        Some(err) => Err(RunError::Stopped(Box::new(err))),
        None => Ok(()),
    }
}

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Waits up to `timeout` (`shutdown.timeout`) for every task to end;
/// the tasks still running are aborted when `tasks` is dropped.
async fn drain(mut tasks: JoinSet<()>, timeout: Duration) {
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(timeout, all).await.is_err() {
        error!(
            timeout_s = timeout.as_secs_f64(),
            "Pipelines did not stop in time; aborting them"
        );
    }
}

/// Logs what runs, by name only: no address, host credential or secret.
fn log_summary(config: &Config, metrics: SocketAddr) {
    let names = |keys: Vec<&String>| keys.into_iter().cloned().collect::<Vec<_>>().join(",");
    info!(
        version = env!("CARGO_PKG_VERSION"),
        metrics = %metrics,
        state = %config.state.directory.display(),
        accounts = %names(config.accounts.keys().collect()),
        brokers = %names(config.brokers.keys().collect()),
        inbound = %names(config.inbound.keys().collect()),
        outbound = %names(config.outbound.keys().collect()),
        "mailbridge started"
    );
    for (name, inbound) in &config.inbound {
        info!(
            pipeline = %name, account = %inbound.account, mailboxes = ?inbound.mailboxes,
            broker = inbound.broker.as_deref().unwrap_or("stdout"), mode = ?inbound.mode,
            after_publish = ?inbound.after_publish,
            "Inbound pipeline"
        );
    }
    for (name, outbound) in &config.outbound {
        let source = outbound.topic.as_ref().or(outbound.queue.as_ref());
        info!(
            pipeline = %name, account = %outbound.account, broker = %outbound.broker,
            source = source.map_or("", String::as_str), dead_letter = %outbound.dead_letter,
            max_in_flight = outbound.max_in_flight.get(),
            "Outbound pipeline"
        );
    }
}

/// Creates the metric series of every configured pipeline and of the
/// accounts they use, because the prometheus crate exports a labelled
/// series only after it was created, and `rate()` and `absent()` need it from the
/// start.
fn init_series(config: &Config, cx: &Context) {
    let started = std::time::SystemTime::now();
    for (name, inbound) in &config.inbound {
        cx.inbound.init_pipeline(
            name,
            &inbound.account,
            &inbound.mailboxes,
            inbound.coordinated(),
            started,
        );
        cx.metrics.init_account(&inbound.account);
    }
    for (name, outbound) in &config.outbound {
        cx.outbound.init_pipeline(name);
        cx.metrics.init_account(&outbound.account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_aborts_after_timeout() {
        let held = std::sync::Arc::new(());
        let mut tasks = JoinSet::new();
        let task_handle = held.clone();
        tasks.spawn(async move {
            let _held = task_handle;
            std::future::pending::<()>().await;
        });
        let started = tokio::time::Instant::now();

        drain(tasks, Duration::from_secs(5)).await;
        tokio::task::yield_now().await;

        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(
            std::sync::Arc::strong_count(&held),
            1,
            "the task still runs"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn drain_returns_when_tasks_end() {
        let mut tasks = JoinSet::new();
        tasks.spawn(tokio::time::sleep(Duration::from_secs(2)));
        let started = tokio::time::Instant::now();

        drain(tasks, Duration::from_secs(30)).await;

        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
