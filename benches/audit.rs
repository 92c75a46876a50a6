//! Audit appends per second through `AuditLog`, with many appenders at once, on both
//! stores: the embedded SQLite file (`synchronous = FULL`) and Azure Table storage
//! (Azurite, when `KEYTURN_TEST_TABLE_ENDPOINT` names it). Every appender waits for its
//! entry to be stored before appending the next, as a request waits before answering.
//!
//! For Table storage the same run also measures the store held to one entity per
//! request (what it did before entity group transactions), so the two are compared on
//! one machine, one emulator and one run.
//!
//! The log scales out by giving each writer (each process or instance) a chain of its
//! own, every batch's head in a signed checkpoint: the rows "N writers" run N
//! separately built writers (their own store value, connection or client, key and
//! checkpoint handle), each appending to its own chain and checkpointing each batch
//! (SQLite: the checkpoint file and Ed25519 key beside the store; Azurite: Table for
//! the entries, an append blob per chain for the checkpoints), with the same 32
//! appenders shared out among them; the whole log is verified afterwards against the
//! checkpoints.
//!
//! Every measurement is bounded in time; the program stops by itself and prints a table.
//! Run: `cargo bench --bench audit` (with Azurite: `.ci/test` starts it for the tests;
//! start `azurite-table` yourself and export `KEYTURN_TEST_TABLE_ENDPOINT` to include the
//! Table rows).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;

use keyturn::adapters::azure::anchor::BlobCheckpointStore;
use keyturn::adapters::azure::audit::TableAuditStore;
use keyturn::adapters::azure::client::blob::{BlobAuth, BlobClient, ContainerName};
use keyturn::adapters::azure::client::table::{TableClient, TableName};
use keyturn::adapters::local::anchor::{LocalCheckpoints, LocalSigningKey};
use keyturn::adapters::local::audit::LocalAuditStore;
use keyturn::adapters::local::store::LocalStore;
use keyturn::audit::{Actor, Anchor, AuditLog, AuditText, Outcome, verify_log};
use keyturn::domain::secret::SecretValue;
use keyturn::ports::PortError;
use keyturn::ports::audit::ChainId;
use keyturn::ports::audit::{AuditEntry, AuditRecord, AuditStore, StoredEntry};
use keyturn::ports::checkpoint::{
    CheckpointPages, CheckpointSigner, CheckpointStore, PublicKey, Signature, SignedCheckpoint,
};

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

    for writers in WRITERS {
        let path = dir
            .path()
            .join(format!("writers{writers}"))
            .join("audit.db");
        let key = Arc::new(LocalSigningKey::load_or_create(
            &path.with_file_name("audit-signing.key"),
        )?);
        let file = path.with_file_name("audit-checkpoints.log");
        let mut logs = Vec::new();
        for writer in 0..writers {
            // Each writer's checkpoints on its own store's connection, as `keyturn` keeps them.
            let local = LocalStore::open(&path)?;
            let checkpoints = LocalCheckpoints::open_for_writing(local.clone(), &file).await?;
            let store = LocalAuditStore::with_chain(local, ChainId::parse(format!("w-{writer}"))?);
            logs.push((
                Arc::new(store) as Arc<dyn AuditStore>,
                Anchor {
                    checkpoints: Arc::new(checkpoints) as Arc<dyn CheckpointStore>,
                    signer: key.clone(),
                },
            ));
        }
        let local = LocalStore::open(&path)?;
        let whole = LocalAuditStore::new(local.clone());
        let label = SQLITE_WRITER_LABELS[writers.trailing_zeros() as usize];
        let checkpoints = LocalCheckpoints::reader(local, &file);
        rows.push((
            label,
            measure_anchored(logs, &whole, &checkpoints, key.as_ref()).await?,
        ));
    }

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
            match std::env::var("KEYTURN_TEST_BLOB_ENDPOINT") {
                Ok(blob_endpoint) => {
                    for writers in WRITERS {
                        let key = Arc::new(LocalSigningKey::load_or_create(
                            &dir.path().join(format!("azure{writers}.key")),
                        )?);
                        let table = table_store(&endpoint).await?;
                        let container = ContainerName::parse(&format!(
                            "auditbench-{}",
                            &uuid::Uuid::new_v4().simple().to_string()[..16]
                        ))?;
                        let blob = blob_client(&blob_endpoint)?;
                        blob.create_container_if_not_exists(&container).await?;
                        let checkpoints = || -> Arc<dyn CheckpointStore> {
                            Arc::new(BlobCheckpointStore::new(blob.clone(), container.clone()))
                        };
                        let mut logs = Vec::new();
                        for writer in 0..writers {
                            let chain = ChainId::parse(format!("w-{writer}"))?;
                            let store = table
                                .for_chain(&chain)
                                .ok_or("the table store holds chains")?;
                            logs.push((
                                store,
                                Anchor {
                                    checkpoints: checkpoints(),
                                    signer: key.clone(),
                                },
                            ));
                        }
                        let label = TABLE_WRITER_LABELS[writers.trailing_zeros() as usize];
                        rows.push((
                            label,
                            measure_anchored(logs, &table, checkpoints().as_ref(), key.as_ref())
                                .await?,
                        ));
                    }
                }
                Err(_) => println!(
                    "anchored Table rows skipped: set KEYTURN_TEST_BLOB_ENDPOINT to an Azurite blob endpoint"
                ),
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
    println!(
        "\nAnchored rows: every stored batch's head in a signed checkpoint, the heads waiting at each write under one signature (Key Vault allows 4,000 operations per 10 s per vault, 400/s, shared with everything else that uses it)\n"
    );
    println!(
        "| store                                               | batches/s | signs/s |      signs per batch | checkpoint writes/s |     batches per write |"
    );
    println!(
        "|-----------------------------------------------------|-----------|---------|----------------------|---------------------|-----------------------|"
    );
    for (label, figures) in &rows {
        let Some((signs_per_batch, per_write)) = figures.anchoring else {
            continue;
        };
        let batches = figures.per_second / figures.entries_per_write.max(f64::MIN_POSITIVE);
        let signs = batches * signs_per_batch;
        println!(
            "| {label:<51} | {batches:>9.0} | {signs:>7.0} | {signs_per_batch:>20.2} | {:>19.0} | {per_write:>21.1} |",
            batches / per_write.max(f64::MIN_POSITIVE),
        );
    }
    for (label, figures) in &rows {
        if !figures.intact {
            return Err(format!("{label}: the chain did not verify after the run").into());
        }
    }
    println!(
        "\n- every row's log verified intact after the run (anchored rows: every chain against its signed checkpoints)"
    );
    Ok(())
}

/// Writer counts measured, each writer with a chain of its own.
const WRITERS: [usize; 3] = [1, 2, 4];
const SQLITE_WRITER_LABELS: [&str; 3] = [
    "SQLite, 1 writer, anchored",
    "SQLite, 2 writers, own chains, anchored",
    "SQLite, 4 writers, own chains, anchored",
];
const TABLE_WRITER_LABELS: [&str; 3] = [
    "Table + Blob (Azurite), 1 writer, anchored",
    "Table + Blob (Azurite), 2 writers, own chains, anchored",
    "Table + Blob (Azurite), 4 writers, own chains, anchored",
];

fn blob_client(endpoint: &str) -> BenchResult<BlobClient> {
    Ok(BlobClient::new(
        url::Url::parse(endpoint)?,
        BlobAuth::SharedKey {
            account: "devstoreaccount1".to_owned(),
            key: SecretValue::new(AZURITE_ACCOUNT_KEY),
        },
        None,
    )?)
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
    /// Anchored rows: signatures per stored batch, and stored batches whose heads each
    /// checkpoint write carries (a commit and a file write locally, an append block in
    /// Azure).
    anchoring: Option<(f64, f64)>,
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
    let mut figures = run_appenders(std::slice::from_ref(&log)).await?;
    let (writes, entries) = *counting.writes.lock().expect("bench lock");
    figures.entries_per_write = entries as f64 / writes.max(1) as f64;
    figures.intact = log.verify().await?.is_intact();
    Ok(figures)
}

/// [`APPENDERS`] appenders, appender `n` appending through `logs[n % logs.len()]`, for
/// the warm-up and the measured window.
async fn run_appenders(logs: &[AuditLog]) -> BenchResult<Figures> {
    let started = Instant::now();
    let measured_from = started + WARM_UP;
    let until = measured_from + MEASURED;
    let mut appenders = tokio::task::JoinSet::new();
    for appender in 0..APPENDERS {
        let log = logs[appender % logs.len()].clone();
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
    latencies.sort_unstable();
    let at = |fraction: f64| {
        let index = ((latencies.len() as f64 * fraction).ceil() as usize).saturating_sub(1);
        latencies
            .get(index)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Figures {
        per_second: latencies.len() as f64 / MEASURED.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        entries_per_write: 0.0,
        intact: false,
        anchoring: None,
    })
}

/// Runs [`APPENDERS`] appenders shared out among `writers` (each its own anchored
/// log), then verifies the whole log in `whole` against the checkpoints.
async fn measure_anchored(
    writers: Vec<(Arc<dyn AuditStore>, Anchor)>,
    whole: &dyn AuditStore,
    checkpoints: &dyn CheckpointStore,
    key: &dyn CheckpointSigner,
) -> BenchResult<Figures> {
    let mut logs = Vec::new();
    let mut counters = Vec::new();
    let signs = Arc::new(AtomicU64::new(0));
    let checkpoint_writes = Arc::new(AtomicU64::new(0));
    for (store, anchor) in writers {
        let counting = Arc::new(Counting {
            inner: store,
            max_batch: None,
            writes: Mutex::new((0, 0)),
        });
        let anchor = Anchor {
            checkpoints: Arc::new(CountingCheckpoints {
                inner: anchor.checkpoints,
                writes: checkpoint_writes.clone(),
            }),
            signer: Arc::new(CountingSigner {
                inner: anchor.signer,
                signs: signs.clone(),
            }),
        };
        logs.push(AuditLog::start_anchored(counting.clone(), Some(anchor))?);
        counters.push(counting);
    }
    let mut figures = run_appenders(&logs).await?;
    for log in &logs {
        log.flush().await?;
    }
    let (writes, entries) = counters.iter().fold((0, 0), |(w, e), c| {
        let counted = *c.writes.lock().expect("bench lock");
        (w + counted.0, e + counted.1)
    });
    figures.entries_per_write = entries as f64 / writes.max(1) as f64;
    let signs = signs.load(Ordering::Relaxed) as f64;
    figures.anchoring = Some((
        signs / writes.max(1) as f64,
        writes as f64 / checkpoint_writes.load(Ordering::Relaxed).max(1) as f64,
    ));
    let public = key.public_key().await?;
    let report = verify_log(whole, Some(checkpoints), Some(&public)).await?;
    figures.intact = report.is_intact() && report.chains.len() == logs.len();
    if !figures.intact {
        eprintln!("{report}");
    }
    Ok(figures)
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
    fn chain(&self) -> ChainId {
        self.inner.chain()
    }

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

/// The signer under test, counting signatures.
#[derive(Debug)]
struct CountingSigner {
    inner: Arc<dyn CheckpointSigner>,
    signs: Arc<AtomicU64>,
}

#[async_trait]
impl CheckpointSigner for CountingSigner {
    async fn sign(&self, message: &[u8]) -> Result<Signature, PortError> {
        self.signs.fetch_add(1, Ordering::Relaxed);
        self.inner.sign(message).await
    }

    async fn public_key(&self) -> Result<PublicKey, PortError> {
        self.inner.public_key().await
    }
}

/// The checkpoint store under test, counting writes (each one sync or append block).
#[derive(Debug)]
struct CountingCheckpoints {
    inner: Arc<dyn CheckpointStore>,
    writes: Arc<AtomicU64>,
}

#[async_trait]
impl CheckpointStore for CountingCheckpoints {
    async fn append_all(&self, checkpoints: &[SignedCheckpoint]) -> Result<(), PortError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.append_all(checkpoints).await
    }

    async fn pages(&self, page: usize) -> Result<Box<dyn CheckpointPages + '_>, PortError> {
        self.inner.pages(page).await
    }
}
