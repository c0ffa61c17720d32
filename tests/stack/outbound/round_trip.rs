//! The round trip of a reply: a mail arrives in the account's INBOX, the
//! inbound pipeline publishes its document, a reply request names the
//! document's `message_id` in `reply_to_id`, the outbound pipeline sends
//! it back to the account, and the inbound pipeline publishes the reply
//! with In-Reply-To and References pointing at the first mail.

use serde_json::{Value, json};

use super::{KAFKA, Targets};
use crate::bridge::{PATIENCE, Setup};
use crate::mailbox::{deliver, mail};
use crate::records::{create_topic, kafka_raw, kafka_records, produce};
use crate::support::unique;

#[tokio::test]
async fn a_reply_comes_back_through_the_inbound_pipeline_threaded() {
    let setup = Setup::new("outbound-round-trip");
    let targets = Targets::new("round-trip").await;
    let inbound = unique("round-trip.inbound");
    create_topic(&inbound).await;
    let pipelines = format!(
        "\n[inbound.mail]\naccount = \"watched\"\nbroker = \"kafka\"\ntopic = \"{inbound}\"\n{}",
        targets.kafka("")
    );
    setup.prepare(&pipelines).await;
    let local = unique("first");
    let first_id = format!("{local}@example.test");

    let bridge = setup.start();
    setup.wait_ready().await;
    deliver(&setup.user, &mail(&local, "Ticket 4711")).await;
    let documents = kafka_records(&inbound, 1, PATIENCE).await;
    assert_eq!(documents.len(), 1, "log:\n{}", setup.log());
    let first = &documents[0].document;
    assert_eq!(first["message_id"], first_id.as_str());
    let reply = reply_to(first, &setup.user);
    produce(&targets.topic, "reply", reply.to_string().as_bytes()).await;
    let documents = kafka_records(&inbound, 2, PATIENCE).await;
    let status = kafka_raw(&targets.topic_status, 1, PATIENCE).await;
    bridge.stop().await;

    assert_eq!(documents.len(), 2, "log:\n{}", setup.log());
    let second = &documents[1].document;
    assert_eq!(second["subject"], "Re: Ticket 4711", "{second}");
    assert_eq!(second["in_reply_to"], first_id.as_str(), "{second}");
    assert_eq!(second["references"], json!([first_id]), "{second}");
    assert_ne!(second["message_id"], first["message_id"]);
    assert_eq!(
        second["from"][0]["address"],
        setup.user.as_str(),
        "{second}"
    );
    let event = super::status_event(&status[0].payload);
    assert_eq!(event["status"], "sent", "{event}");
    assert_eq!(event["pipeline"], KAFKA);
    let sent_id = event["message_id"].as_str().expect("Message-ID");
    assert_eq!(
        sent_id,
        format!("<{}>", second["message_id"].as_str().unwrap_or_default())
    );
    setup.assert_log_has_no_token();
}

/// A reply to the inbound `document`, addressed to `account`.
fn reply_to(document: &Value, account: &str) -> Value {
    let subject = document["subject"].as_str().expect("subject");
    json!({
        "id": unique("reply"),
        "to": [account],
        "subject": format!("Re: {subject}"),
        "text": "Thank you, we are on it.",
        "reply_to_id": document["message_id"],
    })
}
