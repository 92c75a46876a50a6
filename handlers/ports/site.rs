//! The site keyturn runs as, as its platform's control plane describes it: what the secret
//! endpoint reads to learn whether its front end demands client certificates before it
//! believes `X-ARR-ClientCert` (`mtls::front_end` decides from what this returns).

use async_trait::async_trait;

use crate::ports::PortError;

/// Reads the site's configuration.
#[async_trait]
pub trait SiteConfiguration: Send + Sync + std::fmt::Debug {
    /// The site resource as Azure Resource Manager returns it
    /// (`GET .../providers/Microsoft.Web/sites/{site}`): a JSON document.
    async fn read_site(&self) -> Result<Vec<u8>, PortError>;
}
