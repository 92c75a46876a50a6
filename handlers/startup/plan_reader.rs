//! What `keyturn plan` reads in Azure: the configured vaults through Key Vault and the
//! applications they name through Graph, with the operator's Azure CLI sign-in, as the
//! ExpirySweep and the rotation read them with keyturn's identity. Only read calls are
//! ever made through these; building them makes no network call.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use azure_identity::AzureCliCredential;

use crate::adapters::azure::graph::GraphClient;
use crate::adapters::azure::keyvault::KeyVault;
use crate::config::PlanSettings;

use super::StartupError;

/// Key Vault and Graph, as `keyturn plan` reads them.
#[derive(Debug)]
pub struct PlanReaders {
    pub vault: KeyVault,
    pub graph: GraphClient,
}

/// The readers with the operator's own sign-in (`az login`): planning needs only to read
/// (Key Vault Secrets User or Reader of the vaults' metadata, Graph `Application.Read.All`
/// and `Policy.Read.All`), never keyturn's identity.
pub fn plan_readers(settings: &PlanSettings) -> Result<PlanReaders, StartupError> {
    let credential = AzureCliCredential::new(None)
        .map_err(|e| StartupError::Rotation(format!("cannot use the Azure CLI sign-in: {e}")))?;
    plan_readers_with(settings, credential, None)
}

/// The readers with `credential` and client `options` (`None`: keyturn's defaults).
pub fn plan_readers_with(
    settings: &PlanSettings,
    credential: Arc<dyn TokenCredential>,
    options: Option<ClientOptions>,
) -> Result<PlanReaders, StartupError> {
    let mut vault = KeyVault::new(credential.clone(), options.clone());
    if settings.any_vault_host {
        // Loopback stand-ins answer Key Vault's challenge for `vault.azure.net` from a host
        // that cannot be under it; the setting is for them alone.
        vault = vault.without_challenge_resource_check();
    }
    let graph = GraphClient::new(&settings.graph_endpoint, credential, options)
        .map_err(|e| StartupError::Rotation(e.to_string()))?;
    Ok(PlanReaders { vault, graph })
}
