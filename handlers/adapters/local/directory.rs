//! The embedded application directory on the local SQLite file: applications with
//! password credentials that behave like Microsoft Graph's (secret text returned once by
//! `addPassword`, key ids, `removePassword`), a token check against them that behaves
//! like Entra's client-credentials sign-in, and devices for the secret endpoint.
//!
//! Only a salted SHA-256 of each secret text is stored. A salted fast hash is enough
//! here: the secret texts are 40 random characters (about 240 bits), so there is nothing
//! to brute-force that a slow password hash would protect.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use rand::rngs::OsRng;
use rand::seq::SliceRandom;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::adapters::local::store::{LocalStore, StoreError};
use crate::domain::clock::Clock;
use crate::domain::ids::{AppId, DeviceId, DirectoryObjectId, KeyId};
use crate::domain::inventory::Owner;
use crate::domain::secret::SecretValue;
use crate::ports::directory::{
    AlternativeSecurityId, Application, CredentialIssuer, Device, DeviceDirectory,
    IssuedCredential, PasswordCredential, ProofError, TokenProver,
};
use crate::ports::{FailureKind, PortError};

/// Graph's `secretText` is 40 characters long.
pub const SECRET_TEXT_LEN: usize = 40;

/// The characters Graph's generated secrets are drawn from.
const SECRET_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789~._-";

/// 128 bits of salt per credential (NIST SP 800-132 asks for at least 128).
pub(crate) const SALT_LEN: usize = 16;

/// Entra's error for a secret that does not match any credential of the application
/// (also what a new credential gets until it has propagated).
pub const INVALID_CLIENT_SECRET: &str = "AADSTS7000215";
/// Entra's error for a credential outside its validity window.
pub const EXPIRED_CLIENT_SECRET: &str = "AADSTS7000222";
/// Entra's error for an application id the tenant does not know.
pub const UNKNOWN_APPLICATION: &str = "AADSTS700016";

/// The local directory's view of Graph and Entra. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LocalDirectory {
    store: LocalStore,
    clock: Clock,
    propagation_delay: TimeDelta,
    /// Replicas that catch up one by one: see [`LocalDirectory::with_flapping`].
    flapping: bool,
    /// Token requests answered per credential since it propagated (this process only).
    answered: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

/// How a flapping directory answers a propagated credential's first token requests:
/// accepted, refused by a replica that has not caught up, accepted; every later request is
/// accepted. Entra does this for minutes after a new secret is added.
const FLAP: [bool; 3] = [true, false, true];

impl LocalDirectory {
    /// The directory on `store`; `clock` stamps credentials and judges their validity.
    /// New credentials work at once; see [`LocalDirectory::with_propagation_delay`].
    pub fn new(store: LocalStore, clock: Clock) -> Self {
        Self {
            store,
            clock,
            propagation_delay: TimeDelta::zero(),
            flapping: false,
            answered: std::sync::Arc::default(),
        }
    }

    /// Makes a propagated credential's token requests flap (accepted, refused, accepted)
    /// before it is accepted for good, as Entra's replicas catching up one by one do.
    pub fn with_flapping(mut self, flapping: bool) -> Self {
        self.flapping = flapping;
        self
    }

    /// Makes a new credential fail sign-in for `delay` after it was added, as Entra's
    /// replication does for seconds, so the rotation engine's retry can be exercised.
    pub fn with_propagation_delay(mut self, delay: TimeDelta) -> Self {
        self.propagation_delay = delay;
        self
    }

    /// Registers an application with fresh appId and objectId GUIDs (bootstrap).
    pub async fn create_application(&self, display_name: &str) -> Result<Application, PortError> {
        self.register(ObjectTable::Applications, AppId::new_random(), display_name)
            .await
    }

    /// Adds a device, or replaces the one with the same device id (bootstrap).
    pub async fn add_device(&self, device: &Device) -> Result<(), PortError> {
        let ids: Vec<StoredSecurityId> = device
            .alternative_security_ids
            .iter()
            .map(|id| StoredSecurityId {
                kind: id.kind,
                identity_provider: id.identity_provider.clone(),
                key: STANDARD.encode(&id.key),
            })
            .collect();
        let ids = serde_json::to_string(&ids)
            .map_err(|_| PortError::invalid("a device's security ids cannot be encoded"))?;
        let device = device.clone();
        self.store
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO directory_devices \
                     (device_id, account_enabled, alternative_security_ids, is_compliant, is_managed) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (device_id) DO UPDATE SET \
                     account_enabled = ?2, alternative_security_ids = ?3, is_compliant = ?4, \
                     is_managed = ?5",
                    params![
                        device.device_id.to_string(),
                        device.account_enabled,
                        ids,
                        device.is_compliant,
                        device.is_managed
                    ],
                )
                .map_err(StoreError::sqlite("adding a device"))?;
                Ok(())
            })
            .await
            .map_err(|error| error.into_port_error("adding a local device"))
    }

    /// Every application of the local directory, in app id order (discovery's listing).
    pub async fn applications(&self) -> Result<Vec<Application>, PortError> {
        self.list(ObjectTable::Applications).await
    }

    /// Writes a new object with a fresh objectId into `table`.
    async fn register(
        &self,
        table: ObjectTable,
        app_id: AppId,
        display_name: &str,
    ) -> Result<Application, PortError> {
        let object = Application {
            object_id: DirectoryObjectId::new_random(),
            app_id,
            display_name: Some(display_name.to_owned()),
        };
        let row = object.clone();
        self.store
            .write(move |tx| {
                tx.execute(
                    &format!(
                        "INSERT INTO {} (object_id, app_id, display_name) VALUES (?1, ?2, ?3)",
                        table.name()
                    ),
                    params![
                        row.object_id.to_string(),
                        row.app_id.to_string(),
                        row.display_name
                    ],
                )
                .map_err(StoreError::sqlite("registering a directory object"))?;
                Ok(())
            })
            .await
            .map_err(|error| error.into_port_error(table.registering()))?;
        Ok(object)
    }

    /// Every object of `table`, in app id order.
    async fn list(&self, table: ObjectTable) -> Result<Vec<Application>, PortError> {
        let rows: Vec<(String, String, Option<String>)> = self
            .store
            .call(move |connection| {
                let mut statement = connection
                    .prepare(&format!(
                        "SELECT object_id, app_id, display_name FROM {} ORDER BY app_id",
                        table.name()
                    ))
                    .map_err(StoreError::sqlite("listing directory objects"))?;
                let rows = statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                    .map_err(StoreError::sqlite("listing directory objects"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::sqlite("listing directory objects"))?;
                Ok(rows)
            })
            .await
            .map_err(|error| error.into_port_error(table.listing()))?;
        rows.into_iter()
            .map(|(object_id, app_id, display_name)| {
                Ok(Application {
                    object_id: DirectoryObjectId::parse(&object_id).map_err(|_| {
                        PortError::invalid("the local directory holds an unreadable object id")
                    })?,
                    app_id: AppId::parse(&app_id).map_err(|_| {
                        PortError::invalid("the local directory holds an unreadable app id")
                    })?,
                    display_name,
                })
            })
            .collect()
    }

    async fn application_exists(&self, app: &DirectoryObjectId) -> Result<bool, PortError> {
        let object_id = app.to_string();
        self.store
            .call(move |connection| {
                connection
                    .query_row(
                        "SELECT 1 FROM directory_applications WHERE object_id = ?1",
                        [object_id],
                        |_| Ok(()),
                    )
                    .optional()
                    .map(|found| found.is_some())
                    .map_err(StoreError::sqlite("finding an application"))
            })
            .await
            .map_err(|error| error.into_port_error("finding a local application"))
    }

    async fn credential_rows(
        &self,
        app: &DirectoryObjectId,
    ) -> Result<Vec<CredentialRow>, PortError> {
        let object_id = app.to_string();
        self.store
            .call(move |connection| {
                let mut statement = connection
                    .prepare(
                        "SELECT key_id, display_name, hint, start, end, created, salt, hash \
                         FROM directory_passwords WHERE object_id = ?1 ORDER BY created, key_id",
                    )
                    .map_err(StoreError::sqlite("listing credentials"))?;
                let rows = statement
                    .query_map([object_id], |row| {
                        Ok(CredentialRow {
                            key_id: row.get(0)?,
                            display_name: row.get(1)?,
                            hint: row.get(2)?,
                            start: row.get(3)?,
                            end: row.get(4)?,
                            created: row.get(5)?,
                            salt: row.get(6)?,
                            hash: row.get(7)?,
                        })
                    })
                    .map_err(StoreError::sqlite("listing credentials"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::sqlite("listing credentials"))?;
                Ok(rows)
            })
            .await
            .map_err(|error| error.into_port_error("listing local credentials"))
    }
}

/// The two tables of directory objects, which hold the same columns.
#[derive(Debug, Clone, Copy)]
enum ObjectTable {
    Applications,
    ServicePrincipals,
}

impl ObjectTable {
    fn name(self) -> &'static str {
        match self {
            Self::Applications => "directory_applications",
            Self::ServicePrincipals => "directory_service_principals",
        }
    }

    fn registering(self) -> &'static str {
        match self {
            Self::Applications => "registering a local application",
            Self::ServicePrincipals => "registering a local service principal",
        }
    }

    fn listing(self) -> &'static str {
        match self {
            Self::Applications => "listing local applications",
            Self::ServicePrincipals => "listing local service principals",
        }
    }
}

/// A credential the local directory lists but cannot sign in with: a key (certificate)
/// credential of an application or a service principal, or a service principal's
/// password credential. Metadata only: no secret text and no private key is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedCredential {
    pub key_id: KeyId,
    pub display_name: Option<String>,
    pub kind: ListedCredentialKind,
    pub start: Option<DateTime<Utc>>,
    /// `None` for a credential without an end date.
    pub end: Option<DateTime<Utc>>,
}

/// What a [`ListedCredential`] is, in Graph's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListedCredentialKind {
    /// A `passwordCredential`.
    Password,
    /// A `keyCredential` of type `AsymmetricX509Cert`: `usage` is `Verify` or `Sign`,
    /// `thumbprint` the certificate's SHA-1 in uppercase hex (`customKeyIdentifier`).
    Certificate {
        usage: String,
        thumbprint: Option<String>,
    },
}

const PASSWORD_TYPE: &str = "Password";
const CERTIFICATE_TYPE: &str = "AsymmetricX509Cert";

impl LocalDirectory {
    /// The store the directory lives on (the local catalog lists vaults from it).
    pub(crate) fn store(&self) -> &LocalStore {
        &self.store
    }

    /// The same directory judged by `clock` (bootstrap uses it to backdate credentials).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Registers a service principal with a fresh objectId: for the application `app_id`
    /// when given (an application's service principal shares its appId), else with a
    /// fresh appId, as a gallery or multi-tenant application's would have (bootstrap).
    pub async fn create_service_principal(
        &self,
        app_id: Option<AppId>,
        display_name: &str,
    ) -> Result<Application, PortError> {
        let app_id = app_id.unwrap_or_else(AppId::new_random);
        self.register(ObjectTable::ServicePrincipals, app_id, display_name)
            .await
    }

    /// Every service principal of the local directory, in app id order.
    pub async fn service_principals(&self) -> Result<Vec<Application>, PortError> {
        self.list(ObjectTable::ServicePrincipals).await
    }

    /// Adds a listed credential to the application or service principal `object`.
    pub async fn add_listed_credential(
        &self,
        object: &DirectoryObjectId,
        credential: &ListedCredential,
    ) -> Result<(), PortError> {
        if let (Some(start), Some(end)) = (credential.start, credential.end)
            && end <= start
        {
            return Err(PortError::invalid(
                "adding a credential: endDateTime must be after startDateTime",
            ));
        }
        let (credential_type, usage, thumbprint) = match &credential.kind {
            ListedCredentialKind::Password => (PASSWORD_TYPE, None, None),
            ListedCredentialKind::Certificate { usage, thumbprint } => {
                (CERTIFICATE_TYPE, Some(usage.clone()), thumbprint.clone())
            }
        };
        let row = credential.clone();
        let object_id = object.to_string();
        let added = self
            .store
            .write(move |tx| {
                if !object_known(tx, &object_id)? {
                    return Ok(false);
                }
                tx.execute(
                    "INSERT INTO directory_listed_credentials \
                     (key_id, object_id, credential_type, usage, thumbprint, display_name, start, end) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        row.key_id.to_string(),
                        object_id,
                        credential_type,
                        usage,
                        thumbprint,
                        row.display_name,
                        row.start.map(|t| t.timestamp()),
                        row.end.map(|t| t.timestamp()),
                    ],
                )
                .map_err(StoreError::sqlite("adding a listed credential"))?;
                Ok(true)
            })
            .await
            .map_err(|error| error.into_port_error("adding a local listed credential"))?;
        if !added {
            return Err(not_found_object(object));
        }
        Ok(())
    }

    /// The listed credentials of `object`, in key id order.
    pub async fn listed_credentials(
        &self,
        object: &DirectoryObjectId,
    ) -> Result<Vec<ListedCredential>, PortError> {
        type Row = (
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
        );
        let object_id = object.to_string();
        let rows: Vec<Row> = self
            .store
            .call(move |connection| {
                let mut statement = connection
                    .prepare(
                        "SELECT key_id, credential_type, usage, thumbprint, display_name, start, end \
                         FROM directory_listed_credentials WHERE object_id = ?1 ORDER BY key_id",
                    )
                    .map_err(StoreError::sqlite("listing listed credentials"))?;
                let rows = statement
                    .query_map([object_id], |row| {
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                            row.get(4)?,
                            row.get(5)?,
                            row.get(6)?,
                        ))
                    })
                    .map_err(StoreError::sqlite("listing listed credentials"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::sqlite("listing listed credentials"))?;
                Ok(rows)
            })
            .await
            .map_err(|error| error.into_port_error("listing local listed credentials"))?;
        let unreadable =
            || PortError::invalid("the local directory holds an unreadable credential");
        let time = |seconds: Option<i64>| {
            seconds
                .map(|s| DateTime::from_timestamp(s, 0).ok_or_else(unreadable))
                .transpose()
        };
        rows.into_iter()
            .map(
                |(key_id, credential_type, usage, thumbprint, display_name, start, end)| {
                    let kind = match credential_type.as_str() {
                        PASSWORD_TYPE => ListedCredentialKind::Password,
                        CERTIFICATE_TYPE => ListedCredentialKind::Certificate {
                            usage: usage.unwrap_or_else(|| "Verify".to_owned()),
                            thumbprint,
                        },
                        _ => return Err(unreadable()),
                    };
                    Ok(ListedCredential {
                        key_id: KeyId::parse(&key_id).map_err(|_| unreadable())?,
                        display_name,
                        kind,
                        start: time(start)?,
                        end: time(end)?,
                    })
                },
            )
            .collect()
    }

    /// Adds `owner` to the application or service principal `object`, or updates it when
    /// it owns it already. An owner without an object id gets a fresh one.
    pub async fn add_owner(
        &self,
        object: &DirectoryObjectId,
        owner: &Owner,
    ) -> Result<(), PortError> {
        let owner_id = owner
            .object_id
            .unwrap_or_else(DirectoryObjectId::new_random)
            .to_string();
        let owner = owner.clone();
        let object_id = object.to_string();
        let added = self
            .store
            .write(move |tx| {
                if !object_known(tx, &object_id)? {
                    return Ok(false);
                }
                tx.execute(
                    "INSERT INTO directory_owners \
                     (object_id, owner_id, display_name, user_principal_name, mail) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (object_id, owner_id) DO UPDATE SET \
                     display_name = ?3, user_principal_name = ?4, mail = ?5",
                    params![
                        object_id,
                        owner_id,
                        owner.display_name,
                        owner.user_principal_name,
                        owner.mail
                    ],
                )
                .map_err(StoreError::sqlite("adding an owner"))?;
                Ok(true)
            })
            .await
            .map_err(|error| error.into_port_error("adding a local owner"))?;
        if !added {
            return Err(not_found_object(object));
        }
        Ok(())
    }

    /// The owners of `object`, by display name.
    pub async fn owners(&self, object: &DirectoryObjectId) -> Result<Vec<Owner>, PortError> {
        type Row = (String, Option<String>, Option<String>, Option<String>);
        let object_id = object.to_string();
        let rows: Vec<Row> = self
            .store
            .call(move |connection| {
                let mut statement = connection
                    .prepare(
                        "SELECT owner_id, display_name, user_principal_name, mail \
                         FROM directory_owners WHERE object_id = ?1 ORDER BY display_name, owner_id",
                    )
                    .map_err(StoreError::sqlite("listing owners"))?;
                let rows = statement
                    .query_map([object_id], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                    })
                    .map_err(StoreError::sqlite("listing owners"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::sqlite("listing owners"))?;
                Ok(rows)
            })
            .await
            .map_err(|error| error.into_port_error("listing local owners"))?;
        rows.into_iter()
            .map(|(owner_id, display_name, user_principal_name, mail)| {
                Ok(Owner {
                    object_id: Some(DirectoryObjectId::parse(&owner_id).map_err(|_| {
                        PortError::invalid("the local directory holds an unreadable owner id")
                    })?),
                    display_name,
                    user_principal_name,
                    mail,
                })
            })
            .collect()
    }
}

/// Whether `object_id` is an application's or a service principal's.
fn object_known(tx: &rusqlite::Transaction<'_>, object_id: &str) -> Result<bool, StoreError> {
    tx.query_row(
        "SELECT 1 FROM directory_applications WHERE object_id = ?1 \
         UNION ALL SELECT 1 FROM directory_service_principals WHERE object_id = ?1",
        [object_id],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
    .map_err(StoreError::sqlite("finding a directory object"))
}

fn not_found_object(object: &DirectoryObjectId) -> PortError {
    PortError::new(
        FailureKind::NotFound,
        format!("directory object {object} does not exist"),
    )
}

/// The scope of the tenant's default policy in `directory_policies`.
const TENANT_SCOPE: &str = "tenant";

/// One app management policy of the local directory: a limit on the lifetime of new
/// password credentials, as Graph's `passwordLifetime` restriction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalPolicy {
    /// The application it is assigned to; `None` for the tenant's default.
    pub app_id: Option<AppId>,
    pub display_name: String,
    pub max_password_lifetime_days: i64,
}

impl LocalDirectory {
    /// Assigns `policy` (a display name and a password lifetime limit) to the application
    /// `app`, or makes it the tenant's default when `app` is `None`; `policy` `None`
    /// removes it. An application's own policy replaces the tenant's default for it, as in
    /// Graph.
    pub async fn set_policy(
        &self,
        app: Option<&Application>,
        policy: Option<(String, TimeDelta)>,
    ) -> Result<(), PortError> {
        let scope = app.map_or_else(|| TENANT_SCOPE.to_owned(), |a| a.object_id.to_string());
        if let Some((_, max)) = &policy
            && max.num_seconds() < 1
        {
            return Err(PortError::invalid(
                "a password lifetime limit must be at least one second",
            ));
        }
        self.store
            .write(move |tx| {
                match policy {
                    Some((name, max)) => tx.execute(
                        "INSERT INTO directory_policies (scope, display_name, max_password_lifetime) \
                         VALUES (?1, ?2, ?3) ON CONFLICT (scope) DO UPDATE SET \
                         display_name = ?2, max_password_lifetime = ?3",
                        params![scope, name, max.num_seconds()],
                    ),
                    None => tx.execute("DELETE FROM directory_policies WHERE scope = ?1", [scope]),
                }
                .map_err(StoreError::sqlite("setting an app management policy"))?;
                Ok(())
            })
            .await
            .map_err(|error| error.into_port_error("setting a local app management policy"))
    }

    /// Every policy: the tenant's default first, then the applications' own.
    pub async fn policies(&self) -> Result<Vec<LocalPolicy>, PortError> {
        let rows: Vec<(String, String, i64, Option<String>)> = self
            .store
            .call(move |connection| {
                let mut statement = connection
                    .prepare(
                        "SELECT p.scope, p.display_name, p.max_password_lifetime, a.app_id \
                         FROM directory_policies p LEFT JOIN directory_applications a \
                         ON a.object_id = p.scope ORDER BY p.scope = 'tenant' DESC, a.app_id",
                    )
                    .map_err(StoreError::sqlite("listing app management policies"))?;
                let rows = statement
                    .query_map([], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                    })
                    .map_err(StoreError::sqlite("listing app management policies"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::sqlite("listing app management policies"))?;
                Ok(rows)
            })
            .await
            .map_err(|error| error.into_port_error("listing local app management policies"))?;
        rows.into_iter()
            .filter(|(scope, _, _, app)| scope == TENANT_SCOPE || app.is_some())
            .map(|(_, display_name, seconds, app)| {
                let app_id = app.map(|a| AppId::parse(&a)).transpose().map_err(|_| {
                    PortError::invalid("the local directory holds an unreadable appId")
                })?;
                Ok(LocalPolicy {
                    app_id,
                    display_name,
                    max_password_lifetime_days: seconds / 86_400,
                })
            })
            .collect()
    }

    /// The policy that applies to `app`: its own, or else the tenant's default, with the
    /// name Graph's adapter gives it.
    async fn policy_for(
        &self,
        app: &DirectoryObjectId,
    ) -> Result<Option<(TimeDelta, String)>, PortError> {
        let scope = app.to_string();
        let rows: Vec<(String, String, i64)> = self
            .store
            .call(move |connection| {
                let mut statement = connection
                    .prepare(
                        "SELECT scope, display_name, max_password_lifetime FROM directory_policies \
                         WHERE scope IN (?1, 'tenant')",
                    )
                    .map_err(StoreError::sqlite("reading app management policies"))?;
                let rows = statement
                    .query_map([scope], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                    .map_err(StoreError::sqlite("reading app management policies"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::sqlite("reading app management policies"))?;
                Ok(rows)
            })
            .await
            .map_err(|error| error.into_port_error("reading local app management policies"))?;
        let own = rows.iter().find(|(scope, _, _)| scope != TENANT_SCOPE);
        let tenant = rows.iter().find(|(scope, _, _)| scope == TENANT_SCOPE);
        Ok(match (own, tenant) {
            (Some((_, name, seconds)), _) => Some((TimeDelta::seconds(*seconds), name.clone())),
            (None, Some((_, name, seconds))) => Some((
                TimeDelta::seconds(*seconds),
                format!("{name} (the tenant's default)"),
            )),
            (None, None) => None,
        })
    }
}

#[async_trait]
impl CredentialIssuer for LocalDirectory {
    /// The application's own app management policy, or else the tenant's default, as
    /// `keyturn directory policy` set them; without either, no restriction.
    async fn password_rules(
        &self,
        app: &DirectoryObjectId,
    ) -> Result<crate::ports::directory::PasswordRules, PortError> {
        Ok(crate::ports::directory::PasswordRules {
            max_lifetime: self.policy_for(app).await?,
            ..crate::ports::directory::PasswordRules::default()
        })
    }

    async fn application(&self, app_id: &AppId) -> Result<Option<Application>, PortError> {
        let app_id_text = app_id.to_string();
        let row: Option<(String, Option<String>)> = self
            .store
            .call(move |connection| {
                connection
                    .query_row(
                        "SELECT object_id, display_name FROM directory_applications WHERE app_id = ?1",
                        [app_id_text],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()
                    .map_err(StoreError::sqlite("finding an application"))
            })
            .await
            .map_err(|error| error.into_port_error("finding a local application"))?;
        row.map(|(object_id, display_name)| {
            Ok(Application {
                object_id: DirectoryObjectId::parse(&object_id).map_err(|_| {
                    PortError::invalid("the local directory holds an unreadable object id")
                })?,
                app_id: *app_id,
                display_name,
            })
        })
        .transpose()
    }

    async fn password_credentials(
        &self,
        app: &DirectoryObjectId,
    ) -> Result<Vec<PasswordCredential>, PortError> {
        if !self.application_exists(app).await? {
            return Err(not_found_application(app));
        }
        self.credential_rows(app)
            .await?
            .iter()
            .map(CredentialRow::credential)
            .collect()
    }

    async fn add_password(
        &self,
        app: &DirectoryObjectId,
        display_name: &str,
        end: DateTime<Utc>,
    ) -> Result<IssuedCredential, PortError> {
        let now = self.clock.now();
        if end <= now {
            return Err(PortError::invalid(
                "adding a password: endDateTime must be after startDateTime",
            ));
        }
        // Graph refuses a credential longer-lived than the app management policy allows.
        if let Some((max, policy)) = self.policy_for(app).await?
            && end.timestamp() - now.timestamp() > max.num_seconds()
        {
            return Err(PortError::invalid(format!(
                "adding a password: credential lifetime exceeds the max value allowed by {policy}"
            )));
        }
        let secret = generate_secret()?;
        let mut salt = [0u8; SALT_LEN];
        OsRng
            .try_fill_bytes(&mut salt)
            .map_err(|_| PortError::transient("the random generator failed"))?;
        let hash = salted_hash(&salt, &secret);
        let credential = PasswordCredential {
            key_id: KeyId::new_random(),
            display_name: Some(display_name.to_owned()),
            // Graph's hint is the secret text's first characters. Nothing reads it, so the
            // local directory keeps none rather than part of the secret in clear.
            hint: None,
            start: DateTime::from_timestamp(now.timestamp(), 0),
            end: DateTime::from_timestamp(end.timestamp(), 0),
        };
        let row = credential.clone();
        let object_id = app.to_string();
        let added = self
            .store
            .write(move |tx| {
                let known = tx
                    .query_row(
                        "SELECT 1 FROM directory_applications WHERE object_id = ?1",
                        [&object_id],
                        |_| Ok(()),
                    )
                    .optional()
                    .map_err(StoreError::sqlite("finding an application"))?;
                if known.is_none() {
                    return Ok(false);
                }
                tx.execute(
                    "INSERT INTO directory_passwords \
                     (key_id, object_id, display_name, hint, start, end, created, salt, hash) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        row.key_id.to_string(),
                        object_id,
                        row.display_name,
                        row.hint,
                        row.start.map(|t| t.timestamp()),
                        row.end.map(|t| t.timestamp()),
                        now.timestamp_millis(),
                        salt.as_slice(),
                        hash.as_slice()
                    ],
                )
                .map_err(StoreError::sqlite("adding a password credential"))?;
                Ok(true)
            })
            .await
            .map_err(|error| error.into_port_error("adding a local password credential"))?;
        if !added {
            return Err(not_found_application(app));
        }
        Ok(IssuedCredential { credential, secret })
    }

    async fn remove_password(
        &self,
        app: &DirectoryObjectId,
        key_id: &KeyId,
    ) -> Result<(), PortError> {
        let (object_id, key_id_text) = (app.to_string(), key_id.to_string());
        let removed = self
            .store
            .write(move |tx| {
                tx.execute(
                    "DELETE FROM directory_passwords WHERE object_id = ?1 AND key_id = ?2",
                    params![object_id, key_id_text],
                )
                .map_err(StoreError::sqlite("removing a password credential"))
            })
            .await
            .map_err(|error| error.into_port_error("removing a local password credential"))?;
        if removed == 0 {
            return Err(PortError::new(
                FailureKind::NotFound,
                format!("application {app} has no password credential {key_id}"),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl TokenProver for LocalDirectory {
    async fn prove(&self, app_id: &AppId, secret: &SecretValue) -> Result<(), ProofError> {
        let now = self.clock.now();
        let rejected = |code: &str| ProofError::Rejected {
            code: code.to_owned(),
        };
        let Some(application) = self.application(app_id).await? else {
            return Err(rejected(UNKNOWN_APPLICATION));
        };
        let rows = self.credential_rows(&application.object_id).await?;
        let matching = rows.iter().find(|row| {
            let computed = salted_hash(&row.salt, secret);
            bool::from(computed.as_slice().ct_eq(row.hash.as_slice()))
        });
        let Some(row) = matching else {
            return Err(rejected(INVALID_CLIENT_SECRET));
        };
        let propagated_at = DateTime::from_timestamp_millis(row.created)
            .map(|created| created + self.propagation_delay);
        if propagated_at.is_none_or(|at| now < at) {
            return Err(rejected(INVALID_CLIENT_SECRET));
        }
        let valid = DateTime::from_timestamp(row.start, 0).is_some_and(|start| start <= now)
            && DateTime::from_timestamp(row.end, 0).is_some_and(|end| now < end);
        if !valid {
            return Err(rejected(EXPIRED_CLIENT_SECRET));
        }
        if self.flapping {
            // A poisoned map only means another request panicked while counting; the
            // counts are still counts.
            let mut answered = self.answered.lock().unwrap_or_else(|e| e.into_inner());
            let count = answered.entry(row.key_id.clone()).or_insert(0);
            let accepted = FLAP.get(*count).copied().unwrap_or(true);
            *count += 1;
            if !accepted {
                return Err(rejected(INVALID_CLIENT_SECRET));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl DeviceDirectory for LocalDirectory {
    async fn device(&self, device_id: &DeviceId) -> Result<Option<Device>, PortError> {
        let id_text = device_id.to_string();
        let row: Option<(bool, String, Option<bool>, Option<bool>)> = self
            .store
            .call(move |connection| {
                connection
                    .query_row(
                        "SELECT account_enabled, alternative_security_ids, is_compliant, is_managed \
                         FROM directory_devices WHERE device_id = ?1",
                        [id_text],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                    )
                    .optional()
                    .map_err(StoreError::sqlite("finding a device"))
            })
            .await
            .map_err(|error| error.into_port_error("finding a local device"))?;
        let Some((account_enabled, ids, is_compliant, is_managed)) = row else {
            return Ok(None);
        };
        let unreadable = || PortError::invalid("the local directory holds unreadable security ids");
        let stored: Vec<StoredSecurityId> = serde_json::from_str(&ids).map_err(|_| unreadable())?;
        let alternative_security_ids = stored
            .into_iter()
            .map(|id| {
                Ok(AlternativeSecurityId {
                    kind: id.kind,
                    identity_provider: id.identity_provider,
                    key: STANDARD.decode(id.key).map_err(|_| unreadable())?,
                })
            })
            .collect::<Result<Vec<_>, PortError>>()?;
        Ok(Some(Device {
            device_id: *device_id,
            account_enabled,
            alternative_security_ids,
            is_compliant,
            is_managed,
        }))
    }
}

/// A security id as stored: Graph's own JSON shape, key in base64.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredSecurityId {
    #[serde(rename = "type")]
    kind: i32,
    identity_provider: Option<String>,
    key: String,
}

struct CredentialRow {
    key_id: String,
    display_name: Option<String>,
    hint: Option<String>,
    start: i64,
    end: i64,
    /// Unix milliseconds, so a propagation delay can be sub-second.
    created: i64,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl CredentialRow {
    fn credential(&self) -> Result<PasswordCredential, PortError> {
        let unreadable =
            || PortError::invalid("the local directory holds an unreadable credential");
        Ok(PasswordCredential {
            key_id: KeyId::parse(&self.key_id).map_err(|_| unreadable())?,
            display_name: self.display_name.clone(),
            hint: self.hint.clone(),
            start: Some(DateTime::from_timestamp(self.start, 0).ok_or_else(unreadable)?),
            end: Some(DateTime::from_timestamp(self.end, 0).ok_or_else(unreadable)?),
        })
    }
}

fn generate_secret() -> Result<SecretValue, PortError> {
    let mut rng = OsRng;
    let mut text = zeroize::Zeroizing::new(String::with_capacity(SECRET_TEXT_LEN));
    for _ in 0..SECRET_TEXT_LEN {
        let byte = SECRET_ALPHABET
            .choose(&mut rng)
            .ok_or_else(|| PortError::invalid("the secret alphabet is empty"))?;
        text.push(char::from(*byte));
    }
    Ok(SecretValue::new(text.as_str()))
}

fn salted_hash(salt: &[u8], secret: &SecretValue) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(secret.expose().as_bytes());
    hasher.finalize().into()
}

fn not_found_application(app: &DirectoryObjectId) -> PortError {
    PortError::new(
        FailureKind::NotFound,
        format!("application object {app} does not exist"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_forty_characters_of_graphs_alphabet_and_differ() {
        let a = generate_secret().expect("secret");
        let b = generate_secret().expect("secret");
        assert_eq!(a.len(), SECRET_TEXT_LEN);
        assert!(a.expose().bytes().all(|c| SECRET_ALPHABET.contains(&c)));
        assert_ne!(a.expose(), b.expose());
    }

    #[tokio::test]
    async fn a_password_longer_lived_than_the_policy_allows_is_refused_as_graph_refuses_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path().join("keyturn.db")).expect("store");
        let now = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .expect("a time")
            .with_timezone(&Utc);
        let directory = LocalDirectory::new(store, Clock::fixed(now));
        let app = directory.create_application("app").await.expect("app");
        directory
            .set_policy(None, Some(("tenant".into(), TimeDelta::days(30))))
            .await
            .expect("set");

        let refused = directory
            .add_password(&app.object_id, "keyturn x", now + TimeDelta::days(31))
            .await
            .expect_err("beyond the tenant's limit");
        assert!(
            refused
                .to_string()
                .contains("tenant (the tenant's default)"),
            "{refused}"
        );
        let rules = directory
            .password_rules(&app.object_id)
            .await
            .expect("rules");
        assert_eq!(
            rules.max_lifetime,
            Some((TimeDelta::days(30), "tenant (the tenant's default)".into()))
        );
        directory
            .add_password(&app.object_id, "keyturn x", now + TimeDelta::days(30))
            .await
            .expect("at the limit");

        // The application's own policy replaces the tenant's.
        directory
            .set_policy(Some(&app), Some(("own".into(), TimeDelta::days(40))))
            .await
            .expect("set");
        directory
            .add_password(&app.object_id, "keyturn y", now + TimeDelta::days(40))
            .await
            .expect("within its own limit");
        let refused = directory
            .add_password(&app.object_id, "keyturn z", now + TimeDelta::days(41))
            .await
            .expect_err("beyond its own limit");
        assert!(refused.to_string().contains("own"), "{refused}");
    }

    #[tokio::test]
    async fn applications_and_service_principals_are_each_listed_alone_in_app_id_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path().join("keyturn.db")).expect("store");
        let directory = LocalDirectory::new(store, Clock::system());
        let mut apps = Vec::new();
        for name in ["c", "a", "b"] {
            apps.push(directory.create_application(name).await.expect("app"));
        }
        let mut principals = Vec::new();
        for name in ["y", "x"] {
            principals.push(
                directory
                    .create_service_principal(None, name)
                    .await
                    .expect("principal"),
            );
        }
        for (listed, mut created) in [
            (directory.applications().await.expect("listed"), apps),
            (
                directory.service_principals().await.expect("listed"),
                principals,
            ),
        ] {
            created.sort_by_key(|o| o.app_id.to_string());
            assert_eq!(listed, created);
        }
    }

    #[tokio::test]
    async fn service_principals_listed_credentials_and_owners_read_back_as_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path().join("keyturn.db")).expect("store");
        let now = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .expect("a time")
            .with_timezone(&Utc);
        let directory = LocalDirectory::new(store, Clock::fixed(now));
        let app = directory.create_application("app").await.expect("app");
        let principal = directory
            .create_service_principal(Some(app.app_id), "app")
            .await
            .expect("its service principal");
        let saml = directory
            .create_service_principal(None, "saml")
            .await
            .expect("a principal of its own");
        assert_eq!(principal.app_id, app.app_id);
        assert_ne!(saml.app_id, app.app_id);
        let mut listed: Vec<AppId> = directory
            .service_principals()
            .await
            .expect("listed")
            .into_iter()
            .map(|p| p.app_id)
            .collect();
        listed.sort_by_key(ToString::to_string);
        let mut expected = vec![app.app_id, saml.app_id];
        expected.sort_by_key(ToString::to_string);
        assert_eq!(listed, expected);
        assert_eq!(
            directory.applications().await.expect("apps").len(),
            1,
            "a service principal is not an application"
        );

        let certificate = ListedCredential {
            key_id: KeyId::new_random(),
            display_name: Some("signing".into()),
            kind: ListedCredentialKind::Certificate {
                usage: "Sign".into(),
                thumbprint: Some("AB".repeat(20)),
            },
            start: Some(now - TimeDelta::days(1)),
            end: Some(now + TimeDelta::days(25)),
        };
        let endless = ListedCredential {
            key_id: KeyId::new_random(),
            display_name: None,
            kind: ListedCredentialKind::Password,
            start: None,
            end: None,
        };
        for credential in [&certificate, &endless] {
            directory
                .add_listed_credential(&saml.object_id, credential)
                .await
                .expect("added");
        }
        let mut read = directory
            .listed_credentials(&saml.object_id)
            .await
            .expect("read");
        read.sort_by_key(|c| c.key_id.to_string());
        let mut written = vec![certificate.clone(), endless];
        written.sort_by_key(|c| c.key_id.to_string());
        assert_eq!(read, written);
        assert!(
            directory
                .listed_credentials(&principal.object_id)
                .await
                .expect("read")
                .is_empty()
        );
        assert!(
            directory
                .password_credentials(&app.object_id)
                .await
                .expect("read")
                .is_empty(),
            "a listed credential is not one the application signs in with"
        );

        let without_mail = Owner {
            object_id: None,
            display_name: Some("Bo".into()),
            user_principal_name: Some("bo@contoso.com".into()),
            mail: None,
        };
        directory
            .add_owner(&app.object_id, &without_mail)
            .await
            .expect("owner");
        let owners = directory.owners(&app.object_id).await.expect("owners");
        assert_eq!(owners.len(), 1);
        assert!(owners[0].object_id.is_some(), "an owner gets an object id");
        assert_eq!(
            Owner {
                object_id: None,
                ..owners[0].clone()
            },
            without_mail
        );
        // Adding the same owner again changes it in place.
        let renamed = Owner {
            display_name: Some("Bo Jensen".into()),
            ..owners[0].clone()
        };
        directory
            .add_owner(&app.object_id, &renamed)
            .await
            .expect("again");
        assert_eq!(
            directory.owners(&app.object_id).await.expect("owners"),
            vec![renamed]
        );
        assert!(
            directory
                .owners(&saml.object_id)
                .await
                .expect("owners")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_listed_credential_or_owner_of_an_unknown_object_or_ending_before_it_starts_is_refused()
     {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path().join("keyturn.db")).expect("store");
        let now = Utc::now();
        let directory = LocalDirectory::new(store, Clock::fixed(now));
        let unknown = DirectoryObjectId::new_random();
        let credential = ListedCredential {
            key_id: KeyId::new_random(),
            display_name: None,
            kind: ListedCredentialKind::Password,
            start: Some(now),
            end: Some(now + TimeDelta::days(1)),
        };
        let refused = directory
            .add_listed_credential(&unknown, &credential)
            .await
            .expect_err("no such object");
        assert_eq!(refused.kind, FailureKind::NotFound);
        let refused = directory
            .add_owner(&unknown, &Owner::default())
            .await
            .expect_err("no such object");
        assert_eq!(refused.kind, FailureKind::NotFound);

        let principal = directory
            .create_service_principal(None, "sp")
            .await
            .expect("sp");
        let backwards = ListedCredential {
            end: Some(now - TimeDelta::days(1)),
            ..credential
        };
        let refused = directory
            .add_listed_credential(&principal.object_id, &backwards)
            .await
            .expect_err("ends before it starts");
        assert_eq!(refused.kind, FailureKind::Invalid);
        assert!(
            directory
                .listed_credentials(&principal.object_id)
                .await
                .expect("read")
                .is_empty()
        );
    }

    #[test]
    fn the_same_secret_hashes_differently_under_different_salts() {
        let secret = SecretValue::new("abc");
        assert_ne!(
            salted_hash(&[1; SALT_LEN], &secret),
            salted_hash(&[2; SALT_LEN], &secret)
        );
        assert_eq!(
            salted_hash(&[1; SALT_LEN], &secret),
            salted_hash(&[1; SALT_LEN], &secret)
        );
    }
}
