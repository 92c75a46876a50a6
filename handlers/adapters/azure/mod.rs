//! Azure adapters: typed clients on azure_core's pipeline (bearer policy, retries, injectable transport).

pub mod audit;
pub mod graph;
pub mod http;
pub mod identity;
pub mod keyvault;
pub mod servicebus;
pub mod table;
pub mod table_source;
pub mod token;
