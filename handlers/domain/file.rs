//! Reading operator-supplied files (certificates, keys, CRLs, policies) with a size cap
//! that holds whatever the file is: a regular file, a FIFO, `/dev/zero` or a `/proc`
//! file that reports no length. Metadata is never trusted for the size. Files that hold a
//! key keyturn made are written and read owner-only.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use zeroize::Zeroizing;

/// Why a capped read failed. Neither variant carries the file's content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CappedReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("larger than {cap} bytes")]
    TooLarge { cap: u64 },
}

/// The whole of `path` when it holds at most `cap` bytes. Reads one byte past the cap,
/// so a larger (or endless) input is detected after `cap + 1` bytes, never read whole.
pub(crate) fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, CappedReadError> {
    let file = File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(io::Error::new(io::ErrorKind::IsADirectory, "is a directory").into());
    }
    let mut bytes = Vec::new();
    file.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(CappedReadError::TooLarge { cap });
    }
    Ok(bytes)
}

/// [`read_capped`], as UTF-8 text.
pub(crate) fn read_capped_text(path: &Path, cap: u64) -> Result<String, CappedReadError> {
    String::from_utf8(read_capped(path, cap)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text").into())
}

/// Why an owner-only file was refused. No variant carries the file's content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum OwnerOnlyReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("larger than {cap} bytes")]
    TooLarge { cap: u64 },
    /// Other users may read it (Unix permission bits `mode`).
    #[error("readable by other users (mode {mode:o})")]
    Exposed { mode: u32 },
}

/// The text of a file holding a key: refused when other users may read it (on Unix, any
/// group or other permission bit), and read with [`read_capped_text`]'s cap.
pub(crate) fn read_owner_only_text(
    path: &Path,
    cap: u64,
) -> Result<Zeroizing<String>, OwnerOnlyReadError> {
    let metadata = fs::metadata(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(OwnerOnlyReadError::Exposed { mode });
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    let text = read_capped_text(path, cap).map_err(|error| match error {
        CappedReadError::TooLarge { cap } => OwnerOnlyReadError::TooLarge { cap },
        CappedReadError::Io(source) => OwnerOnlyReadError::Io(source),
    })?;
    Ok(Zeroizing::new(text))
}

/// Publishes `contents` as a new owner-only (0600) file at `path`, never over an existing
/// one: written under a unique temporary name (`O_EXCL`), synced, and hard-linked into
/// place, because `link` fails when the name exists. Two processes starting together
/// therefore cannot overwrite each other, and a reader never sees a half-written file.
/// `Ok(false)` when `path` already existed (another process published first); it is left
/// as it was.
pub(crate) fn publish_owner_only(path: &Path, contents: &[u8]) -> io::Result<bool> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let temporary = path.with_file_name(format!(
        "{}.{}.tmp",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = (|| {
        let mut file = options.open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::hard_link(&temporary, path)
    })();
    let _ = fs::remove_file(&temporary);
    match written {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_file_is_refused_after_the_cap() {
        let err = read_capped(Path::new("/dev/zero"), 1024).expect_err("endless");
        assert!(matches!(err, CappedReadError::TooLarge { cap: 1024 }));
        assert_eq!(err.to_string(), "larger than 1024 bytes");
    }

    #[test]
    fn a_file_within_the_cap_is_read_whole() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), b"0123456789").expect("write");
        assert_eq!(read_capped(file.path(), 10).expect("fits"), b"0123456789");
        assert!(matches!(
            read_capped(file.path(), 9),
            Err(CappedReadError::TooLarge { cap: 9 })
        ));
    }

    #[test]
    fn a_directory_or_a_missing_file_is_an_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            read_capped(dir.path(), 10),
            Err(CappedReadError::Io(_))
        ));
        assert!(matches!(
            read_capped(&dir.path().join("missing"), 10),
            Err(CappedReadError::Io(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_published_file_is_owner_only_and_never_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        assert!(publish_owner_only(&path, b"first").expect("published"));
        assert!(!publish_owner_only(&path, b"second").expect("left alone"));
        assert_eq!(fs::read(&path).expect("read"), b"first");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::read_dir(dir.path()).expect("list").count(),
            1,
            "no temporary file is left behind"
        );
        assert_eq!(
            read_owner_only_text(&path, 16)
                .expect("owner-only")
                .as_str(),
            "first"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_may_read_is_refused_before_it_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        fs::write(&path, b"text").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(
            read_owner_only_text(&path, 16),
            Err(OwnerOnlyReadError::Exposed { mode: 0o640 })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            read_owner_only_text(&path, 3),
            Err(OwnerOnlyReadError::TooLarge { cap: 3 })
        ));
    }
}
