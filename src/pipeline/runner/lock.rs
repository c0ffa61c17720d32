//! The lock that keeps a second `mailbridge run` off a state directory.
//! Two processes on one directory would publish every mail twice, race
//! on moving and deleting it, and overwrite each other's checkpoints.
//! `mailbridge authorize` does not take the lock, so that an account can
//! be signed in again while the bridge runs.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of the lock file inside the state directory.
const LOCK_FILE: &str = "run.lock";

/// Failure to take the lock of the state directory.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "another mailbridge process uses the state directory {}; stop it, or give this \
         one its own directory (state.directory)",
        directory.display()
    )]
    Held {
        /// The state directory.
        directory: PathBuf,
    },
    /// The lock file could not be created or locked.
    #[error("failed to lock {} (state.directory): {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        source: io::Error,
    },
}

impl LockError {
    /// Short label for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Held { .. } => "state_locked",
            Self::Io { .. } => "state_lock",
        }
    }

    /// Tells whether a later attempt may succeed without a change, which
    /// is so once the other process has stopped.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Held { .. })
    }
}

/// An exclusive lock on the state directory, held until it is dropped.
/// The operating system releases it when the process ends in any way,
/// so a crash leaves no stale lock behind.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Locks `directory`, creating it with mode 0700 when missing.
    pub fn take(directory: &Path) -> Result<Self, LockError> {
        let path = directory.join(LOCK_FILE);
        let io_error = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(directory)
            .map_err(io_error)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error)?;

        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(LockError::Held {
                directory: directory.to_owned(),
            }),
            Err(TryLockError::Error(source)) => Err(io_error(source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_rejected_until_release() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");

        let first = StateLock::take(&state).unwrap();
        let second = StateLock::take(&state).unwrap_err();
        drop(first);
        let third = StateLock::take(&state);

        assert_eq!(second.kind(), "state_locked");
        let message = second.to_string();
        assert!(message.contains(&state.display().to_string()), "{message}");
        assert!(message.contains("another mailbridge"), "{message}");
        assert!(third.is_ok(), "{third:?}");
    }
}
