//! `keyturn inventory` against the local store and against the inventory table (Azurite):
//! one JSON array of credentials with their source, name, kind, expiry, owners and
//! whether keyturn manages them; the filters; table and CSV; clear refusals of bad input.
//! No secret value reaches the output: the store the command reads also holds the local
//! vault's values, and a known one is searched for in everything it prints.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use keyturn::adapters::azure::client::table::{TableClient, TableName};
use keyturn::adapters::azure::inventory::TableInventory;
use keyturn::adapters::local::crypto::VaultKey;
use keyturn::adapters::local::inventory::LocalInventory;
use keyturn::adapters::local::store::LocalStore;
use keyturn::adapters::local::vault::LocalVault;
use keyturn::domain::clock::Clock;
use keyturn::domain::ids::{AppId, DirectoryObjectId, KeyId};
use keyturn::domain::inventory::{
    CredentialHandle, CredentialKind, CredentialSource, FindingKind, InventoryCredential, Owner,
    Scope, ScopeFinding, SweepId,
};
use keyturn::domain::names::{ObjectName, VaultUrl};
use keyturn::domain::secret::SecretValue;
use keyturn::ports::inventory::InventoryStore;
use keyturn::ports::vault::{NewSecretVersion, SecretStore};

use crate::helpers::{AppOptions, keyturn, rotation, start_up};

const CANARY: &str = "inventory-canary-value-71c2e0";
const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A secret with a known value in the local vault, so the store file the command reads
/// holds one (sealed, as the vault keeps every value).
async fn vault_set(store: LocalStore, name: &str) {
    let key =
        VaultKey::from_base64("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "test").expect("key");
    let vault = LocalVault::open(store, key, Clock::system())
        .await
        .expect("vault");
    vault
        .set_secret(
            &VaultUrl::parse("https://keyturn-local.vault.azure.net/").expect("url"),
            &ObjectName::parse(name).expect("name"),
            &SecretValue::new(CANARY.to_owned()),
            NewSecretVersion::default(),
        )
        .await
        .expect("stored");
}

fn local_vault() -> CredentialSource {
    CredentialSource::Vault {
        subscription: None,
        name: "keyturn-local".parse().expect("name"),
        uri: VaultUrl::parse("https://keyturn-local.vault.azure.net/").expect("url"),
    }
}

fn sweep() -> SweepId {
    SweepId::parse("20300101T000000Z").expect("sweep")
}

/// Three credentials: a managed vault secret expiring in 20 days, an unmanaged
/// application secret expiring in 5 days owned by Ada (no mail address), and a service
/// principal's certificate credential without an end date tagged for team-edge.
fn demo(now: DateTime<Utc>) -> Vec<InventoryCredential> {
    let vault_secret = InventoryCredential {
        source: local_vault(),
        kind: CredentialKind::Secret,
        name: "db-password".to_owned(),
        handle: CredentialHandle::VaultObject {
            name: "db-password".to_owned(),
            version: Some("0123456789abcdef0123456789abcdef".to_owned()),
            versions: Some(2),
        },
        enabled: true,
        created: Some(now - TimeDelta::days(70)),
        updated: Some(now - TimeDelta::days(70)),
        not_before: None,
        expires: Some(now + TimeDelta::days(20)),
        content_type: None,
        tags: [("keyturn-kind".to_owned(), "generated".to_owned())].into(),
        certificate: None,
        key: None,
        directory: None,
        owners: Vec::new(),
        managed: true,
        scanned_at: now,
        sweep: sweep(),
    };
    let app = CredentialSource::Application {
        object_id: DirectoryObjectId::parse("7d1c0a52-3b1e-4d7e-9a51-0c2b7f1e4a01").expect("id"),
        app_id: AppId::parse("a4f3c9e2-1111-4c2a-8d55-2b6e0f9a7c01").expect("id"),
        display_name: Some("payments-api".to_owned()),
    };
    let app_secret = InventoryCredential {
        source: app,
        kind: CredentialKind::PasswordCredential,
        name: "ci deploy".to_owned(),
        handle: CredentialHandle::DirectoryCredential {
            key_id: KeyId::parse("0f5e8c1a-2222-4d3b-9e66-3c7f1a0b8d02").expect("id"),
        },
        expires: Some(now + TimeDelta::days(5)),
        tags: Default::default(),
        owners: vec![Owner {
            object_id: None,
            display_name: Some("Ada Lovelace".to_owned()),
            user_principal_name: Some("ada@contoso.com".to_owned()),
            mail: None,
        }],
        managed: false,
        ..vault_secret.clone()
    };
    let principal = CredentialSource::ServicePrincipal {
        object_id: DirectoryObjectId::parse("9b2d1e63-4c2f-4e8f-8b62-1d3c8a2f5b03").expect("id"),
        app_id: AppId::parse("c6e5d1f4-3333-4e4c-9f77-4d8a2b1c9e03").expect("id"),
        display_name: Some("saml-sso".to_owned()),
    };
    let signing_certificate = InventoryCredential {
        source: principal,
        kind: CredentialKind::KeyCredential,
        name: "CN=saml-sso".to_owned(),
        handle: CredentialHandle::DirectoryCredential {
            key_id: KeyId::parse("1a6f9d2b-4444-4e4c-8f77-5e9b3c2d0f04").expect("id"),
        },
        expires: None,
        tags: [("keyturn-owner".to_owned(), "team-edge".to_owned())].into(),
        owners: Vec::new(),
        managed: false,
        ..vault_secret.clone()
    };
    vec![vault_secret, app_secret, signing_certificate]
}

async fn seed(store: &dyn InventoryStore, now: DateTime<Utc>) {
    store.put_credentials(&demo(now)).await.expect("seeded");
    store
        .put_finding(&ScopeFinding::new(
            Scope::Vault {
                subscription: None,
                name: "kv-firewalled".parse().expect("name"),
            },
            FindingKind::NetworkRefused,
            "",
            "ForbiddenByFirewall: add the sweep's outbound address or a private endpoint",
            now,
            sweep(),
        ))
        .await
        .expect("seeded");
}

/// A data directory whose store holds a vault value and the inventory.
async fn local_data() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::open(dir.path().join("keyturn.db")).expect("the store opens");
    vault_set(store.clone(), "db-password").await;
    seed(&LocalInventory::new(store), Utc::now()).await;
    dir
}

fn run(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, String) {
    let output = keyturn(env)
        .arg("inventory")
        .args(args)
        .output()
        .expect("keyturn inventory runs");
    (
        output.status.code(),
        String::from_utf8(output.stdout).expect("utf-8"),
        String::from_utf8(output.stderr).expect("utf-8"),
    )
}

fn names(json: &str) -> BTreeSet<String> {
    let array: Value = serde_json::from_str(json).expect("one JSON document");
    array
        .as_array()
        .expect("an array")
        .iter()
        .map(|c| c["name"].as_str().expect("a name").to_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn inventory_json_is_one_array_with_source_name_kind_expiry_owners_and_managed() {
    let data = local_data().await;
    let dir = data.path().to_str().expect("utf-8 path");

    let (code, stdout, stderr) = run(&[], &["--data-dir", dir, "--format", "json"]);

    assert_eq!(code, Some(0), "{stderr}");
    let array: Value = serde_json::from_str(&stdout).expect("one JSON document");
    let credentials = array.as_array().expect("an array");
    assert_eq!(credentials.len(), 3);
    for credential in credentials {
        for field in [
            "id", "source", "name", "kind", "expires", "owners", "managed", "expiry",
        ] {
            assert!(
                credential.get(field).is_some(),
                "{field} missing in {credential}"
            );
        }
    }
    let by_name = |name: &str| {
        credentials
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed"))
    };
    let app = by_name("ci deploy");
    assert_eq!(app["source"]["kind"], "application");
    assert_eq!(app["source"]["display_name"], "payments-api");
    assert_eq!(app["kind"], "password_credential");
    assert_eq!(app["owners"][0]["user_principal_name"], "ada@contoso.com");
    assert_eq!(app["owners"][0]["mail"], Value::Null);
    assert_eq!(app["managed"], false);
    assert_eq!(app["expiry"], "within_7_days");
    let certificate = by_name("CN=saml-sso");
    assert_eq!(certificate["source"]["kind"], "service_principal");
    assert_eq!(certificate["expires"], Value::Null);
    assert_eq!(certificate["expiry"], "no_end_date");
    assert_eq!(by_name("db-password")["managed"], true);
    assert!(stderr.contains("3 credentials"), "{stderr}");
    assert!(stderr.contains("vault kv-firewalled"), "{stderr}");
    assert!(!stdout.contains(CANARY) && !stderr.contains(CANARY));
}

#[tokio::test]
async fn inventory_filters_by_expiry_management_owner_and_source() {
    let data = local_data().await;
    let dir = data.path().to_str().expect("utf-8 path");
    let json = |extra: &[&str]| {
        let mut args = vec!["--data-dir", dir, "--format", "json"];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = run(&[], &args);
        assert_eq!(code, Some(0), "{stderr}");
        names(&stdout)
    };

    assert_eq!(
        json(&["--expiring", "30d"]),
        set(&["db-password", "ci deploy"])
    );
    assert_eq!(json(&["--expiring", "7d"]), set(&["ci deploy"]));
    assert_eq!(json(&["--unmanaged"]), set(&["ci deploy", "CN=saml-sso"]));
    assert_eq!(
        json(&["--expiring", "30d", "--unmanaged"]),
        set(&["ci deploy"])
    );
    assert_eq!(json(&["--owner", "ADA@contoso.com"]), set(&["ci deploy"]));
    assert_eq!(json(&["--owner", "team-edge"]), set(&["CN=saml-sso"]));
    assert_eq!(json(&["--source", "vault"]), set(&["db-password"]));
    assert_eq!(json(&["--owner", "nobody@contoso.com"]), BTreeSet::new());
}

#[tokio::test]
async fn inventory_prints_a_table_by_default_and_csv_on_request() {
    let data = local_data().await;
    let dir = data.path().to_str().expect("utf-8 path");

    let (table_code, table, table_err) = run(&[], &["--data-dir", dir]);
    let (csv_code, csv, csv_err) = run(&[], &["--data-dir", dir, "--format", "csv"]);

    assert_eq!(table_code, Some(0), "{table_err}");
    let mut lines = table.lines();
    assert!(
        lines.next().expect("a header").starts_with("SOURCE"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|line| line.contains("ci deploy"))
        .expect("the app secret's row");
    assert!(row.starts_with("app payments-api"), "{row}");
    assert!(row.contains("ada@contoso.com"), "{row}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("CN=saml-sso") && l.contains("never")),
        "{table}"
    );

    assert_eq!(csv_code, Some(0), "{csv_err}");
    let header = csv.lines().next().expect("a header");
    assert!(header.starts_with("id,source_kind,source,"), "{header}");
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(!table.contains(CANARY) && !csv.contains(CANARY));
}

#[test]
fn inventory_refuses_bad_options_and_a_missing_store_clearly() {
    let empty = tempfile::tempdir().expect("temp dir");
    let dir = empty.path().to_str().expect("utf-8 path");

    let (bad_span, _, span_err) = run(&[], &["--data-dir", dir, "--expiring", "30w"]);
    let (bad_source, _, source_err) = run(&[], &["--data-dir", dir, "--source", "keys"]);
    let (missing, _, missing_err) = run(&[], &["--data-dir", dir]);

    assert_eq!(bad_span, Some(2));
    assert!(span_err.contains("--expiring"), "{span_err}");
    assert_eq!(bad_source, Some(2));
    assert!(source_err.contains("--source"), "{source_err}");
    assert_eq!(missing, Some(2));
    assert!(
        missing_err.contains("holds no keyturn store"),
        "{missing_err}"
    );
}

#[tokio::test]
async fn inventory_reads_the_inventory_table_when_the_settings_name_table_storage() {
    let endpoint = std::env::var("KEYTURN_TEST_TABLE_ENDPOINT").unwrap_or_else(|_| {
        panic!("KEYTURN_TEST_TABLE_ENDPOINT is not set: start Azurite via the project's test command (.ci/test)")
    });
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_ACCOUNT_KEY};TableEndpoint={endpoint}"
    );
    let name = format!("inventory{}", uuid::Uuid::new_v4().simple());
    let client = TableClient::from_connection_string(&SecretValue::new(connection.clone()), None)
        .expect("client");
    let store = TableInventory::new(client, TableName::parse(&name).expect("table name"));
    store
        .ensure_table()
        .await
        .expect("the table is created (is Azurite running?)");
    seed(&store, Utc::now()).await;
    let env = [
        ("KEYTURN_AUDIT_STORE", "table"),
        ("KEYTURN_INVENTORY_TABLE", name.as_str()),
        ("KEYTURN_TABLE_CONNECTION_STRING", connection.as_str()),
    ];

    let (code, stdout, stderr) = run(&env, &["--format", "json", "--unmanaged"]);

    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(names(&stdout), set(&["ci deploy", "CN=saml-sso"]));
    assert!(!stderr.contains(AZURITE_ACCOUNT_KEY), "{stderr}");
}

#[tokio::test]
async fn start_up_gives_discovery_the_store_keyturn_inventory_reads() {
    let data = tempfile::tempdir().expect("temp dir");
    let (_, state, _) = start_up(AppOptions::default(), &rotation(), data.path()).await;
    let inventory = state
        .services
        .inventory
        .clone()
        .expect("the rotator keeps an inventory");

    inventory
        .put_credentials(&demo(Utc::now())[..1])
        .await
        .expect("written through start-up's store");

    let dir = data.path().to_str().expect("utf-8 path");
    let (code, stdout, stderr) = run(&[], &["--data-dir", dir, "--format", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(names(&stdout), set(&["db-password"]));
}
