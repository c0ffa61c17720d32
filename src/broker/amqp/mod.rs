//! AMQP 0-9-1 publisher with publisher confirms (a RabbitMQ extension),
//! persistent delivery and the mandatory flag, so that a message no queue
//! takes comes back as basic.return instead of being dropped.
//!
//! One connection and one confirm-mode channel serve every task. A lost
//! connection or a channel the server closed is replaced on the next
//! publish.

pub(super) mod failure;
pub(super) mod server;

use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use futures::future::{join_all, maybe_done};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionState, ExchangeKind};
use tokio::sync::Mutex;

use super::consume::Outgoing;
use super::{CONTENT_TYPE, PublishError, Record, Target};
use crate::config::Amqp;
use failure::{declare_failure, publish_failure, unroutable_fix};
use server::Server;

/// Time allowed for a batch, from the first publish to the last confirm.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// Maximum length in bytes of an AMQP short string, such as a header name
/// (AMQP 0-9-1 section 4.2.5.3).
const SHORT_STRING_MAX: usize = 255;

/// An AMQP connection for other uses than publishing documents, such as
/// the coordination of replicas, with the means to keep the password out
/// of messages.
pub(crate) struct Link {
    pub(crate) connection: Connection,
    server: Server,
}

impl Link {
    /// Opens a connection to broker `broker`.
    pub(crate) async fn open(broker: &str, amqp: &Amqp) -> Result<Self, PublishError> {
        let server = Server::new(broker, amqp)?;
        let connection = server.open(broker).await?;
        Ok(Self { connection, server })
    }

    /// Removes the password from a message of lapin or the server.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.server.redact(text)
    }
}

/// Exchange and routing key of every message.
pub(crate) struct Route {
    /// Exchange name; empty for the default exchange.
    pub(crate) exchange: String,
    /// Routing key; the queue name with the default exchange.
    pub(crate) routing_key: String,
    /// Whether to declare the queue, or check the exchange, when a channel
    /// opens.
    pub(crate) declare: bool,
}

struct Session {
    connection: Connection,
    channel: Channel,
}

/// A publisher for one exchange and routing key.
pub(crate) struct Sink {
    broker: String,
    server: Server,
    route: Route,
    destination: String,
    /// Also held while a batch is sent, so that batches do not interleave
    /// and the channel numbers messages in the order they go out.
    session: Mutex<Option<Session>>,
}

impl Sink {
    /// Opens the connection and the channel, and runs the declaration that
    /// `route.declare` requests.
    pub(crate) async fn connect(
        broker: &str,
        amqp: &Amqp,
        route: Route,
    ) -> Result<Self, PublishError> {
        let destination = Target::Amqp {
            exchange: route.exchange.clone(),
            routing_key: route.routing_key.clone(),
            declare: route.declare,
        }
        .to_string();
        let mut sink = Self {
            broker: broker.to_owned(),
            server: Server::new(broker, amqp)?,
            route,
            destination,
            session: Mutex::new(None),
        };

        let session = sink.open_session(None).await?;
        *sink.session.get_mut() = Some(session);
        tracing::info!(
            broker,
            host = %sink.server.host,
            vhost = %sink.server.vhost,
            exchange = %sink.route.exchange,
            routing_key = %sink.route.routing_key,
            "Publisher connected"
        );

        Ok(sink)
    }

    /// Publishes every record of `batch`, then waits for all confirms.
    pub(crate) async fn publish<T: Outgoing>(&self, batch: &[T]) -> Result<(), PublishError> {
        match tokio::time::timeout(PUBLISH_TIMEOUT, self.publish_confirmed(batch)).await {
            Ok(result) => result,
            Err(_elapsed) => {
                self.drop_session().await;
                Err(PublishError::Timeout {
                    broker: self.broker.clone(),
                    destination: self.destination.clone(),
                    timeout: PUBLISH_TIMEOUT,
                })
            }
        }
    }

    /// Closes the channel and the connection.
    pub(crate) async fn close(&self) {
        let Some(session) = self.session.lock().await.take() else {
            return;
        };
        let closed = match session.channel.close(200, "closing").await {
            Ok(()) => session.connection.close(200, "closing").await,
            Err(err) => Err(err),
        };

        let (broker, host, vhost) = self.log_fields();
        match closed {
            Ok(()) => tracing::info!(broker, host, vhost, "Publisher closed"),
            Err(err) => {
                let error = self.server.redact(&err.to_string());
                tracing::warn!(
                    broker,
                    host,
                    vhost,
                    error,
                    "Failed to close the AMQP connection"
                );
            }
        }
    }

    async fn publish_confirmed<T: Outgoing>(&self, batch: &[T]) -> Result<(), PublishError> {
        let confirms = self.send(batch).await?;
        let confirmations = join_all(confirms).await;

        let mut failures = confirmations
            .into_iter()
            .filter_map(|confirmation| self.confirmation_error(confirmation));
        match failures.next() {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }

    /// Sends the batch's messages without waiting for confirms, on a
    /// channel opened again if the previous one was lost. Every message is
    /// handed to lapin, in batch order, before the first wait for its
    /// write, so the batch leaves in a few socket writes instead of one
    /// round trip to lapin's I/O thread per message.
    async fn send<T: Outgoing>(&self, batch: &[T]) -> Result<Vec<PublisherConfirm>, PublishError> {
        self.check_header_names(batch)?;

        let mut session = self.session.lock().await;
        let channel = self.ready_channel(&mut session).await?;
        let options = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };

        let publishes = batch.iter().map(|item| {
            channel.basic_publish(
                &self.route.exchange,
                &self.route.routing_key,
                options,
                &item.record().payload,
                properties(item.record(), item.headers()),
            )
        });
        in_order(publishes)
            .await
            .into_iter()
            .map(|written| written.map_err(|err| self.publish_error(&err)))
            .collect()
    }

    /// Rejects the batch before anything is sent when a header name does
    /// not fit an AMQP short string, which a retry cannot change.
    fn check_header_names<T: Outgoing>(&self, batch: &[T]) -> Result<(), PublishError> {
        let names = batch.iter().flat_map(|item| item.headers());
        let Some((name, _)) = names
            .into_iter()
            .find(|(name, _)| name.len() > SHORT_STRING_MAX)
        else {
            return Ok(());
        };

        Err(PublishError::Publish {
            broker: self.broker.clone(),
            destination: self.destination.clone(),
            reason: format!(
                "header name of {} bytes is longer than the {SHORT_STRING_MAX} bytes AMQP allows",
                name.len()
            ),
            fix: Some("use a shorter header name".to_owned()),
            transient: false,
        })
    }

    /// Returns the open channel, or reconnects: a new channel when only
    /// the channel closed, or a new connection when that was lost too.
    async fn ready_channel(&self, slot: &mut Option<Session>) -> Result<Channel, PublishError> {
        if let Some(session) = slot.as_ref()
            && session.channel.status().connected()
        {
            return Ok(session.channel.clone());
        }

        let old = slot.take();
        let (broker, host, vhost) = self.log_fields();
        match old.as_ref().map(|s| s.connection.status().state()) {
            Some(ConnectionState::Connected) => {
                tracing::warn!(broker, host, vhost, "Reopening the closed AMQP channel")
            }
            state => {
                let connection = state.map(|state| format!("{state:?}"));
                tracing::warn!(
                    broker,
                    host,
                    vhost,
                    connection,
                    "Reconnecting to the AMQP server"
                );
            }
        }
        let session = self.open_session(old).await?;
        tracing::info!(broker, host, vhost, "Reconnected to the AMQP server");

        let channel = session.channel.clone();
        *slot = Some(session);
        Ok(channel)
    }

    /// Opens a confirm-mode channel, on the old connection when it is
    /// still open.
    async fn open_session(&self, old: Option<Session>) -> Result<Session, PublishError> {
        let connection = match old {
            Some(old) if old.connection.status().connected() => old.connection,
            _ => self.open_connection().await?,
        };

        let channel = connection
            .create_channel()
            .await
            .map_err(|err| self.channel_error(&err))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|err| self.channel_error(&err))?;
        if self.route.declare {
            self.declare(&channel).await?;
        }

        Ok(Session {
            connection,
            channel,
        })
    }

    async fn open_connection(&self) -> Result<Connection, PublishError> {
        let connection = self.server.open(&self.broker).await?;

        let (broker, host) = (self.broker.clone(), self.server.host.clone());
        connection.on_error(move |err| {
            tracing::warn!(broker = %broker, host = %host, error = %err, "AMQP connection lost");
        });
        Ok(connection)
    }

    /// Declares a durable queue named by the routing key when publishing
    /// through the default exchange. A named exchange is only checked,
    /// because its type and bindings are the operator's choice.
    async fn declare(&self, channel: &Channel) -> Result<(), PublishError> {
        let declared = match self.route.exchange.is_empty() {
            true => {
                let options = QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                };
                let queue = &self.route.routing_key;
                let declared = channel.queue_declare(queue, options, FieldTable::default());
                declared.await.map(drop)
            }
            false => {
                let options = ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                };
                let exchange = &self.route.exchange;
                let kind = ExchangeKind::Direct;
                let declared =
                    channel.exchange_declare(exchange, kind, options, FieldTable::default());
                declared.await
            }
        };

        declared.map_err(|err| {
            let failure = declare_failure(&err, &self.route);
            PublishError::Declare {
                broker: self.broker.clone(),
                destination: self.destination.clone(),
                reason: self.server.redact(&err.to_string()),
                fix: failure.fix,
                transient: failure.transient,
            }
        })
    }

    /// Forgets the session after a timeout, because a channel that stopped
    /// confirming may never recover.
    async fn drop_session(&self) {
        if self.session.lock().await.take().is_some() {
            let (broker, host, vhost) = self.log_fields();
            tracing::warn!(
                broker,
                host,
                vhost,
                "Dropped the AMQP connection after a confirm timeout"
            );
        }
    }

    /// Returns the `broker`, `host` and `vhost` fields of every log line.
    fn log_fields(&self) -> (&str, &str, &str) {
        (&self.broker, &self.server.host, &self.server.vhost)
    }

    fn confirmation_error(
        &self,
        confirmation: lapin::Result<Confirmation>,
    ) -> Option<PublishError> {
        let returned = match confirmation {
            Ok(Confirmation::Ack(None)) => return None,
            Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))) => returned,
            Ok(Confirmation::Nack(None)) => {
                return Some(PublishError::Nack {
                    broker: self.broker.clone(),
                    destination: self.destination.clone(),
                });
            }
            Ok(Confirmation::NotRequested) => {
                return Some(PublishError::Publish {
                    broker: self.broker.clone(),
                    destination: self.destination.clone(),
                    reason: "the channel is not in confirm mode".to_owned(),
                    fix: None,
                    transient: true,
                });
            }
            Err(err) => return Some(self.publish_error(&err)),
        };

        Some(PublishError::Unroutable {
            broker: self.broker.clone(),
            exchange: self.route.exchange.clone(),
            routing_key: self.route.routing_key.clone(),
            reply: format!("{} {}", returned.reply_code, returned.reply_text),
            fix: unroutable_fix(&self.route),
        })
    }

    fn publish_error(&self, err: &lapin::Error) -> PublishError {
        let failure = publish_failure(err, &self.route);

        PublishError::Publish {
            broker: self.broker.clone(),
            destination: self.destination.clone(),
            reason: self.server.redact(&err.to_string()),
            fix: failure.fix,
            transient: failure.transient,
        }
    }

    fn channel_error(&self, err: &lapin::Error) -> PublishError {
        PublishError::Connect {
            broker: self.broker.clone(),
            address: self.server.address(),
            reason: format!(
                "failed to open a channel: {}",
                self.server.redact(&err.to_string())
            ),
            fix: None,
            transient: true,
        }
    }
}

/// Polls every future once, in order, before waiting on any, and returns
/// their outputs in that order. lapin assigns a publication its delivery
/// tag and queues its frames on the first poll, so the order of the first
/// polls is the order of the messages on the channel, which `join_all`
/// does not promise for long lists.
async fn in_order<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures
        .into_iter()
        .map(|future| Box::pin(maybe_done(future)))
        .collect();
    poll_fn(|cx| {
        let mut done = true;
        for future in &mut futures {
            done &= future.as_mut().poll(cx).is_ready();
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;

    futures
        .iter_mut()
        .map(|future| {
            future
                .as_mut()
                .take_output()
                .expect("every future completed before the outputs are taken")
        })
        .collect()
}

/// Message properties: persistent, JSON, `message_id` = document id and
/// `type` = schema name, plus a headers table when there are extra
/// headers.
fn properties(record: &Record, headers: &[(String, String)]) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type(CONTENT_TYPE.into())
        .with_message_id(record.key.as_str().into())
        .with_type(record.schema.into())
        .with_app_id("mailbridge".into());
    if headers.is_empty() {
        return properties;
    }

    let mut table = FieldTable::default();
    for (name, value) in headers {
        let value = AMQPValue::LongString(LongString::from(value.as_str()));
        table.insert(ShortString::from(name.as_str()), value);
    }
    properties.with_headers(table)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn in_order_with_futures_finishing_in_reverse() {
        // More futures than join_all polls in a plain list.
        const COUNT: usize = 100;
        let polled = Arc::new(Mutex::new(Vec::new()));
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..COUNT).map(|_| tokio::sync::oneshot::channel()).unzip();
        let futures: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(index, receiver)| {
                let polled = Arc::clone(&polled);
                async move {
                    polled.lock().unwrap().push(index);
                    receiver.await.unwrap()
                }
            })
            .collect();
        let joined = tokio::spawn(in_order(futures));
        tokio::task::yield_now().await;

        // The futures finish in reverse order.
        for (index, sender) in senders.into_iter().enumerate().rev() {
            sender.send(index).unwrap();
        }
        let outputs = joined.await.unwrap();

        assert_eq!(*polled.lock().unwrap(), (0..COUNT).collect::<Vec<_>>());
        assert_eq!(outputs, (0..COUNT).collect::<Vec<_>>());
    }
}
