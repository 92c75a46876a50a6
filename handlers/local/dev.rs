//! `keyturn dev`: the whole system on one machine. Plays the Functions host for the real
//! handler (started as `host.json` says, invoked in the host's envelopes), with the
//! embedded vault, directory, queue and audit log in one SQLite file under the data
//! directory.
//!
//! The host's parts played here: the timer (`ExpirySweep`'s NCRONTAB schedule), Key Vault's
//! events (raised by the local vault, delivered to `KeyVaultEvents` in Event Grid schema),
//! the Event Grid webhook (a loopback ingress for replaying events), and the Service Bus
//! trigger (a pump that peek-locks jobs, renews the lock while the worker runs, completes
//! on success and abandons on failure, so the queue redelivers and dead-letters as Service
//! Bus does).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::adapters::local::audit::LocalAuditStore;
use crate::adapters::local::directory::LocalDirectory;
use crate::adapters::local::queue::{LocalQueue, QueueSettings, ReceivedMessage};
use crate::adapters::local::vault::LocalVault;
use crate::config::Environment;
use crate::config::LOCAL_VAULT_URL;
use crate::domain::clock::Clock;
use crate::domain::function::Function;
use crate::domain::ncrontab::Schedule;
use crate::domain::resources::QueueName;
use crate::local::alert_receiver::{
    AlertReceiver, DEV_ROUTE, DEV_ROUTE_SECRET, Echo, RECEIVED_FILE, ReceivedAlert,
};
use crate::local::bootstrap::{self, Demo};
use crate::local::definitions::{AppDefinition, FunctionDefinition, Trigger};
use crate::local::handler::{Answer, Handler};
use crate::local::ingress::{self, Deliver};
use crate::local::ports;
use crate::local::progress::{self, Follower};
use crate::local::timer::Timer;
use crate::ports::audit::{AuditEntry, AuditStore};
use crate::ports::vault::{Secret, SecretStore};
use crate::startup::{LocalBackends, LocalOptions};

/// A drain that delivers more than this many messages in one `--once` run is looping;
/// the demo needs a handful.
const MAX_DRAIN_DELIVERIES: usize = 10_000;

/// How often the continuous loop looks for due timers, events and jobs. One second keeps
/// local mode responsive without measurable load.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct DevOptions {
    pub data_dir: PathBuf,
    pub once: bool,
    /// The project root holding host.json and function-definitions/.
    pub root: PathBuf,
    /// The handler binary (this executable).
    pub executable: PathBuf,
    pub tls_address: String,
    pub ingress_address: String,
    /// Where the alert receiver listens (loopback; port 0: any free port).
    pub alerts_address: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    #[error("data directory {path}: {problem}")]
    DataDir { path: PathBuf, problem: String },
    #[error("{0}")]
    Definitions(#[from] crate::local::definitions::DefinitionError),
    #[error("{0}")]
    Handler(#[from] crate::local::handler::HandlerError),
    #[error("{0}")]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error("{0}")]
    Local(String),
}

fn local(e: impl std::fmt::Display) -> DevError {
    DevError::Local(e.to_string())
}

/// One object rotation touched, as the summary lists it (never a value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Touched {
    pub name: Option<String>,
    pub version: Option<String>,
    pub reason: Option<String>,
}

/// What `--once` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub rotated: Vec<Touched>,
    pub skipped: Vec<Touched>,
    pub failed: Vec<Touched>,
    pub dead_lettered: Vec<Touched>,
    /// Objects whose new credential is still being proven, with the last proof step.
    pub proving: Vec<Touched>,
    /// Jobs left in the queue for later (retirements after the overlap).
    pub scheduled: u64,
    pub deliveries: usize,
    /// What the local alert receiver was sent by this run (alerts and the digest).
    pub alerts: Vec<ReceivedAlert>,
}

impl Summary {
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty() && self.dead_lettered.is_empty()
    }
}

/// The embedded backends the host side uses directly.
struct Backends {
    vault: LocalVault,
    /// The rotation queue, whose jobs the summary reports.
    queue: LocalQueue,
    /// Each Service Bus trigger's function and the queue it reads, in definition order.
    workers: Vec<(String, LocalQueue)>,
    audit: Arc<LocalAuditStore>,
    directory: LocalDirectory,
    /// The `DiscoveryWorker`'s queue, when it is not the rotation queue.
    discovery: Option<LocalQueue>,
}

/// Runs local mode until interrupted, or once with `options.once`.
pub async fn run(options: DevOptions) -> Result<Option<Summary>, DevError> {
    let data_dir = prepare_data_dir(&options.data_dir)?;
    let _exclusive = lock_data_dir(&data_dir)?;
    let clock = Clock::system();
    let mut overrides = child_settings(&data_dir, &options);
    // Alerts go to the local receiver unless the user configured routes of their own.
    let local_receiver = Environment::from_process()
        .value("KEYTURN_ALERT_ROUTES")
        .is_none();
    if local_receiver {
        overrides.extend(alert_settings());
    }
    let env = environment_with(&overrides);
    let app = AppDefinition::load(&options.root, &env)?;
    let backends = open_backends(&data_dir, &app, &env, &clock).await?;
    let receiver = if local_receiver {
        let echo = if options.once {
            Echo::Stderr
        } else {
            Echo::Stdout
        };
        let previous = route_secret(&backends.vault).await?;
        let receiver = AlertReceiver::start_again(
            &options.alerts_address,
            previous.as_ref().map(|p| p.value.expose()),
            echo,
            data_dir.join(RECEIVED_FILE),
        )
        .await
        .map_err(|e| local(ports::cannot_listen(&options.alerts_address, &e)))?;
        store_route_secret(&backends.vault, &receiver, previous.as_ref(), clock.now()).await?;
        Some(receiver)
    } else {
        None
    };
    let demo =
        bootstrap::bootstrap(&data_dir, &backends.vault, &backends.directory, clock.now()).await?;
    if let Some(receiver) = &receiver
        && options.once
    {
        eprintln!("{}", receiver_notice(receiver, &data_dir));
    }
    // This process holds the data directory, so any lock on a job was taken by a run that
    // died: end those locks now rather than waiting out their duration.
    let mut stale = 0;
    for (_, queue) in &backends.workers {
        stale += queue.expire_locks(clock.now()).await.map_err(local)?;
    }
    if stale > 0 {
        tracing::warn!(
            jobs = stale,
            "jobs locked by a run that did not finish are delivered again"
        );
    }

    let log = data_dir.join("handler.log");
    stop_stale_handler(&data_dir).await;
    if !options.once {
        // The handler terminates TLS there; were it taken, all that would show is that
        // the handler exited.
        std::net::TcpListener::bind(&options.tls_address)
            .map_err(|e| local(ports::cannot_listen(&options.tls_address, &e)))?;
    }
    let handler = Arc::new(
        Handler::start(
            &app.handler,
            Some(options.executable.clone()),
            &overrides,
            Some(&log),
        )
        .await?,
    );
    if let Some(pid) = handler.pid() {
        let _ = std::fs::write(data_dir.join(HANDLER_PID), pid.to_string());
    }

    let outcome = if options.once {
        let mut summary = once(&handler, &app, &backends, &clock).await;
        summary.alerts = receiver
            .as_ref()
            .map(AlertReceiver::received)
            .unwrap_or_default();
        Some(summary)
    } else {
        continuous(
            &handler,
            &app,
            &backends,
            &clock,
            &demo,
            &data_dir,
            &options,
            receiver.as_ref(),
        )
        .await?;
        None
    };
    match Arc::try_unwrap(handler) {
        Ok(handler) => handler.stop().await?,
        Err(_) => tracing::warn!("the handler is still in use; it stops with this process"),
    }
    Ok(outcome)
}

/// The handler's process id, so a later run can stop a handler its crashed predecessor left.
const HANDLER_PID: &str = "handler.pid";

/// A handler whose `keyturn dev` was killed exits within a quarter second on its own
/// (it watches its parent); a run that starts sooner must not work beside it, so it
/// stops that handler first.
async fn stop_stale_handler(data_dir: &Path) {
    let Some(pid) = std::fs::read_to_string(data_dir.join(HANDLER_PID))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return;
    };
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let is_keyturn = std::fs::read(proc.join("cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("keyturn"));
    if !is_keyturn {
        return;
    }
    tracing::warn!(
        pid,
        "a handler from a run that did not finish is still running; stopping it"
    );
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    for _ in 0..100 {
        if !proc.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Holds `<data-dir>/dev.lock` exclusively for this run: two local modes on one data
/// directory would run each other's jobs. The operating system releases the lock when
/// the process ends, however it ends.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, DevError> {
    let path = dir.join("dev.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| DevError::DataDir {
            path: path.clone(),
            problem: e.to_string(),
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(DevError::DataDir {
            path: dir.to_path_buf(),
            problem: "another `keyturn dev` is running on this data directory".into(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(DevError::DataDir {
            path,
            problem: e.to_string(),
        }),
    }
}

fn prepare_data_dir(dir: &Path) -> Result<PathBuf, DevError> {
    let failed = |problem: String| DevError::DataDir {
        path: dir.to_path_buf(),
        problem,
    };
    std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| failed(e.to_string()))?;
    }
    dir.canonicalize().map_err(|e| failed(e.to_string()))
}

/// The settings local mode gives the handler: the local backend, the embedded audit log,
/// the local vault, and the secret endpoint's dev PKI and demo access policy.
fn child_settings(data_dir: &Path, options: &DevOptions) -> Vec<(String, String)> {
    let demo = Demo::at(data_dir);
    let path = |p: PathBuf| p.display().to_string();
    let mut settings = vec![
        ("KEYTURN_BACKEND", "local".to_string()),
        ("KEYTURN_AUDIT_STORE", "sqlite".to_string()),
        ("KEYTURN_DATA_DIR", data_dir.display().to_string()),
        ("KEYTURN_VAULTS", LOCAL_VAULT_URL.to_string()),
        ("KEYTURN_CERT_POLICIES", "chain".to_string()),
        ("KEYTURN_CHAIN_ROOTS", path(demo.pki.ca())),
        ("KEYTURN_CHAIN_CRLS", path(demo.pki.crl())),
        ("KEYTURN_ACCESS_POLICY", path(demo.access_policy.clone())),
        ("KEYTURN_EXIT_WITH_PARENT", "true".to_string()),
    ];
    if !options.once {
        settings.extend([
            ("KEYTURN_TLS_ADDRESS", options.tls_address.clone()),
            ("KEYTURN_TLS_CERT", path(demo.pki.server_cert())),
            ("KEYTURN_TLS_KEY", path(demo.pki.server_key())),
        ]);
    }
    settings
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// The alert route local mode adds where none is configured: the local receiver, by
/// its vault secret, carrying every alert and the digest.
fn alert_settings() -> Vec<(String, String)> {
    [
        (
            "KEYTURN_ALERT_ROUTES",
            format!("{DEV_ROUTE}=cloudevents:{DEV_ROUTE_SECRET}"),
        ),
        ("KEYTURN_ALERT_DEFAULT_ROUTE", DEV_ROUTE.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// How long the dev route's secret is given: past the furthest default alert threshold
/// (60 days) and within every lifetime limit, so the demo's alerts and findings stay about
/// the demo rather than about the receiver's own URL, which changes at every run anyway.
const ROUTE_SECRET_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::days(90);

/// How long before its expiry the dev route's secret is written again though its value
/// is the same: a version's expiry stays beyond the furthest default alert threshold (60
/// days), and an unchanged URL adds a version at most every two weeks.
const ROUTE_SECRET_RENEWAL: chrono::TimeDelta = chrono::TimeDelta::days(76);

fn route_secret_name() -> crate::domain::names::ObjectName {
    crate::domain::names::ObjectName::parse(DEV_ROUTE_SECRET)
        .expect("invariant: the dev route's secret name is valid")
}

/// The dev route's secret as an earlier run left it, if any.
async fn route_secret(vault: &LocalVault) -> Result<Option<Secret>, DevError> {
    vault
        .secret(
            &crate::config::local_vault_url(),
            &route_secret_name(),
            None,
        )
        .await
        .map_err(local)
}

/// Stores the receiver's URL as the dev route's secret: a webhook URL is a secret, kept in
/// the vault, read by `AlertSweep` at each run and never printed. A new version is
/// written only when the URL changed (the receiver takes its earlier port and token
/// again when it can) or the current version comes within [`ROUTE_SECRET_RENEWAL`] of
/// its expiry, so runs do not pile up versions. It is kept as a webhook secret should
/// be: its owner is the dev route (`keyturn-owner`), and it has an expiry.
async fn store_route_secret(
    vault: &LocalVault,
    receiver: &AlertReceiver,
    previous: Option<&Secret>,
    now: DateTime<Utc>,
) -> Result<(), DevError> {
    let url = receiver.url();
    let current = previous.is_some_and(|previous| {
        previous.value.expose() == url
            && previous.properties.enabled
            && previous
                .properties
                .expires
                .is_some_and(|expires| expires > now + ROUTE_SECRET_RENEWAL)
    });
    if current {
        return Ok(());
    }
    let name = route_secret_name();
    let version = crate::ports::vault::NewSecretVersion {
        content_type: Some("text/uri-list".to_owned()),
        not_before: None,
        expires: Some(now + ROUTE_SECRET_LIFETIME),
        tags: std::collections::BTreeMap::from([(
            crate::domain::inventory::OWNER_TAG.to_owned(),
            DEV_ROUTE.to_owned(),
        )]),
    };
    vault
        .set_secret_at(
            &crate::config::local_vault_url(),
            &name,
            &crate::domain::secret::SecretValue::new(url),
            version,
            now,
        )
        .await
        .map(|_| ())
        .map_err(local)
}

/// Where the alerts go, for the terminal: the receiver's address without its token.
fn receiver_notice(receiver: &AlertReceiver, data_dir: &Path) -> String {
    format!(
        "Alerts go to the local CloudEvents receiver at {} (route {DEV_ROUTE}, its URL in the \
         local vault as secret {DEV_ROUTE_SECRET}); each alert is shown here and recorded in {}",
        receiver.address(),
        data_dir.join(RECEIVED_FILE).display()
    )
}

/// The order local mode runs its timers in as it starts (and in `--once`), the jobs of
/// each phase drained before the next: rotation first, so that discovery lists what
/// rotation left (not a certificate renewed a moment after it was listed), and alerts
/// from that inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Rotate,
    Discover,
    Alert,
}

const PHASES: [Phase; 3] = [Phase::Rotate, Phase::Discover, Phase::Alert];

fn phase(function: &FunctionDefinition) -> Phase {
    if function.name == Function::DiscoverySweep.name() {
        Phase::Discover
    } else if function.name == Function::AlertSweep.name() {
        Phase::Alert
    } else {
        Phase::Rotate
    }
}

/// This process's settings with local mode's on top, as the handler will see them.
fn environment_with(overrides: &[(String, String)]) -> Environment {
    Environment::from_process().with(overrides)
}

/// The embedded store, opened where start-up opens it, with the queue the
/// RotationWorker's trigger names and the queue of every other Service Bus trigger.
async fn open_backends(
    data_dir: &Path,
    app: &AppDefinition,
    env: &Environment,
    clock: &Clock,
) -> Result<Backends, DevError> {
    let vault_key = env.local_vault_key().map_err(local)?;
    let queue_of = |f: &FunctionDefinition| match &f.trigger {
        Trigger::ServiceBus { queue, .. } => Some(queue.clone()),
        _ => None,
    };
    let queue_name = app
        .function(Function::RotationWorker.name())
        .and_then(queue_of)
        .unwrap_or_else(|| crate::config::DEFAULT_ROTATION_QUEUE.to_owned());
    let queue = QueueName::parse(&queue_name).map_err(local)?;
    let options = LocalOptions {
        data_dir,
        vault_key: vault_key.as_ref(),
        queue: &queue,
        propagation: chrono::TimeDelta::zero(),
        flapping: false,
    };
    let opened = LocalBackends::open(options, clock).await.map_err(local)?;
    let mut workers = Vec::new();
    let mut discovery = None;
    for function in &app.functions {
        let Some(name) = queue_of(function) else {
            continue;
        };
        let separate = name != queue.as_str();
        let queue = if !separate {
            opened.queue.clone()
        } else {
            let name = QueueName::parse(&name).map_err(local)?;
            LocalQueue::new(
                opened.store.clone(),
                name.as_str(),
                QueueSettings::default(),
                clock.clone(),
            )
            .map_err(local)?
        };
        if separate && function.name == Function::DiscoveryWorker.name() {
            discovery = Some(queue.clone());
        }
        workers.push((function.name.clone(), queue));
    }
    Ok(Backends {
        audit: Arc::new(LocalAuditStore::new(opened.store.clone())),
        vault: opened.vault,
        queue: opened.queue,
        workers,
        directory: opened.directory,
        discovery,
    })
}

fn definition(
    app: &AppDefinition,
    matches: impl Fn(&Trigger) -> bool,
) -> Option<&FunctionDefinition> {
    app.functions.iter().find(|f| matches(&f.trigger))
}

/// Every timer function with its schedule.
fn timers(app: &AppDefinition) -> Vec<(&FunctionDefinition, &Schedule, bool)> {
    app.functions
        .iter()
        .filter_map(|f| match &f.trigger {
            Trigger::Timer {
                schedule,
                run_on_startup,
            } => Some((f, schedule, *run_on_startup)),
            _ => None,
        })
        .collect()
}

/// Whether local mode fires this timer as it starts: where the definition asks for it
/// (`runOnStartup`, as the host does), the discovery sweep, so the inventory of the
/// demo's vault and directory is there from the first minute rather than hours later, and
/// the alert sweep, so the demo's alerts arrive then too.
fn fires_on_start(function: &FunctionDefinition, run_on_startup: bool) -> bool {
    run_on_startup || phase(function) != Phase::Rotate
}

/// Delivers every job due now on every worker's queue, round by round until all are
/// empty; at most `limit` deliveries. Returns how many were delivered.
async fn drain(
    handler: &Handler,
    app: &AppDefinition,
    backends: &Backends,
    clock: &Clock,
    limit: usize,
) -> usize {
    let mut delivered = 0;
    loop {
        let mut round = 0;
        for (name, queue) in &backends.workers {
            let Some(worker) = app.function(name) else {
                continue;
            };
            while delivered < limit {
                match queue.receive(clock.now()).await {
                    Ok(Some(message)) => {
                        delivered += 1;
                        round += 1;
                        deliver_job(handler, worker, queue, message, clock).await;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, queue = name, "the local queue cannot be read");
                        break;
                    }
                }
            }
        }
        if round == 0 || delivered >= limit {
            return delivered;
        }
    }
}

/// Once a sweep's scan jobs have all run (the drain runs them all at once), takes the
/// sweep's snapshot now rather than at the hour the queue scheduled it for: the fan-out a
/// tenant takes that hour for is done, and the compliance trend reads snapshots. Returns
/// the deliveries made.
async fn finish_discovery(
    handler: &Handler,
    app: &AppDefinition,
    backends: &Backends,
    clock: &Clock,
) -> usize {
    let Some(queue) = &backends.discovery else {
        return 0;
    };
    match queue.bring_forward(clock.now()).await {
        Ok(0) => 0,
        Ok(_) => drain(handler, app, backends, clock, MAX_DRAIN_DELIVERIES).await,
        Err(e) => {
            tracing::warn!(error = %e, "the discovery queue cannot be read; the sweep's snapshot waits for its hour");
            0
        }
    }
}

/// `--once`: every sweep, phase by phase, each followed by every job due now, then a
/// summary read from the audit log.
async fn once(
    handler: &Handler,
    app: &AppDefinition,
    backends: &Backends,
    clock: &Clock,
) -> Summary {
    let start = head_sequence(&backends.audit).await;
    let mut summary = Summary::default();
    for current in PHASES {
        for (sweep, schedule, _) in timers(app)
            .into_iter()
            .filter(|(f, _, _)| phase(f) == current)
        {
            let info = Timer::new(schedule.clone(), clock.now()).fire_now(clock.now());
            let answer = invoke(handler, sweep, json!(info), Map::new()).await;
            if !answer.as_ref().is_ok_and(Answer::succeeded) {
                summary.failed.push(Touched {
                    name: None,
                    version: None,
                    reason: Some(format!("{} failed: {}", sweep.name, describe(&answer))),
                });
            }
        }
        summary.deliveries += drain(handler, app, backends, clock, MAX_DRAIN_DELIVERIES).await;
        if current == Phase::Discover {
            summary.deliveries += finish_discovery(handler, app, backends, clock).await;
        }
    }
    summary.scheduled = backends.queue.active_count().await.unwrap_or(0);
    let started_at = clock.now() - chrono::Duration::hours(1);
    if let Ok(dead) = backends.queue.dead_letters().await {
        summary.dead_lettered = dead
            .into_iter()
            .filter(|d| d.dead_lettered_at >= started_at && d.delivery_count > 0)
            .map(|d| Touched {
                name: Some(d.session_id),
                version: None,
                reason: Some(d.reason),
            })
            .collect();
    }
    for entry in entries_after(&backends.audit, start).await {
        let touched = Touched {
            name: entry
                .record
                .object
                .secret_name
                .as_ref()
                .map(ToString::to_string),
            version: entry
                .record
                .object
                .secret_version
                .as_ref()
                .map(ToString::to_string),
            reason: entry.record.reason.as_ref().map(ToString::to_string),
        };
        match entry.record.action.as_str() {
            "secret.rotated" | "certificate.renewed" => summary.rotated.push(touched),
            "rotation.skipped" => summary.skipped.push(touched),
            "rotation.failed" | "invocation.failed" => summary.failed.push(touched),
            _ => {}
        }
    }
    let everything = Follower::from_start(backends.audit.clone()).next().await;
    summary.proving = progress::still_proving(&everything)
        .into_iter()
        .map(|(name, reason)| Touched {
            name: Some(name),
            version: None,
            reason,
        })
        .collect();
    summary
}

async fn head_sequence(audit: &LocalAuditStore) -> u64 {
    match audit.head().await {
        Ok(Some(head)) => head.position,
        _ => 0,
    }
}

async fn entries_after(audit: &LocalAuditStore, after: u64) -> Vec<AuditEntry> {
    let mut entries = Vec::new();
    let mut from = after + 1;
    loop {
        let page = match audit.read(from, 500).await {
            Ok(page) if !page.is_empty() => page,
            _ => return entries,
        };
        for stored in page {
            from = stored.position + 1;
            if let Ok(entry) = stored.content {
                entries.push(entry);
            }
        }
    }
}

async fn invoke(
    handler: &Handler,
    function: &FunctionDefinition,
    value: Value,
    metadata: Map<String, Value>,
) -> Result<Answer, String> {
    // The Event Grid trigger binds an event as its (indented) JSON text for a function
    // that does not bind the SDK's types; the host then encodes that text as a string.
    let value = match (&function.trigger, value) {
        (Trigger::EventGrid, event @ Value::Object(_)) => Value::String(
            serde_json::to_string_pretty(&event).unwrap_or_else(|_| event.to_string()),
        ),
        (_, value) => value,
    };
    handler
        .invoke(&function.name, &function.binding, value, metadata)
        .await
        .map_err(|e| e.to_string())
}

fn describe(answer: &Result<Answer, String>) -> String {
    match answer {
        Ok(a) => format!("status {}", a.status),
        Err(e) => e.clone(),
    }
}

/// Delivers one job as the Service Bus trigger does: the body as a string binding, the
/// broker properties as metadata, the lock renewed while the worker runs; complete on
/// success, abandon on failure (the queue redelivers, then dead-letters).
async fn deliver_job(
    handler: &Handler,
    worker: &FunctionDefinition,
    queue: &LocalQueue,
    message: ReceivedMessage,
    clock: &Clock,
) {
    let token = message.lock_token;
    let mut metadata = Map::new();
    metadata.insert("MessageId".into(), json!(message.message_id));
    metadata.insert("SessionId".into(), json!(message.session_id));
    // Numbers as numbers and strings as strings: the handler's envelope encodes them
    // as the host does (`"1"`, `"\"id\""`).
    metadata.insert("DeliveryCount".into(), json!(message.delivery_count));
    metadata.insert("SequenceNumber".into(), json!(message.sequence));
    metadata.insert("EnqueuedTimeUtc".into(), json!(message.enqueued_at));
    metadata.insert("LockToken".into(), json!(token.to_string()));
    metadata.insert("ContentType".into(), json!(message.content_type));
    let body = Value::String(String::from_utf8_lossy(&message.body).into_owned());

    let renew_every = (queue.settings().lock_duration / 2)
        .to_std()
        .unwrap_or(Duration::from_secs(15));
    let invocation = invoke(handler, worker, body, metadata);
    tokio::pin!(invocation);
    let answer = loop {
        tokio::select! {
            answer = &mut invocation => break answer,
            () = tokio::time::sleep(renew_every) => {
                if let Err(e) = queue.renew_lock(token, clock.now()).await {
                    tracing::warn!(error = %e, message_id = %message.message_id, "cannot renew the job's lock");
                }
            }
        }
    };
    let settled = if answer.as_ref().is_ok_and(Answer::succeeded) {
        queue.complete(token, clock.now()).await
    } else {
        tracing::warn!(message_id = %message.message_id, delivery = message.delivery_count, outcome = %describe(&answer), "job failed; abandoning it for redelivery");
        queue.abandon(token, clock.now()).await
    };
    if let Err(e) = settled {
        tracing::warn!(error = %e, message_id = %message.message_id, "cannot settle the job");
    }
}

/// Delivers events from the ingress to the handler.
struct IngressDelivery {
    handler: Arc<Handler>,
    app: Arc<AppDefinition>,
}

#[async_trait]
impl Deliver for IngressDelivery {
    async fn deliver(&self, function: &str, event: Value) -> Result<bool, String> {
        let definition = self
            .app
            .function(function)
            .ok_or_else(|| format!("no function {function}"))?;
        invoke(&self.handler, definition, event, Map::new())
            .await
            .map(|a| a.succeeded())
    }
}

#[allow(clippy::too_many_arguments)]
async fn continuous(
    handler: &Arc<Handler>,
    app: &AppDefinition,
    backends: &Backends,
    clock: &Clock,
    demo: &Demo,
    data_dir: &Path,
    options: &DevOptions,
    receiver: Option<&AlertReceiver>,
) -> Result<(), DevError> {
    let event_functions: Vec<String> = app
        .functions
        .iter()
        .filter(|f| matches!(f.trigger, Trigger::EventGrid))
        .map(|f| f.name.clone())
        .collect();
    let listener = tokio::net::TcpListener::bind(&options.ingress_address)
        .await
        .map_err(|e| local(ports::cannot_listen(&options.ingress_address, &e)))?;
    let ingress_url = format!(
        "http://{}/runtime/webhooks/EventGrid?functionName=KeyVaultEvents",
        listener.local_addr().map_err(local)?
    );
    let delivery = Arc::new(IngressDelivery {
        handler: handler.clone(),
        app: Arc::new(app.clone()),
    });
    let ingress = tokio::spawn(async move {
        let _ = axum::serve(listener, ingress::router(delivery, event_functions)).await;
    });
    let mut progress = Follower::from_now(backends.audit.clone()).await;
    println!(
        "{}",
        bootstrap::instructions(demo, data_dir, &options.tls_address, &ingress_url)
    );
    if let Some(receiver) = receiver {
        println!("{}\n", receiver_notice(receiver, data_dir));
    }

    // Listening for a stop from here on: one during the start's phases ends the run once
    // the phase in progress is done, rather than killing it mid-job.
    let mut shutdown = tokio::spawn(crate::host::server::shutdown_signal());
    let events = definition(app, |t| matches!(t, Trigger::EventGrid));
    let mut running: Vec<(&FunctionDefinition, Timer)> = timers(app)
        .into_iter()
        .map(|(function, schedule, _)| (function, Timer::new(schedule.clone(), clock.now())))
        .collect();
    for current in PHASES {
        if shutdown.is_finished() {
            break;
        }
        if current == Phase::Rotate
            && let Some(events) = events
        {
            raise_events(handler, events, &backends.vault, clock.now()).await;
        }
        for ((function, timer), (_, _, run_on_startup)) in running.iter_mut().zip(timers(app)) {
            if phase(function) == current && fires_on_start(function, run_on_startup) {
                let info = timer.fire_now(clock.now());
                let answer = invoke(handler, function, json!(info), Map::new()).await;
                tracing::info!(function = %function.name, outcome = %describe(&answer), "timer ran on start");
            }
        }
        drain(handler, app, backends, clock, MAX_DRAIN_DELIVERIES).await;
        if current == Phase::Discover {
            finish_discovery(handler, app, backends, clock).await;
        }
        // Rotation's steps show before the alerts that follow them.
        show(&progress.next().await);
    }
    loop {
        if shutdown.is_finished() {
            break;
        }
        tokio::select! {
            _ = &mut shutdown => break,
            () = tokio::time::sleep(TICK) => {}
        }
        let now = clock.now();
        for (sweep, timer) in &mut running {
            if let Some(info) = timer.fire(now) {
                let answer = invoke(handler, sweep, json!(info), Map::new()).await;
                tracing::info!(function = %sweep.name, outcome = %describe(&answer), "sweep ran");
            }
        }
        if let Some(events) = events {
            raise_events(handler, events, &backends.vault, now).await;
        }
        drain(handler, app, backends, clock, MAX_DRAIN_DELIVERIES).await;
        show(&progress.next().await);
    }
    ingress.abort();
    shutdown.abort();
    Ok(())
}

/// Prints a line per rotation step, under the instructions. A closed terminal stops
/// nothing: the lines are only shown.
fn show(entries: &[AuditEntry]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in entries.iter().filter_map(|e| progress::line(&e.record)) {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

/// Delivers the local vault's due events, marking each raised only once the function took it.
async fn raise_events(
    handler: &Handler,
    function: &FunctionDefinition,
    vault: &LocalVault,
    now: DateTime<Utc>,
) {
    let Ok(events) = vault.pending_events(now).await else {
        return;
    };
    for event in events {
        let answer = invoke(handler, function, event.to_event_grid(), Map::new()).await;
        if answer.as_ref().is_ok_and(Answer::succeeded) {
            if let Err(e) = vault.mark_raised(&event, now).await {
                tracing::warn!(error = %e, "cannot mark an event raised; it will be raised again");
            }
        } else {
            tracing::warn!(event_type = %event.event_type(), outcome = %describe(&answer), "event delivery failed; it will be raised again");
        }
    }
}
