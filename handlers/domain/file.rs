//! Reading operator-supplied files (certificates, keys, CRLs, policies) with a size cap
//! that holds whatever the file is: a regular file, a FIFO, `/dev/zero` or a `/proc`
//! file that reports no length. Metadata is never trusted for the size.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

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
}
