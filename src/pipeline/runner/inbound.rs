//! Starting one inbound pipeline: its publisher, connected with retries,
//! and one watch per mailbox.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, warn};

use super::{Context, RunError};
use crate::auth::TokenProvider;
use crate::broker::{self, Publisher, Target};
use crate::config::{
    Broker, Config, DEFAULT_COORDINATION_PARTITIONS, Inbound, default_coordination_group,
};
use crate::imap::Connector;
use crate::pipeline::assign::{Assigner, Event, Scope};
use crate::pipeline::backoff::Backoff;
use crate::pipeline::checkpoint::CheckpointStore;
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
    // With coordination, a mailbox counts for readiness only while this
    // replica watches it.
    if !inbound.coordinated() {
        for mailbox in &inbound.mailboxes {
            cx.readiness
                .not_ready(&format!("inbound/{name}/{mailbox}"), "starting");
        }
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
            shared_checkpoints: None,
        };
        if self.settings.coordinated() {
            self.run_coordinated(shared).await;
        } else {
            let mut watches = JoinSet::new();
            for mailbox in &self.settings.mailboxes {
                let watch = MailboxWatch::new(shared.clone(), mailbox, &self.state);
                watches.spawn(watch.run());
            }
            drop(shared);
            while watches.join_next().await.is_some() {}
        }
        publisher.close().await;
    }

    /// Watches the mailboxes that the coordination assigns to this
    /// replica until the process stops, then leaves the coordination.
    async fn run_coordinated(&self, mut shared: Shared) {
        let Some((_, broker)) = &self.broker else {
            return;
        };
        let (events, mut assigned) = mpsc::unbounded_channel();
        let Some(assigner) = self.join(broker, events).await else {
            return;
        };
        shared.shared_checkpoints = Some(assigner.checkpoints());

        let mut watches = Watches::default();
        let mut shutdown = self.shutdown.clone();
        loop {
            let event = tokio::select! {
                event = assigned.recv() => event,
                _ = shutdown.wait_for(|stop| *stop) => None,
            };
            let Some(event) = event else {
                break;
            };
            watches.apply(event, &shared, &self.state).await;
        }

        watches.stop_all(&shared).await;
        // Leaving revokes the mailboxes still assigned. The watches have
        // stopped already, so each release is confirmed at once.
        let answer = tokio::spawn(async move {
            while let Some(event) = assigned.recv().await {
                if let Event::Release { mailbox, done } = event {
                    watches.release(&mailbox, &shared).await;
                    let _ = done.send(());
                }
            }
        });
        assigner.close().await;
        let _ = answer.await;
    }

    /// Joins the coordination, retrying until it works or the process
    /// stops; `None` on shutdown or on a fatal failure, which is sent to
    /// the runner.
    async fn join(
        &self,
        broker: &Broker,
        events: mpsc::UnboundedSender<Event>,
    ) -> Option<Assigner> {
        let settings = &self.settings;
        let scope = Scope {
            broker: self
                .broker
                .as_ref()
                .map(|(name, _)| name.clone())
                .unwrap_or_default(),
            pipeline: self.name.clone(),
            account: settings.account.clone(),
            group: settings
                .coordination_group
                .clone()
                .unwrap_or_else(|| default_coordination_group(&self.name)),
            mailboxes: settings.mailboxes.clone(),
            partitions: settings
                .coordination_partitions
                .unwrap_or(DEFAULT_COORDINATION_PARTITIONS),
            readiness: self.readiness.clone(),
        };
        let component = scope.component();
        self.readiness
            .not_ready(&component, "joining the coordination");
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let started =
                Assigner::start(scope.clone(), broker, events.clone(), self.shutdown.clone());
            match started.await {
                Ok(assigner) => return Some(assigner),
                Err(err) if err.is_fatal() => {
                    self.readiness.not_ready(&component, err.to_string());
                    let _ = self.fatal.send(WatchError::Coordination(err));
                    return None;
                }
                Err(err) => {
                    let delay = backoff.next_delay();
                    warn!(
                        pipeline = %self.name, error = %err, error_type = err.kind(),
                        retry_in_ms = delay.as_millis() as u64,
                        "Failed to join the coordination; retrying"
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

    /// Connects the publisher, retrying until it works or the process
    /// stops; `None` on shutdown.
    async fn connect(&self) -> Option<Publisher> {
        let component = format!("inbound/{}", self.name);
        // A batch goes to the producer whole and is confirmed before the
        // next one is sent, so waiting for a fuller Kafka batch only delays
        // it. The coordination's consumers keep the broker's settings as
        // they are, because librdkafka reports a producer property there as
        // ignored.
        let (broker_name, broker) = match &self.broker {
            Some((name, broker)) => (name.as_str(), Some(broker::unbatched(broker))),
            None => ("stdout", None),
        };
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            match Publisher::connect(broker_name, broker.as_ref(), self.target.clone()).await {
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

/// The watches of the mailboxes this replica holds, each with a stop
/// signal of its own.
#[derive(Default)]
struct Watches {
    running: BTreeMap<String, Running>,
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Watches {
    async fn apply(&mut self, event: Event, shared: &Shared, state: &Path) {
        match event {
            Event::Acquire {
                mailbox,
                checkpoint,
            } => self.acquire(mailbox, checkpoint, shared, state),
            Event::Release { mailbox, done } => {
                self.release(&mailbox, shared).await;
                let _ = done.send(());
            }
        }
    }

    /// Starts the watch of `mailbox` from the broker's checkpoint, which
    /// replaces the one in the state directory.
    fn acquire(
        &mut self,
        mailbox: String,
        checkpoint: Option<Vec<u8>>,
        shared: &Shared,
        state: &Path,
    ) {
        if self.running.contains_key(&mailbox) || *shared.shutdown.borrow() {
            return;
        }
        let settings = &shared.settings;
        let store = CheckpointStore::new(state, &shared.pipeline, &settings.account, &mailbox);
        if let Some(bytes) = checkpoint {
            let stored = store.decode(&bytes).map_err(WatchError::from);
            if let Err(err) = stored.and_then(|_| Ok(store.write(&bytes)?)) {
                warn!(
                    pipeline = %shared.pipeline, mailbox = %mailbox, error = %err,
                    error_type = err.kind(),
                    "Checkpoint from the coordination broker not used; the state directory's applies"
                );
            }
        }
        info!(pipeline = %shared.pipeline, mailbox = %mailbox, "Mailbox assigned to this replica");
        shared
            .metrics
            .set_assigned(&shared.pipeline, &settings.account, &mailbox, true);
        let (stop, stopped) = watch::channel(false);
        let mut own = shared.clone();
        own.shutdown = stopped;
        let task = tokio::spawn(MailboxWatch::new(own, &mailbox, state).run());
        self.running.insert(mailbox, Running { stop, task });
    }

    /// Stops the watch of `mailbox` and waits until it has saved its
    /// checkpoint; the mailbox then no longer counts for readiness.
    async fn release(&mut self, mailbox: &str, shared: &Shared) {
        let Some(running) = self.running.remove(mailbox) else {
            return;
        };
        let _ = running.stop.send(true);
        let _ = running.task.await;
        let account = &shared.settings.account;
        shared
            .metrics
            .set_assigned(&shared.pipeline, account, mailbox, false);
        shared.metrics.set_connected(account, mailbox, false);
        shared
            .readiness
            .remove(&format!("inbound/{}/{mailbox}", shared.pipeline));
        info!(pipeline = %shared.pipeline, mailbox = %mailbox, "Mailbox released by this replica");
    }

    /// Stops every watch at once, then waits for each.
    async fn stop_all(&mut self, shared: &Shared) {
        for running in self.running.values() {
            let _ = running.stop.send(true);
        }
        let mailboxes: Vec<String> = self.running.keys().cloned().collect();
        for mailbox in mailboxes {
            self.release(&mailbox, shared).await;
        }
    }
}
