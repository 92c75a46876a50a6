//! Where the audit log is anchored, as the settings choose: beside the SQLite store in
//! local mode (a checkpoint file and an Ed25519 key file), and what `keyturn audit
//! verify` reads to check a log: its store, its checkpoints and the public key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::StartupError;
use crate::adapters::local::anchor::{
    CHECKPOINT_FILE_NAME, LocalCheckpointFile, LocalSigningKey, PUBLIC_KEY_FILE_NAME,
    SIGNING_KEY_FILE_NAME, file_beside,
};
use crate::audit::{Anchor, AuditError, LogReport, verify_log};
use crate::config::AuditSettings;
use crate::domain::file::{CappedReadError, read_capped_text};
use crate::ports::audit::AuditStore;
use crate::ports::checkpoint::{CheckpointStore, PublicKey};

/// A JSON Web Key of an EC P-256 key is about 200 bytes; Key Vault's answer wrapping it
/// (`az keyvault key show`) under 1 KiB. 16 KiB takes any of them with room.
const MAX_PUBLIC_KEY_FILE_LEN: u64 = 16 * 1024;

/// The anchor the local store's writer uses: the checkpoint file and the signing key
/// (created owner-only on first use) beside the SQLite file at `store_path`.
pub(crate) fn local_anchor(store_path: &Path) -> Result<Anchor, StartupError> {
    let key_path = file_beside(store_path, SIGNING_KEY_FILE_NAME);
    let key = LocalSigningKey::load_or_create(&key_path)
        .map_err(|e| StartupError::Audit(e.to_string()))?;
    Ok(Anchor {
        checkpoints: Arc::new(LocalCheckpointFile::new(file_beside(
            store_path,
            CHECKPOINT_FILE_NAME,
        ))),
        signer: Arc::new(key),
    })
}

/// What `keyturn audit verify` checks: the store, its checkpoints and the public key.
#[derive(Debug)]
pub struct Verification {
    pub(crate) store: Arc<dyn AuditStore>,
    pub(crate) checkpoints: Option<Arc<dyn CheckpointStore>>,
    pub(crate) key: Option<PublicKey>,
}

impl Verification {
    pub async fn run(&self) -> Result<LogReport, AuditError> {
        verify_log(
            self.store.as_ref(),
            self.checkpoints.as_deref(),
            self.key.as_ref(),
        )
        .await
    }
}

/// The verification of the log `settings` name. `public_key` is a JSON Web Key file;
/// without one, the local key beside the store gives its public half. A path that
/// holds no store is an error: verifying it would create an empty store and call it
/// valid.
pub async fn verification(
    settings: &crate::config::AuditCommandSettings,
    public_key: Option<&Path>,
) -> Result<Verification, StartupError> {
    let key = public_key.map(read_public_key).transpose()?;
    match &settings.audit {
        AuditSettings::Sqlite { path } => {
            if !path.is_file() {
                return Err(StartupError::Audit(format!(
                    "no audit store at {} (is --data-dir or KEYTURN_DATA_DIR right?)",
                    path.display()
                )));
            }
            let store =
                super::audit_store(&settings.audit, &settings.credential, None, false).await?;
            let key = match key {
                Some(key) => Some(key),
                None => local_public_key(path)?,
            };
            Ok(Verification {
                store,
                checkpoints: Some(Arc::new(LocalCheckpointFile::new(file_beside(
                    path,
                    CHECKPOINT_FILE_NAME,
                )))),
                key,
            })
        }
        AuditSettings::Table { .. } => super::azure_verification(settings, key).await,
    }
}

/// The local key's public half: from the signing key beside the store, else from the
/// public key file beside it; `None` when neither exists (a store never anchored).
fn local_public_key(store_path: &Path) -> Result<Option<PublicKey>, StartupError> {
    let key_path = file_beside(store_path, SIGNING_KEY_FILE_NAME);
    if key_path.exists() {
        let key = LocalSigningKey::read_file(&key_path)
            .map_err(|e| StartupError::Audit(e.to_string()))?;
        return Ok(Some(key.public().clone()));
    }
    let public_path = file_beside(store_path, PUBLIC_KEY_FILE_NAME);
    if public_path.exists() {
        return read_public_key(&public_path).map(Some);
    }
    Ok(None)
}

/// Reads a public key file (a JSON Web Key), naming the file in any error.
pub(crate) fn read_public_key(path: &Path) -> Result<PublicKey, StartupError> {
    let named = |problem: String| {
        StartupError::Audit(format!("public key file {}: {problem}", path.display()))
    };
    let text = read_capped_text(path, MAX_PUBLIC_KEY_FILE_LEN).map_err(|e| match e {
        CappedReadError::TooLarge { cap } => named(format!("larger than {cap} bytes")),
        CappedReadError::Io(source) => named(source.to_string()),
    })?;
    PublicKey::from_jwk(&text).map_err(|e| named(e.to_string()))
}

/// The public key file an auditor is handed, beside the store at `store_path`.
pub fn public_key_file(store_path: &Path) -> PathBuf {
    file_beside(store_path, PUBLIC_KEY_FILE_NAME)
}
