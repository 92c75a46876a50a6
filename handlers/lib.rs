//! keyturn: secret lifecycle for Azure, as Azure Functions custom handlers.
//!
//! The binary (`handlers/main.rs`) is a thin command line over this library.
//! Dependencies point down this list and never back up: `host` and `functions`
//! use the engines; engines use `ports` and `domain`; adapters implement ports.

pub mod access;
pub mod adapters;
pub mod alerts;
pub mod audit;
pub mod compliance;
pub mod config;
pub mod discovery;
pub mod domain;
pub mod events;
pub mod evidence;
pub mod functions;
pub mod host;
pub mod local;
pub mod mtls;
pub mod package;
pub mod ports;
pub mod rotation;
pub mod startup;
pub mod telemetry;
