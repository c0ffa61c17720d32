//! Three replicas of one bridge, each with its own state directory and
//! metrics port, consume the same outbound topic (one consumer group) and
//! the same queue (competing consumers). Every request is sent once, and
//! each replica sends a share of them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{KAFKA, RABBITMQ, Targets, message_id, request, status_event};
use crate::bridge::Setup;
use crate::mailbox::wait_for_mails;
use crate::records::{SETTLE, amqp_raw, create_topic_with, kafka_raw, produce, publish_to_queue};
use crate::support::{mail_address, unique};

const REPLICAS: usize = 3;
/// Requests on each broker.
const REQUESTS: usize = 30;
/// Time allowed for all requests of one broker to be sent, on a busy
/// machine.
const SEND_WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn replicas_send_each_request_once() {
    let targets = Targets::new("replicas").await;
    // One partition per replica, so that each member of the group gets one.
    let topic = unique("replicas.requests");
    create_topic_with(&topic, REPLICAS as u32).await;
    let targets = Targets { topic, ..targets };

    let first = Setup::new("outbound-replicas");
    let user = first.user.clone();
    let mut setups = vec![first];
    for _ in 1..REPLICAS {
        let mut setup = Setup::new("outbound-replicas");
        setup.user = user.clone();
        setups.push(setup);
    }
    for setup in &setups {
        setup.prepare(&targets.pipelines()).await;
    }
    let bridges: Vec<_> = setups.iter().map(Setup::start).collect();
    for setup in &setups {
        setup.wait_ready().await;
    }

    let recipient = mail_address(&unique("replicas-recipient"));
    let mut request_ids = BTreeSet::new();
    for index in 0..REQUESTS {
        let request = request(&recipient, &format!("Kafka request {index}"));
        request_ids.insert(request["id"].as_str().expect("id").to_owned());
        let key = format!("key-{index}");
        produce(&targets.topic, &key, request.to_string().as_bytes()).await;
    }
    for index in 0..REQUESTS {
        let request = request(&recipient, &format!("AMQP request {index}"));
        request_ids.insert(request["id"].as_str().expect("id").to_owned());
        publish_to_queue(&targets.queue, request.to_string().as_bytes()).await;
    }

    let statuses = kafka_raw(&targets.topic_status, REQUESTS, SEND_WAIT).await;
    let statuses_amqp = amqp_raw(&targets.queue_status, REQUESTS, SEND_WAIT).await;
    wait_for_mails(&recipient, 2 * REQUESTS, SEND_WAIT).await;
    // A repeat would arrive after the last first copy, so the mailbox is
    // read once more after a pause.
    tokio::time::sleep(SETTLE).await;
    let mails = wait_for_mails(&recipient, 2 * REQUESTS, Duration::ZERO).await;

    let mut sent_by_replica = Vec::new();
    for setup in &setups {
        let mut sent = BTreeMap::new();
        for pipeline in [KAFKA, RABBITMQ] {
            let series =
                format!("mailbridge_smtp_sent_total{{pipeline=\"{pipeline}\",result=\"success\"}}");
            sent.insert(pipeline, setup.sample(&series).await.unwrap_or(0.0));
        }
        sent_by_replica.push(sent);
    }
    for bridge in bridges {
        bridge.stop().await;
    }
    let logs: Vec<String> = setups.iter().map(Setup::log).collect();
    let logs = logs.join("\n---- next replica ----\n");

    assert_eq!(
        statuses.len(),
        REQUESTS,
        "Kafka status events; logs:\n{logs}"
    );
    assert_eq!(
        statuses_amqp.len(),
        REQUESTS,
        "AMQP status events; logs:\n{logs}"
    );
    let mut status_ids = BTreeSet::new();
    let mut sent_ids = BTreeSet::new();
    for raw in statuses.iter().chain(&statuses_amqp) {
        let event = status_event(&raw.payload);
        assert_eq!(event["status"], "sent", "{event}");
        status_ids.insert(event["id"].as_str().expect("id").to_owned());
        sent_ids.insert(event["message_id"].as_str().expect("Message-ID").to_owned());
    }
    assert_eq!(status_ids, request_ids, "one status event per request");

    let received: Vec<String> = mails.iter().map(|raw| message_id(raw)).collect();
    let distinct: BTreeSet<String> = received.iter().cloned().collect();
    assert_eq!(received.len(), 2 * REQUESTS, "mails received: {received:?}");
    assert_eq!(distinct.len(), received.len(), "a request was sent twice");
    assert_eq!(distinct, sent_ids, "the received mails are the sent ones");

    for (replica, sent) in sent_by_replica.iter().enumerate() {
        for pipeline in [KAFKA, RABBITMQ] {
            assert!(
                sent[pipeline] >= 1.0,
                "replica {replica} sent nothing on {pipeline}: {sent_by_replica:?}"
            );
        }
    }
    let total: f64 = sent_by_replica.iter().flat_map(|sent| sent.values()).sum();
    assert_eq!(total, (2 * REQUESTS) as f64, "{sent_by_replica:?}");
}
