//! Why a mailbox session ended.

use crate::imap::ImapError;
use crate::pipeline::checkpoint::CheckpointError;

/// Failure of a mailbox session; the watch logs it and reconnects.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Connecting, signing in, selecting, fetching, idling or
    /// post-processing failed.
    #[error(transparent)]
    Imap(#[from] ImapError),
    /// The checkpoint could not be read or saved.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
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
            Self::Shutdown => "shutdown",
        }
    }

    /// Whether a retry can succeed without a change of configuration or
    /// state. The watch retries either way, with the same backoff, since
    /// an operator may fix the cause at any time.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Imap(err) => err.is_transient(),
            Self::Checkpoint(_) | Self::Shutdown => false,
        }
    }
}
