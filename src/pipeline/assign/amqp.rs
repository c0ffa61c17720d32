//! Placeholder.

use tokio::sync::{mpsc, watch};

use super::{AssignError, Event, Scope};
use crate::config::Amqp;

pub struct AmqpAssigner;

impl AmqpAssigner {
    pub async fn start(
        _scope: Scope,
        _settings: &Amqp,
        _events: mpsc::UnboundedSender<Event>,
        _shutdown: watch::Receiver<bool>,
    ) -> Result<Self, AssignError> {
        todo!()
    }

    pub fn checkpoints(&self) -> Checkpoints {
        todo!()
    }

    pub async fn close(self) {
        todo!()
    }
}

#[derive(Clone)]
pub struct Checkpoints;

impl Checkpoints {
    pub async fn save(&self, _mailbox: &str, _checkpoint: Vec<u8>) -> Result<(), AssignError> {
        todo!()
    }
}
