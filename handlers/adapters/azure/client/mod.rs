//! Clients the Azure adapters share, and nothing else: the azure_core pipeline with its
//! one mapping from HTTP answers to the port vocabulary (`http`), credentials from
//! settings (`identity`) and the typed Table storage client (`table`) that both the
//! audit store and the `table` secret source use. Adapters depend on these clients,
//! never on each other.

pub mod http;
pub mod identity;
pub mod table;
