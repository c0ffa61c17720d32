//! Starting one outbound pipeline: the SMTP sender and concurrency
//! limiter of its account, the dead-letter and status publishers,
//! connected with retries, and the consumer loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::{Context, RunError};
use crate::auth::TokenProvider;
use crate::broker::{self, Source};
use crate::broker::{Publisher, Target};
use crate::config::{Broker, Config, Outbound};
use crate::pipeline::backoff::Backoff;
use crate::pipeline::outbound::{Health, Limiter, OutboundPipeline, Shared};
use crate::smtp::transport::{PoolSettings, Sender};

/// Time an idle pooled SMTP connection is kept. Servers close idle
/// sessions after a few minutes (postfix after 300 s by default), so the
/// pool lets go first.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The SMTP sender and the concurrency limiter of one account, which all
/// its outbound pipelines share, so that the limits hold per mailbox.
#[derive(Clone)]
pub(super) struct AccountSending {
    sender: Sender,
    limiter: Limiter,
}

/// Returns the sender and limiter of `outbound`'s account, creating them
/// on the account's first pipeline.
fn account_sending(
    config: &Config,
    cx: &Context,
    tokens: TokenProvider,
    outbound: &Outbound,
    by_account: &mut BTreeMap<String, AccountSending>,
) -> Result<AccountSending, RunError> {
    if let Some(sending) = by_account.get(&outbound.account) {
        return Ok(sending.clone());
    }
    // The largest `max_in_flight` of the account's pipelines bounds its
    // connections and its sends in flight together.
    let max_in_flight = config
        .outbound
        .values()
        .filter(|other| other.account == outbound.account)
        .map(|other| other.max_in_flight.get())
        .max()
        .unwrap_or(1);
    let pool = PoolSettings {
        max_connections: max_in_flight,
        idle_timeout: POOL_IDLE_TIMEOUT,
    };
    let account = &config.accounts[&outbound.account];
    let sender = Sender::new(
        &outbound.account,
        account,
        tokens,
        Some(cx.metrics.clone()),
        pool,
    )?;
    cx.outbound
        .set_concurrency_limit(&outbound.account, max_in_flight);
    let sending = AccountSending {
        sender,
        limiter: Limiter::new(max_in_flight),
    };
    by_account.insert(outbound.account.clone(), sending.clone());

    Ok(sending)
}

/// Returns the task of one outbound pipeline.
pub(super) fn start(
    config: &Config,
    cx: &Context,
    tokens: TokenProvider,
    name: &str,
    outbound: &Outbound,
    by_account: &mut BTreeMap<String, AccountSending>,
) -> Result<impl Future<Output = ()> + Send + 'static, RunError> {
    let account = &config.accounts[&outbound.account];
    let sending = account_sending(config, cx, tokens, outbound, by_account)?;
    let broker = config.brokers[&outbound.broker].clone();
    let source = match (&broker, &outbound.topic, &outbound.queue) {
        (Broker::Kafka(_), Some(topic), _) => Source::Kafka {
            topic: topic.clone(),
            group_id: outbound
                .group_id
                .clone()
                .unwrap_or_else(|| format!("mailbridge-{name}")),
        },
        (_, _, queue) => Source::Amqp {
            queue: queue.clone().unwrap_or_default(),
            // Requests being sent, being finished, and the next ones
            // ready for a place that frees.
            prefetch: u16::try_from(outbound.max_in_flight.get().saturating_mul(3))
                .unwrap_or(u16::MAX),
        },
    };
    let shared = Shared {
        pipeline: name.to_owned(),
        settings: Arc::new(outbound.clone()),
        account: outbound.account.clone(),
        address: account.address.clone(),
        sender: sending.sender,
        limiter: sending.limiter,
        dead_letter: None,
        status: None,
        metrics: cx.outbound.clone(),
        health: Health::new(cx.readiness.clone(), name),
        shutdown: cx.shutdown.clone(),
    };
    let pipeline = OutboundPipeline {
        shared,
        broker_name: outbound.broker.clone(),
        broker,
        source,
    };

    Ok(connect_then_run(pipeline))
}

/// Connects the dead-letter and status publishers, then runs.
async fn connect_then_run(mut pipeline: OutboundPipeline) {
    let settings = Arc::clone(&pipeline.shared.settings);
    let dead_letter = connect(&pipeline, &settings.dead_letter).await;
    let Some(dead_letter) = dead_letter else {
        return;
    };
    pipeline.shared.dead_letter = Some(dead_letter);
    if let Some(status) = &settings.status {
        let Some(status) = connect(&pipeline, status).await else {
            return;
        };
        pipeline.shared.status = Some(status);
    }
    let publishers = [
        pipeline.shared.dead_letter.clone(),
        pipeline.shared.status.clone(),
    ];

    pipeline.run().await;
    for publisher in publishers.into_iter().flatten() {
        publisher.close().await;
    }
}

/// Connects a publisher to `name` on the pipeline's broker, retrying until
/// it works; `None` on shutdown.
async fn connect(pipeline: &OutboundPipeline, name: &str) -> Option<Publisher> {
    let target = match &pipeline.broker {
        Broker::Kafka(_) => Target::Kafka {
            topic: name.to_owned(),
        },
        Broker::Amqp(_) => Target::Amqp {
            exchange: String::new(),
            routing_key: name.to_owned(),
            declare: false,
        },
    };
    // A request finishes only after its status or dead-letter record was
    // confirmed, so batching these records would delay every request.
    let broker = broker::unbatched(&pipeline.broker);
    let shared = &pipeline.shared;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let result = Publisher::connect(&pipeline.broker_name, Some(&broker), target.clone()).await;
        let err = match result {
            Ok(publisher) => return Some(publisher),
            Err(err) => err,
        };
        let delay = backoff.next_delay();
        warn!(
            pipeline = %shared.pipeline, target = %target, error = %err,
            retry_in_ms = delay.as_millis() as u64,
            "Failed to connect the dead-letter or status publisher; retrying"
        );
        shared.health.consumer(Some(err.to_string()));
        let mut shutdown = shared.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return None,
        }
    }
}
