//! The secret endpoint's front-end gate, where `X-ARR-ClientCert` is trusted: the site is
//! named by the platform's variables and read from Azure Resource Manager with keyturn's
//! credential; the first check runs before the app serves, later ones on a schedule.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;

use crate::adapters::azure::client::resource_manager::ResourceManagerClient;
use crate::adapters::azure::site::AzureSite;
use crate::config::Settings;
use crate::mtls::front_end::{FrontEndGate, SITES_API_VERSION, SiteRef, watch};
use crate::ports::site::SiteConfiguration;

/// The longest start-up waits for the first check. Resource Manager answers a read in
/// well under a second; past this the app starts closed and the schedule keeps checking,
/// so a slow control plane cannot stop the Functions host from seeing the handler start.
const FIRST_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// What the gate reads the site with, where start-up is not to build it from settings.
pub(crate) struct SiteSource<'a> {
    /// A site reader in place of the Resource Manager one.
    pub site: Option<Arc<dyn SiteConfiguration>>,
    /// keyturn's credential (the backend's, or the one the settings choose).
    pub credential: Option<Arc<dyn TokenCredential>>,
    pub options: Option<ClientOptions>,
    pub settings: &'a Settings,
}

/// The gate, checked once; its schedule runs until the gate is dropped. A gate whose site
/// cannot be named or read stays closed, with the reason logged.
pub(crate) async fn gate(source: SiteSource<'_>) -> Arc<FrontEndGate> {
    let settings = source.settings;
    let site = match source.site {
        Some(site) => site,
        None => match azure_site(&source) {
            Ok(site) => site,
            Err(reason) => return Arc::new(FrontEndGate::closed(reason)),
        },
    };
    let gate = Arc::new(FrontEndGate::closed("not_checked_yet"));
    let open = match tokio::time::timeout(FIRST_CHECK_TIMEOUT, gate.check(site.as_ref())).await {
        Ok(open) => open,
        Err(_) => {
            tracing::error!(
                reason = "not_checked_yet",
                timeout_seconds = FIRST_CHECK_TIMEOUT.as_secs(),
                "the secret endpoint refuses every request: the first check of its front end did not finish; checking again"
            );
            false
        }
    };
    let every = Duration::from_secs(settings.endpoint.front_end_check_seconds);
    tokio::spawn(watch(Arc::downgrade(&gate), site, every, open));
    gate
}

/// The Resource Manager reader of the site the platform's variables name.
fn azure_site(source: &SiteSource<'_>) -> Result<Arc<dyn SiteConfiguration>, &'static str> {
    let settings = source.settings;
    let platform = &settings.endpoint.site;
    let site = SiteRef::from_platform(
        platform.owner_name.as_deref(),
        platform.resource_group.as_deref(),
        platform.site_name.as_deref(),
    )
    .map_err(|problem| {
        tracing::error!(
            reason = "site_unknown",
            %problem,
            "the secret endpoint refuses every request: the platform's variables do not name its site"
        );
        "site_unknown"
    })?;
    let endpoint = settings.entra.resource_manager_endpoint.as_ref().ok_or_else(|| {
        tracing::error!(
            reason = "resource_manager_unknown",
            "the secret endpoint refuses every request: KEYTURN_RESOURCE_MANAGER_ENDPOINT is not set"
        );
        "resource_manager_unknown"
    })?;
    let credential = source.credential.clone().ok_or_else(|| {
        tracing::error!(
            reason = "no_credential",
            "the secret endpoint refuses every request: no Azure credential to read its site with"
        );
        "no_credential"
    })?;
    let client = ResourceManagerClient::new(endpoint, credential, source.options.clone())
        .map_err(|problem| {
            tracing::error!(reason = "resource_manager_unknown", %problem, "the secret endpoint refuses every request");
            "resource_manager_unknown"
        })?;
    Ok(Arc::new(AzureSite::new(
        client,
        site.resource_id(),
        SITES_API_VERSION,
    )))
}
