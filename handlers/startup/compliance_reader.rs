//! What `keyturn compliance` reads: the inventory (as `keyturn inventory` reads it) and the
//! audit log with its verification (as `keyturn audit verify` reads it). The inventory is
//! required; the audit log is read when it can be, and otherwise the audit rules are
//! reported as not evaluated, with the reason, rather than failing the whole evaluation.

use std::sync::Arc;

use super::StartupError;
use super::anchor::{Verification, verification};
use super::audit_reader::StoreLocation;
use super::inventory_reader::inventory_reader;
use crate::config::{AuditCommandSettings, Environment};
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
