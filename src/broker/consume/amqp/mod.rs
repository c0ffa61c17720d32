//! AMQP 0-9-1 consumer: basic.consume with manual acknowledgement and a
//! basic.qos prefetch window, so that the server sends at most `prefetch`
//! messages that are not yet acknowledged.
//!
//! A finished request is acknowledged with basic.ack, a released one is
//! returned with basic.nack and requeue. Closing the channel returns every
//! unacknowledged message to the queue, where the server marks it
//! redelivered. A lost connection is not repaired here: the caller
//! connects again.

mod table;

use std::sync::Arc;

use futures::StreamExt as _;
use lapin::acker::Acker;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    QueueDeclareOptions,
};
use lapin::protocol::AMQPSoftError;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use super::{ConsumeError, Delivery, Position, Receipt as DeliveryReceipt, Source};
use crate::broker::PublishError;
use crate::broker::amqp::failure::soft_error;
use crate::broker::amqp::server::Server;
use crate::config::Amqp;
use table::header_list;

/// A consumer of one queue.
pub(super) struct Input {
    broker: String,
    queue: String,
    origin: String,
    server: Arc<Server>,
    connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
    /// Reason the connection or channel is gone, once it is.
    lost: Option<String>,
}

/// One received message, as finish and release need it.
pub(in crate::broker::consume) struct Receipt {
    broker: String,
    server: Arc<Server>,
    acker: Acker,
}

impl Input {
    /// Opens the connection and a channel, makes sure the queue exists,
    /// sets the prefetch window and starts consuming.
    pub(super) async fn connect(
        broker: &str,
        amqp: &Amqp,
        queue: String,
        prefetch: u16,
    ) -> Result<Self, ConsumeError> {
        let origin = Source::amqp_origin(&queue);
        if prefetch == 0 {
            return Err(ConsumeError::Config {
                broker: broker.to_owned(),
                reason: format!("prefetch 0 for {origin} would let the server send without limit"),
                fix: "set max_in_flight of the outbound pipeline to at least 1".to_owned(),
            });
        }
        let setup = |err| ConsumeError::from_setup(err, broker, &origin);
        let server = Arc::new(Server::new(broker, amqp).map_err(setup)?);
        let connection = open(broker, &server).await.map_err(setup)?;

        let opened = Opening {
            broker,
            queue: &queue,
            origin: &origin,
            server: &server,
            connection: &connection,
        };
        let (channel, consumer) = opened.start(prefetch).await?;
        let (host, vhost) = (&server.host, &server.vhost);
        tracing::info!(broker, host, vhost, queue, prefetch, "Consumer connected");

        Ok(Self {
            broker: broker.to_owned(),
            queue,
            origin,
            server: Arc::clone(&server),
            connection,
            channel,
            consumer,
            lost: None,
        })
    }

    /// Waits for the next message. After the connection or the channel is
    /// lost, every call returns [`ConsumeError::Lost`].
    pub(super) async fn next(&mut self) -> Option<Result<Delivery, ConsumeError>> {
        if let Some(reason) = &self.lost {
            return Some(Err(self.lost_error(reason)));
        }

        let reason = match self.consumer.next().await {
            Some(Ok(delivery)) => return Some(Ok(self.delivery(delivery))),
            Some(Err(err)) => self.server.redact(&err.to_string()),
            None => "the server cancelled the consumer, for example because the queue was \
                     deleted"
                .to_owned(),
        };
        let error = self.lost_error(&reason);
        let (broker, queue) = (&self.broker, &self.queue);
        tracing::warn!(broker, queue, error = %error, "AMQP consumer stopped");
        self.lost = Some(reason);
        Some(Err(error))
    }

    /// Cancels the consumer and closes the channel and the connection. The
    /// server returns every unacknowledged message to the queue.
    pub(super) async fn close(self) {
        let (broker, queue) = (&self.broker, &self.queue);
        if self.lost.is_some() {
            tracing::info!(broker, queue, "Consumer closed after losing its connection");
            return;
        }

        let tag = self.consumer.tag();
        let closed = async {
            self.channel
                .basic_cancel(tag.as_str(), BasicCancelOptions::default())
                .await?;
            self.channel.close(200, "closing").await?;
            self.connection.close(200, "closing").await
        };
        match closed.await {
            Ok(()) => tracing::info!(broker, queue, "Consumer closed"),
            Err(err) => {
                let error = self.server.redact(&err.to_string());
                tracing::warn!(broker, queue, error, "Failed to close the AMQP consumer");
            }
        }
    }

    fn delivery(&self, delivery: lapin::message::Delivery) -> Delivery {
        let properties = &delivery.properties;
        let position = Position::Amqp {
            queue: self.queue.clone(),
            delivery_tag: delivery.delivery_tag,
        };
        let (broker, tag) = (&self.broker, delivery.delivery_tag);
        let redelivered = delivery.redelivered;
        tracing::debug!(broker, queue = %self.queue, tag, redelivered, "Message received");

        Delivery {
            key: properties.message_id().as_ref().map(|id| id.to_string()),
            headers: properties
                .headers()
                .as_ref()
                .map(header_list)
                .unwrap_or_default(),
            payload: delivery.data,
            position,
            redelivered,
            receipt: DeliveryReceipt::Amqp(Receipt {
                broker: self.broker.clone(),
                server: Arc::clone(&self.server),
                acker: delivery.acker,
            }),
        }
    }

    fn lost_error(&self, reason: &str) -> ConsumeError {
        ConsumeError::Lost {
            broker: self.broker.clone(),
            origin: self.origin.clone(),
            reason: reason.to_owned(),
        }
    }
}

/// Opens the connection and logs its loss when it happens.
async fn open(broker: &str, server: &Server) -> Result<Connection, PublishError> {
    let connection = server.open(broker).await?;

    let (broker, host) = (broker.to_owned(), server.host.clone());
    connection.on_error(move |err| {
        tracing::warn!(broker = %broker, host = %host, error = %err, "AMQP connection lost");
    });
    Ok(connection)
}

/// Acknowledges a finished message with basic.ack.
pub(super) async fn finish(receipt: &Receipt, position: &Position) -> Result<(), ConsumeError> {
    let acked = receipt.acker.ack(BasicAckOptions::default()).await;

    acked.map_err(|err| receipt.error("ack", position, &err))
}

/// Returns a message to the queue with basic.nack and requeue.
pub(super) async fn release(receipt: &Receipt, position: &Position) -> Result<(), ConsumeError> {
    let options = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    let nacked = receipt.acker.nack(options).await;

    nacked.map_err(|err| receipt.error("nack", position, &err))
}

impl Receipt {
    fn error(&self, action: &'static str, position: &Position, err: &lapin::Error) -> ConsumeError {
        ConsumeError::Acknowledge {
            broker: self.broker.clone(),
            position: position.to_string(),
            action,
            reason: self.server.redact(&err.to_string()),
        }
    }
}

/// The steps from an open connection to a running consumer.
struct Opening<'a> {
    broker: &'a str,
    queue: &'a str,
    origin: &'a str,
    server: &'a Server,
    connection: &'a Connection,
}

impl Opening<'_> {
    async fn start(&self, prefetch: u16) -> Result<(Channel, lapin::Consumer), ConsumeError> {
        let channel = self.declare_queue().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions { global: false })
            .await
            .map_err(|err| self.subscribe_error("basic.qos", &err))?;

        // A tag of our own, because lapin 2.5 keys its consumers by tag.
        let tag = format!("mailbridge-{:016x}", rand::random::<u64>());
        let options = BasicConsumeOptions::default();
        let consumer = channel
            .basic_consume(self.queue, &tag, options, FieldTable::default())
            .await
            .map_err(|err| self.subscribe_error("basic.consume", &err))?;

        Ok((channel, consumer))
    }

    /// Checks that the queue exists with a passive declare, which accepts
    /// it whatever its arguments, and declares a missing queue durable. The
    /// server closes the channel on the failed check, so that case goes on
    /// in a new channel.
    async fn declare_queue(&self) -> Result<Channel, ConsumeError> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let channel = self.channel().await?;
        let checked = channel
            .queue_declare(self.queue, passive, FieldTable::default())
            .await;
        match checked {
            Ok(_) => return Ok(channel),
            Err(err) if soft_error(&err) == Some(AMQPSoftError::NOTFOUND) => {}
            Err(err) => return Err(self.subscribe_error("queue.declare", &err)),
        }

        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let channel = self.channel().await?;
        channel
            .queue_declare(self.queue, durable, FieldTable::default())
            .await
            .map_err(|err| self.subscribe_error("queue.declare", &err))?;
        tracing::info!(
            broker = self.broker,
            queue = self.queue,
            "Declared a durable queue"
        );

        Ok(channel)
    }

    async fn channel(&self) -> Result<Channel, ConsumeError> {
        let created = self.connection.create_channel().await;

        created.map_err(|err| ConsumeError::Connect {
            broker: self.broker.to_owned(),
            address: self.server.address(),
            reason: format!(
                "failed to open a channel: {}",
                self.server.redact(&err.to_string())
            ),
            fix: None,
            transient: true,
        })
    }

    fn subscribe_error(&self, method: &str, err: &lapin::Error) -> ConsumeError {
        let (transient, fix) = match soft_error(err) {
            Some(AMQPSoftError::ACCESSREFUSED) => (
                false,
                Some(format!(
                    "grant the user read and configure permission on queue \"{}\", and check \
                     that no exclusive consumer holds it",
                    self.queue
                )),
            ),
            Some(AMQPSoftError::RESOURCELOCKED) => (
                true,
                Some("another connection holds the queue exclusively".to_owned()),
            ),
            _ => (true, None),
        };

        ConsumeError::Subscribe {
            broker: self.broker.to_owned(),
            origin: self.origin.to_owned(),
            reason: format!("{method}: {}", self.server.redact(&err.to_string())),
            fix,
            transient,
        }
    }
}
