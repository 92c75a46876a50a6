//! What `keyturn compliance` reads: the inventory (as `keyturn inventory` reads it) and the
//! audit log with its verification (as `keyturn audit verify` reads it). The inventory is
//! required; the audit log is read when it can be, and otherwise the audit rules are
//! reported as not evaluated, with the reason, rather than failing the whole evaluation.
//! And the exceptions register it applies, found as the evidence export finds it.

use std::path::Path;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;

use super::StartupError;
use super::anchor::{Verification, verification};
use super::audit_reader::StoreLocation;
use super::evidence::azure_register;
use super::inventory_reader::inventory_reader;
use crate::compliance::{Catalogue, REGISTER_FILE_NAME, Register};
use crate::config::{AuditCommandSettings, AuditSettings, EXCEPTIONS_BLOB_SETTING, Environment};
use crate::ports::inventory::InventoryStore;

/// The stores `keyturn compliance` evaluates.
#[derive(Debug)]
pub struct ComplianceReaders {
    pub inventory: Arc<dyn InventoryStore>,
    /// The audit log's verification (its store and checkpoints), or why it cannot be read.
    pub audit: Result<Verification, String>,
}

impl ComplianceReaders {
    /// The audit store the verification reads.
    pub fn audit_store(&self) -> Option<&dyn crate::ports::audit::AuditStore> {
        self.audit.as_ref().ok().map(|v| v.store.as_ref())
    }
}

/// Opens the inventory at `location` (an error when it holds none) and, beside it, the
/// audit log: the local store's in the same data directory, or the table the audit
/// settings name.
pub async fn compliance_readers(
    location: &StoreLocation,
    env: &Environment,
) -> Result<ComplianceReaders, StartupError> {
    let inventory = inventory_reader(location, env)?;
    let settings = if location.reads_table(env) {
        AuditCommandSettings::from_env(env).map_err(|e| e.to_string())
    } else {
        Ok(AuditCommandSettings::local(&location.local_data_dir(env)))
    };
    let audit = match settings {
        Ok(settings) => verification(&settings, std::iter::empty::<&std::path::Path>())
            .await
            .map_err(|e| e.to_string()),
        Err(problem) => Err(problem),
    };
    Ok(ComplianceReaders { inventory, audit })
}

/// The exceptions register `keyturn compliance` applies: the file given
/// (`--exceptions`); else, reading a table with `KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB` set,
/// that blob in the checkpoints' Blob service, read as `keyturn evidence export` and the
/// `EvidenceExport` timer read it (with the operator's Azure CLI sign-in, or the
/// connection string's account key); else the data directory's
/// `compliance-exceptions.json` when it exists; else none. A register given or configured
/// that cannot be read or is malformed is an error naming it, never an empty register.
pub async fn compliance_register(
    location: &StoreLocation,
    given: Option<&Path>,
    env: &Environment,
    catalogue: &Catalogue,
) -> Result<Register, StartupError> {
    if let Some(path) = given {
        return Ok(Register::load(path, catalogue)?);
    }
    if location.reads_table(env) && env.value(EXCEPTIONS_BLOB_SETTING).is_some() {
        let settings = AuditCommandSettings::from_env(env).map_err(|e| {
            StartupError::Audit(format!(
                "{EXCEPTIONS_BLOB_SETTING} names the exceptions register, which is read with the audit settings: {e}"
            ))
        })?;
        let AuditSettings::Table {
            access,
            checkpoints: Some(checkpoints),
            ..
        } = &settings.audit
        else {
            return Err(StartupError::Audit(format!(
                "{EXCEPTIONS_BLOB_SETTING} names the exceptions register, which is read from the audit checkpoints' Blob service: set KEYTURN_AUDIT_STORE=table with the checkpoint settings, or pass --exceptions FILE"
            )));
        };
        let operator = || -> Result<Arc<dyn TokenCredential>, StartupError> {
            let cli = azure_identity::AzureCliCredential::new(None).map_err(|e| {
                StartupError::Audit(format!("cannot use the Azure CLI sign-in: {e}"))
            })?;
            Ok(cli)
        };
        return azure_register(checkpoints, access, None, operator, catalogue).await;
    }
    let path = location.local_data_dir(env).join(REGISTER_FILE_NAME);
    if path.is_file() {
        return Ok(Register::load(&path, catalogue)?);
    }
    Ok(Register::empty())
}
