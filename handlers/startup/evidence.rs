//! What `keyturn evidence export` reads and signs with, as the settings choose: the
//! local store of `keyturn dev` (its audit log, checkpoint file, signing key and
//! inventory), or in Azure the audit and inventory tables, the checkpoint container and
//! the Key Vault key, all reached with the operator's Azure CLI sign-in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use azure_core::credentials::TokenCredential;

use super::StartupError;
use super::anchor::{self, Verification};
use crate::adapters::azure::alert_ledger::TableAlertLedger;
use crate::adapters::azure::client::table::TableName;
use crate::adapters::azure::signer::SignerOptions;
use crate::adapters::local::alert_ledger::LocalAlertLedger;
use crate::adapters::local::anchor::{LocalSigningKey, SIGNING_KEY_FILE_NAME, file_beside};
use crate::adapters::local::inventory::LocalInventory;
use crate::adapters::local::store::LocalStore;
use crate::compliance::{Catalogue, REGISTER_FILE_NAME, Register, Thresholds};
use crate::config::{AuditCommandSettings, AuditSettings, Environment};
use crate::evidence::{ComplianceInputs, Sources};
use crate::ports::alert_ledger::AlertLedger;
use crate::ports::audit::AuditStore;
use crate::ports::checkpoint::{CheckpointSigner, CheckpointStore, VerifyingKeys};
use crate::ports::inventory::InventoryStore;

/// Everything an export reads, opened.
#[derive(Debug)]
pub struct EvidenceSources {
    pub audit: Arc<dyn AuditStore>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub keys: Arc<dyn VerifyingKeys>,
    pub signer: Arc<dyn CheckpointSigner>,
    pub inventory: Arc<dyn InventoryStore>,
    /// The alert ledger beside the inventory (the local store's, or the alert table).
    pub alerts: Arc<dyn AlertLedger>,
    pub description: String,
    /// The rule catalogue, default thresholds and the exceptions register, as `keyturn
    /// compliance` reads them without options.
    pub catalogue: Catalogue,
    pub thresholds: Thresholds,
    pub register: Register,
}

impl EvidenceSources {
    pub fn sources(&self) -> Sources<'_> {
        Sources {
            audit: self.audit.as_ref(),
            checkpoints: self.checkpoints.as_ref(),
            keys: self.keys.as_ref(),
            signer: self.signer.as_ref(),
            inventory: self.inventory.as_ref(),
            description: &self.description,
            alerts: Some(self.alerts.as_ref()),
            compliance: Some(ComplianceInputs {
                catalogue: &self.catalogue,
                thresholds: &self.thresholds,
                register: &self.register,
            }),
        }
    }
}

/// The exceptions register in the local store's data directory, when there is one (as
/// `keyturn compliance` reads it); a malformed one is refused, naming it.
fn local_register(store: &Path, catalogue: &Catalogue) -> Result<Register, StartupError> {
    let Some(path) = store
        .parent()
        .map(|dir| dir.join(REGISTER_FILE_NAME))
        .filter(|path| path.is_file())
    else {
        return Ok(Register::empty());
    };
    Register::load(&path, catalogue).map_err(|e| StartupError::Local {
        path: path.display().to_string(),
        problem: e.to_string(),
    })
}

/// The sources `settings` name: the local store's, or Azure's with the operator's Azure
/// CLI sign-in. `public_keys` (key files, as `keyturn audit verify --public-key` takes
/// them) replace the keys the checkpoints are otherwise checked with.
pub async fn evidence_sources(
    settings: &AuditCommandSettings,
    public_keys: &[PathBuf],
    env: &Environment,
) -> Result<EvidenceSources, StartupError> {
    match &settings.audit {
        AuditSettings::Sqlite { path } => local_sources(settings, path, public_keys).await,
        AuditSettings::Table { .. } => {
            let operator = || -> Result<Arc<dyn TokenCredential>, StartupError> {
                let cli = azure_identity::AzureCliCredential::new(None).map_err(|e| {
                    StartupError::Audit(format!("cannot use the Azure CLI sign-in: {e}"))
                })?;
                Ok(cli)
            };
            azure_sources(
                settings,
                public_keys,
                env,
                operator()?,
                SignerOptions::default(),
            )
            .await
        }
    }
}

async fn local_sources(
    settings: &AuditCommandSettings,
    path: &Path,
    public_keys: &[PathBuf],
) -> Result<EvidenceSources, StartupError> {
    // Refuses a path that holds no store, naming it.
    let verification = anchor::verification(settings, public_keys).await?;
    let key_path = file_beside(path, SIGNING_KEY_FILE_NAME);
    if !key_path.is_file() {
        return Err(StartupError::Audit(format!(
            "no audit signing key at {}: the package's manifest is signed with the key that signs the audit checkpoints, which `keyturn dev` creates on its first audit entry",
            key_path.display()
        )));
    }
    let signer =
        LocalSigningKey::read_file(&key_path).map_err(|e| StartupError::Audit(e.to_string()))?;
    let store = LocalStore::open(path).map_err(|e| StartupError::Inventory(e.to_string()))?;
    let Verification {
        store: audit,
        checkpoints,
        keys,
    } = verification;
    let checkpoints = checkpoints
        .ok_or_else(|| StartupError::Audit("the local store has no checkpoint file".to_owned()))?;
    let keys = keys.ok_or_else(|| no_keys(path))?;
    let catalogue = Catalogue::builtin();
    let register = local_register(path, &catalogue)?;
    Ok(EvidenceSources {
        audit,
        checkpoints,
        keys,
        signer: Arc::new(signer),
        inventory: Arc::new(LocalInventory::new(store.clone())),
        alerts: Arc::new(LocalAlertLedger::new(store)),
        description: format!("local store {}", path.display()),
        catalogue,
        thresholds: Thresholds::default(),
        register,
    })
}

/// The Azure sources with `operator`'s credential and `signer` options (tests reach
/// stand-ins so).
pub async fn azure_sources(
    settings: &AuditCommandSettings,
    public_keys: &[PathBuf],
    env: &Environment,
    operator: Arc<dyn TokenCredential>,
    signer: SignerOptions,
) -> Result<EvidenceSources, StartupError> {
    let AuditSettings::Table {
        table,
        checkpoints: Some(checkpoint_settings),
        ..
    } = &settings.audit
    else {
        return Err(StartupError::Audit(
            "an evidence package needs the audit checkpoint settings (KEYTURN_AUDIT_CHECKPOINT_ENDPOINT and KEYTURN_AUDIT_SIGNING_KEY): its manifest is signed with the checkpoint key".to_owned(),
        ));
    };
    let verification =
        anchor::verification_with(settings, public_keys, operator.clone(), signer.clone()).await?;
    let key_vault_signer = anchor::key_vault_signer(checkpoint_settings, operator, signer)?;
    let inventory = super::inventory_reader(&super::InventoryLocation::default(), env)?;
    // The alert ledger is in the audit log's account (the deployment puts it there), read
    // with the operator's sign-in as the inventory is.
    let alert_table = env
        .value("KEYTURN_ALERT_TABLE")
        .unwrap_or(crate::config::DEFAULT_ALERT_TABLE);
    let alert_table = TableName::parse(alert_table)
        .map_err(|e| StartupError::Alerts(format!("KEYTURN_ALERT_TABLE: {e}")))?;
    let alerts = super::audit_reader::operator_table_client(None, env, "alert ledger")
        .map_err(StartupError::Alerts)?;
    let Verification {
        store: audit,
        checkpoints,
        keys,
    } = verification;
    let checkpoints = checkpoints.ok_or_else(|| {
        StartupError::Audit("the audit table's checkpoint container is not set".to_owned())
    })?;
    let keys = keys.ok_or_else(|| {
        StartupError::Audit("no public key checks the audit checkpoints".to_owned())
    })?;
    Ok(EvidenceSources {
        audit,
        checkpoints,
        keys,
        signer: Arc::new(key_vault_signer),
        inventory,
        alerts: Arc::new(TableAlertLedger::new(alerts, alert_table)),
        description: format!(
            "audit table {} and checkpoint container {} ({}), signing key {}",
            table.as_str(),
            checkpoint_settings.container,
            checkpoint_settings.endpoint,
            checkpoint_settings.signing_key
        ),
        catalogue: Catalogue::builtin(),
        thresholds: Thresholds::default(),
        register: Register::empty(),
    })
}

fn no_keys(path: &Path) -> StartupError {
    StartupError::Audit(format!(
        "no public key checks the audit checkpoints of {} (no signing key or public key file beside it; pass --public-key FILE)",
        path.display()
    ))
}
