//! Integration tests, grouped by function and concern, sharing one helpers module.

mod audit;
mod binary;
mod cert_verify;
mod expiry_sweep;
mod helpers;
mod host;
mod infra;
mod key_vault_events;
mod rotation;
mod rotation_worker;
mod secret_endpoint;
