//! Implementations of the ports: Azure services and the embedded local store.
//! Adapters never import each other; start-up alone chooses which ones run.

pub mod appsettings;
pub mod azure;
pub mod local;
pub mod notify;
