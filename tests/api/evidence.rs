//! The evidence package as an auditor meets it: exported from a local store whose audit
//! log is anchored, verified offline with the public key alone, and refused, each named,
//! when a byte changes, a file goes or comes, the manifest is edited or the key is wrong.
//! Bad input (a reversed, empty or malformed period, one before the log, an unreadable
//! store, a store failing half-way) leaves no zip behind.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use keyturn::adapters::local::anchor::{
    CHECKPOINT_FILE_NAME, LocalCheckpointFile, LocalSigningKey, PUBLIC_KEY_FILE_NAME,
    SIGNING_KEY_FILE_NAME,
};
use keyturn::adapters::local::audit::LocalAuditStore;
use keyturn::adapters::local::inventory::LocalInventory;
use keyturn::adapters::local::store::LocalStore;
use keyturn::audit::{Actor, Anchor, AuditLog, AuditText, Outcome};
use keyturn::config::{AuditCommandSettings, Environment};
use keyturn::domain::ids::{AppId, DirectoryObjectId, KeyId};
use keyturn::domain::inventory::{
    CredentialFilter, CredentialHandle, CredentialKind, CredentialSource, InventoryCredential,
    InventoryVault, Owner, ScopeFinding, SweepId, SweepSnapshot,
};
use keyturn::evidence::verify::{PackageReport, verify_package};
use keyturn::evidence::{EvidenceError, Period, export};
use keyturn::ports::PortError;
use keyturn::ports::audit::ChainId;
use keyturn::ports::audit::{AuditObject, AuditRecord};
use keyturn::ports::checkpoint::{CheckpointStore, PublicKey};
use keyturn::ports::inventory::{InventoryStore, Page, PageToken};
use keyturn::startup;

mod report_pdf;

pub(crate) fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("a time")
        .with_timezone(&Utc)
}

fn text(value: &str) -> AuditText {
    AuditText::parse(value).expect("audit text")
}

const VAULT: &str = "https://payments.vault.azure.net/";
const APP: &str = "11111111-0000-4000-8000-000000000001";
const OLD_KEY: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const NEW_KEY: &str = "bbbbbbbb-0000-4000-8000-000000000002";
/// A secret name a spreadsheet would run as a formula.
const FORMULA_NAME: &str = "=HYPERLINK(\"http://x.invalid\",\"open\")";

pub(crate) struct Entry {
    at: &'static str,
    actor: Actor,
    action: &'static str,
    outcome: Outcome,
    object: AuditObject,
    reason: Option<&'static str>,
    count: Option<u64>,
}

fn function(name: &str) -> Actor {
    Actor::Function(text(name))
}

fn identity(name: &str) -> Actor {
    Actor::Identity(text(name))
}

fn object(
    secret: &str,
    app: Option<&str>,
    key: Option<&str>,
    version: Option<&str>,
) -> AuditObject {
    AuditObject {
        vault: Some(text(VAULT)),
        secret_name: Some(text(secret)),
        secret_version: version.map(text),
        app_id: app.map(text),
        key_id: key.map(text),
        thumbprint: None,
    }
}

fn entry(at: &'static str, actor: Actor, action: &'static str, outcome: Outcome) -> Entry {
    Entry {
        at,
        actor,
        action,
        outcome,
        object: AuditObject::default(),
        reason: None,
        count: None,
    }
}

/// The log: two entries before November 2026, the month's rotations and reads, one
/// entry after.
pub(crate) fn log() -> Vec<Entry> {
    let worker = || function("RotationWorker");
    vec![
        entry(
            "2026-10-30T10:00:00Z",
            function("ExpirySweep"),
            "sweep.ran",
            Outcome::Succeeded,
        ),
        Entry {
            object: object("db-password", Some(APP), Some(OLD_KEY), Some("v1")),
            reason: Some("replaces version v0"),
            ..entry(
                "2026-10-31T10:00:00Z",
                worker(),
                "secret.rotated",
                Outcome::Succeeded,
            )
        },
        Entry {
            object: object("db-password", Some(APP), Some(NEW_KEY), None),
            reason: Some("valid until 2027-05-01T00:00:00+00:00"),
            ..entry(
                "2026-11-02T10:00:00Z",
                worker(),
                "credential.added",
                Outcome::Succeeded,
            )
        },
        Entry {
            object: object("db-password", Some(APP), Some(NEW_KEY), None),
            reason: Some("accepted 3 times in a row over 60 s, 4 attempt(s)"),
            ..entry(
                "2026-11-02T10:05:00Z",
                worker(),
                "credential.proven",
                Outcome::Succeeded,
            )
        },
        Entry {
            object: object("db-password", Some(APP), Some(NEW_KEY), Some("v2")),
            reason: Some("replaces version v1"),
            ..entry(
                "2026-11-02T10:06:00Z",
                worker(),
                "secret.rotated",
                Outcome::Succeeded,
            )
        },
        Entry {
            object: object("db-password", None, None, Some("v2")),
            ..entry(
                "2026-11-03T08:00:00Z",
                identity("sha256:aaaa"),
                "secret.read",
                Outcome::Succeeded,
            )
        },
        Entry {
            object: object("db-password", None, None, Some("v2")),
            ..entry(
                "2026-11-03T09:00:00Z",
                identity("sha256:aaaa"),
                "secret.read",
                Outcome::Succeeded,
            )
        },
        Entry {
            object: object("db-password", None, None, None),
            reason: Some("not allowed by the access policy"),
            count: Some(41),
            ..entry(
                "2026-11-04T08:00:00Z",
                identity("sha256:bbbb"),
                "secret.read",
                Outcome::Denied,
            )
        },
        Entry {
            object: object(FORMULA_NAME, None, None, Some("v7")),
            reason: Some("job 42: Key Vault refused: Forbidden"),
            ..entry(
                "2026-11-05T08:00:00Z",
                worker(),
                "rotation.failed",
                Outcome::Failed,
            )
        },
        entry(
            "2026-12-02T10:00:00Z",
            function("ExpirySweep"),
            "sweep.ran",
            Outcome::Succeeded,
        ),
    ]
}

pub(crate) fn credential(n: u8, name: &str, owner: Option<&str>) -> InventoryCredential {
    InventoryCredential {
        source: CredentialSource::Application {
            object_id: DirectoryObjectId::parse(&format!(
                "00000000-0000-4000-8000-0000000000{n:02x}"
            ))
            .expect("object id"),
            app_id: AppId::parse(&format!("22222222-0000-4000-8000-0000000000{n:02x}"))
                .expect("app id"),
            display_name: Some(format!("app {n}")),
        },
        kind: CredentialKind::PasswordCredential,
        name: name.to_owned(),
        handle: CredentialHandle::DirectoryCredential {
            key_id: KeyId::parse(&format!("33333333-0000-4000-8000-0000000000{n:02x}"))
                .expect("key id"),
        },
        enabled: true,
        created: None,
        updated: None,
        not_before: Some(at("2026-01-01T00:00:00Z")),
        expires: Some(at("2026-11-20T00:00:00Z")),
        content_type: None,
        tags: BTreeMap::new(),
        certificate: None,
        key: None,
        directory: None,
        owners: owner
            .map(|name| Owner {
                object_id: None,
                display_name: Some(name.to_owned()),
                user_principal_name: None,
                mail: None,
            })
            .into_iter()
            .collect(),
        managed: false,
        scanned_at: at("2026-11-29T00:00:00Z"),
        sweep: SweepId::parse("s1").expect("sweep id"),
    }
}

/// A data directory as `keyturn dev` leaves it: the store, its anchored audit log
/// (checkpoint file and signing key beside it) and an inventory.
pub(crate) struct Store {
    _dir: tempfile::TempDir,
    data: PathBuf,
}

impl Store {
    fn db(&self) -> PathBuf {
        self.data.join("keyturn.db")
    }

    fn beside(&self, name: &str) -> PathBuf {
        self.data.join(name)
    }

    fn public_key_file(&self) -> PathBuf {
        self.beside(PUBLIC_KEY_FILE_NAME)
    }

    pub(crate) fn out(&self, name: &str) -> PathBuf {
        self._dir.path().join(name)
    }
}

fn record_of(entry: Entry) -> AuditRecord {
    let mut record = AuditRecord::new(at(entry.at), entry.actor, text(entry.action), entry.outcome);
    record.object = entry.object;
    record.reason = entry.reason.map(text);
    record.count = entry.count;
    record.invocation_id = Some(text("inv-1"));
    record
}

/// A store as [`store_with`] makes it without credentials, its entries' batches (one
/// entry each) checkpointed `sizes` at a time: checkpoints of several heads, as the
/// writer makes them under load, signed with the store's key.
async fn store_checkpointed_in_groups(entries: Vec<Entry>, sizes: &[usize]) -> Store {
    let store = store_with(Vec::new(), Vec::new()).await;
    let local = LocalStore::open(store.db()).expect("the store opens");
    let log = AuditLog::new(Arc::new(LocalAuditStore::new(local)));
    let mut stored = Vec::new();
    for entry in entries {
        stored.push(log.append(record_of(entry)).await.expect("appended"));
    }
    let key = LocalSigningKey::load_or_create(&store.beside(SIGNING_KEY_FILE_NAME)).expect("key");
    let signed =
        crate::audit_anchor::signed_in_groups(&key, &ChainId::default_chain(), &stored, sizes)
            .await;
    LocalCheckpointFile::new(store.beside(CHECKPOINT_FILE_NAME))
        .append_all(&signed)
        .await
        .expect("anchored");
    store
}

pub(crate) async fn store_with(
    entries: Vec<Entry>,
    credentials: Vec<InventoryCredential>,
) -> Store {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    let store = Store { _dir: dir, data };
    let local = LocalStore::open(store.db()).expect("the store opens");
    let key = LocalSigningKey::load_or_create(&store.beside(SIGNING_KEY_FILE_NAME)).expect("key");
    let anchor = Anchor {
        checkpoints: Arc::new(LocalCheckpointFile::new(store.beside(CHECKPOINT_FILE_NAME))),
        signer: Arc::new(key),
    };
    let log = AuditLog::start_anchored(Arc::new(LocalAuditStore::new(local.clone())), Some(anchor))
        .expect("the writer starts");
    for entry in entries {
        log.append(record_of(entry)).await.expect("appended");
        // Each append its own batch with its own checkpoint (a batch is answered before
        // its checkpoint is written), so every position is a checkpoint's.
        log.flush().await.expect("the batch anchored");
    }
    LocalInventory::new(local)
        .put_credentials(&credentials)
        .await
        .expect("inventory written");
    store
}

async fn november() -> Store {
    store_with(
        log(),
        vec![
            credential(1, "ordinary secret", Some("Doe, Jane")),
            credential(2, FORMULA_NAME, None),
            credential(3, "-2+3", Some("@ops")),
        ],
    )
    .await
}

/// Exports November (its first to its last day) from `store` into `evidence.zip` beside
/// it.
async fn export_november(store: &Store) -> PathBuf {
    let out = store.out("evidence.zip");
    export_from(store, &period("2026-11-01", "2026-11-30"), &out)
        .await
        .expect("exported");
    out
}

pub(crate) fn period(from: &str, to: &str) -> Period {
    Period::parse(from, to).expect("a period")
}

pub(crate) async fn export_from(
    store: &Store,
    period: &Period,
    out: &Path,
) -> Result<(), EvidenceError> {
    export_spilling_after(store, period, out, keyturn::compliance::SPILL_AFTER).await
}

/// As [`export_from`], holding at most `spill_after` scope tallies and applications in
/// memory while compliance is evaluated.
async fn export_spilling_after(
    store: &Store,
    period: &Period,
    out: &Path,
    spill_after: usize,
) -> Result<(), EvidenceError> {
    let settings = AuditCommandSettings::local(&store.data);
    let env = Environment::from_pairs(std::iter::empty::<(&str, &str)>());
    let sources = startup::evidence_sources(&settings, &[], None, &env)
        .await
        .expect("the sources open");
    let mut read = sources.sources();
    if let Some(compliance) = read.compliance.as_mut() {
        compliance.spill_after = spill_after;
    }
    export(read, period, out, at("2026-12-06T00:00:00Z"))
        .await
        .map(|_| ())
}

fn key_of(store: &Store) -> PublicKey {
    startup::read_public_key_file(&store.public_key_file())
        .expect("the public key file")
        .remove(0)
        .key
}

fn verified(zip: &Path, key: &PublicKey) -> PackageReport {
    verify_package(zip, vec![key.clone()]).expect("the package can be read")
}

/// Every file of a zip, in order.
pub(crate) fn files(zip: &Path) -> Vec<(String, Vec<u8>)> {
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

pub(crate) fn file(zip: &Path, name: &str) -> String {
    let (_, bytes) = files(zip)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} is in the package"));
    String::from_utf8(bytes).expect("utf-8")
}

fn write_zip(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).expect("create"));
    for (name, bytes) in files {
        zip.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .expect("start");
        zip.write_all(bytes).expect("write");
    }
    zip.finish().expect("finish");
}

/// RFC 4180 rows, for reading the populations back.
fn csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    rows
}

/// The rows of a population as maps from column to cell.
pub(crate) fn population(zip: &Path, name: &str) -> Vec<BTreeMap<String, String>> {
    let rows = csv(&file(zip, name));
    let (header, rows) = rows.split_first().expect("a header row");
    rows.iter()
        .map(|row| {
            assert_eq!(row.len(), header.len(), "{name}: {row:?}");
            header.iter().cloned().zip(row.iter().cloned()).collect()
        })
        .collect()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name != "data")
        .collect()
}

#[tokio::test]
async fn an_extract_ending_inside_a_checkpoint_of_several_batches_runs_to_its_last_head() {
    use keyturn::evidence::extract::verify_extract;
    // Ten entries, checkpointed four, four and two at a time: November's last entry
    // (position 9) is in the third checkpoint, whose last head is position 10.
    let store = store_checkpointed_in_groups(log(), &[4, 4, 2]).await;
    let out = export_november(&store).await;
    let key = key_of(&store);

    let report = verified(&out, &key);
    assert!(report.intact, "{:?}", report.problems);
    let audit = report.audit_extract.expect("the audit extract is checked");
    assert_eq!((audit.chains[0].first, audit.chains[0].last), (2, 10));
    assert_eq!(audit.chains[0].anchored_to, 10);
    assert_eq!(audit.chains[0].unanchored, 0);
    assert_eq!(
        audit.checkpoints_checked, 3,
        "every checkpoint of the range"
    );

    // The last entry cut off: the checkpoint holding it says entries were removed.
    let entries = file(&out, "audit/entries.jsonl");
    let checkpoints = file(&out, "audit/checkpoints.jsonl");
    let lines: Vec<&str> = entries.lines().collect();
    let cut: String = lines[..lines.len() - 1]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let report = verify_extract(
        &mut cut.as_bytes(),
        &mut checkpoints.as_bytes(),
        std::slice::from_ref(&key),
    )
    .expect("readable");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("ends at position 9")
                && p.contains("entries were removed from the end")),
        "{:?}",
        report.problems
    );

    // One head changed inside a checkpoint: its signature no longer verifies.
    let start = checkpoints
        .find("[6,\"")
        .expect("head 6 is in a checkpoint")
        + 4;
    let mut changed = checkpoints.clone();
    changed.replace_range(start..start + 64, &"0".repeat(64));
    assert_ne!(changed, checkpoints);
    let report = verify_extract(
        &mut entries.as_bytes(),
        &mut changed.as_bytes(),
        std::slice::from_ref(&key),
    )
    .expect("readable");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("at position 8 does not verify")),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn a_package_verifies_offline_with_the_public_key_alone() {
    let store = november().await;
    let out = export_november(&store).await;

    let report = verified(&out, &key_of(&store));
    assert!(report.intact, "{:?}", report.problems);
    assert_eq!(report.manifest_signature, "valid");
    let audit = report.audit_extract.expect("the audit extract is checked");
    // The link before the period (position 2), the period's seven entries, and the
    // period's end is anchored at position 9 (each append here is its own batch).
    assert_eq!(audit.chains.len(), 1);
    assert_eq!((audit.chains[0].first, audit.chains[0].last), (2, 9));
    assert_eq!(audit.chains[0].anchored_to, 9);
    assert_eq!(audit.entries_checked, 8);
    assert!(audit.checkpoints_checked >= 8);
    assert!(
        report.files.iter().all(|f| f.status == "ok"),
        "{:?}",
        report.files
    );
}

#[tokio::test]
async fn the_populations_count_what_the_store_holds_and_defuse_formulas() {
    let store = november().await;
    let out = export_november(&store).await;

    let inventory = population(&out, "populations/inventory.csv");
    assert_eq!(inventory.len(), 3);
    let names: Vec<&str> = inventory.iter().map(|r| r["name"].as_str()).collect();
    assert!(
        names.contains(&"'=HYPERLINK(\"http://x.invalid\",\"open\")"),
        "{names:?}"
    );
    assert!(names.contains(&"'-2+3"), "{names:?}");
    assert!(inventory.iter().any(|r| r["owners"] == "Doe, Jane"));
    assert!(inventory.iter().any(|r| r["owners"] == "'@ops"));
    // Expiring 2026-11-20, counted from the period's end (2026-12-01).
    assert!(
        inventory
            .iter()
            .all(|r| r["days_left_at_period_end"] == "-11")
    );

    let rotations = population(&out, "populations/rotations.csv");
    assert_eq!(rotations.len(), 2, "{rotations:?}");
    let rotated = &rotations[0];
    assert_eq!(rotated["result"], "rotated");
    assert_eq!(rotated["object"], "db-password");
    assert_eq!(rotated["old_key_id"], OLD_KEY);
    assert_eq!(rotated["new_key_id"], NEW_KEY);
    assert_eq!(rotated["old_version"], "v1");
    assert_eq!(rotated["new_version"], "v2");
    assert!(
        rotated["proof"].starts_with("proven: accepted 3 times"),
        "{rotated:?}"
    );
    assert_eq!(rotated["proven_at"], "2026-11-02T10:05:00Z");
    assert_eq!(rotated["started_at"], "2026-11-02T10:00:00Z");
    assert_eq!(rotated["completed_at"], "2026-11-02T10:06:00Z");
    let failed = &rotations[1];
    assert_eq!(failed["result"], "failed");
    assert_eq!(failed["object"], format!("'{FORMULA_NAME}"));
    assert_eq!(failed["detail"], "job 42: Key Vault refused: Forbidden");

    let reads = population(&out, "populations/secret-reads.csv");
    assert_eq!(reads.len(), 2, "{reads:?}");
    let granted = reads
        .iter()
        .find(|r| r["identity"] == "sha256:aaaa")
        .expect("aaaa");
    assert_eq!(
        (granted["granted"].as_str(), granted["refused"].as_str()),
        ("2", "0")
    );
    let refused = reads
        .iter()
        .find(|r| r["identity"] == "sha256:bbbb")
        .expect("bbbb");
    // One folded entry stands for 41 refusals.
    assert_eq!(
        (refused["refused"].as_str(), refused["entries"].as_str()),
        ("41", "1")
    );

    // The manifest's row counts are the files' rows.
    let manifest: serde_json::Value =
        serde_json::from_str(&file(&out, "manifest.json")).expect("manifest JSON");
    let rows = |path: &str| {
        manifest["files"]
            .as_array()
            .expect("files")
            .iter()
            .find(|f| f["path"] == path)
            .and_then(|f| f["rows"].as_u64())
    };
    assert_eq!(rows("populations/inventory.csv"), Some(3));
    assert_eq!(rows("populations/rotations.csv"), Some(2));
    assert_eq!(rows("populations/secret-reads.csv"), Some(2));
    assert_eq!(rows("audit/entries.jsonl"), Some(8));
    assert_eq!(manifest["period"]["from"], "2026-11-01T00:00:00Z");
    assert_eq!(manifest["period"]["to"], "2026-12-01T00:00:00Z");
}

#[tokio::test]
async fn the_summary_counts_what_the_populations_hold() {
    let store = november().await;
    let out = export_november(&store).await;

    let summary: serde_json::Value =
        serde_json::from_str(&file(&out, "summary.json")).expect("summary JSON");
    let totals = &summary["totals"];
    let inventory = population(&out, "populations/inventory.csv");
    assert_eq!(totals["credentials"], inventory.len() as u64);
    assert_eq!(
        totals["expired"],
        inventory
            .iter()
            .filter(|r| r["days_left_at_period_end"].starts_with('-'))
            .count() as u64
    );
    assert_eq!(
        totals["unmanaged"],
        inventory.iter().filter(|r| r["managed"] == "false").count() as u64
    );
    let rotations = population(&out, "populations/rotations.csv");
    let failed = rotations.iter().filter(|r| r["result"] == "failed").count() as u64;
    assert_eq!(totals["rotations_failed"], failed);
    assert_eq!(
        totals["rotations_succeeded"],
        rotations.len() as u64 - failed
    );
    let reads = population(&out, "populations/secret-reads.csv");
    let sum = |column: &str| -> u64 {
        reads
            .iter()
            .map(|r| r[column].parse::<u64>().expect("a count"))
            .sum()
    };
    assert_eq!(totals["reads_granted"], sum("granted"));
    assert_eq!(totals["reads_refused"], sum("refused"));
    // Rotations per week add up to the period's rotations.
    let buckets = summary["rotations"]["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 5, "November is four weeks and two days");
    let bucketed: u64 = buckets
        .iter()
        .map(|b| b["succeeded"].as_u64().unwrap_or(0) + b["failed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(bucketed, rotations.len() as u64);
    // Compliance ran once for the package: every framework is scored, the expired
    // credentials are open findings, and their owners are listed.
    assert_eq!(summary["compliance_evaluated"], true);
    assert_eq!(summary["frameworks"].as_array().map(Vec::len), Some(6));
    assert!(
        totals["findings_open"].as_u64().is_some_and(|n| n >= 3),
        "{totals}"
    );
    let owners: Vec<&str> = summary["top_owners"]
        .as_array()
        .expect("owners")
        .iter()
        .filter_map(|o| o["owner"].as_str())
        .collect();
    assert!(owners.contains(&"Doe, Jane"), "{owners:?}");
    assert_eq!(summary["audit_intact"], true);
}

/// One convention for the period in every file: `from` included and `to` excluded as
/// instants (the manifest, summary.json), the days named with the last one included
/// (both reports), and the period's end, which expiry is counted from, named as the end
/// of that last day, never as the day after it.
#[tokio::test]
async fn the_period_is_named_the_same_way_in_every_file() {
    let store = november().await;
    let out = export_november(&store).await;

    let manifest: serde_json::Value =
        serde_json::from_str(&file(&out, "manifest.json")).expect("manifest JSON");
    assert_eq!(
        manifest["period"],
        serde_json::json!({
            "from": "2026-11-01T00:00:00Z",
            "to": "2026-12-01T00:00:00Z",
            "last_day": "2026-11-30",
        })
    );
    let summary: serde_json::Value =
        serde_json::from_str(&file(&out, "summary.json")).expect("summary JSON");
    assert_eq!(summary["period_from"], "2026-11-01T00:00:00Z");
    assert_eq!(summary["period_to"], "2026-12-01T00:00:00Z");
    assert_eq!(summary["period_last_day"], "2026-11-30");
    assert_eq!(summary["expiry"]["reference"], "2026-12-01T00:00:00Z");

    let html = file(&out, "report.html");
    assert!(
        html.contains("<dd>2026-11-01 to 2026-11-30 (UTC, both days included)</dd>"),
        "the header names the days"
    );
    assert!(
        html.contains("from the period's end (the end of 2026-11-30 (UTC))"),
        "the expiry timeline counts from the end of the last day"
    );
    assert!(
        !html.contains("end (2026-12-01") && !html.contains("before 2026-12-01"),
        "the day after the period is never named as its end"
    );
    let readme = file(&out, "README.txt");
    assert!(readme.contains("last_day"), "{readme}");
}

#[tokio::test]
async fn a_generated_secrets_rotation_started_when_its_worker_received_the_job() {
    let worker = || function("RotationWorker");
    let store = store_with(
        vec![
            Entry {
                reason: Some("job j-7 delivery 1"),
                ..entry(
                    "2026-11-07T09:00:00Z",
                    worker(),
                    "job.received",
                    Outcome::Succeeded,
                )
            },
            Entry {
                object: object("generated-token", None, None, Some("v9")),
                reason: Some("32 alphanumeric characters; replaces version v8"),
                ..entry(
                    "2026-11-07T09:00:02Z",
                    worker(),
                    "secret.rotated",
                    Outcome::Succeeded,
                )
            },
        ],
        Vec::new(),
    )
    .await;
    let out = export_november(&store).await;

    let rotations = population(&out, "populations/rotations.csv");
    assert_eq!(rotations.len(), 1, "{rotations:?}");
    assert_eq!(rotations[0]["object"], "generated-token");
    assert_eq!(rotations[0]["started_at"], "2026-11-07T09:00:00Z");
    assert_eq!(rotations[0]["completed_at"], "2026-11-07T09:00:02Z");
    assert_eq!(rotations[0]["old_version"], "v8");
}

/// An exceptions register for November's store: credential 2 (no owner) excepted until
/// 2027, credential 3's expired-and-enabled finding covered by an exception that lapsed in
/// October.
const REGISTER: &str = r#"{ "exceptions": [
    { "rule": "credential-no-owner", "subject": "application:22222222-0000-4000-8000-000000000002",
      "owner": "ada@contoso.com", "reason": "=cmd|' /C calc'!A0 legacy app, owner being found",
      "expires": "2027-03-31" },
    { "rule": "credential-expired-enabled", "subject": "application:22222222-0000-4000-8000-000000000003",
      "owner": "ops", "reason": "removal scheduled", "expires": "2026-10-15" } ] }"#;

/// Rows of a CSV file of the package as a spreadsheet numbers them: row 1 the header.
fn spreadsheet(zip: &Path, name: &str) -> Vec<Vec<String>> {
    csv(&file(zip, name))
}

#[tokio::test]
async fn findings_exceptions_and_the_control_matrix_match_the_store_and_point_at_real_rows() {
    use keyturn::compliance::{
        AuditInput, Catalogue, Evaluation, Finding, REGISTER_FILE_NAME, Register, Status,
        Thresholds,
    };
    let store = november().await;
    std::fs::write(store.beside(REGISTER_FILE_NAME), REGISTER).expect("register written");
    let out = export_november(&store).await;

    // The store's findings, counted by the engine itself as of the period's end, over
    // the period's rotations.
    let catalogue = Catalogue::builtin();
    let register = Register::load(&store.beside(REGISTER_FILE_NAME), &catalogue).expect("register");
    let thresholds = Thresholds {
        audit_period: chrono::TimeDelta::days(30),
        ..Thresholds::default()
    };
    let settings = AuditCommandSettings::local(&store.data);
    let env = Environment::from_pairs(std::iter::empty::<(&str, &str)>());
    let sources = startup::evidence_sources(&settings, &[], None, &env)
        .await
        .expect("the sources open");
    let log_report = keyturn::audit::verify_log(
        sources.audit.as_ref(),
        Some(sources.checkpoints.as_ref()),
        Some(sources.keys.as_ref()),
    )
    .await
    .expect("verified");
    let mut expected: Vec<(String, Status)> = Vec::new();
    let mut sink = |finding: &Finding| {
        expected.push((finding.rule.clone(), finding.status));
        Ok(())
    };
    Evaluation {
        catalogue: &catalogue,
        thresholds: &thresholds,
        register: &register,
        framework: None,
        now: at("2026-12-01T00:00:00Z"),
        spill_after: keyturn::compliance::SPILL_AFTER,
    }
    .run(
        &LocalInventory::new(LocalStore::open(store.db()).expect("store")),
        Some(AuditInput {
            store: sources.audit.as_ref(),
            verification: Ok(log_report),
        }),
        &mut sink,
    )
    .await
    .expect("evaluated");

    let findings = population(&out, "populations/findings.csv");
    assert_eq!(findings.len(), expected.len());
    for status in [Status::Open, Status::Excepted] {
        let word = if status == Status::Open {
            "open"
        } else {
            "excepted"
        };
        assert_eq!(
            findings.iter().filter(|f| f["status"] == word).count(),
            expected.iter().filter(|(_, s)| *s == status).count(),
            "{word}"
        );
    }
    let excepted = findings
        .iter()
        .find(|f| f["rule"] == "credential-no-owner" && f["status"] == "excepted")
        .expect("credential 2's finding is excepted");
    assert_eq!(excepted["exception_id"], "register:1");
    assert_eq!(excepted["exception_lapsed"], "false");
    let lapsed = findings
        .iter()
        .find(|f| f["rule"] == "credential-expired-enabled" && f["exception_id"] == "register:2")
        .expect("credential 3's finding names the lapsed exception");
    assert_eq!(lapsed["status"], "open");
    assert_eq!(lapsed["exception_lapsed"], "true");
    assert!(findings.iter().any(|f| f["rule"] == "rotation-failed"));
    // Findings in several frameworks.
    let frameworks: std::collections::BTreeSet<&str> = findings
        .iter()
        .flat_map(|f| f["controls"].split(';'))
        .filter_map(|c| c.split(':').next())
        .collect();
    assert!(frameworks.len() >= 4, "{frameworks:?}");

    let exceptions = population(&out, "populations/exceptions.csv");
    assert_eq!(exceptions.len(), register.entries().len());
    assert_eq!(exceptions[0]["id"], "register:1");
    assert_eq!(exceptions[0]["expired"], "false");
    assert_eq!(exceptions[0]["findings_excepted"], "1");
    assert!(
        exceptions[0]["reason"].starts_with("'=cmd"),
        "{:?}",
        exceptions[0]
    );
    assert_eq!(exceptions[1]["expired"], "true");
    assert_eq!(exceptions[1]["findings_lapsed"], "1");

    // The matrix: one row per control of the catalogue, each reference a real row.
    let matrix = population(&out, "control-matrix.csv");
    let controls: usize = catalogue
        .frameworks()
        .iter()
        .map(|f| f.controls.len())
        .sum();
    assert_eq!(matrix.len(), controls);
    let names: Vec<String> = files(&out).into_iter().map(|(n, _)| n).collect();
    let mut referenced_findings = 0;
    for row in &matrix {
        let rules: Vec<&str> = row["rules"].split(';').collect();
        let pair = format!("{}:{}", row["framework"], row["control"]);
        let failed: u64 = row["failed"].parse().expect("failed");
        let excepted: u64 = row["excepted"].parse().expect("excepted");
        let expected_result = match (row["checks"].as_str(), failed, excepted) {
            ("0", _, _) => "not_assessed",
            (_, 1.., _) => "fail",
            (_, 0, 1..) => "excepted",
            _ => "pass",
        };
        assert_eq!(row["result"], expected_result, "{row:?}");
        let mut finding_rows = 0u64;
        for item in row["evidence"].split("; ") {
            let (path, spans) = match item.split_once(" rows ") {
                Some((path, spans)) => (path, Some(spans)),
                None => (item, None),
            };
            assert!(
                names.iter().any(|n| n == path),
                "{path} is not in the package"
            );
            let Some(spans) = spans else { continue };
            let table = spreadsheet(&out, path);
            for span in spans.split(", ") {
                let (first, last) = span.split_once('-').unwrap_or((span, span));
                let (first, last): (usize, usize) =
                    (first.parse().expect("row"), last.parse().expect("row"));
                assert!(first >= 2 && first <= last, "{item}");
                assert!(last <= table.len(), "{path} has no row {last}: {item}");
                if path == "populations/findings.csv" {
                    let header = &table[0];
                    let column = |name: &str| header.iter().position(|h| h == name).expect(name);
                    for number in first..=last {
                        let finding = &table[number - 1];
                        assert!(
                            rules.contains(&finding[column("rule")].as_str()),
                            "row {number} of {path} is {}, not one of {rules:?}",
                            finding[column("rule")]
                        );
                        assert!(
                            finding[column("controls")].split(';').any(|c| c == pair),
                            "row {number} does not count for {pair}"
                        );
                        finding_rows += 1;
                    }
                }
            }
        }
        // Every failed or excepted check of the control has its finding row.
        assert_eq!(finding_rows, failed + excepted, "{row:?}");
        referenced_findings += finding_rows;
    }
    assert!(referenced_findings > 0);
    assert!(
        matrix
            .iter()
            .any(|r| r["result"] == "excepted" || r["result"] == "fail")
    );

    // The manifest counts every CSV's rows.
    let manifest: serde_json::Value =
        serde_json::from_str(&file(&out, "manifest.json")).expect("manifest JSON");
    for entry in manifest["files"].as_array().expect("files") {
        let path = entry["path"].as_str().expect("path");
        if path.ends_with(".csv") {
            assert_eq!(
                entry["rows"].as_u64(),
                Some(population(&out, path).len() as u64),
                "{path}"
            );
        }
    }
    assert!(verified(&out, &key_of(&store)).intact);
}

/// Exceptions objects' tags declare reach the package as the engine reads them (never
/// collected): each in `exceptions.csv` with the findings it excepts or covered after
/// lapsing, and tags that make no exception named with why, their findings open.
#[tokio::test]
async fn a_package_spilling_its_scope_tallies_holds_the_same_files_as_one_kept_in_memory() {
    // 30 applications, 7 owners and some without: past a bound of 2 in every scope.
    let credentials: Vec<InventoryCredential> = (0..30u8)
        .map(|n| {
            let owner = format!("owner {}", n % 7);
            credential(
                n,
                &format!("secret {n}"),
                (n % 5 != 0).then_some(owner.as_str()),
            )
        })
        .collect();
    let store = store_with(log(), credentials).await;
    let november = period("2026-11-01", "2026-11-30");
    let held = store.out("held.zip");
    let spilled = store.out("spilled.zip");

    export_from(&store, &november, &held)
        .await
        .expect("exported in memory");
    export_spilling_after(&store, &november, &spilled, 2)
        .await
        .expect("exported spilling");

    let summary: serde_json::Value =
        serde_json::from_str(&file(&held, "summary.json")).expect("summary");
    assert_eq!(
        summary["scope"]["applications"], 31,
        "30 and the one the log's rotations name: {summary}"
    );
    assert_eq!(
        summary["top_owners"].as_array().map(Vec::len),
        Some(8),
        "7 owners and (no owner): {summary}"
    );
    // The signature may differ (a signer may be randomised); everything it signs may not.
    let signed = |zip: &Path| -> Vec<(String, Vec<u8>)> {
        files(zip)
            .into_iter()
            .filter(|(name, _)| name != "manifest.sig")
            .collect()
    };
    let (held, spilled) = (signed(&held), signed(&spilled));
    assert_eq!(
        held.iter().map(|(name, _)| name).collect::<Vec<_>>(),
        spilled.iter().map(|(name, _)| name).collect::<Vec<_>>()
    );
    for ((name, held), (_, spilled)) in held.iter().zip(&spilled) {
        assert!(
            held == spilled,
            "{name} differs when the tallies are spilled"
        );
    }
}

#[tokio::test]
async fn exceptions_declared_by_tags_are_listed_with_their_counts_and_bad_tags_named() {
    use keyturn::compliance::{TAG_EXPIRES, TAG_OWNER, TAG_REASON, TAG_RULE};
    let tagged = |n: u8, name: &str, owner: Option<&str>, tags: &[(&str, &str)]| {
        let mut credential = credential(n, name, owner);
        credential.tags = tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        credential
    };
    let in_force = tagged(
        2,
        "no owner yet",
        None,
        &[
            (TAG_RULE, "credential-no-owner, credential-expired-enabled"),
            (TAG_REASON, "the owning team is being named"),
            (TAG_OWNER, "ops@contoso.example"),
            (TAG_EXPIRES, "2027-01-01"),
        ],
    );
    let lapsed = tagged(
        3,
        "lapsed",
        Some("Doe, Jane"),
        &[
            (TAG_RULE, "credential-expired-enabled"),
            (TAG_REASON, "removal scheduled"),
            (TAG_OWNER, "ops@contoso.example"),
            (TAG_EXPIRES, "2026-11-25"),
        ],
    );
    let mistyped = tagged(
        4,
        "mistyped",
        Some("Doe, Jane"),
        &[(TAG_RULE, "credential-expired-enabled")],
    );
    let ids = [in_force.id(), lapsed.id(), mistyped.id()].map(|id| id.to_string());
    let store = store_with(
        log(),
        vec![
            credential(1, "ordinary secret", Some("Doe, Jane")),
            in_force,
            lapsed,
            mistyped,
        ],
    )
    .await;
    let out = export_november(&store).await;

    let findings = population(&out, "populations/findings.csv");
    let of = |id: &str, rule: &str| {
        findings
            .iter()
            .find(|f| f["record_id"] == id && f["rule"] == rule)
            .unwrap_or_else(|| panic!("a {rule} finding on {id}: {findings:?}"))
    };
    for rule in ["credential-no-owner", "credential-expired-enabled"] {
        let finding = of(&ids[0], rule);
        assert_eq!(finding["status"], "excepted", "{finding:?}");
        assert_eq!(finding["exception_id"], format!("tag:{}:{rule}", ids[0]));
    }
    let finding = of(&ids[1], "credential-expired-enabled");
    assert_eq!(finding["status"], "open");
    assert_eq!(finding["exception_lapsed"], "true");
    let finding = of(&ids[2], "credential-expired-enabled");
    assert_eq!(finding["status"], "open");
    assert_eq!(finding["exception_id"], "");

    let exceptions = population(&out, "populations/exceptions.csv");
    let row = |id: String| {
        exceptions
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {exceptions:?}"))
    };
    for rule in ["credential-no-owner", "credential-expired-enabled"] {
        let declared = row(format!("tag:{}:{rule}", ids[0]));
        assert_eq!(declared["source"], "tags");
        assert_eq!(declared["declared_on"], "tags");
        assert_eq!(declared["expired"], "false");
        assert_eq!(declared["findings_excepted"], "1", "{declared:?}");
        assert_eq!(declared["findings_lapsed"], "0");
    }
    let expired = row(format!("tag:{}:credential-expired-enabled", ids[1]));
    assert_eq!(expired["expired"], "true");
    assert_eq!(expired["findings_excepted"], "0");
    assert_eq!(expired["findings_lapsed"], "1", "{expired:?}");
    let refused = row(format!("tag:{}", ids[2]));
    assert!(
        refused["problem"].contains(TAG_REASON),
        "the missing tag is named: {refused:?}"
    );
    assert_eq!(exceptions.len(), 4, "{exceptions:?}");
    let summary: serde_json::Value =
        serde_json::from_str(&file(&out, "summary.json")).expect("summary JSON");
    assert_eq!(summary["totals"]["findings_excepted"], 2);
}

#[tokio::test]
async fn a_malformed_exceptions_register_is_named_with_its_entry_and_nothing_is_written() {
    use keyturn::compliance::REGISTER_FILE_NAME;
    let store = november().await;
    let register = store.beside(REGISTER_FILE_NAME);
    std::fs::write(
        &register,
        r#"{ "exceptions": [
            { "rule": "rotation-failed", "subject": "*", "owner": "a", "reason": "r", "expires": "2030-01-01" },
            { "rule": "rotation-failed", "subject": "*", "owner": "a", "reason": "r", "expires": "someday" } ] }"#,
    )
    .expect("written");
    let settings = AuditCommandSettings::local(&store.data);
    let env = Environment::from_pairs(std::iter::empty::<(&str, &str)>());
    let error = startup::evidence_sources(&settings, &[], None, &env)
        .await
        .expect_err("refused");
    let message = error.to_string();
    assert!(
        message.contains(&register.display().to_string()),
        "{message}"
    );
    assert!(message.contains("entry 2"), "{message}");
    assert!(message.contains("someday"), "{message}");

    // Through the command: exit 2, the file and entry named, no zip and no partial file.
    let out = store.out("evidence.zip");
    let output = run(
        &[
            "evidence",
            "export",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-30",
            "--out",
            out.to_str().expect("utf-8"),
        ],
        Some(&store.data),
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("entry 2"), "{}", stderr(&output));
    assert!(
        leftovers(store._dir.path()).is_empty(),
        "{:?}",
        leftovers(store._dir.path())
    );
}

#[tokio::test]
async fn the_alerts_the_ledger_confirmed_in_the_period_are_listed_and_no_claim() {
    use keyturn::adapters::local::alert_ledger::LocalAlertLedger;
    use keyturn::ports::alert_ledger::{AlertLedger, Claim, LedgerEntry, LedgerKey};
    let store = november().await;
    let ledger = LocalAlertLedger::new(LocalStore::open(store.db()).expect("store"));
    let sent = |subject: &str, threshold: Option<u32>, sent_at: &str| LedgerEntry {
        key: LedgerKey::of(&[subject, &format!("{threshold:?}"), sent_at]),
        subject: subject.to_owned(),
        route: "=ops".to_owned(),
        threshold,
        sent_at: at(sent_at),
    };
    for entry in [
        sent("credential-1", Some(14), "2026-11-06T07:00:00Z"),
        sent("credential-1", Some(7), "2026-11-13T07:00:00Z"),
        sent("digest", None, "2026-11-09T08:00:00Z"),
        sent("credential-2", Some(30), "2026-10-31T07:00:00Z"),
        sent("credential-2", Some(1), "2026-12-01T00:00:00Z"),
    ] {
        let Claim::Made { token, .. } = ledger
            .claim(&entry, chrono::TimeDelta::minutes(10))
            .await
            .expect("claimed")
        else {
            panic!("the claim is made");
        };
        ledger.confirm(&entry, &token).await.expect("confirmed");
    }
    // A claim in the period never confirmed (its sender stopped): not a delivery.
    let claimed = sent("credential-3", Some(7), "2026-11-20T07:00:00Z");
    assert!(matches!(
        ledger
            .claim(&claimed, chrono::TimeDelta::minutes(10))
            .await
            .expect("claimed"),
        Claim::Made { .. }
    ));
    let out = export_november(&store).await;

    // Counted in the store itself.
    let connection = rusqlite::Connection::open(store.db()).expect("sqlite");
    let in_store: u64 = connection
        .query_row(
            "SELECT COUNT(*) FROM alert_ledger WHERE sent_at >= ?1 AND sent_at < ?2 AND state = 'sent'",
            rusqlite::params![
                at("2026-11-01T00:00:00Z").timestamp_millis(),
                at("2026-12-01T00:00:00Z").timestamp_millis()
            ],
            |row| row.get(0),
        )
        .expect("counted");
    let alerts = population(&out, "populations/alerts-sent.csv");
    assert_eq!(alerts.len() as u64, in_store);
    assert_eq!(alerts.len(), 3);
    assert!(!alerts.iter().any(|a| a["subject"] == "credential-3"));
    let digest = alerts
        .iter()
        .find(|a| a["kind"] == "digest")
        .expect("digest");
    assert_eq!(digest["threshold_days"], "");
    assert_eq!(digest["route"], "'=ops");
    assert!(
        alerts
            .iter()
            .any(|a| a["subject"] == "credential-1" && a["threshold_days"] == "7")
    );
    assert!(verified(&out, &key_of(&store)).intact);
}

/// Exports November's package and returns it with the key that checks it.
async fn package() -> (Store, PathBuf, PublicKey) {
    let store = november().await;
    let out = export_november(&store).await;
    let key = key_of(&store);
    (store, out, key)
}

#[tokio::test]
async fn one_byte_changed_in_any_file_fails_and_names_that_file() {
    let (store, out, key) = package().await;
    let original = files(&out);
    for (index, (name, _)) in original.iter().enumerate() {
        let mut tampered = original.clone();
        let bytes = &mut tampered[index].1;
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        let path = store.out("tampered.zip");
        write_zip(&path, &tampered);
        let report = verified(&path, &key);
        assert!(!report.intact, "{name} changed and still intact");
        let named = report.problems.iter().any(|p| p.contains(name.as_str()));
        assert!(named, "{name}: {:?}", report.problems);
    }
}

#[tokio::test]
async fn a_removed_or_added_file_fails_and_is_named() {
    let (store, out, key) = package().await;
    let original = files(&out);

    let removed: Vec<_> = original
        .iter()
        .filter(|(name, _)| name != "populations/rotations.csv")
        .cloned()
        .collect();
    let path = store.out("removed.zip");
    write_zip(&path, &removed);
    let report = verified(&path, &key);
    assert!(!report.intact);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("populations/rotations.csv is missing")),
        "{:?}",
        report.problems
    );

    let mut added = original.clone();
    added.push(("populations/extra.csv".to_owned(), b"a,b\r\n".to_vec()));
    let path = store.out("added.zip");
    write_zip(&path, &added);
    let report = verified(&path, &key);
    assert!(!report.intact);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("populations/extra.csv was added")),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn an_edited_manifest_or_a_wrong_key_fails_the_signature() {
    let (store, out, key) = package().await;
    let original = files(&out);

    // The manifest edited to vouch for a changed file: the hashes agree, the signature
    // does not.
    let mut edited = original.clone();
    let inventory = edited
        .iter()
        .position(|(n, _)| n == "populations/inventory.csv")
        .expect("inventory");
    edited[inventory].1.extend_from_slice(b"forged,row\r\n");
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&edited[inventory].1));
    let manifest = edited
        .iter()
        .position(|(n, _)| n == "manifest.json")
        .expect("manifest");
    let mut value: serde_json::Value =
        serde_json::from_slice(&edited[manifest].1).expect("manifest JSON");
    for file in value["files"].as_array_mut().expect("files") {
        if file["path"] == "populations/inventory.csv" {
            file["sha256"] = serde_json::Value::String(digest.clone());
        }
    }
    edited[manifest].1 = serde_json::to_vec_pretty(&value).expect("JSON");
    let path = store.out("edited.zip");
    write_zip(&path, &edited);
    let report = verified(&path, &key);
    assert!(!report.intact);
    assert_eq!(report.manifest_signature, "invalid");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("manifest.json (or the signature) was changed")),
        "{:?}",
        report.problems
    );

    // Another key: the untouched package does not verify with it, and the report says
    // which key signed it.
    let other = november().await;
    let report = verified(&out, &key_of(&other));
    assert!(!report.intact);
    assert_eq!(report.manifest_signature, "wrong_key");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(&format!("signed by key {}", key.fingerprint()))),
        "{:?}",
        report.problems
    );
    // Its checkpoints do not verify with that key either.
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("audit/checkpoints.jsonl") && p.contains("does not verify")),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn the_extract_alone_catches_edits_gaps_truncation_and_a_rehashed_chain() {
    use keyturn::evidence::extract::verify_extract;
    let (_store, out, key) = package().await;
    let entries = file(&out, "audit/entries.jsonl");
    let checkpoints = file(&out, "audit/checkpoints.jsonl");
    let lines: Vec<&str> = entries.lines().collect();
    let check = |lines: &[String]| {
        let text = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        verify_extract(
            &mut text.as_bytes(),
            &mut checkpoints.as_bytes(),
            std::slice::from_ref(&key),
        )
        .expect("readable")
    };
    let owned: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    assert!(check(&owned).is_intact());

    // An edited field.
    let mut edited = owned.clone();
    edited[4] = edited[4].replace("sha256:aaaa", "sha256:cccc");
    let report = check(&edited);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("position 6") && p.contains("content was changed")),
        "{:?}",
        report.problems
    );

    // An entry removed from the middle.
    let mut gap = owned.clone();
    gap.remove(4);
    let report = check(&gap);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("positions 6 to 6 are missing")),
        "{:?}",
        report.problems
    );

    // Entries cut off the end, before the checkpoint that closes the period.
    let cut = owned[..owned.len() - 2].to_vec();
    let report = check(&cut);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("entries were removed from the end")),
        "{:?}",
        report.problems
    );

    // A checkpoint removed from between the others.
    let fewer: String = checkpoints
        .lines()
        .enumerate()
        .filter(|(index, _)| *index != 3)
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    let text = owned.iter().map(|l| format!("{l}\n")).collect::<String>();
    let report = verify_extract(
        &mut text.as_bytes(),
        &mut fewer.as_bytes(),
        std::slice::from_ref(&key),
    )
    .expect("readable");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("a checkpoint was removed")),
        "{:?}",
        report.problems
    );

    // The chain edited and re-hashed from position 6 on: every link holds, the signed
    // checkpoints do not.
    let mut rehashed = Vec::new();
    let mut prev: Option<String> = None;
    for (index, line) in owned.iter().enumerate() {
        let mut value: serde_json::Value = serde_json::from_str(line).expect("JSON");
        if index >= 4 {
            if index == 4 {
                value["actor"] = serde_json::Value::String("sha256:cccc".into());
            }
            if let Some(prev) = &prev {
                value["prev_hash"] = serde_json::Value::String(prev.clone());
            }
            value["hash"] = serde_json::Value::String(rehash(&value));
        }
        prev = value["hash"].as_str().map(str::to_owned);
        rehashed.push(value.to_string());
    }
    let report = check(&rehashed);
    assert!(
        report
            .problems
            .iter()
            .all(|p| !p.contains("content was changed")),
        "{:?}",
        report.problems
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("re-hashed after it was signed")),
        "{:?}",
        report.problems
    );
}

/// The hash an extract line's fields give, computed as the README documents it.
fn rehash(line: &serde_json::Value) -> String {
    let field = |name: &str| line.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let mut record = AuditRecord::new(
        at(&field("time").expect("time")),
        match field("actor_kind").as_deref() {
            Some("identity") => identity(&field("actor").expect("actor")),
            _ => function(&field("actor").expect("actor")),
        },
        text(&field("action").expect("action")),
        field("outcome").expect("outcome").parse().expect("outcome"),
    );
    record.object = AuditObject {
        vault: field("vault").map(|v| text(&v)),
        secret_name: field("secret_name").map(|v| text(&v)),
        secret_version: field("secret_version").map(|v| text(&v)),
        app_id: field("app_id").map(|v| text(&v)),
        key_id: field("key_id").map(|v| text(&v)),
        thumbprint: field("thumbprint").map(|v| text(&v)),
    };
    record.reason = field("reason").map(|v| text(&v));
    record.invocation_id = field("invocation_id").map(|v| text(&v));
    record.count = line.get("count").and_then(|c| c.as_u64());
    let prev = field("prev_hash").expect("prev").parse().expect("hash");
    let sequence = line["sequence"].as_u64().expect("sequence");
    keyturn::audit::entry_hash(sequence, &prev, &record).to_hex()
}

#[tokio::test]
async fn bad_periods_are_refused_naming_the_input_and_leave_no_zip() {
    for (from, to, expected) in [
        (
            "2026-11-30",
            "2026-11-01",
            "--from `2026-11-30` is after --to `2026-11-01`",
        ),
        (
            "2026-11-01T00:00:00Z",
            "2026-11-01T00:00:00Z",
            "the period is empty: --from `2026-11-01T00:00:00Z` and --to `2026-11-01T00:00:00Z`",
        ),
        (
            "2026-13-01",
            "2026-11-30",
            "--from `2026-13-01` is not a date",
        ),
        ("2026-11-01", "yesterday", "--to `yesterday` is not a date"),
    ] {
        let error = Period::parse(from, to).expect_err("refused");
        assert!(
            error.to_string().contains(expected),
            "{from}..{to}: {error}"
        );
    }

    let store = november().await;
    for (period, expected) in [
        (
            period("2026-01-01", "2026-01-31"),
            "ends before the audit log's first entry (2026-10-30T10:00:00Z)",
        ),
        (
            period("2026-11-10", "2026-11-20"),
            // As typed: --to names the last day, not the midnight that ends it.
            "no audit entry is stamped in the period --from 2026-11-10 --to 2026-11-20 (included)",
        ),
        (
            period("2026-11-10T06:00:00Z", "2026-11-10T18:00:00Z"),
            "no audit entry is stamped in the period --from 2026-11-10T06:00:00Z --to 2026-11-10T18:00:00Z (excluded)",
        ),
    ] {
        let out = store.out("evidence.zip");
        let error = export_from(&store, &period, &out)
            .await
            .expect_err("refused");
        assert!(error.to_string().contains(expected), "{error}");
        assert!(
            leftovers(store._dir.path()).is_empty(),
            "{:?}",
            leftovers(store._dir.path())
        );
    }
}

#[tokio::test]
async fn an_unreadable_store_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("no-such-store");
    let settings = AuditCommandSettings::local(&missing);
    let env = Environment::from_pairs(std::iter::empty::<(&str, &str)>());
    let error = startup::evidence_sources(&settings, &[], None, &env)
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("no-such-store"), "{error}");
    assert!(!missing.exists(), "no store was created");
}

/// An inventory that fails on its second page, after the package is half written.
#[derive(Debug)]
struct FailingInventory {
    inner: LocalInventory,
}

#[async_trait]
impl InventoryStore for FailingInventory {
    async fn put_credentials(&self, c: &[InventoryCredential]) -> Result<(), PortError> {
        self.inner.put_credentials(c).await
    }
    async fn put_vault(&self, v: &InventoryVault) -> Result<(), PortError> {
        self.inner.put_vault(v).await
    }
    async fn put_finding(&self, f: &ScopeFinding) -> Result<(), PortError> {
        self.inner.put_finding(f).await
    }
    async fn put_snapshot(&self, s: &SweepSnapshot) -> Result<(), PortError> {
        self.inner.put_snapshot(s).await
    }
    async fn retire_unseen(&self, s: &CredentialSource, w: &SweepId) -> Result<u64, PortError> {
        self.inner.retire_unseen(s, w).await
    }
    async fn clear_findings(
        &self,
        s: &keyturn::domain::inventory::Scope,
        w: &SweepId,
    ) -> Result<u64, PortError> {
        self.inner.clear_findings(s, w).await
    }
    async fn put_adoptions(
        &self,
        a: &[keyturn::domain::inventory::Adoption],
    ) -> Result<(), PortError> {
        self.inner.put_adoptions(a).await
    }
    async fn adopted(
        &self,
        apps: &[keyturn::domain::ids::AppId],
    ) -> Result<
        std::collections::BTreeSet<(keyturn::domain::ids::AppId, keyturn::domain::ids::KeyId)>,
        PortError,
    > {
        self.inner.adopted(apps).await
    }
    async fn retire_adoptions(
        &self,
        v: &CredentialSource,
        w: &SweepId,
    ) -> Result<Vec<(keyturn::domain::ids::AppId, keyturn::domain::ids::KeyId)>, PortError> {
        self.inner.retire_adoptions(v, w).await
    }
    async fn mark_adopted(
        &self,
        pairs: &[(keyturn::domain::ids::AppId, keyturn::domain::ids::KeyId)],
        adopted: bool,
    ) -> Result<u64, PortError> {
        self.inner.mark_adopted(pairs, adopted).await
    }
    async fn credentials(
        &self,
        filter: &CredentialFilter,
        after: Option<&PageToken>,
        _limit: u32,
    ) -> Result<Page<InventoryCredential>, PortError> {
        if after.is_some() {
            return Err(PortError::invalid("the inventory table went away"));
        }
        self.inner.credentials(filter, after, 1).await
    }
    async fn vaults(
        &self,
        a: Option<&PageToken>,
        l: u32,
    ) -> Result<Page<InventoryVault>, PortError> {
        self.inner.vaults(a, l).await
    }
    async fn findings(
        &self,
        a: Option<&PageToken>,
        l: u32,
    ) -> Result<Page<ScopeFinding>, PortError> {
        self.inner.findings(a, l).await
    }
    async fn snapshots(
        &self,
        a: Option<&PageToken>,
        l: u32,
    ) -> Result<Page<SweepSnapshot>, PortError> {
        self.inner.snapshots(a, l).await
    }
}

#[tokio::test]
async fn a_store_failing_half_way_leaves_no_partial_zip() {
    let store = november().await;
    let settings = AuditCommandSettings::local(&store.data);
    let env = Environment::from_pairs(std::iter::empty::<(&str, &str)>());
    let sources = startup::evidence_sources(&settings, &[], None, &env)
        .await
        .expect("the sources open");
    let failing = FailingInventory {
        inner: LocalInventory::new(LocalStore::open(store.db()).expect("store")),
    };
    let mut half = sources.sources();
    half.inventory = &failing;
    let out = store.out("evidence.zip");
    let error = export(half, &period("2026-11-01", "2026-11-30"), &out, Utc::now())
        .await
        .expect_err("the export fails");
    assert!(
        error.to_string().contains("the inventory table went away"),
        "{error}"
    );
    assert!(
        leftovers(store._dir.path()).is_empty(),
        "{:?}",
        leftovers(store._dir.path())
    );
}

/// `evidence export --exceptions FILE` reads the register from FILE instead of the data
/// directory's, as `keyturn compliance --exceptions` does; a register named but missing
/// or malformed refuses the export, naming the file (and the entry), and leaves no zip.
#[tokio::test]
async fn the_exceptions_flag_names_the_register_and_a_bad_one_refuses_the_export() {
    let store = november().await;
    let registers = tempfile::tempdir().expect("dir");
    let export = |out: &Path, register: Option<&Path>| {
        let mut args = vec![
            "evidence",
            "export",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-30",
            "--out",
            out.to_str().expect("utf-8"),
        ];
        if let Some(register) = register {
            args.extend(["--exceptions", register.to_str().expect("utf-8")]);
        }
        run(&args, Some(&store.data))
    };

    // No register in the data directory: without the flag nothing is excepted.
    let plain = store.out("plain.zip");
    let output = export(&plain, None);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let findings = population(&plain, "populations/findings.csv");
    assert!(!findings.is_empty());
    assert!(
        findings.iter().all(|f| f["status"] == "open"),
        "{findings:?}"
    );
    assert!(population(&plain, "populations/exceptions.csv").is_empty());

    // With it, the file's exceptions apply: in force, excepted; lapsed, open again.
    let register = registers.path().join("risk-register.json");
    std::fs::write(&register, REGISTER).expect("written");
    let out = store.out("evidence.zip");
    let output = export(&out, Some(&register));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let findings = population(&out, "populations/findings.csv");
    let excepted = findings
        .iter()
        .find(|f| f["rule"] == "credential-no-owner" && f["status"] == "excepted")
        .expect("credential 2's finding is excepted");
    assert_eq!(excepted["exception_id"], "register:1");
    let lapsed = findings
        .iter()
        .find(|f| f["exception_id"] == "register:2")
        .expect("the lapsed exception is named");
    assert_eq!(lapsed["status"], "open");
    let exceptions = population(&out, "populations/exceptions.csv");
    assert_eq!(exceptions.len(), 2, "{exceptions:?}");
    let summary: serde_json::Value =
        serde_json::from_str(&file(&out, "summary.json")).expect("summary JSON");
    assert!(
        summary["totals"]["findings_excepted"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{}",
        summary["totals"]
    );

    // Named but missing, or malformed: refused, naming it, and no zip.
    let absent = registers.path().join("absent.json");
    let malformed = registers.path().join("malformed.json");
    std::fs::write(
        &malformed,
        r#"{ "exceptions": [
            { "rule": "rotation-failed", "subject": "*", "owner": "a", "reason": "r", "expires": "2030-01-01" },
            { "rule": "credential-no-owner", "subject": "vault:", "owner": "a", "reason": "r", "expires": "2030-01-01" } ] }"#,
    )
    .expect("written");
    for (register, named) in [(&absent, None), (&malformed, Some("entry 2"))] {
        let refused = store.out("refused.zip");
        let output = export(&refused, Some(register));
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{message}");
        assert!(
            message.contains(&register.display().to_string()),
            "{message}"
        );
        if let Some(named) = named {
            assert!(message.contains(named), "{message}");
        }
        assert!(!refused.exists());
        let mut left = leftovers(store._dir.path());
        left.sort();
        assert_eq!(
            left,
            ["evidence.zip", "plain.zip"],
            "no partial zip is left"
        );
    }
}

/// A value only the test knows, set in the vault and rotated by keyturn: no file of the
/// package may hold it.
const CANARY: &str = "canary-value-7e2f0c1d-never-in-evidence";

fn run(args: &[&str], data: Option<&Path>) -> std::process::Output {
    let mut command = crate::helpers::keyturn(&[]);
    command.args(args);
    if let Some(data) = data {
        command.arg("--data-dir").arg(data);
    }
    command.output().expect("keyturn runs")
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_demo_exports_a_package_that_verifies_and_holds_no_secret_value() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let dev = run(&["dev", "--once"], Some(&data));
    assert_eq!(dev.status.code(), Some(0), "{}", stderr(&dev));
    let mut set = crate::helpers::keyturn(&[])
        .args([
            "vault",
            "set",
            "evidence-canary",
            "--tags",
            "keyturn-kind=generated",
        ])
        .args(["--expires", "+1d", "--data-dir"])
        .arg(&data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("keyturn vault set runs");
    set.stdin
        .take()
        .expect("stdin")
        .write_all(CANARY.as_bytes())
        .expect("value written");
    assert!(set.wait_with_output().expect("finishes").status.success());
    let dev = run(&["dev", "--once"], Some(&data));
    assert_eq!(dev.status.code(), Some(0), "{}", stderr(&dev));

    let today = Utc::now().date_naive().to_string();
    let out = dir.path().join("evidence.zip");
    let out_text = out.to_str().expect("utf-8 path");
    let exported = run(
        &[
            "evidence", "export", "--from", &today, "--to", &today, "--out", out_text,
        ],
        Some(&data),
    );
    assert_eq!(exported.status.code(), Some(0), "{}", stderr(&exported));
    let summary: serde_json::Value =
        serde_json::from_slice(&exported.stdout).expect("a JSON summary");
    assert!(
        summary["files"].as_array().is_some_and(|f| f.len() >= 10),
        "{summary}"
    );

    for (name, bytes) in files(&out) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(CANARY), "{name} holds the secret value");
    }
    // The canary's rotation is in the period's rotations, by name only, with the time
    // its worker received the job as its start (a generated secret has no earlier step).
    let rotations = population(&out, "populations/rotations.csv");
    let canary = rotations
        .iter()
        .find(|r| r["object"] == "evidence-canary" && r["result"] == "rotated")
        .unwrap_or_else(|| panic!("{rotations:?}"));
    assert!(!canary["started_at"].is_empty(), "{canary:?}");
    // Compliance ran on the demo: findings count for controls of several frameworks,
    // and the control matrix lists every framework.
    let findings = population(&out, "populations/findings.csv");
    let frameworks: std::collections::BTreeSet<String> = findings
        .iter()
        .flat_map(|f| {
            f["controls"]
                .split(';')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|c| c.split(':').next().map(str::to_owned))
        .filter(|f| !f.is_empty())
        .collect();
    assert!(frameworks.len() >= 3, "{frameworks:?}");
    let matrix = population(&out, "control-matrix.csv");
    let listed: std::collections::BTreeSet<&str> =
        matrix.iter().map(|r| r["framework"].as_str()).collect();
    assert_eq!(listed.len(), 6, "{listed:?}");
    assert!(canary["started_at"] <= canary["completed_at"], "{canary:?}");

    let key = data.join(PUBLIC_KEY_FILE_NAME);
    let verify = run(
        &[
            "evidence",
            "verify",
            out_text,
            "--public-key",
            key.to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
    assert!(
        stderr(&verify).contains("evidence package intact"),
        "{}",
        stderr(&verify)
    );

    // One byte changed: exit 1, the file named on stderr.
    let mut tampered = files(&out);
    let inventory = tampered
        .iter()
        .position(|(n, _)| n == "populations/inventory.csv")
        .expect("inventory");
    tampered[inventory].1[0] ^= 0x20;
    let bad = dir.path().join("tampered.zip");
    write_zip(&bad, &tampered);
    let verify = run(&["evidence", "verify", bad.to_str().expect("utf-8")], None);
    assert_eq!(verify.status.code(), Some(1), "{}", stderr(&verify));
    assert!(
        stderr(&verify).contains("populations/inventory.csv was changed"),
        "{}",
        stderr(&verify)
    );

    // Bad input: exit 2, the input named, nothing at --out.
    let refused = dir.path().join("refused.zip");
    let refused_text = refused.to_str().expect("utf-8");
    for (args, expected) in [
        (
            vec!["--from", "2026-12-31", "--to", "2026-01-01"],
            "is after --to",
        ),
        (
            vec!["--from", "31/12/2026", "--to", "2027-01-01"],
            "--from `31/12/2026`",
        ),
    ] {
        let mut all = vec!["evidence", "export", "--out", refused_text];
        all.extend(args);
        let output = run(&all, Some(&data));
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
        assert!(!refused.exists());
    }
    let nowhere = dir.path().join("nowhere");
    let output = run(
        &[
            "evidence",
            "export",
            "--from",
            &today,
            "--to",
            &today,
            "--out",
            refused_text,
        ],
        Some(&nowhere),
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("nowhere"), "{}", stderr(&output));
    assert!(!refused.exists() && !nowhere.exists());
}
