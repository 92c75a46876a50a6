//! In-memory implementations of keyturn's rotation ports, strict where Azure is strict,
//! with a manual clock and fault injection: what the engine tests, the integration tests
//! and the benchmarks drive the engine with. They live in this test-support crate, never in
//! the shipped library: nothing here persists, and start-up cannot choose it.
//!
//! Strictness that matters to the engine's invariants:
//! - `add_password` returns the secret text once; listings never carry it.
//! - `remove_password` of an unknown keyId is `NotFound`.
//! - a new credential is refused by the token check until a propagation delay has passed
//!   on the manual clock (Entra takes seconds, with no SLA).
//! - an app management policy can cap credential lifetimes
//!   (`CredentialInvalidLifetimeAsPerAppPolicy`), and a missing permission can be simulated.
//! - the queue drops a second message with the same `MessageId` (duplicate detection).
//! - the audit store ([`MemoryAuditStore`]) refuses a taken position, like every real one.

mod alert_ledger;
mod audit;
mod inventory;

pub use alert_ledger::MemoryAlertLedger;
pub use audit::MemoryAuditStore;
pub use inventory::MemoryInventory;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use rand::rngs::OsRng;
use tokio::sync::Notify;

use keyturn::domain::clock::Clock;
use keyturn::domain::ids::{AppId, DirectoryObjectId, KeyId};
use keyturn::domain::names::{ObjectName, ObjectType, ObjectVersion, VaultUrl};
use keyturn::domain::secret::SecretValue;
use keyturn::ports::directory::{
    Application, CredentialIssuer, IssuedCredential, PasswordCredential, ProofError, TokenProver,
};
use keyturn::ports::queue::{JobQueue, MAX_MESSAGE_ID_LEN, OutgoingMessage};
use keyturn::ports::vault::{
    CertificateOperation, CertificateProperties, CertificateStore, NewSecretVersion, Secret,
    SecretProperties, SecretStore,
};
use keyturn::ports::{FailureKind, PortError};
use keyturn::rotation::Pause;
use keyturn::rotation::job::Job;

/// Entra's answer while a new secret has not propagated (or is wrong): AADSTS7000215,
/// "Invalid client secret provided".
pub const REJECTED_SECRET: &str = "AADSTS7000215";

/// Entra's answer to an expired secret: AADSTS7000222.
pub const EXPIRED_SECRET: &str = "AADSTS7000222";

/// Graph's error code when an app management policy refuses a credential's lifetime.
pub const LIFETIME_POLICY: &str = "CredentialInvalidLifetimeAsPerAppPolicy";

pub(crate) fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data stays consistent: every critical section below is a handful of
    // infallible map operations, so a panic elsewhere cannot leave it half-written.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A clock tests move by hand; pausing on it advances it instead of sleeping.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn at(now: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(now)))
    }

    pub fn now(&self) -> DateTime<Utc> {
        *locked(&self.0)
    }

    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        let mut now = locked(&self.0);
        *now = now.checked_add_signed(by).unwrap_or(*now);
    }

    pub fn clock(&self) -> Clock {
        let cell = self.0.clone();
        Clock::from_fn(move || *locked(&cell))
    }

    /// Total time paused, for a test that wants to know the engine waited.
    pub fn pause(&self) -> Arc<dyn Pause> {
        Arc::new(self.clone())
    }
}

#[async_trait]
impl Pause for ManualClock {
    async fn pause(&self, duration: Duration) {
        self.advance(duration);
        // Let other tasks run, as a real sleep would.
        tokio::task::yield_now().await;
    }
}

/// Where a simulated crash happens: right after the `occurrence`-th successful call of
/// `operation` took effect, the call never returns (the process "dies" there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashPoint {
    pub operation: &'static str,
    pub occurrence: usize,
}

/// Shared fault injection: planned failures and crash points, by operation name
/// (`set_secret`, `add_password`, `remove_password`, `prove`, `send`, `update_tags`,
/// `application`, `password_credentials`, `secret_properties`, `begin_renewal`, ...).
#[derive(Debug, Default)]
pub struct Faults {
    failures: Mutex<Vec<(String, PortError)>>,
    crash: Mutex<Option<(CrashPoint, usize)>>,
    crashed: Notify,
    /// Whether the armed point holds the caller (until [`Faults::resume`]) instead of
    /// stopping it for good: a process that paused there, not one that died.
    holds: Mutex<bool>,
    resumed: Notify,
    calls: Mutex<Vec<String>>,
}

impl Faults {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The next call of `operation` fails with `error` (queued: several can be planned).
    pub fn fail_next(&self, operation: &str, error: PortError) {
        locked(&self.failures).push((operation.to_string(), error));
    }

    /// Arms a crash point (replacing any earlier one).
    pub fn crash_after(&self, point: CrashPoint) {
        *locked(&self.crash) = Some((point, 0));
    }

    /// Arms a hold: the call that hits `point` takes effect, then waits for
    /// [`Faults::resume`] before returning, as a process paused there would.
    /// [`Faults::crashed`] resolves when it is hit.
    pub fn hold_after(&self, point: CrashPoint) {
        *locked(&self.holds) = true;
        *locked(&self.crash) = Some((point, 0));
    }

    /// Lets a held call return.
    pub fn resume(&self) {
        self.resumed.notify_one();
    }

    pub fn disarm(&self) {
        *locked(&self.crash) = None;
    }

    /// Resolves when an armed crash point is hit.
    pub async fn crashed(&self) {
        self.crashed.notified().await;
    }

    /// Every call made, in order, by operation name.
    pub fn calls(&self) -> Vec<String> {
        locked(&self.calls).clone()
    }

    pub fn count(&self, operation: &str) -> usize {
        locked(&self.calls)
            .iter()
            .filter(|c| *c == operation)
            .count()
    }

    fn before(&self, operation: &str) -> Result<(), PortError> {
        locked(&self.calls).push(operation.to_string());
        let mut failures = locked(&self.failures);
        match failures.iter().position(|(op, _)| op == operation) {
            Some(index) => Err(failures.remove(index).1),
            None => Ok(()),
        }
    }

    /// Called after `operation` took effect: crashes there when armed for it.
    async fn after(&self, operation: &str) {
        let hit = {
            let mut crash = locked(&self.crash);
            match crash.as_mut() {
                Some((point, seen)) if point.operation == operation => {
                    *seen += 1;
                    *seen == point.occurrence
                }
                _ => false,
            }
        };
        if hit {
            self.disarm();
            let holds = std::mem::take(&mut *locked(&self.holds));
            self.crashed.notify_one();
            if holds {
                self.resumed.notified().await;
            } else {
                std::future::pending::<()>().await;
            }
        }
    }
}

fn new_version() -> ObjectVersion {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    // A v4 UUID in simple form is always 32 lowercase hex digits.
    ObjectVersion::parse(&hex).expect("a simple UUID is a Key Vault version")
}

fn key(vault: &VaultUrl, name: &ObjectName) -> (String, String) {
    (vault.to_string(), name.as_str().to_ascii_lowercase())
}

#[derive(Debug)]
struct StoredSecret {
    versions: Vec<(SecretProperties, SecretValue)>,
}

#[derive(Debug)]
struct StoredCertificate {
    versions: Vec<CertificateProperties>,
    issuer: String,
    validity: chrono::Duration,
    pending: Option<PendingRenewal>,
    last: Option<CertificateOperation>,
    next_failure: Option<String>,
}

#[derive(Debug, Clone)]
struct PendingRenewal {
    ready_at: DateTime<Utc>,
    fails_with: Option<String>,
}

/// Key Vault secrets and certificates in memory. Versions are kept in creation order; the
/// last is current.
#[derive(Debug)]
pub struct MemoryVault {
    clock: Clock,
    faults: Arc<Faults>,
    secrets: Mutex<HashMap<(String, String), StoredSecret>>,
    /// Soft-deleted secret names: Key Vault keeps them taken until purged.
    deleted: Mutex<HashMap<(String, String), StoredSecret>>,
    certificates: Mutex<HashMap<(String, String), StoredCertificate>>,
    /// How long a renewal takes (zero: at once).
    renewal_time: Mutex<chrono::Duration>,
}

impl MemoryVault {
    pub fn new(clock: Clock, faults: Arc<Faults>) -> Self {
        Self {
            clock,
            faults,
            secrets: Mutex::new(HashMap::new()),
            deleted: Mutex::new(HashMap::new()),
            certificates: Mutex::new(HashMap::new()),
            renewal_time: Mutex::new(chrono::Duration::zero()),
        }
    }

    /// Seeds a secret version (as a person would create it) and returns its metadata.
    pub fn put_secret(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        value: &SecretValue,
        expires: Option<DateTime<Utc>>,
        tags: BTreeMap<String, String>,
    ) -> SecretProperties {
        self.write_secret(
            vault,
            name,
            value,
            NewSecretVersion {
                expires,
                tags,
                ..NewSecretVersion::default()
            },
        )
    }

    /// Seeds a certificate with its issuer and tags.
    pub fn put_certificate(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        issuer: &str,
        expires: Option<DateTime<Utc>>,
        tags: BTreeMap<String, String>,
    ) -> CertificateProperties {
        let now = self.clock.now();
        let properties = CertificateProperties {
            id: vault.object_id(ObjectType::Certificate, name.clone(), Some(new_version())),
            enabled: true,
            not_before: Some(now),
            expires,
            tags,
            x5t_hex: Some(random_x5t()),
        };
        locked(&self.certificates).insert(
            key(vault, name),
            StoredCertificate {
                versions: vec![properties.clone()],
                issuer: issuer.to_string(),
                validity: chrono::Duration::days(365),
                pending: None,
                last: None,
                next_failure: None,
            },
        );
        properties
    }

    /// Renewals complete this long after they begin.
    pub fn set_renewal_time(&self, time: Duration) {
        *locked(&self.renewal_time) =
            chrono::Duration::from_std(time).unwrap_or(chrono::Duration::MAX);
    }

    /// The next renewal of `name` fails with Key Vault error `code`.
    pub fn fail_next_renewal(&self, vault: &VaultUrl, name: &ObjectName, code: &str) {
        if let Some(cert) = locked(&self.certificates).get_mut(&key(vault, name)) {
            cert.next_failure = Some(code.to_string());
        }
    }

    /// Every version of a secret with its value, oldest first (for test assertions).
    pub fn secret_history(&self, vault: &VaultUrl, name: &ObjectName) -> Vec<Secret> {
        locked(&self.secrets)
            .get(&key(vault, name))
            .map(|s| {
                s.versions
                    .iter()
                    .map(|(properties, value)| Secret {
                        properties: properties.clone(),
                        value: value.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Names of the secrets in `vault` that exist now (not deleted), in no order.
    pub fn secret_names(&self, vault: &VaultUrl) -> Vec<String> {
        let prefix = vault.to_string();
        locked(&self.secrets)
            .iter()
            .filter(|((v, _), _)| *v == prefix)
            .map(|((_, name), _)| name.clone())
            .collect()
    }

    /// Names of the soft-deleted secrets in `vault`, in no order.
    pub fn deleted_secret_names(&self, vault: &VaultUrl) -> Vec<String> {
        let prefix = vault.to_string();
        locked(&self.deleted)
            .keys()
            .filter(|(v, _)| *v == prefix)
            .map(|(_, name)| name.clone())
            .collect()
    }

    pub fn certificate_versions(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Vec<CertificateProperties> {
        locked(&self.certificates)
            .get(&key(vault, name))
            .map(|c| c.versions.clone())
            .unwrap_or_default()
    }

    fn write_secret(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        value: &SecretValue,
        version: NewSecretVersion,
    ) -> SecretProperties {
        let now = self.clock.now();
        let properties = SecretProperties {
            id: vault.object_id(ObjectType::Secret, name.clone(), Some(new_version())),
            enabled: true,
            not_before: version.not_before,
            expires: version.expires,
            created: Some(now),
            updated: Some(now),
            content_type: version.content_type,
            tags: version.tags,
            managed: false,
        };
        locked(&self.secrets)
            .entry(key(vault, name))
            .or_insert_with(|| StoredSecret {
                versions: Vec::new(),
            })
            .versions
            .push((properties.clone(), value.clone()));
        properties
    }

    fn find(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: Option<&ObjectVersion>,
    ) -> Option<Secret> {
        let secrets = locked(&self.secrets);
        let stored = secrets.get(&key(vault, name))?;
        let found = match version {
            None => stored.versions.last(),
            Some(v) => stored
                .versions
                .iter()
                .find(|(p, _)| p.id.version() == Some(v)),
        };
        found.map(|(properties, value)| Secret {
            properties: properties.clone(),
            value: value.clone(),
        })
    }

    /// Moves a pending renewal forward when its time has come.
    fn settle(&self, cert: &mut StoredCertificate, vault: &VaultUrl, name: &ObjectName) {
        let now = self.clock.now();
        let Some(pending) = cert.pending.clone() else {
            return;
        };
        if pending.ready_at > now {
            return;
        }
        cert.pending = None;
        cert.last = Some(match pending.fails_with {
            Some(code) => CertificateOperation::Failed { code },
            None => {
                let version = new_version();
                let tags = cert
                    .versions
                    .last()
                    .map(|v| v.tags.clone())
                    .unwrap_or_default();
                cert.versions.push(CertificateProperties {
                    id: vault.object_id(
                        ObjectType::Certificate,
                        name.clone(),
                        Some(version.clone()),
                    ),
                    enabled: true,
                    not_before: Some(now),
                    expires: Some(now + cert.validity),
                    tags,
                    x5t_hex: Some(random_x5t()),
                });
                CertificateOperation::Completed { version }
            }
        });
    }
}

#[async_trait]
impl SecretStore for MemoryVault {
    async fn list_secrets(&self, vault: &VaultUrl) -> Result<Vec<SecretProperties>, PortError> {
        self.faults.before("list_secrets")?;
        let prefix = vault.to_string();
        Ok(locked(&self.secrets)
            .iter()
            .filter(|((v, _), _)| *v == prefix)
            .filter_map(|(_, s)| s.versions.last().map(|(p, _)| p.clone()))
            .collect())
    }

    async fn secret_properties(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: Option<&ObjectVersion>,
    ) -> Result<Option<SecretProperties>, PortError> {
        self.faults.before("secret_properties")?;
        Ok(self.find(vault, name, version).map(|s| s.properties))
    }

    async fn list_versions(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<Vec<SecretProperties>, PortError> {
        self.faults.before("list_versions")?;
        Ok(locked(&self.secrets)
            .get(&key(vault, name))
            .map(|s| s.versions.iter().map(|(p, _)| p.clone()).collect())
            .unwrap_or_default())
    }

    async fn secret(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: Option<&ObjectVersion>,
    ) -> Result<Option<Secret>, PortError> {
        self.faults.before("secret")?;
        Ok(self.find(vault, name, version))
    }

    async fn set_secret(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        value: &SecretValue,
        version: NewSecretVersion,
    ) -> Result<SecretProperties, PortError> {
        self.faults.before("set_secret")?;
        if version.tags.len() > keyturn::domain::limits::MAX_TAGS {
            return Err(PortError::invalid(format!(
                "setting secret {name}: more than {} tags",
                keyturn::domain::limits::MAX_TAGS
            )));
        }
        if locked(&self.deleted).contains_key(&key(vault, name)) {
            // Key Vault: 409 Conflict, ObjectIsDeletedButRecoverable.
            return Err(PortError::new(
                FailureKind::Conflict,
                format!(
                    "setting secret {name}: deleted but recoverable; the name cannot be reused"
                ),
            ));
        }
        let properties = self.write_secret(vault, name, value, version);
        self.faults.after("set_secret").await;
        Ok(properties)
    }

    async fn update_tags(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: &ObjectVersion,
        tags: BTreeMap<String, String>,
    ) -> Result<SecretProperties, PortError> {
        self.faults.before("update_tags")?;
        let updated = {
            let mut secrets = locked(&self.secrets);
            let found = secrets.get_mut(&key(vault, name)).and_then(|s| {
                s.versions
                    .iter_mut()
                    .find(|(p, _)| p.id.version() == Some(version))
            });
            let Some((properties, _)) = found else {
                return Err(PortError::new(
                    FailureKind::NotFound,
                    format!("updating tags of secret {name}/{version}"),
                ));
            };
            properties.tags = tags;
            properties.updated = Some(self.clock.now());
            properties.clone()
        };
        self.faults.after("update_tags").await;
        Ok(updated)
    }

    async fn delete_secret(&self, vault: &VaultUrl, name: &ObjectName) -> Result<(), PortError> {
        self.faults.before("delete_secret")?;
        let Some(stored) = locked(&self.secrets).remove(&key(vault, name)) else {
            return Err(PortError::new(
                FailureKind::NotFound,
                format!("deleting secret {name}"),
            ));
        };
        locked(&self.deleted).insert(key(vault, name), stored);
        self.faults.after("delete_secret").await;
        Ok(())
    }
}

#[async_trait]
impl CertificateStore for MemoryVault {
    async fn list_certificates(
        &self,
        vault: &VaultUrl,
    ) -> Result<Vec<CertificateProperties>, PortError> {
        self.faults.before("list_certificates")?;
        let prefix = vault.to_string();
        Ok(locked(&self.certificates)
            .iter()
            .filter(|((v, _), _)| *v == prefix)
            .filter_map(|(_, c)| c.versions.last().cloned())
            .collect())
    }

    async fn certificate_properties(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<Option<CertificateProperties>, PortError> {
        self.faults.before("certificate_properties")?;
        let mut certificates = locked(&self.certificates);
        Ok(certificates.get_mut(&key(vault, name)).and_then(|cert| {
            self.settle(cert, vault, name);
            cert.versions.last().cloned()
        }))
    }

    async fn issuer(&self, vault: &VaultUrl, name: &ObjectName) -> Result<String, PortError> {
        self.faults.before("issuer")?;
        locked(&self.certificates)
            .get(&key(vault, name))
            .map(|c| c.issuer.clone())
            .ok_or_else(|| {
                PortError::new(
                    FailureKind::NotFound,
                    format!("policy of certificate {name}"),
                )
            })
    }

    async fn begin_renewal(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<CertificateOperation, PortError> {
        self.faults.before("begin_renewal")?;
        let operation = {
            let now = self.clock.now();
            let renewal_time = *locked(&self.renewal_time);
            let mut certificates = locked(&self.certificates);
            let Some(cert) = certificates.get_mut(&key(vault, name)) else {
                return Err(PortError::new(
                    FailureKind::NotFound,
                    format!("renewing certificate {name}"),
                ));
            };
            if cert.issuer.eq_ignore_ascii_case("Unknown") {
                // Key Vault answers a create with issuer Unknown with a pending CSR that a
                // person must merge; keyturn must never start one.
                return Err(PortError::invalid(format!(
                    "renewing certificate {name}: issuer Unknown needs a merged certificate"
                )));
            }
            if cert.pending.is_none() {
                cert.pending = Some(PendingRenewal {
                    ready_at: now + renewal_time,
                    fails_with: cert.next_failure.take(),
                });
            }
            self.settle(cert, vault, name);
            match (&cert.pending, &cert.last) {
                (Some(_), _) => CertificateOperation::InProgress,
                (None, Some(last)) => last.clone(),
                (None, None) => CertificateOperation::InProgress,
            }
        };
        self.faults.after("begin_renewal").await;
        Ok(operation)
    }

    async fn renewal_status(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<CertificateOperation, PortError> {
        self.faults.before("renewal_status")?;
        let mut certificates = locked(&self.certificates);
        let Some(cert) = certificates.get_mut(&key(vault, name)) else {
            return Err(PortError::new(
                FailureKind::NotFound,
                format!("renewal of certificate {name}"),
            ));
        };
        self.settle(cert, vault, name);
        Ok(match (&cert.pending, &cert.last) {
            (Some(_), _) => CertificateOperation::InProgress,
            (None, Some(last)) => last.clone(),
            (None, None) => {
                return Err(PortError::new(
                    FailureKind::NotFound,
                    format!("no renewal of certificate {name}"),
                ));
            }
        })
    }
}

#[derive(Debug)]
struct StoredCredential {
    credential: PasswordCredential,
    secret: SecretValue,
    usable_at: DateTime<Utc>,
    /// Token requests answered for this credential since it became usable.
    answered: usize,
}

#[derive(Debug)]
struct StoredApplication {
    application: Application,
    credentials: Vec<StoredCredential>,
}

/// Applications and their password credentials, behaving like Graph, and a token check
/// against them behaving like the Entra token endpoint.
#[derive(Debug)]
pub struct MemoryDirectory {
    clock: Clock,
    faults: Arc<Faults>,
    applications: Mutex<Vec<StoredApplication>>,
    propagation: Mutex<chrono::Duration>,
    flapping: Mutex<Vec<bool>>,
    max_lifetime: Mutex<Option<chrono::Duration>>,
    denied: Mutex<Option<String>>,
    proofs: Mutex<Vec<bool>>,
}

impl MemoryDirectory {
    pub fn new(clock: Clock, faults: Arc<Faults>) -> Self {
        Self {
            clock,
            faults,
            applications: Mutex::new(Vec::new()),
            propagation: Mutex::new(chrono::Duration::zero()),
            flapping: Mutex::new(Vec::new()),
            max_lifetime: Mutex::new(None),
            denied: Mutex::new(None),
            proofs: Mutex::new(Vec::new()),
        }
    }

    /// Registers an application and returns it.
    pub fn add_application(&self, app_id: AppId, display_name: &str) -> Application {
        let application = Application {
            object_id: DirectoryObjectId::new_random(),
            app_id,
            display_name: Some(display_name.to_string()),
        };
        locked(&self.applications).push(StoredApplication {
            application: application.clone(),
            credentials: Vec::new(),
        });
        application
    }

    /// Adds a credential as a person would (usable at once), returning it with its text.
    pub fn add_person_credential(
        &self,
        app: &DirectoryObjectId,
        display_name: &str,
        end: DateTime<Utc>,
    ) -> Option<IssuedCredential> {
        let now = self.clock.now();
        self.issue(app, display_name, end, now)
    }

    /// New credentials are refused by the token check for this long.
    pub fn set_propagation_delay(&self, delay: Duration) {
        *locked(&self.propagation) =
            chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    }

    /// Once propagated, a new credential's first token requests are answered as `answers`
    /// says (`true`: accepted), then always accepted: Entra's replicas catch up one by one,
    /// so a secret can be accepted, refused by another replica, then accepted.
    pub fn set_flapping(&self, answers: Vec<bool>) {
        *locked(&self.flapping) = answers;
    }

    /// An app management policy: credentials may live at most `lifetime`.
    pub fn set_max_lifetime(&self, lifetime: Option<Duration>) {
        *locked(&self.max_lifetime) =
            lifetime.map(|l| chrono::Duration::from_std(l).unwrap_or(chrono::Duration::MAX));
    }

    /// Every write is refused for lack of `permission`.
    pub fn deny_writes(&self, permission: Option<&str>) {
        *locked(&self.denied) = permission.map(str::to_string);
    }

    /// The credentials of `app` (metadata), for assertions.
    pub fn credentials(&self, app: &DirectoryObjectId) -> Vec<PasswordCredential> {
        locked(&self.applications)
            .iter()
            .find(|a| a.application.object_id == *app)
            .map(|a| a.credentials.iter().map(|c| c.credential.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether `secret` is accepted for `app_id` right now (a test's own token check).
    pub fn accepts(&self, app_id: &AppId, secret: &SecretValue) -> bool {
        let now = self.clock.now();
        locked(&self.applications)
            .iter()
            .filter(|a| a.application.app_id == *app_id)
            .flat_map(|a| a.credentials.iter())
            .any(|c| {
                c.secret == *secret
                    && c.usable_at <= now
                    && c.credential.end.is_none_or(|end| end > now)
            })
    }

    /// Whether `secret` is a propagated credential of `app_id` whose end has passed.
    fn expired(&self, app_id: &AppId, secret: &SecretValue) -> bool {
        let now = self.clock.now();
        locked(&self.applications)
            .iter()
            .filter(|a| a.application.app_id == *app_id)
            .flat_map(|a| a.credentials.iter())
            .any(|c| {
                c.secret == *secret
                    && c.usable_at <= now
                    && c.credential.end.is_some_and(|end| end <= now)
            })
    }

    /// How many proofs were attempted and how many succeeded.
    pub fn proofs(&self) -> (usize, usize) {
        let proofs = locked(&self.proofs);
        (proofs.len(), proofs.iter().filter(|ok| **ok).count())
    }

    fn issue(
        &self,
        app: &DirectoryObjectId,
        display_name: &str,
        end: DateTime<Utc>,
        usable_at: DateTime<Utc>,
    ) -> Option<IssuedCredential> {
        let now = self.clock.now();
        let text: String = (0..40)
            .map(|_| char::from(OsRng.gen_range(b'a'..=b'z')))
            .collect();
        let secret = SecretValue::new(text);
        let credential = PasswordCredential {
            key_id: KeyId::new_random(),
            display_name: Some(display_name.to_string()),
            hint: Some(secret.expose().chars().take(3).collect()),
            start: Some(now),
            end: Some(end),
        };
        let mut applications = locked(&self.applications);
        let stored = applications
            .iter_mut()
            .find(|a| a.application.object_id == *app)?;
        stored.credentials.push(StoredCredential {
            credential: credential.clone(),
            secret: secret.clone(),
            usable_at,
            answered: 0,
        });
        Some(IssuedCredential { credential, secret })
    }

    fn check_write(&self, what: &str) -> Result<(), PortError> {
        match locked(&self.denied).as_ref() {
            Some(permission) => Err(PortError::new(
                FailureKind::PermissionDenied {
                    missing: permission.clone(),
                },
                what.to_string(),
            )),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl CredentialIssuer for MemoryDirectory {
    /// The in-memory directory has no app management policies.
    async fn password_rules(
        &self,
        _app: &DirectoryObjectId,
    ) -> Result<keyturn::ports::directory::PasswordRules, PortError> {
        Ok(keyturn::ports::directory::PasswordRules::default())
    }

    async fn application(&self, app_id: &AppId) -> Result<Option<Application>, PortError> {
        self.faults.before("application")?;
        Ok(locked(&self.applications)
            .iter()
            .find(|a| a.application.app_id == *app_id)
            .map(|a| a.application.clone()))
    }

    async fn password_credentials(
        &self,
        app: &DirectoryObjectId,
    ) -> Result<Vec<PasswordCredential>, PortError> {
        self.faults.before("password_credentials")?;
        let applications = locked(&self.applications);
        let Some(stored) = applications
            .iter()
            .find(|a| a.application.object_id == *app)
        else {
            return Err(PortError::new(
                FailureKind::NotFound,
                format!("application {app}"),
            ));
        };
        Ok(stored
            .credentials
            .iter()
            .map(|c| c.credential.clone())
            .collect())
    }

    async fn add_password(
        &self,
        app: &DirectoryObjectId,
        display_name: &str,
        end: DateTime<Utc>,
    ) -> Result<IssuedCredential, PortError> {
        self.faults.before("add_password")?;
        self.check_write(&format!("addPassword on application {app}"))?;
        let now = self.clock.now();
        if let Some(max) = *locked(&self.max_lifetime)
            && end - now > max
        {
            return Err(PortError::new(
                FailureKind::PolicyViolation {
                    code: LIFETIME_POLICY.into(),
                },
                format!("addPassword on application {app}"),
            ));
        }
        let usable_at = now + *locked(&self.propagation);
        let issued = self
            .issue(app, display_name, end, usable_at)
            .ok_or_else(|| PortError::new(FailureKind::NotFound, format!("application {app}")))?;
        self.faults.after("add_password").await;
        Ok(issued)
    }

    async fn remove_password(
        &self,
        app: &DirectoryObjectId,
        key_id: &KeyId,
    ) -> Result<(), PortError> {
        self.faults.before("remove_password")?;
        self.check_write(&format!("removePassword on application {app}"))?;
        {
            let mut applications = locked(&self.applications);
            let Some(stored) = applications
                .iter_mut()
                .find(|a| a.application.object_id == *app)
            else {
                return Err(PortError::new(
                    FailureKind::NotFound,
                    format!("application {app}"),
                ));
            };
            let before = stored.credentials.len();
            stored
                .credentials
                .retain(|c| c.credential.key_id != *key_id);
            if stored.credentials.len() == before {
                return Err(PortError::new(
                    FailureKind::NotFound,
                    format!("removePassword {key_id} on application {app}"),
                ));
            }
        }
        self.faults.after("remove_password").await;
        Ok(())
    }
}

#[async_trait]
impl TokenProver for MemoryDirectory {
    async fn prove(&self, app_id: &AppId, secret: &SecretValue) -> Result<(), ProofError> {
        self.faults.before("prove")?;
        let mut accepted = self.accepts(app_id, secret);
        if accepted {
            let flapping = locked(&self.flapping).clone();
            let mut applications = locked(&self.applications);
            if let Some(credential) = applications
                .iter_mut()
                .filter(|a| a.application.app_id == *app_id)
                .flat_map(|a| a.credentials.iter_mut())
                .find(|c| c.secret == *secret)
            {
                accepted = flapping.get(credential.answered).copied().unwrap_or(true);
                credential.answered += 1;
            }
        }
        locked(&self.proofs).push(accepted);
        if !accepted {
            let code = if self.expired(app_id, secret) {
                EXPIRED_SECRET
            } else {
                REJECTED_SECRET
            };
            return Err(ProofError::Rejected { code: code.into() });
        }
        self.faults.after("prove").await;
        Ok(())
    }
}

/// A queue with duplicate detection: messages are kept in send order; a second message
/// with an id already seen is dropped, as Service Bus does within its detection window
/// (keyturn's queue keeps a day; these tests run well inside one).
#[derive(Debug)]
pub struct MemoryQueue {
    faults: Arc<Faults>,
    accepted: Mutex<Vec<OutgoingMessage>>,
    attempts: Mutex<usize>,
    /// Ids of the messages [`MemoryQueue::deliver_next`] handed out.
    delivered: Mutex<HashSet<String>>,
}

impl MemoryQueue {
    pub fn new(faults: Arc<Faults>) -> Self {
        Self {
            faults,
            accepted: Mutex::new(Vec::new()),
            attempts: Mutex::new(0),
            delivered: Mutex::new(HashSet::new()),
        }
    }

    /// Delivers the next follow-up as the broker would: the first message, in send order,
    /// whose job `wanted` picks and that was not delivered yet, with `clock` moved to its
    /// scheduled time when that is still ahead. Each message is delivered once.
    pub fn deliver_next(&self, clock: &ManualClock, wanted: impl Fn(&Job) -> bool) -> Option<Job> {
        let mut delivered = locked(&self.delivered);
        let (message, job) = self.messages().into_iter().find_map(|m| {
            let value: serde_json::Value = serde_json::from_slice(&m.body).expect("json");
            let job = Job::from_json(&value).expect("a valid job");
            (wanted(&job) && !delivered.contains(&m.message_id)).then_some((m, job))
        })?;
        delivered.insert(message.message_id.clone());
        if let Some(at) = message.scheduled_enqueue
            && at > clock.now()
        {
            clock.advance((at - clock.now()).to_std().expect("a future time"));
        }
        Some(job)
    }

    /// Messages the broker kept (duplicates dropped), in send order.
    pub fn messages(&self) -> Vec<OutgoingMessage> {
        locked(&self.accepted).clone()
    }

    /// How many sends were made, duplicates included.
    pub fn sends(&self) -> usize {
        *locked(&self.attempts)
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn send(&self, message: &OutgoingMessage) -> Result<(), PortError> {
        self.faults.before("send")?;
        // Service Bus refuses these, so the double does too.
        for (field, value) in [
            ("MessageId", &message.message_id),
            ("SessionId", &message.session_id),
        ] {
            if !(1..=MAX_MESSAGE_ID_LEN).contains(&value.chars().count()) {
                return Err(PortError::invalid(format!(
                    "sending a job: {field} must be 1 to {MAX_MESSAGE_ID_LEN} characters"
                )));
            }
        }
        if message.body.len() > MAX_MESSAGE_BODY {
            return Err(PortError::invalid(format!(
                "sending a job: the body is over {MAX_MESSAGE_BODY} bytes"
            )));
        }
        *locked(&self.attempts) += 1;
        {
            let mut accepted = locked(&self.accepted);
            if !accepted.iter().any(|m| m.message_id == message.message_id) {
                accepted.push(message.clone());
            }
        }
        self.faults.after("send").await;
        Ok(())
    }
}

/// Service Bus takes message bodies up to 256 KiB on the standard tier.
const MAX_MESSAGE_BODY: usize = 256 * 1024;

/// A stand-in SHA-1 thumbprint: 20 random bytes in hex, as long as Key Vault's `x5t`.
fn random_x5t() -> String {
    hex::encode(OsRng.r#gen::<[u8; 20]>())
}
