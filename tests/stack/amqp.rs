//! RabbitMQ: lapin publishes with publisher confirms and consumes with
//! manual acknowledgements; an unacknowledged delivery returns to the queue.

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::support::{stack, unique};

async fn channel() -> (Connection, Channel) {
    let connection = Connection::connect(&stack("STACK_AMQP_URL"), ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("open channel");
    (connection, channel)
}

async fn declare(channel: &Channel, queue: &str) {
    channel
        .queue_declare(queue, QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare queue");
}

async fn publish_confirmed(channel: &Channel, queue: &str, body: &[u8]) {
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id("stack-test-1".into());
    let confirm = channel
        .basic_publish("", queue, BasicPublishOptions::default(), body, properties)
        .await
        .expect("publish")
        .await
        .expect("confirm arrives");
    assert!(
        confirm.is_ack(),
        "broker did not ack the publish: {confirm:?}"
    );
}

async fn message_count(channel: &Channel, queue: &str) -> u32 {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue, options, FieldTable::default())
        .await
        .expect("passive declare")
        .message_count()
}

#[tokio::test]
async fn amqp_confirmed_publish_manual_ack() {
    let queue = unique("stack-test");
    let (connection, channel) = channel().await;
    declare(&channel, &queue).await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("enable publisher confirms");

    publish_confirmed(&channel, &queue, br#"{"n":1}"#).await;

    let consumer_channel = connection.create_channel().await.expect("open channel");
    consumer_channel
        .basic_qos(1, BasicQosOptions::default())
        .await
        .expect("set prefetch");
    let mut consumer = consumer_channel
        .basic_consume(
            &queue,
            "first",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("start consumer");
    let delivery = consumer
        .next()
        .await
        .expect("a delivery")
        .expect("delivery ok");
    assert_eq!(delivery.data, br#"{"n":1}"#);
    assert!(!delivery.redelivered);
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str()),
        Some("stack-test-1")
    );
    assert_eq!(delivery.properties.delivery_mode(), &Some(2));

    // Closing the channel without an ack must put the message back.
    consumer_channel
        .close(200, "test")
        .await
        .expect("close channel");
    assert_eq!(message_count(&channel, &queue).await, 1);

    let mut again = channel
        .basic_consume(
            &queue,
            "second",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("start consumer");
    let delivery = again
        .next()
        .await
        .expect("a delivery")
        .expect("delivery ok");
    assert!(
        delivery.redelivered,
        "returned message is not marked redelivered"
    );
    delivery.ack(BasicAckOptions::default()).await.expect("ack");
    channel
        .basic_cancel("second", Default::default())
        .await
        .expect("cancel consumer");

    assert_eq!(message_count(&channel, &queue).await, 0);
    channel
        .queue_delete(&queue, QueueDeleteOptions::default())
        .await
        .expect("delete queue");
}
