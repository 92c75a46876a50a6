//! The embedded store used by local mode and tests: one SQLite file.

pub mod alert_ledger;
pub mod anchor;
pub mod audit;
pub mod catalog;
pub mod crypto;
pub mod directory;
pub mod inventory;
pub mod lease;
pub mod queue;
pub mod store;
pub mod vault;
