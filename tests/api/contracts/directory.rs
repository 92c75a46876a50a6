//! The directory ports' contract: `CredentialIssuer` with `TokenProver` (Graph and the
//! Entra token endpoint against the stand-ins, the local directory, the in-memory
//! directory) and `DeviceDirectory` (Graph against the stand-in and the local
//! directory; the in-memory doubles have no device directory).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::{ClientOptions, RetryOptions};
use chrono::{DateTime, TimeDelta, Utc};
use keyturn_standins::{Permissions, Standins};
use tempfile::TempDir;

use keyturn::adapters::azure::graph::GraphClient;
use keyturn::adapters::azure::token::{DEFAULT_PROOF_SCOPE, EntraTokenProver};
use keyturn::adapters::local::directory::LocalDirectory;
use keyturn::adapters::local::store::LocalStore;
use keyturn::domain::clock::Clock;
use keyturn::domain::ids::{AppId, DeviceId, DirectoryObjectId, KeyId, TenantId};
use keyturn::domain::secret::SecretValue;
use keyturn::ports::FailureKind;
use keyturn::ports::directory::{
    AlternativeSecurityId, Application, CredentialIssuer, Device, DeviceDirectory, ProofError,
    TokenProver,
};
use keyturn_doubles::{Faults, ManualClock, MemoryDirectory};

use super::contract;

/// Entra's answer to a wrong secret, or one that has not propagated yet.
const INVALID_CLIENT_SECRET: &str = "AADSTS7000215";
/// Entra's answer to an expired secret.
const EXPIRED_CLIENT_SECRET: &str = "AADSTS7000222";
/// How long every fixture's directory takes to propagate a new credential.
const PROPAGATION: Duration = Duration::from_secs(10);
/// Microsoft Graph's token audience: the stand-ins' token endpoint issues Graph tokens
/// for it, whatever host the Graph stand-in listens on.
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// One directory under test: applications, their credentials and sign-in.
#[async_trait]
pub trait DirectoryFixture: Send + Sync + 'static {
    fn issuer(&self) -> Arc<dyn CredentialIssuer>;
    fn prover(&self) -> Arc<dyn TokenProver>;
    /// The directory's own clock.
    fn now(&self) -> DateTime<Utc>;
    /// Moves the directory's clock forward.
    fn advance(&self, by: Duration);
    /// Registers an application, as an administrator would.
    async fn application(&self, display_name: &str) -> Application;
}

/// Devices, as the `entra-device` policy looks them up.
#[async_trait]
pub trait DeviceFixture: Send + Sync + 'static {
    fn devices(&self) -> Arc<dyn DeviceDirectory>;
    /// Registers `device`, as Entra join would.
    async fn register(&self, device: &Device);
}

fn rejected(code: &str) -> Result<(), ProofError> {
    Err(ProofError::Rejected { code: code.into() })
}

fn whole_seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).expect("a valid time")
}

async fn add_password_returns_the_secret_once_and_lists_only_metadata(
    fixture: impl DirectoryFixture,
) {
    let issuer = fixture.issuer();
    let app = fixture.application("billing-api").await;
    let end = whole_seconds(fixture.now()) + TimeDelta::days(30);

    let found = issuer
        .application(&app.app_id)
        .await
        .expect("looked up")
        .expect("found");
    let issued = issuer
        .add_password(&app.object_id, "keyturn job 7", end)
        .await
        .expect("added");
    let listed = issuer
        .password_credentials(&app.object_id)
        .await
        .expect("listed");
    let unknown = issuer
        .application(&AppId::new_random())
        .await
        .expect("looked up");

    assert_eq!(found, app);
    assert_eq!(found.display_name.as_deref(), Some("billing-api"));
    assert_eq!(unknown, None);
    let secret = issued.secret.expose();
    assert!(
        secret.len() >= 32,
        "a long random secret: {} chars",
        secret.len()
    );
    assert!(!format!("{issued:?}").contains(secret));
    assert_eq!(
        issued.credential.display_name.as_deref(),
        Some("keyturn job 7")
    );
    assert_eq!(issued.credential.end, Some(end));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key_id, issued.credential.key_id);
    assert_eq!(listed[0].end, Some(end));
    if let Some(hint) = &listed[0].hint {
        assert_eq!(
            hint.as_str(),
            &secret[..3],
            "a hint is the first characters"
        );
    }
    assert!(!format!("{listed:?}").contains(secret));
}

async fn removing_a_credential_retires_it_and_a_second_removal_is_not_found(
    fixture: impl DirectoryFixture,
) {
    let issuer = fixture.issuer();
    let app = fixture.application("billing-api").await;
    let end = fixture.now() + TimeDelta::days(1);
    let kept = issuer
        .add_password(&app.object_id, "kept", end)
        .await
        .expect("added");
    let removed = issuer
        .add_password(&app.object_id, "removed", end)
        .await
        .expect("added");

    issuer
        .remove_password(&app.object_id, &removed.credential.key_id)
        .await
        .expect("removed");
    let twice = issuer
        .remove_password(&app.object_id, &removed.credential.key_id)
        .await
        .expect_err("already removed");
    let unknown = issuer
        .remove_password(&app.object_id, &KeyId::new_random())
        .await
        .expect_err("unknown");

    assert_eq!(twice.kind, FailureKind::NotFound);
    assert_eq!(unknown.kind, FailureKind::NotFound);
    let left: Vec<KeyId> = issuer
        .password_credentials(&app.object_id)
        .await
        .expect("listed")
        .iter()
        .map(|c| c.key_id)
        .collect();
    assert_eq!(left, [kept.credential.key_id]);
}

async fn a_new_secret_proves_once_propagated_and_wrong_removed_or_expired_ones_never(
    fixture: impl DirectoryFixture,
) {
    let issuer = fixture.issuer();
    let prover = fixture.prover();
    let app = fixture.application("billing-api").await;
    let end = fixture.now() + TimeDelta::hours(1);
    let issued = issuer
        .add_password(&app.object_id, "new", end)
        .await
        .expect("added");
    let removed = issuer
        .add_password(&app.object_id, "removed", end)
        .await
        .expect("added");

    let early = prover.prove(&app.app_id, &issued.secret).await;
    fixture.advance(PROPAGATION + Duration::from_secs(1));
    let propagated = prover.prove(&app.app_id, &issued.secret).await;
    let wrong = prover
        .prove(&app.app_id, &SecretValue::new("not-the-secret"))
        .await;
    issuer
        .remove_password(&app.object_id, &removed.credential.key_id)
        .await
        .expect("removed");
    let after_removal = prover.prove(&app.app_id, &removed.secret).await;
    fixture.advance(Duration::from_secs(2 * 3600));
    let expired = prover.prove(&app.app_id, &issued.secret).await;

    assert_eq!(early, rejected(INVALID_CLIENT_SECRET), "not yet propagated");
    assert_eq!(propagated, Ok(()));
    assert_eq!(wrong, rejected(INVALID_CLIENT_SECRET));
    assert_eq!(after_removal, rejected(INVALID_CLIENT_SECRET));
    assert_eq!(expired, rejected(EXPIRED_CLIENT_SECRET));
}

async fn devices_are_found_by_device_id_with_every_security_id(fixture: impl DeviceFixture) {
    let devices = fixture.devices();
    let device = Device {
        device_id: DeviceId::new_random(),
        account_enabled: true,
        alternative_security_ids: vec![
            AlternativeSecurityId {
                kind: 2,
                identity_provider: None,
                key: b"first-binding".to_vec(),
            },
            AlternativeSecurityId {
                kind: 2,
                identity_provider: None,
                key: b"X509:<SHA1-TP-PUBKEY>thumbprint-and-key-hash".to_vec(),
            },
        ],
        is_compliant: Some(false),
        is_managed: Some(true),
    };
    let disabled = Device {
        device_id: DeviceId::new_random(),
        account_enabled: false,
        alternative_security_ids: vec![],
        is_compliant: Some(true),
        is_managed: Some(true),
    };
    fixture.register(&device).await;
    fixture.register(&disabled).await;

    let found = devices.device(&device.device_id).await.expect("looked up");
    let found_disabled = devices
        .device(&disabled.device_id)
        .await
        .expect("looked up");
    let unknown = devices
        .device(&DeviceId::new_random())
        .await
        .expect("looked up");

    assert_eq!(found, Some(device));
    assert_eq!(
        found_disabled,
        Some(disabled),
        "a disabled device is still found"
    );
    assert_eq!(unknown, None);
}

macro_rules! directory_suite {
    ($($adapter:ident: $fixture:expr),+ $(,)?) => {
        $(
            contract!($adapter: $fixture =>
                add_password_returns_the_secret_once_and_lists_only_metadata,
                removing_a_credential_retires_it_and_a_second_removal_is_not_found,
                a_new_secret_proves_once_propagated_and_wrong_removed_or_expired_ones_never,
            );
        )+
    };
}

directory_suite!(
    graph_and_entra: super::GraphFixture::start(),
    local_directory: super::LocalFixture::open(),
    memory_directory: super::MemoryFixture::new(),
);

mod devices {
    use super::contract;
    use super::devices_are_found_by_device_id_with_every_security_id;

    contract!(graph: super::super::GraphFixture::start() =>
        devices_are_found_by_device_id_with_every_security_id);
    contract!(local_directory: super::super::LocalFixture::open() =>
        devices_are_found_by_device_id_with_every_security_id);
}

/// Graph and the Entra token endpoint against the stand-ins.
struct GraphFixture {
    standins: Standins,
    graph: Arc<GraphClient>,
    prover: Arc<EntraTokenProver>,
}

impl GraphFixture {
    async fn start() -> Self {
        let standins = Standins::start()
            .await
            .expect("the stand-ins start on loopback");
        standins.graph().set_propagation_delay(PROPAGATION);
        let options = ClientOptions {
            retry: RetryOptions::none(),
            ..standins.client_options()
        };
        let graph = GraphClient::with_scope(
            standins.graph().url(),
            GRAPH_SCOPE.to_owned(),
            standins.credential(),
            Some(options.clone()),
        )
        .expect("the stand-in's URL is an https endpoint");
        let tenant = TenantId::parse(&standins.tenant_id().to_string()).expect("GUID");
        let prover = EntraTokenProver::new(
            standins.login_url(),
            &tenant,
            DEFAULT_PROOF_SCOPE,
            Some(options),
        )
        .expect("valid authority");
        Self {
            standins,
            graph: Arc::new(graph),
            prover: Arc::new(prover),
        }
    }
}

#[async_trait]
impl DirectoryFixture for GraphFixture {
    fn issuer(&self) -> Arc<dyn CredentialIssuer> {
        self.graph.clone()
    }

    fn prover(&self) -> Arc<dyn TokenProver> {
        self.prover.clone()
    }

    fn now(&self) -> DateTime<Utc> {
        self.standins.now()
    }

    fn advance(&self, by: Duration) {
        self.standins.advance_clock(by);
    }

    async fn application(&self, display_name: &str) -> Application {
        let seeded = self
            .standins
            .graph()
            .seed_application(display_name, Permissions::all());
        Application {
            object_id: DirectoryObjectId::parse(&seeded.object_id.to_string()).expect("GUID"),
            app_id: AppId::parse(&seeded.app_id.to_string()).expect("GUID"),
            display_name: Some(display_name.to_owned()),
        }
    }
}

#[async_trait]
impl DeviceFixture for GraphFixture {
    fn devices(&self) -> Arc<dyn DeviceDirectory> {
        self.graph.clone()
    }

    async fn register(&self, device: &Device) {
        let mut seeded = keyturn_standins::Device::new("laptop-17");
        seeded.device_id = uuid::Uuid::parse_str(&device.device_id.to_string()).expect("a GUID");
        seeded.account_enabled = device.account_enabled;
        seeded.is_compliant = device.is_compliant;
        seeded.is_managed = device.is_managed;
        seeded.alternative_security_ids = device
            .alternative_security_ids
            .iter()
            .map(|id| keyturn_standins::graph::AlternativeSecurityId {
                kind: id.kind,
                identity_provider: id.identity_provider.clone(),
                key: id.key.clone(),
            })
            .collect();
        self.standins.graph().seed_device(seeded);
    }
}

/// A clock the test moves by hand, for the local directory.
#[derive(Clone)]
struct HandClock(Arc<AtomicI64>);

impl HandClock {
    fn clock(&self) -> Clock {
        let cell = Arc::clone(&self.0);
        Clock::from_fn(move || {
            DateTime::from_timestamp_millis(cell.load(Ordering::SeqCst)).expect("a valid time")
        })
    }
}

/// The local directory over a SQLite file.
struct LocalFixture {
    _dir: TempDir,
    clock: HandClock,
    directory: Arc<LocalDirectory>,
}

impl LocalFixture {
    async fn open() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalStore::open(dir.path().join("keyturn.db")).expect("the store opens");
        let clock = HandClock(Arc::new(AtomicI64::new(Utc::now().timestamp_millis())));
        let delay = TimeDelta::from_std(PROPAGATION).expect("a short delay");
        let directory = LocalDirectory::new(store, clock.clock()).with_propagation_delay(delay);
        Self {
            _dir: dir,
            clock,
            directory: Arc::new(directory),
        }
    }
}

#[async_trait]
impl DirectoryFixture for LocalFixture {
    fn issuer(&self) -> Arc<dyn CredentialIssuer> {
        self.directory.clone()
    }

    fn prover(&self) -> Arc<dyn TokenProver> {
        self.directory.clone()
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.clock().now()
    }

    fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).expect("a short step");
        self.clock.0.fetch_add(by, Ordering::SeqCst);
    }

    async fn application(&self, display_name: &str) -> Application {
        self.directory
            .create_application(display_name)
            .await
            .expect("registered")
    }
}

#[async_trait]
impl DeviceFixture for LocalFixture {
    fn devices(&self) -> Arc<dyn DeviceDirectory> {
        self.directory.clone()
    }

    async fn register(&self, device: &Device) {
        self.directory.add_device(device).await.expect("registered");
    }
}

/// The in-memory directory the engine's tests drive.
struct MemoryFixture {
    clock: ManualClock,
    directory: Arc<MemoryDirectory>,
}

impl MemoryFixture {
    async fn new() -> Self {
        let clock = ManualClock::at(Utc::now());
        let directory = Arc::new(MemoryDirectory::new(clock.clock(), Faults::new()));
        directory.set_propagation_delay(PROPAGATION);
        Self { clock, directory }
    }
}

#[async_trait]
impl DirectoryFixture for MemoryFixture {
    fn issuer(&self) -> Arc<dyn CredentialIssuer> {
        self.directory.clone()
    }

    fn prover(&self) -> Arc<dyn TokenProver> {
        self.directory.clone()
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.clock().now()
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    async fn application(&self, display_name: &str) -> Application {
        self.directory
            .add_application(AppId::new_random(), display_name)
    }
}
