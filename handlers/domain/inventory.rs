//! The inventory's records: one per credential found in the tenant (a Key Vault secret,
//! certificate or key, an application's or service principal's password or key
//! credential), one per vault, one per scope a sweep could not read or found wanting, and
//! one snapshot of counts per sweep.
//!
//! Every record is metadata. No type here can hold a secret value: none has a field of
//! [`SecretValue`](crate::domain::secret::SecretValue)'s type, and discovery never reads
//! one. Every record has a stable id computed from what identifies it in Azure, never from
//! when it was seen, so a rerun of the same sweep writes the same rows again (an upsert)
//! instead of adding new ones.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::domain::compliance::ComplianceSummary;
use crate::domain::ids::{AppId, DirectoryObjectId, KeyId, SubscriptionId};
use crate::domain::names::{VaultName, VaultUrl};

/// The tag naming a credential's owner on a Key Vault object (a UPN, a mail address or a
/// team's name), read by routing and by `keyturn inventory --owner`.
pub const OWNER_TAG: &str = "keyturn-owner";

/// keyturn names the directory credentials it creates `keyturn {job id}`
/// (`rotation::run::entra::MARKER_PREFIX`): such a credential is managed by its name.
pub const KEYTURN_CREDENTIAL_PREFIX: &str = "keyturn ";

/// The bookkeeping tags on a managed application secret (`rotation::tags`): the
/// application, the password credential its current version holds and the one before.
const APP_ID_TAG: &str = "keyturn-app-id";
const KEY_ID_TAG: &str = "keyturn-key-id";
const PREVIOUS_KEY_ID_TAG: &str = "keyturn-previous-key-id";

/// Longest text of a finding's detail, in characters: a sentence naming what failed (a
/// status, a service error code, a field), never a backend message that could echo data.
pub const MAX_FINDING_DETAIL_CHARS: usize = 512;

/// Why an inventory identifier or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    #[error("a sweep id must be 1 to 64 letters, digits, `-` or `_`")]
    SweepId,
    #[error("an inventory record id must be 64 lowercase hex digits")]
    RecordId,
    #[error("unknown credential kind {found:?}")]
    CredentialKind { found: String },
    #[error("unknown source kind {found:?}")]
    SourceKind { found: String },
    #[error("a duration must be a whole number followed by d (days) or h (hours), like 30d")]
    Within,
}

// ---------------------------------------------------------------------------------------
// Identifiers

/// A stable id: the hex SHA-256 of a record's identity in Azure. Fixed length, safe as a
/// Table storage row key, and the same on every sweep that sees the same object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(String);

impl RecordId {
    fn of(identity: &str) -> Self {
        Self(hex::encode(Sha256::digest(identity.as_bytes())))
    }

    pub fn parse(text: &str) -> Result<Self, InventoryError> {
        let valid = text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(InventoryError::RecordId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One sweep over the tenant: every job it queued carries it, every record a job writes
/// names it, and its snapshot is keyed by it. 1 to 64 of `A-Za-z0-9-_` (safe in a Table
/// key, a Service Bus message id and a file name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SweepId(String);

impl SweepId {
    pub fn parse(text: &str) -> Result<Self, InventoryError> {
        let valid = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(InventoryError::SweepId)
        }
    }

    /// The id of a sweep at `at`: its UTC time to the second, so ids sort by time.
    /// `DiscoverySweep` passes the schedule occurrence it runs for, so the timer's two
    /// firings of one occurrence name the same sweep.
    pub fn starting_at(at: DateTime<Utc>) -> Self {
        Self(at.format("%Y%m%dT%H%M%SZ").to_string())
    }

    /// The id of a rescan at `at` (the scans that follow a finished rotation): its UTC
    /// time to the millisecond, so two rescans of one scope a second apart are two jobs,
    /// not a duplicate the queue drops. It sorts among sweep ids by time, and before a
    /// sweep named by the same second: what such a sweep writes is the newer.
    pub fn rescan_at(at: DateTime<Utc>) -> Self {
        Self(at.format("%Y%m%dT%H%M%S%3fZ").to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SweepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! serde_via_text {
    ($type:ty) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                <$type>::parse(&text).map_err(serde::de::Error::custom)
            }
        }

        impl FromStr for $type {
            type Err = InventoryError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
            }
        }
    };
}

serde_via_text!(RecordId);
serde_via_text!(SweepId);

// ---------------------------------------------------------------------------------------
// Where a credential lives

/// Where a credential lives. Its identity (what [`CredentialSource::key`] hashes) is the
/// vault URI or the directory object id; display names are carried for reading only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CredentialSource {
    /// A Key Vault. `subscription` is `None` for the local vault.
    Vault {
        subscription: Option<SubscriptionId>,
        name: VaultName,
        uri: VaultUrl,
    },
    /// An application registration (its `passwordCredentials` and `keyCredentials`).
    Application {
        object_id: DirectoryObjectId,
        app_id: AppId,
        display_name: Option<String>,
    },
    /// A service principal (its own credentials, such as SAML signing certificates).
    ServicePrincipal {
        object_id: DirectoryObjectId,
        app_id: AppId,
        display_name: Option<String>,
    },
}

impl CredentialSource {
    pub fn kind(&self) -> SourceKind {
        match self {
            Self::Vault { .. } => SourceKind::Vault,
            Self::Application { .. } => SourceKind::Application,
            Self::ServicePrincipal { .. } => SourceKind::ServicePrincipal,
        }
    }

    /// The source's stable id: every credential of one source shares it (a Table
    /// partition, and what [`retire_unseen`](crate::ports::inventory::InventoryStore::retire_unseen)
    /// works on).
    pub fn key(&self) -> RecordId {
        RecordId::of(&self.identity())
    }

    /// The key of the vault at `uri` as a source, which is also its vault record's id
    /// ([`InventoryVault::id`]): a vault's key depends on its URI only.
    pub fn vault_key(uri: &VaultUrl) -> RecordId {
        RecordId::of(&Self::vault_identity(uri))
    }

    fn vault_identity(uri: &VaultUrl) -> String {
        // Key Vault compares vault names without case; VaultUrl keeps the host lowercase
        // already (url's host normalisation).
        format!("vault|{uri}")
    }

    fn identity(&self) -> String {
        match self {
            Self::Vault { uri, .. } => Self::vault_identity(uri),
            Self::Application { object_id, .. } => format!("application|{object_id}"),
            Self::ServicePrincipal { object_id, .. } => format!("service_principal|{object_id}"),
        }
    }

    /// A short human label: the vault name or the directory object's display name (its
    /// app id when it has none).
    pub fn label(&self) -> String {
        match self {
            Self::Vault { name, .. } => name.to_string(),
            Self::Application {
                display_name,
                app_id,
                ..
            }
            | Self::ServicePrincipal {
                display_name,
                app_id,
                ..
            } => display_name.clone().unwrap_or_else(|| app_id.to_string()),
        }
    }
}

/// The three kinds of source, for filters and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Vault,
    Application,
    ServicePrincipal,
}

impl SourceKind {
    pub const ALL: [SourceKind; 3] = [Self::Vault, Self::Application, Self::ServicePrincipal];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vault => "vault",
            Self::Application => "application",
            Self::ServicePrincipal => "service_principal",
        }
    }

    pub fn parse(text: &str) -> Result<Self, InventoryError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| InventoryError::SourceKind {
                found: text.chars().take(32).collect(),
            })
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------
// The credential

/// What a credential is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A Key Vault secret.
    Secret,
    /// A Key Vault certificate.
    Certificate,
    /// A Key Vault key.
    Key,
    /// An application's or service principal's client secret (`passwordCredentials`).
    PasswordCredential,
    /// An application's or service principal's certificate (`keyCredentials`).
    KeyCredential,
}

impl CredentialKind {
    pub const ALL: [CredentialKind; 5] = [
        Self::Secret,
        Self::Certificate,
        Self::Key,
        Self::PasswordCredential,
        Self::KeyCredential,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Certificate => "certificate",
            Self::Key => "key",
            Self::PasswordCredential => "password_credential",
            Self::KeyCredential => "key_credential",
        }
    }

    pub fn parse(text: &str) -> Result<Self, InventoryError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| InventoryError::CredentialKind {
                found: text.chars().take(32).collect(),
            })
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which object a credential record stands for within its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CredentialHandle {
    /// A Key Vault object: its name and the current version the record describes.
    /// `versions` counts the versions listed (`None` when they were not listed).
    VaultObject {
        name: String,
        version: Option<String>,
        versions: Option<u32>,
    },
    /// A directory credential, by its keyId.
    DirectoryCredential { key_id: KeyId },
}

/// One credential in the inventory. Metadata only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryCredential {
    pub source: CredentialSource,
    pub kind: CredentialKind,
    /// The object's name (vault objects) or the credential's display name (directory
    /// credentials; its keyId when it has none).
    pub name: String,
    pub handle: CredentialHandle,
    pub enabled: bool,
    pub created: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
    /// `None` is "no end date": a value, reported as such, not a missing field.
    pub expires: Option<DateTime<Utc>>,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub certificate: Option<CertificateDetails>,
    pub key: Option<KeyDetails>,
    /// Directory credentials only: what Graph says of the credential and its object.
    pub directory: Option<DirectoryDetails>,
    /// The application's owners (directory credentials); empty for vault objects, whose
    /// owner is the [`OWNER_TAG`] tag.
    pub owners: Vec<Owner>,
    /// Whether keyturn rotates it (its tags or the secret that references it say so).
    pub managed: bool,
    pub scanned_at: DateTime<Utc>,
    /// The sweep that last wrote this record.
    pub sweep: SweepId,
}

impl InventoryCredential {
    /// The record's stable id: its source, kind and handle (vault object name, compared
    /// without case as Key Vault does; or keyId).
    pub fn id(&self) -> RecordId {
        let handle = match &self.handle {
            CredentialHandle::VaultObject { name, .. } => name.to_ascii_lowercase(),
            CredentialHandle::DirectoryCredential { key_id } => key_id.to_string(),
        };
        RecordId::of(&format!(
            "{}|{}|{}",
            self.source.identity(),
            self.kind,
            handle
        ))
    }

    /// The id of the record of `source`'s password credential `key_id`: what
    /// [`InventoryCredential::id`] gives that record, for a store to find it by its
    /// application and keyId.
    pub fn password_credential_id(source: &CredentialSource, key_id: &KeyId) -> RecordId {
        RecordId::of(&format!(
            "{}|{}|{key_id}",
            source.identity(),
            CredentialKind::PasswordCredential
        ))
    }

    /// For an application's password credential, the application and keyId an
    /// [`Adoption`] names it by; `None` for every other credential (only an application's
    /// client secret can be held in a vault secret keyturn rotates).
    pub fn adoption_key(&self) -> Option<(AppId, KeyId)> {
        match (&self.source, &self.handle, self.kind) {
            (
                CredentialSource::Application { app_id, .. },
                CredentialHandle::DirectoryCredential { key_id },
                CredentialKind::PasswordCredential,
            ) => Some((*app_id, *key_id)),
            _ => None,
        }
    }

    /// The application client secret a vault secret's current version holds, by its
    /// `keyturn-app-id` and `keyturn-key-id` tags (`rotation::tags`; names in any casing,
    /// as Key Vault keeps what a person typed).
    pub fn held_client_secret(&self) -> Option<(AppId, KeyId)> {
        self.client_secret_named_by(KEY_ID_TAG)
    }

    /// The client secret it held before, still in its overlap until keyturn removes it
    /// (`keyturn-previous-key-id`).
    pub fn previous_client_secret(&self) -> Option<(AppId, KeyId)> {
        self.client_secret_named_by(PREVIOUS_KEY_ID_TAG)
    }

    fn client_secret_named_by(&self, key_tag: &str) -> Option<(AppId, KeyId)> {
        if self.source.kind() != SourceKind::Vault || self.kind != CredentialKind::Secret {
            return None;
        }
        let tag = |wanted: &str| {
            self.tags
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
                .map(|(_, value)| value.trim())
        };
        let app_id = tag(APP_ID_TAG).and_then(|v| AppId::parse(v).ok())?;
        let key_id = tag(key_tag).and_then(|v| KeyId::parse(v).ok())?;
        Some((app_id, key_id))
    }

    /// Whether keyturn created it (its name says so, [`KEYTURN_CREDENTIAL_PREFIX`]).
    pub fn named_by_keyturn(&self) -> bool {
        self.name.starts_with(KEYTURN_CREDENTIAL_PREFIX)
    }

    /// Sets whether a directory credential is managed from what marks it: its name, or
    /// an adoption (a managed vault secret holding it). Returns whether that changed it.
    pub fn set_adopted(&mut self, adopted: bool) -> bool {
        let managed = adopted || self.named_by_keyturn();
        let changed = managed != self.managed;
        self.managed = managed;
        changed
    }

    /// When it expires, relative to `now`.
    pub fn expiry_bucket(&self, now: DateTime<Utc>) -> ExpiryBucket {
        ExpiryBucket::of(self.expires, now)
    }

    /// The `keyturn-owner` tag's value, when set (any casing of the tag name).
    pub fn owner_tag(&self) -> Option<&str> {
        self.tags
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(OWNER_TAG))
            .map(|(_, value)| value.as_str())
    }
}

/// An owner of an application or service principal, as Graph lists it. Any field may be
/// missing (an owner without a mail address is common, and is not an error).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub object_id: Option<DirectoryObjectId>,
    pub display_name: Option<String>,
    pub user_principal_name: Option<String>,
    pub mail: Option<String>,
}

impl Owner {
    /// Whether `who` names this owner: its UPN, mail or display name, without case.
    pub fn is(&self, who: &str) -> bool {
        [&self.user_principal_name, &self.mail, &self.display_name]
            .into_iter()
            .flatten()
            .any(|field| field.eq_ignore_ascii_case(who))
    }
}

/// A Key Vault certificate's details (its current version and its policy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateDetails {
    pub issuer: Option<String>,
    pub subject: Option<String>,
    /// `RSA`, `RSA-HSM`, `EC`, `EC-HSM`.
    pub key_type: Option<String>,
    /// RSA modulus bits; `None` for EC (see `curve`).
    pub key_size: Option<u32>,
    pub curve: Option<String>,
    /// SHA-1 thumbprint (`x5t`) in uppercase hex, as the portal shows it.
    pub thumbprint: Option<String>,
    /// The certificate is signed with SHA-1, which no public CA issues any more.
    pub sha1_signature: bool,
    /// The policy's issuer name: `Self`, `Unknown` or a configured CA issuer.
    pub policy_issuer: Option<String>,
    pub lifetime_actions: Vec<LifetimeAction>,
}

impl CertificateDetails {
    /// Whether the policy renews the certificate itself.
    pub fn auto_renews(&self) -> bool {
        self.lifetime_actions
            .iter()
            .any(|action| action.action == LifetimeActionType::AutoRenew)
    }
}

/// One lifetime action of a certificate policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifetimeAction {
    pub action: LifetimeActionType,
    pub trigger: LifetimeTrigger,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifetimeActionType {
    AutoRenew,
    EmailContacts,
}

/// When a lifetime action fires: Key Vault accepts one of the two per action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifetimeTrigger {
    DaysBeforeExpiry(u32),
    LifetimePercentage(u32),
}

/// A Key Vault key's details.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDetails {
    /// `RSA`, `RSA-HSM`, `EC`, `EC-HSM`, `oct-HSM`.
    pub key_type: Option<String>,
    pub key_size: Option<u32>,
    pub curve: Option<String>,
    /// The key has a rotation policy with a rotate action.
    pub rotation_policy: bool,
}

/// What Graph says of a directory credential and the object holding it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryDetails {
    /// Key credentials: `AsymmetricX509Cert`, `X509CertAndPassword`, `Symmetric`.
    pub credential_type: Option<String>,
    /// Key credentials: `Verify` or `Sign`.
    pub usage: Option<String>,
    /// Key credentials: the certificate's SHA-1 thumbprint in uppercase hex
    /// (`customKeyIdentifier`).
    pub thumbprint: Option<String>,
    /// The application's `signInAudience`.
    pub sign_in_audience: Option<String>,
    /// How many federated identity credentials the application has: the credential-free
    /// alternative an alert may suggest.
    pub federated_credentials: Option<u32>,
}

// ---------------------------------------------------------------------------------------
// Expiry

/// Where an expiry falls relative to a moment: the buckets counted in each snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryBucket {
    Expired,
    #[serde(rename = "within_7_days")]
    Within7Days,
    #[serde(rename = "within_30_days")]
    Within30Days,
    #[serde(rename = "within_60_days")]
    Within60Days,
    #[serde(rename = "within_90_days")]
    Within90Days,
    Later,
    NoEndDate,
}

impl ExpiryBucket {
    pub const ALL: [ExpiryBucket; 7] = [
        Self::Expired,
        Self::Within7Days,
        Self::Within30Days,
        Self::Within60Days,
        Self::Within90Days,
        Self::Later,
        Self::NoEndDate,
    ];

    pub fn of(expires: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Self {
        let Some(expires) = expires else {
            return Self::NoEndDate;
        };
        let left = expires - now;
        if left <= TimeDelta::zero() {
            Self::Expired
        } else if left <= TimeDelta::days(7) {
            Self::Within7Days
        } else if left <= TimeDelta::days(30) {
            Self::Within30Days
        } else if left <= TimeDelta::days(60) {
            Self::Within60Days
        } else if left <= TimeDelta::days(90) {
            Self::Within90Days
        } else {
            Self::Later
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Within7Days => "within_7_days",
            Self::Within30Days => "within_30_days",
            Self::Within60Days => "within_60_days",
            Self::Within90Days => "within_90_days",
            Self::Later => "later",
            Self::NoEndDate => "no_end_date",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Vaults

/// How a vault authorises data-plane calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PermissionModel {
    /// Azure RBAC (`enableRbacAuthorization: true`): Key Vault Reader lists metadata and
    /// cannot read a value.
    Rbac,
    /// Vault access policies: a role grants nothing on the data plane; discovery needs an
    /// access policy with `list` (and `get` for certificate policies) only.
    AccessPolicy,
}

/// One Key Vault, with the properties that matter for compliance. `None` where Resource
/// Manager did not say (an older API version, a local vault).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryVault {
    pub subscription: Option<SubscriptionId>,
    pub resource_group: Option<String>,
    pub name: VaultName,
    pub uri: VaultUrl,
    pub location: Option<String>,
    pub soft_delete: Option<bool>,
    pub purge_protection: Option<bool>,
    pub permission_model: PermissionModel,
    /// `Enabled` or `Disabled`, as Resource Manager spells it.
    pub public_network_access: Option<String>,
    pub scanned_at: DateTime<Utc>,
    pub sweep: SweepId,
}

impl InventoryVault {
    /// The vault's stable id: the same as its credentials' source key.
    pub fn id(&self) -> RecordId {
        self.source().key()
    }

    /// The source its credentials name.
    pub fn source(&self) -> CredentialSource {
        CredentialSource::Vault {
            subscription: self.subscription,
            name: self.name.clone(),
            uri: self.uri.clone(),
        }
    }

    /// A vault still in access-policy mode needs a list-only access policy for discovery
    /// (Key Vault Reader cannot list its objects): the inventory flags it.
    pub fn needs_list_only_policy(&self) -> bool {
        self.permission_model == PermissionModel::AccessPolicy
    }
}

// ---------------------------------------------------------------------------------------
// Adoptions

/// An application password credential keyturn adopted: a managed vault secret holds its
/// value and names it by its tags (`keyturn-app-id` with `keyturn-key-id`, or
/// `keyturn-previous-key-id` for the one before, in its overlap). The credential's name
/// does not say so (keyturn did not create it), so the vault job that reads the secret
/// records the adoption, and the directory job that lists the application reads it back:
/// the credential's row is managed whichever job runs first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    pub app_id: AppId,
    pub key_id: KeyId,
    /// The vault secret holding it ([`InventoryCredential::id`]).
    pub holder: RecordId,
    /// The holder's vault ([`CredentialSource::key`]): a complete listing of that vault
    /// retires the adoptions its secrets no longer name.
    pub vault: RecordId,
    /// The sweep that last saw the holder name it.
    pub sweep: SweepId,
}

impl Adoption {
    /// The record's stable id: the credential and the secret holding it.
    pub fn id(&self) -> RecordId {
        RecordId::of(&format!(
            "adoption|{}|{}|{}",
            self.app_id, self.key_id, self.holder
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Findings

/// The part of the tenant a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scope {
    Tenant,
    Subscription {
        subscription: SubscriptionId,
    },
    Vault {
        subscription: Option<SubscriptionId>,
        name: VaultName,
    },
    /// A range of the directory's applications or service principals, as a scan job
    /// pages through it (`range` is the job's own label, for example `apps:0-9`).
    DirectoryPage {
        range: String,
    },
    Application {
        object_id: DirectoryObjectId,
    },
    ServicePrincipal {
        object_id: DirectoryObjectId,
    },
    /// One credential (a malformed date, a credential without an end date).
    Credential {
        id: RecordId,
    },
}

impl Scope {
    fn identity(&self) -> String {
        match self {
            Self::Tenant => "tenant".to_owned(),
            Self::Subscription { subscription } => format!("subscription|{subscription}"),
            // Vault names are unique across Azure (they are DNS labels).
            Self::Vault { name, .. } => format!("vault|{name}"),
            Self::DirectoryPage { range } => format!("directory_page|{range}"),
            Self::Application { object_id } => format!("application|{object_id}"),
            Self::ServicePrincipal { object_id } => format!("service_principal|{object_id}"),
            Self::Credential { id } => format!("credential|{id}"),
        }
    }

    /// The scope's stable id (a Table partition for its findings).
    pub fn key(&self) -> RecordId {
        RecordId::of(&self.identity())
    }
}

/// What was found on a scope. Errors stopped part of the scan; the others are
/// observations the sweep went on past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FindingKind {
    /// The caller may not list here (403 without a firewall code).
    AccessDenied,
    /// The vault's firewall or private link refused the caller.
    NetworkRefused,
    /// The vault was deleted (or is soft-deleted) since it was listed.
    Deleted,
    /// A page of a listing failed after retries.
    PageFailed,
    /// Throttled beyond the configured budget; the scope was left for the next sweep.
    Throttled,
    /// A field did not parse (a malformed date, an unknown kind).
    Malformed,
    /// A credential never expires.
    NoEndDate,
    /// An owner has no mail address: alerts reach them another way or not at all.
    OwnerWithoutMail,
    /// A vault in access-policy mode: it needs a list-only access policy.
    AccessPolicyMode,
}

impl FindingKind {
    /// Whether it stopped the scan of (part of) the scope.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Self::AccessDenied
                | Self::NetworkRefused
                | Self::Deleted
                | Self::PageFailed
                | Self::Throttled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessDenied => "access_denied",
            Self::NetworkRefused => "network_refused",
            Self::Deleted => "deleted",
            Self::PageFailed => "page_failed",
            Self::Throttled => "throttled",
            Self::Malformed => "malformed",
            Self::NoEndDate => "no_end_date",
            Self::OwnerWithoutMail => "owner_without_mail",
            Self::AccessPolicyMode => "access_policy_mode",
        }
    }
}

/// One finding or error on one scope. Its id is its scope and kind (and `subject`), so a
/// rerun that sees the same problem rewrites the same row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeFinding {
    pub scope: Scope,
    pub kind: FindingKind,
    /// What within the scope it is about, when more than one can be (a field name, an
    /// owner's object id); empty otherwise.
    pub subject: String,
    /// A short sentence: what failed and how to fix it. Cut to
    /// [`MAX_FINDING_DETAIL_CHARS`] by [`ScopeFinding::new`].
    pub detail: String,
    pub at: DateTime<Utc>,
    pub sweep: SweepId,
}

impl ScopeFinding {
    pub fn new(
        scope: Scope,
        kind: FindingKind,
        subject: impl Into<String>,
        detail: impl Into<String>,
        at: DateTime<Utc>,
        sweep: SweepId,
    ) -> Self {
        let detail: String = detail.into();
        Self {
            scope,
            kind,
            subject: subject.into(),
            detail: detail.chars().take(MAX_FINDING_DETAIL_CHARS).collect(),
            at,
            sweep,
        }
    }

    pub fn id(&self) -> RecordId {
        RecordId::of(&format!(
            "{}|{}|{}",
            self.scope.identity(),
            self.kind.as_str(),
            self.subject
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Snapshots

/// Counts of one sweep, kept so trends can be drawn later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepSnapshot {
    pub sweep: SweepId,
    pub at: DateTime<Utc>,
    pub credentials: u64,
    pub by_kind: BTreeMap<CredentialKind, u64>,
    pub by_source: BTreeMap<SourceKind, u64>,
    pub by_expiry: BTreeMap<ExpiryBucket, u64>,
    pub managed: u64,
    pub unmanaged: u64,
    pub vaults: u64,
    pub errors: u64,
    pub findings: u64,
    /// The scores of the last `keyturn compliance` run over this sweep's inventory: the
    /// compliance trend's point for this sweep (`None` until one runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance: Option<ComplianceSummary>,
}

impl SweepSnapshot {
    /// An empty snapshot of `sweep` taken at `at`; [`SweepSnapshot::count`] adds to it.
    pub fn new(sweep: SweepId, at: DateTime<Utc>) -> Self {
        Self {
            sweep,
            at,
            credentials: 0,
            by_kind: BTreeMap::new(),
            by_source: BTreeMap::new(),
            by_expiry: BTreeMap::new(),
            managed: 0,
            unmanaged: 0,
            vaults: 0,
            errors: 0,
            findings: 0,
            compliance: None,
        }
    }

    /// Adds one credential, its expiry bucketed at the snapshot's time.
    pub fn count(&mut self, credential: &InventoryCredential) {
        self.credentials += 1;
        *self.by_kind.entry(credential.kind).or_default() += 1;
        *self.by_source.entry(credential.source.kind()).or_default() += 1;
        *self
            .by_expiry
            .entry(credential.expiry_bucket(self.at))
            .or_default() += 1;
        if credential.managed {
            self.managed += 1;
        } else {
            self.unmanaged += 1;
        }
    }

    /// Adds one finding.
    pub fn count_finding(&mut self, finding: &ScopeFinding) {
        if finding.kind.is_error() {
            self.errors += 1;
        } else {
            self.findings += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Filters

/// Which credentials a read returns. Every condition set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialFilter {
    /// Expiring at or before `now + within` (expired ones included); credentials without
    /// an end date never match.
    pub expiring: Option<Expiring>,
    /// Only credentials keyturn does not manage.
    pub unmanaged_only: bool,
    /// Named as an owner (UPN, mail or display name, without case) or by the
    /// [`OWNER_TAG`] tag.
    pub owner: Option<String>,
    pub source_kind: Option<SourceKind>,
    pub kind: Option<CredentialKind>,
}

/// "Expiring within `within` of `now`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiring {
    pub now: DateTime<Utc>,
    pub within: TimeDelta,
}

impl Expiring {
    /// The latest expiry that matches.
    pub fn until(&self) -> DateTime<Utc> {
        self.now + self.within
    }
}

impl CredentialFilter {
    /// Whether `credential` passes. Every adapter applies this last, whatever it could
    /// push down to its backend, so all of them agree.
    pub fn matches(&self, credential: &InventoryCredential) -> bool {
        if let Some(expiring) = &self.expiring {
            match credential.expires {
                Some(expires) if expires <= expiring.until() => {}
                _ => return false,
            }
        }
        if self.unmanaged_only && credential.managed {
            return false;
        }
        if self
            .source_kind
            .is_some_and(|kind| credential.source.kind() != kind)
        {
            return false;
        }
        if self.kind.is_some_and(|kind| credential.kind != kind) {
            return false;
        }
        if let Some(who) = &self.owner {
            let by_tag = credential
                .owner_tag()
                .is_some_and(|tag| tag.eq_ignore_ascii_case(who));
            if !by_tag && !credential.owners.iter().any(|owner| owner.is(who)) {
                return false;
            }
        }
        true
    }
}

/// Parses a span such as `30d` or `12h` (the `--expiring` option).
pub fn parse_within(text: &str) -> Result<TimeDelta, InventoryError> {
    let text = text.trim();
    let (digits, hours) = if let Some(digits) = text.strip_suffix(['d', 'D']) {
        (digits, false)
    } else if let Some(digits) = text.strip_suffix(['h', 'H']) {
        (digits, true)
    } else {
        return Err(InventoryError::Within);
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InventoryError::Within);
    }
    let amount: i64 = digits.parse().map_err(|_| InventoryError::Within)?;
    // Ten years bounds the arithmetic far from overflow and past any credential policy.
    match (hours, amount) {
        (false, 0..=3650) => Ok(TimeDelta::days(amount)),
        (true, 0..=87_600) => Ok(TimeDelta::hours(amount)),
        _ => Err(InventoryError::Within),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn vault_source() -> CredentialSource {
        CredentialSource::Vault {
            subscription: Some(
                SubscriptionId::parse("00000000-0000-0000-0000-000000000001").expect("id"),
            ),
            name: "kv-prod".parse().expect("name"),
            uri: VaultUrl::parse("https://kv-prod.vault.azure.net/").expect("url"),
        }
    }

    fn secret(name: &str) -> InventoryCredential {
        InventoryCredential {
            source: vault_source(),
            kind: CredentialKind::Secret,
            name: name.to_owned(),
            handle: CredentialHandle::VaultObject {
                name: name.to_owned(),
                version: Some("0123456789abcdef0123456789abcdef".to_owned()),
                versions: Some(1),
            },
            enabled: true,
            created: None,
            updated: None,
            not_before: None,
            expires: Some(at("2026-02-01T00:00:00Z")),
            content_type: None,
            tags: BTreeMap::new(),
            certificate: None,
            key: None,
            directory: None,
            owners: Vec::new(),
            managed: false,
            scanned_at: at("2026-01-01T00:00:00Z"),
            sweep: SweepId::parse("s1").expect("sweep"),
        }
    }

    #[test]
    fn a_credential_keeps_its_id_across_sweeps_versions_and_name_casing() {
        let first = secret("db-password");
        let mut later = secret("DB-Password");
        later.sweep = SweepId::parse("s2").expect("sweep");
        later.scanned_at = at("2026-01-02T00:00:00Z");
        later.handle = CredentialHandle::VaultObject {
            name: "DB-Password".to_owned(),
            version: Some("fedcba9876543210fedcba9876543210".to_owned()),
            versions: Some(2),
        };

        assert_eq!(first.id(), later.id());
        assert_eq!(first.source.key(), later.source.key());
    }

    #[test]
    fn credentials_of_different_kinds_or_sources_have_different_ids() {
        let secret = secret("tls");
        let mut certificate = secret.clone();
        certificate.kind = CredentialKind::Certificate;
        let mut elsewhere = secret.clone();
        elsewhere.source = CredentialSource::Vault {
            subscription: None,
            name: "kv-other".parse().expect("name"),
            uri: VaultUrl::parse("https://kv-other.vault.azure.net/").expect("url"),
        };

        assert_ne!(secret.id(), certificate.id());
        assert_ne!(secret.id(), elsewhere.id());
    }

    #[test]
    fn expiry_buckets_split_at_7_30_60_and_90_days_and_no_end_date_is_its_own() {
        let now = at("2026-01-01T00:00:00Z");
        let cases = [
            (Some(at("2025-12-31T23:59:59Z")), ExpiryBucket::Expired),
            (Some(now), ExpiryBucket::Expired),
            (Some(at("2026-01-08T00:00:00Z")), ExpiryBucket::Within7Days),
            (Some(at("2026-01-31T00:00:00Z")), ExpiryBucket::Within30Days),
            (Some(at("2026-03-02T00:00:00Z")), ExpiryBucket::Within60Days),
            (Some(at("2026-04-01T00:00:00Z")), ExpiryBucket::Within90Days),
            (Some(at("2026-04-02T00:00:00Z")), ExpiryBucket::Later),
            (None, ExpiryBucket::NoEndDate),
        ];
        for (expires, bucket) in cases {
            assert_eq!(ExpiryBucket::of(expires, now), bucket, "{expires:?}");
        }
    }

    #[test]
    fn json_names_are_the_names_printed_and_parsed() {
        let json = |value: &dyn Erased| value.json();
        for bucket in ExpiryBucket::ALL {
            assert_eq!(json(&bucket), bucket.as_str());
        }
        for kind in CredentialKind::ALL {
            assert_eq!(json(&kind), kind.as_str());
            assert_eq!(CredentialKind::parse(kind.as_str()), Ok(kind));
        }
        for kind in SourceKind::ALL {
            assert_eq!(json(&kind), kind.as_str());
            assert_eq!(SourceKind::parse(kind.as_str()), Ok(kind));
        }
    }

    /// Serialises any of the enums above to its JSON string.
    trait Erased {
        fn json(&self) -> String;
    }

    impl<T: Serialize> Erased for T {
        fn json(&self) -> String {
            serde_json::to_value(self)
                .expect("serialise")
                .as_str()
                .expect("a string")
                .to_owned()
        }
    }

    #[test]
    fn the_filter_matches_owners_by_upn_mail_display_name_or_tag_without_case() {
        let mut credential = secret("api-key");
        credential.owners.push(Owner {
            object_id: None,
            display_name: Some("Ada Lovelace".to_owned()),
            user_principal_name: Some("ada@contoso.com".to_owned()),
            mail: None,
        });
        let owner = |who: &str| CredentialFilter {
            owner: Some(who.to_owned()),
            ..CredentialFilter::default()
        };

        assert!(owner("ADA@contoso.com").matches(&credential));
        assert!(owner("ada lovelace").matches(&credential));
        assert!(!owner("team-payments").matches(&credential));
        credential
            .tags
            .insert("Keyturn-Owner".to_owned(), "team-payments".to_owned());
        assert!(owner("team-payments").matches(&credential));
    }

    #[test]
    fn expiring_within_includes_expired_and_excludes_no_end_date() {
        let now = at("2026-01-20T00:00:00Z");
        let filter = CredentialFilter {
            expiring: Some(Expiring {
                now,
                within: TimeDelta::days(30),
            }),
            ..CredentialFilter::default()
        };
        let mut expired = secret("old");
        expired.expires = Some(at("2026-01-01T00:00:00Z"));
        let mut later = secret("later");
        later.expires = Some(at("2026-03-01T00:00:00Z"));
        let mut forever = secret("forever");
        forever.expires = None;

        assert!(filter.matches(&secret("soon")));
        assert!(filter.matches(&expired));
        assert!(!filter.matches(&later));
        assert!(!filter.matches(&forever));
    }

    proptest::proptest! {
        #[test]
        fn spans_in_range_parse_exactly_and_past_it_are_refused(
            days in 0i64..=4000,
            hours in 0i64..=90_000,
            pad in " {0,2}",
            upper in proptest::bool::ANY,
        ) {
            let (d, h) = if upper { ("D", "H") } else { ("d", "h") };
            let in_days = parse_within(&format!("{pad}{days}{d}{pad}"));
            let in_hours = parse_within(&format!("{pad}{hours}{h}{pad}"));
            if days <= 3650 {
                proptest::prop_assert_eq!(in_days, Ok(TimeDelta::days(days)));
            } else {
                proptest::prop_assert_eq!(in_days, Err(InventoryError::Within));
            }
            if hours <= 87_600 {
                proptest::prop_assert_eq!(in_hours, Ok(TimeDelta::hours(hours)));
            } else {
                proptest::prop_assert_eq!(in_hours, Err(InventoryError::Within));
            }
        }

        #[test]
        fn any_text_is_a_span_of_at_most_ten_years_or_refused(text in ".{0,24}") {
            if let Ok(span) = parse_within(&text) {
                proptest::prop_assert!(span >= TimeDelta::zero());
                proptest::prop_assert!(span <= TimeDelta::days(3650));
            }
        }
    }

    #[test]
    fn spans_parse_in_days_or_hours_and_refuse_anything_else() {
        assert_eq!(parse_within("30d"), Ok(TimeDelta::days(30)));
        assert_eq!(parse_within("12h"), Ok(TimeDelta::hours(12)));
        for bad in [
            "",
            "d",
            "30",
            "-1d",
            "30w",
            "3651d",
            "1.5d",
            "99999999999999999999d",
            "30é",
            "+3d",
        ] {
            assert_eq!(parse_within(bad), Err(InventoryError::Within), "{bad:?}");
        }
    }

    #[test]
    fn sweep_ids_are_short_safe_text_and_sort_by_start_time() {
        let first = SweepId::starting_at(at("2026-01-01T00:00:00Z"));
        let second = SweepId::starting_at(at("2026-01-01T00:05:00Z"));
        assert_eq!(first.as_str(), "20260101T000000Z");
        assert!(first < second);
        for bad in ["", "a b", "a/b", &"x".repeat(65)] {
            assert_eq!(SweepId::parse(bad), Err(InventoryError::SweepId), "{bad:?}");
        }
    }

    #[test]
    fn rescan_ids_are_sweep_ids_that_sort_among_sweeps_by_time() {
        let sweep = SweepId::starting_at(at("2026-01-01T00:00:05Z"));
        let rescan = SweepId::rescan_at(at("2026-01-01T00:00:05.250Z"));
        let later = SweepId::rescan_at(at("2026-01-01T00:00:05.251Z"));

        assert_eq!(rescan.as_str(), "20260101T000005250Z");
        assert_eq!(SweepId::parse(rescan.as_str()), Ok(rescan.clone()));
        assert!(SweepId::starting_at(at("2026-01-01T00:00:04Z")) < rescan);
        assert!(rescan < later);
        assert!(later < sweep, "a sweep of the same second is the newer");
        assert!(rescan < SweepId::starting_at(at("2026-01-01T00:00:06Z")));
    }

    #[test]
    fn a_credential_round_trips_through_json_with_no_end_date_as_null() {
        let mut credential = secret("forever");
        credential.expires = None;

        let json = serde_json::to_value(&credential).expect("serialise");
        let back: InventoryCredential = serde_json::from_value(json.clone()).expect("parse");

        assert_eq!(back, credential);
        assert!(json["expires"].is_null());
        assert_eq!(json["source"]["kind"], "vault");
        assert_eq!(json["kind"], "secret");
    }

    #[test]
    fn a_finding_detail_is_cut_to_its_limit_and_its_id_ignores_time_and_sweep() {
        let scope = Scope::Vault {
            subscription: None,
            name: "kv-prod".parse().expect("name"),
        };
        let long = "x".repeat(MAX_FINDING_DETAIL_CHARS + 10);
        let first = ScopeFinding::new(
            scope.clone(),
            FindingKind::NetworkRefused,
            "",
            long,
            at("2026-01-01T00:00:00Z"),
            SweepId::parse("s1").expect("sweep"),
        );
        let again = ScopeFinding::new(
            scope,
            FindingKind::NetworkRefused,
            "",
            "refused",
            at("2026-01-02T00:00:00Z"),
            SweepId::parse("s2").expect("sweep"),
        );

        assert_eq!(first.detail.chars().count(), MAX_FINDING_DETAIL_CHARS);
        assert_eq!(first.id(), again.id());
    }
}
