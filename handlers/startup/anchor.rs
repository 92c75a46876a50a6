//! Where the audit log is anchored, as the settings choose: beside the SQLite store in
//! local mode (a checkpoint file and an Ed25519 key file), in Azure a Blob container
//! under a retention policy and a Key Vault key that signs; and what `keyturn audit
//! verify` reads to check a log: its store, its checkpoints and the public key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use azure_core::credentials::TokenCredential;

use super::StartupError;
use crate::adapters::azure::anchor::BlobCheckpointStore;
use crate::adapters::azure::client::blob::{BlobAuth, BlobClient, ContainerName};
use crate::adapters::azure::client::table::account_key_of;
use crate::adapters::azure::signer::{KeyUrl, KeyVaultSigner, SignerOptions};
use crate::adapters::local::anchor::{
    CHECKPOINT_FILE_NAME, LocalCheckpoints, LocalSigningKey, PUBLIC_KEY_FILE_NAME,
    SIGNING_KEY_FILE_NAME, file_beside,
};
use crate::adapters::local::audit::LocalAuditStore;
use crate::adapters::local::store::LocalStore;
use crate::audit::{Anchor, AuditError, LogReport, verify_log};
use crate::config::{AuditSettings, CheckpointSettings, TableAccess};
use crate::domain::file::{CappedReadError, read_capped_text};
use crate::ports::audit::AuditStore;
use crate::ports::checkpoint::{
    CheckpointStore, KeyRing, NamedKey, VerifyingKeys, parse_public_keys,
};

/// A JSON Web Key of an EC P-256 key is about 200 bytes; Key Vault's answer wrapping it
/// (`az keyvault key show`) under 1 KiB. 16 KiB takes any of them, or a set of a few
/// dozen key versions, with room.
const MAX_PUBLIC_KEY_FILE_LEN: u64 = 16 * 1024;

/// The anchor the local store's writer uses: the store's checkpoint table and the
/// checkpoint file beside it (brought level with the table first, see
/// [`LocalCheckpoints`]), and the signing key (created owner-only on first use) beside
/// it. `store` is the audit store's own, so checkpoints share its connection.
pub(crate) async fn local_anchor(store: &LocalStore) -> Result<Anchor, StartupError> {
    let store_path = store.path();
    let key_path = file_beside(store_path, SIGNING_KEY_FILE_NAME);
    let key = LocalSigningKey::load_or_create(&key_path)
        .map_err(|e| StartupError::Audit(e.to_string()))?;
    let file = file_beside(store_path, CHECKPOINT_FILE_NAME);
    let checkpoints = LocalCheckpoints::open_for_writing(store.clone(), &file)
        .await
        .map_err(|e| {
            StartupError::Audit(format!(
                "audit checkpoints in {} and {}: {e}",
                store_path.display(),
                file.display()
            ))
        })?;
    Ok(Anchor {
        checkpoints: Arc::new(checkpoints),
        signer: Arc::new(key),
    })
}

/// The checkpoint container a table store's chains are anchored in. The container is
/// reached like the table: with keyturn's identity, or on Azurite with the connection
/// string's account key.
pub(crate) fn blob_checkpoints(
    settings: &CheckpointSettings,
    access: &TableAccess,
    credential: impl FnOnce() -> Result<Arc<dyn TokenCredential>, StartupError>,
) -> Result<BlobCheckpointStore, StartupError> {
    let named = |problem: String| {
        StartupError::Audit(format!(
            "audit checkpoint container {} at {}: {problem}",
            settings.container, settings.endpoint
        ))
    };
    let auth = match access {
        TableAccess::Identity { .. } => BlobAuth::Token(credential()?),
        TableAccess::ConnectionString { connection_string } => {
            let (account, key) =
                account_key_of(connection_string).map_err(|e| named(e.to_string()))?;
            BlobAuth::SharedKey { account, key }
        }
    };
    let container = ContainerName::parse(&settings.container).map_err(|e| named(e.context))?;
    let client =
        BlobClient::new(settings.endpoint.clone(), auth, None).map_err(|e| named(e.context))?;
    Ok(BlobCheckpointStore::new(client, container))
}

/// The Key Vault key that signs a table store's checkpoints.
pub(crate) fn key_vault_signer(
    settings: &CheckpointSettings,
    credential: Arc<dyn TokenCredential>,
    options: SignerOptions,
) -> Result<KeyVaultSigner, StartupError> {
    let key = KeyUrl::parse(settings.signing_key.as_str())
        .map_err(|problem| StartupError::Audit(format!("KEYTURN_AUDIT_SIGNING_KEY: {problem}")))?;
    KeyVaultSigner::new(key, credential, options).map_err(|e| StartupError::Audit(e.context))
}

/// The anchor a table store's writer uses, as `settings` name it.
pub(crate) fn azure_anchor(
    settings: &CheckpointSettings,
    access: &TableAccess,
    credential: Arc<dyn TokenCredential>,
    options: SignerOptions,
) -> Result<Anchor, StartupError> {
    let checkpoints = blob_checkpoints(settings, access, || Ok(credential.clone()))?;
    let signer = key_vault_signer(settings, credential, options)?;
    Ok(Anchor {
        checkpoints: Arc::new(checkpoints),
        signer: Arc::new(signer),
    })
}

/// What `keyturn audit verify` checks: the store, its checkpoints and the public keys.
#[derive(Debug)]
pub struct Verification {
    pub(crate) store: Arc<dyn AuditStore>,
    pub(crate) checkpoints: Option<Arc<dyn CheckpointStore>>,
    pub(crate) keys: Option<Arc<dyn VerifyingKeys>>,
}

impl Verification {
    pub async fn run(&self) -> Result<LogReport, AuditError> {
        verify_log(
            self.store.as_ref(),
            self.checkpoints.as_deref(),
            self.keys.as_deref(),
        )
        .await
    }
}

/// The verification of the log `settings` name. `public_keys` are key files (each a
/// JSON Web Key, a JSON Web Key Set or SPKI PEM); each checkpoint is checked with the
/// key its key id names. Without any, the local key beside the store and the keys it
/// replaced give the public halves, and in Azure each key version is read from Key
/// Vault. A path that holds no store is an error: verifying it would create an empty
/// store and call it valid.
pub async fn verification<P: AsRef<Path>>(
    settings: &crate::config::AuditCommandSettings,
    public_keys: impl IntoIterator<Item = P>,
) -> Result<Verification, StartupError> {
    let given = read_public_keys(public_keys)?;
    match &settings.audit {
        AuditSettings::Sqlite { path } => {
            if !path.is_file() {
                return Err(StartupError::Audit(format!(
                    "no audit store at {} (is --data-dir or KEYTURN_DATA_DIR right?)",
                    path.display()
                )));
            }
            let local = LocalStore::open(path).map_err(|e| StartupError::Audit(e.to_string()))?;
            let store = Arc::new(LocalAuditStore::new(local.clone()));
            let keys = match given {
                Some(given) => Some(given),
                None => local_public_keys(path)?,
            };
            Ok(Verification {
                store,
                checkpoints: Some(Arc::new(LocalCheckpoints::reader(
                    local,
                    file_beside(path, CHECKPOINT_FILE_NAME),
                ))),
                keys: keys.map(|ring| Arc::new(ring) as Arc<dyn VerifyingKeys>),
            })
        }
        AuditSettings::Table { .. } => {
            // The operator reads with their own sign-in (`az login`), not keyturn's
            // identity: reading needs only read roles on the table, the container and
            // the key.
            let operator = || -> Result<Arc<dyn TokenCredential>, StartupError> {
                let cli = azure_identity::AzureCliCredential::new(None).map_err(|e| {
                    StartupError::Audit(format!("cannot use the Azure CLI sign-in: {e}"))
                })?;
                Ok(cli)
            };
            let signer = SignerOptions {
                skip_challenge_resource_check: settings.any_vault_host,
                ..SignerOptions::default()
            };
            super::azure_verification(settings, given, operator, signer).await
        }
    }
}

/// [`verification`] of a table store with `operator`'s credential and `signer` options
/// in place of the Azure CLI sign-in and keyturn's defaults (tests reach stand-ins so).
pub async fn verification_with<P: AsRef<Path>>(
    settings: &crate::config::AuditCommandSettings,
    public_keys: impl IntoIterator<Item = P>,
    operator: Arc<dyn TokenCredential>,
    signer: SignerOptions,
) -> Result<Verification, StartupError> {
    let given = read_public_keys(public_keys)?;
    super::azure_verification(settings, given, || Ok(operator), signer).await
}

/// The local key's public half and those of the keys it replaced: the signing key
/// beside the store and the public key file beside it (which keeps every key the
/// directory signed with); `None` when neither exists (a store never anchored).
fn local_public_keys(store_path: &Path) -> Result<Option<KeyRing>, StartupError> {
    let mut ring = KeyRing::default();
    let key_path = file_beside(store_path, SIGNING_KEY_FILE_NAME);
    if key_path.exists() {
        let key = LocalSigningKey::read_file(&key_path)
            .map_err(|e| StartupError::Audit(e.to_string()))?;
        ring.add(NamedKey {
            kid: Some(key.public().fingerprint()),
            key: key.public().clone(),
        });
    }
    let public_path = file_beside(store_path, PUBLIC_KEY_FILE_NAME);
    if public_path.exists() {
        for key in read_public_key_file(&public_path)? {
            ring.add(key);
        }
    }
    Ok((!ring.keys().is_empty()).then_some(ring))
}

/// The keys of every file in `paths`; `None` when no file is given.
fn read_public_keys<P: AsRef<Path>>(
    paths: impl IntoIterator<Item = P>,
) -> Result<Option<KeyRing>, StartupError> {
    let mut ring: Option<KeyRing> = None;
    for path in paths {
        for key in read_public_key_file(path.as_ref())? {
            ring.get_or_insert_with(KeyRing::default).add(key);
        }
    }
    Ok(ring)
}

/// Reads a public key file (a JSON Web Key, as `az keyvault key show` prints it or
/// bare; a JSON Web Key Set; or SPKI PEM), naming the file in any error.
pub fn read_public_key_file(path: &Path) -> Result<Vec<NamedKey>, StartupError> {
    let named = |problem: String| {
        StartupError::Audit(format!("public key file {}: {problem}", path.display()))
    };
    let text = read_capped_text(path, MAX_PUBLIC_KEY_FILE_LEN).map_err(|e| match e {
        CappedReadError::TooLarge { cap } => named(format!("larger than {cap} bytes")),
        CappedReadError::Io(source) => named(source.to_string()),
    })?;
    parse_public_keys(&text).map_err(|e| named(e.to_string()))
}

/// The public key file an auditor is handed, beside the store at `store_path`.
pub fn public_key_file(store_path: &Path) -> PathBuf {
    file_beside(store_path, PUBLIC_KEY_FILE_NAME)
}
