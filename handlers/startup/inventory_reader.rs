//! The inventory store `keyturn inventory` reads, chosen as `keyturn audit list` chooses
//! the audit log: a data directory's SQLite store, or the inventory table reached with the
//! operator's Azure CLI sign-in. Opening makes no network call and never creates a store:
//! a path that holds none is an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::adapters::azure::inventory::TableInventory;
use crate::adapters::local::inventory::LocalInventory;
use crate::adapters::local::store::LocalStore;
use crate::config::{DEFAULT_DATA_DIR, DEFAULT_INVENTORY_TABLE, Environment, STORE_FILE};
use crate::domain::resources::TableName;
use crate::ports::inventory::InventoryStore;

use super::StartupError;
use super::audit_reader::operator_table_client;

/// Where to read, as given on the command line; what is not given comes from the
/// settings (`KEYTURN_AUDIT_STORE`, `KEYTURN_DATA_DIR`, `KEYTURN_INVENTORY_TABLE`,
/// `KEYTURN_TABLE_ENDPOINT`, `KEYTURN_TABLE_CONNECTION_STRING`).
#[derive(Debug, Clone, Default)]
pub struct InventoryLocation {
    pub data_dir: Option<PathBuf>,
    pub table: Option<String>,
    pub table_endpoint: Option<String>,
}

/// The store to read. A table is chosen by `--table` or `--table-endpoint`, or by the
/// settings naming Table storage (`KEYTURN_AUDIT_STORE=table`: the inventory lives in the
/// audit log's storage account); otherwise the local store in `--data-dir`,
/// `KEYTURN_DATA_DIR` or `.keyturn`.
pub fn inventory_reader(
    location: &InventoryLocation,
    env: &Environment,
) -> Result<Arc<dyn InventoryStore>, StartupError> {
    let table_chosen = location.data_dir.is_none()
        && (location.table.is_some()
            || location.table_endpoint.is_some()
            || env.value("KEYTURN_AUDIT_STORE") == Some("table"));
    if table_chosen {
        let name = location
            .table
            .as_deref()
            .or_else(|| env.value("KEYTURN_INVENTORY_TABLE"))
            .unwrap_or(DEFAULT_INVENTORY_TABLE);
        let table = TableName::parse(name)
            .map_err(|e| StartupError::Inventory(format!("table name `{name}`: {e}")))?;
        let client = operator_table_client(location.table_endpoint.as_deref(), env, "inventory")
            .map_err(StartupError::Inventory)?;
        return Ok(Arc::new(TableInventory::new(client, table)));
    }
    let data_dir = location
        .data_dir
        .clone()
        .or_else(|| env.value("KEYTURN_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    local_reader(&data_dir)
}

fn local_reader(data_dir: &Path) -> Result<Arc<dyn InventoryStore>, StartupError> {
    let path = data_dir.join(STORE_FILE);
    if !path.is_file() {
        return Err(StartupError::Inventory(format!(
            "{} holds no keyturn store: pass the data directory of `keyturn dev` with --data-dir, or name a table with --table",
            data_dir.display()
        )));
    }
    let store = LocalStore::open(&path).map_err(|e| StartupError::Inventory(e.to_string()))?;
    Ok(Arc::new(LocalInventory::new(store)))
}
