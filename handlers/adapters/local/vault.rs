//! The embedded Key Vault on the local SQLite file: versioned secrets with Key Vault's
//! attributes, values sealed with AES-256-GCM (see `crypto`), local self-signed
//! certificates with their managed backing secrets, and the Key Vault events Azure would
//! raise for them.
//!
//! Each value is sealed under a fresh random nonce, and the store refuses a repeated
//! nonce, so no nonce is ever used twice under one key. The associated data names the
//! vault, object kind, name and version, so a ciphertext copied into another row does
//! not open. A key that is not the store's is refused when the vault opens (a sealed
//! key check), and any record that does not open is an error, never garbage.
//!
//! Events are raised at least once: [`LocalVault::pending_events`] lists what is due
//! and not yet raised, and [`LocalVault::mark_raised`] records delivery, so an event
//! lost with a crash is raised again and a delivered one never is.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params, params_from_iter};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::adapters::local::crypto::{CryptoError, Sealed, VaultKey, WRONG_KEY_MESSAGE};
use crate::adapters::local::store::{LocalStore, StoreError};
use crate::domain::clock::Clock;
use crate::domain::limits::{
    MAX_CONTENT_TYPE_LEN, MAX_SECRET_VALUE_BYTES, MAX_TAG_NAME_LEN, MAX_TAG_VALUE_LEN, MAX_TAGS,
};
use crate::domain::names::{ObjectId, ObjectName, ObjectType, ObjectVersion, VaultName, VaultUrl};
use crate::domain::secret::SecretValue;
use crate::ports::source::{SecretSource, SourcedSecret};
use crate::ports::vault::{
    CertificateOperation, CertificateProperties, CertificateStore, NewSecretVersion, Secret,
    SecretProperties, SecretStore,
};
use crate::ports::{FailureKind, PortError};

/// Key Vault raises `*NearExpiry` this long before an object's expiry (Key Vault's Event
/// Grid schema article: "30 days before expiration").
pub(crate) const NEAR_EXPIRY_LEAD: TimeDelta = TimeDelta::days(30);

/// The issuer of certificates Key Vault signs itself; the only issuer the local vault
/// can renew.
pub(crate) const SELF_ISSUER: &str = "Self";

/// The content type of a certificate's backing secret when the policy asks for PEM.
pub(crate) const PEM_CONTENT_TYPE: &str = "application/x-pem-file";

/// Written sealed when a store is first opened; a key that cannot open it is not the
/// store's key.
const KEY_CHECK: &[u8] = b"keyturn local vault key check";
const KEY_CHECK_ROW: &str = "key-check";
const ASSOCIATED_DATA_PREFIX: &str = "keyturn-local-vault/v1";

/// How often a write retries after losing a race on a nonce or version that another
/// record took. Both are 96 and 128 random bits, so a second attempt is already
/// astronomically unlikely; three keeps a broken random generator from looping.
const UNIQUE_RETRIES: usize = 3;

/// How long a deleted secret's name stays taken: Key Vault's default soft-delete
/// retention, 90 days ("Azure Key Vault soft-delete overview": 7 to 90 days, 90 unless
/// the vault was created with another value).
const SOFT_DELETE_RETENTION: TimeDelta = TimeDelta::days(90);

/// What writing a secret version found.
enum Written {
    Stored(ObjectVersion),
    /// The current version backs a certificate.
    Managed,
    /// The name belongs to a soft-deleted secret.
    Deleted,
}

/// The subscription and resource group in the `topic` of locally raised events; there
/// is no subscription locally and the all-zero GUID says so.
const LOCAL_TOPIC_PREFIX: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/keyturn-local/providers/Microsoft.KeyVault/vaults/";

/// The vault name events carry when a local vault's URL is not under a Key Vault
/// domain (a loopback URL, say).
const LOCAL_VAULT_NAME: &str = "keyturn-local";

/// Why the local vault could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    #[error(transparent)]
    Key(#[from] CryptoError),
    #[error("local vault: {0}")]
    Store(#[from] StoreError),
}

/// A certificate policy as the local vault keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCertificatePolicy {
    /// `Self` for certificates the local vault signs and renews; any other name records
    /// a certificate that needs its issuer, which renewal reports as a failure.
    pub issuer: String,
    /// The subject's common name.
    pub subject: String,
    pub dns_names: Vec<String>,
    pub validity_days: u32,
}

impl LocalCertificatePolicy {
    pub fn self_signed(subject: &str, dns_names: &[&str], validity_days: u32) -> Self {
        Self {
            issuer: SELF_ISSUER.to_owned(),
            subject: subject.to_owned(),
            dns_names: dns_names.iter().map(|d| (*d).to_owned()).collect(),
            validity_days,
        }
    }
}

/// The events Key Vault raises for secrets and certificates that the local vault raises
/// too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalVaultEventKind {
    NewVersionCreated,
    NearExpiry,
    Expired,
}

impl LocalVaultEventKind {
    fn suffix(self) -> &'static str {
        match self {
            Self::NewVersionCreated => "NewVersionCreated",
            Self::NearExpiry => "NearExpiry",
            Self::Expired => "Expired",
        }
    }
}

/// One event the local vault raises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalVaultEvent {
    pub kind: LocalVaultEventKind,
    /// The object and version the event is about (secret or certificate).
    pub object: ObjectId,
    pub not_before: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    /// When Key Vault would have raised it: creation, 30 days before expiry, or expiry.
    pub event_time: DateTime<Utc>,
}

impl LocalVaultEvent {
    /// The Event Grid event type, for example `Microsoft.KeyVault.SecretNearExpiry`.
    pub fn event_type(&self) -> String {
        format!(
            "Microsoft.KeyVault.{}{}",
            self.object.object_type().as_str(),
            self.kind.suffix()
        )
    }

    /// A stable id: the same event raised again (after a crash) keeps its id, as Event
    /// Grid keeps an event's id across delivery retries.
    pub fn id(&self) -> Uuid {
        let digest = Sha256::digest(format!("{}\n{}", self.event_type(), self.object));
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }

    /// The vault's name as events carry it.
    pub(crate) fn vault_name(&self) -> String {
        event_vault_name(self.object.vault())
    }

    /// The event in Event Grid schema, shaped like Key Vault's own (times in `data` as
    /// Unix-seconds strings, as every official example sends them).
    pub fn to_event_grid(&self) -> Value {
        let vault_name = self.vault_name();
        let seconds = |at: Option<DateTime<Utc>>| at.map(|at| at.timestamp().to_string());
        json!({
            "id": self.id().hyphenated().to_string(),
            "topic": format!("{LOCAL_TOPIC_PREFIX}{vault_name}"),
            "subject": self.object.name().as_str(),
            "eventType": self.event_type(),
            "eventTime": self.event_time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "data": {
                "Id": self.object.to_string(),
                "VaultName": vault_name,
                "ObjectType": self.object.object_type().as_str(),
                "ObjectName": self.object.name().as_str(),
                "Version": self.object.version().map(ObjectVersion::as_str),
                "NBF": seconds(self.not_before),
                "EXP": seconds(self.expires),
            },
            "dataVersion": "1",
            "metadataVersion": "1",
        })
    }
}

/// The embedded Key Vault. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LocalVault {
    store: LocalStore,
    key: Arc<VaultKey>,
    clock: Clock,
}

impl LocalVault {
    /// The vault on `store`, sealed with `key`. The first open records a sealed key
    /// check; later opens with another key fail with "the local vault key does not
    /// decrypt this store". `clock` stamps `created`/`updated` and renewals made through
    /// the ports, which carry no `now`.
    pub async fn open(store: LocalStore, key: VaultKey, clock: Clock) -> Result<Self, VaultError> {
        let key = Arc::new(key);
        let candidate = key.seal(KEY_CHECK_ROW.as_bytes(), KEY_CHECK)?;
        let checking = Arc::clone(&key);
        store
            .write(move |tx| {
                tx.execute(
                    "INSERT OR IGNORE INTO vault_meta (key, nonce, ciphertext) VALUES (?1, ?2, ?3)",
                    params![
                        KEY_CHECK_ROW,
                        candidate.nonce.as_slice(),
                        candidate.ciphertext
                    ],
                )
                .map_err(StoreError::sqlite("recording the vault key check"))?;
                let (nonce, ciphertext): (Vec<u8>, Vec<u8>) = tx
                    .query_row(
                        "SELECT nonce, ciphertext FROM vault_meta WHERE key = ?1",
                        [KEY_CHECK_ROW],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .map_err(StoreError::sqlite("reading the vault key check"))?;
                Ok(checking
                    .open(KEY_CHECK_ROW.as_bytes(), &nonce, &ciphertext)
                    .map(|_| ()))
            })
            .await??;
        Ok(Self { store, key, clock })
    }

    /// The key from the `KEYTURN_LOCAL_VAULT_KEY` setting when it is set, otherwise from
    /// the owner-only key file beside the store (created on first use).
    pub fn key_from_setting_or_file(
        setting: Option<&SecretValue>,
        store_path: &Path,
    ) -> Result<VaultKey, CryptoError> {
        match setting {
            Some(text) if !text.expose().trim().is_empty() => {
                VaultKey::from_base64(text.expose(), "KEYTURN_LOCAL_VAULT_KEY")
            }
            _ => VaultKey::load_or_create(&VaultKey::file_beside(store_path)),
        }
    }

    /// The secret endpoint's view of one vault of this store.
    pub fn source(&self, vault: VaultUrl) -> LocalSecretSource {
        LocalSecretSource {
            vault: self.clone(),
            url: vault,
        }
    }

    /// Writes a new secret version as of `now` (what [`SecretStore::set_secret`] does
    /// with the vault's clock). For bootstrap and `keyturn vault set`.
    pub(crate) async fn set_secret_at(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        value: &SecretValue,
        version: NewSecretVersion,
        now: DateTime<Utc>,
    ) -> Result<SecretProperties, PortError> {
        check_tags(&version.tags)?;
        if value.len() > MAX_SECRET_VALUE_BYTES {
            return Err(PortError::invalid(format!(
                "setting secret {name}: the value is {} bytes, over Key Vault's {MAX_SECRET_VALUE_BYTES}-byte limit",
                value.len()
            )));
        }
        if version
            .content_type
            .as_ref()
            .is_some_and(|c| c.chars().count() > MAX_CONTENT_TYPE_LEN)
        {
            return Err(PortError::invalid(format!(
                "setting secret {name}: the content type is over {MAX_CONTENT_TYPE_LEN} characters"
            )));
        }
        let row = NewSecretRow {
            vault: vault.clone(),
            name: name.clone(),
            not_before: version.not_before,
            expires: version.expires,
            content_type: version.content_type,
            tags: version.tags,
            managed: false,
            now,
        };
        let context = format!("setting secret {name} in the local vault");
        for _ in 0..UNIQUE_RETRIES {
            let (object_version, sealed) =
                self.seal_new_version(&row, value.expose().as_bytes())?;
            let attempt = row.clone();
            let result = self
                .store
                .write(move |tx| {
                    if name_is_deleted(tx, &attempt)? {
                        return Ok(Written::Deleted);
                    }
                    if current_is_managed(tx, &attempt)? {
                        return Ok(Written::Managed);
                    }
                    insert_secret_version(tx, &attempt, &object_version, &sealed)?;
                    Ok(Written::Stored(object_version))
                })
                .await;
            match result {
                Ok(Written::Deleted) => {
                    return Err(PortError::new(
                        FailureKind::Conflict,
                        format!(
                            "{context}: ObjectIsDeletedButRecoverable: the secret is deleted and its name stays taken until it is purged"
                        ),
                    ));
                }
                Ok(Written::Stored(object_version)) => {
                    return self
                        .secret_properties(vault, name, Some(&object_version))
                        .await?
                        .ok_or_else(|| PortError::transient(format!("{context}: vanished")));
                }
                Ok(Written::Managed) => {
                    return Err(PortError::new(
                        FailureKind::Conflict,
                        format!(
                            "{context}: the secret backs a certificate and only the certificate may change it"
                        ),
                    ));
                }
                Err(error) => {
                    let error = error.into_port_error(&context);
                    if error.kind != FailureKind::Conflict {
                        return Err(error);
                    }
                }
            }
        }
        Err(PortError::transient(format!(
            "{context}: no unique nonce after {UNIQUE_RETRIES} attempts"
        )))
    }

    fn seal_new_version(
        &self,
        row: &NewSecretRow,
        plaintext: &[u8],
    ) -> Result<(ObjectVersion, Sealed), PortError> {
        let version = new_version();
        let associated = associated_data(&row.vault, ObjectType::Secret, &row.name, &version);
        let sealed = self
            .key
            .seal(associated.as_bytes(), plaintext)
            .map_err(|error| PortError::transient(format!("sealing a secret: {error}")))?;
        Ok((version, sealed))
    }

    /// Creates (or replaces the policy of) a certificate and issues a version carrying
    /// `tags`, valid from `now` for the policy's validity, with its key and certificate as the
    /// managed backing secret (PEM), as Key Vault keeps them. A certificate whose issuer
    /// is not `Self` gets this first version as if it had been imported.
    pub async fn create_certificate(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        policy: LocalCertificatePolicy,
        tags: BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<CertificateProperties, PortError> {
        check_tags(&tags)?;
        if policy.validity_days == 0 || policy.subject.trim().is_empty() {
            return Err(PortError::invalid(format!(
                "creating certificate {name}: the policy needs a subject and at least one day of validity"
            )));
        }
        let tags_text = tags_json(&tags)?;
        let dns_text = serde_json::to_string(&policy.dns_names)
            .map_err(|_| PortError::invalid("creating a certificate: unencodable DNS names"))?;
        let (vault_text, name_key, name_text) = keys(vault, name);
        let policy_row = policy.clone();
        self.store
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO vault_certificates \
                     (vault, name_key, name, issuer, subject, dns_names, validity_days, tags) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (vault, name_key) DO UPDATE SET issuer = ?4, subject = ?5, \
                     dns_names = ?6, validity_days = ?7, tags = ?8",
                    params![
                        vault_text,
                        name_key,
                        name_text,
                        policy_row.issuer,
                        policy_row.subject,
                        dns_text,
                        policy_row.validity_days,
                        tags_text
                    ],
                )
                .map_err(StoreError::sqlite("recording a certificate policy"))?;
                Ok(())
            })
            .await
            .map_err(|error| error.into_port_error("creating a local certificate"))?;
        self.issue_certificate_version(vault, name, &policy, tags, now)
            .await?;
        self.certificate_properties(vault, name)
            .await?
            .ok_or_else(|| PortError::transient("creating a local certificate: vanished"))
    }

    async fn issue_certificate_version(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        policy: &LocalCertificatePolicy,
        tags: BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<ObjectVersion, PortError> {
        let issued = issue_self_signed(policy, now).map_err(|reason| {
            PortError::invalid(format!("issuing certificate {name}: {reason}"))
        })?;
        let row = NewSecretRow {
            vault: vault.clone(),
            name: name.clone(),
            not_before: Some(issued.not_before),
            expires: Some(issued.not_after),
            content_type: Some(PEM_CONTENT_TYPE.to_owned()),
            tags,
            managed: true,
            now,
        };
        let context = format!("issuing certificate {name} in the local vault");
        for _ in 0..UNIQUE_RETRIES {
            let (version, sealed) = self.seal_new_version(&row, issued.pem.expose().as_bytes())?;
            let attempt = row.clone();
            let der = issued.der.clone();
            let x5t = issued.x5t_hex.clone();
            let written = version.clone();
            let result = self
                .store
                .write(move |tx| {
                    let (vault_text, name_key, _) = keys(&attempt.vault, &attempt.name);
                    tx.execute(
                        "INSERT INTO vault_certificate_versions \
                         (vault, name_key, version, enabled, not_before, expires, created, x5t, cer) \
                         VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8)",
                        params![
                            vault_text,
                            name_key,
                            written.as_str(),
                            seconds(attempt.not_before),
                            seconds(attempt.expires),
                            attempt.now.timestamp(),
                            x5t,
                            der
                        ],
                    )
                    .map_err(StoreError::sqlite("recording a certificate version"))?;
                    insert_secret_version(tx, &attempt, &written, &sealed)?;
                    Ok(())
                })
                .await;
            match result {
                Ok(()) => return Ok(version),
                Err(error) => {
                    let error = error.into_port_error(&context);
                    if error.kind != FailureKind::Conflict {
                        return Err(error);
                    }
                }
            }
        }
        Err(PortError::transient(format!(
            "{context}: no unique nonce after {UNIQUE_RETRIES} attempts"
        )))
    }

    /// Events that are due at `now` and not yet raised: `NewVersionCreated` for every
    /// version, and `NearExpiry` (from 30 days before expiry) or `Expired` (from expiry)
    /// for the current, enabled version. Certificates' managed backing secrets raise
    /// certificate events only. Oldest first.
    pub async fn pending_events(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<LocalVaultEvent>, PortError> {
        let rows = self
            .store
            .call(move |connection| {
                let mut rows = event_rows(connection, ObjectType::Secret)?;
                rows.extend(event_rows(connection, ObjectType::Certificate)?);
                let raised = raised_events(connection)?;
                Ok((rows, raised))
            })
            .await
            .map_err(|error| error.into_port_error("listing local vault events"))?;
        let (rows, raised) = rows;
        let mut events = Vec::new();
        for row in rows {
            let object = row.object_id()?;
            let not_before = time_of(row.not_before)?;
            let expires = time_of(row.expires)?;
            let created = time_of(Some(row.created))?.unwrap_or(now);
            let mut due = Vec::new();
            if created <= now {
                due.push((LocalVaultEventKind::NewVersionCreated, created));
            }
            if let (true, true, Some(expires)) = (row.current, row.enabled, expires) {
                // At the very start of chrono's range there is no "30 days before".
                let near = expires
                    .checked_sub_signed(NEAR_EXPIRY_LEAD)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC);
                if now >= expires {
                    due.push((LocalVaultEventKind::Expired, expires));
                } else if now >= near {
                    due.push((LocalVaultEventKind::NearExpiry, near));
                }
            }
            for (kind, event_time) in due {
                let key = (
                    row.vault.clone(),
                    row.object_type.as_str().to_owned(),
                    row.name_key.clone(),
                    row.version.clone(),
                    kind.suffix().to_owned(),
                );
                if !raised.contains(&key) {
                    events.push(LocalVaultEvent {
                        kind,
                        object: object.clone(),
                        not_before,
                        expires,
                        event_time,
                    });
                }
            }
        }
        events.sort_by_key(|e| e.event_time);
        Ok(events)
    }

    /// Records that `event` was delivered, so it is never raised again.
    pub async fn mark_raised(
        &self,
        event: &LocalVaultEvent,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        let version = event
            .object
            .version()
            .ok_or_else(|| PortError::invalid("an event names a version"))?
            .as_str()
            .to_owned();
        let (vault_text, name_key, _) = keys(event.object.vault(), event.object.name());
        let object_type = event.object.object_type().as_str();
        let kind = event.kind.suffix();
        self.store
            .write(move |tx| {
                tx.execute(
                    "INSERT OR IGNORE INTO vault_events_raised \
                     (vault, object_type, name_key, version, event_type, raised_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        vault_text,
                        object_type,
                        name_key,
                        version,
                        kind,
                        now.timestamp()
                    ],
                )
                .map_err(StoreError::sqlite("recording a raised event"))?;
                Ok(())
            })
            .await
            .map_err(|error| error.into_port_error("recording a local vault event"))
    }

    /// The metadata of every secret version `sql` selects (its columns
    /// [`SECRET_COLUMNS`], its parameters bound in order), values left unread.
    async fn list_properties(
        &self,
        vault: &VaultUrl,
        sql: String,
        parameters: Vec<String>,
        operation: &'static str,
        context: &str,
    ) -> Result<Vec<SecretProperties>, PortError> {
        let rows = self
            .store
            .call(move |connection| {
                let mut statement = connection
                    .prepare(&sql)
                    .map_err(StoreError::sqlite(operation))?;
                let rows = statement
                    .query_map(params_from_iter(parameters), |row| secret_row(row, false))
                    .map_err(StoreError::sqlite(operation))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::sqlite(operation))?;
                Ok(rows)
            })
            .await
            .map_err(|error| error.into_port_error(context))?;
        rows.iter().map(|row| row.properties(vault)).collect()
    }

    async fn query_secret(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: Option<&ObjectVersion>,
        with_value: bool,
    ) -> Result<Option<SecretRow>, PortError> {
        let (vault_text, name_key, _) = keys(vault, name);
        let version = version.map(|v| v.as_str().to_owned());
        self.store
            .call(move |connection| {
                let sql = match version {
                    Some(_) => format!(
                        "SELECT {SECRET_COLUMNS} FROM vault_secret_versions \
                         WHERE vault = ?1 AND name_key = ?2 AND version = ?3"
                    ),
                    None => format!(
                        "SELECT {SECRET_COLUMNS} FROM vault_secret_versions \
                         WHERE vault = ?1 AND name_key = ?2 AND ?3 IS NULL ORDER BY id DESC LIMIT 1"
                    ),
                };
                connection
                    .query_row(&sql, params![vault_text, name_key, version], |row| {
                        secret_row(row, with_value)
                    })
                    .optional()
                    .map_err(StoreError::sqlite("reading a secret"))
            })
            .await
            .map_err(|error| error.into_port_error("reading a local secret"))
    }

    fn open_value(&self, vault: &VaultUrl, row: &SecretRow) -> Result<SecretValue, PortError> {
        let name = parse_name(&row.name)?;
        let version = parse_version(&row.version)?;
        let associated = associated_data(vault, ObjectType::Secret, &name, &version);
        let (nonce, ciphertext) = row
            .sealed
            .as_ref()
            .ok_or_else(|| PortError::invalid("reading a local secret: the value was not read"))?;
        let plaintext = self
            .key
            .open(associated.as_bytes(), nonce, ciphertext)
            .map_err(|_| PortError::invalid(WRONG_KEY_MESSAGE))?;
        let text = std::str::from_utf8(&plaintext)
            .map_err(|_| PortError::invalid("reading a local secret: the value is not UTF-8"))?;
        Ok(SecretValue::new(text))
    }

    async fn certificate_rows(
        &self,
        vault: &VaultUrl,
        name: Option<&ObjectName>,
    ) -> Result<Vec<CertificateRow>, PortError> {
        let vault_text = vault.as_str().to_owned();
        let name_key = name.map(|n| n.as_str().to_ascii_lowercase());
        self.store
            .call(move |connection| {
                let mut statement = connection
                    .prepare(
                        "SELECT c.name, v.version, v.enabled, v.not_before, v.expires, s.tags, v.x5t \
                         FROM vault_certificates c JOIN vault_certificate_versions v \
                         ON v.vault = c.vault AND v.name_key = c.name_key \
                         JOIN vault_secret_versions s \
                         ON s.vault = v.vault AND s.name_key = v.name_key AND s.version = v.version \
                         WHERE c.vault = ?1 AND (?2 IS NULL OR c.name_key = ?2) \
                         AND v.id = (SELECT MAX(w.id) FROM vault_certificate_versions w \
                                     WHERE w.vault = c.vault AND w.name_key = c.name_key) \
                         ORDER BY c.name_key",
                    )
                    .map_err(StoreError::sqlite("listing certificates"))?;
                let rows = statement
                    .query_map(params![vault_text, name_key], |row| {
                        Ok(CertificateRow {
                            name: row.get(0)?,
                            version: row.get(1)?,
                            enabled: row.get(2)?,
                            not_before: row.get(3)?,
                            expires: row.get(4)?,
                            tags: row.get(5)?,
                            x5t: row.get(6)?,
                        })
                    })
                    .map_err(StoreError::sqlite("listing certificates"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::sqlite("listing certificates"))?;
                Ok(rows)
            })
            .await
            .map_err(|error| error.into_port_error("listing local certificates"))
    }

    async fn certificate_policy(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<LocalCertificatePolicy, PortError> {
        let (vault_text, name_key, _) = keys(vault, name);
        let row: Option<(String, String, String, i64)> = self
            .store
            .call(move |connection| {
                connection
                    .query_row(
                        "SELECT issuer, subject, dns_names, validity_days \
                         FROM vault_certificates WHERE vault = ?1 AND name_key = ?2",
                        params![vault_text, name_key],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                    )
                    .optional()
                    .map_err(StoreError::sqlite("reading a certificate policy"))
            })
            .await
            .map_err(|error| error.into_port_error("reading a local certificate policy"))?;
        let (issuer, subject, dns_names, validity_days) = row.ok_or_else(|| {
            PortError::new(
                FailureKind::NotFound,
                format!("certificate {name} does not exist"),
            )
        })?;
        let dns_names: Vec<String> = serde_json::from_str(&dns_names).map_err(|_| {
            PortError::invalid("a local certificate policy has unreadable DNS names")
        })?;
        let validity_days = u32::try_from(validity_days).map_err(|_| {
            PortError::invalid("a local certificate policy has an unreadable validity")
        })?;
        Ok(LocalCertificatePolicy {
            issuer,
            subject,
            dns_names,
            validity_days,
        })
    }

    async fn record_operation(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        operation: &CertificateOperation,
    ) -> Result<(), PortError> {
        let (vault_text, name_key, _) = keys(vault, name);
        let (status, version, code) = match operation {
            CertificateOperation::InProgress => ("inProgress", None, None),
            CertificateOperation::Completed { version } => {
                ("completed", Some(version.as_str().to_owned()), None)
            }
            CertificateOperation::Failed { code } => ("failed", None, Some(code.clone())),
            CertificateOperation::Cancelled => ("cancelled", None, None),
        };
        self.store
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO vault_certificate_operations (vault, name_key, status, version, error_code) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (vault, name_key) \
                     DO UPDATE SET status = ?3, version = ?4, error_code = ?5",
                    params![vault_text, name_key, status, version, code],
                )
                .map_err(StoreError::sqlite("recording a certificate operation"))?;
                Ok(())
            })
            .await
            .map_err(|error| error.into_port_error("recording a local certificate operation"))
    }
}

#[async_trait]
impl SecretStore for LocalVault {
    async fn list_secrets(&self, vault: &VaultUrl) -> Result<Vec<SecretProperties>, PortError> {
        let sql = format!(
            "SELECT {SECRET_COLUMNS} FROM vault_secret_versions v WHERE vault = ?1 \
             AND id = (SELECT MAX(w.id) FROM vault_secret_versions w \
                       WHERE w.vault = v.vault AND w.name_key = v.name_key) \
             ORDER BY name_key"
        );
        let parameters = vec![vault.as_str().to_owned()];
        self.list_properties(
            vault,
            sql,
            parameters,
            "listing secrets",
            "listing local secrets",
        )
        .await
    }

    async fn secret_properties(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: Option<&ObjectVersion>,
    ) -> Result<Option<SecretProperties>, PortError> {
        self.query_secret(vault, name, version, false)
            .await?
            .map(|row| row.properties(vault))
            .transpose()
    }

    async fn list_versions(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<Vec<SecretProperties>, PortError> {
        let (vault_text, name_key, _) = keys(vault, name);
        let sql = format!(
            "SELECT {SECRET_COLUMNS} FROM vault_secret_versions \
             WHERE vault = ?1 AND name_key = ?2 ORDER BY id"
        );
        self.list_properties(
            vault,
            sql,
            vec![vault_text, name_key],
            "listing secret versions",
            "listing local secret versions",
        )
        .await
    }

    async fn secret(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: Option<&ObjectVersion>,
    ) -> Result<Option<Secret>, PortError> {
        let Some(row) = self.query_secret(vault, name, version, true).await? else {
            return Ok(None);
        };
        Ok(Some(Secret {
            properties: row.properties(vault)?,
            value: self.open_value(vault, &row)?,
        }))
    }

    async fn set_secret(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        value: &SecretValue,
        version: NewSecretVersion,
    ) -> Result<SecretProperties, PortError> {
        self.set_secret_at(vault, name, value, version, self.clock.now())
            .await
    }

    async fn update_tags(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: &ObjectVersion,
        tags: BTreeMap<String, String>,
    ) -> Result<SecretProperties, PortError> {
        check_tags(&tags)?;
        let tags_text = tags_json(&tags)?;
        let (vault_text, name_key, _) = keys(vault, name);
        let version_text = version.as_str().to_owned();
        let now = self.clock.now().timestamp();
        let changed = self
            .store
            .write(move |tx| {
                tx.execute(
                    "UPDATE vault_secret_versions SET tags = ?4, updated = ?5 \
                     WHERE vault = ?1 AND name_key = ?2 AND version = ?3",
                    params![vault_text, name_key, version_text, tags_text, now],
                )
                .map_err(StoreError::sqlite("updating secret tags"))
            })
            .await
            .map_err(|error| error.into_port_error("updating local secret tags"))?;
        if changed == 0 {
            return Err(not_found_secret(name));
        }
        self.secret_properties(vault, name, Some(version))
            .await?
            .ok_or_else(|| not_found_secret(name))
    }

    async fn delete_secret(&self, vault: &VaultUrl, name: &ObjectName) -> Result<(), PortError> {
        let (vault_text, name_key, name_text) = keys(vault, name);
        let now = self.clock.now();
        let purge_at = now
            .checked_add_signed(SOFT_DELETE_RETENTION)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
            .timestamp();
        let now = now.timestamp();
        let found = self
            .store
            .write(move |tx| {
                let managed: Option<bool> = tx
                    .query_row(
                        "SELECT MAX(managed) FROM vault_secret_versions \
                         WHERE vault = ?1 AND name_key = ?2 HAVING COUNT(*) > 0",
                        params![vault_text, name_key],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(StoreError::sqlite("reading a secret to delete"))?;
                match managed {
                    None => return Ok(None),
                    Some(true) => return Ok(Some(false)),
                    Some(false) => {}
                }
                tx.execute(
                    "DELETE FROM vault_secret_versions WHERE vault = ?1 AND name_key = ?2",
                    params![vault_text, name_key],
                )
                .map_err(StoreError::sqlite("deleting a secret"))?;
                tx.execute(
                    "INSERT OR REPLACE INTO vault_secrets_deleted \
                     (vault, name_key, name, deleted_at, purge_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![vault_text, name_key, name_text, now, purge_at],
                )
                .map_err(StoreError::sqlite("recording a deleted secret"))?;
                Ok(Some(true))
            })
            .await
            .map_err(|error| error.into_port_error("deleting a local secret"))?;
        match found {
            None => Err(PortError::new(
                FailureKind::NotFound,
                format!("deleting secret {name}: it does not exist"),
            )),
            // Key Vault refuses to delete a certificate's backing secret on its own.
            Some(false) => Err(PortError::new(
                FailureKind::Conflict,
                format!("deleting secret {name}: it backs a certificate; delete the certificate"),
            )),
            Some(true) => Ok(()),
        }
    }
}

#[async_trait]
impl CertificateStore for LocalVault {
    async fn list_certificates(
        &self,
        vault: &VaultUrl,
    ) -> Result<Vec<CertificateProperties>, PortError> {
        self.certificate_rows(vault, None)
            .await?
            .iter()
            .map(|row| row.properties(vault))
            .collect()
    }

    async fn certificate_properties(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<Option<CertificateProperties>, PortError> {
        self.certificate_rows(vault, Some(name))
            .await?
            .first()
            .map(|row| row.properties(vault))
            .transpose()
    }

    async fn issuer(&self, vault: &VaultUrl, name: &ObjectName) -> Result<String, PortError> {
        Ok(self.certificate_policy(vault, name).await?.issuer)
    }

    /// Renewal completes at once: the local vault signs its own certificates, so there
    /// is no issuer to wait for. Issuers other than `Self` cannot be reached locally and
    /// fail with `UnsupportedIssuer`, as a certificate needing manual renewal would.
    async fn begin_renewal(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<CertificateOperation, PortError> {
        let policy = self.certificate_policy(vault, name).await?;
        let operation = if policy.issuer.eq_ignore_ascii_case(SELF_ISSUER) {
            // Tags belong to a version: the new one is given the current version's.
            let tags = self
                .certificate_properties(vault, name)
                .await?
                .map(|current| current.tags)
                .unwrap_or_default();
            let version = self
                .issue_certificate_version(vault, name, &policy, tags, self.clock.now())
                .await?;
            CertificateOperation::Completed { version }
        } else {
            CertificateOperation::Failed {
                code: "UnsupportedIssuer".to_owned(),
            }
        };
        self.record_operation(vault, name, &operation).await?;
        Ok(operation)
    }

    async fn renewal_status(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<CertificateOperation, PortError> {
        let (vault_text, name_key, _) = keys(vault, name);
        let row: Option<(String, Option<String>, Option<String>)> = self
            .store
            .call(move |connection| {
                connection
                    .query_row(
                        "SELECT status, version, error_code FROM vault_certificate_operations \
                         WHERE vault = ?1 AND name_key = ?2",
                        params![vault_text, name_key],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                    )
                    .optional()
                    .map_err(StoreError::sqlite("reading a certificate operation"))
            })
            .await
            .map_err(|error| error.into_port_error("reading a local certificate operation"))?;
        let (status, version, code) = row.ok_or_else(|| {
            PortError::new(
                FailureKind::NotFound,
                format!("certificate {name} has no pending or past operation"),
            )
        })?;
        match (status.as_str(), version) {
            ("inProgress", _) => Ok(CertificateOperation::InProgress),
            ("completed", Some(version)) => Ok(CertificateOperation::Completed {
                version: parse_version(&version)?,
            }),
            ("failed", _) => Ok(CertificateOperation::Failed {
                code: code.unwrap_or_default(),
            }),
            ("cancelled", _) => Ok(CertificateOperation::Cancelled),
            _ => Err(PortError::invalid(
                "a local certificate operation is unreadable",
            )),
        }
    }
}

/// The secret endpoint's source over one vault of the local store.
#[derive(Debug, Clone)]
pub struct LocalSecretSource {
    vault: LocalVault,
    url: VaultUrl,
}

#[async_trait]
impl SecretSource for LocalSecretSource {
    async fn fetch(
        &self,
        name: &ObjectName,
        now: DateTime<Utc>,
    ) -> Result<Option<SourcedSecret>, PortError> {
        let Some(secret) = self.vault.secret(&self.url, name, None).await? else {
            return Ok(None);
        };
        Ok(SourcedSecret::from_vault(secret, now))
    }
}

const SECRET_COLUMNS: &str = "name, version, enabled, not_before, expires, created, updated, \
    content_type, tags, managed, nonce, ciphertext";

#[derive(Debug, Clone)]
struct NewSecretRow {
    vault: VaultUrl,
    name: ObjectName,
    not_before: Option<DateTime<Utc>>,
    expires: Option<DateTime<Utc>>,
    content_type: Option<String>,
    tags: BTreeMap<String, String>,
    managed: bool,
    now: DateTime<Utc>,
}

struct SecretRow {
    name: String,
    version: String,
    enabled: bool,
    not_before: Option<i64>,
    expires: Option<i64>,
    created: i64,
    updated: i64,
    content_type: Option<String>,
    tags: String,
    managed: bool,
    sealed: Option<(Vec<u8>, Vec<u8>)>,
}

impl SecretRow {
    fn properties(&self, vault: &VaultUrl) -> Result<SecretProperties, PortError> {
        Ok(SecretProperties {
            id: vault.object_id(
                ObjectType::Secret,
                parse_name(&self.name)?,
                Some(parse_version(&self.version)?),
            ),
            enabled: self.enabled,
            not_before: time_of(self.not_before)?,
            expires: time_of(self.expires)?,
            created: time_of(Some(self.created))?,
            updated: time_of(Some(self.updated))?,
            content_type: self.content_type.clone(),
            tags: parse_tags(&self.tags)?,
            managed: self.managed,
        })
    }
}

fn secret_row(row: &Row<'_>, with_value: bool) -> rusqlite::Result<SecretRow> {
    Ok(SecretRow {
        name: row.get("name")?,
        version: row.get("version")?,
        enabled: row.get("enabled")?,
        not_before: row.get("not_before")?,
        expires: row.get("expires")?,
        created: row.get("created")?,
        updated: row.get("updated")?,
        content_type: row.get("content_type")?,
        tags: row.get("tags")?,
        managed: row.get("managed")?,
        sealed: if with_value {
            Some((row.get("nonce")?, row.get("ciphertext")?))
        } else {
            None
        },
    })
}

struct CertificateRow {
    name: String,
    version: String,
    enabled: bool,
    not_before: i64,
    expires: i64,
    tags: String,
    x5t: String,
}

impl CertificateRow {
    fn properties(&self, vault: &VaultUrl) -> Result<CertificateProperties, PortError> {
        Ok(CertificateProperties {
            id: vault.object_id(
                ObjectType::Certificate,
                parse_name(&self.name)?,
                Some(parse_version(&self.version)?),
            ),
            enabled: self.enabled,
            not_before: time_of(Some(self.not_before))?,
            expires: time_of(Some(self.expires))?,
            tags: parse_tags(&self.tags)?,
            x5t_hex: Some(self.x5t.clone()),
        })
    }
}

/// A version as events see it.
struct EventRow {
    object_type: ObjectType,
    vault: String,
    name_key: String,
    name: String,
    version: String,
    enabled: bool,
    not_before: Option<i64>,
    expires: Option<i64>,
    created: i64,
    current: bool,
}

impl EventRow {
    fn object_id(&self) -> Result<ObjectId, PortError> {
        let vault = VaultUrl::parse(&self.vault)
            .map_err(|_| PortError::invalid("the local vault holds an unreadable vault URL"))?;
        Ok(vault.object_id(
            self.object_type,
            parse_name(&self.name)?,
            Some(parse_version(&self.version)?),
        ))
    }
}

fn event_rows(
    connection: &Connection,
    object_type: ObjectType,
) -> Result<Vec<EventRow>, StoreError> {
    let source = match object_type {
        ObjectType::Certificate => {
            "(SELECT v.id, v.vault, v.name_key, c.name, v.version, v.enabled, v.not_before, \
             v.expires, v.created FROM vault_certificate_versions v JOIN vault_certificates c \
             ON c.vault = v.vault AND c.name_key = v.name_key)"
        }
        _ => {
            "(SELECT id, vault, name_key, name, version, enabled, not_before, expires, created \
             FROM vault_secret_versions WHERE managed = 0)"
        }
    };
    let mut statement = connection
        .prepare(&format!(
            "SELECT o.vault, o.name_key, o.name, o.version, o.enabled, o.not_before, o.expires, \
             o.created, o.id = (SELECT MAX(p.id) FROM {source} p \
                                WHERE p.vault = o.vault AND p.name_key = o.name_key) \
             FROM {source} o ORDER BY o.id"
        ))
        .map_err(StoreError::sqlite("listing versions for events"))?;
    let rows = statement
        .query_map([], |row| {
            Ok(EventRow {
                object_type,
                vault: row.get(0)?,
                name_key: row.get(1)?,
                name: row.get(2)?,
                version: row.get(3)?,
                enabled: row.get(4)?,
                not_before: row.get(5)?,
                expires: row.get(6)?,
                created: row.get(7)?,
                current: row.get(8)?,
            })
        })
        .map_err(StoreError::sqlite("listing versions for events"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(StoreError::sqlite("listing versions for events"))?;
    Ok(rows)
}

type RaisedKey = (String, String, String, String, String);

fn raised_events(connection: &Connection) -> Result<HashSet<RaisedKey>, StoreError> {
    let mut statement = connection
        .prepare(
            "SELECT vault, object_type, name_key, version, event_type FROM vault_events_raised",
        )
        .map_err(StoreError::sqlite("listing raised events"))?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .map_err(StoreError::sqlite("listing raised events"))?
        .collect::<Result<HashSet<_>, _>>()
        .map_err(StoreError::sqlite("listing raised events"))?;
    Ok(rows)
}

/// Whether the name belongs to a soft-deleted secret not yet purged; one whose retention
/// has passed is purged here.
fn name_is_deleted(tx: &Transaction<'_>, row: &NewSecretRow) -> Result<bool, StoreError> {
    let (vault_text, name_key, _) = keys(&row.vault, &row.name);
    let purge_at: Option<i64> = tx
        .query_row(
            "SELECT purge_at FROM vault_secrets_deleted WHERE vault = ?1 AND name_key = ?2",
            params![vault_text, name_key],
            |r| r.get(0),
        )
        .optional()
        .map_err(StoreError::sqlite("reading deleted secrets"))?;
    match purge_at {
        Some(at) if at > row.now.timestamp() => Ok(true),
        Some(_) => {
            tx.execute(
                "DELETE FROM vault_secrets_deleted WHERE vault = ?1 AND name_key = ?2",
                params![vault_text, name_key],
            )
            .map_err(StoreError::sqlite("purging a deleted secret"))?;
            Ok(false)
        }
        None => Ok(false),
    }
}

fn current_is_managed(tx: &Transaction<'_>, row: &NewSecretRow) -> Result<bool, StoreError> {
    let (vault_text, name_key, _) = keys(&row.vault, &row.name);
    let managed: Option<bool> = tx
        .query_row(
            "SELECT managed FROM vault_secret_versions WHERE vault = ?1 AND name_key = ?2 \
             ORDER BY id DESC LIMIT 1",
            params![vault_text, name_key],
            |r| r.get(0),
        )
        .optional()
        .map_err(StoreError::sqlite("reading the current secret version"))?;
    Ok(managed.unwrap_or(false))
}

fn insert_secret_version(
    tx: &Transaction<'_>,
    row: &NewSecretRow,
    version: &ObjectVersion,
    sealed: &Sealed,
) -> Result<(), StoreError> {
    let (vault_text, name_key, name_text) = keys(&row.vault, &row.name);
    let tags = serde_json::to_string(&row.tags).map_err(|_| StoreError::Sqlite {
        operation: "encoding tags",
        source: rusqlite::Error::InvalidQuery,
    })?;
    tx.execute(
        "INSERT INTO vault_secret_versions (vault, name_key, name, version, enabled, not_before, \
         expires, created, updated, content_type, tags, managed, nonce, ciphertext) \
         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            vault_text,
            name_key,
            name_text,
            version.as_str(),
            seconds(row.not_before),
            seconds(row.expires),
            row.now.timestamp(),
            row.content_type,
            tags,
            row.managed,
            sealed.nonce.as_slice(),
            sealed.ciphertext
        ],
    )
    .map_err(StoreError::sqlite("inserting a secret version"))?;
    Ok(())
}

struct IssuedCertificate {
    der: Vec<u8>,
    x5t_hex: String,
    pem: SecretValue,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
}

fn issue_self_signed(
    policy: &LocalCertificatePolicy,
    now: DateTime<Utc>,
) -> Result<IssuedCertificate, String> {
    // X.509 carries whole seconds; Key Vault reports seconds too.
    let not_before = DateTime::from_timestamp(now.timestamp(), 0).ok_or("time out of range")?;
    let not_after = not_before
        .checked_add_signed(TimeDelta::days(i64::from(policy.validity_days)))
        .ok_or("the validity ends beyond representable time")?;
    let to_offset = |at: DateTime<Utc>| {
        time::OffsetDateTime::from_unix_timestamp(at.timestamp())
            .map_err(|_| "time out of range".to_owned())
    };
    let mut params = rcgen::CertificateParams::new(policy.dns_names.clone())
        .map_err(|_| "a DNS name is not valid".to_owned())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, policy.subject.clone());
    params.not_before = to_offset(not_before)?;
    params.not_after = to_offset(not_after)?;
    let key_pair = rcgen::KeyPair::generate().map_err(|_| "key generation failed".to_owned())?;
    let certificate = params
        .self_signed(&key_pair)
        .map_err(|_| "signing failed".to_owned())?;
    let der = certificate.der().to_vec();
    let x5t = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
    let pem = zeroize::Zeroizing::new(format!("{}{}", key_pair.serialize_pem(), certificate.pem()));
    Ok(IssuedCertificate {
        x5t_hex: hex::encode(x5t.as_ref()),
        der,
        pem: SecretValue::new(pem.as_str()),
        not_before,
        not_after,
    })
}

fn associated_data(
    vault: &VaultUrl,
    object_type: ObjectType,
    name: &ObjectName,
    version: &ObjectVersion,
) -> String {
    format!(
        "{ASSOCIATED_DATA_PREFIX}\n{}\n{}\n{}\n{}",
        vault.as_str(),
        object_type.as_str(),
        name.as_str().to_ascii_lowercase(),
        version.as_str()
    )
}

/// The stored vault, the case-folded name key (Key Vault names compare without case)
/// and the name as given.
fn keys(vault: &VaultUrl, name: &ObjectName) -> (String, String, String) {
    (
        vault.as_str().to_owned(),
        name.as_str().to_ascii_lowercase(),
        name.as_str().to_owned(),
    )
}

fn new_version() -> ObjectVersion {
    ObjectVersion::parse(&Uuid::new_v4().simple().to_string())
        .expect("invariant: a simple UUID is 32 hexadecimal characters")
}

fn event_vault_name(vault: &VaultUrl) -> String {
    if let Some(name) = vault.vault_name() {
        return name.as_str().to_owned();
    }
    vault
        .url()
        .host_str()
        .and_then(|host| host.split('.').next())
        .and_then(|label| VaultName::parse(label).ok())
        .map_or_else(
            || LOCAL_VAULT_NAME.to_owned(),
            |name| name.as_str().to_owned(),
        )
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), PortError> {
    if tags.len() > MAX_TAGS {
        return Err(PortError::invalid(format!(
            "Key Vault allows at most {MAX_TAGS} tags, found {}",
            tags.len()
        )));
    }
    for (name, value) in tags {
        if name.is_empty() || name.chars().count() > MAX_TAG_NAME_LEN {
            return Err(PortError::invalid(format!(
                "a tag name must be 1 to {MAX_TAG_NAME_LEN} characters"
            )));
        }
        if value.chars().count() > MAX_TAG_VALUE_LEN {
            return Err(PortError::invalid(format!(
                "tag {name}'s value is over {MAX_TAG_VALUE_LEN} characters"
            )));
        }
    }
    Ok(())
}

fn tags_json(tags: &BTreeMap<String, String>) -> Result<String, PortError> {
    serde_json::to_string(tags).map_err(|_| PortError::invalid("tags cannot be encoded"))
}

fn parse_tags(text: &str) -> Result<BTreeMap<String, String>, PortError> {
    serde_json::from_str(text)
        .map_err(|_| PortError::invalid("the local vault holds unreadable tags"))
}

fn parse_name(text: &str) -> Result<ObjectName, PortError> {
    ObjectName::parse(text)
        .map_err(|_| PortError::invalid("the local vault holds an unreadable object name"))
}

fn parse_version(text: &str) -> Result<ObjectVersion, PortError> {
    ObjectVersion::parse(text)
        .map_err(|_| PortError::invalid("the local vault holds an unreadable version"))
}

fn seconds(at: Option<DateTime<Utc>>) -> Option<i64> {
    at.map(|at| at.timestamp())
}

fn time_of(seconds: Option<i64>) -> Result<Option<DateTime<Utc>>, PortError> {
    seconds
        .map(|s| {
            DateTime::from_timestamp(s, 0)
                .ok_or_else(|| PortError::invalid("the local vault holds an unreadable time"))
        })
        .transpose()
}

fn not_found_secret(name: &ObjectName) -> PortError {
    PortError::new(
        FailureKind::NotFound,
        format!("secret {name} (that version) does not exist"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn associated_data_names_vault_kind_name_and_version() {
        let vault = VaultUrl::parse("https://kv-a.vault.azure.net/").expect("url");
        let name = ObjectName::parse("Db-Password").expect("name");
        let version = new_version();

        let bound = associated_data(&vault, ObjectType::Secret, &name, &version);

        assert!(bound.contains("https://kv-a.vault.azure.net/"));
        assert!(bound.contains("db-password"));
        assert!(bound.contains(version.as_str()));
        assert_ne!(
            bound,
            associated_data(&vault, ObjectType::Certificate, &name, &version)
        );
    }

    #[test]
    fn events_name_a_loopback_vault_after_its_first_label_or_as_local() {
        let named = VaultUrl::parse("https://kv-dev.vault.azure.net/").expect("url");
        let loopback = VaultUrl::parse("https://127.0.0.1:8443/").expect("url");
        let local = VaultUrl::parse("https://vault.localhost/").expect("url");
        assert_eq!(event_vault_name(&named), "kv-dev");
        assert_eq!(event_vault_name(&loopback), LOCAL_VAULT_NAME);
        assert_eq!(event_vault_name(&local), "vault");
    }

    #[test]
    fn a_validity_beyond_representable_time_is_an_error_not_a_panic() {
        let policy = LocalCertificatePolicy::self_signed("far", &["far.localhost"], u32::MAX);
        assert!(issue_self_signed(&policy, Utc::now()).is_err());
    }

    #[test]
    fn too_many_or_too_long_tags_are_refused() {
        let many: BTreeMap<String, String> = (0..=MAX_TAGS)
            .map(|n| (format!("t{n}"), "v".into()))
            .collect();
        let long_value = BTreeMap::from([("t".to_owned(), "v".repeat(MAX_TAG_VALUE_LEN + 1))]);
        let empty_name = BTreeMap::from([(String::new(), "v".to_owned())]);
        assert!(check_tags(&many).is_err());
        assert!(check_tags(&long_value).is_err());
        assert!(check_tags(&empty_name).is_err());
        assert!(check_tags(&BTreeMap::from([("t".to_owned(), "v".to_owned())])).is_ok());
    }
}
