//! An outbound pipeline: consume send requests, send each over SMTP, and
//! finish it (commit the Kafka offset, ack the AMQP message) only after
//! the server accepted it or it went to the dead-letter target.
//!
//! Up to `max_in_flight` requests are sent at once, and the account's
//! [`Limiter`] bounds the sends of all its pipelines together. Once sent,
//! a request frees its place, and its outcome is recorded and finished
//! while the next one is sent. Up to `max_in_flight` more requests may
//! wait for that, so a slow broker slows the sends down.
//! Kafka commits an offset only when every earlier offset of its
//! partition is finished, so a crash repeats requests and never skips one.
//!
//! NOTE: nothing bounds how far a partition's finished requests run ahead
//! of a slow unfinished one, so after a crash more than the requests sent
//! and not yet finished can repeat.

mod health;
mod limiter;
mod outcome;
mod send;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::backoff::Backoff;
use crate::broker::Publisher;
use crate::broker::{Consumer, Delivery, Source};
use crate::config::{Broker, Outbound};
use crate::smtp::transport::Sender;
use crate::telemetry::OutboundMetrics;
use health::Watch;

pub use health::{ASSIGNMENT_PATIENCE, Health, WAITING};
pub use limiter::Limiter;
pub use outcome::Outcome;

/// Everything the requests of one pipeline share.
#[derive(Clone)]
pub struct Shared {
    /// Name of the outbound pipeline.
    pub pipeline: String,
    pub settings: Arc<Outbound>,
    /// Name of the sending account.
    pub account: String,
    /// Address of the sending account, the default `From`.
    pub address: String,
    /// SMTP sender of the account, shared by its outbound pipelines.
    pub sender: Sender,
    /// Limit of the sends in flight for the account, shared by its
    /// outbound pipelines.
    pub limiter: Limiter,
    /// Publisher of the dead-letter target, when configured.
    pub dead_letter: Option<Publisher>,
    /// Publisher of the status target, when configured.
    pub status: Option<Publisher>,
    pub metrics: OutboundMetrics,
    /// The pipeline's `/readyz` component.
    pub health: Health,
    pub shutdown: watch::Receiver<bool>,
}

/// A configured outbound pipeline before its consumer is connected.
pub struct OutboundPipeline {
    pub shared: Shared,
    pub broker_name: String,
    pub broker: Broker,
    pub source: Source,
}

impl OutboundPipeline {
    /// Consumes and sends until shutdown, reconnecting the consumer after
    /// failures.
    pub async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let max_in_flight = self.shared.settings.max_in_flight.get();
        let places = Places {
            sending: Arc::new(Semaphore::new(max_in_flight)),
            finishing: Arc::new(Semaphore::new(max_in_flight)),
        };
        let health = &self.shared.health;
        health.consumer(Some("connecting to the broker".to_owned()));
        while !*self.shared.shutdown.borrow() {
            let result = self.consume(&places, &mut backoff).await;
            let Err(err) = result else { break };
            let delay = backoff.next_delay();
            warn!(
                pipeline = %self.shared.pipeline, broker = %self.broker_name, error = %err,
                retry_in_ms = delay.as_millis() as u64,
                "Consumer failed; reconnecting"
            );
            health.consumer(Some(err));
            sleep_unless_stopped(&self.shared.shutdown, delay).await;
        }
        info!(pipeline = %self.shared.pipeline, "Outbound pipeline stopped");
    }

    /// Runs one consumer session; returns `Ok` on shutdown.
    async fn consume(&self, places: &Places, backoff: &mut Backoff) -> Result<(), String> {
        let mut consumer = Consumer::connect(&self.broker_name, &self.broker, self.source.clone())
            .await
            .map_err(|err| err.to_string())?;
        // A Kafka consumer receives nothing before the group assigns it
        // partitions, so only its assignment makes the pipeline ready.
        let watcher = match (consumer.assignment(), &self.source) {
            (Some(assignment), Source::Kafka { group_id, .. }) => {
                let watch = Watch {
                    health: self.shared.health.clone(),
                    pipeline: self.shared.pipeline.clone(),
                    broker: self.broker_name.clone(),
                    group: group_id.clone(),
                };
                Some(tokio::spawn(watch.follow(assignment)))
            }
            _ => {
                self.shared.health.consumer(None);
                None
            }
        };
        info!(pipeline = %self.shared.pipeline, source = ?self.source, "Consuming send requests");
        let mut tasks = JoinSet::new();
        let mut shutdown = self.shared.shutdown.clone();
        let result = loop {
            let permit = tokio::select! {
                permit = Arc::clone(&places.sending).acquire_owned() => permit.expect("semaphore open"),
                _ = shutdown.wait_for(|stop| *stop) => break Ok(()),
            };
            let account_permit = tokio::select! {
                permit = self.shared.limiter.acquire() => permit,
                _ = shutdown.wait_for(|stop| *stop) => break Ok(()),
            };
            let delivery = tokio::select! {
                delivery = consumer.next() => delivery,
                _ = shutdown.wait_for(|stop| *stop) => break Ok(()),
            };
            match delivery {
                Some(Ok(delivery)) => {
                    backoff.reset();
                    let shared = self.shared.clone();
                    let finishing = Arc::clone(&places.finishing);
                    tasks.spawn(async move {
                        let outcome = send::process(&shared, &delivery).await;
                        let place = finishing.acquire_owned().await.expect("semaphore open");
                        drop(account_permit);
                        drop(permit);
                        finish(&shared, delivery, outcome).await;
                        drop(place);
                    });
                }
                Some(Err(err)) => break Err(err.to_string()),
                None => break Ok(()),
            }
            while tasks.try_join_next().is_some() {}
        };
        // Requests in flight finish, or are released on shutdown, before
        // the consumer commits and closes.
        while tasks.join_next().await.is_some() {}
        // The close revokes the partitions, and the caller sets the reason
        // of a failure, so the watcher stops first.
        if let Some(watcher) = watcher {
            watcher.abort();
            let _ = watcher.await;
        }
        consumer.close().await;

        result
    }
}

/// The places of one pipeline's requests: those being sent, and those
/// sent whose outcome is being recorded and finished.
struct Places {
    sending: Arc<Semaphore>,
    finishing: Arc<Semaphore>,
}

/// Ends a request after its send: records the outcome, then commits or
/// acknowledges it, or releases it back to the broker when the process
/// stops first.
async fn finish(shared: &Shared, delivery: Delivery, outcome: Outcome) {
    let position = delivery.position.clone();
    match outcome::record(shared, &delivery, outcome).await {
        Ok(true) => {
            if let Err(err) = delivery.finish().await {
                warn!(pipeline = %shared.pipeline, position = %position, error = %err, "Failed to commit a finished request; it may be sent again");
            }
        }
        Ok(false) | Err(()) => {
            if let Err(err) = delivery.release().await {
                error!(pipeline = %shared.pipeline, position = %position, error = %err, "Failed to release a request");
            }
        }
    }
}

async fn sleep_unless_stopped(shutdown: &watch::Receiver<bool>, delay: Duration) {
    let mut shutdown = shutdown.clone();
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}
