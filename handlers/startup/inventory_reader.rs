//! The inventory store `keyturn inventory` reads, chosen as `keyturn audit list` chooses
//! the audit log: a data directory's SQLite store, or the inventory table reached with the
//! operator's Azure CLI sign-in. Opening makes no network call and never creates a store:
//! a path that holds none is an error.

use std::path::Path;
use std::sync::Arc;

use crate::adapters::azure::inventory::TableInventory;
use crate::adapters::local::inventory::LocalInventory;
use crate::adapters::local::store::LocalStore;
use crate::config::{DEFAULT_INVENTORY_TABLE, Environment, STORE_FILE};
use crate::domain::resources::TableName;
use crate::ports::inventory::InventoryStore;

use super::StartupError;
use super::audit_reader::{StoreLocation, operator_table_client};

/// Where `keyturn inventory` reads.
pub type InventoryLocation = StoreLocation;

/// The store to read. A table is chosen by `--table` or `--table-endpoint`, or by the
/// settings naming Table storage (`KEYTURN_AUDIT_STORE=table`: the inventory lives in the
/// audit log's storage account); otherwise the local store in `--data-dir`,
/// `KEYTURN_DATA_DIR` or `.keyturn`.
pub fn inventory_reader(
    location: &InventoryLocation,
    env: &Environment,
) -> Result<Arc<dyn InventoryStore>, StartupError> {
    if location.reads_table(env) {
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
    local_reader(&location.local_data_dir(env))
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
