//! Loopback load figures for the SecretEndpoint: an authorized `GET /api/secrets/{name}`
//! through the `X-ARR-ClientCert` path with a warm device cache, beside a bare axum
//! handler answering the same bytes in the same run; the latency of authorized reads
//! alone and while a flood of refused requests runs; what the audit log's checkpoints
//! cost authorized reads, against the same keyturn started without them, in alternating
//! adjacent windows; and full TLS handshakes per second against keyturn's own TLS
//! listener.
//!
//! Every measurement is bounded in time (a warm-up, then a fixed measured window) and the
//! program stops by itself, printing one table. keyturn is started as `serve` starts it:
//! its settings parsed by `Settings::from_env`, `startup::services_with` (the
//! `appsettings` backend, an audit log on a SQLite file), the real router or
//! `startup::spawn_tls`, JSON logs at `info`; only the device directory (an in-process
//! one standing in for Graph, so that the entra-device cache can be warmed) and the site
//! configuration the front-end check reads (an App Service front end requiring client
//! certificates) are put in place.
//!
//! Run: `cargo bench --bench endpoint`.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyturn_testkit::pki::{self, TestCa, rcgen};
use rcgen::{CertificateParams, SerialNumber};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsConnector;

use keyturn::audit::AuditLog;
use keyturn::config::{AuditCommandSettings, Environment, FUNCTIONS, Settings};
use keyturn::domain::ids::DeviceId;
use keyturn::domain::thumbprint::Thumbprint;
use keyturn::functions::secret_endpoint;
use keyturn::host::router::router;
use keyturn::host::server;
use keyturn::mtls::entra_device::{CERTIFICATE_BINDING_TYPE, binding_key};
use keyturn::ports::PortError;
use keyturn::ports::directory::{AlternativeSecurityId, Device, DeviceDirectory};
use keyturn::ports::site::SiteConfiguration;
use keyturn::startup::{self, Overrides};
use keyturn::telemetry;

/// Untimed requests before each measured window: fills the device cache, the rate
/// limiters' tables, SQLite's page cache and the allocator's pools.
const WARM_UP: Duration = Duration::from_secs(1);

/// The measured window. Five seconds of tens of thousands of requests gives stable
/// percentiles while keeping the whole run under a minute.
const MEASURED: Duration = Duration::from_secs(5);

/// Keep-alive connections for the request measurements: enough to keep both cores busy
/// on a 2-core machine, few enough that queueing does not dominate the latencies.
const CONNECTIONS: usize = 32;

/// Keep-alive connections for the authorized-read latency rows: a device fleet's steady
/// reads, well below what saturates the two cores, so the latency is the read's own.
const READ_CONNECTIONS: usize = 8;

/// The pairs of adjacent authorized-read windows measured against keyturn anchored and
/// without checkpoints, and which goes first in each (`true`: the one without); even
/// pairs measure the keyturns started first, odd pairs the two started after them.
/// Each side goes first in half the pairs of each, so a machine that speeds up or slows
/// down during the run favours neither; comparing each pair's two adjacent windows keeps
/// the drift of a shared machine (a disk's sync latency, a neighbour's load) out of the
/// difference.
const CHECKPOINT_COST_ORDER: [bool; 8] = [false, true, true, false, false, true, true, false];

/// Keep-alive connections sending refused requests (no certificate) back to back while
/// the authorized reads of the flood row are measured.
const FLOOD_CONNECTIONS: usize = 24;

/// Concurrent connections for the handshake measurement.
const HANDSHAKE_CONNECTIONS: usize = 32;

/// The grace period on top of warm-up and window after which a measurement is abandoned
/// (a hung server must not hang the benchmark).
const GRACE: Duration = Duration::from_secs(10);

/// Requests per minute for both rate limiters: far above what the run can send, so no
/// request is refused, while the limiters still do their per-request work.
const UNREACHABLE_RATE_LIMIT: u32 = 1_000_000_000;

/// The most response bytes read for one request; the answers here are a few hundred.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

const SECRET_NAME: &str = "db-password";
const SECRET_SETTING: &str = "KEYTURN_SECRET_DB_PASSWORD";
const SECRET_VALUE: &str = "bench-value-2f7c9e41d08a4b6c";
/// Where App Service reports the client; the per-address limiter keys on it.
const FORWARDED_FOR: &str = "203.0.113.7:50312";

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
        eprintln!("endpoint bench failed: {error}");
        std::process::exit(1);
    }
}

/// A failure of the benchmark itself (setup, a refused request, a hung server).
type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn run() -> BenchResult<()> {
    // Production logs one JSON line per invocation at `info`; pay for formatting it.
    telemetry::init_with_writer("info", io::sink)?;
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(dir.path())?;
    let sha256 = Thumbprint::of_der(pki.device.der.as_ref()).to_string();

    let mut rows = Vec::new();
    let mut notes = Vec::new();

    // 1. keyturn with entra-device, over the header path.
    let directory = Arc::new(BenchDirectory::new(&pki)?);
    let entra_policy = format!(
        r#"{{ "version": 1, "grants": [ {{ "name": "bench devices", "identities": [ {{ "deviceId": "{}" }} ], "secrets": [ "{SECRET_NAME}" ], "backend": "appsettings" }} ] }}"#,
        pki.device_id
    );
    let entra = [
        ("KEYTURN_TRUST_ARR_CLIENT_CERT", "true".to_owned()),
        ("KEYTURN_CERT_POLICIES", "entra-device".to_owned()),
        ("KEYTURN_ENTRA_DEVICE_ROOTS", path(&pki.roots)),
        (
            "KEYTURN_ENTRA_DEVICE_REQUIRE",
            "compliant,managed".to_owned(),
        ),
        ("KEYTURN_DEVICE_CACHE_SECONDS", "300".to_owned()),
        ("KEYTURN_ACCESS_POLICY", entra_policy),
    ];
    let entra_app =
        Keyturn::start(&dir.path().join("entra"), &entra, Some(directory.clone())).await?;

    // 2. keyturn with chain + trusted-thumbprints (revocation checked), same path.
    let chain_policy = format!(
        r#"{{ "version": 1, "grants": [ {{ "identities": [ {{ "thumbprint": "{sha256}" }} ], "secrets": [ "{SECRET_NAME}" ], "backend": "appsettings" }} ] }}"#
    );
    let chain = |trust_arr_header: bool| {
        vec![
            (
                "KEYTURN_TRUST_ARR_CLIENT_CERT",
                trust_arr_header.to_string(),
            ),
            (
                "KEYTURN_CERT_POLICIES",
                "chain,trusted-thumbprints".to_owned(),
            ),
            ("KEYTURN_TRUSTED_THUMBPRINTS", sha256.clone()),
            ("KEYTURN_CHAIN_ROOTS", path(&pki.roots)),
            ("KEYTURN_CHAIN_CRLS", path(&pki.crl)),
            ("KEYTURN_CHAIN_REVOCATION", "crl".to_owned()),
            ("KEYTURN_CLOCK_SKEW_SECONDS", "300".to_owned()),
            ("KEYTURN_ACCESS_POLICY", chain_policy.clone()),
        ]
    };
    let chain_app = Keyturn::start(&dir.path().join("chain"), &chain(true), None).await?;

    // The bare handler answers the bytes keyturn answers.
    let request = header_request(&pki);
    let (status, reference) = one_request(entra_app.address, &request).await?;
    if status != 200 || !contains(&reference, SECRET_VALUE.as_bytes()) {
        return Err(format!("keyturn did not serve the secret (status {status})").into());
    }
    let (status, other) = one_request(chain_app.address, &request).await?;
    if status != 200 || other != reference {
        return Err(format!("the chain endpoint answered differently (status {status})").into());
    }
    let bare = Bare::start(Bytes::from(reference.clone())).await?;
    let (_, bare_body) = one_request(bare.address, &request).await?;
    if bare_body != reference {
        return Err("the bare handler's body differs from keyturn's".into());
    }

    let bare_figures = keep_alive_load(bare.address, &request).await?;
    rows.push(Row::new(
        "bare axum handler, same bytes",
        &bare_figures,
        None,
    ));
    let entra_figures = keep_alive_load(entra_app.address, &request).await?;
    rows.push(Row::new(
        "keyturn, header, entra-device (warm cache)",
        &entra_figures,
        Some(&bare_figures),
    ));
    let chain_figures = keep_alive_load(chain_app.address, &request).await?;
    rows.push(Row::new(
        "keyturn, header, chain+trusted-thumbprints",
        &chain_figures,
        Some(&bare_figures),
    ));
    let bare_again = keep_alive_load(bare.address, &request).await?;
    rows.push(Row::new("bare axum handler, again", &bare_again, None));

    notes.push(format!(
        "policies: entra-device [{}] (compliant+managed required, {} directory lookup(s) in the whole run); chain+trusted-thumbprints [{}] (CRL revocation checked)",
        entra_app.policies,
        directory.lookups(),
        chain_app.policies,
    ));
    for (label, app, figures) in [
        ("entra-device", &entra_app, &entra_figures),
        ("chain+trusted-thumbprints", &chain_app, &chain_figures),
    ] {
        let served = figures.total + 1;
        let audited = app.audited().await?;
        notes.push(format!(
            "audit ({label}): {audited} entries for {served} served requests{}",
            if audited == served as u64 {
                ""
            } else {
                " (MISMATCH)"
            }
        ));
    }
    entra_app.stop().await;
    chain_app.stop().await;
    bare.stop().await;

    // 3. Authorized reads' latency, alone and while refused requests flood the endpoint
    //    from another address (no certificate: each is refused and audited). Alone,
    //    they are measured in turn with the same keyturn whose audit log has no
    //    checkpoints (its store given at start-up, which leaves it unanchored): what
    //    the checkpoints cost the reads, each side measured in the same conditions.
    //    Two of each, started anchored, without, without, anchored: the keyturn started
    //    first read a few percent faster than the one started after it when neither had
    //    checkpoints, and this order gives each side the same mean start.
    let reads_app = Keyturn::start(&dir.path().join("reads"), &chain(true), None).await?;
    let unanchored_app =
        Keyturn::start_unanchored(&dir.path().join("unanchored"), &chain(true)).await?;
    let unanchored_second =
        Keyturn::start_unanchored(&dir.path().join("unanchored-2"), &chain(true)).await?;
    let anchored_second = Keyturn::start(&dir.path().join("reads-2"), &chain(true), None).await?;
    let mut anchored_runs = Vec::new();
    let mut unanchored_runs = Vec::new();
    for (pair, unanchored_first) in CHECKPOINT_COST_ORDER.into_iter().enumerate() {
        let (anchored, unanchored) = if pair % 2 == 0 {
            (&reads_app, &unanchored_app)
        } else {
            (&anchored_second, &unanchored_second)
        };
        let order = if unanchored_first {
            [(unanchored, false), (anchored, true)]
        } else {
            [(anchored, true), (unanchored, false)]
        };
        for (app, anchored) in order {
            let figures = keep_alive_load_with(app.address, &request, READ_CONNECTIONS).await?;
            if anchored {
                anchored_runs.push(figures);
            } else {
                unanchored_runs.push(figures);
            }
        }
    }
    let alone = Figures::merged(&anchored_runs);
    let unanchored = Figures::merged(&unanchored_runs);
    rows.push(Row::new("authorized reads, 8 connections", &alone, None));
    rows.push(Row::new(
        "same, audit log without checkpoints",
        &unanchored,
        None,
    ));
    // Each pair's cost, then their mean and its standard error.
    let costs: Vec<f64> = anchored_runs
        .iter()
        .zip(&unanchored_runs)
        .map(|(anchored, unanchored)| 1.0 - anchored.per_second() / unanchored.per_second())
        .collect();
    let pairs = costs.len() as f64;
    let mean = costs.iter().sum::<f64>() / pairs;
    let variance = costs.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / (pairs - 1.0).max(1.0);
    let each = costs
        .iter()
        .map(|c| format!("{:.1}", c * 100.0))
        .collect::<Vec<_>>()
        .join(" / ");
    notes.push(format!(
        "checkpoints' cost to authorized reads: {:.1} % (mean of {} pairs of adjacent windows, standard error {:.1} %; per pair {each} %; all windows together {:.1} %)",
        mean * 100.0,
        costs.len(),
        (variance / pairs).sqrt() * 100.0,
        (1.0 - alone.per_second() / unanchored.per_second()) * 100.0,
    ));
    let unanchored_reads = unanchored_runs.iter().map(|f| f.total).sum::<usize>();
    let audited = unanchored_app.audited().await? + unanchored_second.audited().await?;
    if audited != unanchored_reads as u64 {
        notes.push(format!(
            "audit (without checkpoints): {audited} entries for {unanchored_reads} reads (MISMATCH)"
        ));
    }
    unanchored_app.stop().await;
    unanchored_second.stop().await;
    anchored_second.stop().await;
    let flood = Flood::start(reads_app.address, &refused_request());
    let flooded = keep_alive_load_with(reads_app.address, &request, READ_CONNECTIONS).await?;
    let refused = flood.finish().await?;
    rows.push(Row::new(
        "same, during a refusal flood (24 conns)",
        &flooded,
        None,
    ));
    let reads = anchored_runs
        .iter()
        .step_by(2)
        .map(|f| f.total)
        .sum::<usize>()
        + flooded.total
        + 1;
    let audited = reads_app.audited().await?;
    notes.push(format!(
        "refusal flood: {refused} requests without a certificate answered 401 ({:.0}/s) beside the reads; audit: {audited} entries for {reads} reads and {refused} refusals",
        refused as f64 / (WARM_UP + MEASURED).as_secs_f64(),
    ));
    reads_app.stop().await;

    // 4. Full TLS handshakes against keyturn's own listener.
    let mut tls_settings = chain(false);
    tls_settings.extend([
        ("KEYTURN_TLS_ADDRESS", "127.0.0.1:0".to_owned()),
        ("KEYTURN_TLS_CERT", path(&pki.server_cert)),
        ("KEYTURN_TLS_KEY", path(&pki.server_key)),
    ]);
    let tls_app = Keyturn::start(&dir.path().join("tls"), &tls_settings, None).await?;
    for (label, version) in [
        ("TLS 1.3 handshakes (+1 GET each)", &rustls::version::TLS13),
        ("TLS 1.2 handshakes (+1 GET each)", &rustls::version::TLS12),
    ] {
        let figures = handshake_load(tls_app.address, client_config(&pki, version)?).await?;
        rows.push(Row::new(label, &figures, None));
    }
    notes.push(format!(
        "TLS: every connection new, session resumption disabled (each verified to be a full handshake), ECDSA P-256 keys, client certificate checked by [{}]",
        tls_app.policies
    ));
    tls_app.stop().await;

    print_table(&rows, &notes);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Certificates.

/// A root that issues the device certificate directly (as Entra's device CA does), a
/// CRL from it, and a server certificate for the TLS listener.
struct Pki {
    device_id: DeviceId,
    device: Issued,
    server_ca: CertificateDer<'static>,
    roots: std::path::PathBuf,
    crl: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
}

struct Issued {
    der: CertificateDer<'static>,
    key: Vec<u8>,
}

fn ca(name: &str) -> TestCa {
    let mut params = pki::ca_params(name);
    valid_around_now(&mut params);
    TestCa::from_params(params, None)
}

fn valid_around_now(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
}

impl Pki {
    fn new(dir: &Path) -> BenchResult<Self> {
        let root = ca("keyturn bench device root");
        let device_id = DeviceId::new_random();
        let mut params = pki::client_params(&device_id.to_string(), &[]);
        params.serial_number = Some(SerialNumber::from(7u64));
        valid_around_now(&mut params);
        let issued = root.issue(&params);
        let device = Issued {
            der: CertificateDer::from(issued.cert_der),
            key: issued.key_der,
        };
        let now = time::OffsetDateTime::now_utc();
        let crl = root.crl(
            &[],
            now - time::Duration::days(1),
            now + time::Duration::days(30),
        );

        let server_ca = ca("keyturn bench server CA");
        let mut params = pki::server_params(&["localhost"]);
        valid_around_now(&mut params);
        let server = server_ca.issue(&params);

        let write = |name: &str, text: &str| -> io::Result<std::path::PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            Ok(path)
        };
        Ok(Self {
            device_id,
            device,
            server_ca: CertificateDer::from(server_ca.cert_der().to_vec()),
            roots: write("roots.pem", root.cert_pem())?,
            crl: write("root.crl", &crl.pem)?,
            server_cert: write("server.pem", &server.cert_pem)?,
            server_key: write("server.key", &server.key_pem)?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The device directory Graph would be: one enabled, compliant, managed device whose
// certificate binding is its second alternativeSecurityIds entry.

#[derive(Debug)]
struct BenchDirectory {
    device: Device,
    lookups: AtomicUsize,
}

impl BenchDirectory {
    fn new(pki: &Pki) -> BenchResult<Self> {
        let binding = binding_key(pki.device.der.as_ref()).ok_or("no binding key")?;
        Ok(Self {
            device: Device {
                device_id: pki.device_id,
                account_enabled: true,
                alternative_security_ids: vec![
                    AlternativeSecurityId {
                        kind: CERTIFICATE_BINDING_TYPE,
                        identity_provider: None,
                        key: b"X509:<SHA1-TP-PUBKEY>00".to_vec(),
                    },
                    AlternativeSecurityId {
                        kind: CERTIFICATE_BINDING_TYPE,
                        identity_provider: None,
                        key: binding,
                    },
                ],
                is_compliant: Some(true),
                is_managed: Some(true),
            },
            lookups: AtomicUsize::new(0),
        })
    }

    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl DeviceDirectory for BenchDirectory {
    async fn device(&self, device_id: &DeviceId) -> Result<Option<Device>, PortError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        Ok((*device_id == self.device.device_id).then(|| self.device.clone()))
    }
}

// ---------------------------------------------------------------------------------------
// The front end App Service would be: client certificates required on every path, as
// the front-end check reads the site from Resource Manager before it believes
// X-ARR-ClientCert.

#[derive(Debug)]
struct RequiredFrontEnd;

#[async_trait]
impl SiteConfiguration for RequiredFrontEnd {
    async fn read_site(&self) -> Result<Vec<u8>, PortError> {
        let site = r#"{ "id": "/subscriptions/34adfa4f-cedf-4dc0-ba29-b6d1a69ab345/resourceGroups/rg-keyturn/providers/Microsoft.Web/sites/kt-bench", "name": "kt-bench", "type": "Microsoft.Web/sites", "properties": { "clientCertEnabled": true, "clientCertMode": "Required" } }"#;
        Ok(site.as_bytes().to_vec())
    }
}

// ---------------------------------------------------------------------------------------
// The servers.

fn path(file: &Path) -> String {
    file.display().to_string()
}

/// What every keyturn under measurement is given, as a deployment sets it: the local
/// backend with its audit log on SQLite in `data_dir`, only the SecretEndpoint enabled,
/// the secret in an app setting, and both rate limiters out of reach.
fn base_settings(data_dir: &Path) -> Vec<(String, String)> {
    let unreachable = UNREACHABLE_RATE_LIMIT.to_string();
    let mut settings: Vec<(String, String)> = [
        ("FUNCTIONS_WORKER_RUNTIME", "custom"),
        ("KEYTURN_BACKEND", "local"),
        ("KEYTURN_AUDIT_STORE", "sqlite"),
        (SECRET_SETTING, SECRET_VALUE),
        ("KEYTURN_RATE_LIMIT_PER_IDENTITY", &unreachable),
        ("KEYTURN_RATE_LIMIT_PER_ADDRESS", &unreachable),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    settings.push(("KEYTURN_DATA_DIR".to_owned(), path(data_dir)));
    settings.extend(
        FUNCTIONS
            .into_iter()
            .filter(|f| *f != secret_endpoint::NAME)
            .map(|f| {
                (
                    format!("AzureWebJobs.{}.Disabled", f.name()),
                    "true".to_owned(),
                )
            }),
    );
    settings
}

/// keyturn's router serving the SecretEndpoint, over plain HTTP or its TLS listener.
struct Keyturn {
    address: SocketAddr,
    policies: String,
    audit: AuditLog,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl Keyturn {
    /// keyturn as `serve` starts it from [`base_settings`] in `data_dir` plus
    /// `settings`, through start-up, with only the device directory put in place: over
    /// plain HTTP, or over its own TLS listener when the settings configure one.
    async fn start(
        data_dir: &Path,
        settings: &[(&str, String)],
        directory: Option<Arc<dyn DeviceDirectory>>,
    ) -> BenchResult<Self> {
        Self::start_with(data_dir, settings, directory, false).await
    }

    /// [`Keyturn::start`] with its audit log started without checkpoints: the reference
    /// the checkpoints' cost is measured against.
    async fn start_unanchored(data_dir: &Path, settings: &[(&str, String)]) -> BenchResult<Self> {
        Self::start_with(data_dir, settings, None, true).await
    }

    async fn start_with(
        data_dir: &Path,
        settings: &[(&str, String)],
        directory: Option<Arc<dyn DeviceDirectory>>,
        unanchored_audit: bool,
    ) -> BenchResult<Self> {
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let env = Environment::from_pairs(base_settings(data_dir)).with(&settings);
        let settings = Settings::from_env(&env)?;
        let tls_config = startup::tls_config(&settings)?;
        let overrides = Overrides {
            directory,
            unanchored_audit,
            site: Some(Arc::new(RequiredFrontEnd)),
            ..Overrides::default()
        };
        let services = startup::services_with(&settings, &env, overrides).await?;
        let policies: Vec<&str> = services
            .endpoint
            .policies()
            .configured()
            .iter()
            .map(|p| p.as_str())
            .collect();
        let policies = policies.join(", ");
        let state = startup::app_state(&settings, services);
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let (address, task) = match (&settings.endpoint.tls, tls_config) {
            (Some(tls), Some(config)) => {
                let server = startup::spawn_tls(tls.address, config, state, shutdown).await?;
                let address = server.local_addr();
                (address, tokio::spawn(server.stopped()))
            }
            _ => {
                let app = router(state, &settings.host.enabled_functions);
                let listener = server::bind(0).await?;
                let address = listener.local_addr()?;
                (
                    address,
                    tokio::spawn(server::serve(listener, app, shutdown)),
                )
            }
        };
        let audit = startup::audit_log(&AuditCommandSettings::from_env(&env)?).await?;
        Ok(Self {
            address,
            policies,
            audit,
            stop,
            task,
        })
    }

    /// How many entries the audit log holds, as `keyturn audit verify` reads it.
    async fn audited(&self) -> BenchResult<u64> {
        Ok(self.audit.verify().await?.entries_checked)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(GRACE, self.task).await;
    }
}

/// A bare axum handler answering fixed bytes with the headers keyturn sends.
struct Bare {
    address: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl Bare {
    async fn start(body: Bytes) -> BenchResult<Self> {
        let app = Router::new().route(
            "/api/secrets/{name}",
            get(move || {
                let body = body.clone();
                async move {
                    (
                        StatusCode::OK,
                        [
                            (header::CONTENT_TYPE, "application/json"),
                            (header::CACHE_CONTROL, "no-store"),
                        ],
                        body,
                    )
                }
            }),
        );
        let listener = server::bind(0).await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(listener, app, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            address,
            stop,
            task,
        })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(GRACE, self.task).await;
    }
}

// ---------------------------------------------------------------------------------------
// The load generator: a minimal HTTP/1.1 client, so that the client's own cost is small
// and the same for every server measured.

fn header_request(pki: &Pki) -> Vec<u8> {
    format!(
        "GET /api/secrets/{SECRET_NAME} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-ARR-ClientCert: {}\r\nX-Forwarded-For: {FORWARDED_FOR}\r\n\r\n",
        STANDARD.encode(pki.device.der.as_ref())
    )
    .into_bytes()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads one response with a `Content-Length` body; returns the status and the body.
async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
) -> io::Result<(u16, std::ops::Range<usize>)> {
    buffer.clear();
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..end]).map_err(|_| bad("head not UTF-8"))?;
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .and_then(|line| line.get(9..12))
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| bad("no status line"))?;
            let length: usize = lines
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, value)| value.trim().parse().ok())
                .ok_or_else(|| bad("no content-length"))?;
            let body = end + 4..end + 4 + length;
            if body.end > MAX_RESPONSE_BYTES {
                return Err(bad("response too large"));
            }
            while buffer.len() < body.end {
                if stream.read_buf(buffer).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            return Ok((status, body));
        }
        if buffer.len() > MAX_RESPONSE_BYTES {
            return Err(bad("response head too large"));
        }
        if stream.read_buf(buffer).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn one_request(address: SocketAddr, request: &[u8]) -> BenchResult<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(address).await?;
    stream.write_all(request).await?;
    let mut buffer = Vec::new();
    let (status, body) = read_response(&mut stream, &mut buffer).await?;
    Ok((status, buffer[body].to_vec()))
}

/// What one measurement yields.
struct Figures {
    /// Measured windows these figures hold (several when merged).
    windows: u32,
    /// Requests completed inside the measured windows.
    measured: usize,
    /// Requests completed in the whole run, warm-up included.
    total: usize,
    /// Latencies of the measured requests, in microseconds, sorted.
    latencies: Vec<u32>,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.measured as f64 / (MEASURED.as_secs_f64() * f64::from(self.windows.max(1)))
    }

    /// The figures of several runs as one: their windows, requests and latencies.
    fn merged(runs: &[Figures]) -> Figures {
        let mut latencies: Vec<u32> = runs
            .iter()
            .flat_map(|f| f.latencies.iter().copied())
            .collect();
        latencies.sort_unstable();
        Figures {
            windows: runs.iter().map(|f| f.windows).sum(),
            measured: runs.iter().map(|f| f.measured).sum(),
            total: runs.iter().map(|f| f.total).sum(),
            latencies,
        }
    }

    /// Nearest-rank percentile, in milliseconds.
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * self.latencies.len() as f64).ceil() as usize).max(1);
        f64::from(self.latencies[rank - 1]) / 1000.0
    }
}

/// The measured window of one run.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

impl Window {
    fn starting_now() -> Self {
        let measure_from = Instant::now() + WARM_UP;
        Self {
            measure_from,
            end: measure_from + MEASURED,
        }
    }
}

/// Per-connection tallies.
#[derive(Default)]
struct Tally {
    total: usize,
    latencies: Vec<u32>,
}

impl Tally {
    fn record(&mut self, window: Window, started: Instant, finished: Instant) {
        self.total += 1;
        if started >= window.measure_from && finished <= window.end {
            let micros = finished.duration_since(started).as_micros();
            self.latencies
                .push(u32::try_from(micros).unwrap_or(u32::MAX));
        }
    }
}

async fn collect(mut tasks: JoinSet<BenchResult<Tally>>) -> BenchResult<Figures> {
    let deadline = WARM_UP + MEASURED + GRACE;
    let mut figures = Figures {
        windows: 1,
        measured: 0,
        total: 0,
        latencies: Vec::new(),
    };
    let joined = tokio::time::timeout(deadline, async {
        while let Some(joined) = tasks.join_next().await {
            let tally = joined??;
            figures.total += tally.total;
            figures.latencies.extend(tally.latencies);
        }
        BenchResult::Ok(())
    })
    .await;
    match joined {
        Ok(result) => result?,
        Err(_) => {
            tasks.abort_all();
            return Err("a measurement did not finish in time".into());
        }
    }
    figures.latencies.sort_unstable();
    figures.measured = figures.latencies.len();
    Ok(figures)
}

/// `CONNECTIONS` keep-alive connections sending `request` back to back.
async fn keep_alive_load(address: SocketAddr, request: &[u8]) -> BenchResult<Figures> {
    keep_alive_load_with(address, request, CONNECTIONS).await
}

/// `connections` keep-alive connections sending `request` back to back.
async fn keep_alive_load_with(
    address: SocketAddr,
    request: &[u8],
    connections: usize,
) -> BenchResult<Figures> {
    let window = Window::starting_now();
    let request: Arc<[u8]> = Arc::from(request);
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let request = request.clone();
        tasks.spawn(async move {
            let mut stream = TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            let mut buffer = Vec::with_capacity(4096);
            let mut tally = Tally::default();
            loop {
                let started = Instant::now();
                if started >= window.end {
                    return Ok(tally);
                }
                stream.write_all(&request).await?;
                let (status, _) = read_response(&mut stream, &mut buffer).await?;
                if status != 200 {
                    return Err(format!("a request was answered {status}").into());
                }
                tally.record(window, started, Instant::now());
            }
        });
    }
    collect(tasks).await
}

/// A request the endpoint refuses: no certificate, from an address of its own.
fn refused_request() -> Vec<u8> {
    format!(
        "GET /api/secrets/{SECRET_NAME} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 198.51.100.23:40112\r\n\r\n"
    )
    .into_bytes()
}

/// [`FLOOD_CONNECTIONS`] keep-alive connections sending a refused request back to back
/// for a warm-up and a measured window from now.
struct Flood {
    tasks: JoinSet<BenchResult<usize>>,
}

impl Flood {
    fn start(address: SocketAddr, request: &[u8]) -> Self {
        let end = Instant::now() + WARM_UP + MEASURED;
        let request: Arc<[u8]> = Arc::from(request);
        let mut tasks = JoinSet::new();
        for _ in 0..FLOOD_CONNECTIONS {
            let request = request.clone();
            tasks.spawn(async move {
                let mut stream = TcpStream::connect(address).await?;
                stream.set_nodelay(true)?;
                let mut buffer = Vec::with_capacity(4096);
                let mut refused = 0;
                while Instant::now() < end {
                    stream.write_all(&request).await?;
                    let (status, _) = read_response(&mut stream, &mut buffer).await?;
                    if status != 401 {
                        return Err(format!("a refused request was answered {status}").into());
                    }
                    refused += 1;
                }
                Ok(refused)
            });
        }
        Self { tasks }
    }

    /// How many requests were refused.
    async fn finish(mut self) -> BenchResult<usize> {
        let mut refused = 0;
        let joined = tokio::time::timeout(GRACE, async {
            while let Some(joined) = self.tasks.join_next().await {
                refused += joined??;
            }
            BenchResult::Ok(())
        })
        .await;
        match joined {
            Ok(result) => result.map(|()| refused),
            Err(_) => {
                self.tasks.abort_all();
                Err("the refusal flood did not finish in time".into())
            }
        }
    }
}

fn client_config(
    pki: &Pki,
    version: &'static SupportedProtocolVersion,
) -> BenchResult<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.server_ca.clone())?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.device.key.clone()));
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[version])?
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![pki.device.der.clone()], key)?;
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// New connections back to back: TCP connect, a full handshake presenting the device
/// certificate, one authorized GET (proof that the server finished the handshake and
/// ran the policies on the peer chain), close.
async fn handshake_load(address: SocketAddr, config: Arc<ClientConfig>) -> BenchResult<Figures> {
    let window = Window::starting_now();
    let connector = TlsConnector::from(config);
    let request: Arc<[u8]> = Arc::from(
        format!(
            "GET /api/secrets/{SECRET_NAME} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
    );
    let mut tasks = JoinSet::new();
    for _ in 0..HANDSHAKE_CONNECTIONS {
        let connector = connector.clone();
        let request = request.clone();
        tasks.spawn(async move {
            let mut buffer = Vec::with_capacity(4096);
            let mut tally = Tally::default();
            loop {
                let started = Instant::now();
                if started >= window.end {
                    return Ok(tally);
                }
                let tcp = TcpStream::connect(address).await?;
                tcp.set_nodelay(true)?;
                let mut stream = connector
                    .connect(ServerName::try_from("localhost")?, tcp)
                    .await?;
                if stream.get_ref().1.handshake_kind() != Some(HandshakeKind::Full) {
                    return Err("a handshake was not a full one".into());
                }
                exchange(&mut stream, &request, &mut buffer).await?;
                tally.record(window, started, Instant::now());
            }
        });
    }
    collect(tasks).await
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
    buffer: &mut Vec<u8>,
) -> BenchResult<()> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let (status, _) = read_response(stream, buffer).await?;
    if status != 200 {
        return Err(format!("a request over TLS was answered {status}").into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The table.

struct Row {
    label: &'static str,
    per_second: f64,
    p50: f64,
    p99: f64,
    ratio: Option<f64>,
}

impl Row {
    fn new(label: &'static str, figures: &Figures, bare: Option<&Figures>) -> Self {
        Self {
            label,
            per_second: figures.per_second(),
            p50: figures.percentile(0.50),
            p99: figures.percentile(0.99),
            ratio: bare.map(|b| figures.per_second() / b.per_second()),
        }
    }
}

fn print_table(rows: &[Row], notes: &[String]) {
    println!();
    println!(
        "SecretEndpoint on loopback: {CONNECTIONS} keep-alive connections ({HANDSHAKE_CONNECTIONS} for handshakes), {} s warm-up, {} s measured per row, {} cores",
        WARM_UP.as_secs(),
        MEASURED.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| {:<44} | {:>10} | {:>8} | {:>8} | {:>12} |",
        "measurement", "per second", "p50 ms", "p99 ms", "vs bare"
    );
    println!(
        "|{:-<46}|{:->12}|{:->10}|{:->10}|{:->14}|",
        "", "", "", "", ""
    );
    for row in rows {
        let ratio = row
            .ratio
            .map(|r| format!("{:.0} %", r * 100.0))
            .unwrap_or_default();
        println!(
            "| {:<44} | {:>10.0} | {:>8.2} | {:>8.2} | {:>12} |",
            row.label, row.per_second, row.p50, row.p99, ratio
        );
    }
    println!();
    for note in notes {
        println!("- {note}");
    }
}
