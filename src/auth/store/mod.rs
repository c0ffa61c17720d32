//! Token store: one JSON file per account at
//! `{state.directory}/tokens/{account}.json`, readable only by its owner.
//!
//! A save writes a temporary file in the same directory (mode 0600 from
//! its creation), syncs it, renames it over the old file and syncs the
//! directory. A crash therefore leaves either the old or the new file,
//! never a mix, and at worst a stray `.{account}.*.tmp` file, which
//! loading ignores. Concurrent saves do not corrupt the file: the last
//! rename wins. Unix only, because the permission checks use Unix modes.
//!
//! Processes that refresh the same account (`mailbridge run`, `check` and
//! `authorize`) serialize on an exclusive advisory lock of
//! `{account}.lock` in the same directory, taken by [`TokenStore::lock`].
//! A rotating provider treats a refresh token used twice as stolen, so
//! each refresh must read the file after the previous one wrote it.
//!
//! NOTE: stray temporary files from crashed saves are not removed, because
//! a concurrent save may still be writing one.

mod tokens;

#[cfg(test)]
mod tests;

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use tokens::{FORMAT_VERSION, StoredTokens, TokenUpdate};

use super::token::AccessToken;
use crate::config::State;
use tokens::TokenFile;

/// Largest token file that is read; real ones are a few kilobytes.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Errors of the [`TokenStore`]. Paths are shown, token values never.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The account name cannot be used as a file name.
    #[error(
        "invalid account name {account:?} for the token store: use letters, digits, \
         `-` and `_`, starting with a letter or digit"
    )]
    InvalidAccount { account: String },
    /// The token file exists but could not be read.
    #[error("failed to read token file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The token file grants access to group or others.
    #[error(
        "token file {} is accessible by group or others (mode {mode:03o}); \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    /// The token path is a directory or another non-regular file.
    #[error("token file {} is not a regular file; move it away", path.display())]
    NotAFile { path: PathBuf },
    /// The token file is not valid; it is left untouched.
    #[error(
        "invalid token file {}: {reason}; the file was left untouched: repair or \
         remove it, then run `mailbridge authorize {account}`",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        account: String,
        reason: String,
    },
    /// The token file was written by a newer mailbridge.
    #[error(
        "token file {} has format version {version}, but this mailbridge reads up to \
         version {FORMAT_VERSION}; upgrade mailbridge, or move the file away and run \
         `mailbridge authorize {account}`",
        path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        account: String,
        version: u64,
    },
    /// The lock file of the account could not be created or locked.
    #[error("failed to lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The token file could not be written; the previous file, if any, is
    /// unchanged.
    #[error("failed to write token file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// Short name of the failure, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidAccount { .. } => "invalid_account",
            Self::Read { .. } => "read",
            Self::Permissions { .. } => "permissions",
            Self::NotAFile { .. } => "not_a_file",
            Self::Corrupt { .. } => "corrupt",
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::Lock { .. } => "lock",
            Self::Write { .. } => "write",
        }
    }

    /// Returns whether retrying may succeed. Only a failed write qualifies,
    /// because a full disk or a passing I/O fault can cause it. The others
    /// need an operator.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Write { .. })
    }
}

/// An exclusive advisory lock on the tokens of one account, released when
/// dropped or when the process ends.
#[derive(Debug)]
pub struct AccountLock {
    _file: File,
}

/// The directory of token files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenStore {
    directory: PathBuf,
}

impl TokenStore {
    /// Opens the store in the `tokens` folder of the state directory. Does
    /// not touch the disk; the folder is created, mode 0700, by the first save.
    pub fn new(state: &State) -> Self {
        Self {
            directory: state.directory.join("tokens"),
        }
    }

    /// Returns the directory of the token files.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Returns the path of the token file of `account`.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidAccount`] unless the name consists of ASCII
    /// letters, digits, `-` and `_` and starts with a letter or digit.
    pub fn path(&self, account: &str) -> Result<PathBuf, StoreError> {
        let valid_start = account.starts_with(|c: char| c.is_ascii_alphanumeric());
        let valid_chars = account
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        match valid_start && valid_chars {
            true => Ok(self.directory.join(format!("{account}.json"))),
            false => Err(StoreError::InvalidAccount {
                account: account.to_owned(),
            }),
        }
    }

    /// Takes the exclusive lock of the tokens of `account`, blocking the
    /// thread while another process or another [`AccountLock`] holds it.
    /// Hold it from reading the tokens to saving the refreshed ones.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidAccount`] for an invalid name and
    /// [`StoreError::Lock`] when the directory or the lock file cannot be
    /// created or the lock fails.
    pub fn lock(&self, account: &str) -> Result<AccountLock, StoreError> {
        self.path(account)?;
        let path = self.directory.join(format!("{account}.lock"));
        let lock_error = |source| StoreError::Lock {
            path: path.clone(),
            source,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.directory)
            .map_err(lock_error)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(lock_error)?;
        file.lock().map_err(lock_error)?;

        Ok(AccountLock { _file: file })
    }

    /// Loads the tokens of `account`; a missing file is `Ok(None)`. A file
    /// that fails a check is left as it is.
    ///
    /// # Errors
    ///
    /// [`StoreError::Permissions`] for a file that group or others may
    /// access, [`StoreError::Corrupt`] for invalid content,
    /// [`StoreError::UnsupportedVersion`] for a newer format, and
    /// [`StoreError::Read`] or [`StoreError::NotAFile`] when it cannot be read.
    pub fn load(&self, account: &str) -> Result<Option<StoredTokens>, StoreError> {
        let path = self.path(account)?;
        let file = match File::open(&path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            file => file.map_err(|source| read_error(&path, source))?,
        };
        let bytes = read_private_file(&path, file)?;

        decode(&path, account, &bytes).map(Some)
    }

    /// Saves the tokens of `account`, replacing the file atomically.
    /// Returns after the new file and its directory entry are on disk, so
    /// a rotated refresh token is durable before the caller goes on.
    ///
    /// # Errors
    ///
    /// [`StoreError::Write`] when any step fails; the previous file is then
    /// unchanged.
    pub fn save(&self, account: &str, tokens: &StoredTokens) -> Result<(), StoreError> {
        let path = self.path(account)?;
        let mut json = serde_json::to_vec_pretty(&TokenFile::from(tokens))
            .map_err(|source| write_error(&path, source.into()))?;
        json.push(b'\n');

        self.write_atomically(account, &path, &json)
            .map_err(|source| write_error(&path, source))
    }

    /// Applies a token response to `tokens`, saves the result and only
    /// then returns the new access token. On error `tokens` is unchanged
    /// and no access token is returned, because using it could lose the
    /// rotated refresh token that came with it.
    ///
    /// # Errors
    ///
    /// The errors of [`TokenStore::save`].
    pub fn commit(
        &self,
        account: &str,
        tokens: &mut StoredTokens,
        update: TokenUpdate,
        now: SystemTime,
    ) -> Result<AccessToken, StoreError> {
        let access_token = update.access_token.clone();
        let mut updated = tokens.clone();
        updated.apply(update, now);
        self.save(account, &updated)?;

        *tokens = updated;
        Ok(access_token)
    }

    fn write_atomically(&self, account: &str, path: &Path, bytes: &[u8]) -> io::Result<()> {
        crate::state::write_atomically(path, account, bytes)
    }
}

/// Checks the type, mode and size of an open token file and reads it.
fn read_private_file(path: &Path, file: File) -> Result<Vec<u8>, StoreError> {
    let metadata = file.metadata().map_err(|source| read_error(path, source))?;
    if !metadata.is_file() {
        return Err(StoreError::NotAFile { path: path.into() });
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Permissions {
            path: path.into(),
            mode,
        });
    }

    let mut bytes = Vec::new();
    let mut limited = file.take(MAX_FILE_BYTES + 1);
    limited
        .read_to_end(&mut bytes)
        .map_err(|source| read_error(path, source))?;
    Ok(bytes)
}

fn decode(path: &Path, account: &str, bytes: &[u8]) -> Result<StoredTokens, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.into(),
        account: account.to_owned(),
        reason,
    };
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(corrupt("larger than 1 MiB".to_owned()));
    }
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|error| corrupt(describe_json_error(&error)))?;
    let Some(version) = json.get("version").and_then(serde_json::Value::as_u64) else {
        return Err(corrupt("no numeric `version` field".to_owned()));
    };
    if version > FORMAT_VERSION {
        let (path, account) = (path.into(), account.to_owned());
        return Err(StoreError::UnsupportedVersion {
            path,
            account,
            version,
        });
    }

    let file: TokenFile =
        serde_json::from_value(json).map_err(|error| corrupt(describe_json_error(&error)))?;
    Ok(file.into())
}

/// Describes a JSON error without quoting the file, which contains tokens.
/// serde_json's data errors can echo a value, so only the message of a
/// missing field is kept.
fn describe_json_error(error: &serde_json::Error) -> String {
    use serde_json::error::Category;

    let message = error.to_string();
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            format!(
                "invalid JSON at line {}, column {}",
                error.line(),
                error.column()
            )
        }
        Category::Data if message.starts_with("missing field") => message,
        Category::Data => "a field has the wrong type".to_owned(),
    }
}

fn read_error(path: &Path, source: io::Error) -> StoreError {
    StoreError::Read {
        path: path.into(),
        source,
    }
}

fn write_error(path: &Path, source: io::Error) -> StoreError {
    StoreError::Write {
        path: path.into(),
        source,
    }
}
