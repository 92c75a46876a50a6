//! The evidence package in Azure, on Azurite (Table and Blob) with the checkpoints and
//! the manifest signed by the Key Vault stand-in's key: `keyturn evidence export`'s
//! Azure sources (the audit and inventory tables, the checkpoint container, the key),
//! and `EvidenceExport` storing the previous month's package in the checkpoint container
//! once, however many runs fire. Each package downloaded verifies offline with the
//! public key alone; a changed byte fails it, naming the file. The exceptions register
//! blob, as the export, the timer and `keyturn compliance --table` read it.

use std::io::{Read, Write};
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use keyturn::adapters::azure::client::blob::UPLOAD_BLOCK_BYTES;
use keyturn::adapters::azure::client::table::TableName;
use keyturn::adapters::azure::inventory::TableInventory;
use keyturn::domain::clock::Clock;
use keyturn::domain::inventory::InventoryCredential;
use keyturn::evidence::verify::verify_package;
use keyturn::evidence::{Period, export};
use keyturn::host::router::{AppState, router};
use keyturn::ports::inventory::InventoryStore;
use keyturn_standins::Permissions;

use crate::audit_anchor::{Anchored, append, chain};
use crate::audit_anchor_azure::AzureAnchored;

/// The entries `append` writes are stamped on 2025-03-01; the timer fires on the first
/// of the next month, so the previous month is March 2025.
const MONTH: &str = "2025-03";
const PACKAGE: &str = "evidence/2025-03/keyturn-evidence-2025-03.zip";

fn fired_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 4, 1, 3, 0, 0)
        .single()
        .expect("a valid time")
}

fn credential(name: &str) -> InventoryCredential {
    crate::helpers::kv_prod_secret(
        name,
        Some(fired_at() + chrono::Duration::days(30)),
        &[],
        fired_at(),
    )
}

/// A fresh inventory table beside the audit table, holding `names`.
async fn inventory_table(fixture: &AzureAnchored, names: &[&str]) -> TableName {
    let table = TableName::parse(&format!("inventory{}", uuid::Uuid::new_v4().simple()))
        .expect("a table name");
    let inventory = TableInventory::new(fixture.table_client(), table.clone());
    inventory
        .ensure_table()
        .await
        .expect("the table is created");
    let credentials: Vec<_> = names.iter().map(|n| credential(n)).collect();
    inventory
        .put_credentials(&credentials)
        .await
        .expect("the inventory is seeded");
    table
}

/// An exceptions register blob in a fresh container of the fixture's Blob service, as
/// `KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB` names it (`CONTAINER/NAME`).
pub(crate) struct RegisterBlob {
    client: keyturn::adapters::azure::client::blob::BlobClient,
    container: keyturn::adapters::azure::client::blob::ContainerName,
    blob: String,
}

impl RegisterBlob {
    /// Creates the container; `blob` is not there until [`upload`](Self::upload).
    pub(crate) async fn new(fixture: &AzureAnchored, blob: &str) -> Self {
        let client = fixture.blob_client();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let container = keyturn::adapters::azure::client::blob::ContainerName::parse(&format!(
            "compliance-{}",
            &id[..12]
        ))
        .expect("a container name");
        client
            .create_container_if_not_exists(&container)
            .await
            .expect("the container is created");
        Self {
            client,
            container,
            blob: blob.to_owned(),
        }
    }

    /// `CONTAINER/NAME`, as the setting names it and errors quote it.
    pub(crate) fn named(&self) -> String {
        format!("{}/{}", self.container, self.blob)
    }

    /// The setting naming this blob.
    pub(crate) fn setting(&self) -> Vec<(String, String)> {
        vec![(
            "KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB".to_owned(),
            self.named(),
        )]
    }

    /// Uploads `register` (the register's JSON) as the blob.
    pub(crate) async fn upload(&self, register: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("register.json");
        std::fs::write(&path, register).expect("written");
        assert!(
            self.client
                .upload_block_blob(&self.container, &self.blob, &path, "application/json")
                .await
                .expect("uploaded")
        );
    }
}

/// A register excepting `credential-no-owner` in vault kv-prod until 2030.
const NO_OWNER_REGISTER: &str = r#"{ "exceptions": [
    { "rule": "credential-no-owner", "subject": "vault:kv-prod",
      "owner": "ops@contoso.example", "reason": "owners are being assigned",
      "expires": "2030-01-01" } ] }"#;

/// A register whose second entry's expiry is not a date.
const MALFORMED_REGISTER: &str = r#"{ "exceptions": [
    { "rule": "rotation-failed", "subject": "*", "owner": "a", "reason": "r", "expires": "2030-01-01" },
    { "rule": "rotation-failed", "subject": "*", "owner": "a", "reason": "r", "expires": "someday" } ] }"#;

/// Every file of a zip, in order.
fn files(zip: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive =
        zip::ZipArchive::new(std::fs::File::open(zip).expect("zip opens")).expect("a zip");
    (0..archive.len())
        .map(|i| {
            let mut file = archive.by_index(i).expect("entry");
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).expect("read");
            (file.name().to_owned(), bytes)
        })
        .collect()
}

/// The package at `zip` with one byte of `name` changed, written to `out`.
fn tampered(zip: &Path, name: &str, out: &Path) {
    let mut writer = zip::ZipWriter::new(std::fs::File::create(out).expect("create"));
    for (path, mut bytes) in files(zip) {
        if path == name {
            bytes[0] ^= 0x01;
        }
        writer
            .start_file(path.as_str(), zip::write::SimpleFileOptions::default())
            .expect("start");
        writer.write_all(&bytes).expect("write");
    }
    writer.finish().expect("finish");
}

/// The package verifies with the vault key's public half alone, and a changed byte in
/// the audit extract fails it naming the file.
async fn assert_verifies_and_tampering_fails(fixture: &AzureAnchored, zip: &Path) {
    let key = fixture.public_key().await;
    let report = verify_package(zip, vec![key.clone()]).expect("the package reads");
    assert!(report.intact, "{:?}", report.problems);
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    let changed = zip.with_extension("tampered.zip");
    tampered(zip, "audit/entries.jsonl", &changed);
    let report = verify_package(&changed, vec![key]).expect("the package reads");
    assert!(!report.intact);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("audit/entries.jsonl")),
        "{:?}",
        report.problems
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_export_from_azure_reads_the_tables_and_container_and_verifies_offline() {
    let fixture = AzureAnchored::new().await;
    append(&fixture.writer(&chain("w-one")).await, 3).await;
    append(&fixture.writer(&chain("w-two")).await, 2).await;
    let inventory = inventory_table(&fixture, &["db-password", "api-key"]).await;
    // The alert ledger, as the deployment creates it beside the audit log (empty: no
    // alert was sent).
    let alerts = TableName::parse(&format!("alerts{}", uuid::Uuid::new_v4().simple()))
        .expect("a table name");
    keyturn::adapters::azure::alert_ledger::TableAlertLedger::new(
        fixture.table_client(),
        alerts.clone(),
    )
    .ensure_table()
    .await
    .expect("the alert ledger is created");
    let mut settings = fixture.settings();
    settings.push(("KEYTURN_INVENTORY_TABLE".to_owned(), inventory.to_string()));
    settings.push(("KEYTURN_ALERT_TABLE".to_owned(), alerts.to_string()));
    let env = keyturn::config::Environment::from_pairs(settings);
    let command = keyturn::config::AuditCommandSettings::from_env(&env).expect("settings");
    let operator = fixture
        .standins
        .seed_identity("operator", Permissions::only(["keys/sign", "keys/get"]));
    let sources = keyturn::startup::azure_sources(
        &command,
        &[],
        None,
        &env,
        fixture.standins.credential_for(&operator),
        fixture.signer_options(),
    )
    .await
    .expect("the Azure sources open");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("evidence.zip");
    let period = Period::parse("2025-03-01", "2025-03-01").expect("a period");

    let summary = export(sources.sources(), &period, &out, fired_at())
        .await
        .expect("the export succeeds");

    let rows = |name: &str| {
        summary
            .files
            .iter()
            .find(|f| f.path == name)
            .and_then(|f| f.rows)
            .unwrap_or_else(|| panic!("{name} has rows"))
    };
    assert_eq!(rows("audit/entries.jsonl"), 5, "both chains' entries");
    assert_eq!(
        rows("populations/inventory.csv"),
        2,
        "the inventory table's rows"
    );
    assert_eq!(
        summary.key,
        fixture.public_key().await.fingerprint(),
        "signed with the vault key"
    );
    assert_verifies_and_tampering_fails(&fixture, &out).await;
}

/// An app as a deployment's rotator runs it: the audit log in the fixture's table,
/// anchored in its container with the vault key, its clock on the first of April 2025.
async fn rotator(fixture: &AzureAnchored, data: &Path) -> axum::Router {
    rotator_with(fixture, data, Vec::new()).await
}

/// [`rotator`] with `extra` settings.
async fn rotator_with(
    fixture: &AzureAnchored,
    data: &Path,
    extra: Vec<(String, String)>,
) -> axum::Router {
    let env = keyturn::config::Environment::from_pairs(crate::helpers::test_settings(data))
        .with(&fixture.settings())
        .with(&extra);
    let settings = keyturn::config::Settings::from_env(&env).expect("the settings parse");
    let identity = fixture
        .standins
        .seed_identity("keyturn", Permissions::only(["keys/sign", "keys/get"]));
    let overrides = keyturn::startup::Overrides {
        credential: Some(fixture.standins.credential_for(&identity)),
        signer_options: Some(fixture.signer_options()),
        rotation: Some(keyturn::startup::RotationOverride::Absent),
        clock: Some(Clock::fixed(fired_at())),
        ..keyturn::startup::Overrides::default()
    };
    let services = keyturn::startup::services_with(&settings, &env, overrides)
        .await
        .expect("start-up builds the app");
    router(
        AppState {
            services: std::sync::Arc::new(services),
            vaults: std::sync::Arc::new(Vec::new()),
        },
        &settings.host.enabled_functions,
    )
}

async fn fire(app: &axum::Router) -> Value {
    let (status, body) = fire_answer(app).await;
    assert_eq!(status, 200, "{body}");
    body["ReturnValue"].clone()
}

/// The timer's answer: its status and body.
async fn fire_answer(app: &axum::Router) -> (u16, Value) {
    let body = json!({ "Data": { "timer": { "IsPastDue": false } }, "Metadata": {} });
    let request = axum::http::Request::post("/EvidenceExport")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .expect("a request");
    let response = app.clone().oneshot(request).await.expect("an answer");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a body");
    (status, serde_json::from_slice(&bytes).expect("json"))
}

/// In Azure the register is the blob `KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB` names, read by
/// `EvidenceExport` with the app's identity: its exceptions show in the month's package.
/// Configured but missing or malformed, the run fails naming the blob and stores no
/// package, rather than a package that lost its exceptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evidence_export_applies_the_register_blob_and_refuses_one_it_cannot_read() {
    let fixture = AzureAnchored::new().await;
    append(&fixture.writer(&chain("w-one")).await, 3).await;
    let register = RegisterBlob::new(&fixture, "registers/exceptions.json").await;
    let named = register.named();
    let extra = register.setting();
    // The app's inventory (its local backends' store): two secrets without an owner, so
    // two credential-no-owner findings in vault kv-prod.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = keyturn::adapters::local::store::LocalStore::open(dir.path().join("keyturn.db"))
        .expect("the app's store");
    keyturn::adapters::local::inventory::LocalInventory::new(store)
        .put_credentials(&[credential("db-password"), credential("api-key")])
        .await
        .expect("the inventory is seeded");
    let app = rotator_with(&fixture, dir.path(), extra).await;
    let stored = || async {
        fixture
            .blob_client()
            .list_blobs(fixture.container(), "evidence/")
            .await
            .expect("listed")
    };

    // Named but not there: the run fails, naming the blob, and stores nothing.
    let (status, body) = fire_answer(&app).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.to_string().contains(&named), "{body}");
    assert!(body.to_string().contains("not found"), "{body}");
    assert!(stored().await.is_empty());

    // There: the month's package carries its exceptions.
    register.upload(NO_OWNER_REGISTER).await;
    let ran = fire(&app).await;
    assert_eq!(ran["outcome"]["result"], "stored", "{ran}");
    let bytes = fixture
        .blob_client()
        .get_blob(fixture.container(), PACKAGE)
        .await
        .expect("downloaded");
    let zip = dir.path().join("downloaded.zip");
    std::fs::write(&zip, &bytes).expect("written");
    let findings = crate::evidence::population(&zip, "populations/findings.csv");
    let no_owner: Vec<_> = findings
        .iter()
        .filter(|f| f["rule"] == "credential-no-owner")
        .collect();
    assert_eq!(no_owner.len(), 2, "{findings:?}");
    for finding in no_owner {
        assert_eq!(finding["status"], "excepted", "{finding:?}");
        assert_eq!(finding["exception_id"], "register:1", "{finding:?}");
    }
    let exceptions = crate::evidence::population(&zip, "populations/exceptions.csv");
    assert_eq!(exceptions.len(), 1, "{exceptions:?}");
    assert_verifies_and_tampering_fails(&fixture, &zip).await;
}

/// A malformed register blob fails the run naming the blob and the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_register_blob_fails_the_export_naming_it_and_the_entry() {
    let fixture = AzureAnchored::new().await;
    append(&fixture.writer(&chain("w-one")).await, 3).await;
    let register = RegisterBlob::new(&fixture, "exceptions.json").await;
    register.upload(MALFORMED_REGISTER).await;
    let named = register.named();
    let dir = tempfile::tempdir().expect("tempdir");
    let app = rotator_with(&fixture, dir.path(), register.setting()).await;

    let (status, body) = fire_answer(&app).await;

    assert_eq!(status, 500, "{body}");
    let text = body.to_string();
    assert!(text.contains(&named), "{text}");
    assert!(text.contains("entry 2"), "{text}");
    assert!(text.contains("someday"), "{text}");
    let stored = fixture
        .blob_client()
        .list_blobs(fixture.container(), "evidence/")
        .await
        .expect("listed");
    assert!(stored.is_empty(), "{stored:?}");
}

/// `keyturn compliance` reading a table applies the register blob the export and the
/// timer read, the same way: named but missing or malformed, it refuses to run, naming
/// the blob (and the entry), rather than scoring without the exceptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyturn_compliance_on_a_table_applies_the_register_blob_and_refuses_one_it_cannot_read() {
    let fixture = AzureAnchored::new().await;
    append(&fixture.writer(&chain("w-one")).await, 3).await;
    // Two secrets without an owner: two credential-no-owner findings in vault kv-prod.
    let inventory = inventory_table(&fixture, &["db-password", "api-key"])
        .await
        .to_string();
    let register = RegisterBlob::new(&fixture, "registers/exceptions.json").await;
    let malformed = RegisterBlob::new(&fixture, "exceptions.json").await;
    malformed.upload(MALFORMED_REGISTER).await;
    // The blob is read with the connection string's account key, as the tables are.
    let compliance = |register: &RegisterBlob| {
        let settings: Vec<(String, String)> = fixture
            .settings()
            .into_iter()
            .chain(register.setting())
            .collect();
        let settings: Vec<(&str, &str)> = settings
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let output = crate::helpers::keyturn(&settings)
            .args([
                "compliance",
                "--table",
                &inventory,
                "--format",
                "json",
                "--no-record",
            ])
            .output()
            .expect("keyturn compliance runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (code, stdout, stderr) = compliance(&register);
    assert_eq!(code, Some(2), "missing: {stdout}{stderr}");
    assert!(stderr.contains(&register.named()), "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
    assert!(
        stdout.is_empty(),
        "nothing scored without the register: {stdout}"
    );

    register.upload(NO_OWNER_REGISTER).await;
    let (_, stdout, stderr) = compliance(&register);
    let printed: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("one JSON document ({e}): {stdout}{stderr}");
    });
    assert!(
        printed["exceptions_register"]
            .as_str()
            .is_some_and(|source| source.contains(&register.named())),
        "{printed}"
    );
    let no_owner: Vec<&Value> = printed["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["rule"] == "credential-no-owner")
        .collect();
    assert_eq!(no_owner.len(), 2, "{printed}");
    for finding in no_owner {
        assert_eq!(finding["status"], "excepted", "{finding}");
        assert_eq!(finding["exception"]["entry"], 1, "{finding}");
    }

    let (code, stdout, stderr) = compliance(&malformed);
    assert_eq!(code, Some(2), "malformed: {stdout}{stderr}");
    assert!(stderr.contains(&malformed.named()), "{stderr}");
    assert!(stderr.contains("entry 2"), "{stderr}");
    assert!(stderr.contains("someday"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evidence_export_stores_the_previous_month_once_in_the_checkpoint_container() {
    let fixture = AzureAnchored::new().await;
    append(&fixture.writer(&chain("w-one")).await, 3).await;
    let first_dir = tempfile::tempdir().expect("tempdir");
    let second_dir = tempfile::tempdir().expect("tempdir");
    let first = rotator(&fixture, first_dir.path()).await;
    let second = rotator(&fixture, second_dir.path()).await;

    // Two instances fire at once: one package is stored, the other run stores nothing.
    let (a, b) = tokio::join!(fire(&first), fire(&second));
    let mut results: Vec<&str> = [&a, &b]
        .iter()
        .map(|ran| ran["outcome"]["result"].as_str().expect("a result"))
        .collect();
    results.sort_unstable();
    assert_eq!(
        results.iter().filter(|r| **r == "stored").count(),
        1,
        "{a} {b}"
    );
    assert!(
        results
            .iter()
            .all(|r| ["stored", "already_stored", "stored_by_another_run"].contains(r)),
        "{a} {b}"
    );
    let stored = if a["outcome"]["result"] == "stored" {
        &a
    } else {
        &b
    };
    assert_eq!(stored["month"], MONTH);
    assert_eq!(stored["package"], PACKAGE);

    let client = fixture.blob_client();
    let names = client
        .list_blobs(fixture.container(), "evidence/")
        .await
        .expect("listed");
    assert_eq!(names, [PACKAGE]);

    // A rerun finds it and stores nothing.
    let again = fire(&first).await;
    assert_eq!(again["outcome"]["result"], "already_stored", "{again}");

    // The stored package is the one the run hashed, and it verifies offline.
    let bytes = client
        .get_blob(fixture.container(), PACKAGE)
        .await
        .expect("downloaded");
    assert_eq!(
        stored["outcome"]["sha256"],
        hex::encode(Sha256::digest(&bytes)),
        "{stored}"
    );
    assert_eq!(stored["outcome"]["bytes"], bytes.len());
    let dir = tempfile::tempdir().expect("tempdir");
    let zip = dir.path().join("downloaded.zip");
    std::fs::write(&zip, &bytes).expect("written");
    let (_, manifest) = files(&zip)
        .into_iter()
        .find(|(name, _)| name == "manifest.json")
        .expect("a manifest");
    assert_eq!(
        stored["outcome"]["manifest_sha256"],
        hex::encode(Sha256::digest(&manifest))
    );
    assert_verifies_and_tampering_fails(&fixture, &zip).await;

    // The export is audited with the package's name and its manifest's hash, and the
    // log (whose checkpoints share the container with the package) still verifies.
    let report = fixture
        .verification(None, Permissions::only(["keys/get"]))
        .await
        .expect("the operator reads the log")
        .run()
        .await
        .expect("readable");
    assert!(report.is_intact(), "{report}");
    let store = fixture.store().await;
    let mut exported = Vec::new();
    for chain in &report.chains {
        let reader = store
            .for_chain(&chain.chain)
            .expect("a reader of the chain");
        for stored in reader.read(1, 1000).await.expect("entries") {
            let entry = stored.content.expect("a well-formed entry");
            if entry.record.action.as_str() == "evidence.exported" {
                exported.push(entry.record);
            }
        }
    }
    assert_eq!(exported.len(), 3, "one entry per run");
    let manifest_hash = stored["outcome"]["manifest_sha256"]
        .as_str()
        .expect("a hash")
        .to_owned();
    let succeeded: Vec<_> = exported
        .iter()
        .filter(|r| r.outcome == keyturn::audit::Outcome::Succeeded)
        .collect();
    assert_eq!(succeeded.len(), 1);
    let reason = succeeded[0].reason.as_ref().expect("a reason").as_str();
    assert!(reason.contains(PACKAGE), "{reason}");
    assert!(reason.contains(&manifest_hash), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_larger_than_a_block_is_uploaded_in_blocks_and_never_replaced() {
    let fixture = AzureAnchored::new().await;
    let client = fixture.blob_client();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("large.bin");
    // Two and a half blocks of bytes that differ from block to block.
    let length = UPLOAD_BLOCK_BYTES * 5 / 2;
    let bytes: Vec<u8> = (0..length).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &bytes).expect("written");
    let name = "evidence/2025-03/large.zip";

    let created = client
        .upload_block_blob(fixture.container(), name, &path, "application/zip")
        .await
        .expect("uploaded");
    assert!(created);
    let stored = client
        .get_blob(fixture.container(), name)
        .await
        .expect("downloaded");
    assert_eq!(stored.len(), bytes.len());
    assert!(stored == bytes, "the blocks are committed in order");
    assert!(
        client
            .blob_exists(fixture.container(), name)
            .await
            .expect("read")
    );

    // A second upload to the name, small or large, is refused and changes nothing.
    let other = dir.path().join("other.bin");
    std::fs::write(&other, b"another package").expect("written");
    for path in [&other, &path] {
        let created = client
            .upload_block_blob(fixture.container(), name, path, "application/zip")
            .await
            .expect("answered");
        assert!(!created);
    }
    let stored = client
        .get_blob(fixture.container(), name)
        .await
        .expect("downloaded");
    assert!(stored == bytes, "the first upload's bytes remain");
    assert!(
        !client
            .blob_exists(fixture.container(), "evidence/2025-03/absent.zip")
            .await
            .expect("read")
    );
}
