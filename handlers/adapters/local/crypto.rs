//! The local vault's encryption at rest: the 256-bit key (from a setting or from an
//! owner-only key file beside the store), AES-256-GCM sealing with a fresh random nonce
//! per record, and the associated data that binds a ciphertext to its row.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use rand::rngs::OsRng;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::domain::file::{OwnerOnlyReadError, publish_owner_only, read_owner_only_text};

/// AES-256 takes a 32-byte key (FIPS 197).
pub(crate) const KEY_LEN: usize = 32;

/// GCM's recommended 96-bit nonce (NIST SP 800-38D, section 8.2). With random nonces
/// the same section bounds one key to 2^32 encryptions; a local vault writes a few
/// records a day, and the store also refuses a repeated nonce outright.
pub(crate) const NONCE_BYTES: usize = NONCE_LEN;

/// The key file's name, beside the SQLite file.
pub const KEY_FILE_NAME: &str = "local-vault.key";

/// The message of a key that does not open the store's records. Worded for an operator:
/// it is what `keyturn vault list` prints when the setting or key file is wrong.
pub const WRONG_KEY_MESSAGE: &str = "the local vault key does not decrypt this store";

/// A fixed-length key file cannot legitimately be larger than this: base64 of 32 bytes
/// and a newline. Reading stops there so a wrong path cannot fill memory.
const MAX_KEY_FILE_LEN: u64 = 128;

/// Why the vault key could not be loaded or a record not be sealed or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("the local vault key must be base64 of {KEY_LEN} bytes ({source_name})")]
    KeyEncoding { source_name: String },
    #[error("the local vault key must be {KEY_LEN} bytes, found {found} ({source_name})")]
    KeyLength { found: usize, source_name: String },
    #[error("cannot read or create the local vault key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the local vault key file {path} is readable by other users (mode {mode:o}); make it owner-only (chmod 600)"
    )]
    KeyFileExposed { path: PathBuf, mode: u32 },
    #[error("{WRONG_KEY_MESSAGE}")]
    WrongKey,
    #[error("the operating system's random generator failed")]
    Random,
}

/// The vault key. Zeroed on drop; `Debug` prints nothing of it.
pub struct VaultKey {
    key: LessSafeKey,
    /// The raw bytes, kept only so a generated key can be written to its file once.
    raw: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VaultKey([redacted])")
    }
}

impl VaultKey {
    /// A key from its base64 text (the `KEYTURN_LOCAL_VAULT_KEY` setting). `source_name`
    /// names where the text came from, for the error message.
    pub fn from_base64(text: &str, source_name: &str) -> Result<Self, CryptoError> {
        let decoded =
            Zeroizing::new(
                STANDARD
                    .decode(text.trim())
                    .map_err(|_| CryptoError::KeyEncoding {
                        source_name: source_name.to_owned(),
                    })?,
            );
        let raw: [u8; KEY_LEN] =
            decoded
                .as_slice()
                .try_into()
                .map_err(|_| CryptoError::KeyLength {
                    found: decoded.len(),
                    source_name: source_name.to_owned(),
                })?;
        Ok(Self::from_bytes(Zeroizing::new(raw)))
    }

    /// A fresh key from the operating system's CSPRNG.
    pub(crate) fn generate() -> Result<Self, CryptoError> {
        let mut raw = Zeroizing::new([0u8; KEY_LEN]);
        OsRng
            .try_fill_bytes(raw.as_mut_slice())
            .map_err(|_| CryptoError::Random)?;
        Ok(Self::from_bytes(raw))
    }

    fn from_bytes(raw: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, raw.as_slice())
            .expect("invariant: AES-256-GCM accepts any 32-byte key");
        Self {
            key: LessSafeKey::new(unbound),
            raw,
        }
    }

    /// The key file that belongs to the store at `store_path`.
    pub(crate) fn file_beside(store_path: &Path) -> PathBuf {
        store_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(KEY_FILE_NAME)
    }

    /// Reads the key file at `path`, creating it with a new key when absent. A created
    /// file is owner-only (0600) and is published atomically without ever replacing an
    /// existing file: losing the old key would lose every value it sealed. An existing
    /// file that other users can read is refused.
    pub(crate) fn load_or_create(path: &Path) -> Result<Self, CryptoError> {
        let io_error = |source| CryptoError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        match fs::metadata(path) {
            Ok(_) => return Self::read_file(path),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(error)),
        }
        let key = Self::generate()?;
        let text = Zeroizing::new(format!("{}\n", STANDARD.encode(key.raw.as_slice())));
        if publish_owner_only(path, text.as_bytes()).map_err(io_error)? {
            Ok(key)
        } else {
            Self::read_file(path)
        }
    }

    fn read_file(path: &Path) -> Result<Self, CryptoError> {
        let io_error = |source| CryptoError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        // Bounded whatever the file is: metadata says nothing of a FIFO or a device.
        let text = read_owner_only_text(path, MAX_KEY_FILE_LEN).map_err(|error| match error {
            OwnerOnlyReadError::Exposed { mode } => CryptoError::KeyFileExposed {
                path: path.to_path_buf(),
                mode,
            },
            OwnerOnlyReadError::TooLarge { cap } => CryptoError::KeyLength {
                found: usize::try_from(cap + 1).unwrap_or(usize::MAX),
                source_name: path.display().to_string(),
            },
            OwnerOnlyReadError::Io(source) => io_error(source),
        })?;
        Self::from_base64(&text, &path.display().to_string())
    }

    /// Seals `plaintext` under a fresh random nonce, binding `associated` (which the
    /// caller must present again to open it).
    pub(crate) fn seal(&self, associated: &[u8], plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        let mut nonce = [0u8; NONCE_BYTES];
        OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(|_| CryptoError::Random)?;
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated),
                &mut in_out,
            )
            .map_err(|_| CryptoError::Random)?;
        Ok(Sealed {
            nonce,
            ciphertext: in_out,
        })
    }

    /// Opens a sealed record. Any mismatch (another key, another row's associated data,
    /// an edited byte) is [`CryptoError::WrongKey`]: GCM cannot tell them apart, and
    /// nothing unauthenticated is ever returned.
    pub(crate) fn open(
        &self,
        associated: &[u8],
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| CryptoError::WrongKey)?;
        let mut in_out = Zeroizing::new(ciphertext.to_vec());
        let plaintext_len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated),
                in_out.as_mut_slice(),
            )
            .map_err(|_| CryptoError::WrongKey)?
            .len();
        in_out.truncate(plaintext_len);
        Ok(in_out)
    }
}

/// A sealed record: its nonce and its ciphertext with the GCM tag appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sealed {
    pub nonce: [u8; NONCE_BYTES],
    pub ciphertext: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_only_with_its_key_and_associated_data() {
        let key = VaultKey::generate().expect("key");
        let other = VaultKey::generate().expect("key");
        let sealed = key.seal(b"row-a", b"value").expect("seal");

        assert_eq!(
            key.open(b"row-a", &sealed.nonce, &sealed.ciphertext)
                .expect("open")
                .as_slice(),
            b"value"
        );
        assert!(matches!(
            key.open(b"row-b", &sealed.nonce, &sealed.ciphertext),
            Err(CryptoError::WrongKey)
        ));
        assert!(matches!(
            other.open(b"row-a", &sealed.nonce, &sealed.ciphertext),
            Err(CryptoError::WrongKey)
        ));
    }

    #[test]
    fn an_edited_ciphertext_is_refused() {
        let key = VaultKey::generate().expect("key");
        let mut sealed = key.seal(b"row", b"value").expect("seal");
        sealed.ciphertext[0] ^= 1;
        assert!(key.open(b"row", &sealed.nonce, &sealed.ciphertext).is_err());
    }

    #[test]
    fn keys_that_are_not_32_bytes_of_base64_are_refused() {
        assert!(matches!(
            VaultKey::from_base64("not base64!", "test"),
            Err(CryptoError::KeyEncoding { .. })
        ));
        assert!(matches!(
            VaultKey::from_base64(&STANDARD.encode([0u8; 16]), "test"),
            Err(CryptoError::KeyLength { found: 16, .. })
        ));
        assert!(VaultKey::from_base64(&STANDARD.encode([7u8; 32]), "test").is_ok());
    }

    #[test]
    fn the_key_file_is_created_owner_only_and_never_replaced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(KEY_FILE_NAME);

        let first = VaultKey::load_or_create(&path).expect("create");
        let before = fs::read(&path).expect("read");
        let second = VaultKey::load_or_create(&path).expect("load");

        assert_eq!(fs::read(&path).expect("read"), before);
        let sealed = first.seal(b"row", b"value").expect("seal");
        assert!(
            second
                .open(b"row", &sealed.nonce, &sealed.ciphertext)
                .is_ok()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let leftovers = fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_other_users_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(KEY_FILE_NAME);
        VaultKey::load_or_create(&path).expect("create");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");

        let error = VaultKey::load_or_create(&path).expect_err("exposed");

        assert!(matches!(
            error,
            CryptoError::KeyFileExposed { mode: 0o644, .. }
        ));
    }

    #[test]
    fn the_key_never_appears_in_debug_output() {
        let key = VaultKey::from_base64(&STANDARD.encode([0x41u8; 32]), "test").expect("key");
        let shown = format!("{key:?}");
        assert!(!shown.contains(&STANDARD.encode([0x41u8; 32])));
        assert!(shown.contains("redacted"));
    }
}
