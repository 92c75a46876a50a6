//! Clients the Azure adapters share, and nothing else: the azure_core pipeline with its
//! one mapping from HTTP answers to the port vocabulary (`http`) and the typed Table
//! storage client (`table`) that both the audit store and the `table` secret source use, and
//! the Resource Manager client (`resource_manager`) the endpoint reads its own site with.
//! Credentials are built from settings at start-up and handed in. Adapters depend on these clients,
//! never on each other.

pub mod blob;
pub mod http;
pub mod resource_manager;
pub mod table;
