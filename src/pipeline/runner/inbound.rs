//! Starting one inbound pipeline: its publisher, connected with retries,
//! and one watch per mailbox.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::warn;

use super::{Context, RunError};
use crate::auth::TokenProvider;
use crate::broker::{Publisher, Target};
use crate::config::{Broker, Config, Inbound};
use crate::imap::Connector;
use crate::pipeline::backoff::Backoff;
use crate::pipeline::inbound::{MailboxWatch, Shared, WatchError};
use crate::telemetry::{InboundMetrics, Readiness};

/// Returns the task of one inbound pipeline.
pub(super) fn start(
    config: &Config,
    cx: &Context,
    providers: &std::collections::BTreeMap<String, TokenProvider>,
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
        fatal: cx.fatal.clone(),
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
    fatal: mpsc::UnboundedSender<WatchError>,
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
            fatal: self.fatal.clone(),
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
