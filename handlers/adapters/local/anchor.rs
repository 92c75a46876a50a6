//! The audit log's anchors in local mode: an append-only checkpoint file and an Ed25519
//! signing key file, both beside the SQLite store and owner-only.
//!
//! Local mode keeps the key beside the log, so whoever can rewrite the data directory can
//! also re-sign a rewritten log: the anchors here catch accidents, a store edited by
//! hand and a store restored from an older copy, not an owner of the machine. Azure
//! keeps the key in Key Vault and the checkpoints in immutable blob storage.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

use crate::domain::file::{OwnerOnlyReadError, publish_owner_only, read_owner_only_text};
use crate::ports::PortError;
use crate::ports::checkpoint::{
    CheckpointSigner, CheckpointStore, KeyRing, MAX_CHECKPOINT_LINE_BYTES, NamedKey, PublicKey,
    Signature, SignatureAlgorithm, SignedCheckpoint, StoredCheckpoint, parse_public_keys,
};

/// The checkpoint file's name inside the data directory.
pub const CHECKPOINT_FILE_NAME: &str = "audit-checkpoints.log";

/// The signing key file's name inside the data directory.
pub const SIGNING_KEY_FILE_NAME: &str = "audit-signing.key";

/// The public key's file, beside the signing key: what an auditor is given.
pub const PUBLIC_KEY_FILE_NAME: &str = "audit-signing.pub.jwk";

/// A PKCS#8 v2 Ed25519 document is 83 bytes, 112 characters of base64 and a line break;
/// anything much larger is not a key file.
const MAX_KEY_FILE_LEN: u64 = 512;

/// The file beside the store at `store_path` called `name`.
pub fn file_beside(store_path: &Path, name: &str) -> PathBuf {
    store_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(name)
}

/// Checkpoints as lines of a file opened for appending only. The lines of one
/// [`CheckpointStore::append_all`] are written whole in one `write` to a file opened
/// with `O_APPEND`, then synced once, so lines from several processes never interleave
/// and a writer anchoring several batches at once pays one sync for all of them. A line
/// cut short (a crash before the sync, a disk that filled up mid-write) is isolated by
/// the next write, which starts on a fresh line.
#[derive(Debug, Clone)]
pub struct LocalCheckpointFile {
    path: PathBuf,
    file: Arc<Mutex<Option<OpenFile>>>,
}

/// The open file and where this process last left its end.
#[derive(Debug)]
struct OpenFile {
    file: fs::File,
    /// The file's length after this process's last complete write, which ended with a
    /// line break; `None` until then, or after a write failed part-way.
    ends_clean_at: Option<u64>,
}

impl LocalCheckpointFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            file: Arc::new(Mutex::new(None)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `lines` (each without its line break) in one write and one sync.
    fn append_lines(&self, lines: &[String]) -> io::Result<()> {
        let mut slot = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let open = match slot.as_mut() {
            Some(open) => open,
            None => {
                let mut options = fs::OpenOptions::new();
                options.append(true).create(true).read(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                slot.insert(OpenFile {
                    file: options.open(&self.path)?,
                    ends_clean_at: None,
                })
            }
        };
        let mut bytes =
            Vec::with_capacity(lines.iter().map(|line| line.len() + 1).sum::<usize>() + 1);
        // Only a write that did not finish leaves a line without its break: one of this
        // process's (then `ends_clean_at` is unknown) or another process's (then the
        // length moved). Where neither happened, the last byte is this process's own
        // line break and is not read again.
        let len = open.file.metadata()?.len();
        if open.ends_clean_at != Some(len) && ends_mid_line(&mut open.file, len)? {
            bytes.push(b'\n');
        }
        for line in lines {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        open.ends_clean_at = None;
        open.file.write_all(&bytes)?;
        open.file.sync_data()?;
        // With `O_APPEND` each write goes to the end, wherever other processes left it,
        // and leaves the file's offset just past it: past this write's last line break.
        open.ends_clean_at = Some(open.file.stream_position()?);
        Ok(())
    }
}

/// Whether the file, `len` bytes long, ends with something other than a line break.
fn ends_mid_line(file: &mut fs::File, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

#[async_trait]
impl CheckpointStore for LocalCheckpointFile {
    async fn append_all(&self, checkpoints: &[SignedCheckpoint]) -> Result<(), PortError> {
        if checkpoints.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = checkpoints.iter().map(SignedCheckpoint::to_line).collect();
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.append_lines(&lines))
            .await
            .map_err(|_| PortError::transient("appending checkpoints: the task failed"))?
            .map_err(|error| {
                PortError::transient(format!(
                    "appending checkpoints to {}: {error}",
                    self.path.display()
                ))
            })
    }

    async fn read_all(&self) -> Result<Vec<StoredCheckpoint>, PortError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || read_lines(&path))
            .await
            .map_err(|_| PortError::transient("reading checkpoints: the task failed"))?
    }
}

fn read_lines(path: &Path) -> Result<Vec<StoredCheckpoint>, PortError> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(PortError::invalid(format!(
                "reading checkpoints from {}: {error}",
                path.display()
            )));
        }
    };
    let mut reader = BufReader::new(file);
    let mut found = Vec::new();
    let cap = u64::try_from(MAX_CHECKPOINT_LINE_BYTES + 1).unwrap_or(u64::MAX);
    for number in 1.. {
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(cap)
            .read_until(b'\n', &mut line)
            .map_err(|error| {
                PortError::invalid(format!(
                    "reading checkpoints from {}: {error}",
                    path.display()
                ))
            })?;
        if read == 0 {
            break;
        }
        let complete = line.last() == Some(&b'\n');
        if complete {
            line.pop();
        } else if line.len() > MAX_CHECKPOINT_LINE_BYTES {
            // Skip the rest of an overlong line so the next one is read on its own.
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest).map_err(|error| {
                PortError::invalid(format!(
                    "reading checkpoints from {}: {error}",
                    path.display()
                ))
            })?;
        }
        if line.is_empty() && complete {
            continue;
        }
        let content = match std::str::from_utf8(&line) {
            Err(_) => Err("line is not UTF-8 text".to_owned()),
            Ok(_) if line.len() > MAX_CHECKPOINT_LINE_BYTES => Err(format!(
                "line is longer than the {MAX_CHECKPOINT_LINE_BYTES} bytes a checkpoint can take"
            )),
            Ok(text) if !complete => {
                SignedCheckpoint::from_line(text).and_then(|_| Err("line is truncated".to_owned()))
            }
            Ok(text) => SignedCheckpoint::from_line(text),
        };
        found.push(StoredCheckpoint {
            location: format!("{} line {number}", path.display()),
            content,
        });
    }
    Ok(found)
}

/// Why the local signing key cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningKeyError {
    #[error("audit signing key file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "audit signing key file {path} is readable by other users (mode {mode:o}); make it owner-only (chmod 600)"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("audit signing key file {path} does not hold an Ed25519 key ({problem})")]
    Malformed {
        path: PathBuf,
        problem: &'static str,
    },
    #[error("no random numbers for a new audit signing key")]
    Random,
}

/// The local Ed25519 signing key, read from (or created in) an owner-only file.
pub struct LocalSigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for LocalSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl LocalSigningKey {
    /// Reads the key at `path`, creating it when absent: the file is owner-only (0600),
    /// published atomically (a unique temporary file hard-linked into place, which
    /// fails rather than replace a key another process created first). The public key
    /// is written beside it as [`PUBLIC_KEY_FILE_NAME`] for auditors.
    pub fn load_or_create(path: &Path) -> Result<Self, SigningKeyError> {
        let file_error = |source| SigningKeyError::File {
            path: path.to_path_buf(),
            source,
        };
        match fs::metadata(path) {
            Ok(_) => return Self::read_file(path),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(file_error(error)),
        }
        // The key may be created before the store beside it: its directory then too,
        // owner-only like the store's.
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty() && !parent.exists())
        {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(parent).map_err(file_error)?;
        }
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| SigningKeyError::Random)?;
        let text = Zeroizing::new(format!("{}\n", STANDARD.encode(document.as_ref())));
        // Another process may have published its key first: then that one is read.
        publish_owner_only(path, text.as_bytes()).map_err(file_error)?;
        let key = Self::read_file(path)?;
        publish_public_key(&file_beside(path, PUBLIC_KEY_FILE_NAME), &key.public);
        Ok(key)
    }

    /// Reads an existing key file; never creates one.
    pub fn read_file(path: &Path) -> Result<Self, SigningKeyError> {
        let file_error = |source| SigningKeyError::File {
            path: path.to_path_buf(),
            source,
        };
        let malformed = |problem| SigningKeyError::Malformed {
            path: path.to_path_buf(),
            problem,
        };
        let text = read_owner_only_text(path, MAX_KEY_FILE_LEN).map_err(|error| match error {
            OwnerOnlyReadError::Exposed { mode } => SigningKeyError::Exposed {
                path: path.to_path_buf(),
                mode,
            },
            OwnerOnlyReadError::TooLarge { .. } => malformed("the file is too large"),
            OwnerOnlyReadError::Io(source) => file_error(source),
        })?;
        let document = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| malformed("not base64"))?,
        );
        let pair = Ed25519KeyPair::from_pkcs8(&document)
            .map_err(|_| malformed("not a PKCS#8 Ed25519 key"))?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(Self {
            pair,
            public: PublicKey::Ed25519(public),
        })
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }
}

/// Adds `public` to the public key file at `path`, a JSON Web Key Set that keeps every
/// key this data directory has signed with (each with its fingerprint as `kid`), so
/// checkpoints signed before a key was replaced still verify. The file is for handing
/// out; failing to write it loses nothing.
fn publish_public_key(path: &Path, public: &PublicKey) {
    let mut ring = match fs::read_to_string(path) {
        Ok(text) => match parse_public_keys(&text) {
            Ok(keys) => KeyRing::new(keys),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "the audit public key file holds no readable key; it is rewritten with the new key only");
                KeyRing::default()
            }
        },
        Err(_) => KeyRing::default(),
    };
    ring.add(NamedKey {
        kid: Some(public.fingerprint()),
        key: public.clone(),
    });
    let keys: Vec<serde_json::Value> = ring.keys().iter().map(NamedKey::to_jwk).collect();
    let set = format!("{}\n", serde_json::json!({ "keys": keys }));
    if let Err(error) = fs::write(path, set) {
        tracing::warn!(path = %path.display(), %error, "cannot write the audit public key file");
    }
}

#[async_trait]
impl CheckpointSigner for LocalSigningKey {
    async fn sign(&self, message: &[u8]) -> Result<Signature, PortError> {
        Ok(Signature {
            algorithm: SignatureAlgorithm::EdDSA,
            key_id: self.public.fingerprint(),
            bytes: self.pair.sign(message).as_ref().to_vec(),
        })
    }

    async fn public_key(&self) -> Result<PublicKey, PortError> {
        Ok(self.public.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_key_file_is_owner_only_and_signs_what_its_public_key_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("new").join(SIGNING_KEY_FILE_NAME);

        let key = LocalSigningKey::load_or_create(&path).expect("created");
        let again = LocalSigningKey::load_or_create(&path).expect("read back");

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(key.public(), again.public(), "the key is never replaced");
        let signature = key.sign(b"head").await.expect("signs");
        assert!(
            again
                .public()
                .verifies(signature.algorithm, b"head", &signature.bytes)
        );
        assert!(
            !again
                .public()
                .verifies(signature.algorithm, b"other", &signature.bytes)
        );
        let published = fs::read_to_string(file_beside(&path, PUBLIC_KEY_FILE_NAME)).expect("pub");
        assert_eq!(
            PublicKey::from_jwk(&published).ok().as_ref(),
            Some(key.public())
        );
    }

    #[test]
    fn a_key_that_cannot_be_read_is_a_clear_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SIGNING_KEY_FILE_NAME);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&path)
            .and_then(|mut f| f.write_all(b"not a key\n"))
            .expect("written");

        let error = LocalSigningKey::load_or_create(&path).expect_err("refused");

        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("not base64"), "{message}");
        assert_eq!(
            fs::read(&path).expect("kept"),
            b"not a key\n",
            "never replaced"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SIGNING_KEY_FILE_NAME);
        LocalSigningKey::load_or_create(&path).expect("created");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");

        let error = LocalSigningKey::read_file(&path).expect_err("refused");

        assert!(
            matches!(error, SigningKeyError::Exposed { mode: 0o644, .. }),
            "{error}"
        );
    }

    /// `count` checkpoints of one chain, each naming the one before.
    async fn signed_checkpoints(key: &LocalSigningKey, count: u64) -> Vec<SignedCheckpoint> {
        let mut signed = Vec::new();
        for position in 1..=count {
            let checkpoint = crate::ports::checkpoint::Checkpoint {
                writer: crate::ports::audit::ChainId::default_chain(),
                position,
                previous: position - 1,
                head: crate::ports::audit::EntryHash::GENESIS,
                at: chrono::Utc::now(),
            };
            let signature = key.sign(&checkpoint.signed_bytes()).await.expect("signs");
            signed.push(SignedCheckpoint {
                checkpoint,
                signature,
            });
        }
        signed
    }

    #[tokio::test]
    async fn checkpoints_appended_together_are_a_line_each_and_another_writers_cut_line_is_isolated()
     {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = LocalCheckpointFile::new(dir.path().join(CHECKPOINT_FILE_NAME));
        let key =
            LocalSigningKey::load_or_create(&dir.path().join(SIGNING_KEY_FILE_NAME)).expect("key");
        let signed = signed_checkpoints(&key, 5).await;

        file.append_all(&signed[..3]).await.expect("appended");
        // Another process's write cut short after this one's.
        let mut other = fs::OpenOptions::new()
            .append(true)
            .open(file.path())
            .expect("opened");
        other
            .write_all(b"{\"writer\":\"other\",\"po")
            .expect("written");
        file.append_all(&signed[3..]).await.expect("appended");
        let read = file.read_all().await.expect("read");

        let contents: Vec<_> = read.iter().map(|found| found.content.clone()).collect();
        let mut expected: Vec<Result<SignedCheckpoint, String>> =
            signed[..3].iter().cloned().map(Ok).collect();
        expected.push(Err("line is truncated".to_owned()));
        expected.extend(signed[3..].iter().cloned().map(Ok));
        assert_eq!(contents, expected);
        assert_eq!(
            read[3].location,
            format!("{} line 4", file.path().display())
        );
    }

    #[tokio::test]
    async fn a_truncated_last_line_is_reported_and_the_next_append_starts_a_fresh_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = LocalCheckpointFile::new(dir.path().join(CHECKPOINT_FILE_NAME));
        fs::write(file.path(), b"{\"writer\":\"chain\",\"posi").expect("written");
        let key =
            LocalSigningKey::load_or_create(&dir.path().join(SIGNING_KEY_FILE_NAME)).expect("key");
        let checkpoint = crate::ports::checkpoint::Checkpoint {
            writer: crate::ports::audit::ChainId::default_chain(),
            position: 1,
            previous: 0,
            head: crate::ports::audit::EntryHash::GENESIS,
            at: chrono::Utc::now(),
        };
        let signature = key.sign(&checkpoint.signed_bytes()).await.expect("signs");
        let signed = SignedCheckpoint {
            checkpoint,
            signature,
        };

        file.append(&signed).await.expect("appended");
        let read = file.read_all().await.expect("read");

        assert_eq!(read.len(), 2);
        assert_eq!(
            read[0].location,
            format!("{} line 1", file.path().display())
        );
        assert_eq!(read[0].content, Err("line is truncated".to_owned()));
        assert_eq!(read[1].content, Ok(signed));
    }
}
