//! The vault ports' contract (`SecretStore` and `CertificateStore`, Key Vault's behaviour
//! written once): Key Vault through the official crates against the stand-in, the
//! encrypted local vault and the in-memory vault.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::http::poller::PollerOptions;
use azure_core::http::{ClientOptions, RequestContent, RetryOptions};
use azure_security_keyvault_certificates::models::{
    CertificateClientCreateCertificateOptions, CertificatePolicy, CreateCertificateParameters,
    IssuerParameters, SecretProperties as CertificateSecretProperties, X509CertificateProperties,
};
use azure_security_keyvault_certificates::{CertificateClient, CertificateClientOptions};
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use keyturn_standins::Standins;
use tempfile::TempDir;

use keyturn::adapters::azure::keyvault::KeyVault;
use keyturn::adapters::local::crypto::VaultKey;
use keyturn::adapters::local::store::LocalStore;
use keyturn::adapters::local::vault::{LocalCertificatePolicy, LocalVault};
use keyturn::domain::clock::Clock;
use keyturn::domain::names::{ObjectName, VaultUrl};
use keyturn::domain::secret::SecretValue;
use keyturn::ports::FailureKind;
use keyturn::ports::vault::{
    CertificateOperation, CertificateStore, NewSecretVersion, SecretProperties, SecretStore,
};
use keyturn_doubles::{Faults, ManualClock, MemoryVault};

use super::{contract, name, tags};

/// Renewal polls a scenario allows before it calls a renewal stuck.
const MAX_POLLS: usize = 10;

/// One vault adapter under test, and what a test needs beside the ports.
#[async_trait]
pub trait VaultFixture: Send + Sync + 'static {
    fn secrets(&self) -> Arc<dyn SecretStore>;
    fn certificates(&self) -> Arc<dyn CertificateStore>;
    fn vault(&self) -> VaultUrl;
    /// The adapter's own clock.
    fn now(&self) -> DateTime<Utc>;
    /// Creates a self-issued certificate with its first version carrying `tags`, as an
    /// operator would (the ports only renew).
    async fn create_certificate(&self, name: &ObjectName, tags: BTreeMap<String, String>);
}

/// Key Vault keeps times to the second.
fn whole_seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).expect("a valid time")
}

async fn write(
    fixture: &impl VaultFixture,
    secret: &str,
    value: &str,
    version: NewSecretVersion,
) -> SecretProperties {
    fixture
        .secrets()
        .set_secret(
            &fixture.vault(),
            &name(secret),
            &SecretValue::new(value),
            version,
        )
        .await
        .expect("version written")
}

async fn versions_keep_their_attributes_and_the_latest_is_current(fixture: impl VaultFixture) {
    let store = fixture.secrets();
    let vault = fixture.vault();
    let now = whole_seconds(fixture.now());
    let not_before = now - TimeDelta::hours(1);
    let expires = now + TimeDelta::days(90);

    let first = write(
        &fixture,
        "db-password",
        "one",
        NewSecretVersion {
            content_type: Some("text/plain".into()),
            not_before: Some(not_before),
            expires: Some(expires),
            tags: tags(&[("keyturn-kind", "generated")]),
        },
    )
    .await;
    // Written within the same second: the store still tells the versions apart.
    let second = write(&fixture, "db-password", "two", NewSecretVersion::default()).await;

    assert_eq!(first.id.vault(), &vault);
    assert_eq!(first.id.name(), &name("db-password"));
    assert!(first.id.version().is_some(), "a written version is named");
    assert_ne!(first.id.version(), second.id.version());
    assert_eq!(first.tags, tags(&[("keyturn-kind", "generated")]));
    assert_eq!(first.expires, Some(expires));
    assert_eq!(first.not_before, Some(not_before));
    assert_eq!(first.content_type.as_deref(), Some("text/plain"));
    assert!(first.enabled);
    assert!(!first.managed);
    assert!(second.tags.is_empty(), "a new version starts without tags");

    let current = store
        .secret(&vault, &name("db-password"), None)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(current.value.expose(), "two");
    assert_eq!(current.properties.id, second.id);
    let old = store
        .secret(&vault, &name("db-password"), first.id.version())
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(old.value.expose(), "one");
    assert_eq!(old.properties.id, first.id);
    let current_properties = store
        .secret_properties(&vault, &name("db-password"), None)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(current_properties.id, second.id);
    let old_properties = store
        .secret_properties(&vault, &name("db-password"), first.id.version())
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(old_properties.expires, Some(expires));
    assert_eq!(old_properties.tags, first.tags);

    let versions = store
        .list_versions(&vault, &name("db-password"))
        .await
        .expect("versions");
    assert_eq!(versions.len(), 2);
    assert!(versions.iter().any(|v| v.id == first.id));
    assert!(versions.iter().any(|v| v.id == second.id));
    let listed = store.list_secrets(&vault).await.expect("list");
    assert_eq!(listed.len(), 1, "one secret, listed once");
    assert_eq!(listed[0].id.name(), &name("db-password"));
}

async fn missing_secrets_and_versions_are_none(fixture: impl VaultFixture) {
    let store = fixture.secrets();
    let vault = fixture.vault();
    let written = write(&fixture, "api-key", "v", NewSecretVersion::default()).await;
    let other_version = write(&fixture, "other", "v", NewSecretVersion::default()).await;
    let foreign = other_version.id.version().expect("versioned");

    assert!(
        store
            .secret(&vault, &name("never-written"), None)
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        store
            .secret_properties(&vault, &name("never-written"), None)
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        store
            .secret(&vault, &name("api-key"), Some(foreign))
            .await
            .expect("read")
            .is_none(),
        "a version of another secret is not a version of this one"
    );
    assert!(
        store
            .secret_properties(&vault, &name("api-key"), Some(foreign))
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        store
            .secret(&vault, &name("api-key"), written.id.version())
            .await
            .expect("read")
            .is_some()
    );
}

async fn updating_tags_replaces_only_that_versions_tags(fixture: impl VaultFixture) {
    let store = fixture.secrets();
    let vault = fixture.vault();
    let expires = Some(whole_seconds(fixture.now()) + TimeDelta::days(30));
    let first = write(
        &fixture,
        "api-key",
        "first-value",
        NewSecretVersion {
            content_type: Some("text/plain".into()),
            expires,
            tags: tags(&[("a", "1")]),
            ..NewSecretVersion::default()
        },
    )
    .await;
    let second = write(
        &fixture,
        "api-key",
        "second-value",
        NewSecretVersion {
            tags: tags(&[("b", "2")]),
            ..NewSecretVersion::default()
        },
    )
    .await;
    let first_version = first.id.version().expect("versioned");

    let updated = store
        .update_tags(
            &vault,
            &name("api-key"),
            first_version,
            tags(&[("keyturn-last-error", "403")]),
        )
        .await
        .expect("tags replaced");
    let missing = store
        .update_tags(
            &vault,
            &name("no-such-secret"),
            first_version,
            BTreeMap::new(),
        )
        .await
        .expect_err("missing");

    assert_eq!(updated.id, first.id);
    assert_eq!(updated.tags, tags(&[("keyturn-last-error", "403")]));
    assert_eq!(updated.expires, expires, "other attributes stay");
    assert_eq!(updated.content_type.as_deref(), Some("text/plain"));
    assert_eq!(missing.kind, FailureKind::NotFound);
    let old = store
        .secret(&vault, &name("api-key"), Some(first_version))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        old.value.expose(),
        "first-value",
        "updating tags keeps the value"
    );
    assert_eq!(old.properties.tags, updated.tags);
    let current = store
        .secret_properties(&vault, &name("api-key"), None)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(current.id, second.id);
    assert_eq!(
        current.tags,
        tags(&[("b", "2")]),
        "other versions keep theirs"
    );
}

async fn more_tags_than_key_vault_allows_are_refused_and_nothing_is_written(
    fixture: impl VaultFixture,
) {
    let store = fixture.secrets();
    let vault = fixture.vault();
    let sixteen: BTreeMap<String, String> =
        (0..16).map(|n| (format!("t{n}"), "v".into())).collect();

    let error = store
        .set_secret(
            &vault,
            &name("s"),
            &SecretValue::new("v"),
            NewSecretVersion {
                tags: sixteen,
                ..NewSecretVersion::default()
            },
        )
        .await
        .expect_err("too many tags");

    assert_eq!(error.kind, FailureKind::Invalid, "{}", error.context);
    assert!(store.list_secrets(&vault).await.expect("list").is_empty());
    assert!(
        store
            .secret(&vault, &name("s"), None)
            .await
            .expect("read")
            .is_none()
    );
}

async fn a_created_certificate_reads_back_with_its_tags_and_thumbprint(fixture: impl VaultFixture) {
    let store = fixture.certificates();
    let vault = fixture.vault();
    let cert = name("device-api");
    fixture
        .create_certificate(&cert, tags(&[("keyturn-kind", "certificate")]))
        .await;

    let read = store
        .certificate_properties(&vault, &cert)
        .await
        .expect("read")
        .expect("exists");
    let listed = store.list_certificates(&vault).await.expect("listed");
    let issuer = store.issuer(&vault, &cert).await.expect("policy read");
    let absent = store
        .certificate_properties(&vault, &name("absent"))
        .await
        .expect("read");

    assert_eq!(read.id.vault(), &vault);
    assert_eq!(read.id.name(), &cert);
    assert!(read.id.version().is_some(), "the current version is named");
    assert!(read.enabled);
    assert!(read.expires.is_some());
    assert_eq!(read.tags, tags(&[("keyturn-kind", "certificate")]));
    let x5t = read.x5t_hex.as_deref().expect("a thumbprint");
    assert_eq!(x5t.len(), 40, "SHA-1 thumbprint in hex: {x5t}");
    assert!(x5t.chars().all(|c| c.is_ascii_hexdigit()), "{x5t}");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id.name(), &cert);
    assert_eq!(listed[0].x5t_hex, read.x5t_hex);
    assert_eq!(listed[0].expires, read.expires);
    assert_eq!(listed[0].tags, read.tags);
    assert_eq!(issuer, "Self");
    assert_eq!(absent, None);
}

/// Key Vault keeps tags per version; a renewal gives the new version the current
/// version's tags, so what makes keyturn manage a certificate survives its renewal.
async fn a_self_issued_certificate_renews_into_a_new_current_version_keeping_its_tags(
    fixture: impl VaultFixture,
) {
    let store = fixture.certificates();
    let vault = fixture.vault();
    let cert = name("device-api");
    fixture
        .create_certificate(&cert, tags(&[("keyturn-kind", "certificate")]))
        .await;
    let before = store
        .certificate_properties(&vault, &cert)
        .await
        .expect("read")
        .expect("exists");

    let mut operation = store
        .begin_renewal(&vault, &cert)
        .await
        .expect("renewal started");
    for _ in 0..MAX_POLLS {
        if operation != CertificateOperation::InProgress {
            break;
        }
        operation = store.renewal_status(&vault, &cert).await.expect("polled");
    }

    let CertificateOperation::Completed { version } = operation else {
        panic!("expected completion, got {operation:?}");
    };
    assert_ne!(Some(&version), before.id.version());
    assert_eq!(
        store.renewal_status(&vault, &cert).await.expect("polled"),
        CertificateOperation::Completed {
            version: version.clone()
        },
        "the last operation stays readable"
    );
    let after = store
        .certificate_properties(&vault, &cert)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(after.id.version(), Some(&version));
    assert_ne!(after.x5t_hex, before.x5t_hex, "a new certificate");
    assert_eq!(after.tags, before.tags, "the new version carries the tags");
    let listed = store.list_certificates(&vault).await.expect("listed");
    assert_eq!(
        listed.len(),
        1,
        "one certificate, listed at its current version"
    );
    assert_eq!(listed[0].x5t_hex, after.x5t_hex);
}

async fn renewing_a_missing_certificate_is_not_found(fixture: impl VaultFixture) {
    let store = fixture.certificates();

    let error = store
        .begin_renewal(&fixture.vault(), &name("absent"))
        .await
        .expect_err("nothing to renew");

    assert_eq!(error.kind, FailureKind::NotFound, "{}", error.context);
}

macro_rules! vault_suite {
    ($($adapter:ident: $fixture:expr),+ $(,)?) => {
        $(
            contract!($adapter: $fixture =>
                versions_keep_their_attributes_and_the_latest_is_current,
                missing_secrets_and_versions_are_none,
                updating_tags_replaces_only_that_versions_tags,
                more_tags_than_key_vault_allows_are_refused_and_nothing_is_written,
                a_created_certificate_reads_back_with_its_tags_and_thumbprint,
                a_self_issued_certificate_renews_into_a_new_current_version_keeping_its_tags,
                renewing_a_missing_certificate_is_not_found,
            );
        )+
    };
}

vault_suite!(
    key_vault: super::KeyVaultFixture::start(),
    local_vault: super::LocalFixture::open(),
    memory_vault: super::MemoryFixture::new(),
);

/// Key Vault through the official crates against the stand-in.
struct KeyVaultFixture {
    standins: Standins,
    store: Arc<KeyVault>,
}

impl KeyVaultFixture {
    async fn start() -> Self {
        let standins = Standins::start()
            .await
            .expect("the stand-ins start on loopback");
        standins.keyvault().set_polls_until_complete(0);
        let options = ClientOptions {
            retry: RetryOptions::none(),
            ..standins.client_options()
        };
        let store = Arc::new(
            KeyVault::new(standins.credential(), Some(options)).without_challenge_resource_check(),
        );
        Self { standins, store }
    }
}

#[async_trait]
impl VaultFixture for KeyVaultFixture {
    fn secrets(&self) -> Arc<dyn SecretStore> {
        self.store.clone()
    }

    fn certificates(&self) -> Arc<dyn CertificateStore> {
        self.store.clone()
    }

    fn vault(&self) -> VaultUrl {
        VaultUrl::parse(self.standins.keyvault().url().as_str()).expect("a vault URL")
    }

    fn now(&self) -> DateTime<Utc> {
        self.standins.now()
    }

    async fn create_certificate(&self, name: &ObjectName, tags: BTreeMap<String, String>) {
        let client = CertificateClient::new(
            self.standins.keyvault().url().as_str(),
            self.standins.credential(),
            Some(CertificateClientOptions {
                client_options: self.standins.client_options(),
                verify_challenge_resource: Some(false),
                ..CertificateClientOptions::default()
            }),
        )
        .expect("valid vault URL");
        let policy = CertificatePolicy {
            x509_certificate_properties: Some(X509CertificateProperties {
                subject: Some(format!("CN={name}")),
                ..X509CertificateProperties::default()
            }),
            issuer_parameters: Some(IssuerParameters {
                name: Some("Self".to_owned()),
                ..IssuerParameters::default()
            }),
            secret_properties: Some(CertificateSecretProperties {
                content_type: Some("application/x-pem-file".to_owned()),
            }),
            ..CertificatePolicy::default()
        };
        let parameters: RequestContent<CreateCertificateParameters> = CreateCertificateParameters {
            certificate_policy: Some(policy),
            tags: Some(tags.into_iter().collect()),
            ..CreateCertificateParameters::default()
        }
        .try_into()
        .expect("encodable");
        let options = CertificateClientCreateCertificateOptions {
            method_options: PollerOptions {
                frequency: azure_core::time::Duration::seconds(1),
                ..PollerOptions::default()
            },
        };
        client
            .begin_create_certificate(name.as_str(), parameters, Some(options))
            .expect("request built")
            .await
            .expect("the first version is issued");
    }
}

/// The encrypted local vault over a SQLite file.
struct LocalFixture {
    _dir: TempDir,
    vault: Arc<LocalVault>,
}

impl LocalFixture {
    async fn open() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalStore::open(dir.path().join("keyturn.db")).expect("the store opens");
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let key = VaultKey::from_base64(&key, "test").expect("a key");
        let vault = LocalVault::open(store, key, Clock::system())
            .await
            .expect("the vault opens");
        Self {
            _dir: dir,
            vault: Arc::new(vault),
        }
    }
}

#[async_trait]
impl VaultFixture for LocalFixture {
    fn secrets(&self) -> Arc<dyn SecretStore> {
        self.vault.clone()
    }

    fn certificates(&self) -> Arc<dyn CertificateStore> {
        self.vault.clone()
    }

    fn vault(&self) -> VaultUrl {
        VaultUrl::parse("https://kv-local.vault.azure.net/").expect("a vault URL")
    }

    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn create_certificate(&self, name: &ObjectName, tags: BTreeMap<String, String>) {
        let policy = LocalCertificatePolicy {
            issuer: "Self".into(),
            subject: format!("CN={name}"),
            dns_names: vec![],
            validity_days: 365,
        };
        self.vault
            .create_certificate(&self.vault(), name, policy, tags, Utc::now())
            .await
            .expect("the first version is issued");
    }
}

/// The in-memory vault the engine's tests drive.
struct MemoryFixture {
    clock: ManualClock,
    vault: Arc<MemoryVault>,
}

impl MemoryFixture {
    async fn new() -> Self {
        let clock = ManualClock::at(Utc::now());
        let vault = Arc::new(MemoryVault::new(clock.clock(), Faults::new()));
        Self { clock, vault }
    }
}

#[async_trait]
impl VaultFixture for MemoryFixture {
    fn secrets(&self) -> Arc<dyn SecretStore> {
        self.vault.clone()
    }

    fn certificates(&self) -> Arc<dyn CertificateStore> {
        self.vault.clone()
    }

    fn vault(&self) -> VaultUrl {
        VaultUrl::parse("https://kv-memory.vault.azure.net/").expect("a vault URL")
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.clock().now()
    }

    async fn create_certificate(&self, name: &ObjectName, tags: BTreeMap<String, String>) {
        let expires = self.now() + TimeDelta::days(365);
        self.vault
            .put_certificate(&self.vault(), name, "Self", Some(expires), tags);
    }
}
