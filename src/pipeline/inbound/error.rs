//! The errors that end a mailbox session.

use crate::broker::PublishError;
use crate::imap::ImapError;
use crate::pipeline::assign::AssignError;
use crate::pipeline::checkpoint::CheckpointError;

/// Failure of a mailbox session; the watch logs it and reconnects, unless
/// it is fatal.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Connecting, signing in, selecting, fetching, idling or
    /// post-processing failed.
    #[error(transparent)]
    Imap(#[from] ImapError),
    /// The checkpoint could not be read or saved.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint could not be saved in the broker that replicas
    /// share.
    #[error(transparent)]
    Coordination(#[from] AssignError),
    /// The sink can never accept a record again, as when the reader of
    /// standard output closed the pipe. The process stops.
    #[error(transparent)]
    SinkClosed(PublishError),
    /// The process stops; not a failure.
    #[error("the process is stopping")]
    Shutdown,
}

impl WatchError {
    /// Short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Imap(err) => err.kind(),
            Self::Checkpoint(err) => err.kind(),
            Self::Coordination(err) => err.kind(),
            Self::SinkClosed(err) => err.kind(),
            Self::Shutdown => "shutdown",
        }
    }

    /// Whether a retry can succeed without a change of configuration or
    /// state. The watch retries either way, with the same backoff, since
    /// an operator may fix the cause at any time.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Imap(err) => err.is_transient(),
            Self::Coordination(err) => !err.is_fatal(),
            Self::Checkpoint(_) | Self::SinkClosed(_) | Self::Shutdown => false,
        }
    }

    /// Whether the process must stop, because no retry and no change of
    /// state outside the process can fix the failure.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::SinkClosed(_))
    }
}
