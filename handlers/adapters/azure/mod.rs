//! Azure adapters, one per port implementation (Key Vault, Graph, Service Bus, the token
//! endpoint, the Table audit store and secret source), on the shared clients in
//! [`client`] (azure_core's pipeline with bearer policy, retries and an injectable
//! transport; credentials; Table storage). Adapters never import each other.

pub mod audit;
pub mod client;
pub mod graph;
pub mod keyvault;
pub mod servicebus;
pub mod table_source;
pub mod token;
