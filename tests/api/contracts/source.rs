//! The secret source's contract (what the secret endpoint reads): Key Vault against the
//! stand-in, Azure Table storage (Azurite), the local vault and app settings. App
//! settings hold values only (no version, validity or content type): that fixture
//! declares so, and runs the values-only scenario in place of the attribute ones.

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::http::{ClientOptions, RetryOptions};
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use keyturn_standins::{SecretSeed, Standins};
use serde_json::{Map, Value, json};
use tempfile::TempDir;

use keyturn::adapters::appsettings::AppSettingsSource;
use keyturn::adapters::azure::client::table::{
    EntityKey, IfMatch, TableClient, TableName, UpdateMode,
};
use keyturn::adapters::azure::keyvault::KeyVaultSource;
use keyturn::adapters::azure::table_source::{SECRETS_PARTITION, TableSecretSource};
use keyturn::adapters::local::crypto::VaultKey;
use keyturn::adapters::local::store::LocalStore;
use keyturn::adapters::local::vault::LocalVault;
use keyturn::domain::clock::Clock;
use keyturn::domain::names::VaultUrl;
use keyturn::domain::secret::SecretValue;
use keyturn::ports::source::SecretSource;
use keyturn::ports::vault::{NewSecretVersion, SecretStore};

use super::{contract, name};

/// Where the test command starts Azurite's table service.
const TABLE_ENDPOINT_VARIABLE: &str = "KEYTURN_TEST_TABLE_ENDPOINT";
/// Azurite's published development account key; it opens nothing but a local emulator.
const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// One secret as an operator would store it.
#[derive(Debug, Clone)]
pub struct Seed {
    pub name: &'static str,
    pub value: String,
    pub content_type: Option<&'static str>,
    pub enabled: bool,
    pub not_before: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
}

impl Seed {
    fn new(name: &'static str, value: &str) -> Self {
        Self {
            name,
            value: value.to_owned(),
            content_type: None,
            enabled: true,
            not_before: None,
            expires: None,
        }
    }
}

/// One source under test.
#[async_trait]
pub trait SourceFixture: Send + Sync + 'static {
    /// The time the scenarios fetch at.
    fn now(&self) -> DateTime<Utc>;
    /// Stores `seeds` in order (a name seeded again gets a newer version) and returns the
    /// source with the version each seed got, `None` where the source has no versions.
    async fn source(&mut self, seeds: &[Seed]) -> (Arc<dyn SecretSource>, Vec<Option<String>>);
}

/// Key Vault keeps times to the second.
fn whole_seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).expect("a valid time")
}

async fn a_live_secret_is_served_with_its_attributes(mut fixture: impl SourceFixture) {
    let now = fixture.now();
    let expires = whole_seconds(now) + TimeDelta::days(1);
    let (source, versions) = fixture
        .source(&[Seed {
            content_type: Some("text/plain"),
            expires: Some(expires),
            ..Seed::new("live", "device-secret")
        }])
        .await;

    let served = source
        .fetch(&name("live"), now)
        .await
        .expect("read")
        .expect("served");
    let by_other_case = source
        .fetch(&name("LIVE"), now)
        .await
        .expect("read")
        .expect("names compare without case");

    assert_eq!(served.value.expose(), "device-secret");
    assert_eq!(served.version, versions[0]);
    assert!(served.version.is_some());
    assert_eq!(served.content_type.as_deref(), Some("text/plain"));
    assert_eq!(served.expires, Some(expires));
    assert_eq!(by_other_case.value.expose(), "device-secret");
}

async fn a_missing_secret_is_none(mut fixture: impl SourceFixture) {
    let now = fixture.now();
    let (source, _) = fixture.source(&[Seed::new("present", "v")]).await;

    assert!(
        source
            .fetch(&name("missing"), now)
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        source
            .fetch(&name("present"), now)
            .await
            .expect("read")
            .is_some()
    );
}

/// A device must not receive a dead secret: disabled, not yet valid or expired.
async fn disabled_early_and_expired_secrets_are_not_served(mut fixture: impl SourceFixture) {
    let now = whole_seconds(fixture.now());
    let (source, _) = fixture
        .source(&[
            Seed {
                enabled: false,
                ..Seed::new("disabled", "x")
            },
            Seed {
                expires: Some(now - TimeDelta::hours(1)),
                ..Seed::new("expired", "x")
            },
            Seed {
                expires: Some(now),
                ..Seed::new("expiring-now", "x")
            },
            Seed {
                not_before: Some(now + TimeDelta::hours(1)),
                ..Seed::new("early", "x")
            },
            Seed {
                not_before: Some(now - TimeDelta::hours(1)),
                expires: Some(now + TimeDelta::hours(1)),
                ..Seed::new("within", "served")
            },
        ])
        .await;

    for refused in ["disabled", "expired", "expiring-now", "early"] {
        let fetched = source.fetch(&name(refused), now).await.expect("read");
        assert!(fetched.is_none(), "{refused} must not be served");
    }
    let within = source
        .fetch(&name("within"), now)
        .await
        .expect("read")
        .expect("served within its validity");
    assert_eq!(within.value.expose(), "served");
}

async fn the_current_version_is_served(mut fixture: impl SourceFixture) {
    let now = fixture.now();
    let (source, versions) = fixture
        .source(&[Seed::new("rotated", "old"), Seed::new("rotated", "new")])
        .await;

    let served = source
        .fetch(&name("rotated"), now)
        .await
        .expect("read")
        .expect("served");

    assert_eq!(served.value.expose(), "new");
    assert_eq!(served.version, versions[1]);
}

/// The capability app settings have instead of attributes: values only, never an
/// invented version, validity or content type.
async fn values_only_are_served_without_attributes(mut fixture: impl SourceFixture) {
    let now = fixture.now();
    let (source, versions) = fixture.source(&[Seed::new("api-key", "the-value")]).await;

    let served = source
        .fetch(&name("api-key"), now)
        .await
        .expect("read")
        .expect("served");

    assert_eq!(versions, [None]);
    assert_eq!(served.value.expose(), "the-value");
    assert_eq!(served.version, None);
    assert_eq!(served.content_type, None);
    assert_eq!(served.expires, None);
}

macro_rules! source_suite {
    ($($adapter:ident ($capability:ident): $fixture:expr),+ $(,)?) => {
        $( source_suite!(@ $capability, $adapter, $fixture); )+
    };
    (@ attributes, $adapter:ident, $fixture:expr) => {
        contract!($adapter: $fixture =>
            a_live_secret_is_served_with_its_attributes,
            a_missing_secret_is_none,
            disabled_early_and_expired_secrets_are_not_served,
            the_current_version_is_served,
        );
    };
    (@ values_only, $adapter:ident, $fixture:expr) => {
        contract!($adapter: $fixture =>
            values_only_are_served_without_attributes,
            a_missing_secret_is_none,
        );
    };
}

source_suite!(
    key_vault (attributes): super::KeyVaultFixture::start(),
    table (attributes): super::TableFixture::new(),
    local_vault (attributes): super::LocalFixture::open(),
    app_settings (values_only): super::AppSettingsFixture::new(),
);

/// Key Vault against the stand-in, read through `KeyVaultSource`.
struct KeyVaultFixture {
    standins: Standins,
}

impl KeyVaultFixture {
    async fn start() -> Self {
        let standins = Standins::start()
            .await
            .expect("the stand-ins start on loopback");
        Self { standins }
    }
}

#[async_trait]
impl SourceFixture for KeyVaultFixture {
    fn now(&self) -> DateTime<Utc> {
        self.standins.now()
    }

    async fn source(&mut self, seeds: &[Seed]) -> (Arc<dyn SecretSource>, Vec<Option<String>>) {
        let kv = self.standins.keyvault();
        let versions = seeds
            .iter()
            .map(|seed| {
                let mut stored = SecretSeed::new(seed.name, seed.value.as_str());
                if let Some(content_type) = seed.content_type {
                    stored = stored.content_type(content_type);
                }
                if let Some(at) = seed.not_before {
                    stored = stored.not_before(at);
                }
                if let Some(at) = seed.expires {
                    stored = stored.expires(at);
                }
                if !seed.enabled {
                    stored = stored.disabled();
                }
                Some(kv.seed_secret(stored))
            })
            .collect();
        let vault = VaultUrl::parse(kv.url().as_str()).expect("a vault URL");
        let options = ClientOptions {
            retry: RetryOptions::none(),
            ..self.standins.client_options()
        };
        let source = KeyVaultSource::new(vault, self.standins.credential(), Some(options))
            .without_challenge_resource_check();
        (Arc::new(source), versions)
    }
}

/// One table of Azurite's table service, a row per secret.
struct TableFixture {
    client: TableClient,
    table: TableName,
}

impl TableFixture {
    async fn new() -> Self {
        let endpoint = std::env::var(TABLE_ENDPOINT_VARIABLE).unwrap_or_else(|_| {
            panic!("{TABLE_ENDPOINT_VARIABLE} is not set: start Azurite via the project's test command (.ci/test)")
        });
        let connection = SecretValue::new(format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_ACCOUNT_KEY};TableEndpoint={endpoint}"
        ));
        let client = TableClient::from_connection_string(&connection, None).expect("client");
        let table = TableName::parse(&format!("secrets{}", uuid::Uuid::new_v4().simple()))
            .expect("table name");
        client
            .create_table_if_not_exists(&table)
            .await
            .expect("the table is created (is Azurite running?)");
        Self { client, table }
    }
}

#[async_trait]
impl SourceFixture for TableFixture {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn source(&mut self, seeds: &[Seed]) -> (Arc<dyn SecretSource>, Vec<Option<String>>) {
        let partition = EntityKey::parse(SECRETS_PARTITION).expect("key");
        let mut versions = Vec::new();
        let mut written = std::collections::BTreeSet::new();
        for (index, seed) in seeds.iter().enumerate() {
            let version = format!("v{index}");
            let mut row = Map::new();
            row.insert("Value".into(), json!(seed.value));
            row.insert("Version".into(), json!(version));
            row.insert("Enabled".into(), json!(seed.enabled));
            if let Some(content_type) = seed.content_type {
                row.insert("ContentType".into(), json!(content_type));
            }
            for (field, at) in [("NotBefore", seed.not_before), ("ExpiresOn", seed.expires)] {
                if let Some(at) = at {
                    row.insert(field.into(), Value::String(at.to_rfc3339()));
                }
            }
            let key =
                EntityKey::parse(&TableSecretSource::row_key(&name(seed.name))).expect("a row key");
            if written.insert(seed.name) {
                self.client
                    .insert(&self.table, &partition, &key, &row)
                    .await
                    .expect("row inserted");
            } else {
                self.client
                    .update(
                        &self.table,
                        &partition,
                        &key,
                        &row,
                        UpdateMode::Replace,
                        &IfMatch::Any,
                    )
                    .await
                    .expect("row replaced");
            }
            versions.push(Some(version));
        }
        let source = TableSecretSource::new(self.client.clone(), self.table.clone());
        (Arc::new(source), versions)
    }
}

/// The local vault's source over a SQLite file. Disabling a version is not something
/// the local vault offers, so the fixture does it in the file, as an operator's tool
/// would.
struct LocalFixture {
    dir: TempDir,
    vault: LocalVault,
}

impl LocalFixture {
    async fn open() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalStore::open(dir.path().join("keyturn.db")).expect("the store opens");
        let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        let key = VaultKey::from_base64(&key, "test").expect("a key");
        let vault = LocalVault::open(store, key, Clock::system())
            .await
            .expect("the vault opens");
        Self { dir, vault }
    }

    fn url() -> VaultUrl {
        VaultUrl::parse("https://kv-local.vault.azure.net/").expect("a vault URL")
    }
}

#[async_trait]
impl SourceFixture for LocalFixture {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn source(&mut self, seeds: &[Seed]) -> (Arc<dyn SecretSource>, Vec<Option<String>>) {
        let mut versions = Vec::new();
        for seed in seeds {
            let written = self
                .vault
                .set_secret(
                    &Self::url(),
                    &name(seed.name),
                    &SecretValue::new(seed.value.as_str()),
                    NewSecretVersion {
                        content_type: seed.content_type.map(str::to_owned),
                        not_before: seed.not_before,
                        expires: seed.expires,
                        ..NewSecretVersion::default()
                    },
                )
                .await
                .expect("version written");
            let version = written.id.version().expect("versioned").as_str().to_owned();
            if !seed.enabled {
                let connection = rusqlite::Connection::open(self.dir.path().join("keyturn.db"))
                    .expect("the store file opens");
                let changed = connection
                    .execute(
                        "UPDATE vault_secret_versions SET enabled = 0 WHERE version = ?1",
                        [&version],
                    )
                    .expect("disable");
                assert_eq!(changed, 1);
            }
            versions.push(Some(version));
        }
        (Arc::new(self.vault.source(Self::url())), versions)
    }
}

/// App settings: values under a prefix, fixed when the source is built.
struct AppSettingsFixture;

impl AppSettingsFixture {
    async fn new() -> Self {
        Self
    }
}

#[async_trait]
impl SourceFixture for AppSettingsFixture {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn source(&mut self, seeds: &[Seed]) -> (Arc<dyn SecretSource>, Vec<Option<String>>) {
        let prefix = "KEYTURN_SECRET_";
        let settings: Vec<(String, String)> = seeds
            .iter()
            .map(|seed| {
                assert!(
                    seed.enabled
                        && seed.content_type.is_none()
                        && seed.not_before.is_none()
                        && seed.expires.is_none(),
                    "app settings hold values only"
                );
                (
                    AppSettingsSource::setting_name(prefix, &name(seed.name)),
                    seed.value.clone(),
                )
            })
            .collect();
        let source = AppSettingsSource::from_settings(
            prefix,
            settings.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        (Arc::new(source), vec![None; seeds.len()])
    }
}
