//! The secret store (Key Vault secrets and certificates): what the rotation engine and the
//! sweep need, metadata first. Listing never returns values; a value is read only where a
//! function needs it and written only as a new version.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::names::{ObjectId, ObjectName, ObjectVersion, VaultUrl};
use crate::domain::secret::SecretValue;
use crate::ports::PortError;

/// Metadata of one secret version, as Key Vault's `SecretProperties` / `SecretBundle`
/// attributes carry it. Never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretProperties {
    /// Vault, name and version of this version.
    pub id: ObjectId,
    pub enabled: bool,
    pub not_before: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub created: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// True for the secret that backs a Key Vault certificate (Key Vault manages it).
    pub managed: bool,
}

/// A secret version with its value.
#[derive(Debug, Clone)]
pub struct Secret {
    pub properties: SecretProperties,
    pub value: SecretValue,
}

/// What a new secret version carries besides its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewSecretVersion {
    pub content_type: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub tags: BTreeMap<String, String>,
}

/// Key Vault secrets.
#[async_trait]
pub trait SecretStore: Send + Sync + std::fmt::Debug {
    /// The current version's metadata of every secret in `vault` (all pages).
    async fn list_secrets(&self, vault: &VaultUrl) -> Result<Vec<SecretProperties>, PortError>;

    /// Metadata of the current version (`version: None`) or of one version; `None` when the
    /// secret or version does not exist.
    async fn secret_properties(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: Option<&ObjectVersion>,
    ) -> Result<Option<SecretProperties>, PortError>;

    /// Every version's metadata, in no particular order.
    async fn list_versions(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<Vec<SecretProperties>, PortError>;

    /// The current version (`version: None`) or one version, with its value; `None` when it
    /// does not exist.
    async fn secret(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: Option<&ObjectVersion>,
    ) -> Result<Option<Secret>, PortError>;

    /// Writes a new version, which becomes the current one.
    async fn set_secret(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        value: &SecretValue,
        version: NewSecretVersion,
    ) -> Result<SecretProperties, PortError>;

    /// Replaces the tags of one version (Key Vault's update-properties: other attributes
    /// stay as they are).
    async fn update_tags(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: &ObjectVersion,
        tags: BTreeMap<String, String>,
    ) -> Result<SecretProperties, PortError>;

    /// Deletes a secret, every version of it. Key Vault's soft delete keeps the name taken
    /// until the deleted secret is purged (the vault's retention period, 7 to 90 days):
    /// setting the name again meanwhile is a [`FailureKind::Conflict`]
    /// (`ObjectIsDeletedButRecoverable`). A secret that does not exist is `NotFound`.
    ///
    /// [`FailureKind::Conflict`]: crate::ports::FailureKind::Conflict
    async fn delete_secret(&self, vault: &VaultUrl, name: &ObjectName) -> Result<(), PortError>;
}

/// Metadata of a certificate's current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateProperties {
    pub id: ObjectId,
    pub enabled: bool,
    pub not_before: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub tags: BTreeMap<String, String>,
    /// SHA-1 thumbprint as Key Vault reports it (`x5t`), hex.
    pub x5t_hex: Option<String>,
}

/// Where a certificate renewal stands (Key Vault's certificate operation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateOperation {
    InProgress,
    /// The new version exists and is current.
    Completed {
        version: ObjectVersion,
    },
    /// The issuer refused or the request failed; `code` is Key Vault's error code.
    Failed {
        code: String,
    },
    Cancelled,
}

/// Key Vault certificates.
#[async_trait]
pub trait CertificateStore: Send + Sync + std::fmt::Debug {
    async fn list_certificates(
        &self,
        vault: &VaultUrl,
    ) -> Result<Vec<CertificateProperties>, PortError>;

    async fn certificate_properties(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<Option<CertificateProperties>, PortError>;

    /// The issuer name of the certificate's policy (`Self`, `Unknown`, or an issuer object
    /// such as `DigiCert`), so the engine can tell whether Key Vault can renew it alone.
    async fn issuer(&self, vault: &VaultUrl, name: &ObjectName) -> Result<String, PortError>;

    /// Starts a new version from the certificate's current policy (Key Vault's
    /// create-certificate with the existing policy). If an operation is already pending,
    /// that one is returned rather than a second started.
    async fn begin_renewal(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<CertificateOperation, PortError>;

    /// The pending or last operation of the certificate.
    async fn renewal_status(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<CertificateOperation, PortError>;
}
