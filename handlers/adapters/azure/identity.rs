//! Azure credentials from settings: a managed identity (user-assigned by client id, or
//! system-assigned), workload identity (federated token file, as AKS injects it), or the
//! Azure CLI for development. No setting ever holds a secret.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_identity::{
    AzureCliCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use crate::config::{CredentialKind, CredentialSettings};

#[derive(Debug, thiserror::Error)]
#[error("cannot create the {kind:?} credential: {message}")]
pub struct CredentialError {
    pub kind: CredentialKind,
    pub message: String,
}

/// Builds the credential the settings choose. Creating one makes no network call; tokens
/// are requested (and cached by azure_identity) on first use.
pub fn credential(settings: &CredentialSettings) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    let err = |e: azure_core::Error| CredentialError {
        kind: settings.kind,
        message: e.to_string(),
    };
    Ok(match settings.kind {
        CredentialKind::ManagedIdentity => {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: settings.client_id.clone().map(UserAssignedId::ClientId),
                ..Default::default()
            };
            ManagedIdentityCredential::new(Some(options)).map_err(err)?
        }
        CredentialKind::WorkloadIdentity => {
            let options = WorkloadIdentityCredentialOptions {
                client_id: settings.client_id.clone(),
                ..Default::default()
            };
            WorkloadIdentityCredential::new(Some(options)).map_err(err)?
        }
        CredentialKind::AzureCli => AzureCliCredential::new(None).map_err(err)?,
    })
}
