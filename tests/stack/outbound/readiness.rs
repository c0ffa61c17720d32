//! Readiness of a Kafka outbound pipeline follows its group assignment:
//! the consumer receives nothing until the group assigns it partitions,
//! so `/readyz` reports it not ready until then. The stack's broker completes each group
//! join after about 3 s, which leaves time to see the wait.

use serde_json::Value;

use super::{KAFKA, Targets};
use crate::bridge::{PATIENCE, Setup};

/// The readiness component of the [`KAFKA`] pipeline.
const COMPONENT: &str = "outbound/kafka";

#[tokio::test]
async fn kafka_pipeline_waits_for_assignment() {
    let setup = Setup::new("outbound-readiness");
    let targets = Targets::new("readiness").await;
    setup.prepare(&targets.kafka("")).await;
    assert_eq!(COMPONENT, format!("outbound/{KAFKA}"));

    let bridge = setup.start();
    let (status, waiting) = setup
        .wait_readyz(PATIENCE, |_, body| {
            reason(body).is_some_and(|reason| reason.contains("assign partitions"))
        })
        .await;
    let (ready_status, ready) = setup.wait_readyz(PATIENCE, |status, _| status == 200).await;
    let log = setup.log();
    bridge.stop().await;

    assert_eq!(status, 503, "{waiting}");
    assert_eq!(
        reason(&waiting),
        Some("waiting for the consumer group to assign partitions"),
        "{waiting}"
    );
    assert_eq!(ready_status, 200);
    assert_eq!(ready["components"][COMPONENT]["ready"], true, "{ready}");
    let connected = log.find("Consumer connected").expect("connected");
    let assigned = log.find("Partitions assigned").expect("assigned");
    assert!(connected < assigned, "{log}");
}

/// Returns the reason of the pipeline's component, while it is not ready.
fn reason(body: &Value) -> Option<&str> {
    body["components"][COMPONENT]["reason"].as_str()
}
