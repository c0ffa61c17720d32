//! Where each watched mailbox stands: its UIDVALIDITY and the highest UID
//! whose mail the broker confirmed, plus the keys of every mail it
//! published, which the `skip_known` policy needs after a UIDVALIDITY
//! change.
//!
//! Files live in `{state}/checkpoints/{pipeline}/`: `{mailbox}.json` holds
//! the checkpoint and is replaced atomically after every batch;
//! `{mailbox}.known` is an append-only list of published mail keys
//! (Message-ID, or `sha256:` and the content hash without one), synced
//! before the checkpoint that covers them is written. Both files have
//! mode 0600 and their directory mode 0700, like the token files, because
//! the Message-IDs of the mailbox are private to its owner.

use std::collections::HashSet;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::state;

/// Version of the checkpoint file format.
const FORMAT_VERSION: u64 = 1;

/// A mailbox's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// UIDVALIDITY the UID belongs to.
    pub uidvalidity: u32,
    /// Highest UID whose mail was published and post-processed; mail
    /// above it is new.
    pub last_uid: u32,
    /// Selection that applies to the mail up to a UID, kept in the file so
    /// that a restart in the middle of a first pass or of a reset goes on
    /// with the same selection.
    pub filter: Option<Filter>,
}

/// Mail skipped up to and including UID `through`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Filter {
    /// Mail with the `\Seen` flag (`start_from = "unseen"`).
    Seen { through: u32 },
    /// Mail whose key is remembered (`on_uidvalidity_change = "skip_known"`).
    Known { through: u32 },
}

impl Filter {
    /// Highest UID the filter applies to.
    pub fn through(self) -> u32 {
        match self {
            Self::Seen { through } | Self::Known { through } => through,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct CheckpointFile {
    version: u64,
    account: String,
    mailbox: String,
    uidvalidity: u32,
    last_uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filter: Option<Filter>,
    updated_at: String,
}

/// Failure to read or write a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("failed to {action} checkpoint file {}: {source}; check the state directory's permissions and free space", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The file contains something other than a checkpoint.
    #[error("checkpoint file {} is corrupt ({reason}); restore it from a backup, or delete it to start over as `start_from` says", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// The file belongs to another account or mailbox.
    #[error("checkpoint file {} belongs to account {found_account:?}, mailbox {found_mailbox:?}; the pipeline's account changed: delete the file to start over as `start_from` says", path.display())]
    Mismatch {
        path: PathBuf,
        found_account: String,
        found_mailbox: String,
    },
}

impl CheckpointError {
    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io { .. } => "checkpoint_io",
            Self::Corrupt { .. } => "checkpoint_corrupt",
            Self::Mismatch { .. } => "checkpoint_mismatch",
        }
    }
}

/// A failed [`CheckpointStore::commit`].
#[derive(Debug)]
pub struct Unsaved {
    pub error: CheckpointError,
    /// Whether the keys were appended and synced, so that the next attempt
    /// leaves them out.
    pub keys_written: bool,
}

/// The checkpoint files of one (pipeline, mailbox).
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    account: String,
    mailbox: String,
    path: PathBuf,
    known_path: PathBuf,
}

impl CheckpointStore {
    /// Returns the store of `mailbox` (UTF-8) of `pipeline` under the
    /// state directory `state`.
    pub fn new(state: &Path, pipeline: &str, account: &str, mailbox: &str) -> Self {
        let directory = state.join("checkpoints").join(state::file_name(pipeline));
        let stem = state::file_name(mailbox);
        Self {
            account: account.to_owned(),
            mailbox: mailbox.to_owned(),
            path: directory.join(format!("{stem}.json")),
            known_path: directory.join(format!("{stem}.known")),
        }
    }

    /// Path of the checkpoint file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the checkpoint; `None` before the mailbox's first batch.
    pub fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(self.io("read", &self.path, source)),
        };
        self.decode(&bytes).map(Some)
    }

    /// Reads a checkpoint in the file format, from the file or from a
    /// copy kept in a broker. The path in errors is the file's.
    pub fn decode(&self, bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let file: CheckpointFile =
            serde_json::from_slice(bytes).map_err(|err| corrupt(err.to_string()))?;
        if file.version != FORMAT_VERSION {
            return Err(corrupt(format!("unknown format version {}", file.version)));
        }
        if file.account != self.account || file.mailbox != self.mailbox {
            return Err(CheckpointError::Mismatch {
                path: self.path.clone(),
                found_account: file.account,
                found_mailbox: file.mailbox,
            });
        }

        Ok(Checkpoint {
            uidvalidity: file.uidvalidity,
            last_uid: file.last_uid,
            filter: file.filter,
        })
    }

    /// Returns `checkpoint` in the file format.
    pub fn encode(&self, checkpoint: Checkpoint) -> Vec<u8> {
        let file = CheckpointFile {
            version: FORMAT_VERSION,
            account: self.account.clone(),
            mailbox: self.mailbox.clone(),
            uidvalidity: checkpoint.uidvalidity,
            last_uid: checkpoint.last_uid,
            filter: checkpoint.filter,
            updated_at: chrono::Utc::now().to_rfc3339(),
        };

        serde_json::to_vec_pretty(&file).expect("a checkpoint serializes")
    }

    /// Replaces the checkpoint atomically.
    pub fn save(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        self.write(&self.encode(checkpoint))
    }

    /// Replaces the file with `bytes`, a checkpoint in the file format.
    pub fn write(&self, bytes: &[u8]) -> Result<(), CheckpointError> {
        state::write_atomically(&self.path, "checkpoint", bytes)
            .map_err(|source| self.io("write", &self.path, source))
    }

    /// Appends `keys` and replaces the checkpoint with `bytes`, on
    /// blocking threads, so that the task waiting for both can meanwhile
    /// read from the IMAP server. The new checkpoint is written beside the
    /// old one while the keys are appended, and replaces it only once
    /// both are synced, so a checkpoint on disk never lacks its keys.
    pub async fn commit(&self, keys: Arc<[String]>, bytes: Arc<[u8]>) -> Result<(), Unsaved> {
        let store = self.clone();
        let written = tokio::task::spawn_blocking(move || {
            let unsaved = |error, keys_written| Unsaved {
                error,
                keys_written,
            };
            if keys.is_empty() {
                return store.write(&bytes).map_err(|error| unsaved(error, true));
            }
            std::thread::scope(|scope| {
                let remembered = scope.spawn(|| store.remember(&keys));
                let replacement = state::Replacement::write(&store.path, "checkpoint", &bytes)
                    .map_err(|source| store.io("write", &store.path, source));
                match remembered.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => return Err(unsaved(error, false)),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
                replacement
                    .and_then(|replacement| {
                        let replaced = replacement.replace();
                        replaced.map_err(|source| store.io("write", &store.path, source))
                    })
                    .map_err(|error| unsaved(error, true))
            })
        });
        match written.await {
            Ok(result) => result,
            Err(err) => match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(Unsaved {
                    error: self.io(
                        "write",
                        &self.path,
                        io::Error::other("the runtime shut down during the write"),
                    ),
                    keys_written: false,
                }),
            },
        }
    }

    /// Appends the keys of published mail and syncs them.
    ///
    /// NOTE: the file only grows, about 50 bytes per published mail, and
    /// is never compacted.
    pub fn remember(&self, keys: &[String]) -> Result<(), CheckpointError> {
        if keys.is_empty() {
            return Ok(());
        }
        let append = || -> io::Result<()> {
            if let Some(directory) = self.known_path.parent() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(directory)?;
            }
            let mut file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .mode(0o600)
                .open(&self.known_path)?;
            // The mode above applies only to a new file, and earlier
            // versions created the file with mode 0644.
            let metadata = file.metadata()?;
            if metadata.permissions().mode() & 0o077 != 0 {
                file.set_permissions(Permissions::from_mode(0o600))?;
            }
            let length = metadata.len();
            let mut lines = String::new();
            // A line cut off by an earlier failure stays a line of its own.
            let mut last = [0; 1];
            if length > 0 && file.read_at(&mut last, length - 1)? == 1 && last[0] != b'\n' {
                lines.push('\n');
            }
            for key in keys {
                // A key is one line: Message-IDs cannot hold line breaks
                // once parsed, and a stray one must not split the entry.
                lines.push_str(&key.replace(['\r', '\n'], " "));
                lines.push('\n');
            }
            let appended = file
                .write_all(lines.as_bytes())
                .and_then(|()| file.sync_data());
            if appended.is_err() {
                // Takes back a partial append, such as on a full disk, so
                // that the retry does not follow a cut-off key.
                let _ = file.set_len(length);
            }
            appended
        };

        append().map_err(|source| self.io("append to", &self.known_path, source))
    }

    /// Returns every key remembered so far.
    pub fn known(&self) -> Result<HashSet<String>, CheckpointError> {
        let file = match File::open(&self.known_path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(HashSet::new()),
            Err(source) => return Err(self.io("read", &self.known_path, source)),
        };
        let mut keys = HashSet::new();
        // A line that is not UTF-8, such as one cut off inside a character,
        // matches no key but does not make the others unreadable.
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(|source| self.io("read", &self.known_path, source))?;
            keys.insert(String::from_utf8_lossy(&line).into_owned());
        }

        Ok(keys)
    }

    fn io(&self, action: &'static str, path: &Path, source: io::Error) -> CheckpointError {
        CheckpointError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> CheckpointStore {
        CheckpointStore::new(dir, "tickets", "support", "Entwürfe/2024")
    }

    #[test]
    fn save_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        assert_eq!(store.load().unwrap(), None);

        let checkpoint = Checkpoint {
            uidvalidity: 1_720_000_000,
            last_uid: 57,
            filter: Some(Filter::Known { through: 80 }),
        };
        store.save(checkpoint).unwrap();

        assert_eq!(store.load().unwrap(), Some(checkpoint));
        assert!(
            store
                .path()
                .starts_with(dir.path().join("checkpoints/tickets"))
        );
    }

    #[test]
    fn corrupt_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        std::fs::create_dir_all(store.path().parent().unwrap()).unwrap();
        std::fs::write(store.path(), b"{\"version\":1,").unwrap();

        let err = store.load().unwrap_err();

        assert_eq!(err.kind(), "checkpoint_corrupt");
        assert!(
            err.to_string()
                .contains(&store.path().display().to_string())
        );
    }

    #[test]
    fn file_of_another_account_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint {
            uidvalidity: 1,
            last_uid: 2,
            filter: None,
        };
        store(dir.path()).save(checkpoint).unwrap();
        let other = CheckpointStore::new(dir.path(), "tickets", "sales", "Entwürfe/2024");

        let err = other.load().unwrap_err();

        assert_eq!(err.kind(), "checkpoint_mismatch");
        assert!(err.to_string().contains("\"support\""), "{err}");
    }

    #[test]
    fn remembered_keys_accumulate() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());

        store.remember(&["<a@example.test>".into()]).unwrap();
        store
            .remember(&["sha256:00ff".into(), "<b@x>\r\nBcc: y".into()])
            .unwrap();

        let known = store.known().unwrap();
        assert_eq!(known.len(), 3);
        assert!(known.contains("<a@example.test>"));
        assert!(known.contains("sha256:00ff"));
        assert!(known.contains("<b@x>  Bcc: y"));
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn checkpoint(last_uid: u32) -> Checkpoint {
        Checkpoint {
            uidvalidity: 7,
            last_uid,
            filter: None,
        }
    }

    #[tokio::test]
    async fn commit_writes_keys_and_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());

        let keys = vec!["<a@example.test>".to_owned(), "<b@example.test>".to_owned()];
        let first = store.encode(checkpoint(40));
        store.commit(keys.into(), first.into()).await.unwrap();
        let second = store.encode(checkpoint(41));
        store.commit(Arc::new([]), second.into()).await.unwrap();

        assert_eq!(store.load().unwrap(), Some(checkpoint(41)));
        assert_eq!(store.known().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn commit_keeps_the_old_checkpoint_when_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        store.save(checkpoint(40)).unwrap();
        // A directory where the keys file should be makes the append fail.
        std::fs::create_dir(store.path().with_extension("known")).unwrap();

        let keys = vec!["<a@example.test>".to_owned()];
        let bytes = store.encode(checkpoint(90));
        let unsaved = store.commit(keys.into(), bytes.into()).await.unwrap_err();

        let err = unsaved.error;
        assert!(!unsaved.keys_written);
        assert!(err.to_string().contains(".known"), "{err}");
        assert_eq!(store.load().unwrap(), Some(checkpoint(40)));
        let directory = store.path().parent().unwrap();
        let left: Vec<_> = std::fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }

    #[tokio::test]
    async fn commit_reports_keys_written_when_the_checkpoint_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        // A non-empty directory cannot be replaced by a rename.
        std::fs::create_dir_all(store.path().join("blocking")).unwrap();

        let keys: Arc<[String]> = vec!["<a@example.test>".to_owned()].into();
        let bytes: Arc<[u8]> = store.encode(checkpoint(90)).into();
        let unsaved = store.commit(keys, bytes.clone()).await.unwrap_err();
        std::fs::remove_dir_all(store.path()).unwrap();
        store.commit(Arc::new([]), bytes).await.unwrap();

        assert!(unsaved.keys_written);
        assert!(
            unsaved.error.to_string().contains(".json"),
            "{}",
            unsaved.error
        );
        assert_eq!(store.load().unwrap(), Some(checkpoint(90)));
        let known = std::fs::read_to_string(store.path().with_extension("known")).unwrap();
        assert_eq!(known, "<a@example.test>\n");
    }

    #[test]
    fn remember_after_cut_off_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        store.remember(&["<a@example.test>".into()]).unwrap();
        let known_path = store.path().with_extension("known");
        // An append cut off inside a UTF-8 character, as on a full disk.
        let mut file = OpenOptions::new().append(true).open(&known_path).unwrap();
        file.write_all(b"<caf\xc3").unwrap();

        store.remember(&["<b@example.test>".into()]).unwrap();

        let known = store.known().unwrap();
        assert!(known.contains("<a@example.test>"), "{known:?}");
        assert!(known.contains("<b@example.test>"), "{known:?}");
        assert_eq!(known.len(), 3, "{known:?}");
    }

    #[test]
    fn known_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());

        store.remember(&["<a@example.test>".into()]).unwrap();

        let known_path = store.path().with_extension("known");
        assert_eq!(mode(&known_path), 0o600);
        assert_eq!(mode(known_path.parent().unwrap()), 0o700);
    }

    #[test]
    fn open_known_file_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        store.remember(&["<a@example.test>".into()]).unwrap();
        let known_path = store.path().with_extension("known");
        std::fs::set_permissions(&known_path, Permissions::from_mode(0o644)).unwrap();

        store.remember(&["<b@example.test>".into()]).unwrap();

        assert_eq!(mode(&known_path), 0o600);
        assert_eq!(store.known().unwrap().len(), 2);
    }
}
