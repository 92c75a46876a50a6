//! The site keyturn runs as, read from Azure Resource Manager with keyturn's identity
//! (which holds Reader on its own site): [`SiteConfiguration`] for the secret endpoint's
//! front-end check.

use async_trait::async_trait;

use crate::adapters::azure::client::http::FailureContext;
use crate::adapters::azure::client::resource_manager::ResourceManagerClient;
use crate::ports::PortError;
use crate::ports::site::SiteConfiguration;

/// The role a 401/403 means the identity lacks.
pub const SITE_READ_PERMISSION: &str =
    "Reader (Microsoft.Web/sites/read) on the function app's own site";

/// One site, by resource id, read at one API version.
#[derive(Debug, Clone)]
pub struct AzureSite {
    client: ResourceManagerClient,
    resource_id: String,
    api_version: &'static str,
}

impl AzureSite {
    pub fn new(
        client: ResourceManagerClient,
        resource_id: String,
        api_version: &'static str,
    ) -> Self {
        Self {
            client,
            resource_id,
            api_version,
        }
    }
}

#[async_trait]
impl SiteConfiguration for AzureSite {
    async fn read_site(&self) -> Result<Vec<u8>, PortError> {
        let operation = format!("reading site {}", self.resource_id);
        let context = FailureContext {
            operation: &operation,
            missing_permission: SITE_READ_PERMISSION,
            policy_codes: &[],
        };
        self.client
            .get_resource(&self.resource_id, self.api_version, &context)
            .await
    }
}
