//! Audit appends per second through `AuditLog`, with many appenders at once, on both
//! stores: the embedded SQLite file (`synchronous = FULL`) and Azure Table storage
//! (Azurite, when `KEYTURN_TEST_TABLE_ENDPOINT` names it). Every appender waits for its
//! entry to be stored before appending the next, as a request waits before answering.
//!
//! For Table storage the same run also measures the store held to one entity per
//! request (what it did before entity group transactions), so the two are compared on
//! one machine, one emulator and one run.
//!
//! Every measurement is bounded in time; the program stops by itself and prints a table.
//! Run: `cargo bench --bench audit` (with Azurite: `.ci/test` starts it for the tests;
//! start `azurite-table` yourself and export `KEYTURN_TEST_TABLE_ENDPOINT` to include the
//! Table rows).

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;

use keyturn::adapters::azure::audit::TableAuditStore;
use keyturn::adapters::azure::client::table::{TableClient, TableName};
use keyturn::adapters::local::audit::LocalAuditStore;
use keyturn::adapters::local::store::LocalStore;
use keyturn::audit::{Actor, AuditLog, AuditText, Outcome};
use keyturn::domain::secret::SecretValue;
use keyturn::ports::PortError;
use keyturn::ports::audit::{AuditEntry, AuditRecord, AuditStore, StoredEntry};

/// Appenders at once: the endpoint bench's connection count, each one a request waiting
/// for its read to be audited.
const APPENDERS: usize = 32;

/// Untimed appends first (table creation, page cache, connection pool).
const WARM_UP: Duration = Duration::from_secs(1);

/// The measured window per row.
const MEASURED: Duration = Duration::from_secs(4);

/// Azurite's published development key; it opens nothing but a local emulator.
const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The allocator the `keyturn` binary uses (`handlers/main.rs`), so the library is
/// measured as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the operating system provides threads and timers");
    if let Err(error) = runtime.block_on(run()) {
        eprintln!("audit bench failed: {error}");
        std::process::exit(1);
    }
}

async fn run() -> BenchResult<()> {
    let dir = tempfile::tempdir()?;
    let mut rows = Vec::new();

    let sqlite = LocalAuditStore::new(LocalStore::open(dir.path().join("audit.db"))?);
    rows.push((
        "SQLite file (synchronous = FULL)",
        measure(Arc::new(sqlite), None).await?,
    ));

    match std::env::var("KEYTURN_TEST_TABLE_ENDPOINT") {
        Ok(endpoint) => {
            for (label, one_at_a_time) in [
                ("Table storage (Azurite), one entity per request", true),
                ("Table storage (Azurite), entity group transactions", false),
            ] {
                let store = table_store(&endpoint).await?;
                let limit = one_at_a_time.then_some(1);
                rows.push((label, measure(Arc::new(store), limit).await?));
            }
        }
        Err(_) => println!(
            "Table storage rows skipped: set KEYTURN_TEST_TABLE_ENDPOINT to an Azurite table endpoint"
        ),
    }

    println!(
        "\nAudit appends through AuditLog: {APPENDERS} appenders each waiting for its entry, {} s warm-up, {} s measured per row, {} cores\n",
        WARM_UP.as_secs(),
        MEASURED.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| store                                               | appends/s |  p50 ms |  p99 ms | entries per write |"
    );
    println!(
        "|-----------------------------------------------------|-----------|---------|---------|-------------------|"
    );
    for (label, figures) in &rows {
        println!(
            "| {label:<51} | {:>9.0} | {:>7.2} | {:>7.2} | {:>17.1} |",
            figures.per_second, figures.p50_ms, figures.p99_ms, figures.entries_per_write
        );
    }
    for (label, figures) in &rows {
        if !figures.intact {
            return Err(format!("{label}: the chain did not verify after the run").into());
        }
    }
    println!("\n- every row's chain verified intact after the run");
    Ok(())
}

async fn table_store(endpoint: &str) -> BenchResult<TableAuditStore> {
    let connection_string = SecretValue::new(format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_ACCOUNT_KEY};TableEndpoint={endpoint}"
    ));
    let client = TableClient::from_connection_string(&connection_string, None)?;
    let table = TableName::parse(&format!("auditbench{}", uuid::Uuid::new_v4().simple()))?;
    let store = TableAuditStore::new(client, table);
    store.ensure_table().await?;
    Ok(store)
}

struct Figures {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    entries_per_write: f64,
    intact: bool,
}

/// Runs [`APPENDERS`] appenders for the warm-up and the window; `max_batch` caps the
/// store's batch size.
async fn measure(store: Arc<dyn AuditStore>, max_batch: Option<usize>) -> BenchResult<Figures> {
    let counting = Arc::new(Counting {
        inner: store,
        max_batch,
        writes: Mutex::new((0, 0)),
    });
    let log = AuditLog::new(counting.clone());
    let started = Instant::now();
    let measured_from = started + WARM_UP;
    let until = measured_from + MEASURED;
    let mut appenders = tokio::task::JoinSet::new();
    for appender in 0..APPENDERS {
        let log = log.clone();
        appenders.spawn(async move {
            let mut latencies = Vec::new();
            let mut counter = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= until {
                    return Ok::<_, keyturn::audit::AuditError>(latencies);
                }
                counter += 1;
                log.append(record(appender, counter)).await?;
                if sent >= measured_from {
                    latencies.push(sent.elapsed());
                }
            }
        });
    }
    let mut latencies = Vec::new();
    while let Some(result) = appenders.join_next().await {
        latencies.extend(result??);
    }
    let (writes_before, entries_before) = *counting.writes.lock().expect("bench lock");
    latencies.sort_unstable();
    let at = |fraction: f64| {
        let index = ((latencies.len() as f64 * fraction).ceil() as usize).saturating_sub(1);
        latencies
            .get(index)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let intact = log.verify().await?.is_intact();
    Ok(Figures {
        per_second: latencies.len() as f64 / MEASURED.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        entries_per_write: entries_before as f64 / writes_before.max(1) as f64,
        intact,
    })
}

/// A read as the endpoint audits it: identity, name, version, reason, invocation id.
fn record(appender: usize, counter: u64) -> AuditRecord {
    let text = |value: String| AuditText::parse(value).expect("bench text is valid");
    let mut record = AuditRecord::new(
        Utc::now(),
        Actor::Identity(text(format!("sha256:{:064x}", appender))),
        text("secret.read".into()),
        Outcome::Succeeded,
    );
    record.object.secret_name = Some(text("db-password".into()));
    record.object.secret_version = Some(text("0123456789abcdef0123456789abcdef".into()));
    record.object.thumbprint = Some(text(format!("{:064x}", appender)));
    record.reason = Some(text(format!(
        "policy=access; reason=granted; authenticated-by=trusted-thumbprints+chain; subject=CN=device-{appender}; grant=0 (bench devices); backend=appsettings; request={counter}"
    )));
    record.invocation_id = Some(text(uuid::Uuid::new_v4().to_string()));
    record
}

/// The store under test, counting writes and entries, optionally with a smaller batch.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn AuditStore>,
    max_batch: Option<usize>,
    writes: Mutex<(u64, u64)>,
}

#[async_trait]
impl AuditStore for Counting {
    async fn head(&self) -> Result<Option<StoredEntry>, PortError> {
        self.inner.head().await
    }

    async fn append(&self, entry: &AuditEntry) -> Result<(), PortError> {
        self.append_all(std::slice::from_ref(entry)).await
    }

    fn max_batch(&self) -> usize {
        self.max_batch.unwrap_or_else(|| self.inner.max_batch())
    }

    async fn append_all(&self, entries: &[AuditEntry]) -> Result<(), PortError> {
        {
            let mut writes = self.writes.lock().expect("bench lock");
            writes.0 += 1;
            writes.1 += entries.len() as u64;
        }
        if self.max_batch == Some(1) {
            // One request per entity, as the store wrote before transactions.
            for entry in entries {
                self.inner.append(entry).await?;
            }
            return Ok(());
        }
        self.inner.append_all(entries).await
    }

    async fn read(&self, from: u64, count: u32) -> Result<Vec<StoredEntry>, PortError> {
        self.inner.read(from, count).await
    }
}
