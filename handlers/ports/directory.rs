//! The directory (Microsoft Graph and the Entra token endpoint): application password
//! credentials for rotation, proof that a credential works, and device lookups for the
//! secret endpoint.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::ids::{AppId, DeviceId, DirectoryObjectId, KeyId};
use crate::domain::secret::SecretValue;
use crate::ports::PortError;

/// An application registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub object_id: DirectoryObjectId,
    pub app_id: AppId,
    pub display_name: Option<String>,
}

/// A password credential's metadata, as Graph lists it (never its secret text).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordCredential {
    pub key_id: KeyId,
    pub display_name: Option<String>,
    /// The secret text's first characters, as Graph reports them: part of the secret,
    /// so never printed.
    pub hint: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for PasswordCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordCredential")
            .field("key_id", &self.key_id)
            .field("display_name", &self.display_name)
            .field("start", &self.start)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// A credential just added: its metadata and its secret text, which Graph returns once.
#[derive(Debug, Clone)]
pub struct IssuedCredential {
    pub credential: PasswordCredential,
    pub secret: SecretValue,
}

/// What the tenant's app management policies allow a new password credential of one
/// application, and how many passwords the application may hold. The default is no
/// restriction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PasswordRules {
    /// `passwordLifetime`: the longest lifetime a new password may have, with the name of
    /// the policy that sets it.
    pub max_lifetime: Option<(chrono::Duration, String)>,
    /// `passwordAddition`: the name of the policy that forbids adding passwords, if one
    /// does.
    pub forbidden_by: Option<String>,
    /// Applications that allow personal Microsoft accounts hold at most this many passwords
    /// (Graph answers `TooManyAppPasswords` beyond).
    pub max_passwords: Option<usize>,
}

/// Application password credentials (Graph `addPassword` / `removePassword`).
#[async_trait]
pub trait CredentialIssuer: Send + Sync + std::fmt::Debug {
    /// The application whose appId is `app_id` (`$filter=appId eq '...'`); `None` when no
    /// application has it (or keyturn may not see it).
    async fn application(&self, app_id: &AppId) -> Result<Option<Application>, PortError>;

    /// The application's password credentials.
    async fn password_credentials(
        &self,
        app: &DirectoryObjectId,
    ) -> Result<Vec<PasswordCredential>, PortError>;

    /// The rules the tenant's app management policies set for a new password of `app`: the
    /// application's own policy where one is assigned, else the tenant's default. A
    /// directory without such policies answers [`PasswordRules::default`]. Required of
    /// every directory (and every wrapper around one), so none can skip the policy by
    /// accident.
    async fn password_rules(&self, app: &DirectoryObjectId) -> Result<PasswordRules, PortError>;

    /// Adds a password credential named `display_name` valid until `end`.
    async fn add_password(
        &self,
        app: &DirectoryObjectId,
        display_name: &str,
        end: DateTime<Utc>,
    ) -> Result<IssuedCredential, PortError>;

    /// Removes one credential by key id. Removing a credential that no longer exists is
    /// `NotFound`; callers that converge treat it as done.
    async fn remove_password(
        &self,
        app: &DirectoryObjectId,
        key_id: &KeyId,
    ) -> Result<(), PortError>;
}

/// Why a credential did not yield a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// Entra does not accept the credential (yet): new credentials take seconds to
    /// propagate (AADSTS7000215 until then).
    #[error("the token endpoint does not accept the credential ({code})")]
    Rejected { code: String },
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Proves a client credential works by acquiring a token with it (client credentials).
#[async_trait]
pub trait TokenProver: Send + Sync + std::fmt::Debug {
    async fn prove(&self, app_id: &AppId, secret: &SecretValue) -> Result<(), ProofError>;
}

/// One of a device's `alternativeSecurityIds` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlternativeSecurityId {
    pub kind: i32,
    pub identity_provider: Option<String>,
    /// The decoded `key` bytes (base64 on the wire).
    pub key: Vec<u8>,
}

/// An Entra device, as the secret endpoint's `entra-device` policy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub device_id: DeviceId,
    pub account_enabled: bool,
    pub alternative_security_ids: Vec<AlternativeSecurityId>,
    pub is_compliant: Option<bool>,
    pub is_managed: Option<bool>,
}

/// Device lookups (Graph `/devices?$filter=deviceId eq '...'`).
#[async_trait]
pub trait DeviceDirectory: Send + Sync + std::fmt::Debug {
    async fn device(&self, device_id: &DeviceId) -> Result<Option<Device>, PortError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credentials_debug_output_leaves_out_its_hint() {
        let credential = PasswordCredential {
            key_id: KeyId::new_random(),
            display_name: Some("keyturn job 1".into()),
            hint: Some("Qz7".into()),
            start: None,
            end: None,
        };
        let printed = format!("{credential:?}");
        assert!(printed.contains("keyturn job 1"), "{printed}");
        assert!(!printed.contains("Qz7"), "{printed}");
    }
}
