//! Readiness of one outbound pipeline, which has two parts. The consumer
//! is not ready while it connects or waits for the group to assign
//! partitions, and sending is not ready while a failure of the account
//! keeps requests back. The pipeline is ready when both parts are.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use crate::broker::Assignment;
use crate::telemetry::Readiness;

/// Reason given until the first group assignment completes.
pub const WAITING: &str = "waiting for the consumer group to assign partitions";

/// Time after which a missing assignment is logged as a warning.
pub const ASSIGNMENT_PATIENCE: Duration = Duration::from_secs(60);

/// The readiness component `outbound/NAME` with the reasons of both parts.
#[derive(Clone)]
pub struct Health {
    readiness: Readiness,
    component: String,
    reasons: Arc<Mutex<Reasons>>,
}

#[derive(Default)]
struct Reasons {
    consumer: Option<String>,
    sending: Option<String>,
}

impl Health {
    /// Marks pipeline `pipeline` not ready until its consumer connects.
    pub fn new(readiness: Readiness, pipeline: &str) -> Self {
        let health = Self {
            readiness,
            component: format!("outbound/{pipeline}"),
            reasons: Arc::default(),
        };
        health.consumer(Some("connecting to the broker".to_owned()));
        health
    }

    /// Sets why the consumer is not ready, or `None` once it can receive.
    pub fn consumer(&self, reason: Option<String>) {
        let mut reasons = self.reasons.lock().unwrap_or_else(|err| err.into_inner());
        reasons.consumer = reason;
        self.publish(&reasons);
    }

    /// Sets why sending is not ready, or `None` once a mail went out.
    pub fn sending(&self, reason: Option<String>) {
        let mut reasons = self.reasons.lock().unwrap_or_else(|err| err.into_inner());
        reasons.sending = reason;
        self.publish(&reasons);
    }

    /// Publishes the state while the lock is held, so that two updates
    /// cannot publish out of order.
    fn publish(&self, reasons: &Reasons) {
        match reasons.consumer.as_ref().or(reasons.sending.as_ref()) {
            Some(reason) => self.readiness.not_ready(&self.component, reason.clone()),
            None => self.readiness.ready(&self.component),
        }
    }
}

/// Follower of the group assignment of one pipeline's Kafka consumer.
pub struct Watch {
    pub health: Health,
    pub pipeline: String,
    pub broker: String,
    pub group: String,
}

impl Watch {
    /// Keeps the consumer's part of the readiness in step with its group
    /// assignment, and warns once per wait that lasts longer than
    /// [`ASSIGNMENT_PATIENCE`]. Returns when the consumer is gone.
    pub async fn follow(self, mut assignment: watch::Receiver<Assignment>) {
        loop {
            let state = *assignment.borrow_and_update();
            let reason = match state {
                Assignment::Assigned => None,
                Assignment::Pending => Some(WAITING.to_owned()),
                Assignment::Revoked { lost: false } => Some(format!(
                    "partitions revoked in a rebalance, {WAITING} again"
                )),
                Assignment::Revoked { lost: true } => Some(format!(
                    "assignment lost, as after a session timeout, {WAITING} again"
                )),
            };
            let waiting = reason.is_some();
            self.health.consumer(reason);
            if !waiting {
                if assignment.changed().await.is_err() {
                    return;
                }
                continue;
            }

            match tokio::time::timeout(ASSIGNMENT_PATIENCE, assignment.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return,
                Err(_elapsed) => self.warn_unassigned(),
            }
            if assignment.changed().await.is_err() {
                return;
            }
        }
    }

    fn warn_unassigned(&self) {
        warn!(
            pipeline = %self.pipeline, broker = %self.broker, group = %self.group,
            waited_s = ASSIGNMENT_PATIENCE.as_secs(),
            "No partitions assigned to the consumer yet, so no send request is read. \
             Usual causes: another member of the group still owns the partitions until \
             its session.timeout.ms passes, or the broker does not respond to JoinGroup. \
             Describe the group with the broker's tools to see its members"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(readiness: &Readiness) -> (bool, Option<String>) {
        let (_, components) = readiness.snapshot();
        let state = &components["outbound/replies"];
        (state.ready, state.reason.clone())
    }

    #[test]
    fn held_sending_outlasts_assignment() {
        let readiness = Readiness::default();
        let health = Health::new(readiness.clone(), "replies");
        health.sending(Some("sending is held: quota".to_owned()));

        health.consumer(None);
        let held = state(&readiness);
        health.sending(None);

        assert_eq!(held, (false, Some("sending is held: quota".to_owned())));
        assert_eq!(state(&readiness), (true, None));
    }

    #[tokio::test]
    async fn readiness_follows_assignment() {
        let readiness = Readiness::default();
        let (sender, receiver) = watch::channel(Assignment::Pending);
        let watch = Watch {
            health: Health::new(readiness.clone(), "replies"),
            pipeline: "replies".to_owned(),
            broker: "kafka".to_owned(),
            group: "mailbridge-replies".to_owned(),
        };
        let follower = tokio::spawn(watch.follow(receiver));
        let settle = || tokio::time::sleep(Duration::from_millis(50));

        settle().await;
        let pending = state(&readiness);
        sender.send_replace(Assignment::Assigned);
        settle().await;
        let assigned = state(&readiness);
        sender.send_replace(Assignment::Revoked { lost: true });
        settle().await;
        let lost = state(&readiness);
        drop(sender);
        follower.await.unwrap();

        assert_eq!(pending, (false, Some(WAITING.to_owned())));
        assert_eq!(assigned, (true, None));
        assert!(!lost.0);
        assert!(lost.1.unwrap().starts_with("assignment lost"));
    }
}
