//! Start-up: the one place that chooses adapters (Azure or local) from settings and
//! builds the services the functions share.

use std::sync::Arc;

use crate::adapters::azure::audit::TableAuditStore;
use crate::adapters::azure::identity::{CredentialError, credential};
use crate::adapters::azure::table::{TableAuth, TableClient, TableName};
use crate::adapters::local::audit::LocalAuditStore;
use crate::adapters::local::store::LocalStore;
use crate::audit::AuditLog;
use crate::config::{AuditSettings, Settings, TableAccess};
use crate::domain::clock::Clock;
use crate::functions::Services;
use crate::ports::audit::AuditStore;
use crate::rotation::tags::PolicyDefaults;
use crate::rotation::{Engine, Ports};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("audit store: {0}")]
    Audit(String),
    #[error("rotation: {0}")]
    Rotation(String),
}

/// The audit log the settings choose. Opening it makes no network call.
pub async fn audit_log(settings: &Settings) -> Result<AuditLog, StartupError> {
    Ok(AuditLog::new(audit_store(settings, false).await?))
}

/// The audit store the settings choose. With `create`, a Table store makes sure its table
/// exists; failing that is logged, not fatal, because the deployment normally creates it
/// and appends report a missing table on their own.
async fn audit_store(
    settings: &Settings,
    create: bool,
) -> Result<Arc<dyn AuditStore>, StartupError> {
    let store: Arc<dyn AuditStore> = match &settings.audit {
        AuditSettings::Sqlite { path } => {
            let store = LocalStore::open(path).map_err(|e| StartupError::Audit(e.to_string()))?;
            Arc::new(LocalAuditStore::new(store))
        }
        AuditSettings::Table { table, access } => {
            let client = match access {
                TableAccess::Identity { endpoint } => TableClient::new(
                    endpoint.clone(),
                    TableAuth::Token(credential(&settings.credential)?),
                    None,
                )
                .map_err(|e| StartupError::Audit(e.to_string()))?,
                TableAccess::ConnectionString { connection_string } => {
                    TableClient::from_connection_string(connection_string, None)
                        .map_err(|e| StartupError::Audit(e.to_string()))?
                }
            };
            let table = TableName::parse(table).map_err(|e| StartupError::Audit(e.to_string()))?;
            let store = TableAuditStore::new(client, table);
            if create && let Err(error) = store.ensure_table().await {
                tracing::warn!(%error, "cannot make sure the audit table exists");
            }
            Arc::new(store)
        }
    };
    Ok(store)
}

/// The rotation engine over `ports`, with the settings' vaults and policy defaults.
pub fn rotation_engine(
    settings: &Settings,
    ports: Ports,
    clock: Clock,
) -> Result<Engine, StartupError> {
    let d = settings.rotation_defaults;
    let defaults = PolicyDefaults::new(d.validity_days, d.rotate_before_days, d.overlap_days)
        .map_err(|e| StartupError::Rotation(e.to_string()))?;
    Ok(Engine::new(ports, settings.vaults.clone(), defaults, clock))
}

/// Everything the functions share, from settings.
pub async fn services(settings: &Settings) -> Result<Services, StartupError> {
    let clock = Clock::system();
    // Rotation adapters are chosen here: Azure (Key Vault, Graph, the token endpoint of
    // AZURE_TENANT_ID, Service Bus) or local (embedded vault, directory, queue), built into
    // `Ports` and passed to `rotation_engine(settings, ports, clock.clone())`. Until they
    // are, the rotation functions fail retryably ("not configured") and drop no work.
    let rotation: Option<Arc<Engine>> = None;
    Ok(Services {
        audit: AuditLog::new(audit_store(settings, true).await?),
        clock,
        rotation,
    })
}
