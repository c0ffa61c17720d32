//! `mailbridge run`: builds every pipeline of the configuration, serves
//! the metrics endpoint, and on shutdown lets each mailbox finish its
//! batch before the publishers are flushed and closed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::backoff::Backoff;
use super::inbound::{MailboxWatch, Shared};
use crate::auth::{ProviderError, ProviderSettings, TokenProvider};
use crate::broker::{Publisher, Target};
use crate::config::{Broker, Config, Inbound};
use crate::imap::{Connector, ImapError};
use crate::telemetry::{InboundMetrics, Metrics, Readiness, http};

/// Time the pipelines get to finish their batches after a stop signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How often account readiness follows the token providers.
const ACCOUNT_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Failure to start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The metrics endpoint could not listen.
    #[error("failed to listen on {address} (metrics.listen): {source}; choose a free address")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    /// An account's token store could not be read, or its endpoints are
    /// invalid.
    #[error(transparent)]
    Tokens(#[from] ProviderError),
    /// An account has no usable IMAP settings.
    #[error(transparent)]
    Imap(#[from] ImapError),
    /// The metrics could not be registered.
    #[error("failed to register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// What every pipeline shares.
struct Context {
    registry: Registry,
    metrics: Metrics,
    inbound: InboundMetrics,
    readiness: Readiness,
    shutdown: watch::Receiver<bool>,
}

/// Runs every pipeline until `shutdown` becomes true, then drains them.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    let registry = Registry::new();
    let cx = Context {
        metrics: Metrics::new(&registry)?,
        inbound: InboundMetrics::new(&registry)?,
        registry,
        readiness: Readiness::default(),
        shutdown,
    };
    let address = config.metrics.listen;
    let listener = http::bind(address)
        .await
        .map_err(|source| RunError::Listen { address, source })?;
    let providers = token_providers(&config, &cx)?;
    let mut tasks = JoinSet::new();
    for (name, inbound) in &config.inbound {
        let pipeline = start_inbound(&config, &cx, &providers, name, inbound)?;
        tasks.spawn(pipeline);
    }
    for name in config.outbound.keys() {
        warn!(pipeline = %name, "Outbound pipelines are not supported by this build; skipping");
    }
    tasks.spawn(watch_accounts(
        providers,
        cx.readiness.clone(),
        cx.shutdown.clone(),
    ));
    let server = tokio::spawn(http::serve(
        listener,
        cx.registry.clone(),
        cx.readiness.clone(),
        stopped(cx.shutdown.clone()),
    ));
    info!(metrics = %address, pipelines = config.inbound.len(), "mailbridge started");

    stopped(cx.shutdown.clone()).await;
    drain(tasks).await;
    server.abort();
    info!("mailbridge stopped");
    Ok(())
}

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn drain(mut tasks: JoinSet<()>) {
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, all).await.is_err() {
        error!(
            timeout_s = DRAIN_TIMEOUT.as_secs(),
            "Pipelines did not stop in time; aborting them"
        );
    }
}

/// Builds the token provider of every account an inbound pipeline uses.
fn token_providers(
    config: &Config,
    cx: &Context,
) -> Result<BTreeMap<String, TokenProvider>, RunError> {
    let mut providers = BTreeMap::new();
    for inbound in config.inbound.values() {
        if providers.contains_key(&inbound.account) {
            continue;
        }
        let account = &config.accounts[&inbound.account];
        let provider = TokenProvider::with_metrics(
            &inbound.account,
            account,
            &config.state,
            ProviderSettings::default(),
            cx.metrics.clone(),
        )?;
        providers.insert(inbound.account.clone(), provider);
    }
    Ok(providers)
}

/// Keeps each account's readiness in step with its token provider.
async fn watch_accounts(
    providers: BTreeMap<String, TokenProvider>,
    readiness: Readiness,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        for (name, provider) in &providers {
            let component = format!("account/{name}");
            match provider.needs_authorization() {
                true => readiness.not_ready(
                    &component,
                    format!("sign-in needed: run `mailbridge authorize {name}`"),
                ),
                false => readiness.ready(&component),
            }
        }
        let mut shutdown = shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(ACCOUNT_CHECK_INTERVAL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Returns the task of one inbound pipeline.
fn start_inbound(
    config: &Config,
    cx: &Context,
    providers: &BTreeMap<String, TokenProvider>,
    name: &str,
    inbound: &Inbound,
) -> Result<impl Future<Output = ()> + Send + 'static, RunError> {
    let account = &config.accounts[&inbound.account];
    let tokens = providers[&inbound.account].clone();
    let connector = Connector::new(
        &inbound.account,
        account,
        tokens.clone(),
        Some(cx.metrics.clone()),
    )?;
    let broker = inbound.broker.as_ref().map(|broker| {
        let settings = config.brokers[broker].clone();
        (broker.clone(), settings)
    });
    let target = target(inbound, broker.as_ref().map(|(_, settings)| settings));
    cx.readiness
        .not_ready(&format!("inbound/{name}"), "connecting to the broker");
    for mailbox in &inbound.mailboxes {
        cx.readiness
            .not_ready(&format!("inbound/{name}/{mailbox}"), "starting");
    }
    let pipeline = Pipeline {
        name: name.to_owned(),
        settings: Arc::new(inbound.clone()),
        broker,
        target,
        connector,
        tokens,
        state: config.state.directory.clone(),
        metrics: cx.inbound.clone(),
        readiness: cx.readiness.clone(),
        shutdown: cx.shutdown.clone(),
    };

    Ok(pipeline.run())
}

fn target(inbound: &Inbound, broker: Option<&Broker>) -> Target {
    match broker {
        None => Target::Stdout,
        Some(Broker::Kafka(_)) => Target::Kafka {
            topic: inbound.topic.clone().unwrap_or_default(),
        },
        Some(Broker::Amqp(_)) => Target::Amqp {
            exchange: inbound.exchange.clone().unwrap_or_default(),
            routing_key: inbound.routing_key.clone().unwrap_or_default(),
            declare: inbound.declare,
        },
    }
}

/// An inbound pipeline before its publisher is connected.
struct Pipeline {
    name: String,
    settings: Arc<Inbound>,
    broker: Option<(String, Broker)>,
    target: Target,
    connector: Connector,
    tokens: TokenProvider,
    state: std::path::PathBuf,
    metrics: InboundMetrics,
    readiness: Readiness,
    shutdown: watch::Receiver<bool>,
}

impl Pipeline {
    async fn run(self) {
        let Some(publisher) = self.connect().await else {
            return;
        };
        let shared = Shared {
            pipeline: self.name.clone(),
            settings: Arc::clone(&self.settings),
            connector: self.connector.clone(),
            tokens: self.tokens.clone(),
            publisher: publisher.clone(),
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
            shutdown: self.shutdown.clone(),
        };
        let mut watches = JoinSet::new();
        for mailbox in &self.settings.mailboxes {
            let watch = MailboxWatch::new(shared.clone(), mailbox, &self.state);
            watches.spawn(watch.run());
        }
        drop(shared);
        while watches.join_next().await.is_some() {}
        publisher.close().await;
    }

    /// Connects the publisher, retrying until it works or the process
    /// stops; `None` on shutdown.
    async fn connect(&self) -> Option<Publisher> {
        let component = format!("inbound/{}", self.name);
        let (broker_name, broker) = match &self.broker {
            Some((name, broker)) => (name.as_str(), Some(broker)),
            None => ("stdout", None),
        };
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            match Publisher::connect(broker_name, broker, self.target.clone()).await {
                Ok(publisher) => {
                    self.readiness.ready(&component);
                    return Some(publisher);
                }
                Err(err) => {
                    let delay = backoff.next_delay();
                    warn!(
                        pipeline = %self.name, broker = %broker_name, error = %err,
                        error_type = err.kind(), retry_in_ms = delay.as_millis() as u64,
                        "Failed to connect to the broker; retrying"
                    );
                    self.readiness.not_ready(&component, err.to_string());
                    let mut shutdown = self.shutdown.clone();
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return None,
                    }
                }
            }
        }
    }
}
