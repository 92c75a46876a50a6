//! Azure credentials from settings, built at start-up and handed to the Azure clients: a
//! managed identity (user-assigned by client id, or system-assigned), workload identity
//! (federated token file, as AKS injects it), or the Azure CLI for development. No
//! setting ever holds a secret.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_identity::{
    AzureCliCredential, ClientAssertionCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};

use crate::adapters::azure::client::http::default_client_options;
use crate::config::{CredentialKind, CredentialSettings};

#[derive(Debug, thiserror::Error)]
#[error("cannot create the {kind:?} credential: {message}")]
pub struct CredentialError {
    pub kind: CredentialKind,
    pub message: String,
}

/// Builds the credential the settings choose. Creating one makes no network call; tokens
/// are requested (and cached by azure_identity) on first use.
pub fn credential(
    settings: &CredentialSettings,
) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    let err = |e: azure_core::Error| CredentialError {
        kind: settings.kind,
        message: e.to_string(),
    };
    Ok(match settings.kind {
        CredentialKind::ManagedIdentity => {
            // The identity endpoint's pipeline retries like every other keyturn pipeline:
            // a `Retry-After` beyond the bound is handed back, never slept through.
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: settings.client_id.clone().map(UserAssignedId::ClientId),
                client_options: default_client_options(),
            };
            ManagedIdentityCredential::new(Some(options)).map_err(err)?
        }
        CredentialKind::WorkloadIdentity => {
            let options = WorkloadIdentityCredentialOptions {
                client_id: settings.client_id.clone(),
                credential_options: ClientAssertionCredentialOptions {
                    client_options: default_client_options(),
                },
                tenant_id: None,
                token_file_path: None,
            };
            WorkloadIdentityCredential::new(Some(options)).map_err(err)?
        }
        CredentialKind::AzureCli => AzureCliCredential::new(None).map_err(err)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_identity_and_cli_credentials_build_without_a_network_call() {
        for (kind, client_id) in [
            (
                CredentialKind::ManagedIdentity,
                Some("00000000-0000-0000-0000-000000000001".to_string()),
            ),
            (CredentialKind::ManagedIdentity, None),
            (CredentialKind::AzureCli, None),
        ] {
            let settings = CredentialSettings { kind, client_id };
            assert!(credential(&settings).is_ok(), "{kind:?}");
        }
    }

    #[test]
    fn workload_identity_without_its_environment_is_a_clear_error() {
        // Workload identity reads AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE, which only
        // a federated environment (AKS) provides.
        if std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_some() {
            return;
        }
        let settings = CredentialSettings {
            kind: CredentialKind::WorkloadIdentity,
            client_id: Some("00000000-0000-0000-0000-000000000001".to_string()),
        };
        let err = credential(&settings).expect_err("no federated token file");
        assert!(err.to_string().contains("WorkloadIdentity"), "{err}");
    }
}
