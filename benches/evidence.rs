//! `keyturn evidence export` at scale: a local store holding 1,000,000 audit entries
//! (anchored by a signed checkpoint per stored batch, as the writer anchors them) and
//! 100,000 inventory rows, exported for a tenth of the log's period and for all of it.
//! Each export's time and its peak heap (every allocation the process makes while it
//! runs, SQLite's page cache included, counted by a wrapping allocator) are printed:
//! memory must stay flat whatever the period, as rows are streamed into the zip.
//!
//! Run: `cargo bench --bench evidence` (a release build). Smaller runs for a quick look:
//! `KEYTURN_BENCH_EVIDENCE_ENTRIES=100000 KEYTURN_BENCH_EVIDENCE_ROWS=10000`.

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

fn credential(n: u64) -> InventoryCredential {
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
            let checkpoint = Checkpoint {
                writer: ChainId::default_chain(),
                position: n,
                previous: previous_checkpoint,
                head: hash,
                at,
            };
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

async fn run() -> BenchResult<()> {
    let entries = count("KEYTURN_BENCH_EVIDENCE_ENTRIES", 1_000_000);
    let rows = count("KEYTURN_BENCH_EVIDENCE_ROWS", 100_000);
    let dir = std::env::temp_dir().join(format!("keyturn-evidence-bench-{}", std::process::id()));
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;

    let seeding = Instant::now();
    seed(&data, entries, rows).await?;
    println!(
        "seeded {entries} audit entries ({} checkpoints) and {rows} inventory rows in {:.1} s",
        entries.div_ceil(BATCH as u64),
        seeding.elapsed().as_secs_f64()
    );
    println!(
        "{:<28} {:>12} {:>10} {:>14} {:>14} {:>10} {:>14}",
        "period",
        "extract lines",
        "time (s)",
        "peak heap MB",
        "heap before MB",
        "zip MB",
        "RSS peak"
    );
    let settings = AuditCommandSettings::local(&data);
    let env = Environment::from_pairs(std::iter::empty::<(&str, &str)>());
    for (label, days) in [
        ("10 days (a tenth)", 10),
        ("100 days (the whole log)", DAYS),
    ] {
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
        let peak = PEAK.load(Ordering::Relaxed);
        let in_period = summary
            .files
            .iter()
            .find(|f| f.path == "audit/entries.jsonl")
            .and_then(|f| f.rows)
            .unwrap_or(0);
        let zip = std::fs::metadata(&out)?.len() as usize;
        let rss = if reset {
            resident_peak()
        } else {
            "not reset".to_owned()
        };
        println!(
            "{label:<28} {in_period:>12} {elapsed:>10.1} {:>14.1} {:>14.1} {:>10.1} {rss:>14}",
            megabytes(peak.saturating_sub(before)),
            megabytes(before),
            megabytes(zip)
        );
        drop(sources);
        std::fs::remove_file(&out)?;
    }
    println!(
        "process resident peak (seeding included): {}",
        resident_peak()
    );
    std::fs::remove_dir_all(&dir)?;
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
