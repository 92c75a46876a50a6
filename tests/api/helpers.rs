//! Shared test helpers: start the app on port 0, post invocations in the host's envelopes,
//! read what reached the audit log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use keyturn::adapters::local::audit::LocalAuditStore;
use keyturn::adapters::local::store::LocalStore;
use keyturn::config::{Environment, Settings};
use keyturn::functions::Services;
use keyturn::host::router::{AppState, router};
use keyturn::host::server;
use keyturn::ports::audit::{AuditEntry, AuditStore, StoredEntry};
use keyturn::ports::site::SiteConfiguration;
use keyturn::ports::{FailureKind, PortError};
use keyturn::rotation::Ports;
use keyturn::startup::{self, Overrides, RotationOverride};
use keyturn_doubles::{Faults, ManualClock, MemoryDirectory, MemoryQueue, MemoryVault};

/// The vault every test app manages.
pub const TEST_VAULT: &str = "https://kv-test.vault.azure.net/";

/// The `keyturn` binary with a clean environment plus `env`, run from the project root:
/// only what the test sets reaches it.
pub fn keyturn(env: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keyturn"));
    cmd.env_clear().current_dir(env!("CARGO_MANIFEST_DIR"));
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A stand-in for the operator's Azure CLI sign-in, written as `az` into `dir` (put it
/// first on PATH): `az account get-access-token -o json --scope S` prints the token JSON
/// azure_identity's AzureCliCredential reads (`accessToken`, `expires_on` in seconds since
/// the epoch, `tokenType`): `vault_token` for Key Vault's scope, `graph_token` for any
/// other scope (refused as an unexpected call without one). Each call is recorded in
/// `dir/calls.log`.
pub fn fake_az(dir: &Path, vault_token: &str, graph_token: Option<&str>, expires_on: i64) {
    let other_scope = match graph_token {
        Some(graph_token) => format!(
            r#"  "account get-access-token -o json --scope "*) token='{graph_token}' ;;
"#
        ),
        None => String::new(),
    };
    let script = format!(
        r#"#!/bin/sh
echo "$*" >> "{log}"
case "$*" in
  "account get-access-token -o json --scope https://vault.azure.net/.default"*) token='{vault_token}' ;;
{other_scope}  *) echo "unexpected az call: $*" >&2; exit 2 ;;
esac
printf '{{"accessToken":"%s","expiresOn":"2030-01-01 00:00:00.000000","expires_on":{expires_on},"subscription":"00000000-0000-0000-0000-000000000000","tenant":"00000000-0000-0000-0000-000000000000","tokenType":"Bearer"}}\n' "$token"
"#,
        log = dir.join("calls.log").display(),
    );
    let az = dir.join("az");
    std::fs::write(&az, script).expect("the fake az is written");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).expect("executable");
}

/// The fixtures kept in the repository (`tests/fixtures`, see its `PROVENANCE.md`).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(relative: &str) -> Value {
    let path = fixtures().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An invocation envelope carrying `value` in binding `binding`.
pub fn envelope(binding: &str, value: Value) -> Value {
    json!({ "Data": { binding: value }, "Metadata": {} })
}

/// A front end that requires client certificates on every path, as the front-end check
/// reads it from Resource Manager: what the tests that trust `X-ARR-ClientCert` run
/// behind, except those of the check itself (`tests/api/front_end.rs`).
#[derive(Debug)]
pub struct RequiredFrontEnd;

#[async_trait]
impl SiteConfiguration for RequiredFrontEnd {
    async fn read_site(&self) -> Result<Vec<u8>, PortError> {
        let site = json!({
            "id": "/subscriptions/34adfa4f-cedf-4dc0-ba29-b6d1a69ab345/resourceGroups/rg-keyturn/providers/Microsoft.Web/sites/kt-endpoint",
            "name": "kt-endpoint",
            "type": "Microsoft.Web/sites",
            "properties": { "clientCertEnabled": true, "clientCertMode": "Required" }
        });
        Ok(site.to_string().into_bytes())
    }
}

pub fn required_front_end() -> Arc<dyn SiteConfiguration> {
    Arc::new(RequiredFrontEnd)
}

/// The rotation ports in memory, shared by the app and the test that inspects them, with
/// the manual clock both the app and the engine read.
#[derive(Clone)]
pub struct Rotation {
    pub clock: ManualClock,
    pub faults: Arc<Faults>,
    pub vault: Arc<MemoryVault>,
    pub directory: Arc<MemoryDirectory>,
    pub queue: Arc<MemoryQueue>,
}

/// In-memory rotation ports, starting at the current time.
pub fn rotation() -> Rotation {
    let clock = ManualClock::at(chrono::Utc::now());
    let faults = Faults::new();
    let vault = Arc::new(MemoryVault::new(clock.clock(), faults.clone()));
    let directory = Arc::new(MemoryDirectory::new(clock.clock(), faults.clone()));
    let queue = Arc::new(MemoryQueue::new(faults.clone()));
    Rotation {
        clock,
        faults,
        vault,
        directory,
        queue,
    }
}

impl Rotation {
    fn ports(&self) -> Ports {
        Ports {
            secrets: self.vault.clone(),
            certificates: self.vault.clone(),
            directory: self.directory.clone(),
            prover: self.directory.clone(),
            queue: self.queue.clone(),
        }
    }
}

/// The settings every test app starts from: the local backend in `data_dir`, every
/// function enabled, rotation over [`TEST_VAULT`] with the documented defaults.
pub fn test_settings(data_dir: &Path) -> Vec<(String, String)> {
    [
        ("FUNCTIONS_WORKER_RUNTIME", "custom"),
        ("KEYTURN_BACKEND", "local"),
        ("KEYTURN_VAULTS", TEST_VAULT),
        ("KEYTURN_AUDIT_STORE", "sqlite"),
        ("KEYTURN_DEFAULT_VALIDITY_DAYS", "90"),
        ("KEYTURN_DEFAULT_ROTATE_BEFORE_DAYS", "30"),
        ("KEYTURN_DEFAULT_OVERLAP_DAYS", "7"),
        // One acceptance proves a credential here, so one delivery rotates: the staged
        // proof over time is the engine tests' subject (`rotation_engine`, `staged_proof`).
        ("KEYTURN_PROOF_SUCCESSES", "1"),
        ("KEYTURN_PROOF_WINDOW_SECONDS", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([(
        "KEYTURN_DATA_DIR".to_owned(),
        data_dir.display().to_string(),
    )])
    .collect()
}

/// What a test app varies: settings on top of [`test_settings`], and the parts start-up
/// takes in place of what it would build.
#[derive(Default)]
pub struct AppOptions {
    /// Settings set on top of (or in place of) [`test_settings`].
    pub settings: Vec<(String, String)>,
    /// What start-up takes in place of what the settings would build; the audit store,
    /// clock and rotation ports are filled in by the spawner unless set here.
    pub overrides: Overrides,
}

pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub store: Arc<dyn AuditStore>,
    /// The services start-up built, as the functions see them.
    pub services: Arc<Services>,
    pub rotation: Rotation,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

/// The app with every function enabled and an embedded audit store in a temp dir.
pub async fn spawn_app() -> TestApp {
    spawn_app_from(AppOptions::default(), rotation()).await
}

/// The app over the given audit store.
pub async fn spawn_app_with_store(store: Arc<dyn AuditStore>) -> TestApp {
    spawn_app_with(store, rotation()).await
}

/// The app over the given audit store and rotation ports.
pub async fn spawn_app_with(store: Arc<dyn AuditStore>, rotation: Rotation) -> TestApp {
    let ports = RotationOverride::Ports {
        ports: rotation.ports(),
        pause: Some(rotation.clock.pause()),
    };
    spawn(store, rotation, ports).await
}

/// The app as start-up builds it where no rotation adapters are configured.
pub async fn spawn_app_without_rotation(store: Arc<dyn AuditStore>) -> TestApp {
    spawn(store, rotation(), RotationOverride::Absent).await
}

async fn spawn(
    store: Arc<dyn AuditStore>,
    rotation: Rotation,
    rotation_ports: RotationOverride,
) -> TestApp {
    let options = AppOptions {
        overrides: Overrides {
            audit: Some(store),
            clock: Some(rotation.clock.clock()),
            rotation: Some(rotation_ports),
            ..Overrides::default()
        },
        ..AppOptions::default()
    };
    spawn_app_from(options, rotation).await
}

/// What start-up builds from [`test_settings`] in `data_dir` plus `options.settings`,
/// parsed as `serve` parses them, with only `options.overrides` put in place (the
/// defaults as for [`spawn_app_from`]): the settings, the router's state and the audit
/// store the app writes to.
pub async fn start_up(
    options: AppOptions,
    rotation: &Rotation,
    data_dir: &Path,
) -> (Settings, AppState, Arc<dyn AuditStore>) {
    let env = Environment::from_pairs(test_settings(data_dir)).with(&options.settings);
    let settings = Settings::from_env(&env).expect("the test settings parse");
    let mut overrides = options.overrides;
    let store = match overrides.audit.take() {
        Some(store) => store,
        None => {
            let local = LocalStore::open(data_dir.join("audit.db")).expect("open local store");
            Arc::new(LocalAuditStore::new(local))
        }
    };
    overrides.audit = Some(store.clone());
    overrides
        .clock
        .get_or_insert_with(|| rotation.clock.clock());
    overrides
        .rotation
        .get_or_insert_with(|| RotationOverride::Ports {
            ports: rotation.ports(),
            pause: Some(rotation.clock.pause()),
        });
    let services = startup::services_with(&settings, &env, overrides)
        .await
        .expect("start-up builds the app");
    let state = startup::app_state(&settings, services);
    (settings, state, store)
}

/// The app start-up builds from [`test_settings`] plus `options.settings`, parsed as
/// `serve` parses them, with only `options.overrides` put in place; what the options
/// leave unset is the embedded store's audit log, the manual clock of `rotation` and its
/// in-memory ports.
pub async fn spawn_app_from(options: AppOptions, rotation: Rotation) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let (settings, state, store) = start_up(options, &rotation, dir.path()).await;
    let services = state.services.clone();
    let app = router(state, &settings.host.enabled_functions);
    let listener = server::bind(0).await.expect("bind port 0");
    let address = format!("http://{}", listener.local_addr().expect("local addr"));
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(listener, app, async move {
        let _ = rx.await;
    }));
    TestApp {
        address,
        http: reqwest::Client::new(),
        store,
        services,
        rotation,
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
    }
}

impl TestApp {
    /// The data directory the app's embedded store lives in.
    pub fn data_dir(&self) -> &Path {
        self._dir.path()
    }

    /// Posts an invocation to `/<function>` as the host would.
    pub async fn invoke(&self, function: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/{function}", self.address))
            .header(
                "X-Azure-Functions-InvocationId",
                uuid::Uuid::new_v4().to_string(),
            )
            .json(body)
            .send()
            .await
            .expect("request reaches the app")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request reaches the app")
    }

    /// Everything in the audit log, oldest first.
    pub async fn audit_entries(&self) -> Vec<AuditEntry> {
        read_all(self.store.as_ref()).await
    }

    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn wait_stopped(&mut self) -> std::io::Result<()> {
        match self.server.take() {
            Some(server) => server.await.expect("server task does not panic"),
            None => Ok(()),
        }
    }
}

pub async fn read_all(store: &dyn AuditStore) -> Vec<AuditEntry> {
    let mut entries = Vec::new();
    let mut from = 1;
    loop {
        let page: Vec<StoredEntry> = store.read(from, 500).await.expect("audit store reads");
        if page.is_empty() {
            return entries;
        }
        for stored in page {
            from = stored.position + 1;
            entries.push(stored.content.expect("stored entry decodes"));
        }
    }
}

/// An audit store that refuses every operation the same way: it stands for an audit
/// backend that is down (transient) or that keyturn lacks permission for (permanent).
#[derive(Debug)]
pub struct RefusingStore(pub FailureKind);

#[async_trait]
impl AuditStore for RefusingStore {
    async fn head(&self) -> Result<Option<StoredEntry>, PortError> {
        Err(PortError::new(self.0.clone(), "audit head"))
    }
    async fn append(&self, _: &AuditEntry) -> Result<(), PortError> {
        Err(PortError::new(self.0.clone(), "audit append"))
    }
    async fn read(&self, _: u64, _: u32) -> Result<Vec<StoredEntry>, PortError> {
        Err(PortError::new(self.0.clone(), "audit read"))
    }
}

/// An audit store whose appends take `delay`: it keeps an invocation in flight long
/// enough to observe shutdown behaviour.
#[derive(Debug)]
pub struct SlowStore {
    pub inner: Arc<dyn AuditStore>,
    pub delay: Duration,
}

#[async_trait]
impl AuditStore for SlowStore {
    async fn head(&self) -> Result<Option<StoredEntry>, PortError> {
        self.inner.head().await
    }
    async fn append(&self, entry: &AuditEntry) -> Result<(), PortError> {
        tokio::time::sleep(self.delay).await;
        self.inner.append(entry).await
    }
    async fn read(&self, from: u64, count: u32) -> Result<Vec<StoredEntry>, PortError> {
        self.inner.read(from, count).await
    }
}

/// A secret of vault `kv-prod` as discovery records it (sweep `s1`): enabled, unmanaged,
/// no owners, with `tags`, expiring at `expires`, scanned at `scanned_at`.
pub(crate) fn kv_prod_secret(
    name: &str,
    expires: Option<chrono::DateTime<chrono::Utc>>,
    tags: &[(&str, &str)],
    scanned_at: chrono::DateTime<chrono::Utc>,
) -> keyturn::domain::inventory::InventoryCredential {
    use keyturn::domain::inventory::{
        CredentialHandle, CredentialKind, CredentialSource, InventoryCredential, SweepId,
    };
    use keyturn::domain::names::{VaultName, VaultUrl};
    InventoryCredential {
        source: CredentialSource::Vault {
            subscription: None,
            name: "kv-prod".parse::<VaultName>().expect("a name"),
            uri: VaultUrl::parse("https://kv-prod.vault.azure.net/").expect("a URL"),
        },
        kind: CredentialKind::Secret,
        name: name.to_owned(),
        handle: CredentialHandle::VaultObject {
            name: name.to_owned(),
            version: None,
            versions: None,
        },
        enabled: true,
        created: None,
        updated: None,
        not_before: None,
        expires,
        content_type: None,
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        certificate: None,
        key: None,
        directory: None,
        owners: Vec::new(),
        managed: false,
        scanned_at,
        sweep: SweepId::parse("s1").expect("a sweep id"),
    }
}

/// The lines a child process writes to `stdout`, as a thread reads them: a test waits
/// for the one it needs with `recv_timeout`. The thread ends with the stream, or once
/// the receiver is dropped.
pub(crate) fn lines_of(
    stdout: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A loopback port for a child process to listen on, from below the kernel's ephemeral
/// range (32768 and up on Linux). A port the kernel handed out for `bind(0)` and that
/// was let go is also the pool every outgoing connection's local port comes from, so
/// under a suite making thousands of connections to Azurite and the stand-ins one of
/// them can take it before the child binds it. Below that range only an explicit bind
/// takes a port; each call in this process gets a different one (a counter, started
/// from the process id so two test binaries start apart), checked free by binding it.
pub(crate) fn unused_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = u16::try_from(port).expect("below 32,000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {}", FIRST + SPAN)
}

/// A running `keyturn serve --port 0`: the port it logged, every line it logs after
/// that, and its stderr (kept in a file, so a chatty process never blocks on a full
/// pipe) for failure messages. Dropping it kills the process, so a failing test leaves
/// none behind.
pub(crate) struct Served {
    child: std::process::Child,
    port: u16,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: tempfile::NamedTempFile,
}

/// Starts `keyturn serve` on a port of its choosing and waits, up to `within`, for the
/// log line naming it; if none comes the test fails with what the process wrote on
/// stderr.
pub(crate) fn serve(env: &[(&str, &str)], within: Duration) -> Served {
    let stderr = tempfile::NamedTempFile::new().expect("a stderr file");
    let mut child = keyturn(env)
        .args(["serve", "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(stderr.reopen().expect("the stderr file reopens"))
        .spawn()
        .expect("keyturn starts");
    let lines = lines_of(child.stdout.take().expect("stdout"));
    let mut served = Served {
        child,
        port: 0,
        lines,
        stderr,
    };
    while served.port == 0 {
        let Ok(line) = served.lines.recv_timeout(within) else {
            let _ = served.child.kill();
            let _ = served.child.wait();
            panic!("keyturn serve did not start: {}", served.stderr());
        };
        let parsed: Value = serde_json::from_str(&line).expect("log lines are JSON");
        if parsed["fields"]["message"] == "listening" {
            served.port = parsed["fields"]["port"]
                .as_u64()
                .and_then(|port| u16::try_from(port).ok())
                .expect("the port it listens on");
        }
    }
    served
}

impl Served {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What the process has written on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// Sends SIGTERM and returns the exit status, the lines logged since start-up and
    /// stderr.
    pub(crate) fn terminate(mut self) -> (std::process::ExitStatus, String, String) {
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let status = self.child.wait().expect("keyturn exits");
        let mut stdout = String::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            stdout.push_str(&line);
            stdout.push('\n');
        }
        (status, stdout, self.stderr())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
