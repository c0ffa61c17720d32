//! Kafka consumer: a librdkafka consumer group member that commits offsets
//! itself, only as far as every received record before the offset is
//! finished.
//!
//! A `BaseConsumer` runs on a thread of its own, so rebalances and
//! `max.poll.interval.ms` are served however long the caller takes with a
//! request. Records go to [`Input::next`] through a channel. Once
//! [`QUEUED_MAX`] wait there, the thread stops polling until the caller
//! takes one. When that takes longer than [`HOLD_MAX`], it pauses
//! fetching and polls every 100 ms, and it resumes fetching when half of
//! the queued records were taken.

mod context;
mod offsets;
mod partitions;
mod settings;
mod subscribe;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use tokio::sync::{mpsc, oneshot, watch};

use super::{ConsumeError, Delivery, Position, Receipt as DeliveryReceipt, Source};
use crate::broker::kafka::StopOnDrop;
use crate::broker::kafka::failure::classify;
use crate::config::Kafka;
use context::Context;
pub(super) use partitions::Receipt;
use partitions::{Client, Partitions};
use settings::Settings;
use subscribe::{Subscribe, read_fix};

/// Longest wait of one poll, and so the delay of a stop.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Records waiting for [`Input::next`] at which polling stops.
const QUEUED_MAX: usize = 32;

/// Longest wait for room in a full queue before fetching pauses. A pause
/// drops the records that librdkafka fetched ahead, and the resume fetches
/// them again only once the broker answers the fetch in flight, which it
/// holds for up to `fetch.wait.max.ms` (librdkafka 2.12: 500 ms) on caught-up
/// partitions. A short wait keeps them, so it costs far less than a pause.
/// The thread does not poll while it waits, which delays rebalances by up
/// to this much, far below the default `max.poll.interval.ms` of 300 s.
const HOLD_MAX: Duration = Duration::from_secs(1);

/// Records waiting at which fetching resumes.
const QUEUED_RESUME: usize = QUEUED_MAX / 2;

/// Time allowed at close for the final commit and for leaving the group.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

type Item = Result<Delivery, ConsumeError>;

/// A consumer of one topic.
pub(super) struct Input {
    broker: String,
    topic: String,
    deliveries: mpsc::UnboundedReceiver<Item>,
    partitions: Arc<Partitions>,
    /// Records sent to `deliveries` and not yet received from it.
    queued: Arc<AtomicUsize>,
    /// The consumer thread, woken when the caller takes a record.
    thread: std::thread::Thread,
    /// Stops the thread when set, also when the consumer is dropped
    /// without close.
    stop: StopOnDrop,
    stopped: oneshot::Receiver<()>,
}

/// State and channels of the consumer thread, shared with [`Input`].
struct Link {
    broker: String,
    origin: String,
    deliveries: mpsc::UnboundedSender<Item>,
    partitions: Arc<Partitions>,
    /// Redacts the values of secret properties from librdkafka's errors.
    settings: Settings,
    queued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    stopped: oneshot::Sender<()>,
}

impl Input {
    /// Creates the consumer, checks that `topic` exists and subscribes to
    /// it as a member of group `group_id`.
    pub(super) async fn connect(
        broker: &str,
        kafka: &Kafka,
        topic: String,
        group_id: String,
    ) -> Result<Self, ConsumeError> {
        let settings = Settings::new(broker, kafka, &group_id)?;
        let (client, partitions) = create(broker, &settings)?;

        let subscribe = Subscribe {
            broker: broker.to_owned(),
            bootstrap: kafka.bootstrap_servers.clone(),
            topic: topic.clone(),
            origin: Source::kafka_origin(&topic),
        };
        let (client, settings, count) = subscribe.run(client, settings).await?;
        tracing::info!(
            broker,
            topic,
            group_id,
            partitions = count,
            "Consumer connected"
        );

        Self::start(broker, topic, client, settings, partitions)
    }

    /// Starts the consumer thread and returns the receiving end.
    fn start(
        broker: &str,
        topic: String,
        client: Arc<Client>,
        settings: Settings,
        partitions: Arc<Partitions>,
    ) -> Result<Self, ConsumeError> {
        let (sender, deliveries) = mpsc::unbounded_channel();
        let (stopped_sender, stopped) = oneshot::channel();
        let link = Link {
            broker: broker.to_owned(),
            origin: Source::kafka_origin(&topic),
            deliveries: sender,
            partitions: Arc::clone(&partitions),
            settings,
            queued: Arc::default(),
            stop: Arc::default(),
            stopped: stopped_sender,
        };
        let queued = Arc::clone(&link.queued);
        let stop = StopOnDrop(Arc::clone(&link.stop));

        let thread = spawn(client, link)?;
        Ok(Self {
            broker: broker.to_owned(),
            topic,
            deliveries,
            partitions,
            queued,
            thread,
            stop,
            stopped,
        })
    }

    /// Follows whether the group assigned this member its partitions.
    pub(super) fn assignment(&self) -> watch::Receiver<super::Assignment> {
        self.partitions.assignment()
    }

    /// Waits for the next record of a partition this consumer still owns.
    pub(super) async fn next(&mut self) -> Option<Item> {
        loop {
            let item = self.deliveries.recv().await?;
            self.queued.fetch_sub(1, Ordering::SeqCst);
            self.thread.unpark();

            if let Ok(Delivery {
                receipt: DeliveryReceipt::Kafka(receipt),
                position,
                ..
            }) = &item
                && !self.partitions.is_current(receipt)
            {
                // Received before a rebalance took its partition away: the
                // new owner reads it again.
                let broker = &self.broker;
                tracing::debug!(broker, %position, "Skipping a record of a revoked partition");
                continue;
            }
            return Some(item);
        }
    }

    /// Stops the consumer thread, which commits what finished and leaves
    /// the group, and waits for it.
    pub(super) async fn close(self) {
        drop(self.stop);
        drop(self.deliveries);

        let (broker, topic) = (&self.broker, &self.topic);
        match tokio::time::timeout(CLOSE_TIMEOUT, self.stopped).await {
            Ok(Ok(())) => tracing::info!(broker, topic, "Consumer closed"),
            Ok(Err(_)) => tracing::error!(broker, topic, "Consumer thread ended without closing"),
            Err(_elapsed) => {
                let seconds = CLOSE_TIMEOUT.as_secs();
                tracing::warn!(
                    broker,
                    topic,
                    seconds,
                    "Consumer still closing, not waiting"
                );
            }
        }
    }
}

/// Marks a delivery finished, as [`Partitions::finish`] describes.
pub(super) fn finish(receipt: &Receipt, position: &Position) -> Result<(), ConsumeError> {
    receipt.partitions.finish(receipt, &position.to_string())
}

/// Leaves a delivery unfinished, as [`Partitions::release`] describes.
pub(super) fn release(receipt: &Receipt, position: &Position) -> Result<(), ConsumeError> {
    receipt.partitions.release(receipt, &position.to_string())
}

/// Creates the consumer and links it to the state its context shares.
fn create(
    broker: &str,
    settings: &Settings,
) -> Result<(Arc<Client>, Arc<Partitions>), ConsumeError> {
    let partitions = Arc::new(Partitions::new(broker));
    let context = Context::new(broker, Arc::clone(&partitions));
    let client: Client = settings
        .config
        .create_with_context(context)
        .map_err(|err| settings.creation_error(broker, &err))?;

    let client = Arc::new(client);
    partitions.attach(&client);
    Ok((client, partitions))
}

fn spawn(client: Arc<Client>, link: Link) -> Result<std::thread::Thread, ConsumeError> {
    let (broker, origin) = (link.broker.clone(), link.origin.clone());
    let started = std::thread::Builder::new()
        .name("kafka-consumer".into())
        .spawn(move || link.run(client));

    started
        .map(|handle| handle.thread().clone())
        .map_err(|err| ConsumeError::Subscribe {
            broker,
            origin,
            reason: format!("failed to start the consumer thread: {err}"),
            fix: None,
            transient: true,
        })
}

impl Link {
    /// Polls until stopped, then drops the consumer: its close revokes the
    /// partitions, and the revocation commits what finished.
    fn run(self, client: Arc<Client>) {
        let mut paused = false;
        while !self.stop.load(Ordering::SeqCst) {
            paused = self.pace(&client, paused);

            let polled = client.poll(POLL_INTERVAL);
            let item = match polled {
                None | Some(Err(KafkaError::PartitionEOF(_))) => continue,
                Some(Ok(message)) => Ok(self.delivery(&message)),
                Some(Err(err)) => Err(self.receive_error(&err)),
            };
            self.queued.fetch_add(1, Ordering::SeqCst);
            if self.deliveries.send(item).is_err() {
                break;
            }
        }

        self.partitions.begin_close();
        drop(client);
        let _ = self.stopped.send(());
    }

    /// Waits while the queue is full, pauses fetching when the caller
    /// stays behind for [`HOLD_MAX`], and resumes it once the queue is half
    /// empty. Returns whether fetching is paused.
    fn pace(&self, client: &Client, paused: bool) -> bool {
        let wanted = match paused {
            false => !self.wait_for_room(),
            true => self.queued.load(Ordering::SeqCst) > QUEUED_RESUME,
        };
        if wanted == paused {
            return paused;
        }
        let queued = self.queued.load(Ordering::SeqCst);

        // Partitions assigned later follow this flag in the rebalance
        // callback.
        self.partitions.set_paused(wanted);
        let changed = client.assignment().and_then(|assignment| match wanted {
            true => client.pause(&assignment),
            false => client.resume(&assignment),
        });
        let broker = &self.broker;
        match changed {
            Ok(()) => tracing::debug!(
                broker,
                queued,
                paused = wanted,
                "Fetching paused or resumed"
            ),
            Err(err) => tracing::warn!(broker, error = %err, "Failed to pause or resume fetching"),
        }
        wanted
    }

    /// Waits up to [`HOLD_MAX`] until fewer than [`QUEUED_MAX`] records are
    /// queued. Returns false when the queue is still full then. Returns
    /// true at once when the consumer is stopping.
    fn wait_for_room(&self) -> bool {
        let deadline = Instant::now() + HOLD_MAX;
        loop {
            if self.queued.load(Ordering::SeqCst) < QUEUED_MAX || self.stop.load(Ordering::SeqCst) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // Input::next unparks the thread when it takes a record, and
            // the stop flag is checked at least every poll interval.
            std::thread::park_timeout(left.min(POLL_INTERVAL));
        }
    }

    fn delivery(&self, message: &BorrowedMessage<'_>) -> Delivery {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let epoch = self.partitions.receive(topic, partition, offset);

        tracing::debug!(broker = %self.broker, topic, partition, offset, "Record received");
        Delivery {
            payload: message.payload().unwrap_or_default().to_vec(),
            key: message
                .key()
                .map(|key| String::from_utf8_lossy(key).into_owned()),
            headers: header_list(message),
            position: Position::Kafka {
                topic: topic.to_owned(),
                partition,
                offset,
            },
            redelivered: false,
            receipt: DeliveryReceipt::Kafka(Receipt {
                partitions: Arc::clone(&self.partitions),
                topic: topic.to_owned(),
                partition,
                offset,
                epoch,
            }),
        }
    }

    fn receive_error(&self, err: &KafkaError) -> ConsumeError {
        let code = err.rdkafka_error_code();
        let fatal = matches!(err, KafkaError::MessageConsumptionFatal(_));
        let failure = code.map(classify);
        let fix = match (code, failure.as_ref().and_then(|f| f.fix)) {
            (Some(code), Some(fix)) => Some(read_fix(code, fix)),
            _ => None,
        };

        let error = ConsumeError::Receive {
            broker: self.broker.clone(),
            origin: self.origin.clone(),
            reason: self.settings.redact(&err.to_string()),
            fix,
            transient: !fatal && failure.is_none_or(|f| f.transient),
        };
        tracing::warn!(broker = %self.broker, error = %error, "Kafka consumer error");
        error
    }
}

/// Returns the record's headers in order, with an empty value for a
/// header that has none.
fn header_list(message: &BorrowedMessage<'_>) -> Vec<(String, Vec<u8>)> {
    let Some(headers) = message.headers() else {
        return Vec::new();
    };

    headers
        .iter()
        .map(|header| {
            (
                header.key.to_owned(),
                header.value.unwrap_or_default().to_vec(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_input_stops_the_thread() {
        let flag = Arc::new(AtomicBool::new(false));

        drop(StopOnDrop(Arc::clone(&flag)));

        assert!(flag.load(Ordering::SeqCst));
    }
}
