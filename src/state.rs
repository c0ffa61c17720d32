//! Files of the state directory: written whole to a temporary file,
//! synced and renamed over the old one, so that a crash leaves either the
//! old or the new content, never a mix.

use std::fs::{DirBuilder, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Replaces `path` with `bytes` atomically, creating its directory with
/// mode 0700 when missing. The file gets mode 0600. `prefix` names the
/// temporary file, which starts with a dot.
pub fn write_atomically(path: &Path, prefix: &str, bytes: &[u8]) -> io::Result<()> {
    Replacement::write(path, prefix, bytes)?.replace()
}

/// The new content of a file, written and synced beside it under a
/// temporary name, so that the replacement can wait for other writes.
/// Dropped without [`Replacement::replace`], it removes the temporary
/// file and leaves the file as it was.
pub struct Replacement<'a> {
    path: &'a Path,
    directory: &'a Path,
    temp: tempfile::NamedTempFile,
}

impl<'a> Replacement<'a> {
    /// Writes `bytes` for `path` as [`write_atomically`] does, up to the
    /// rename.
    pub fn write(path: &'a Path, prefix: &str, bytes: &[u8]) -> io::Result<Self> {
        let directory = path.parent().unwrap_or(Path::new("."));
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(directory)?;
        let mut temp = tempfile::Builder::new()
            .prefix(&format!(".{prefix}."))
            .suffix(".tmp")
            .permissions(Permissions::from_mode(0o600))
            .tempfile_in(directory)?;
        temp.write_all(bytes)?;
        temp.as_file().sync_all()?;
        Ok(Self {
            path,
            directory,
            temp,
        })
    }

    /// Renames the written file over the file and syncs the directory.
    pub fn replace(self) -> io::Result<()> {
        self.temp.persist(self.path).map_err(|error| error.error)?;

        // The rename is durable only once the directory is synced.
        File::open(self.directory)?.sync_all()
    }
}

/// Returns `name` as a file name: ASCII letters, digits, `-` and `_` stay,
/// every other byte becomes `%XX`, so that distinct names stay distinct
/// and none can leave the directory.
pub fn file_name(name: &str) -> String {
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => encoded.push(byte.into()),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(file_name("INBOX"), "INBOX");
        assert_eq!(file_name("../x"), "%2E%2E%2Fx");
        assert_eq!(file_name("Entwürfe"), "Entw%C3%BCrfe");
        assert_ne!(file_name("a/b"), file_name("a%2Fb"));
    }

    #[test]
    fn write_replaces_content_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/sub/file.json");

        write_atomically(&path, "file", b"one").unwrap();
        write_atomically(&path, "file", b"two").unwrap();

        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let entries = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(entries, 1, "no temporary file is left");
    }
}
