//! Integration tests, grouped by function and concern, sharing one helpers module.

mod audit_anchor;
mod audit_cli;
mod azure_adapters;
mod azure_answers;
mod binary;
mod cert_verify;
mod certificate_claims;
mod config_check;
mod contracts;
mod expiry_sweep;
mod front_end;
mod graph_metadata;
mod helpers;
mod host;
mod infra;
mod key_vault_events;
mod local_adapters;
mod local_mode;
mod rotation;
mod rotation_e2e;
mod rotation_engine;
mod rotation_worker;
mod secret_endpoint;
mod secret_endpoint_azure;
mod table_oauth;
mod tls_listener;
