//! Azure adapters: typed clients on azure_core's pipeline (bearer policy, retries, injectable transport).

pub mod audit;
pub mod http;
pub mod identity;
pub mod table;
pub mod table_source;
