//! Discovery at scale against the HTTPS stand-ins: 100,000 vault objects across 200
//! vaults and 20,000 applications, Key Vault pages of 25 and Graph pages as Graph gives
//! them, each service with a round trip of its own. Reports the wall-clock time against
//! the lower bound set by the requests, their latency and the allowed parallelism, the
//! scanner's peak memory over what the seeded stand-ins hold (at two tenant sizes: it
//! must not grow with the tenant), and the requests each service answered.
//!
//! The inventory store counts what it is given and keeps nothing: the scanner must
//! stream, and nothing else in the process may hide that it does not.
//!
//! Run: `cargo bench --bench discovery` (`KEYTURN_BENCH_SCALE=0.1` for a tenth).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::http::ClientOptions;
use chrono::Duration as Days;
use keyturn_standins::{
    CertificateSeed, KeyCredentialSeed, KeySeed, OwnerUser, Permissions, SecretSeed, Service,
    Standins, VaultProperties,
};

use keyturn::adapters::azure::client::http::default_client_options;
use keyturn::adapters::azure::client::resource_manager::ResourceManagerClient;
use keyturn::adapters::azure::graph::GraphClient;
use keyturn::adapters::azure::vault_catalog::{KEY_VAULT_SCOPE, KeyVaultCatalog};
use keyturn::discovery::budget::{Budgets, WINDOW};
use keyturn::discovery::{Discovery, run_sweep};
use keyturn::domain::inventory::{
    CredentialFilter, CredentialSource, InventoryCredential, InventoryVault, Scope, ScopeFinding,
    SweepId, SweepSnapshot,
};
use keyturn::ports::PortError;
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
/// Requests one vault job has in flight at most: its secrets, certificates and keys
/// listings, read at once.
const LISTINGS_PER_VAULT: usize = 3;
/// Key Vault's page (the stand-in's, as the service's).
const KEY_VAULT_PAGE: usize = 25;
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    bound: Duration,
    peak_over_seeded_kib: u64,
    requests: [(Service, u64); 3],
    credentials: u64,
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
    let credential = standins.credential_for(&identity);
    let options = ClientOptions {
        transport: standins.client_options().transport,
        ..default_client_options()
    };
    let store = Arc::new(CountingStore::default());
    let budgets = Budgets::default();
    let discovery = Discovery::new(
        Arc::new(
            ResourceManagerClient::new(
                standins.resource_manager().url(),
                credential.clone(),
                Some(options.clone()),
            )
            .expect("https"),
        ),
        Arc::new(KeyVaultCatalog::new(
            credential.clone(),
            KEY_VAULT_SCOPE,
            Some(options.clone()),
        )),
        Arc::new(
            GraphClient::with_scope(
                standins.graph().url(),
                GRAPH_SCOPE.to_owned(),
                credential,
                Some(options),
            )
            .expect("https"),
        ),
        store.clone(),
        budgets,
    );
    standins.set_service_latency(Service::KeyVault, KEY_VAULT_LATENCY);
    standins.set_service_latency(Service::Graph, GRAPH_LATENCY);
    standins.set_service_latency(Service::ResourceManager, RESOURCE_MANAGER_LATENCY);
    standins.set_service_latency(Service::Entra, Duration::from_millis(20));
    standins.clear_requests();

    let (seeded_rss, _) = memory();
    reset_peak();
    let started = Instant::now();
    run_sweep(
        &discovery,
        SweepId::parse("bench").expect("valid"),
        Vec::new(),
        PARALLELISM,
        now,
    )
    .await
    .expect("the sweep completes");
    let wall = started.elapsed();
    let (_, peak) = memory();

    let requests = [
        (Service::KeyVault, standins.request_count(Service::KeyVault)),
        (Service::Graph, standins.request_count(Service::Graph)),
        (
            Service::ResourceManager,
            standins.request_count(Service::ResourceManager),
        ),
    ];
    // The lower bound: every request's latency spread over the requests that may be in
    // flight at once (32 jobs, a vault job reading its three listings at once), but never
    // less than what the Graph budget lets through, nor than the longest chain of requests
    // one listing makes one after another (keys: a page, then a get and a rotation policy
    // per key).
    let work = KEY_VAULT_LATENCY * requests[0].1 as u32
        + GRAPH_LATENCY * requests[1].1 as u32
        + RESOURCE_MANAGER_LATENCY * requests[2].1 as u32;
    let spread = work / (PARALLELISM * LISTINGS_PER_VAULT) as u32;
    let graph_budget = WINDOW * requests[1].1 as u32 / budgets.graph;
    let secrets = OBJECTS_PER_VAULT - CERTIFICATES_PER_VAULT - KEYS_PER_VAULT;
    let chains = [
        secrets.div_ceil(KEY_VAULT_PAGE),
        CERTIFICATES_PER_VAULT.div_ceil(KEY_VAULT_PAGE) + CERTIFICATES_PER_VAULT,
        KEYS_PER_VAULT.div_ceil(KEY_VAULT_PAGE) + 2 * KEYS_PER_VAULT,
    ];
    let vault_chain = KEY_VAULT_LATENCY * chains.into_iter().max().unwrap_or(0) as u32;
    let bound = spread.max(graph_budget).max(vault_chain);
    Run {
        wall,
        bound,
        peak_over_seeded_kib: peak.saturating_sub(seeded_rss),
        requests,
        credentials: store.credentials.load(Ordering::Relaxed),
    }
}

fn main() {
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
        println!(
            "  wall-clock {:.2} s, lower bound {:.2} s (requests x latency / ({PARALLELISM} jobs x {LISTINGS_PER_VAULT} listings), Graph budget, longest listing): {:.2}x",
            result.wall.as_secs_f64(),
            result.bound.as_secs_f64(),
            result.wall.as_secs_f64() / result.bound.as_secs_f64()
        );
        println!(
            "  peak memory over the seeded stand-ins: {} KiB",
            result.peak_over_seeded_kib
        );
        for (service, count) in result.requests {
            println!("  requests to {service:?}: {count}");
        }
    }
}
