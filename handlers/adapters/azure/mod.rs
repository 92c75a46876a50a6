//! Azure adapters, one per port implementation (Key Vault, Graph, Service Bus, the token
//! endpoint, the Table audit store and secret source, the audit checkpoints' Blob store
//! and Key Vault signer, the site the endpoint runs as), on
//! the shared clients in [`client`] (azure_core's pipeline with bearer policy, retries and
//! an injectable transport; credentials; Table storage; Resource Manager). Adapters never import each other.

pub mod alert_ledger;
pub mod anchor;
pub mod audit;
pub mod client;
pub mod graph;
pub mod inventory;
pub mod keyvault;
pub mod lease;
pub mod mail;
pub mod resource_catalog;
pub mod servicebus;
pub mod signer;
pub mod site;
pub mod table_source;
pub mod token;
pub mod vault_catalog;
