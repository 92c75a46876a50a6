//! What discovery reads from the tenant, as metadata only: the subscriptions and vaults
//! Resource Manager lists ([`ResourceCatalog`]), the objects a vault lists
//! ([`VaultCatalog`]) and the application and service-principal credentials Graph lists
//! ([`DirectoryCatalog`]).
//!
//! No method here can return a value: the records are the inventory's, which have no
//! field for one, and the Azure adapters only call list and metadata operations (Key
//! Vault Reader suffices; it cannot read a value). Every list is paged by the service;
//! a caller reads one page, writes it, and asks for the next with the cursor it was given,
//! so no caller holds more than a page of a tenant.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::ids::{AppId, DirectoryObjectId, SubscriptionId};
use crate::domain::inventory::{
    CertificateDetails, CredentialSource, InventoryCredential, InventoryVault, KeyDetails,
    ScopeFinding, SweepId,
};
use crate::domain::names::{VaultName, VaultUrl};
use crate::ports::PortError;

/// Where the next page starts: the service's own continuation (a `nextLink`), handed back
/// unchanged.
#[derive(Clone, PartialEq, Eq)]
pub struct Cursor(String);

impl Cursor {
    pub fn new(link: impl Into<String>) -> Self {
        Self(link.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cursor {
    // A continuation can be long and carries nothing a reader of a log needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({} chars)", self.0.len())
    }
}

/// One page a service returned: its records, the findings about entries that could not
/// be read (a malformed date, an owner without mail) and where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogPage<T> {
    pub items: Vec<T>,
    pub findings: Vec<ScopeFinding>,
    pub next: Option<Cursor>,
}

impl<T> CatalogPage<T> {
    pub fn last(items: Vec<T>) -> Self {
        Self {
            items,
            findings: Vec::new(),
            next: None,
        }
    }
}

/// What every record written in one scan carries: the sweep and when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub sweep: SweepId,
    pub at: DateTime<Utc>,
}

/// A subscription Resource Manager lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRef {
    pub id: SubscriptionId,
    pub display_name: Option<String>,
}

/// A vault to scan: where its data plane is and what names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultRef {
    pub subscription: Option<SubscriptionId>,
    pub name: VaultName,
    pub uri: VaultUrl,
}

/// The three kinds of vault object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Secrets,
    Certificates,
    Keys,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 3] = [Self::Secrets, Self::Certificates, Self::Keys];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secrets => "secrets",
            Self::Certificates => "certificates",
            Self::Keys => "keys",
        }
    }
}

/// Applications or service principals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryKind {
    Applications,
    ServicePrincipals,
}

/// A slice of the directory one job scans: the objects of `kind` whose appId starts with
/// `prefix` (one hex digit). Graph's paging is a chain of opaque links that cannot be
/// split, but `appId` supports `startsWith`, and sixteen hex prefixes cover every
/// object exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DirectoryRange {
    pub kind: DirectoryKind,
    pub prefix: HexDigit,
}

impl DirectoryRange {
    /// The sixteen ranges of `kind`.
    pub fn all(kind: DirectoryKind) -> impl Iterator<Item = DirectoryRange> {
        (0u8..16).map(move |digit| DirectoryRange {
            kind,
            prefix: HexDigit(digit),
        })
    }

    /// The range a directory credential's object falls in (by its kind and the first
    /// hex digit of its appId); `None` for a vault object.
    pub fn of(source: &CredentialSource) -> Option<DirectoryRange> {
        let (kind, app_id) = match source {
            CredentialSource::Application { app_id, .. } => (DirectoryKind::Applications, app_id),
            CredentialSource::ServicePrincipal { app_id, .. } => {
                (DirectoryKind::ServicePrincipals, app_id)
            }
            CredentialSource::Vault { .. } => return None,
        };
        Self::holding(kind, app_id)
    }

    /// The range of `kind` holding the object whose appId is `app_id`.
    pub fn holding(kind: DirectoryKind, app_id: &AppId) -> Option<DirectoryRange> {
        let first = app_id.to_string().chars().next()?.to_string();
        Some(DirectoryRange {
            kind,
            prefix: HexDigit::parse(&first)?,
        })
    }

    /// `applications/3`: names the range in findings and job ids.
    pub fn label(&self) -> String {
        let kind = match self.kind {
            DirectoryKind::Applications => "applications",
            DirectoryKind::ServicePrincipals => "service_principals",
        };
        format!("{kind}/{}", self.prefix)
    }
}

/// One hexadecimal digit, `0`-`f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HexDigit(u8);

impl HexDigit {
    pub fn parse(text: &str) -> Option<Self> {
        let mut chars = text.chars();
        let digit = chars.next()?.to_digit(16)?;
        chars
            .next()
            .is_none()
            .then(|| Self(u8::try_from(digit).expect("a hex digit is below 16")))
    }
}

impl fmt::Display for HexDigit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl TryFrom<String> for HexDigit {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text).ok_or_else(|| "a hex digit".to_owned())
    }
}

impl From<HexDigit> for String {
    fn from(digit: HexDigit) -> Self {
        digit.to_string()
    }
}

/// Resource Manager: the subscriptions the identity can see and their vaults.
#[async_trait]
pub trait ResourceCatalog: Send + Sync + fmt::Debug {
    /// The subscriptions the identity holds a role on; one listed without a valid id is
    /// a finding on the tenant.
    async fn subscriptions(
        &self,
        after: Option<&Cursor>,
        stamp: &Stamp,
    ) -> Result<CatalogPage<SubscriptionRef>, PortError>;

    /// The vaults of `subscription`, with their compliance properties.
    async fn vaults(
        &self,
        subscription: &SubscriptionId,
        after: Option<&Cursor>,
        stamp: &Stamp,
    ) -> Result<CatalogPage<InventoryVault>, PortError>;
}

/// A vault's data plane, read as metadata.
#[async_trait]
pub trait VaultCatalog: Send + Sync + fmt::Debug {
    /// One page of the vault's objects of `kind` (their current versions) as inventory
    /// records; certificate and key details are left to [`VaultCatalog::certificate`]
    /// and [`VaultCatalog::key`].
    async fn objects(
        &self,
        vault: &VaultRef,
        kind: ObjectKind,
        after: Option<&Cursor>,
        stamp: &Stamp,
    ) -> Result<CatalogPage<InventoryCredential>, PortError>;

    /// A certificate's details and policy (`GET /certificates/{name}`, which carries the
    /// public certificate and the policy, never the private key).
    async fn certificate(
        &self,
        vault: &VaultRef,
        name: &str,
    ) -> Result<CertificateDetails, PortError>;

    /// A key's type, size or curve and whether a rotation policy rotates it (`GET
    /// /keys/{name}`, the public key only, and `GET /keys/{name}/rotationpolicy`).
    async fn key(&self, vault: &VaultRef, name: &str) -> Result<KeyDetails, PortError>;

    /// How many requests [`VaultCatalog::certificate`] (for certificates) or
    /// [`VaultCatalog::key`] (for keys) sends for one object: what a details read costs
    /// the vault's budget. Zero for secrets, which have no details read.
    fn detail_requests(&self, kind: ObjectKind) -> u32;

    /// One page of the versions of the object `name` of `kind` (`GET
    /// /{kind}/{name}/versions`, each version's attributes, never a value): how many it
    /// lists and where the next page starts.
    async fn versions(
        &self,
        vault: &VaultRef,
        kind: ObjectKind,
        name: &str,
        after: Option<&Cursor>,
    ) -> Result<(u32, Option<Cursor>), PortError>;
}

/// A service's request budget as a catalog call sees it: a call that sends requests of
/// its own beyond the one its caller paced waits here before each of them, so they are
/// charged to the same budget as the pages.
#[async_trait]
pub trait RequestBudget: Send + Sync {
    /// Waits until the next request may be sent, and charges it.
    async fn wait(&self);
}

/// No budget: every request leaves at once. For callers that pace nothing (a one-off
/// read, a test of what a page holds).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unpaced;

#[async_trait]
impl RequestBudget for Unpaced {
    async fn wait(&self) {}
}

/// The directory: application and service-principal credentials with their owners.
#[async_trait]
pub trait DirectoryCatalog: Send + Sync + fmt::Debug {
    /// One page of `range`: one record per password or key credential of each object
    /// listed, owners filled in. The caller paces the page's request; every further
    /// request the page needs (an object's owners beyond what the listing expands)
    /// waits its turn on `budget` first.
    async fn credentials(
        &self,
        range: &DirectoryRange,
        after: Option<&Cursor>,
        stamp: &Stamp,
        budget: &dyn RequestBudget,
    ) -> Result<CatalogPage<InventoryCredential>, PortError>;

    /// One page of `range`'s applications with how many federated identity credentials
    /// each has; an application with none may be left out. Read once per application
    /// range, beside [`DirectoryCatalog::credentials`]: a page request, not one per
    /// application.
    async fn federated_credential_counts(
        &self,
        range: &DirectoryRange,
        after: Option<&Cursor>,
    ) -> Result<CatalogPage<(DirectoryObjectId, u32)>, PortError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_ranges_cover_every_hex_prefix_once() {
        let labels: Vec<String> = DirectoryRange::all(DirectoryKind::Applications)
            .map(|r| r.label())
            .collect();
        assert_eq!(labels.len(), 16);
        assert_eq!(labels[0], "applications/0");
        assert_eq!(labels[15], "applications/f");
    }

    #[test]
    fn a_directory_credential_falls_in_the_range_of_its_app_ids_first_digit() {
        use crate::domain::ids::{AppId, DirectoryObjectId};
        let object_id =
            DirectoryObjectId::parse("00000000-0000-4000-8000-000000000001").expect("object id");
        let app_id = AppId::parse("C1111111-0000-4000-8000-000000000001").expect("app id");
        let principal = CredentialSource::ServicePrincipal {
            object_id,
            app_id,
            display_name: None,
        };

        let range = DirectoryRange::of(&principal).expect("a directory source");

        assert_eq!(range.label(), "service_principals/c");
        let vault = CredentialSource::Vault {
            subscription: None,
            name: "kv-a".parse().expect("name"),
            uri: VaultUrl::parse("https://kv-a.vault.azure.net/").expect("url"),
        };
        assert_eq!(DirectoryRange::of(&vault), None);
    }

    #[test]
    fn a_hex_digit_is_one_character() {
        assert!(HexDigit::parse("a").is_some());
        for bad in ["", "g", "10", "-"] {
            assert!(HexDigit::parse(bad).is_none(), "{bad}");
        }
    }
}
