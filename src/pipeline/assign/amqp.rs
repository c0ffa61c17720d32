//! Mailbox leases on RabbitMQ. Each mailbox has a durable queue
//! `{group}.lease.{mailbox}` with single active consumer on, which holds a
//! lease message. Every replica consumes every lease queue with a
//! prefetch of one; RabbitMQ delivers only to the active consumer, which
//! keeps the message unacknowledged while it watches the mailbox. When
//! that replica's connection ends, RabbitMQ requeues the message and makes
//! the next consumer active, which receives it and takes over.
//!
//! A replica that releases a mailbox stops its watch first, then cancels
//! its consumer and requeues the lease, and consumes again at the end of
//! the line. Replicas count each other by the consumers of
//! `{group}.members`, and one that holds more than its share of the
//! mailboxes releases the rest.
//!
//! The checkpoints live in `{group}.checkpoint.{mailbox}`, a durable
//! queue that keeps only its last message (`x-max-length = 1` with
//! `drop-head`). A new holder reads that message and puts it back.
//!
//! RabbitMQ closes a channel whose delivery stays unacknowledged longer
//! than its `consumer_timeout` (30 minutes by default), so the holder
//! replaces each lease message with a fresh one every few minutes. It
//! publishes the new one, which only it can receive while its consumer is
//! active, and then acknowledges the old one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use lapin::acker::Acker;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{AssignError, Event, Scope};
use crate::broker::AmqpLink;
use crate::config::Amqp;
use crate::pipeline::backoff::Backoff;

/// How often a replica compares its leases with its share.
const BALANCE_INTERVAL: Duration = Duration::from_secs(5);
/// Age after which a held lease message is replaced, well below
/// RabbitMQ's default `consumer_timeout` of 30 minutes.
const LEASE_RENEWAL: Duration = Duration::from_secs(5 * 60);
/// Time allowed for one broker operation.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// Name of the queue that holds the lease of `mailbox`.
pub fn lease_queue(group: &str, mailbox: &str) -> String {
    format!("{group}.lease.{mailbox}")
}

/// Name of the queue that contains the checkpoint of `mailbox`.
pub fn checkpoint_queue(group: &str, mailbox: &str) -> String {
    format!("{group}.checkpoint.{mailbox}")
}

/// Name of the queue every replica consumes, to count the replicas.
pub fn members_queue(group: &str) -> String {
    format!("{group}.members")
}

/// The lease loop of one pipeline.
pub struct AmqpAssigner {
    checkpoints: Checkpoints,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl AmqpAssigner {
    /// Starts the lease loop; it connects, and reconnects, by itself.
    pub async fn start(
        scope: Scope,
        amqp: &Amqp,
        events: mpsc::UnboundedSender<Event>,
        _shutdown: watch::Receiver<bool>,
    ) -> Result<Self, AssignError> {
        let checkpoints = Checkpoints {
            inner: Arc::new(Store {
                broker: scope.broker.clone(),
                group: scope.group.clone(),
                amqp: amqp.clone(),
                channel: Mutex::new(None),
            }),
        };
        let (stop, stopped) = watch::channel(false);
        let leases = Leases {
            scope,
            amqp: amqp.clone(),
            events,
            checkpoints: checkpoints.clone(),
            held: BTreeMap::new(),
            share: usize::MAX,
            stopped,
        };
        let task = tokio::spawn(leases.run());

        Ok(Self {
            checkpoints,
            stop,
            task,
        })
    }

    pub fn checkpoints(&self) -> Checkpoints {
        self.checkpoints.clone()
    }

    /// Releases every lease and closes the connection.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// A lease this replica holds.
struct Held {
    /// Acknowledges or requeues the lease message.
    acker: Acker,
    /// Consumer tag of the lease queue's consumer.
    tag: String,
    /// When the lease message was received.
    since: Instant,
}

/// A delivery, or the end, of one lease queue's consumer.
type LeaseItem = (
    String,
    Option<Result<lapin::message::Delivery, lapin::Error>>,
);

/// Cause of a wake-up of the lease loop.
enum Wake {
    Lease(Box<Option<LeaseItem>>),
    Balance,
    Stop,
}

/// The state of the lease loop.
struct Leases {
    scope: Scope,
    amqp: Amqp,
    events: mpsc::UnboundedSender<Event>,
    checkpoints: Checkpoints,
    held: BTreeMap<String, Held>,
    /// Mailboxes this replica watches at most: all of them over the
    /// replicas, rounded up, as last counted.
    share: usize,
    stopped: watch::Receiver<bool>,
}

/// One connection of the lease loop.
struct Session {
    link: AmqpLink,
    /// Channel of the consumers, with a prefetch of one per consumer.
    consume: Channel,
    /// Channel in confirm mode for lease messages.
    publish: Channel,
    deliveries: SelectAll<BoxStream<'static, LeaseItem>>,
    /// Tag of each lease queue's current consumer, by mailbox.
    tags: BTreeMap<String, String>,
    /// Number of consumers started, which makes each tag unique.
    generation: u64,
    /// Consumer of the members queue, kept so that it stays counted.
    _member: lapin::Consumer,
}

impl Leases {
    async fn run(mut self) {
        let component = self.scope.component();
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            if *self.stopped.borrow() {
                break;
            }
            let mut session = match self.connect().await {
                Ok(session) => session,
                Err(err) => {
                    let delay = backoff.next_delay();
                    warn!(
                        pipeline = %self.scope.pipeline, group = %self.scope.group,
                        error = %err, retry_in_ms = delay.as_millis() as u64,
                        "Failed to join the mailbox leases; retrying"
                    );
                    self.scope.readiness.not_ready(&component, err.to_string());
                    let mut stopped = self.stopped.clone();
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stopped.wait_for(|stop| *stop) => break,
                    }
                    continue;
                }
            };
            backoff.reset();
            self.scope.readiness.ready(&component);
            info!(
                pipeline = %self.scope.pipeline, group = %self.scope.group,
                mailboxes = self.scope.mailboxes.len(),
                "Joined the mailbox leases"
            );
            let reason = self.serve(&mut session).await;
            // The broker requeued the leases of a lost connection, so the
            // watches must stop before another replica starts them, and a
            // connection still open must close to hand the leases on.
            self.release_all().await;
            close(&session.link).await;
            match reason {
                None => break,
                Some(reason) => {
                    warn!(
                        pipeline = %self.scope.pipeline, group = %self.scope.group,
                        error = %reason, "Lost the mailbox leases; reconnecting"
                    );
                    self.scope.readiness.not_ready(&component, reason);
                }
            }
        }
    }

    fn broker_error(
        &self,
        link: Option<&AmqpLink>,
        action: &str,
        err: &lapin::Error,
    ) -> AssignError {
        let text = err.to_string();
        let text = link.map_or(text.clone(), |link| link.redact(&text));
        AssignError::Broker {
            broker: self.scope.broker.clone(),
            reason: format!("{action}: {text}"),
        }
    }

    /// Connects, declares the queues, publishes a lease message into each
    /// lease queue and starts consuming them.
    async fn connect(&mut self) -> Result<Session, AssignError> {
        let link = AmqpLink::open(&self.scope.broker, &self.amqp)
            .await
            .map_err(|err| AssignError::Broker {
                broker: self.scope.broker.clone(),
                reason: err.to_string(),
            })?;
        let fail = |action: &str, err: lapin::Error| self.broker_error(Some(&link), action, &err);
        let consume = link
            .connection
            .create_channel()
            .await
            .map_err(|err| fail("open a channel", err))?;
        consume
            .basic_qos(1, BasicQosOptions { global: false })
            .await
            .map_err(|err| fail("set the prefetch", err))?;
        let publish = link
            .connection
            .create_channel()
            .await
            .map_err(|err| fail("open a channel", err))?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|err| fail("select confirms", err))?;

        let members = members_queue(&self.scope.group);
        let options = QueueDeclareOptions {
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        consume
            .queue_declare(&members, options, FieldTable::default())
            .await
            .map_err(|err| fail(&format!("declare queue {members}"), err))?;
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        // Nothing is ever published to it: the consumer only counts.
        let member = consume
            .basic_consume(&members, "", no_ack, FieldTable::default())
            .await
            .map_err(|err| fail(&format!("consume queue {members}"), err))?;

        let mut session = Session {
            link,
            consume,
            publish,
            deliveries: SelectAll::new(),
            tags: BTreeMap::new(),
            generation: 0,
            _member: member,
        };
        let lined_up = match self.balance(&mut session).await {
            Ok(()) => self.line_up(&mut session).await,
            Err(err) => Err(err),
        };
        if let Err(err) = lined_up {
            close(&session.link).await;
            return Err(err);
        }

        Ok(session)
    }

    /// Declares each lease queue, puts a lease message into it and
    /// consumes it.
    async fn line_up(&self, session: &mut Session) -> Result<(), AssignError> {
        for mailbox in self.scope.mailboxes.clone() {
            let queue = lease_queue(&self.scope.group, &mailbox);
            session
                .consume
                .queue_declare(&queue, durable(), lease_arguments())
                .await
                .map_err(|err| {
                    self.broker_error(Some(&session.link), &format!("declare queue {queue}"), &err)
                })?;
            // Lease messages beyond one waiting are dropped by the queue.
            publish_lease(&session.publish, &queue)
                .await
                .map_err(|err| {
                    self.broker_error(Some(&session.link), &format!("publish to {queue}"), &err)
                })?;
            self.subscribe(session, &mailbox).await?;
        }

        Ok(())
    }

    /// Consumes the lease queue of `mailbox`, at the end of its line.
    async fn subscribe(&self, session: &mut Session, mailbox: &str) -> Result<(), AssignError> {
        let queue = lease_queue(&self.scope.group, mailbox);
        session.generation += 1;
        let tag = format!(
            "mailbridge-lease-{}-{}",
            session.generation,
            std::process::id()
        );
        let consumer = session
            .consume
            .basic_consume(
                &queue,
                &tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|err| {
                self.broker_error(Some(&session.link), &format!("consume queue {queue}"), &err)
            })?;
        let name = mailbox.to_owned();
        let end = name.clone();
        let stream = consumer
            .map(move |item| (name.clone(), Some(item)))
            .chain(futures::stream::once(async move { (end, None) }));
        session.deliveries.push(stream.boxed());
        session.tags.insert(mailbox.to_owned(), tag);

        Ok(())
    }

    /// Serves leases until the loop stops (`None`) or the connection
    /// fails (the reason).
    async fn serve(&mut self, session: &mut Session) -> Option<String> {
        let mut balance = tokio::time::interval(BALANCE_INTERVAL);
        let mut stopped = self.stopped.clone();
        loop {
            let wake = tokio::select! {
                item = session.deliveries.next() => Wake::Lease(Box::new(item)),
                _ = balance.tick() => Wake::Balance,
                _ = stopped.wait_for(|stop| *stop) => Wake::Stop,
            };
            let item = match wake {
                Wake::Lease(item) => *item,
                Wake::Balance => {
                    if let Err(err) = self.balance(session).await {
                        return Some(err.to_string());
                    }
                    if let Err(err) = self.renew(&session.link, &session.publish).await {
                        return Some(err.to_string());
                    }
                    continue;
                }
                Wake::Stop => return None,
            };
            match item {
                Some((mailbox, Some(Ok(delivery)))) => {
                    let tag = session.tags.get(&mailbox).cloned().unwrap_or_default();
                    let full = self.held.len() >= self.share && !self.held.contains_key(&mailbox);
                    let pass = match full {
                        true => {
                            self.others_in_line(&session.link, &session.publish, &mailbox)
                                .await
                        }
                        false => Ok(false),
                    };
                    let taken = match pass {
                        Ok(true) => self.pass(session, &mailbox, delivery.acker).await,
                        Ok(false) => self.take(tag, mailbox, delivery).await,
                        Err(err) => Err(err),
                    };
                    if let Err(err) = taken {
                        return Some(err.to_string());
                    }
                }
                Some((_, Some(Err(err)))) => return Some(session.link.redact(&err.to_string())),
                // A cancelled consumer ends its stream; a lost connection
                // ends them all.
                Some((_, None)) | None => {
                    if !session.link.connection.status().connected() {
                        return Some("the connection closed".to_owned());
                    }
                    if session.deliveries.is_empty() {
                        return Some("every lease consumer ended".to_owned());
                    }
                }
            }
        }
    }

    /// Takes the lease message of `mailbox`: starts its watch, or, when
    /// this replica already holds it, keeps the renewed message.
    async fn take(
        &mut self,
        tag: String,
        mailbox: String,
        delivery: lapin::message::Delivery,
    ) -> Result<(), AssignError> {
        if let Some(held) = self.held.get_mut(&mailbox) {
            held.acker = delivery.acker;
            held.since = Instant::now();
            return Ok(());
        }
        let checkpoint = self.checkpoints.load(&mailbox).await?;
        info!(
            pipeline = %self.scope.pipeline, group = %self.scope.group, mailbox = %mailbox,
            "Took the lease of a mailbox"
        );
        let event = Event::Acquire {
            mailbox: mailbox.clone(),
            checkpoint,
        };
        if self.events.send(event).is_err() {
            return Ok(());
        }
        self.held.insert(
            mailbox,
            Held {
                acker: delivery.acker,
                tag,
                since: Instant::now(),
            },
        );
        Ok(())
    }

    /// Releases the leases beyond this replica's share of the mailboxes:
    /// the share is the number of mailboxes over the number of replicas,
    /// rounded up.
    async fn balance(&mut self, session: &mut Session) -> Result<(), AssignError> {
        let members = members_queue(&self.scope.group);
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let queue = session
            .publish
            .queue_declare(&members, passive, FieldTable::default())
            .await
            .map_err(|err| {
                self.broker_error(
                    Some(&session.link),
                    &format!("count consumers of {members}"),
                    &err,
                )
            })?;
        let replicas = (queue.consumer_count() as usize).max(1);
        let share = self.scope.mailboxes.len().div_ceil(replicas);
        self.share = share;

        let extra = self.held.len().saturating_sub(share);
        if extra == 0 {
            return Ok(());
        }
        info!(
            pipeline = %self.scope.pipeline, group = %self.scope.group, replicas,
            held = self.held.len(), share, "Handing mailboxes over to other replicas"
        );

        let handed: Vec<String> = self.held.keys().rev().take(extra).cloned().collect();
        for mailbox in handed {
            self.hand_over(session, &mailbox).await?;
        }
        Ok(())
    }

    /// Stops the watch of `mailbox`, then gives its lease to the next
    /// consumer in line and lines up again.
    async fn hand_over(&mut self, session: &mut Session, mailbox: &str) -> Result<(), AssignError> {
        let Some(held) = self.held.remove(mailbox) else {
            return Ok(());
        };
        self.stop_watch(mailbox).await;
        let fail =
            |action: &str, err: lapin::Error| self.broker_error(Some(&session.link), action, &err);
        session
            .consume
            .basic_cancel(&held.tag, BasicCancelOptions::default())
            .await
            .map_err(|err| fail("cancel a lease consumer", err))?;
        held.acker
            .reject(BasicRejectOptions { requeue: true })
            .await
            .map_err(|err| fail("requeue a lease", err))?;
        self.subscribe(session, mailbox).await?;
        info!(
            pipeline = %self.scope.pipeline, group = %self.scope.group, mailbox = %mailbox,
            "Handed the lease of a mailbox over"
        );
        Ok(())
    }

    /// Returns whether another replica consumes the lease queue of
    /// `mailbox`; without one, a passed lease would come straight back.
    async fn others_in_line(
        &self,
        link: &AmqpLink,
        channel: &Channel,
        mailbox: &str,
    ) -> Result<bool, AssignError> {
        let queue = lease_queue(&self.scope.group, mailbox);
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare(&queue, passive, FieldTable::default())
            .await
            .map_err(|err| {
                self.broker_error(Some(link), &format!("count consumers of {queue}"), &err)
            })?;
        Ok(declared.consumer_count() > 1)
    }

    /// Gives a lease this replica has no room for to the next consumer in
    /// line, without watching the mailbox, and lines up again.
    async fn pass(
        &mut self,
        session: &mut Session,
        mailbox: &str,
        acker: Acker,
    ) -> Result<(), AssignError> {
        let tag = session.tags.get(mailbox).cloned().unwrap_or_default();
        let fail =
            |action: &str, err: lapin::Error| self.broker_error(Some(&session.link), action, &err);
        session
            .consume
            .basic_cancel(&tag, BasicCancelOptions::default())
            .await
            .map_err(|err| fail("cancel a lease consumer", err))?;
        acker
            .reject(BasicRejectOptions { requeue: true })
            .await
            .map_err(|err| fail("requeue a lease", err))?;
        self.subscribe(session, mailbox).await?;
        tracing::debug!(
            pipeline = %self.scope.pipeline, mailbox = %mailbox, share = self.share,
            "Passed a lease on: this replica holds its share"
        );
        Ok(())
    }

    /// Replaces lease messages held longer than [`LEASE_RENEWAL`].
    async fn renew(&self, link: &AmqpLink, publish: &Channel) -> Result<(), AssignError> {
        for (mailbox, held) in &self.held {
            if held.since.elapsed() < LEASE_RENEWAL {
                continue;
            }
            let queue = lease_queue(&self.scope.group, mailbox);
            publish_lease(publish, &queue).await.map_err(|err| {
                self.broker_error(Some(link), &format!("publish to {queue}"), &err)
            })?;
            held.acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(|err| self.broker_error(Some(link), "acknowledge a lease", &err))?;
        }
        Ok(())
    }

    /// Sends a release for `mailbox` and waits until its watch stopped.
    async fn stop_watch(&self, mailbox: &str) {
        let (done, stopped) = oneshot::channel();
        let event = Event::Release {
            mailbox: mailbox.to_owned(),
            done,
        };
        if self.events.send(event).is_ok() {
            let _ = stopped.await;
        }
    }

    /// Stops every watch; the leases go back with the connection.
    async fn release_all(&mut self) {
        let held = std::mem::take(&mut self.held);
        for mailbox in held.keys() {
            self.stop_watch(mailbox).await;
        }
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Closes the lease connection, which requeues every lease message it
/// holds, so that the next replica in line takes them.
async fn close(link: &AmqpLink) {
    let closing = link.connection.close(200, "mailbridge hands its leases on");
    let _ = tokio::time::timeout(OPERATION_TIMEOUT, closing).await;
}

/// Arguments of a lease queue: one active consumer, and at most one
/// waiting lease message (a held one does not count).
fn lease_arguments() -> FieldTable {
    let mut arguments = last_only();
    arguments.insert(
        ShortString::from("x-single-active-consumer"),
        AMQPValue::Boolean(true),
    );
    arguments
}

/// Arguments of a queue that keeps only its newest waiting message.
fn last_only() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(ShortString::from("x-max-length"), AMQPValue::LongInt(1));
    arguments.insert(
        ShortString::from("x-overflow"),
        AMQPValue::LongString(LongString::from("drop-head")),
    );
    arguments
}

async fn publish_lease(channel: &Channel, queue: &str) -> Result<(), lapin::Error> {
    publish(channel, queue, b"lease".to_vec()).await
}

/// Publishes `payload` persistently to `queue` through the default
/// exchange and waits for the broker's confirmation.
async fn publish(channel: &Channel, queue: &str, payload: Vec<u8>) -> Result<(), lapin::Error> {
    let properties = BasicProperties::default().with_delivery_mode(PERSISTENT);
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirm = channel
        .basic_publish("", queue, options, &payload, properties)
        .await?;
    match confirm.await? {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) | Confirmation::Nack(_) => Err(
            lapin::Error::InvalidChannelState(lapin::ChannelState::Error),
        ),
    }
}

/// The checkpoint queues of one pipeline, on a connection of their own.
#[derive(Clone)]
pub struct Checkpoints {
    inner: Arc<Store>,
}

struct Store {
    broker: String,
    group: String,
    amqp: Amqp,
    channel: Mutex<Option<(AmqpLink, Channel)>>,
}

impl Checkpoints {
    /// Saves the checkpoint of `mailbox`; the queue keeps only the last.
    pub async fn save(&self, mailbox: &str, checkpoint: Vec<u8>) -> Result<(), AssignError> {
        let queue = checkpoint_queue(&self.inner.group, mailbox);
        self.with_channel(&format!("save a checkpoint in {queue}"), |channel| {
            let queue = queue.clone();
            let checkpoint = checkpoint.clone();
            async move {
                channel
                    .queue_declare(&queue, durable(), last_only())
                    .await?;
                publish(&channel, &queue, checkpoint).await
            }
        })
        .await
    }

    /// Reads the last checkpoint of `mailbox` and leaves it in its queue.
    async fn load(&self, mailbox: &str) -> Result<Option<Vec<u8>>, AssignError> {
        let queue = checkpoint_queue(&self.inner.group, mailbox);
        self.with_channel(&format!("read the checkpoint in {queue}"), |channel| {
            let queue = queue.clone();
            async move {
                channel
                    .queue_declare(&queue, durable(), last_only())
                    .await?;
                let Some(message) = channel
                    .basic_get(&queue, BasicGetOptions { no_ack: false })
                    .await?
                else {
                    return Ok(None);
                };
                let data = message.delivery.data.clone();
                message
                    .delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: true })
                    .await?;
                Ok(Some(data))
            }
        })
        .await
    }

    /// Runs `operation` on the confirm channel, opening it first when
    /// needed; a failure drops the channel, so the next call opens a new
    /// one.
    async fn with_channel<T, F, Fut>(&self, action: &str, operation: F) -> Result<T, AssignError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<T, lapin::Error>>,
    {
        let store = &self.inner;
        let mut slot = store.channel.lock().await;
        let usable = slot.as_ref().is_some_and(|(link, channel)| {
            link.connection.status().connected() && channel.status().connected()
        });
        if !usable {
            *slot = None;
            let link = AmqpLink::open(&store.broker, &store.amqp)
                .await
                .map_err(|err| AssignError::Broker {
                    broker: store.broker.clone(),
                    reason: err.to_string(),
                })?;
            let opened = async {
                let channel = link.connection.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                Ok::<_, lapin::Error>(channel)
            };
            let channel = opened.await.map_err(|err| AssignError::Broker {
                broker: store.broker.clone(),
                reason: format!("{action}: {}", link.redact(&err.to_string())),
            })?;
            *slot = Some((link, channel));
        }
        let (link, channel) = slot.as_ref().expect("channel just opened");
        let result = tokio::time::timeout(OPERATION_TIMEOUT, operation(channel.clone())).await;
        let failure = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => link.redact(&err.to_string()),
            Err(_) => format!("no answer within {} s", OPERATION_TIMEOUT.as_secs()),
        };
        *slot = None;
        Err(AssignError::Broker {
            broker: store.broker.clone(),
            reason: format!("{action}: {failure}"),
        })
    }
}
