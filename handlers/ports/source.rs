//! Where the secret endpoint reads a secret from (Key Vault, app settings, Table storage,
//! the embedded local vault).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::names::ObjectName;
use crate::domain::secret::SecretValue;
use crate::ports::PortError;

/// A secret as the endpoint serves it.
#[derive(Debug, Clone)]
pub struct SourcedSecret {
    pub value: SecretValue,
    pub version: Option<String>,
    pub content_type: Option<String>,
    pub expires: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait SecretSource: Send + Sync + std::fmt::Debug {
    /// The current value of `name`; `None` when this source has no such secret (or it is
    /// disabled, not yet valid or expired: a device must not receive a dead secret).
    async fn fetch(
        &self,
        name: &ObjectName,
        now: DateTime<Utc>,
    ) -> Result<Option<SourcedSecret>, PortError>;
}
