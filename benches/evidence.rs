//! `keyturn evidence export` at scale, for two tenants: a local store holding 100,000
//! audit entries and 10,000 inventory rows, and one ten times that (1,000,000 entries,
//! anchored by a signed checkpoint per stored batch as the writer anchors them, and
//! 100,000 rows). Each is exported for a tenth of the log's period and for all of it.
//! Every fifth credential is a vault secret with `keyturn-exception-*` tags (in force,
//! lapsed, or malformed in turn), so the findings, the exceptions tags declare and the
//! tags refused grow with the tenant. Each export's time and peak heap (every allocation
//! the process makes while it runs, SQLite's page cache included, counted by a wrapping
//! allocator) are printed, then how the peak moved with the period and with the tenant:
//! rows are streamed into the zip, so it must stay flat on both. Then `keyturn audit
//! verify` of each tenant's log (every chain and checkpoint; in the table, its "extract"
//! column is the entries checked and its "findings" column the checkpoints).
//!
//! Run: `cargo bench --bench evidence` (a release build). Other sizes (the larger
//! tenant's; the smaller is a tenth):
//! `KEYTURN_BENCH_EVIDENCE_ENTRIES=100000 KEYTURN_BENCH_EVIDENCE_ROWS=10000`. With
//! `KEYTURN_BENCH_EVIDENCE_KEEP=1` each tenant's data directory is kept (and named), for
//! `keyturn audit verify --data-dir` or `keyturn evidence export` run on their own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};

use keyturn::adapters::local::anchor::{
    CHECKPOINT_FILE_NAME, LocalCheckpointFile, LocalSigningKey, SIGNING_KEY_FILE_NAME,
};
use keyturn::adapters::local::audit::LocalAuditStore;
use keyturn::adapters::local::inventory::LocalInventory;
use keyturn::adapters::local::store::LocalStore;
use keyturn::audit::{Actor, AuditText, Outcome, entry_hash};
use keyturn::config::{AuditCommandSettings, Environment};
use keyturn::domain::ids::{AppId, DirectoryObjectId, KeyId};
use keyturn::domain::inventory::{
    CredentialHandle, CredentialKind, CredentialSource, InventoryCredential, Owner, SweepId,
};
use keyturn::evidence::{Period, export};
use keyturn::ports::audit::{AuditEntry, AuditObject, AuditRecord, AuditStore, ChainId, EntryHash};
use keyturn::ports::checkpoint::{Checkpoint, CheckpointSigner, CheckpointStore, SignedCheckpoint};
use keyturn::ports::inventory::InventoryStore;

/// Counts the bytes allocated now and the most allocated at once since the last reset.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let now = CURRENT.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed to the system allocator unchanged; only counters change.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            grew(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            grew(layout.size());
        }
        pointer
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Entries per stored batch: the SQLite store's transaction size, so each batch gets
/// one checkpoint as the writer's would under load.
const BATCH: usize = 256;
/// Identities and secrets the reads spread over.
const IDENTITIES: u64 = 50;
const SECRETS: u64 = 200;
/// The log spans this many days, evenly.
const DAYS: i64 = 100;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn count(variable: &str, default: u64) -> u64 {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn text(value: &str) -> AuditText {
    AuditText::parse(value).expect("bench text is audit text")
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid time")
}

/// Entry `n` of the log: mostly secret reads (granted, some refused and folded), a
/// rotation's steps now and then, a sweep each hour or so.
fn record(n: u64, at: DateTime<Utc>) -> AuditRecord {
    let secret = format!("secret-{}", n % SECRETS);
    let vault = "https://bench.vault.azure.net/";
    let (actor, action, outcome) = match n % 100 {
        0..=79 => (
            Actor::Identity(text(&format!("sha256:{:064x}", n % IDENTITIES))),
            "secret.read",
            Outcome::Succeeded,
        ),
        80..=89 => (
            Actor::Identity(text(&format!("sha256:{:064x}", n % IDENTITIES))),
            "secret.read",
            Outcome::Denied,
        ),
        90..=92 => (
            Actor::Function(text("RotationWorker")),
            "credential.added",
            Outcome::Succeeded,
        ),
        93..=95 => (
            Actor::Function(text("RotationWorker")),
            "secret.rotated",
            Outcome::Succeeded,
        ),
        _ => (
            Actor::Function(text("ExpirySweep")),
            "sweep.ran",
            Outcome::Succeeded,
        ),
    };
    let mut record = AuditRecord::new(at, actor, text(action), outcome);
    if action != "sweep.ran" {
        record.object = AuditObject {
            vault: Some(text(vault)),
            secret_name: Some(text(&secret)),
            secret_version: Some(text(&format!("{:032x}", n))),
            app_id: None,
            key_id: Some(text(&format!("00000000-0000-4000-8000-{:012x}", n))),
            thumbprint: None,
        };
    }
    if outcome == Outcome::Denied {
        record.reason = Some(text("not allowed by the access policy"));
        record.count = Some(2 + n % 7);
    }
    record.invocation_id = Some(text(&format!("{:032x}", n / 4)));
    record
}

/// Credential `n`: an application's client secret, or (every fifth) a vault secret whose
/// tags declare an exception in force, a lapsed one, or tags that make none.
fn credential(n: u64) -> InventoryCredential {
    if n.is_multiple_of(5) {
        return tagged_secret(n);
    }
    let app = n / 4;
    InventoryCredential {
        source: CredentialSource::Application {
            object_id: DirectoryObjectId::parse(&format!("00000000-0000-4000-8000-{app:012x}"))
                .expect("object id"),
            app_id: AppId::parse(&format!("11111111-0000-4000-8000-{app:012x}")).expect("app id"),
            display_name: Some(format!("application {app}")),
        },
        kind: CredentialKind::PasswordCredential,
        name: format!("client secret {n}"),
        handle: CredentialHandle::DirectoryCredential {
            key_id: KeyId::parse(&format!("22222222-0000-4000-8000-{n:012x}")).expect("key id"),
        },
        enabled: true,
        created: None,
        updated: None,
        not_before: Some(start()),
        expires: Some(start() + Duration::days((n % 400) as i64)),
        content_type: None,
        tags: Default::default(),
        certificate: None,
        key: None,
        directory: None,
        owners: vec![Owner {
            object_id: None,
            display_name: Some(format!("Owner {}", n % 97)),
            user_principal_name: Some(format!("owner{}@bench.example", n % 97)),
            mail: None,
        }],
        managed: n.is_multiple_of(3),
        scanned_at: start() + Duration::days(DAYS),
        sweep: SweepId::parse("bench").expect("sweep id"),
    }
}

fn tagged_secret(n: u64) -> InventoryCredential {
    use keyturn::compliance::{TAG_EXPIRES, TAG_OWNER, TAG_REASON, TAG_RULE};
    let name = format!("secret-{n}");
    let mut tags = std::collections::BTreeMap::new();
    tags.insert(
        TAG_RULE.to_owned(),
        "credential-expired-enabled,credential-no-owner".to_owned(),
    );
    tags.insert(
        TAG_OWNER.to_owned(),
        format!("team{}@bench.example", n % 13),
    );
    match (n / 5) % 3 {
        0 => {
            tags.insert(
                TAG_REASON.to_owned(),
                "decommissioned next quarter".to_owned(),
            );
            tags.insert(TAG_EXPIRES.to_owned(), "2030-01-01".to_owned());
        }
        1 => {
            tags.insert(
                TAG_REASON.to_owned(),
                "was waiting for a migration".to_owned(),
            );
            tags.insert(TAG_EXPIRES.to_owned(), "2026-01-15".to_owned());
        }
        // No reason: the tags are refused and named.
        _ => {
            tags.insert(TAG_EXPIRES.to_owned(), "2030-01-01".to_owned());
        }
    }
    InventoryCredential {
        source: CredentialSource::Vault {
            subscription: None,
            name: format!("kv-bench-{}", n % 20)
                .parse()
                .expect("a vault name"),
            uri: keyturn::domain::names::VaultUrl::parse(&format!(
                "https://kv-bench-{}.vault.azure.net/",
                n % 20
            ))
            .expect("a vault URL"),
        },
        kind: CredentialKind::Secret,
        name: name.clone(),
        handle: CredentialHandle::VaultObject {
            name,
            version: None,
            versions: None,
        },
        enabled: true,
        created: None,
        updated: None,
        not_before: None,
        expires: Some(start() + Duration::days((n % 200) as i64)),
        content_type: None,
        tags,
        certificate: None,
        key: None,
        directory: None,
        owners: Vec::new(),
        managed: false,
        scanned_at: start() + Duration::days(DAYS),
        sweep: SweepId::parse("bench").expect("sweep id"),
    }
}

async fn seed(data: &std::path::Path, entries: u64, rows: u64) -> BenchResult<()> {
    let db = data.join("keyturn.db");
    let store = LocalStore::open(&db)?;
    let audit = LocalAuditStore::new(store.clone());
    let key = LocalSigningKey::load_or_create(&data.join(SIGNING_KEY_FILE_NAME))?;
    let checkpoints = LocalCheckpointFile::new(data.join(CHECKPOINT_FILE_NAME));
    let step = Duration::milliseconds(DAYS * 86_400_000 / entries.max(1) as i64);
    let mut prev: EntryHash = "0".repeat(64).parse()?;
    let mut previous_checkpoint = 0;
    let mut batch = Vec::with_capacity(BATCH);
    for n in 1..=entries {
        let at = start() + step * (n as i32);
        let record = record(n, at);
        let hash = entry_hash(n, &prev, &record);
        batch.push(AuditEntry {
            sequence: n,
            record,
            prev_hash: prev,
            hash,
        });
        prev = hash;
        if batch.len() == BATCH || n == entries {
            audit.append_all(&batch).await?;
            let checkpoint =
                Checkpoint::of_one(ChainId::default_chain(), n, previous_checkpoint, hash, at);
            let signature = key.sign(&checkpoint.signed_bytes()).await?;
            checkpoints
                .append(&SignedCheckpoint {
                    checkpoint,
                    signature,
                })
                .await?;
            previous_checkpoint = n;
            batch.clear();
        }
    }
    let inventory = LocalInventory::new(store);
    let mut chunk = Vec::with_capacity(1000);
    for n in 0..rows {
        chunk.push(credential(n));
        if chunk.len() == 1000 || n + 1 == rows {
            inventory.put_credentials(&chunk).await?;
            chunk.clear();
        }
    }
    Ok(())
}

fn megabytes(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Resets the process's resident peak (VmHWM) to its current size, so the next reading
/// is the peak since now (Linux 4.0+: writing 5 to /proc/self/clear_refs).
fn reset_resident_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn resident_peak() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// One export's figures.
struct Measured {
    tenant: String,
    period: &'static str,
    peak: usize,
}

/// Seeds a tenant of `entries` audit entries and `rows` inventory rows and exports it
/// for a tenth of its period and for all of it.
async fn tenant(entries: u64, rows: u64, measured: &mut Vec<Measured>) -> BenchResult<()> {
    let dir = std::env::temp_dir().join(format!(
        "keyturn-evidence-bench-{}-{entries}",
        std::process::id()
    ));
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;

    let seeding = Instant::now();
    seed(&data, entries, rows).await?;
    let tenant = format!("{entries} entries, {rows} rows");
    println!(
        "seeded {entries} audit entries ({} checkpoints) and {rows} inventory rows ({} with exception tags) in {:.1} s",
        entries.div_ceil(BATCH as u64),
        rows.div_ceil(5),
        seeding.elapsed().as_secs_f64()
    );
    let settings = AuditCommandSettings::local(&data);
    let env = Environment::from_pairs(std::iter::empty::<(&str, &str)>());
    for (label, days) in [("a tenth (10 days)", 10), ("all (100 days)", DAYS)] {
        let first = start().date_naive();
        let last = first + Duration::days(days - 1);
        let period = Period::parse(&first.to_string(), &last.to_string())?;
        let out = dir.join(format!("evidence-{days}.zip"));
        let sources = keyturn::startup::evidence_sources(&settings, &[], None, &env).await?;
        let reset = reset_resident_peak();
        let before = CURRENT.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let began = Instant::now();
        let summary = export(sources.sources(), &period, &out, Utc::now()).await?;
        let elapsed = began.elapsed().as_secs_f64();
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
        let rows_of = |path: &str| {
            summary
                .files
                .iter()
                .find(|f| f.path == path)
                .and_then(|f| f.rows)
                .unwrap_or(0)
        };
        let zip = std::fs::metadata(&out)?.len() as usize;
        let rss = if reset {
            resident_peak()
        } else {
            "not reset".to_owned()
        };
        println!(
            "{tenant:<28} {label:<18} {:>9} {:>9} {:>10} {elapsed:>8.1} {:>9.1} {:>9.1} {:>8.1} {rss:>12}",
            rows_of("audit/entries.jsonl"),
            rows_of("populations/findings.csv"),
            rows_of("populations/exceptions.csv"),
            megabytes(peak),
            megabytes(before),
            megabytes(zip)
        );
        measured.push(Measured {
            tenant: tenant.clone(),
            period: label,
            peak,
        });
        drop(sources);
        std::fs::remove_file(&out)?;
    }
    // `keyturn audit verify` on the same store: every chain and every checkpoint.
    let verification = keyturn::startup::verification(&settings, Vec::<&str>::new()).await?;
    let reset = reset_resident_peak();
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let began = Instant::now();
    let report = verification.run().await?;
    let elapsed = began.elapsed().as_secs_f64();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    let rss = if reset {
        resident_peak()
    } else {
        "not reset".to_owned()
    };
    if !report.is_intact() {
        return Err(format!("the seeded log does not verify: {report}").into());
    }
    println!(
        "{tenant:<28} {:<18} {:>9} {:>9} {:>10} {elapsed:>8.1} {:>9.1} {:>9.1} {:>8} {rss:>12}",
        "audit verify",
        report.entries_checked,
        report.checkpoints_checked,
        "",
        megabytes(peak),
        megabytes(before),
        ""
    );
    measured.push(Measured {
        tenant: tenant.clone(),
        period: "audit verify",
        peak,
    });
    drop(verification);
    if std::env::var_os("KEYTURN_BENCH_EVIDENCE_KEEP").is_some() {
        println!("kept the store in {}", data.display());
    } else {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

async fn run() -> BenchResult<()> {
    let entries = count("KEYTURN_BENCH_EVIDENCE_ENTRIES", 1_000_000);
    let rows = count("KEYTURN_BENCH_EVIDENCE_ROWS", 100_000);
    let began = Instant::now();
    println!(
        "{:<28} {:<18} {:>9} {:>9} {:>10} {:>8} {:>9} {:>9} {:>8} {:>12}",
        "tenant",
        "period",
        "extract",
        "findings",
        "exceptions",
        "time s",
        "peak MB",
        "before MB",
        "zip MB",
        "RSS peak"
    );
    let mut measured = Vec::new();
    tenant(entries / 10, rows / 10, &mut measured).await?;
    tenant(entries, rows, &mut measured).await?;
    // How the peak moved: with the period (same tenant) and with the tenant (same period).
    let ratio = |a: &Measured, b: &Measured| b.peak as f64 / a.peak.max(1) as f64;
    if let [
        small_tenth,
        small_all,
        small_verify,
        large_tenth,
        large_all,
        large_verify,
    ] = measured.as_slice()
    {
        println!(
            "peak heap, period x10: x{:.2} ({}), x{:.2} ({})",
            ratio(small_tenth, small_all),
            small_tenth.tenant,
            ratio(large_tenth, large_all),
            large_tenth.tenant
        );
        println!(
            "peak heap, tenant x10: x{:.2} ({}), x{:.2} ({})",
            ratio(small_tenth, large_tenth),
            small_tenth.period,
            ratio(small_all, large_all),
            small_all.period
        );
        println!(
            "peak heap of audit verify, log x10: x{:.2}",
            ratio(small_verify, large_verify)
        );
    }
    println!(
        "process resident peak (seeding included): {}; whole run {:.0} s",
        resident_peak(),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    if let Err(error) = runtime.block_on(run()) {
        eprintln!("evidence bench failed: {error}");
        std::process::exit(1);
    }
}
