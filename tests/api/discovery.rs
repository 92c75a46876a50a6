//! Discovery against the HTTPS stand-ins, with an identity holding only what discovery
//! is granted (Reader on the subscription, Key Vault Reader, Graph Application.Read.All):
//! every vault object and directory credential reaches the inventory as metadata, no
//! value-returning call is ever made, a rerun writes the same rows, and each scope that
//! cannot be read is a finding while the rest of the sweep goes on.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use azure_core::http::ClientOptions;
use chrono::Duration;
use keyturn_doubles::{Faults, MemoryInventory, MemoryQueue};
use keyturn_standins::{
    CertificateSeed, Fault, KeyCredentialSeed, KeySeed, NetworkRefusal, OwnerUser, Permissions,
    Route, SecretSeed, Service, Standins, VaultProperties,
};
use uuid::Uuid;

use futures::TryStreamExt;
use keyturn::adapters::azure::client::http::default_client_options;
use keyturn::adapters::azure::client::resource_manager::ResourceManagerClient;
use keyturn::adapters::azure::graph::GraphClient;
use keyturn::adapters::azure::vault_catalog::{KEY_VAULT_SCOPE, KeyVaultCatalog};
use keyturn::discovery::budget::Budgets;
use keyturn::discovery::job::{DiscoveryJob, JobScope};
use keyturn::discovery::{Discovery, SNAPSHOT_DELAY, handle_delivery, queue_rescan, run_sweep};
use keyturn::domain::ids::{AppId, SubscriptionId};
use keyturn::domain::inventory::{
    CredentialFilter, CredentialHandle, CredentialSource, InventoryCredential, InventoryVault,
    Scope, ScopeFinding,
};
use keyturn::domain::inventory::{CredentialKind, FindingKind, SweepId};
use keyturn::domain::names::VaultUrl;
use keyturn::ports::catalog::{DirectoryKind, DirectoryRange};
use keyturn::ports::inventory::{InventoryStore, credential_stream, finding_stream, vault_stream};

const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// Key Vault Reader's data actions, Reader's vault read, Application.Read.All: and no
/// `secrets/get`.
fn discovery_permissions() -> Permissions {
    Permissions::only([
        "secrets/list",
        "certificates/list",
        "certificates/get",
        "keys/list",
        "keys/get",
        "keys/getrotationpolicy",
        "Microsoft.KeyVault/vaults/read",
        "Application.Read.All",
    ])
}

fn options(standins: &Standins) -> ClientOptions {
    ClientOptions {
        transport: standins.client_options().transport,
        ..default_client_options()
    }
}

fn discovery(standins: &Standins, store: Arc<MemoryInventory>) -> Discovery {
    discovery_within(standins, store, Budgets::default())
}

fn discovery_within(
    standins: &Standins,
    store: Arc<MemoryInventory>,
    budgets: Budgets,
) -> Discovery {
    let identity = standins.seed_identity("keyturn-discovery", discovery_permissions());
    let credential = standins.credential_for(&identity);
    let resources = ResourceManagerClient::new(
        standins.resource_manager().url(),
        credential.clone(),
        Some(options(standins)),
    )
    .expect("https");
    let graph = GraphClient::with_scope(
        standins.graph().url(),
        GRAPH_SCOPE.to_owned(),
        credential.clone(),
        Some(options(standins)),
    )
    .expect("https");
    let vaults = KeyVaultCatalog::new(credential, KEY_VAULT_SCOPE, Some(options(standins)));
    Discovery::new(
        Arc::new(resources),
        Arc::new(vaults),
        Arc::new(graph),
        store,
        budgets,
    )
}

fn sweep(id: &str) -> SweepId {
    SweepId::parse(id).expect("a valid sweep id")
}

struct Tenant {
    subscription: Uuid,
    vault_urls: Vec<url::Url>,
}

/// One subscription with two RBAC vaults and one in access-policy mode; secrets with and
/// without an end date, one managed; a certificate that renews itself; two keys; an
/// application with a password and a certificate credential and an owner without mail;
/// a service principal with a SAML signing certificate.
async fn seed(standins: &Standins) -> Tenant {
    let now = standins.now();
    let arm = standins.resource_manager();
    let subscription = arm.seed_subscription("production");
    let first = standins.keyvault();
    first.seed_secret(SecretSeed::new("db-password", "hunter2").expires(now + Duration::days(20)));
    first.seed_secret(SecretSeed::new("forever", "s3cret"));
    first.seed_secret(
        SecretSeed::new("app-secret", "managed-value")
            .tag("keyturn-kind", "generated")
            .expires(now + Duration::days(90)),
    );
    first.seed_certificate(
        CertificateSeed::new("tls", "CN=tls.contoso.com", now, now + Duration::days(60))
            .auto_renew_at(80),
    );
    first.seed_key(KeySeed::rsa("wrap", 3072).rotated_before_expiry(30));
    let second = standins.add_vault().await.expect("a vault starts");
    second.seed_key(KeySeed::ec("sign", "P-256").expires(now + Duration::days(400)));
    let legacy = standins.add_vault().await.expect("a vault starts");
    legacy.seed_secret(SecretSeed::new("old", "v").expires(now - Duration::days(3)));
    let vault_urls = vec![
        first.url().clone(),
        second.url().clone(),
        legacy.url().clone(),
    ];
    arm.seed_vault(
        subscription,
        "kv-first",
        first.url(),
        VaultProperties::default(),
    );
    arm.seed_vault(
        subscription,
        "kv-second",
        second.url(),
        VaultProperties::default(),
    );
    arm.seed_vault(
        subscription,
        "kv-legacy",
        legacy.url(),
        VaultProperties {
            rbac: false,
            ..VaultProperties::default()
        },
    );

    let graph = standins.graph();
    let app = graph.seed_application("payments-api", Permissions::only(Vec::<String>::new()));
    graph.add_password(app.object_id, now + Duration::days(10), true);
    graph.add_key_credential(
        app.object_id,
        KeyCredentialSeed::certificate("CN=payments", now, now + Duration::days(365)),
    );
    graph.add_owner_user(
        app.object_id,
        OwnerUser::new("Ana Silva", Some("ana@contoso.com"), None),
    );
    let sp = graph.seed_service_principal("saml-app");
    graph.add_service_principal_key(
        sp.object_id,
        KeyCredentialSeed::certificate("CN=saml signing", now, now + Duration::days(3 * 365))
            .usage("Sign"),
    );
    Tenant {
        subscription,
        vault_urls,
    }
}

async fn credentials_in(store: &dyn InventoryStore) -> Vec<InventoryCredential> {
    let mut all: Vec<InventoryCredential> =
        credential_stream(store, CredentialFilter::default(), 100)
            .try_collect()
            .await
            .expect("the store reads");
    all.sort_by_key(|c| c.id());
    all
}

async fn findings_in(store: &dyn InventoryStore) -> Vec<ScopeFinding> {
    let mut all: Vec<ScopeFinding> = finding_stream(store, 100)
        .try_collect()
        .await
        .expect("the store reads");
    all.sort_by_key(|f| f.id());
    all
}

async fn vaults_in(store: &dyn InventoryStore) -> Vec<InventoryVault> {
    let mut all: Vec<InventoryVault> = vault_stream(store, 100)
        .try_collect()
        .await
        .expect("the store reads");
    all.sort_by_key(|v| v.id());
    all
}

fn value_reads(standins: &Standins, tenant: &Tenant) -> u64 {
    tenant
        .vault_urls
        .iter()
        .map(|url| standins.vault_at(url).expect("a known vault").value_reads())
        .sum()
}

#[tokio::test]
async fn a_sweep_inventories_every_vault_object_and_directory_credential_without_reading_a_value() {
    let standins = Standins::start().await.expect("stand-ins start");
    let tenant = seed(&standins).await;
    let store = Arc::new(MemoryInventory::new());
    let discovery = discovery(&standins, store.clone());

    let report = run_sweep(&discovery, sweep("s1"), Vec::new(), 8, standins.now())
        .await
        .expect("the sweep completes");

    assert_eq!(
        value_reads(&standins, &tenant),
        0,
        "no value-returning call"
    );
    let credentials = credentials_in(store.as_ref()).await;
    let count = |kind: CredentialKind| credentials.iter().filter(|c| c.kind == kind).count();
    assert_eq!(count(CredentialKind::Secret), 4);
    assert_eq!(count(CredentialKind::Certificate), 1);
    assert_eq!(count(CredentialKind::Key), 2);
    // The seeded discovery identity and the stand-ins' own identity have a password each.
    assert_eq!(count(CredentialKind::PasswordCredential), 3);
    assert_eq!(count(CredentialKind::KeyCredential), 2);
    assert_eq!(report.vaults, 3);

    let by_name = |name: &str| {
        credentials
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name} is in the inventory"))
    };
    assert!(by_name("app-secret").managed);
    assert!(!by_name("db-password").managed);
    assert!(
        by_name("forever").expires.is_none(),
        "no end date is a value"
    );
    let tls = by_name("tls").certificate.as_ref().expect("details read");
    assert!(tls.auto_renews());
    assert_eq!(tls.policy_issuer.as_deref(), Some("Self"));
    assert!(
        tls.subject
            .as_deref()
            .is_some_and(|s| s.contains("tls.contoso.com"))
    );
    let wrap = by_name("wrap").key.as_ref().expect("details read");
    assert_eq!(
        (
            wrap.key_type.as_deref(),
            wrap.key_size,
            wrap.rotation_policy
        ),
        (Some("RSA"), Some(3072), true)
    );
    let saml = by_name("CN=saml signing");
    assert_eq!(
        saml.directory.as_ref().and_then(|d| d.usage.as_deref()),
        Some("Sign")
    );
    let payments = by_name("CN=payments");
    assert_eq!(
        payments.owners[0].user_principal_name.as_deref(),
        Some("ana@contoso.com")
    );
    assert!(payments.owners[0].mail.is_none());

    let findings = findings_in(store.as_ref()).await;
    let has = |kind: FindingKind| findings.iter().any(|f| f.kind == kind);
    assert!(
        has(FindingKind::AccessPolicyMode),
        "the access-policy vault is flagged"
    );
    assert!(has(FindingKind::OwnerWithoutMail));
    assert!(has(FindingKind::NoEndDate));
    assert_eq!(
        store
            .snapshots(None, 100)
            .await
            .expect("snapshots")
            .items
            .len(),
        1
    );
    let _ = tenant.subscription;
}

#[tokio::test]
async fn a_second_run_of_the_same_sweep_changes_nothing() {
    let standins = Standins::start().await.expect("stand-ins start");
    seed(&standins).await;
    let store = Arc::new(MemoryInventory::new());
    let discovery = discovery(&standins, store.clone());
    let now = standins.now();
    run_sweep(&discovery, sweep("s1"), Vec::new(), 4, now)
        .await
        .expect("first run");
    let first = (
        credentials_in(store.as_ref()).await,
        findings_in(store.as_ref()).await,
        vaults_in(store.as_ref()).await,
    );
    run_sweep(&discovery, sweep("s1"), Vec::new(), 4, now)
        .await
        .expect("second run");
    let second = (
        credentials_in(store.as_ref()).await,
        findings_in(store.as_ref()).await,
        vaults_in(store.as_ref()).await,
    );
    assert_eq!(first, second);
}

#[tokio::test]
async fn each_scope_that_cannot_be_read_is_a_finding_and_the_sweep_goes_on() {
    let standins = Standins::start().await.expect("stand-ins start");
    let tenant = seed(&standins).await;
    let arm = standins.resource_manager();
    let hidden = arm.seed_inaccessible_subscription("finance");
    let walled = standins.add_vault().await.expect("starts");
    walled.refuse_network(Some(NetworkRefusal::Firewall));
    arm.seed_vault(
        tenant.subscription,
        "kv-walled",
        walled.url(),
        VaultProperties::default(),
    );
    let deleted = standins.add_vault().await.expect("starts");
    arm.seed_vault(
        tenant.subscription,
        "kv-deleted",
        deleted.url(),
        VaultProperties::default(),
    );
    let deleted_url = deleted.url().clone();
    standins.stop_vault(&deleted_url);
    // Every try of the first service-principal page fails (keyturn's pipeline tries four
    // times).
    for _ in 0..4 {
        standins.inject(
            Service::Graph,
            Route::any("/v1.0/servicePrincipals"),
            Fault::internal_error(),
        );
    }
    let store = Arc::new(MemoryInventory::new());
    let discovery = discovery(&standins, store.clone());

    run_sweep(
        &discovery,
        sweep("s1"),
        vec![
            SubscriptionId::parse(&tenant.subscription.to_string()).expect("guid"),
            SubscriptionId::parse(&hidden.to_string()).expect("guid"),
        ],
        4,
        standins.now(),
    )
    .await
    .expect("the sweep completes despite the failures");

    let findings = findings_in(store.as_ref()).await;
    let kinds: Vec<FindingKind> = findings.iter().map(|f| f.kind).collect();
    assert!(kinds.contains(&FindingKind::AccessDenied), "{kinds:?}");
    assert!(kinds.contains(&FindingKind::NetworkRefused), "{kinds:?}");
    assert!(kinds.contains(&FindingKind::PageFailed), "{kinds:?}");
    // The readable vaults and the applications were still inventoried.
    let credentials = credentials_in(store.as_ref()).await;
    assert!(credentials.iter().any(|c| c.name == "db-password"));
    assert!(
        credentials
            .iter()
            .any(|c| c.kind == CredentialKind::KeyCredential)
    );
    assert_eq!(value_reads(&standins, &tenant), 0);
}

/// `KEYTURN_DISCOVERY_SUBSCRIPTIONS` names which subscriptions are read: another one the
/// identity can see is left alone, and one named but not visible to the identity is a
/// finding on that subscription while the rest of the sweep goes on.
#[tokio::test]
async fn only_the_configured_subscriptions_are_read_and_one_not_visible_is_a_finding() {
    let standins = Standins::start().await.expect("stand-ins start");
    let tenant = seed(&standins).await;
    let arm = standins.resource_manager();
    let elsewhere = arm.seed_subscription("not configured");
    let other_vault = standins.add_vault().await.expect("starts");
    other_vault.seed_secret(SecretSeed::new("not-configured", "v"));
    arm.seed_vault(
        elsewhere,
        "kv-elsewhere",
        other_vault.url(),
        VaultProperties::default(),
    );
    let unknown = SubscriptionId::parse("0c8d2a4f-0000-4000-8000-00000000dead").expect("guid");
    let store = Arc::new(MemoryInventory::new());
    let discovery = discovery(&standins, store.clone());

    run_sweep(
        &discovery,
        sweep("s1"),
        vec![
            unknown,
            SubscriptionId::parse(&tenant.subscription.to_string()).expect("guid"),
        ],
        4,
        standins.now(),
    )
    .await
    .expect("the sweep completes");

    let findings = findings_in(store.as_ref()).await;
    let on_unknown: Vec<&ScopeFinding> = findings
        .iter()
        .filter(|f| {
            f.scope
                == Scope::Subscription {
                    subscription: unknown,
                }
        })
        .collect();
    assert_eq!(on_unknown.len(), 1, "{findings:?}");
    assert!(on_unknown[0].kind.is_error(), "{:?}", on_unknown[0]);
    assert!(
        on_unknown[0].detail.contains("SubscriptionNotFound"),
        "{:?}",
        on_unknown[0]
    );
    let names: Vec<String> = vaults_in(store.as_ref())
        .await
        .iter()
        .map(|v| v.name.to_string())
        .collect();
    assert!(names.contains(&"kv-first".to_owned()), "{names:?}");
    assert!(!names.contains(&"kv-elsewhere".to_owned()), "{names:?}");
    let credentials = credentials_in(store.as_ref()).await;
    assert!(credentials.iter().any(|c| c.name == "db-password"));
    assert!(!credentials.iter().any(|c| c.name == "not-configured"));
    assert_eq!(other_vault.value_reads(), 0);
}

/// A credential deleted from an application, and every credential of a deleted
/// application, leave the inventory after the next complete sweep of their range; while
/// the range's listing fails, nothing it did not see is retired.
#[tokio::test]
async fn directory_credentials_gone_from_graph_leave_the_inventory_only_after_a_complete_scan() {
    let standins = Standins::start().await.expect("stand-ins start");
    let now = standins.now();
    let graph = standins.graph();
    let app = graph.seed_application("orders-api", Permissions::only(Vec::<String>::new()));
    let kept = graph
        .add_password(app.object_id, now + Duration::days(30), true)
        .expect("added");
    let removed = graph
        .add_password(app.object_id, now + Duration::days(60), true)
        .expect("added");
    let gone = graph.seed_application("retired-api", Permissions::only(Vec::<String>::new()));
    graph
        .add_password(gone.object_id, now + Duration::days(90), true)
        .expect("added");
    let store = Arc::new(MemoryInventory::new());
    let discovery = discovery(&standins, store.clone());
    let key_ids = |credentials: &[InventoryCredential]| -> Vec<String> {
        credentials
            .iter()
            .filter_map(|c| match &c.handle {
                CredentialHandle::DirectoryCredential { key_id } => Some(key_id.to_string()),
                CredentialHandle::VaultObject { .. } => None,
            })
            .collect()
    };
    let of_app = |credentials: &[InventoryCredential], object_id: Uuid| -> usize {
        credentials
            .iter()
            .filter(|c| {
                matches!(&c.source, CredentialSource::Application { object_id: id, .. }
                    if id.to_string() == object_id.to_string())
            })
            .count()
    };

    run_sweep(&discovery, sweep("s1"), Vec::new(), 4, now)
        .await
        .expect("swept");
    let first = credentials_in(store.as_ref()).await;
    assert_eq!(of_app(&first, app.object_id), 2);
    assert_eq!(of_app(&first, gone.object_id), 1);

    graph.remove_application_credential(app.object_id, removed.key_id);
    graph.delete_application(gone.object_id);
    run_sweep(&discovery, sweep("s2"), Vec::new(), 4, now)
        .await
        .expect("swept");
    let second = credentials_in(store.as_ref()).await;
    assert_eq!(of_app(&second, app.object_id), 1);
    assert_eq!(of_app(&second, gone.object_id), 0);
    assert!(key_ids(&second).contains(&kept.key_id.to_string()));
    assert!(!key_ids(&second).contains(&removed.key_id.to_string()));

    // Every try of every applications list fails: sixteen ranges, two lists each (the
    // federated credential counts and the credentials), four tries each.
    graph.remove_application_credential(app.object_id, kept.key_id);
    for _ in 0..128 {
        standins.inject(
            Service::Graph,
            Route::any("/v1.0/applications"),
            Fault::internal_error(),
        );
    }
    run_sweep(&discovery, sweep("s3"), Vec::new(), 32, now)
        .await
        .expect("the sweep completes despite the failures");
    let third = credentials_in(store.as_ref()).await;
    assert!(
        key_ids(&third).contains(&kept.key_id.to_string()),
        "a failed scan retired a credential it did not see"
    );
    let findings = findings_in(store.as_ref()).await;
    assert!(
        findings
            .iter()
            .any(|f| f.kind == FindingKind::PageFailed && f.sweep == sweep("s3")),
        "{findings:?}"
    );
}

/// Each application credential carries how many federated identity credentials its
/// application has, read with one extra Graph list per application range (not one
/// request per application); service principals have none to count.
#[tokio::test]
async fn application_credentials_carry_their_federated_credential_count() {
    let standins = Standins::start().await.expect("stand-ins start");
    let now = standins.now();
    let graph = standins.graph();
    let federated = graph.seed_application("deployer", Permissions::only(Vec::<String>::new()));
    graph
        .add_password(federated.object_id, now + Duration::days(30), true)
        .expect("added");
    graph.add_federated_credential(federated.object_id, "github-main");
    graph.add_federated_credential(federated.object_id, "github-release");
    let plain = graph.seed_application("legacy", Permissions::only(Vec::<String>::new()));
    graph
        .add_password(plain.object_id, now + Duration::days(30), true)
        .expect("added");
    let sp = graph.seed_service_principal("saml-app");
    graph.add_service_principal_key(
        sp.object_id,
        KeyCredentialSeed::certificate("CN=saml", now, now + Duration::days(365)).usage("Sign"),
    );
    let store = Arc::new(MemoryInventory::new());
    let discovery = discovery(&standins, store.clone());

    run_sweep(&discovery, sweep("s1"), Vec::new(), 4, now)
        .await
        .expect("swept");

    let credentials = credentials_in(store.as_ref()).await;
    let count_of = |object_id: Uuid| -> Vec<Option<u32>> {
        credentials
            .iter()
            .filter(|c| match &c.source {
                CredentialSource::Application { object_id: id, .. }
                | CredentialSource::ServicePrincipal { object_id: id, .. } => {
                    id.to_string() == object_id.to_string()
                }
                CredentialSource::Vault { .. } => false,
            })
            .map(|c| c.directory.as_ref().and_then(|d| d.federated_credentials))
            .collect()
    };
    assert_eq!(count_of(federated.object_id), [Some(2)]);
    assert_eq!(count_of(plain.object_id), [Some(0)]);
    assert_eq!(count_of(sp.object_id), [None]);
    let counting = standins
        .requests_to(Service::Graph)
        .iter()
        .filter(|r| {
            r.query_param("$expand")
                .is_some_and(|e| e == "federatedIdentityCredentials")
        })
        .count();
    assert_eq!(counting, 16, "one list per application range");
}

/// Certificates and keys carry how many versions they have, listed a page at a time
/// (the listing returns attributes, never a value); secrets are not counted.
#[tokio::test]
async fn certificates_and_keys_carry_their_version_counts_and_no_value_is_read() {
    let standins = Standins::start().await.expect("stand-ins start");
    let now = standins.now();
    let vault = standins.keyvault();
    vault.set_page_size(2);
    for _ in 0..3 {
        vault.seed_certificate(CertificateSeed::new(
            "tls",
            "CN=tls.contoso.com",
            now,
            now + Duration::days(60),
        ));
    }
    vault.seed_key(KeySeed::rsa("wrap", 3072));
    vault.seed_key(KeySeed::rsa("wrap", 3072));
    vault.seed_secret(SecretSeed::new("db-password", "first"));
    vault.seed_secret(SecretSeed::new("db-password", "second"));
    let arm = standins.resource_manager();
    let subscription = arm.seed_subscription("versions");
    arm.seed_vault(
        subscription,
        "kv-versions",
        vault.url(),
        VaultProperties::default(),
    );
    let store = Arc::new(MemoryInventory::new());
    let discovery = discovery(&standins, store.clone());

    run_sweep(&discovery, sweep("s1"), Vec::new(), 4, now)
        .await
        .expect("swept");

    let credentials = credentials_in(store.as_ref()).await;
    let versions = |name: &str| {
        let credential = credentials
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name} is inventoried"));
        match &credential.handle {
            CredentialHandle::VaultObject { versions, .. } => *versions,
            CredentialHandle::DirectoryCredential { .. } => None,
        }
    };
    assert_eq!(versions("tls"), Some(3));
    assert_eq!(versions("wrap"), Some(2));
    assert_eq!(versions("db-password"), None);
    assert_eq!(vault.value_reads(), 0);
}

/// A key's details are two requests (the key, then its rotation policy): the vault's
/// budget is charged for both, so the requests after them wait two turns, not one.
#[tokio::test]
async fn a_key_details_read_is_charged_to_the_vaults_budget_as_the_two_requests_it_sends() {
    let standins = Standins::start().await.expect("stand-ins start");
    let vault = standins.keyvault();
    for name in ["wrap", "sign", "seal"] {
        vault.seed_key(KeySeed::rsa(name, 2048));
    }
    let arm = standins.resource_manager();
    let subscription = arm.seed_subscription("keys");
    arm.seed_vault(
        subscription,
        "kv-keys",
        vault.url(),
        VaultProperties::default(),
    );
    let store = Arc::new(MemoryInventory::new());
    // 40 requests per 10 s: one every 250 ms.
    let budgets = Budgets {
        key_vault_per_vault: 40,
        ..Budgets::default()
    };
    let spacing = StdDuration::from_millis(250);
    let discovery = discovery_within(&standins, store.clone(), budgets);

    run_sweep(&discovery, sweep("s1"), Vec::new(), 4, standins.now())
        .await
        .expect("swept");

    let requests = standins.requests_to(Service::KeyVault);
    let policies = requests
        .iter()
        .filter(|r| r.path.ends_with("/rotationpolicy"))
        .count();
    // Three listings, and per key its details (two) and its versions (one).
    assert_eq!((requests.len(), policies), (12, 3), "{requests:#?}");
    // Once the keys page is read, the three keys' details (two turns each) and versions
    // (one each) are charged one after another: the last request leaves eight turns after
    // the first key's `GET` (one turn of slack here). Charging the details once would let
    // it leave after five.
    let first_key = requests
        .iter()
        .position(|r| r.path.starts_with("/keys/") && r.path.matches('/').count() == 2)
        .expect("a key's GET");
    let span = requests[11].received - requests[first_key].received;
    assert!(
        span >= spacing * 7,
        "the keys' nine requests within {span:?}"
    );
    let keys: Vec<_> = credentials_in(store.as_ref())
        .await
        .into_iter()
        .filter(|c| c.kind == CredentialKind::Key)
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(
        keys.iter()
            .all(|k| k.key.as_ref().is_some_and(|d| d.key_size == Some(2048))),
        "{keys:#?}"
    );
}

/// An `/owners` list is read in full when the expansion is cut at 20, and one whose
/// page links to itself is cut at the repeat: the credentials are written with the
/// owners read, the cut is an error on that application, and the sweep goes on.
#[tokio::test]
async fn an_owners_list_that_never_ends_is_cut_and_recorded_on_its_application() {
    let standins = Standins::start().await.expect("stand-ins start");
    let now = standins.now();
    let graph = standins.graph();
    let owned = |name: &str, owners: usize| {
        let app = graph.seed_application(name, Permissions::only(Vec::<String>::new()));
        graph.add_password(app.object_id, now + Duration::days(30), true);
        for i in 0..owners {
            let upn = format!("owner{i}@contoso.com");
            graph.add_owner_user(
                app.object_id,
                OwnerUser::new(&format!("Owner {i}"), Some(&upn), Some(&upn)),
            );
        }
        app
    };
    let many = owned("many-owners", 25);
    let looping = owned("looping-owners", 21);
    graph.loop_owner_pages(looping.object_id);
    let store = Arc::new(MemoryInventory::new());
    let discovery = discovery(&standins, store.clone());

    tokio::time::timeout(
        StdDuration::from_secs(60),
        run_sweep(&discovery, sweep("s1"), Vec::new(), 4, now),
    )
    .await
    .expect("the sweep ends")
    .expect("swept");

    let credentials = credentials_in(store.as_ref()).await;
    let owners_of = |object: Uuid| {
        let credential = credentials
            .iter()
            .find(|c| {
                matches!(&c.source, CredentialSource::Application { object_id, .. }
                    if object_id.to_string() == object.to_string())
            })
            .unwrap_or_else(|| panic!("{object} is inventoried"));
        credential.owners.len()
    };
    assert_eq!(owners_of(many.object_id), 25);
    // The looping list gave its one page twice: each owner once.
    assert_eq!(owners_of(looping.object_id), 21);
    let findings = findings_in(store.as_ref()).await;
    let on = |object: Uuid| {
        findings
            .iter()
            .filter(|f| {
                matches!(&f.scope, Scope::Application { object_id }
                    if object_id.to_string() == object.to_string())
            })
            .collect::<Vec<_>>()
    };
    let cut = on(looping.object_id);
    assert_eq!(cut.len(), 1, "{findings:#?}");
    assert_eq!(
        (cut[0].kind, cut[0].subject.as_str()),
        (FindingKind::PageFailed, "owners")
    );
    assert!(cut[0].kind.is_error());
    assert!(on(many.object_id).is_empty(), "{findings:#?}");
    let owners_requests = |object: Uuid| {
        standins
            .requests_to(Service::Graph)
            .iter()
            .filter(|r| r.path == format!("/v1.0/applications/{object}/owners"))
            .count()
    };
    assert_eq!(owners_requests(many.object_id), 1);
    assert_eq!(owners_requests(looping.object_id), 2);
}

/// An `/owners` list read beyond an expansion is a Graph request like a page: each waits
/// its turn on the Graph budget, so however many owner lists a sweep reads, its Graph
/// requests leave at least one budget spacing apart.
#[tokio::test]
async fn owners_lists_read_beyond_the_expansion_are_charged_to_the_graph_budget() {
    let standins = Standins::start().await.expect("stand-ins start");
    let now = standins.now();
    let graph = standins.graph();
    const OWNED: usize = 8;
    for a in 0..OWNED {
        let app = graph.seed_application(
            format!("owned-{a}"),
            Permissions::only(Vec::<String>::new()),
        );
        graph.add_password(app.object_id, now + Duration::days(30), true);
        // One more than an expansion lists: the rest are read from `/owners`.
        for i in 0..21 {
            let upn = format!("owner{a}-{i}@contoso.com");
            graph.add_owner_user(
                app.object_id,
                OwnerUser::new(&format!("Owner {i}"), Some(&upn), Some(&upn)),
            );
        }
    }
    let store = Arc::new(MemoryInventory::new());
    // 200 requests per 10 s: one every 50 ms.
    let budgets = Budgets {
        graph: 200,
        ..Budgets::default()
    };
    let spacing = StdDuration::from_millis(50);
    let discovery = discovery_within(&standins, store.clone(), budgets);

    let started = std::time::Instant::now();
    run_sweep(&discovery, sweep("s1"), Vec::new(), 8, now)
        .await
        .expect("swept");

    let requests = standins.requests_to(Service::Graph);
    let owners = requests
        .iter()
        .filter(|r| r.path.ends_with("/owners"))
        .count();
    assert_eq!(owners, OWNED, "{requests:#?}");
    let last = requests.iter().map(|r| r.received).max().expect("requests");
    // n requests a spacing apart: the last is sent no sooner than n - 1 spacings after
    // the sweep starts (one of slack). Counted from the sweep's start, not from the first
    // request's arrival, which a loaded machine delays (connection, token) while the
    // pacer's turns stay where they were. Owner lists left uncharged would let the sweep
    // end OWNED spacings sooner.
    let turns = u32::try_from(requests.len() - 2).expect("a few requests");
    assert!(
        last - started >= spacing * turns,
        "{} Graph requests ({owners} owner lists) within {:?}",
        requests.len(),
        last - started
    );
    let credentials = credentials_in(store.as_ref()).await;
    let listed_with_all_owners = credentials.iter().filter(|c| c.owners.len() == 21).count();
    assert_eq!(listed_with_all_owners, OWNED);
}

/// A subscription Resource Manager lists without a valid id is an error on the tenant,
/// not dropped, and the other subscriptions are still read.
#[tokio::test]
async fn a_subscription_listed_without_a_valid_id_is_a_finding_and_the_sweep_goes_on() {
    let standins = Standins::start().await.expect("stand-ins start");
    let tenant = seed(&standins).await;
    standins
        .resource_manager()
        .seed_subscription_listed_as("mangled", "not-a-subscription-id");
    let store = Arc::new(MemoryInventory::new());
    let discovery = discovery(&standins, store.clone());

    let report = run_sweep(&discovery, sweep("s1"), Vec::new(), 4, standins.now())
        .await
        .expect("swept");

    assert_eq!(report.jobs.get("subscription"), Some(&1));
    assert_eq!(
        vaults_in(store.as_ref()).await.len(),
        tenant.vault_urls.len()
    );
    let findings = findings_in(store.as_ref()).await;
    let on_tenant: Vec<_> = findings
        .iter()
        .filter(|f| f.scope == Scope::Tenant)
        .collect();
    assert_eq!(on_tenant.len(), 1, "{findings:#?}");
    assert_eq!(
        (on_tenant[0].kind, on_tenant[0].subject.as_str()),
        (FindingKind::Malformed, "subscriptions")
    );
}

#[tokio::test]
async fn a_throttled_vault_is_waited_out_as_its_retry_after_asks() {
    let standins = Standins::start().await.expect("stand-ins start");
    let vault = standins.keyvault();
    vault.seed_secret(SecretSeed::new("db-password", "hunter2"));
    let subscription = standins.resource_manager().seed_subscription("one vault");
    standins.resource_manager().seed_vault(
        subscription,
        "kv-only",
        vault.url(),
        VaultProperties::default(),
    );
    standins.inject(
        Service::KeyVault,
        Route::any("/secrets"),
        Fault::throttled(Some(1)),
    );
    let store = Arc::new(MemoryInventory::new());
    let discovery = discovery(&standins, store.clone());
    run_sweep(
        &discovery,
        sweep("s1"),
        vec![SubscriptionId::parse(&subscription.to_string()).expect("guid")],
        4,
        standins.now(),
    )
    .await
    .expect("completes");
    let secrets: Vec<_> = standins
        .requests_to(Service::KeyVault)
        .into_iter()
        .filter(|r| r.path == "/secrets")
        .collect();
    assert_eq!(
        secrets.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 200]
    );
    let waited = secrets[1].received - secrets[0].received;
    assert!(waited >= StdDuration::from_secs(1), "waited {waited:?}");
    assert!(
        credentials_in(store.as_ref())
            .await
            .iter()
            .any(|c| c.name == "db-password")
    );
    assert_eq!(vault.value_reads(), 0);
}

#[tokio::test]
async fn a_sweep_fans_out_on_the_queue_and_a_redelivered_job_queues_nothing_new() {
    let standins = Standins::start().await.expect("stand-ins start");
    let tenant = seed(&standins).await;
    let store = Arc::new(MemoryInventory::new());
    let discovery = discovery(&standins, store.clone());
    let queue = MemoryQueue::new(Arc::new(Faults::default()));
    let now = standins.now();
    let start = DiscoveryJob::new(
        sweep("s1"),
        JobScope::Sweep {
            subscriptions: Vec::new(),
        },
    );
    let body = start.to_message(None).body;

    handle_delivery(&discovery, &queue, &body, now)
        .await
        .expect("the sweep job runs");
    handle_delivery(&discovery, &queue, &body, now)
        .await
        .expect("a redelivery runs again");
    // Deliver every queued job once, as the worker would, the snapshot last.
    let mut delivered = 0;
    while delivered < queue.messages().len() {
        let message = queue.messages()[delivered].clone();
        delivered += 1;
        if message.scheduled_enqueue.is_some() {
            continue;
        }
        handle_delivery(&discovery, &queue, &message.body, now)
            .await
            .expect("each job runs");
    }

    let messages = queue.messages();
    let jobs: Vec<DiscoveryJob> = messages
        .iter()
        .map(|m| DiscoveryJob::decode(&m.body).expect("a discovery job"))
        .collect();
    let count = |f: fn(&JobScope) -> bool| jobs.iter().filter(|j| f(&j.scope)).count();
    assert_eq!(count(|s| matches!(s, JobScope::Subscription { .. })), 1);
    assert_eq!(count(|s| matches!(s, JobScope::Vault { .. })), 3);
    assert_eq!(count(|s| matches!(s, JobScope::Directory { .. })), 32);
    assert_eq!(count(|s| matches!(s, JobScope::Snapshot)), 1);
    let snapshot = messages
        .iter()
        .find(|m| m.scheduled_enqueue.is_some())
        .expect("the snapshot is scheduled");
    assert_eq!(snapshot.scheduled_enqueue, Some(now + SNAPSHOT_DELAY));
    assert!(
        queue.sends() > messages.len(),
        "the redelivery's sends were deduplicated"
    );
    assert_eq!(credentials_in(store.as_ref()).await.len(), 12);
    assert_eq!(value_reads(&standins, &tenant), 0);
}

#[tokio::test]
async fn a_rescan_brings_one_vault_and_one_application_range_up_to_date_between_sweeps() {
    let standins = Standins::start().await.expect("stand-ins start");
    let tenant = seed(&standins).await;
    let graph = standins.graph();
    let app = graph.seed_application("billing-api", Permissions::only(Vec::<String>::new()));
    let store = Arc::new(MemoryInventory::new());
    let discovery = discovery(&standins, store.clone());
    let now = standins.now();
    // Key Vault and Graph keep times to the second.
    use chrono::SubsecRound as _;
    let (secret_end, password_end) = (
        (now + Duration::days(180)).trunc_subsecs(0),
        (now + Duration::days(200)).trunc_subsecs(0),
    );
    let first_sweep = SweepId::starting_at(now);
    run_sweep(&discovery, first_sweep.clone(), Vec::new(), 4, now)
        .await
        .expect("the sweep runs");
    let swept = credentials_in(store.as_ref()).await;
    // A rotation finishes after the sweep: the managed secret has a new version, and the
    // application a new password.
    let first = standins
        .vault_at(&tenant.vault_urls[0])
        .expect("a known vault");
    first.seed_secret(
        SecretSeed::new("app-secret", "rotated-value")
            .tag("keyturn-kind", "generated")
            .expires(secret_end),
    );
    graph
        .add_password(app.object_id, password_end, true)
        .expect("added");
    let queue = MemoryQueue::new(Arc::new(Faults::default()));
    let later = now + Duration::minutes(5);
    let vault = VaultUrl::parse(tenant.vault_urls[0].as_str()).expect("a vault URL");
    let app_id = AppId::parse(&app.app_id.to_string()).expect("an app id");

    let jobs = queue_rescan(&discovery, &queue, &vault, Some(app_id), later)
        .await
        .expect("the scans are queued");
    for message in queue.messages() {
        handle_delivery(&discovery, &queue, &message.body, later)
            .await
            .expect("each job runs");
    }

    let scopes: Vec<&JobScope> = jobs.iter().map(|job| &job.scope).collect();
    let subscription = SubscriptionId::parse(&tenant.subscription.to_string()).expect("an id");
    assert!(
        matches!(scopes[..], [
            JobScope::Vault { subscription: Some(s), name, .. },
            JobScope::Directory { range },
        ] if *s == subscription
            && name == "kv-first"
            && range.label() == format!("applications/{}", &app.app_id.to_string()[..1])),
        "{scopes:?}"
    );
    assert!(jobs.iter().all(|job| job.sweep > first_sweep));
    assert_eq!(
        queue.messages().len(),
        2,
        "one vault and one range, no snapshot: {:?}",
        queue.messages()
    );
    let after = credentials_in(store.as_ref()).await;
    let secret = after
        .iter()
        .find(|c| c.name == "app-secret")
        .expect("the managed secret");
    assert_eq!(secret.expires, Some(secret_end));
    assert!(
        after.iter().any(|c| matches!(
            &c.source,
            CredentialSource::Application { app_id: id, .. } if *id == app_id
        ) && c.expires == Some(password_end)),
        "the new password is listed: {after:#?}"
    );
    // Everything else reads as the sweep left it: the rescanned vault's and range's other
    // rows only carry the rescan's stamp, and the rest were not read again.
    let vault_key = secret.source.key();
    let range = DirectoryRange::holding(DirectoryKind::Applications, &app_id);
    let rescanned = |c: &InventoryCredential| {
        c.source.key() == vault_key || (range.is_some() && DirectoryRange::of(&c.source) == range)
    };
    let unchanged = |c: &&InventoryCredential| {
        c.name != "app-secret"
            && !matches!(
                &c.source,
                CredentialSource::Application { app_id: id, .. } if *id == app_id
            )
    };
    let restamped = |c: &InventoryCredential| {
        let mut c = c.clone();
        if rescanned(&c) {
            assert_eq!(c.sweep, jobs[0].sweep, "{c:?}");
            c.sweep = first_sweep.clone();
            c.scanned_at = now;
        }
        c
    };
    assert_eq!(
        swept.iter().filter(unchanged).cloned().collect::<Vec<_>>(),
        after
            .iter()
            .filter(unchanged)
            .map(restamped)
            .collect::<Vec<_>>()
    );
    assert_eq!(value_reads(&standins, &tenant), 0);

    // A vault no sweep found is left to the sweeps that cover it.
    let elsewhere = VaultUrl::parse("https://kv-elsewhere.vault.azure.net/").expect("a vault URL");
    let none = queue_rescan(&discovery, &queue, &elsewhere, None, later)
        .await
        .expect("nothing to queue");
    assert!(none.is_empty(), "{none:?}");
}

#[tokio::test]
async fn the_local_scanner_inventories_the_local_vault_and_directory() {
    use base64::Engine as _;
    use keyturn::adapters::local::catalog::LocalCatalog;
    use keyturn::adapters::local::crypto::VaultKey;
    use keyturn::adapters::local::directory::LocalDirectory;
    use keyturn::adapters::local::store::LocalStore;
    use keyturn::adapters::local::vault::LocalVault;
    use keyturn::domain::clock::Clock;
    use keyturn::domain::names::{ObjectName, VaultUrl};
    use keyturn::domain::secret::SecretValue;
    use keyturn::ports::directory::CredentialIssuer;
    use keyturn::ports::vault::{NewSecretVersion, SecretStore};

    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::open(dir.path().join("keyturn.db")).expect("store");
    let clock = Clock::system();
    let key = VaultKey::from_base64(
        &base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        "test",
    )
    .expect("key");
    let vault = LocalVault::open(store.clone(), key, clock.clone())
        .await
        .expect("vault");
    let directory = LocalDirectory::new(store, clock.clone());
    let url = // local mode's own vault (config::LOCAL_VAULT_URL)
    VaultUrl::parse("https://keyturn-local.vault.azure.net/").expect("url");
    let now = clock.now();
    vault
        .set_secret(
            &url,
            &ObjectName::parse("db-password").expect("name"),
            &SecretValue::new("local-value-never-read"),
            NewSecretVersion {
                expires: Some(now + Duration::days(12)),
                ..NewSecretVersion::default()
            },
        )
        .await
        .expect("written");
    let app = directory.create_application("billing").await.expect("app");
    directory
        .add_password(&app.object_id, "billing secret", now + Duration::days(40))
        .await
        .expect("added");
    let vault = Arc::new(vault);
    let catalog = Arc::new(LocalCatalog::for_local_vault(
        vault.clone(),
        vault,
        directory,
    ));
    let inventory = Arc::new(MemoryInventory::new());
    let discovery = Discovery::new(
        catalog.clone(),
        catalog.clone(),
        catalog,
        inventory.clone(),
        Budgets::default(),
    );

    run_sweep(&discovery, sweep("local"), Vec::new(), 4, now)
        .await
        .expect("the local sweep completes");

    let credentials = credentials_in(inventory.as_ref()).await;
    let names: Vec<(&str, CredentialKind)> = credentials
        .iter()
        .map(|c| (c.name.as_str(), c.kind))
        .collect();
    assert!(
        names.contains(&("db-password", CredentialKind::Secret)),
        "{names:?}"
    );
    assert!(
        names.contains(&("billing secret", CredentialKind::PasswordCredential)),
        "{names:?}"
    );
    assert_eq!(vaults_in(inventory.as_ref()).await.len(), 1);
}

/// A password credential keyturn adopted (a managed secret's `keyturn-key-id` names it,
/// with its application by `keyturn-app-id`) is managed though its name does not say so,
/// and so is the one before it, named by `keyturn-previous-key-id`; a rotation's staging
/// copy (`keyturn-pending-for`) is managed with the secret it stages for. A credential
/// no managed secret names stays unmanaged, and so does one a secret names that keyturn
/// does not manage.
#[tokio::test]
async fn credentials_a_managed_secret_holds_and_its_staging_copies_are_managed() {
    use base64::Engine as _;
    use keyturn::adapters::local::catalog::LocalCatalog;
    use keyturn::adapters::local::crypto::VaultKey;
    use keyturn::adapters::local::directory::LocalDirectory;
    use keyturn::adapters::local::store::LocalStore;
    use keyturn::adapters::local::vault::LocalVault;
    use keyturn::domain::clock::Clock;
    use keyturn::domain::names::{ObjectName, VaultUrl};
    use keyturn::domain::secret::SecretValue;
    use keyturn::ports::directory::CredentialIssuer;
    use keyturn::ports::vault::{NewSecretVersion, SecretStore};

    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::open(dir.path().join("keyturn.db")).expect("store");
    let clock = Clock::system();
    let key = VaultKey::from_base64(
        &base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        "test",
    )
    .expect("key");
    let vault = LocalVault::open(store.clone(), key, clock.clone())
        .await
        .expect("vault");
    let directory = LocalDirectory::new(store, clock.clone());
    let url = VaultUrl::parse("https://keyturn-local.vault.azure.net/").expect("url");
    let now = clock.now();
    let app = directory.create_application("billing").await.expect("app");
    let mut key_ids = Vec::new();
    for name in ["adopted", "previous", "stray", "named-unmanaged"] {
        let issued = directory
            .add_password(&app.object_id, name, now + Duration::days(40))
            .await
            .expect("added");
        key_ids.push(issued.credential.key_id.to_string());
    }
    let secret = |name: &str, tags: Vec<(&str, String)>| {
        let vault = &vault;
        let url = &url;
        let name = ObjectName::parse(name).expect("name");
        let tags = tags.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        async move {
            vault
                .set_secret(
                    url,
                    &name,
                    &SecretValue::new("local-value-never-read"),
                    NewSecretVersion {
                        expires: Some(now + Duration::days(40)),
                        tags,
                        ..NewSecretVersion::default()
                    },
                )
                .await
                .expect("written");
        }
    };
    secret(
        "billing-secret",
        vec![
            ("keyturn-kind", "entra-app-secret".to_owned()),
            ("keyturn-app-id", app.app_id.to_string()),
            // Tag names in any casing, as Key Vault keeps what a person typed.
            ("Keyturn-Key-Id", key_ids[0].clone()),
            ("keyturn-previous-key-id", key_ids[1].clone()),
        ],
    )
    .await;
    // Names a credential but is not managed: the credential stays unmanaged.
    secret(
        "copied-secret",
        vec![
            ("keyturn-app-id", app.app_id.to_string()),
            ("keyturn-key-id", key_ids[3].clone()),
        ],
    )
    .await;
    let staging = format!("keyturn-pending-{}", key_ids[2]);
    secret(
        &staging,
        vec![
            ("keyturn-pending-for", "billing-secret".to_owned()),
            ("keyturn-key-id", key_ids[2].clone()),
        ],
    )
    .await;
    let vault = Arc::new(vault);
    let catalog = Arc::new(LocalCatalog::for_local_vault(
        vault.clone(),
        vault,
        directory,
    ));
    let inventory = Arc::new(MemoryInventory::new());
    let discovery = Discovery::new(
        catalog.clone(),
        catalog.clone(),
        catalog,
        inventory.clone(),
        Budgets::default(),
    );

    run_sweep(&discovery, sweep("local"), Vec::new(), 4, now)
        .await
        .expect("the local sweep completes");

    let credentials = credentials_in(inventory.as_ref()).await;
    let managed = |name: &str| {
        credentials
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name} is inventoried: {credentials:#?}"))
            .managed
    };
    assert!(managed("adopted"));
    assert!(managed("previous"));
    // Named only by the staging copy, which names no application: no managed application
    // secret holds it.
    assert!(!managed("stray"));
    assert!(!managed("named-unmanaged"));
    assert!(managed(&staging));
    assert!(managed("billing-secret"));
    assert!(!managed("copied-secret"));
    // The sweep's snapshot counts them as they are now.
    let snapshot = inventory
        .snapshots(None, 10)
        .await
        .expect("snapshots")
        .items
        .pop()
        .expect("a snapshot");
    let stored_managed = credentials.iter().filter(|c| c.managed).count() as u64;
    assert_eq!(snapshot.managed, stored_managed);
}

/// Row counts of what the inventory demo seeds, read straight from the store.
fn demo_rows(data: &std::path::Path) -> Vec<(&'static str, i64)> {
    let db = rusqlite::Connection::open_with_flags(
        data.join("keyturn.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("the store opens");
    [
        (
            "applications",
            "SELECT COUNT(*) FROM directory_applications",
        ),
        (
            "service principals",
            "SELECT COUNT(*) FROM directory_service_principals",
        ),
        (
            "listed credentials",
            "SELECT COUNT(*) FROM directory_listed_credentials",
        ),
        ("owners", "SELECT COUNT(*) FROM directory_owners"),
        (
            "second vault versions",
            "SELECT COUNT(*) FROM vault_secret_versions \
             WHERE vault = 'https://keyturn-demo-team.vault.azure.net/'",
        ),
    ]
    .into_iter()
    .map(|(what, sql)| (what, db.query_row(sql, [], |row| row.get(0)).expect(what)))
    .collect()
}

fn dev_once(data: &std::path::Path) -> String {
    let output = crate::helpers::keyturn(&[
        ("KEYTURN_PROOF_SUCCESSES", "1"),
        ("KEYTURN_PROOF_WINDOW_SECONDS", "0"),
    ])
    .args(["dev", "--once", "--data-dir"])
    .arg(data)
    .output()
    .expect("keyturn dev runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0), "{printed}");
    printed
}

#[tokio::test]
async fn discovery_over_the_dev_demo_finds_both_vaults_service_principals_key_credentials_and_owners()
 {
    use keyturn::adapters::local::catalog::LocalCatalog;
    use keyturn::adapters::local::directory::LocalDirectory;
    use keyturn::adapters::local::store::LocalStore;
    use keyturn::adapters::local::vault::LocalVault;
    use keyturn::domain::clock::Clock;
    use keyturn::domain::inventory::{CredentialSource, SourceKind};
    use keyturn::domain::names::{ObjectName, VaultUrl};
    use keyturn::ports::vault::SecretStore;

    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let first_run = dev_once(&data);
    let seeded = demo_rows(&data);
    let second_run = dev_once(&data);
    assert_eq!(
        demo_rows(&data),
        seeded,
        "a second `keyturn dev` adds nothing"
    );
    assert!(
        seeded.iter().all(|(_, rows)| *rows > 0),
        "the demo seeds every kind: {seeded:?}"
    );

    let path = data.join("keyturn.db");
    let store = LocalStore::open(&path).expect("open");
    let key = LocalVault::key_from_setting_or_file(None, &path).expect("key file");
    let clock = Clock::system();
    let vault = Arc::new(
        LocalVault::open(store.clone(), key, clock.clone())
            .await
            .expect("vault"),
    );
    let directory = LocalDirectory::new(store, clock.clone());
    let catalog = Arc::new(LocalCatalog::for_local_vault(
        vault.clone(),
        vault.clone(),
        directory,
    ));
    let inventory = Arc::new(MemoryInventory::new());
    let discovery = Discovery::new(
        catalog.clone(),
        catalog.clone(),
        catalog,
        inventory.clone(),
        Budgets::default(),
    );
    let now = clock.now();
    run_sweep(&discovery, sweep("local-demo"), Vec::new(), 4, now)
        .await
        .expect("the local sweep completes");

    let second_vault = VaultUrl::parse("https://keyturn-demo-team.vault.azure.net/").expect("url");
    let vaults = vaults_in(inventory.as_ref()).await;
    let mut vault_names: Vec<String> = vaults.iter().map(|v| v.name.to_string()).collect();
    vault_names.sort();
    assert_eq!(vault_names, ["keyturn-demo-team", "keyturn-local"]);

    let credentials = credentials_in(inventory.as_ref()).await;
    let find = |name: &str| {
        credentials
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name} is in the inventory"))
    };
    let in_second_vault = |c: &InventoryCredential| matches!(&c.source, CredentialSource::Vault { uri, .. } if *uri == second_vault);

    // The second vault: expired, expiring, without end date, long-lived and managed.
    let expired = find("team-db-password");
    assert!(in_second_vault(expired));
    assert!(expired.expires.expect("an end date") < now);
    assert!(!expired.managed);
    let expiring = find("team-api-key");
    assert!(in_second_vault(expiring));
    let until = expiring.expires.expect("an end date") - now;
    assert!(
        until > Duration::zero() && until < Duration::days(30),
        "{until}"
    );
    assert!(find("team-legacy-token").expires.is_none());
    let managed = find("team-signing-seed");
    assert!(in_second_vault(managed));
    assert!(managed.managed);
    assert!(managed.expires.expect("an end date") - now > Duration::days(300));
    // The rotation demo's vault is still read.
    assert!(!in_second_vault(find("demo-generated")));

    // Applications: a managed long-lived secret, an expired one, a certificate credential,
    // owners with and without mail.
    let long_lived = find("keyturn rotation (demo)");
    assert_eq!(long_lived.source.kind(), SourceKind::Application);
    assert!(long_lived.managed);
    assert!(long_lived.expires.expect("end") - now > Duration::days(200));
    let legacy = find("legacy secret (demo)");
    assert_eq!(legacy.kind, CredentialKind::PasswordCredential);
    assert!(!legacy.managed);
    assert!(legacy.expires.expect("end") < now);
    let certificate = find("payroll certificate (demo)");
    assert_eq!(certificate.kind, CredentialKind::KeyCredential);
    assert_eq!(certificate.source.kind(), SourceKind::Application);
    let details = certificate.directory.as_ref().expect("directory details");
    assert_eq!(
        details.credential_type.as_deref(),
        Some("AsymmetricX509Cert")
    );
    assert_eq!(details.thumbprint.as_ref().map(String::len), Some(40));
    assert!(certificate.expires.expect("end") - now > Duration::days(365));
    let mut owners: Vec<(Option<&str>, Option<&str>, Option<&str>)> = certificate
        .owners
        .iter()
        .map(|o| {
            (
                o.display_name.as_deref(),
                o.user_principal_name.as_deref(),
                o.mail.as_deref(),
            )
        })
        .collect();
    owners.sort();
    assert_eq!(
        owners,
        [
            (
                Some("Ana Silva"),
                Some("ana@keyturn.local"),
                Some("ana@keyturn.local")
            ),
            (Some("Bo Jensen"), Some("bo@keyturn.local"), None),
        ]
    );
    let reporting = find("reporting secret (demo)");
    assert!(!reporting.managed);
    assert!(reporting.expires.expect("end") - now < Duration::days(30));
    assert_eq!(
        reporting.owners[0].mail.as_deref(),
        Some("chen@keyturn.local")
    );

    // Service principals: a SAML signing certificate expiring soon, an expired password,
    // and a managed password on an application's own principal.
    let saml = find("SAML signing (demo)");
    assert_eq!(saml.source.kind(), SourceKind::ServicePrincipal);
    assert_eq!(saml.kind, CredentialKind::KeyCredential);
    assert_eq!(
        saml.directory.as_ref().and_then(|d| d.usage.as_deref()),
        Some("Sign")
    );
    assert!(saml.expires.expect("end") - now < Duration::days(30));
    assert!(!saml.managed);
    assert!(
        saml.owners
            .iter()
            .any(|o| o.display_name.as_deref() == Some("Dana Okafor"))
    );
    let old = find("old SAML password (demo)");
    assert_eq!(old.source.kind(), SourceKind::ServicePrincipal);
    assert!(old.expires.expect("end") < now);
    let principal = find("keyturn rotation (demo principal)");
    assert_eq!(principal.source.kind(), SourceKind::ServicePrincipal);
    assert_eq!(principal.kind, CredentialKind::PasswordCredential);
    assert!(principal.managed);

    // The owner without mail is a finding; nothing else failed.
    let findings = findings_in(inventory.as_ref()).await;
    assert!(
        findings
            .iter()
            .any(|f| f.kind == FindingKind::OwnerWithoutMail),
        "{findings:?}"
    );
    assert!(
        findings.iter().all(|f| matches!(
            f.kind,
            FindingKind::OwnerWithoutMail | FindingKind::NoEndDate
        )),
        "{findings:?}"
    );

    // No value of the second vault is printed by dev or held by the inventory.
    let recorded = serde_json::to_string(&credentials).expect("json");
    for name in [
        "team-db-password",
        "team-api-key",
        "team-legacy-token",
        "team-signing-seed",
    ] {
        let value = vault
            .secret(&second_vault, &ObjectName::parse(name).expect("name"), None)
            .await
            .expect("read")
            .expect("exists");
        let value = value.value.expose().to_string();
        assert!(value.len() >= 16, "a real value was read");
        for (what, text) in [
            ("first run", &first_run),
            ("second run", &second_run),
            ("inventory", &recorded),
        ] {
            assert!(!text.contains(&value), "{name}'s value is in the {what}");
        }
    }
}
