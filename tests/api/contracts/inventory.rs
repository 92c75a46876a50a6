//! The inventory store's contract, run against every store: the embedded SQLite file,
//! Azure Table storage (Azurite) and the in-memory double. What discovery relies on: a
//! rerun writes the same rows, a walk in pages returns every credential exactly once,
//! the filters agree across stores, and retiring or clearing touches only its own scope.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;
use serde_json::{Map, Value};
use tempfile::TempDir;

use keyturn::adapters::azure::client::table::{EntityKey, Query, TableClient, TableName};
use keyturn::adapters::azure::inventory::TableInventory;
use keyturn::adapters::local::inventory::LocalInventory;
use keyturn::adapters::local::store::LocalStore;
use keyturn::domain::ids::{AppId, DirectoryObjectId, KeyId, SubscriptionId};
use keyturn::domain::inventory::{
    Adoption, CertificateDetails, CredentialFilter, CredentialHandle, CredentialKind,
    CredentialSource, DirectoryDetails, Expiring, ExpiryBucket, FindingKind, InventoryCredential,
    InventoryVault, KeyDetails, LifetimeAction, LifetimeActionType, LifetimeTrigger, Owner,
    PermissionModel, Scope, ScopeFinding, SourceKind, SweepId, SweepSnapshot,
};
use keyturn::domain::names::VaultUrl;
use keyturn::domain::secret::SecretValue;
use keyturn::ports::catalog::{DirectoryKind, DirectoryRange, HexDigit};
use keyturn::ports::inventory::{
    InventoryStore, credential_stream, finding_stream, take_snapshot, vault_stream,
};
use keyturn::rotation::tags::PolicyDefaults;
use keyturn_doubles::MemoryInventory;

use super::contract;

const TABLE_ENDPOINT_VARIABLE: &str = "KEYTURN_TEST_TABLE_ENDPOINT";
/// Azurite's published development account key; it opens nothing but a local emulator.
const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A store under test and what keeps it alive.
pub struct Fixture {
    store: Arc<dyn InventoryStore>,
    _dir: Option<TempDir>,
}

async fn local() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::open(dir.path().join("keyturn.db")).expect("the store opens");
    Fixture {
        store: Arc::new(LocalInventory::new(store)),
        _dir: Some(dir),
    }
}

async fn memory() -> Fixture {
    Fixture {
        store: Arc::new(MemoryInventory::new()),
        _dir: None,
    }
}

async fn table() -> Fixture {
    let endpoint = std::env::var(TABLE_ENDPOINT_VARIABLE).unwrap_or_else(|_| {
        panic!("{TABLE_ENDPOINT_VARIABLE} is not set: start Azurite via the project's test command (.ci/test)")
    });
    let connection = SecretValue::new(format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_ACCOUNT_KEY};TableEndpoint={endpoint}"
    ));
    let table = TableName::parse(&format!("inventory{}", uuid::Uuid::new_v4().simple()))
        .expect("table name");
    let client = TableClient::from_connection_string(&connection, None).expect("client");
    let store = TableInventory::new(client, table);
    store
        .ensure_table()
        .await
        .expect("the table is created (is Azurite running?)");
    Fixture {
        store: Arc::new(store),
        _dir: None,
    }
}

// ---------------------------------------------------------------------------------------
// Building records

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("a time")
        .with_timezone(&Utc)
}

const NOW: &str = "2030-01-01T00:00:00Z";

fn sweep(id: &str) -> SweepId {
    SweepId::parse(id).expect("sweep id")
}

fn vault_source(name: &str) -> CredentialSource {
    CredentialSource::Vault {
        subscription: Some(
            SubscriptionId::parse("6f1b3c1e-0000-4000-8000-000000000001").expect("id"),
        ),
        name: name.parse().expect("vault name"),
        uri: VaultUrl::parse(&format!("https://{name}.vault.azure.net/")).expect("vault url"),
    }
}

fn app_source(n: u8) -> CredentialSource {
    CredentialSource::Application {
        object_id: DirectoryObjectId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02x}"))
            .expect("object id"),
        app_id: AppId::parse(&format!("11111111-0000-4000-8000-0000000000{n:02x}"))
            .expect("app id"),
        display_name: Some(format!("app {n}")),
    }
}

fn secret(
    source: &CredentialSource,
    name: &str,
    expires_in_days: Option<i64>,
) -> InventoryCredential {
    InventoryCredential {
        source: source.clone(),
        kind: CredentialKind::Secret,
        name: name.to_owned(),
        handle: CredentialHandle::VaultObject {
            name: name.to_owned(),
            version: Some("0123456789abcdef0123456789abcdef".to_owned()),
            versions: Some(1),
        },
        enabled: true,
        created: Some(at("2029-01-01T00:00:00Z")),
        updated: Some(at("2029-01-01T00:00:00Z")),
        not_before: None,
        expires: expires_in_days.map(|days| at(NOW) + TimeDelta::days(days)),
        content_type: Some("text/plain".to_owned()),
        tags: BTreeMap::new(),
        certificate: None,
        key: None,
        directory: None,
        owners: Vec::new(),
        managed: false,
        scanned_at: at(NOW),
        sweep: sweep("s1"),
    }
}

fn password(
    source: &CredentialSource,
    key: u8,
    expires_in_days: i64,
    owner: &str,
) -> InventoryCredential {
    let key_id =
        KeyId::parse(&format!("22222222-0000-4000-8000-0000000000{key:02x}")).expect("key id");
    InventoryCredential {
        kind: CredentialKind::PasswordCredential,
        name: format!("client secret {key}"),
        handle: CredentialHandle::DirectoryCredential { key_id },
        content_type: None,
        directory: Some(DirectoryDetails {
            sign_in_audience: Some("AzureADMyOrg".to_owned()),
            federated_credentials: Some(0),
            ..DirectoryDetails::default()
        }),
        owners: vec![Owner {
            object_id: None,
            display_name: Some(format!("Owner of {owner}")),
            user_principal_name: Some(owner.to_owned()),
            // An owner without a mail address is ordinary.
            mail: None,
        }],
        ..secret(source, "unused", Some(expires_in_days))
    }
}

/// A credential with every optional part filled in, to prove nothing is lost on the way.
fn certificate_with_everything() -> InventoryCredential {
    let mut credential = secret(&vault_source("kv-contract"), "tls-frontend", Some(45));
    credential.kind = CredentialKind::Certificate;
    credential.not_before = Some(at("2029-12-01T00:00:00Z"));
    credential.content_type = Some("application/x-pkcs12".to_owned());
    credential.tags = BTreeMap::from([
        ("keyturn-owner".to_owned(), "team-edge".to_owned()),
        ("env".to_owned(), "prod".to_owned()),
    ]);
    credential.certificate = Some(CertificateDetails {
        issuer: Some("CN=Contoso Issuing CA".to_owned()),
        subject: Some("CN=frontend.contoso.com".to_owned()),
        key_type: Some("RSA".to_owned()),
        key_size: Some(2048),
        curve: None,
        thumbprint: Some("A".repeat(40)),
        sha1_signature: true,
        policy_issuer: Some("Self".to_owned()),
        lifetime_actions: vec![
            LifetimeAction {
                action: LifetimeActionType::AutoRenew,
                trigger: LifetimeTrigger::LifetimePercentage(80),
            },
            LifetimeAction {
                action: LifetimeActionType::EmailContacts,
                trigger: LifetimeTrigger::DaysBeforeExpiry(30),
            },
        ],
    });
    credential.key = Some(KeyDetails {
        key_type: Some("RSA".to_owned()),
        key_size: Some(2048),
        curve: None,
        rotation_policy: false,
    });
    credential.managed = true;
    credential
}

fn vault(name: &str, model: PermissionModel) -> InventoryVault {
    InventoryVault {
        subscription: Some(
            SubscriptionId::parse("6f1b3c1e-0000-4000-8000-000000000001").expect("id"),
        ),
        resource_group: Some("rg-secrets".to_owned()),
        name: name.parse().expect("vault name"),
        uri: VaultUrl::parse(&format!("https://{name}.vault.azure.net/")).expect("vault url"),
        location: Some("westeurope".to_owned()),
        soft_delete: Some(true),
        purge_protection: Some(false),
        permission_model: model,
        public_network_access: Some("Disabled".to_owned()),
        scanned_at: at(NOW),
        sweep: sweep("s1"),
    }
}

async fn everything(
    store: &dyn InventoryStore,
    filter: CredentialFilter,
) -> Vec<InventoryCredential> {
    credential_stream(store, filter, 3)
        .try_collect()
        .await
        .expect("the walk completes")
}

fn names(credentials: &[InventoryCredential]) -> BTreeSet<String> {
    credentials.iter().map(|c| c.name.clone()).collect()
}

// ---------------------------------------------------------------------------------------
// Scenarios

async fn a_credential_round_trips_with_every_detail(fixture: Fixture) {
    let mut forever = password(&app_source(1), 1, 10, "ada@contoso.com");
    forever.expires = None;
    let written = vec![certificate_with_everything(), forever];

    fixture
        .store
        .put_credentials(&written)
        .await
        .expect("written");

    let mut read = everything(fixture.store.as_ref(), CredentialFilter::default()).await;
    read.sort_by_key(InventoryCredential::id);
    let mut expected = written;
    expected.sort_by_key(InventoryCredential::id);
    assert_eq!(read, expected);
}

async fn a_rerun_rewrites_the_same_rows(fixture: Fixture) {
    let source = vault_source("kv-rerun");
    let first: Vec<_> = (0..5)
        .map(|n| secret(&source, &format!("secret-{n}"), Some(100)))
        .collect();
    fixture
        .store
        .put_credentials(&first)
        .await
        .expect("first sweep");
    let mut second = first.clone();
    for credential in &mut second {
        credential.sweep = sweep("s2");
        credential.expires = Some(at(NOW) + TimeDelta::days(5));
    }

    fixture
        .store
        .put_credentials(&second)
        .await
        .expect("second sweep");
    fixture
        .store
        .put_credentials(&second)
        .await
        .expect("the same job again");

    let read = everything(fixture.store.as_ref(), CredentialFilter::default()).await;
    assert_eq!(read.len(), 5, "{:?}", names(&read));
    assert!(read.iter().all(|c| c.sweep == sweep("s2")));
    assert!(
        read.iter()
            .all(|c| c.expires == Some(at(NOW) + TimeDelta::days(5)))
    );
}

async fn a_page_larger_than_a_transaction_is_written_whole_and_again_changes_nothing(
    fixture: Fixture,
) {
    // 230 credentials of one vault (more than two entity group transactions hold), a
    // credential given twice (the second wins), and applications of one and two each.
    let kv = vault_source("kv-large-page");
    let mut page: Vec<_> = (0..230)
        .map(|n| secret(&kv, &format!("secret-{n:03}"), Some(n)))
        .collect();
    let mut repeated = secret(&kv, "secret-042", Some(900));
    repeated.content_type = Some("application/json".to_owned());
    page.push(repeated.clone());
    for app in 1..=3 {
        page.push(password(&app_source(app), app, 30, "ada@contoso.com"));
        page.push(password(&app_source(app), app + 100, 60, "ada@contoso.com"));
    }
    page.push(password(&app_source(4), 4, 30, "grace@contoso.com"));
    let store = fixture.store.as_ref();

    store.put_credentials(&page).await.expect("written");
    let mut first = everything(store, CredentialFilter::default()).await;
    store.put_credentials(&page).await.expect("written again");
    let mut again = everything(store, CredentialFilter::default()).await;

    first.sort_by_key(InventoryCredential::id);
    again.sort_by_key(InventoryCredential::id);
    assert_eq!(first.len(), 230 + 7, "every credential once");
    let read_repeated = first
        .iter()
        .find(|c| c.id() == repeated.id())
        .expect("the repeated credential is stored");
    assert_eq!(read_repeated, &repeated, "the last copy given wins");
    let mut expected = page;
    expected.retain(|c| c.id() != repeated.id() || c == &repeated);
    expected.sort_by_key(InventoryCredential::id);
    assert_eq!(first, expected);
    assert_eq!(again, first, "a rerun changes nothing");
}

async fn a_walk_in_small_pages_returns_every_credential_once(fixture: Fixture) {
    // More credentials than one page of 3, spread over several sources (partitions).
    let mut written = Vec::new();
    for vault in ["kv-walk-a", "kv-walk-b", "kv-walk-c"] {
        for n in 0..7 {
            written.push(secret(
                &vault_source(vault),
                &format!("{vault}-{n}"),
                Some(n),
            ));
        }
    }
    for app in 1..=4 {
        written.push(password(&app_source(app), app, 20, "ada@contoso.com"));
    }
    fixture
        .store
        .put_credentials(&written)
        .await
        .expect("written");

    let read: Vec<InventoryCredential> =
        credential_stream(fixture.store.as_ref(), CredentialFilter::default(), 3)
            .try_collect()
            .await
            .expect("walked");

    let ids: Vec<_> = read.iter().map(InventoryCredential::id).collect();
    let unique: BTreeSet<_> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), written.len(), "each credential once");
    assert_eq!(
        unique,
        written.iter().map(InventoryCredential::id).collect()
    );
}

async fn filters_select_expiring_unmanaged_owned_and_by_source(fixture: Fixture) {
    let kv = vault_source("kv-filters");
    let mut managed_soon = secret(&kv, "managed-soon", Some(10));
    managed_soon.managed = true;
    let mut tagged_later = secret(&kv, "tagged-later", Some(200));
    tagged_later
        .tags
        .insert("Keyturn-Owner".to_owned(), "team-payments".to_owned());
    let expired = secret(&kv, "expired", Some(-3));
    let forever = secret(&kv, "forever", None);
    let app_soon = password(&app_source(9), 9, 29, "grace@contoso.com");
    let mut sp_later = password(&app_source(10), 10, 90, "ada@contoso.com");
    let CredentialSource::Application {
        object_id, app_id, ..
    } = app_source(10)
    else {
        unreachable!("app_source builds applications")
    };
    sp_later.source = CredentialSource::ServicePrincipal {
        object_id,
        app_id,
        display_name: None,
    };
    sp_later.kind = CredentialKind::KeyCredential;
    fixture
        .store
        .put_credentials(&[
            managed_soon,
            tagged_later,
            expired,
            forever,
            app_soon,
            sp_later,
        ])
        .await
        .expect("written");
    let store = fixture.store.as_ref();
    let expiring = Some(Expiring {
        now: at(NOW),
        within: TimeDelta::days(30),
    });

    let soon = everything(
        store,
        CredentialFilter {
            expiring,
            ..CredentialFilter::default()
        },
    )
    .await;
    let unmanaged_soon = everything(
        store,
        CredentialFilter {
            expiring,
            unmanaged_only: true,
            ..CredentialFilter::default()
        },
    )
    .await;
    let by_upn = everything(
        store,
        CredentialFilter {
            owner: Some("GRACE@contoso.com".to_owned()),
            ..CredentialFilter::default()
        },
    )
    .await;
    let by_tag = everything(
        store,
        CredentialFilter {
            owner: Some("team-payments".to_owned()),
            ..CredentialFilter::default()
        },
    )
    .await;
    let principals = everything(
        store,
        CredentialFilter {
            source_kind: Some(SourceKind::ServicePrincipal),
            ..CredentialFilter::default()
        },
    )
    .await;
    let key_credentials = everything(
        store,
        CredentialFilter {
            kind: Some(CredentialKind::KeyCredential),
            ..CredentialFilter::default()
        },
    )
    .await;

    let set = |items: &[&str]| {
        items
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        names(&soon),
        set(&["managed-soon", "expired", "client secret 9"])
    );
    assert_eq!(names(&unmanaged_soon), set(&["expired", "client secret 9"]));
    assert_eq!(names(&by_upn), set(&["client secret 9"]));
    assert_eq!(names(&by_tag), set(&["tagged-later"]));
    assert_eq!(names(&principals), set(&["client secret 10"]));
    assert_eq!(names(&key_credentials), set(&["client secret 10"]));
}

async fn retiring_removes_only_the_unseen_credentials_of_that_source(fixture: Fixture) {
    let (kept_vault, other_vault) = (vault_source("kv-retire"), vault_source("kv-other"));
    let mut old = secret(&kept_vault, "deleted-since", Some(10));
    old.sweep = sweep("s1");
    let mut current = secret(&kept_vault, "still-there", Some(10));
    current.sweep = sweep("s2");
    let mut elsewhere = secret(&other_vault, "not-scanned-yet", Some(10));
    elsewhere.sweep = sweep("s1");
    fixture
        .store
        .put_credentials(&[old, current, elsewhere])
        .await
        .expect("written");

    let removed = fixture
        .store
        .retire_unseen(&kept_vault, &sweep("s2"))
        .await
        .expect("retired");

    assert_eq!(removed, 1);
    let left = everything(fixture.store.as_ref(), CredentialFilter::default()).await;
    assert_eq!(
        names(&left),
        ["still-there", "not-scanned-yet"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    );
}

/// Sweep ids sort by time. A job of an older sweep redelivered after a newer sweep scanned
/// the same source retires and clears only what is older than itself: the newer sweep's
/// rows and findings stay.
async fn a_late_retire_of_an_older_sweep_keeps_a_newer_sweeps_rows(fixture: Fixture) {
    let source = vault_source("kv-race");
    let scope = Scope::Vault {
        subscription: None,
        name: "kv-race".parse().expect("name"),
    };
    let stamped = |name: &str, sweep_id: &str| {
        let mut credential = secret(&source, name, Some(10));
        credential.sweep = sweep(sweep_id);
        credential
    };
    let store = fixture.store.as_ref();
    store
        .put_credentials(&[
            stamped("oldest", "20260106T000000Z"),
            stamped("late-job", "20260106T060000Z"),
            stamped("newer", "20260106T120000Z"),
        ])
        .await
        .expect("written");
    for (sweep_id, detail) in [
        ("20260106T000000Z", "old problem"),
        ("20260106T120000Z", "newer problem"),
    ] {
        let finding = ScopeFinding::new(
            scope.clone(),
            FindingKind::PageFailed,
            detail,
            detail,
            at(NOW),
            sweep(sweep_id),
        );
        store.put_finding(&finding).await.expect("written");
    }

    let removed = store
        .retire_unseen(&source, &sweep("20260106T060000Z"))
        .await
        .expect("retired");
    let cleared = store
        .clear_findings(&scope, &sweep("20260106T060000Z"))
        .await
        .expect("cleared");

    assert_eq!((removed, cleared), (1, 1));
    let left = everything(store, CredentialFilter::default()).await;
    assert_eq!(
        names(&left),
        ["late-job", "newer"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    );
    let findings: Vec<ScopeFinding> = finding_stream(store, 1)
        .try_collect()
        .await
        .expect("walked");
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].sweep, sweep("20260106T120000Z"));
}

/// Retiring a directory range after its complete scan removes what an older sweep wrote
/// for the objects of that range (a credential deleted from a listed application, and
/// every credential of an application deleted since), and nothing of another range,
/// another kind of object, a vault or a newer sweep.
async fn retiring_a_directory_range_removes_only_its_older_rows(fixture: Fixture) {
    let application = |object: u8, app_id: &str| CredentialSource::Application {
        object_id: DirectoryObjectId::parse(&format!(
            "00000000-0000-4000-8000-0000000001{object:02x}"
        ))
        .expect("object id"),
        app_id: AppId::parse(app_id).expect("app id"),
        display_name: None,
    };
    let listed = application(1, "1a000000-0000-4000-8000-000000000001");
    let deleted = application(2, "1b000000-0000-4000-8000-000000000002");
    let other_range = application(3, "2c000000-0000-4000-8000-000000000003");
    let principal = CredentialSource::ServicePrincipal {
        object_id: DirectoryObjectId::parse("00000000-0000-4000-8000-000000000204")
            .expect("object id"),
        app_id: AppId::parse("1d000000-0000-4000-8000-000000000004").expect("app id"),
        display_name: None,
    };
    let stamped = |source: &CredentialSource, key: u8, sweep_id: &str| {
        let mut credential = password(source, key, 30, "ada@contoso.com");
        credential.sweep = sweep(sweep_id);
        credential
    };
    let mut vault_secret = secret(&vault_source("kv-range"), "vault-secret", Some(5));
    vault_secret.sweep = sweep("s1");
    let store = fixture.store.as_ref();
    store
        .put_credentials(&[
            stamped(&listed, 1, "s1"),
            stamped(&listed, 2, "s2"),
            stamped(&listed, 3, "s3"),
            stamped(&deleted, 4, "s1"),
            stamped(&deleted, 5, "s1"),
            stamped(&other_range, 6, "s1"),
            stamped(&principal, 7, "s1"),
            vault_secret,
        ])
        .await
        .expect("written");

    let range = DirectoryRange {
        kind: DirectoryKind::Applications,
        prefix: HexDigit::parse("1").expect("hex"),
    };
    let removed = store
        .retire_unseen_in_range(&range, &sweep("s2"))
        .await
        .expect("retired");

    assert_eq!(removed, 3);
    let left = everything(store, CredentialFilter::default()).await;
    assert_eq!(
        names(&left),
        [
            "client secret 2",
            "client secret 3",
            "client secret 6",
            "client secret 7",
            "vault-secret"
        ]
        .into_iter()
        .map(str::to_owned)
        .collect()
    );
}

async fn findings_are_kept_per_scope_and_kind_and_cleared_when_gone(fixture: Fixture) {
    let refused = Scope::Vault {
        subscription: None,
        name: "kv-firewalled".parse().expect("name"),
    };
    let page = Scope::DirectoryPage {
        range: "applications:0".to_owned(),
    };
    let finding = |scope: &Scope, kind, sweep_id: &str, detail: &str| {
        ScopeFinding::new(scope.clone(), kind, "", detail, at(NOW), sweep(sweep_id))
    };
    let store = fixture.store.as_ref();
    store
        .put_finding(&finding(
            &refused,
            FindingKind::NetworkRefused,
            "s1",
            "ForbiddenByFirewall",
        ))
        .await
        .expect("written");
    store
        .put_finding(&finding(
            &page,
            FindingKind::PageFailed,
            "s1",
            "503 after 5 tries",
        ))
        .await
        .expect("written");
    // The next sweep sees the firewall again: same row, newer sweep.
    store
        .put_finding(&finding(
            &refused,
            FindingKind::NetworkRefused,
            "s2",
            "ForbiddenByFirewall",
        ))
        .await
        .expect("rewritten");

    let cleared_refused = store
        .clear_findings(&refused, &sweep("s2"))
        .await
        .expect("cleared");
    let cleared_page = store
        .clear_findings(&page, &sweep("s2"))
        .await
        .expect("cleared");

    assert_eq!((cleared_refused, cleared_page), (0, 1));
    let left: Vec<ScopeFinding> = finding_stream(store, 1)
        .try_collect()
        .await
        .expect("walked");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].scope, refused);
    assert_eq!(left[0].sweep, sweep("s2"));
    assert!(left[0].kind.is_error());
}

async fn vaults_keep_their_compliance_properties(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let rbac = vault("kv-rbac", PermissionModel::Rbac);
    let legacy = vault("kv-legacy", PermissionModel::AccessPolicy);
    store.put_vault(&rbac).await.expect("written");
    store.put_vault(&legacy).await.expect("written");
    store.put_vault(&legacy).await.expect("rewritten");

    let mut read: Vec<InventoryVault> = vault_stream(store, 1).try_collect().await.expect("walked");
    read.sort_by(|a, b| a.name.cmp(&b.name));

    assert_eq!(read, vec![legacy.clone(), rbac.clone()]);
    assert!(read[0].needs_list_only_policy());
    assert!(!read[1].needs_list_only_policy());
    assert_eq!(read[1].id(), vault_source("kv-rbac").key());
    assert_eq!(CredentialSource::vault_key(&rbac.uri), rbac.id());
    assert_eq!(store.vault(&rbac.uri).await.expect("read"), Some(rbac));
    let unknown = VaultUrl::parse("https://kv-unknown.vault.azure.net/").expect("vault url");
    assert_eq!(store.vault(&unknown).await.expect("read"), None);
}

async fn snapshots_are_one_per_sweep_oldest_first(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let credentials = [
        secret(&vault_source("kv-trend"), "a", Some(3)),
        secret(&vault_source("kv-trend"), "b", None),
    ];
    let snapshot = |sweep_id: &str, when: &str| {
        let mut snapshot = SweepSnapshot::new(sweep(sweep_id), at(when));
        for credential in &credentials {
            snapshot.count(credential);
        }
        snapshot
    };
    let later = snapshot("s2", "2030-01-08T00:00:00Z");
    let earlier = snapshot("s1", "2030-01-01T00:00:00Z");
    store.put_snapshot(&later).await.expect("written");
    store.put_snapshot(&earlier).await.expect("written");
    store
        .put_snapshot(&later)
        .await
        .expect("the same sweep again");

    let mut read = Vec::new();
    let mut after = None;
    loop {
        let page = store.snapshots(after.as_ref(), 1).await.expect("a page");
        read.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }

    assert_eq!(read, vec![earlier, later]);
    assert_eq!(read[0].credentials, 2);
    assert_eq!(read[0].unmanaged, 2);
}

async fn a_snapshot_counts_what_the_store_holds_and_is_kept(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let kv = vault_source("kv-counted");
    let mut managed = secret(&kv, "managed", Some(20));
    managed.managed = true;
    store
        .put_credentials(&[
            managed,
            secret(&kv, "expired", Some(-1)),
            secret(&kv, "forever", None),
            password(&app_source(3), 3, 5, "ada@contoso.com"),
        ])
        .await
        .expect("written");
    store
        .put_vault(&vault("kv-counted", PermissionModel::Rbac))
        .await
        .expect("written");
    store
        .put_finding(&ScopeFinding::new(
            Scope::Tenant,
            FindingKind::PageFailed,
            "",
            "503",
            at(NOW),
            sweep("s1"),
        ))
        .await
        .expect("written");

    let taken = take_snapshot(store, sweep("s1"), at(NOW), 2)
        .await
        .expect("counted");

    assert_eq!(taken.credentials, 4);
    assert_eq!((taken.managed, taken.unmanaged), (1, 3));
    assert_eq!(taken.by_kind.get(&CredentialKind::Secret), Some(&3));
    assert_eq!(taken.by_source.get(&SourceKind::Application), Some(&1));
    assert_eq!(taken.by_expiry.get(&ExpiryBucket::Expired), Some(&1));
    assert_eq!(taken.by_expiry.get(&ExpiryBucket::Within7Days), Some(&1));
    assert_eq!(taken.by_expiry.get(&ExpiryBucket::Within30Days), Some(&1));
    assert_eq!(taken.by_expiry.get(&ExpiryBucket::NoEndDate), Some(&1));
    assert_eq!((taken.vaults, taken.errors, taken.findings), (1, 1, 0));
    let kept = store.snapshots(None, 10).await.expect("read");
    assert_eq!(kept.items, vec![taken]);
}

/// Table storage writes a page of one source's credentials as entity group transactions,
/// each stored whole or not at all: a transaction refused partway through a write leaves
/// those before it stored and none of its own, says so, and the retry completes the write.
#[tokio::test]
async fn a_table_write_refused_partway_keeps_each_transaction_whole_and_a_retry_completes_it() {
    let endpoint = std::env::var(TABLE_ENDPOINT_VARIABLE).unwrap_or_else(|_| {
        panic!("{TABLE_ENDPOINT_VARIABLE} is not set: start Azurite via the project's test command (.ci/test)")
    });
    let connection = SecretValue::new(format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_ACCOUNT_KEY};TableEndpoint={endpoint}"
    ));
    let client = TableClient::from_connection_string(&connection, None).expect("client");
    let table =
        TableName::parse(&format!("partway{}", uuid::Uuid::new_v4().simple())).expect("table name");
    client
        .create_table_if_not_exists(&table)
        .await
        .expect("the table is created (is Azurite running?)");
    let partition = EntityKey::parse("cvault").expect("key");
    let entity = |n: usize, sweep: &str| {
        let mut properties = Map::new();
        properties.insert("Sweep".into(), Value::String(sweep.to_owned()));
        (
            EntityKey::parse(&format!("r{n:03}")).expect("key"),
            properties,
        )
    };
    let rows = || async {
        let query = Query {
            filter: Some("PartitionKey eq 'cvault'".to_owned()),
            ..Query::default()
        };
        client
            .query::<Map<String, Value>>(&table, &query)
            .await
            .expect("query")
            .entities
            .into_iter()
            .map(|e| (e.row_key, e.properties["Sweep"].clone()))
            .collect::<Vec<_>>()
    };
    // 150 entities: transactions of 100 and 50; the 120th is one the service refuses (a
    // property typed as a number holding text).
    let mut entities: Vec<_> = (0..150).map(|n| entity(n, "s1")).collect();
    entities[120]
        .1
        .insert("Count@odata.type".into(), Value::String("Edm.Int32".into()));
    entities[120]
        .1
        .insert("Count".into(), Value::String("not a number".into()));

    let refused = client
        .upsert_all(&table, &partition, &entities)
        .await
        .expect_err("the second transaction is refused");

    assert!(
        refused
            .context
            .contains("the 100 entities of the transactions before it are stored"),
        "{refused}"
    );
    let stored = rows().await;
    assert_eq!(
        stored.len(),
        100,
        "the first transaction whole, none of the second"
    );
    assert_eq!(stored.first().map(|r| r.0.as_str()), Some("r000"));
    assert_eq!(stored.last().map(|r| r.0.as_str()), Some("r099"));

    let retried: Vec<_> = (0..150).map(|n| entity(n, "s2")).collect();
    client
        .upsert_all(&table, &partition, &retried)
        .await
        .expect("the retry is stored");
    let stored = rows().await;
    assert_eq!(stored.len(), 150);
    assert!(
        stored.iter().all(|(_, sweep)| sweep == "s2"),
        "each row replaced, none doubled"
    );
    client.delete_table(&table).await.expect("dropped");
}

macro_rules! inventory_contract {
    ($adapter:ident: $fixture:expr) => {
        contract!($adapter: $fixture =>
            a_credential_round_trips_with_every_detail,
            a_rerun_rewrites_the_same_rows,
            a_page_larger_than_a_transaction_is_written_whole_and_again_changes_nothing,
            a_walk_in_small_pages_returns_every_credential_once,
            filters_select_expiring_unmanaged_owned_and_by_source,
            retiring_removes_only_the_unseen_credentials_of_that_source,
            a_late_retire_of_an_older_sweep_keeps_a_newer_sweeps_rows,
            retiring_a_directory_range_removes_only_its_older_rows,
            findings_are_kept_per_scope_and_kind_and_cleared_when_gone,
            vaults_keep_their_compliance_properties,
            snapshots_are_one_per_sweep_oldest_first,
            a_snapshot_counts_what_the_store_holds_and_is_kept,
            an_adoption_marks_its_row_and_its_end_unmarks_it,
            an_adopted_client_secret_is_managed_whichever_job_runs_first,
        );
    };
}

// ---------------------------------------------------------------------------------------
// Adoptions: an application client secret a managed vault secret holds

/// Whether the row of the application password credential `key` of `app` is managed.
async fn row_of(
    store: &dyn InventoryStore,
    app: &CredentialSource,
    key: u8,
) -> Option<InventoryCredential> {
    let id = password(app, key, 30, "x").id();
    everything(store, CredentialFilter::default())
        .await
        .into_iter()
        .find(|c| c.id() == id)
}

fn pair(app: &CredentialSource, key: u8) -> (AppId, KeyId) {
    let credential = password(app, key, 30, "x");
    credential.adoption_key().expect("a client secret")
}

fn adoption(app: &CredentialSource, key: u8, vault: &str, holder: &str, at: &str) -> Adoption {
    let (app_id, key_id) = pair(app, key);
    let vault = vault_source(vault);
    Adoption {
        app_id,
        key_id,
        holder: secret(&vault, holder, Some(30)).id(),
        vault: vault.key(),
        sweep: sweep(at),
    }
}

/// An adoption recorded after its credential's row was written marks that row managed and
/// changes nothing else on it; one recorded before is there for the directory job to read.
/// Retiring a vault's older adoptions names the credentials they held, whose rows are then
/// unmanaged again, except one keyturn's name marks.
async fn an_adoption_marks_its_row_and_its_end_unmarks_it(fixture: Fixture) {
    let store = fixture.store.as_ref();
    let (billing, payroll) = (app_source(1), app_source(2));
    let adopted = password(&billing, 1, 30, "ops@example.com");
    let mut created = password(&billing, 2, 30, "ops@example.com");
    created.name = "keyturn 0123456789abcdef0123456789abcdef".to_owned();
    created.managed = true;
    let stray = password(&billing, 3, 30, "ops@example.com");
    store
        .put_credentials(&[adopted.clone(), created.clone(), stray.clone()])
        .await
        .expect("written");

    store
        .put_adoptions(&[
            adoption(&billing, 1, "kv-adopt", "billing-secret", "s1"),
            adoption(&billing, 2, "kv-adopt", "billing-secret", "s1"),
            // Its credential's row is not written yet.
            adoption(&payroll, 4, "kv-adopt", "payroll-secret", "s1"),
        ])
        .await
        .expect("recorded");
    let changed = store
        .mark_adopted(
            &[pair(&billing, 1), pair(&billing, 2), pair(&payroll, 4)],
            true,
        )
        .await
        .expect("marked");

    assert_eq!(changed, 1, "only the unmanaged row that exists changes");
    let marked = row_of(store, &billing, 1).await.expect("the row");
    assert_eq!(
        marked,
        InventoryCredential {
            managed: true,
            ..adopted.clone()
        }
    );
    assert!(!row_of(store, &billing, 3).await.expect("the row").managed);
    let app_id = |source: &CredentialSource| pair(source, 0).0;
    assert_eq!(
        store
            .adopted(&[app_id(&billing), app_id(&payroll), app_id(&app_source(3))])
            .await
            .expect("read"),
        BTreeSet::from([pair(&billing, 1), pair(&billing, 2), pair(&payroll, 4)])
    );

    // The next sweep of the vault finds the payroll secret still holding its credential
    // and the billing secret holding none: a complete listing retires the older ones.
    store
        .put_adoptions(&[adoption(&payroll, 4, "kv-adopt", "payroll-secret", "s2")])
        .await
        .expect("recorded again");
    let other_vault = store
        .retire_adoptions(&vault_source("kv-other"), &sweep("s2"))
        .await
        .expect("retired");
    assert!(other_vault.is_empty(), "{other_vault:?}");
    let ended: BTreeSet<_> = store
        .retire_adoptions(&vault_source("kv-adopt"), &sweep("s2"))
        .await
        .expect("retired")
        .into_iter()
        .collect();
    assert_eq!(
        ended,
        BTreeSet::from([pair(&billing, 1), pair(&billing, 2)])
    );
    assert_eq!(
        store
            .adopted(&[app_id(&billing), app_id(&payroll)])
            .await
            .expect("read"),
        BTreeSet::from([pair(&payroll, 4)])
    );
    let ended: Vec<_> = ended.into_iter().collect();
    let changed = store.mark_adopted(&ended, false).await.expect("unmarked");

    assert_eq!(changed, 1);
    assert_eq!(row_of(store, &billing, 1).await.expect("the row"), adopted);
    assert!(
        row_of(store, &billing, 2).await.expect("the row").managed,
        "keyturn's name still marks it"
    );
}

/// What a client secret's alert tells its owner to do, read from its row now.
fn advice_for(credential: &InventoryCredential, now: DateTime<Utc>) -> String {
    let defaults = PolicyDefaults::new(90, 30, 7).expect("defaults");
    keyturn::alerts::message::advice(credential, now, &defaults).join(" ")
}

const MANAGED_ADVICE: &str = "keyturn rotates it (through the Key Vault secret that holds it)";
const UNMANAGED_ADVICE: &str = "keep the client secret in a Key Vault secret tagged";

/// A client secret keyturn adopted (a managed vault secret names it by its tags) is
/// managed on its row as soon as both the vault job and the directory job have run, in
/// either order, and an alert decided then says keyturn rotates it. When the secret's tags
/// move to another credential, the next sweep moves the adoption with them.
async fn an_adopted_client_secret_is_managed_whichever_job_runs_first(fixture: Fixture) {
    use keyturn::adapters::local::catalog::LocalCatalog;
    use keyturn::adapters::local::crypto::VaultKey;
    use keyturn::adapters::local::directory::LocalDirectory;
    use keyturn::adapters::local::vault::LocalVault;
    use keyturn::discovery::Discovery;
    use keyturn::discovery::budget::Budgets;
    use keyturn::discovery::job::{DiscoveryJob, JobScope};
    use keyturn::domain::clock::Clock;
    use keyturn::domain::names::ObjectName;
    use keyturn::ports::directory::CredentialIssuer;
    use keyturn::ports::vault::{NewSecretVersion, SecretStore};

    let dir = tempfile::tempdir().expect("temp dir");
    let local = LocalStore::open(dir.path().join("keyturn.db")).expect("store");
    let clock = Clock::system();
    let key =
        VaultKey::from_base64("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=", "test").expect("key");
    let vault = Arc::new(
        LocalVault::open(local.clone(), key, clock.clone())
            .await
            .expect("vault"),
    );
    let directory = LocalDirectory::new(local, clock.clone());
    let now = clock.now();
    let app = directory.create_application("billing").await.expect("app");
    let mut key_ids = Vec::new();
    for name in ["first secret", "second secret"] {
        let issued = directory
            .add_password(&app.object_id, name, now + TimeDelta::days(20))
            .await
            .expect("added");
        key_ids.push(issued.credential.key_id);
    }
    let url = keyturn::domain::names::VaultUrl::parse("https://keyturn-local.vault.azure.net/")
        .expect("url");
    let hold = |key_id: KeyId| {
        let vault = vault.clone();
        let url = url.clone();
        let app_id = app.app_id;
        async move {
            vault
                .set_secret(
                    &url,
                    &ObjectName::parse("billing-secret").expect("name"),
                    &SecretValue::new("local-value-never-read"),
                    NewSecretVersion {
                        expires: Some(now + TimeDelta::days(20)),
                        tags: [
                            ("keyturn-kind", "entra-app-secret".to_owned()),
                            ("keyturn-app-id", app_id.to_string()),
                            ("keyturn-key-id", key_id.to_string()),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                        ..NewSecretVersion::default()
                    },
                )
                .await
                .expect("written");
        }
    };
    let catalog = Arc::new(LocalCatalog::for_local_vault(
        vault.clone(),
        vault.clone(),
        directory,
    ));
    let discovery = Discovery::new(
        catalog.clone(),
        catalog.clone(),
        catalog,
        fixture.store.clone(),
        Budgets::default(),
    );
    // A sweep's vault jobs and directory jobs, as its fan-out queues them.
    let jobs = |at: &'static str| {
        let discovery = &discovery;
        async move {
            let mut pending = vec![DiscoveryJob::new(
                sweep(at),
                JobScope::Sweep {
                    subscriptions: Vec::new(),
                },
            )];
            let (mut vaults, mut ranges) = (Vec::new(), Vec::new());
            while let Some(job) = pending.pop() {
                match job.scope {
                    JobScope::Vault { .. } => vaults.push(job),
                    JobScope::Directory { .. } => ranges.push(job),
                    _ => {
                        pending.extend(discovery.run(&job, now).await.expect("fans out").follow_ups)
                    }
                }
            }
            assert!(!vaults.is_empty() && !ranges.is_empty());
            (vaults, ranges)
        }
    };
    let run = |jobs: Vec<DiscoveryJob>| {
        let discovery = &discovery;
        async move {
            for job in jobs {
                discovery.run(&job, now).await.expect("the job runs");
            }
        }
    };
    let row = |key_id: KeyId| {
        let store = fixture.store.clone();
        let object_id = app.object_id;
        let app_id = app.app_id;
        async move {
            let source = CredentialSource::Application {
                object_id,
                app_id,
                display_name: None,
            };
            let id = InventoryCredential::password_credential_id(&source, &key_id);
            everything(store.as_ref(), CredentialFilter::default())
                .await
                .into_iter()
                .find(|c| c.id() == id)
                .expect("the client secret is inventoried")
        }
    };

    // Sweep 1: the vault job first, then the directory job.
    hold(key_ids[0]).await;
    let (vaults, ranges) = jobs("s1").await;
    run(vaults).await;
    run(ranges).await;
    let first = row(key_ids[0]).await;
    assert!(first.managed, "{first:?}");
    assert!(
        advice_for(&first, now).contains(MANAGED_ADVICE),
        "{}",
        advice_for(&first, now)
    );
    assert!(!row(key_ids[1]).await.managed);

    // Sweep 2: the secret now holds the second credential. The directory job runs first:
    // until the vault job has read the secret, the adoption it recorded last stands.
    hold(key_ids[1]).await;
    let (vaults, ranges) = jobs("s2").await;
    run(ranges).await;
    assert!(row(key_ids[0]).await.managed);
    let second = row(key_ids[1]).await;
    assert!(!second.managed);
    assert!(advice_for(&second, now).contains(UNMANAGED_ADVICE));
    run(vaults).await;
    let (first, second) = (row(key_ids[0]).await, row(key_ids[1]).await);
    assert!(second.managed, "{second:?}");
    assert!(
        advice_for(&second, now).contains(MANAGED_ADVICE),
        "{}",
        advice_for(&second, now)
    );
    assert!(!first.managed, "the adoption ended with the tag: {first:?}");
    assert!(advice_for(&first, now).contains(UNMANAGED_ADVICE));
    assert_eq!(
        first.sweep,
        sweep("s2"),
        "the directory job's row, only its flag changed"
    );
}

inventory_contract!(sqlite: super::local());
inventory_contract!(memory: super::memory());
inventory_contract!(table: super::table());
