//! The audit store `keyturn audit list` and `keyturn audit export` read, chosen from
//! the command line first and the audit settings second: a data directory's SQLite
//! store, or a table reached with the operator's Azure CLI sign-in. Opening makes no
//! network call and never creates a store: a path that holds none is an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use azure_identity::AzureCliCredential;

use crate::adapters::azure::audit::TableAuditStore;
use crate::adapters::azure::client::table::{TableAuth, TableClient};
use crate::adapters::local::audit::LocalAuditStore;
use crate::adapters::local::store::LocalStore;
use crate::config::{DEFAULT_AUDIT_TABLE, DEFAULT_DATA_DIR, Environment, STORE_FILE};
use crate::domain::resources::TableName;
use crate::domain::secret::SecretValue;
use crate::ports::audit::AuditStore;

use super::StartupError;

/// Where a reading command (`keyturn audit list`, `keyturn inventory`) reads, as given
/// on the command line; what is not given comes from the settings (`KEYTURN_AUDIT_STORE`,
/// `KEYTURN_DATA_DIR`, the store's table setting, `KEYTURN_TABLE_ENDPOINT`,
/// `KEYTURN_TABLE_CONNECTION_STRING`).
#[derive(Debug, Clone, Default)]
pub struct StoreLocation {
    pub data_dir: Option<PathBuf>,
    pub table: Option<String>,
    pub table_endpoint: Option<String>,
}

impl StoreLocation {
    /// Whether a table is read: chosen by `--table` or `--table-endpoint`, or by the
    /// settings naming the table store (`KEYTURN_AUDIT_STORE=table`); never when
    /// `--data-dir` is given.
    pub(crate) fn reads_table(&self, env: &Environment) -> bool {
        self.data_dir.is_none()
            && (self.table.is_some()
                || self.table_endpoint.is_some()
                || env.value("KEYTURN_AUDIT_STORE") == Some("table"))
    }

    /// The local store's data directory: `--data-dir`, else `KEYTURN_DATA_DIR`, else
    /// `.keyturn`, as `keyturn vault list`.
    pub(crate) fn local_data_dir(&self, env: &Environment) -> PathBuf {
        self.data_dir
            .clone()
            .or_else(|| env.value("KEYTURN_DATA_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }
}

/// Where `keyturn audit list` and `keyturn audit export` read.
pub type AuditLocation = StoreLocation;

/// The store to read. A table is chosen by `--table` or `--table-endpoint`, or by the
/// settings naming the table store (`KEYTURN_AUDIT_STORE=table`); otherwise the local
/// store in `--data-dir`, `KEYTURN_DATA_DIR` or `.keyturn`, as `keyturn vault list`.
pub fn audit_reader(
    location: &AuditLocation,
    env: &Environment,
) -> Result<Arc<dyn AuditStore>, StartupError> {
    if location.reads_table(env) {
        return table_reader(location, env);
    }
    local_reader(&location.local_data_dir(env))
}

fn local_reader(data_dir: &Path) -> Result<Arc<dyn AuditStore>, StartupError> {
    let path = data_dir.join(STORE_FILE);
    if !path.is_file() {
        return Err(StartupError::Audit(format!(
            "{} holds no keyturn store: pass the data directory of `keyturn dev` with --data-dir, or name a table with --table",
            data_dir.display()
        )));
    }
    let store = LocalStore::open(&path).map_err(|e| StartupError::Audit(e.to_string()))?;
    Ok(Arc::new(LocalAuditStore::new(store)))
}

fn table_reader(
    location: &AuditLocation,
    env: &Environment,
) -> Result<Arc<dyn AuditStore>, StartupError> {
    let name = location
        .table
        .as_deref()
        .or_else(|| env.value("KEYTURN_AUDIT_TABLE"))
        .unwrap_or(DEFAULT_AUDIT_TABLE);
    let table = TableName::parse(name)
        .map_err(|e| StartupError::Audit(format!("table name `{name}`: {e}")))?;
    let client = operator_table_client(location.table_endpoint.as_deref(), env, "audit")
        .map_err(StartupError::Audit)?;
    Ok(Arc::new(TableAuditStore::new(client, table)))
}

/// A Table client for an operator's command: the endpoint given (`--table-endpoint`) or
/// `KEYTURN_TABLE_ENDPOINT`, reached with the operator's Azure CLI sign-in; or, for
/// Azurite in tests and development, `KEYTURN_TABLE_CONNECTION_STRING`. `what` names the
/// table in errors (`audit`, `inventory`).
pub(super) fn operator_table_client(
    endpoint: Option<&str>,
    env: &Environment,
    what: &str,
) -> Result<TableClient, String> {
    let endpoint = endpoint.or_else(|| env.value("KEYTURN_TABLE_ENDPOINT"));
    match (endpoint, env.value("KEYTURN_TABLE_CONNECTION_STRING")) {
        (Some(endpoint), _) => {
            let url = url::Url::parse(endpoint)
                .ok()
                .filter(|url| url.scheme() == "https")
                .ok_or_else(|| {
                    format!(
                        "the table endpoint `{endpoint}` is not an https URL (https://ACCOUNT.table.core.windows.net/)"
                    )
                })?;
            // The operator reads with their own sign-in (`az login`), not keyturn's
            // identity: reading needs only Storage Table Data Reader.
            let credential = AzureCliCredential::new(None)
                .map_err(|e| format!("cannot use the Azure CLI sign-in: {e}"))?;
            TableClient::new(url, TableAuth::Token(credential), None)
        }
        // Azurite, for tests and development.
        (None, Some(connection_string)) => {
            TableClient::from_connection_string(&SecretValue::new(connection_string), None)
        }
        (None, None) => {
            return Err(format!(
                "reading the {what} table needs its endpoint: pass --table-endpoint https://ACCOUNT.table.core.windows.net/ or set KEYTURN_TABLE_ENDPOINT"
            ));
        }
    }
    .map_err(|e| e.to_string())
}
