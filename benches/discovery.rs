//! Discovery at scale against the HTTPS stand-ins: 100,000 vault objects across 200
//! vaults and 20,000 applications, Key Vault pages of 25 and Graph pages as Graph gives
//! them, each service with a round trip of its own. Reports the wall-clock time against
//! the lower bound set by the requests, their latency and the allowed parallelism, the
//! scanner's peak memory (at two tenant sizes: it must not grow with the tenant), and the
//! requests each service answered.
//!
//! The scanner runs in a child process of its own (this bench started again with
//! `KEYTURN_BENCH_DISCOVERY_SCANNER` set): the stand-ins, their seeded tenant, their
//! response buffers and their side of every connection stay in the parent, so the child's
//! memory is the scanner's alone. The child reports its heap (a counting allocator over
//! mimalloc, the binary's allocator: the most allocated at once during the sweep, over
//! what was allocated before it) and its resident set (the high-water mark over the
//! resident set before the sweep). The inventory store is a sink that counts what it is
//! given and keeps nothing: the scanner must stream, and nothing else in the process may
//! hide that it does not. The catalogs are wrapped to time every call: where the
//! wall-clock goes beyond the bound (how busy each service was kept, how far Graph fell
//! behind what its budget allowed) is printed from those counts.
//!
//! Run: `cargo bench --bench discovery` (`KEYTURN_BENCH_SCALE=0.1` for a tenth).

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::http::{ClientOptions, Transport};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration as Days, Utc};
use keyturn_standins::{
    CertificateSeed, KeyCredentialSeed, KeySeed, OwnerUser, Permissions, SecretSeed, Service,
    StandinCredential, Standins, VaultProperties,
};

use keyturn::adapters::azure::client::http::default_client_options;
use keyturn::adapters::azure::client::resource_manager::ResourceManagerClient;
use keyturn::adapters::azure::graph::GraphClient;
use keyturn::adapters::azure::vault_catalog::{self, KEY_VAULT_SCOPE, KeyVaultCatalog};
use keyturn::discovery::budget::{Budgets, WINDOW};
use keyturn::discovery::{DETAILS_AT_ONCE, Discovery, run_sweep};
use keyturn::domain::ids::{AppId, DirectoryObjectId, KeyId};
use keyturn::domain::inventory::{
    Adoption, CertificateDetails, CredentialFilter, CredentialSource, InventoryCredential,
    InventoryVault, KeyDetails, Scope, ScopeFinding, SweepId, SweepSnapshot,
};
use keyturn::ports::PortError;
use keyturn::ports::catalog::{
    CatalogPage, Cursor, DirectoryCatalog, DirectoryRange, ObjectKind, RequestBudget, Stamp,
    VaultCatalog, VaultRef,
};
use keyturn::ports::inventory::{InventoryStore, Page, PageToken};

const VAULTS: usize = 200;
const OBJECTS_PER_VAULT: usize = 500;
/// Of each vault's objects: certificates and keys (each read with one or two `GET`s
/// more); the rest are secrets.
const CERTIFICATES_PER_VAULT: usize = 10;
const KEYS_PER_VAULT: usize = 10;
const APPLICATIONS: usize = 20_000;
/// Round trips: a Key Vault list or get in the same region, a Resource Manager list, a
/// Graph page of 100 directory objects with their owners expanded.
const KEY_VAULT_LATENCY: Duration = Duration::from_millis(25);
const RESOURCE_MANAGER_LATENCY: Duration = Duration::from_millis(60);
const GRAPH_LATENCY: Duration = Duration::from_millis(150);
/// Jobs run at once: what one Functions instance runs (host.json `maxConcurrentCalls`
/// for the discovery queue).
const PARALLELISM: usize = 32;
/// Requests one vault job has in flight at most: its secrets listing, and the details or
/// versions of up to `DETAILS_AT_ONCE` certificates and as many keys (their listings wait
/// while a page's objects are read).
const IN_FLIGHT_PER_VAULT_JOB: usize = 1 + 2 * DETAILS_AT_ONCE;
/// Key Vault's page (the stand-in's, as the service's).
const KEY_VAULT_PAGE: usize = 25;
/// A Graph page of directory objects with a relationship expanded holds at most 100.
const GRAPH_EXPANDED_PAGE: usize = 100;
/// Resource Manager's page of vaults.
const RESOURCE_MANAGER_PAGE: usize = 100;
/// Directory ranges per kind: one per hex digit of the appId.
const RANGES: usize = 16;
/// Requests per object after its listing page, one after another: a certificate's `GET`
/// and one page of versions; a key's `GET`, its rotation policy and one page of versions
/// (each seeded object has one version).
const CERTIFICATE_REQUESTS: usize = 2;
const KEY_REQUESTS: usize = 3;
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// mimalloc (the binary's allocator), counting the bytes allocated now and the most
/// allocated at once since the last reset.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let now = CURRENT.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed to mimalloc unchanged; only counters change.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !pointer.is_null() {
            grew(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(pointer, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !pointer.is_null() {
            grew(layout.size());
        }
        pointer
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { mimalloc::MiMalloc.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How often the scanner's heap is sampled during the sweep.
const HEAP_SAMPLE: Duration = Duration::from_millis(20);

/// Set in the child process that runs the scanner; its standard input is the
/// [`ScannerSetup`] as JSON.
const SCANNER_VARIABLE: &str = "KEYTURN_BENCH_DISCOVERY_SCANNER";

/// Counts writes; holds nothing.
#[derive(Debug, Default)]
struct CountingStore {
    credentials: AtomicU64,
    findings: AtomicU64,
}

#[async_trait]
impl InventoryStore for CountingStore {
    async fn put_credentials(&self, credentials: &[InventoryCredential]) -> Result<(), PortError> {
        self.credentials
            .fetch_add(credentials.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    async fn put_vault(&self, _: &InventoryVault) -> Result<(), PortError> {
        Ok(())
    }
    async fn put_finding(&self, _: &ScopeFinding) -> Result<(), PortError> {
        self.findings.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn put_snapshot(&self, _: &SweepSnapshot) -> Result<(), PortError> {
        Ok(())
    }
    async fn retire_unseen(&self, _: &CredentialSource, _: &SweepId) -> Result<u64, PortError> {
        Ok(0)
    }
    async fn clear_findings(&self, _: &Scope, _: &SweepId) -> Result<u64, PortError> {
        Ok(0)
    }
    async fn put_adoptions(&self, _: &[Adoption]) -> Result<(), PortError> {
        Ok(())
    }
    async fn adopted(&self, _: &[AppId]) -> Result<BTreeSet<(AppId, KeyId)>, PortError> {
        Ok(BTreeSet::new())
    }
    async fn retire_adoptions(
        &self,
        _: &CredentialSource,
        _: &SweepId,
    ) -> Result<Vec<(AppId, KeyId)>, PortError> {
        Ok(Vec::new())
    }
    async fn mark_adopted(&self, _: &[(AppId, KeyId)], _: bool) -> Result<u64, PortError> {
        Ok(0)
    }
    async fn credentials(
        &self,
        _: &CredentialFilter,
        _: Option<&PageToken>,
        _: u32,
    ) -> Result<Page<InventoryCredential>, PortError> {
        Ok(Page {
            items: Vec::new(),
            next: None,
        })
    }
    async fn vaults(
        &self,
        _: Option<&PageToken>,
        _: u32,
    ) -> Result<Page<InventoryVault>, PortError> {
        Ok(Page {
            items: Vec::new(),
            next: None,
        })
    }
    async fn findings(
        &self,
        _: Option<&PageToken>,
        _: u32,
    ) -> Result<Page<ScopeFinding>, PortError> {
        Ok(Page {
            items: Vec::new(),
            next: None,
        })
    }
    async fn snapshots(
        &self,
        _: Option<&PageToken>,
        _: u32,
    ) -> Result<Page<SweepSnapshot>, PortError> {
        Ok(Page {
            items: Vec::new(),
            next: None,
        })
    }
}

/// Every call to one service, timed from the sweep's start: how many, when the first
/// started and the last started and ended, and their summed duration (busy time over the
/// span is the mean number in flight).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Calls {
    count: u64,
    first_start: Option<Duration>,
    last_start: Duration,
    last_end: Duration,
    busy: Duration,
}

#[derive(Debug)]
struct Timeline {
    started: Instant,
    calls: std::sync::Mutex<Calls>,
}

impl Timeline {
    fn new(started: Instant) -> Self {
        Self {
            started,
            calls: std::sync::Mutex::new(Calls::default()),
        }
    }

    async fn time<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        let start = Instant::now();
        let out = call.await;
        let end = Instant::now();
        let mut calls = self.calls.lock().expect("never poisoned");
        let (start, end) = (start - self.started, end - self.started);
        calls.count += 1;
        calls.first_start = Some(calls.first_start.map_or(start, |f| f.min(start)));
        calls.last_start = calls.last_start.max(start);
        calls.last_end = calls.last_end.max(end);
        calls.busy += end - start;
        out
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().expect("never poisoned")
    }
}

/// Key Vault's catalog, each call timed.
#[derive(Debug)]
struct TimedVaults(KeyVaultCatalog, Arc<Timeline>);

#[async_trait]
impl VaultCatalog for TimedVaults {
    async fn objects(
        &self,
        vault: &VaultRef,
        kind: ObjectKind,
        after: Option<&Cursor>,
        stamp: &Stamp,
    ) -> Result<CatalogPage<InventoryCredential>, PortError> {
        self.1.time(self.0.objects(vault, kind, after, stamp)).await
    }
    async fn certificate(
        &self,
        vault: &VaultRef,
        name: &str,
    ) -> Result<CertificateDetails, PortError> {
        self.1.time(self.0.certificate(vault, name)).await
    }
    async fn key(&self, vault: &VaultRef, name: &str) -> Result<KeyDetails, PortError> {
        self.1.time(self.0.key(vault, name)).await
    }
    fn detail_requests(&self, kind: ObjectKind) -> u32 {
        self.0.detail_requests(kind)
    }
    async fn versions(
        &self,
        vault: &VaultRef,
        kind: ObjectKind,
        name: &str,
        after: Option<&Cursor>,
    ) -> Result<(u32, Option<Cursor>), PortError> {
        self.1.time(self.0.versions(vault, kind, name, after)).await
    }
}

/// Graph's catalog, each call timed.
#[derive(Debug)]
struct TimedDirectory(GraphClient, Arc<Timeline>);

#[async_trait]
impl DirectoryCatalog for TimedDirectory {
    async fn credentials(
        &self,
        range: &DirectoryRange,
        after: Option<&Cursor>,
        stamp: &Stamp,
        budget: &dyn RequestBudget,
    ) -> Result<CatalogPage<InventoryCredential>, PortError> {
        self.1
            .time(self.0.credentials(range, after, stamp, budget))
            .await
    }
    async fn federated_credential_counts(
        &self,
        range: &DirectoryRange,
        after: Option<&Cursor>,
    ) -> Result<CatalogPage<(DirectoryObjectId, u32)>, PortError> {
        self.1
            .time(self.0.federated_credential_counts(range, after))
            .await
    }
}

/// Resident set size and its high-water mark, in KiB (`/proc/self/status`).
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the high-water mark to the current RSS (Linux `clear_refs` value 5).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Run {
    wall: Duration,
    bound: Bound,
    scanner: Memory,
    /// The stand-ins' resident set during the sweep over what they held seeded (the
    /// parent process's; not the scanner's).
    standins_over_seeded_kib: u64,
    requests: [(Service, u64); 3],
    /// Key Vault requests as derived from the tenant's shape.
    key_vault_derived: u64,
    credentials: u64,
    graph: Calls,
    key_vault: Calls,
}

/// The lower bound's terms: the wall-clock can beat none of them.
struct Bound {
    /// Every request's latency over the most requests that can be in flight at once.
    spread: Duration,
    /// Key Vault requests over what the vault budgets let through with every slot on a
    /// vault.
    vault_budget: Duration,
    /// The Graph budget: the first page waits for the subscription list (which queues the
    /// directory jobs), then one page per spacing, the last answered a latency later.
    graph_budget: Duration,
    /// The longest chain of requests that must follow one another.
    chain: Duration,
}

impl Bound {
    fn max(&self) -> Duration {
        self.spread
            .max(self.vault_budget)
            .max(self.graph_budget)
            .max(self.chain)
    }
}

/// The scanner process's memory over the sweep.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Memory {
    /// The most heap allocated at once during the sweep, over what was allocated before.
    heap_peak_kib: u64,
    /// The median of the heap sampled every [`HEAP_SAMPLE`] through the sweep, over what
    /// was allocated before.
    heap_median_kib: u64,
    /// Heap still allocated when the sweep returned, over what was allocated before.
    heap_left_kib: u64,
    /// The resident set's high-water mark during the sweep, over the resident set
    /// before it.
    rss_peak_kib: u64,
    /// The resident set before the sweep (runtime, clients, the binary).
    rss_before_kib: u64,
}

/// What the scanner process is given: where the stand-ins are, the identity it signs in
/// as, the CA it trusts, and the tenant's clock.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ScannerSetup {
    resource_manager: String,
    graph: String,
    token: String,
    client_id: uuid::Uuid,
    client_secret: String,
    ca_der: String,
    now: DateTime<Utc>,
}

/// What the scanner process reports.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ScannerReport {
    wall: Duration,
    memory: Memory,
    credentials: u64,
    graph: Calls,
    key_vault: Calls,
}

async fn run(scale: f64) -> Run {
    let vaults = ((VAULTS as f64 * scale).ceil() as usize).max(1);
    let applications = ((APPLICATIONS as f64 * scale).ceil() as usize).max(1);
    let standins = Standins::start().await.expect("stand-ins start");
    standins.count_requests_only(true);
    let now = standins.now();
    let arm = standins.resource_manager();
    let subscription = arm.seed_subscription("bench");
    // One certificate re-used for every seeded one: the bench measures discovery, not
    // certificate generation.
    let template = keyturn_standins::TestCa::root("bench").cert_der().to_vec();
    for v in 0..vaults {
        let vault = standins.add_vault().await.expect("a vault starts");
        let secrets = OBJECTS_PER_VAULT - CERTIFICATES_PER_VAULT - KEYS_PER_VAULT;
        for i in 0..secrets {
            vault.seed_secret(
                SecretSeed::new(format!("secret-{i:04}"), "v")
                    .expires(now + Days::days((i % 400) as i64)),
            );
        }
        for i in 0..CERTIFICATES_PER_VAULT {
            vault.seed_certificate(
                CertificateSeed::new(
                    format!("cert-{i:02}"),
                    "CN=bench",
                    now,
                    now + Days::days(90),
                )
                .with_der(template.clone()),
            );
        }
        for i in 0..KEYS_PER_VAULT {
            vault.seed_key(KeySeed::rsa(format!("key-{i:02}"), 2048));
        }
        arm.seed_vault(
            subscription,
            &format!("kv-bench-{v:03}"),
            vault.url(),
            VaultProperties::default(),
        );
    }
    let graph = standins.graph();
    for i in 0..applications {
        let app = graph.seed_application(
            format!("app-{i:05}"),
            Permissions::only(Vec::<String>::new()),
        );
        graph.add_password(app.object_id, now + Days::days((i % 700) as i64), true);
        if i % 10 == 0 {
            graph.add_key_credential(
                app.object_id,
                KeyCredentialSeed::certificate("CN=app", now, now + Days::days(365)),
            );
            graph.add_owner_user(
                app.object_id,
                OwnerUser::new(
                    "Owner",
                    Some("owner@contoso.com"),
                    Some("owner@contoso.com"),
                ),
            );
        }
    }
    let identity = standins.seed_identity(
        "keyturn-discovery",
        Permissions::only([
            "secrets/list",
            "certificates/list",
            "certificates/get",
            "keys/list",
            "keys/get",
            "keys/getrotationpolicy",
            "Microsoft.KeyVault/vaults/read",
            "Application.Read.All",
        ]),
    );
    let setup = ScannerSetup {
        resource_manager: standins.resource_manager().url().to_string(),
        graph: standins.graph().url().to_string(),
        token: standins.token_url().to_string(),
        client_id: identity.app_id,
        client_secret: identity.client_secret().to_owned(),
        ca_der: STANDARD.encode(standins.ca().cert_der()),
        now,
    };
    standins.set_service_latency(Service::KeyVault, KEY_VAULT_LATENCY);
    standins.set_service_latency(Service::Graph, GRAPH_LATENCY);
    standins.set_service_latency(Service::ResourceManager, RESOURCE_MANAGER_LATENCY);
    standins.set_service_latency(Service::Entra, Duration::from_millis(20));
    standins.clear_requests();

    let (seeded_rss, _) = memory();
    reset_peak();
    let report = scanner_process(&setup).await;
    let (_, standins_peak) = memory();

    let requests = [
        (Service::KeyVault, standins.request_count(Service::KeyVault)),
        (Service::Graph, standins.request_count(Service::Graph)),
        (
            Service::ResourceManager,
            standins.request_count(Service::ResourceManager),
        ),
    ];
    let budgets = Budgets::default();
    let bound = lower_bound(vaults, applications, &requests, &budgets);
    let key_vault_derived = (vaults * vault_requests()) as u64;
    Run {
        wall: report.wall,
        bound,
        scanner: report.memory,
        standins_over_seeded_kib: standins_peak.saturating_sub(seeded_rss),
        requests,
        key_vault_derived,
        credentials: report.credentials,
        graph: report.graph,
        key_vault: report.key_vault,
    }
}

/// Runs the scanner in a child process (this bench again, [`SCANNER_VARIABLE`] set) and
/// reads its report.
async fn scanner_process(setup: &ScannerSetup) -> ScannerReport {
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("this bench"))
        .env(SCANNER_VARIABLE, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the scanner process starts");
    let input = serde_json::to_vec(setup).expect("JSON");
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(&input).await.expect("the setup is sent");
    }
    let output = child.wait_with_output().await.expect("the scanner ends");
    assert!(output.status.success(), "the scanner failed: {output:?}");
    serde_json::from_slice(&output.stdout).expect("the scanner's report")
}

/// The child process: runs the sweep against the stand-ins its setup names, the
/// inventory a sink, and prints its [`ScannerReport`].
fn scanner() {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .expect("the setup is read");
    let setup: ScannerSetup = serde_json::from_slice(&input).expect("the setup");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let report = runtime.block_on(scan(setup));
    let mut stdout = std::io::stdout();
    serde_json::to_writer(&mut stdout, &report).expect("the report is written");
    stdout.flush().expect("flushed");
}

async fn scan(setup: ScannerSetup) -> ScannerReport {
    let root = reqwest::Certificate::from_der(&STANDARD.decode(&setup.ca_der).expect("base64"))
        .expect("the stand-ins' CA");
    let trusting = || reqwest::Client::builder().tls_certs_only([root.clone()]);
    // The clients production builds, trusting the stand-ins' CA: Key Vault's with
    // discovery's connection policy, the others as azure_core builds them.
    let client = trusting()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client");
    let vault_client = vault_catalog::http_client(trusting()).expect("an HTTP client");
    let credential = Arc::new(StandinCredential::new(
        client.clone(),
        url::Url::parse(&setup.token).expect("the token URL"),
        setup.client_id,
        setup.client_secret,
    ));
    let options = ClientOptions {
        transport: Some(Transport::new(Arc::new(client))),
        ..default_client_options()
    };
    let store = Arc::new(CountingStore::default());
    let budgets = Budgets::default();
    let started = Instant::now();
    let graph_timeline = Arc::new(Timeline::new(started));
    let vault_timeline = Arc::new(Timeline::new(started));
    let discovery = Discovery::new(
        Arc::new(
            ResourceManagerClient::new(
                &url::Url::parse(&setup.resource_manager).expect("a URL"),
                credential.clone(),
                Some(options.clone()),
            )
            .expect("https"),
        ),
        Arc::new(TimedVaults(
            KeyVaultCatalog::new(
                credential.clone(),
                KEY_VAULT_SCOPE,
                Some(ClientOptions {
                    transport: Some(Transport::new(Arc::new(vault_client))),
                    ..default_client_options()
                }),
            ),
            vault_timeline.clone(),
        )),
        Arc::new(TimedDirectory(
            GraphClient::with_scope(
                &url::Url::parse(&setup.graph).expect("a URL"),
                GRAPH_SCOPE.to_owned(),
                credential,
                Some(options),
            )
            .expect("https"),
            graph_timeline.clone(),
        )),
        store.clone(),
        budgets,
    );

    let (rss_before, _) = memory();
    let heap_before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(heap_before, Ordering::Relaxed);
    reset_peak();
    // The timelines count from here (the catalogs were built before).
    let started_now = Instant::now();
    let shift = started_now - started;
    // The heap every HEAP_SAMPLE through the sweep: its median shows what the scanner
    // holds as it goes, where the peak is one moment's coincidence of page buffers.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push(CURRENT.load(Ordering::Relaxed));
                std::thread::sleep(HEAP_SAMPLE);
            }
            samples
        })
    };
    run_sweep(
        &discovery,
        SweepId::parse("bench").expect("valid"),
        Vec::new(),
        PARALLELISM,
        setup.now,
    )
    .await
    .expect("the sweep completes");
    let wall = started_now.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut samples = sampler.join().expect("the sampler ends");
    samples.sort_unstable();
    let heap_median = samples
        .get(samples.len() / 2)
        .copied()
        .unwrap_or(heap_before);
    let (_, rss_peak) = memory();
    let heap_peak = PEAK.load(Ordering::Relaxed);
    let heap_left = CURRENT.load(Ordering::Relaxed);
    let since_sweep = |timeline: &Timeline| {
        let calls = timeline.calls();
        Calls {
            count: calls.count,
            first_start: calls.first_start.map(|f| f.saturating_sub(shift)),
            last_start: calls.last_start.saturating_sub(shift),
            last_end: calls.last_end.saturating_sub(shift),
            busy: calls.busy,
        }
    };
    let kib = |bytes: usize| (bytes / 1024) as u64;
    ScannerReport {
        wall,
        memory: Memory {
            heap_peak_kib: kib(heap_peak.saturating_sub(heap_before)),
            heap_median_kib: kib(heap_median.saturating_sub(heap_before)),
            heap_left_kib: kib(heap_left.saturating_sub(heap_before)),
            rss_peak_kib: rss_peak.saturating_sub(rss_before),
            rss_before_kib: rss_before,
        },
        credentials: store.credentials.load(Ordering::Relaxed),
        graph: since_sweep(&graph_timeline),
        key_vault: since_sweep(&vault_timeline),
    }
}

const SECRETS_PER_VAULT: usize = OBJECTS_PER_VAULT - CERTIFICATES_PER_VAULT - KEYS_PER_VAULT;

/// The Key Vault requests of one vault: each listing's pages, and per certificate and key
/// the requests after its listing.
fn vault_requests() -> usize {
    SECRETS_PER_VAULT.div_ceil(KEY_VAULT_PAGE)
        + CERTIFICATES_PER_VAULT.div_ceil(KEY_VAULT_PAGE)
        + CERTIFICATES_PER_VAULT * CERTIFICATE_REQUESTS
        + KEYS_PER_VAULT.div_ceil(KEY_VAULT_PAGE)
        + KEYS_PER_VAULT * KEY_REQUESTS
}

/// The lower bound, derived from what discovery must send and what may overlap, never
/// from a measured time:
///
/// - spread: every request's latency (the counted requests) over the most that can be in
///   flight, `PARALLELISM` jobs each with at most `IN_FLIGHT_PER_VAULT_JOB`;
/// - vault budget: the Key Vault requests over `PARALLELISM` vaults each at its budget;
/// - Graph budget: the directory jobs start after the subscription list (one Resource
///   Manager request), then the counted Graph requests leave one per budget spacing, the
///   last answered one latency later;
/// - chain: the longest run of requests that must follow one another. A vault: the
///   subscription list, the vault pages up to the vault's, then the longest of its
///   listings (secrets: its pages; certificates and keys: a page, then rounds of
///   `DETAILS_AT_ONCE` objects, each object's requests one after another). An application
///   range: the subscription list, then its federated credential pages and its credential
///   pages, one list after the other; the largest range holds at least 1/16 of the
///   applications.
fn lower_bound(
    vaults: usize,
    applications: usize,
    requests: &[(Service, u64); 3],
    budgets: &Budgets,
) -> Bound {
    let times = |latency: Duration, n: usize| latency * u32::try_from(n).expect("small");
    let work = KEY_VAULT_LATENCY * requests[0].1 as u32
        + GRAPH_LATENCY * requests[1].1 as u32
        + RESOURCE_MANAGER_LATENCY * requests[2].1 as u32;
    let spread = work / (PARALLELISM * IN_FLIGHT_PER_VAULT_JOB) as u32;
    let vault_spacing = WINDOW / budgets.key_vault_per_vault;
    let vault_budget = vault_spacing * requests[0].1 as u32 / PARALLELISM as u32;
    let graph_spacing = WINDOW / budgets.graph;
    let graph_budget = RESOURCE_MANAGER_LATENCY
        + graph_spacing * (requests[1].1.saturating_sub(1)) as u32
        + GRAPH_LATENCY;
    let rounds = |objects: usize, each: usize| {
        objects.div_ceil(KEY_VAULT_PAGE) + objects.div_ceil(DETAILS_AT_ONCE) * each
    };
    let vault_chain = times(
        RESOURCE_MANAGER_LATENCY,
        1 + vaults.div_ceil(RESOURCE_MANAGER_PAGE),
    ) + times(
        KEY_VAULT_LATENCY,
        SECRETS_PER_VAULT
            .div_ceil(KEY_VAULT_PAGE)
            .max(rounds(CERTIFICATES_PER_VAULT, CERTIFICATE_REQUESTS))
            .max(rounds(KEYS_PER_VAULT, KEY_REQUESTS)),
    );
    let range_pages = applications.div_ceil(RANGES).div_ceil(GRAPH_EXPANDED_PAGE);
    let directory_chain = RESOURCE_MANAGER_LATENCY + times(GRAPH_LATENCY, 2 * range_pages);
    Bound {
        spread,
        vault_budget,
        graph_budget,
        chain: vault_chain.max(directory_chain),
    }
}

fn main() {
    if std::env::var_os(SCANNER_VARIABLE).is_some() {
        return scanner();
    }
    let scale: f64 = std::env::var("KEYTURN_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    for fraction in [scale / 5.0, scale] {
        let result = runtime.block_on(run(fraction));
        println!(
            "discovery at {:.0}% of the tenant ({} vaults x {} objects, {} applications): {} credentials",
            fraction * 100.0,
            ((VAULTS as f64 * fraction).ceil() as usize).max(1),
            OBJECTS_PER_VAULT,
            ((APPLICATIONS as f64 * fraction).ceil() as usize).max(1),
            result.credentials
        );
        let bound = result.bound.max();
        println!(
            "  wall-clock {:.2} s, lower bound {:.2} s: {:.2}x",
            result.wall.as_secs_f64(),
            bound.as_secs_f64(),
            result.wall.as_secs_f64() / bound.as_secs_f64()
        );
        println!(
            "  bound terms: spread over {} in flight {:.2} s, vault budgets {:.2} s, Graph budget {:.2} s, longest chain {:.2} s",
            PARALLELISM * IN_FLIGHT_PER_VAULT_JOB,
            result.bound.spread.as_secs_f64(),
            result.bound.vault_budget.as_secs_f64(),
            result.bound.graph_budget.as_secs_f64(),
            result.bound.chain.as_secs_f64(),
        );
        let memory = &result.scanner;
        println!(
            "  scanner's memory (its own process; the inventory a sink keeping nothing), over what it held before the sweep: heap median {} KiB, peak {} KiB, {} KiB still allocated at the end; resident peak {} KiB over {} KiB",
            memory.heap_median_kib,
            memory.heap_peak_kib,
            memory.heap_left_kib,
            memory.rss_peak_kib,
            memory.rss_before_kib
        );
        println!(
            "  stand-ins' resident set (the parent process) over what they held seeded: {} KiB",
            result.standins_over_seeded_kib
        );
        for (service, count) in result.requests {
            println!("  requests to {service:?}: {count}");
        }
        println!(
            "  Key Vault requests derived from the tenant: {} ({} per vault)",
            result.key_vault_derived,
            vault_requests()
        );
        let graph_spacing = WINDOW / Budgets::default().graph;
        for (name, calls, spacing) in [
            ("Graph", &result.graph, Some(graph_spacing)),
            ("Key Vault", &result.key_vault, None),
        ] {
            let first = calls.first_start.unwrap_or_default();
            let span = calls.last_end.saturating_sub(first);
            println!(
                "  {name} calls: {} from {:.2} s to {:.2} s, {:.0} ms each on average, {:.1} in flight on average",
                calls.count,
                first.as_secs_f64(),
                calls.last_end.as_secs_f64(),
                calls.busy.as_secs_f64() * 1000.0 / calls.count.max(1) as f64,
                calls.busy.as_secs_f64() / span.as_secs_f64().max(f64::EPSILON),
            );
            if let Some(spacing) = spacing {
                // When the budget would have let the last call leave, had every call left at
                // its first turn: the difference is time the budget stood idle.
                let allowed = first + spacing * calls.count.saturating_sub(1) as u32;
                println!(
                    "  Graph's last call left {:.2} s after its budget allowed",
                    calls.last_start.saturating_sub(allowed).as_secs_f64()
                );
            }
        }
    }
}
