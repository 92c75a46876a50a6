//! Rotations per minute the worker sustains for `entra-app-secret` objects against the
//! HTTPS stand-ins with 50 ms of latency on every call, at the concurrency the production
//! host.json allows, and what that means next to Microsoft Graph's write limit.
//!
//! The engine is built as start-up builds it for Azure (Key Vault through the official
//! crates, Graph, the Entra token endpoint, the Service Bus sender), pointed at the
//! stand-ins, and driven through the host's router with Service Bus trigger envelopes.
//! Loopback only; it stops by itself after [`OBJECTS`] rotations or [`TIME_LIMIT`].
//!
//! Run: `cargo bench --bench rotation`

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use azure_core::http::ClientOptions;
use chrono::{DateTime, Utc};
use keyturn_standins::{Permissions, QueueOptions, ReceivedMessage, SecretSeed, Service, Standins};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use keyturn::adapters::azure::client::http::default_client_options;
use keyturn::adapters::azure::graph::GraphClient;
use keyturn::adapters::azure::keyvault::KeyVault;
use keyturn::adapters::azure::servicebus::ServiceBusQueue;
use keyturn::adapters::azure::token::{DEFAULT_PROOF_SCOPE, EntraTokenProver};
use keyturn::config::{Environment, Settings};
use keyturn::domain::clock::Clock;
use keyturn::domain::ids::DirectoryObjectId;
use keyturn::host::router::router;
use keyturn::ports::directory::CredentialIssuer;
use keyturn::rotation::Ports;
use keyturn::rotation::job::Job;
use keyturn::rotation::tags;
use keyturn::startup::{self, Overrides, RotationOverride};

/// Objects rotated, each once. Enough for the mean to settle at four-way concurrency
/// while the whole run stays around a minute on a 2-core machine.
const OBJECTS: usize = 120;
/// The run stops launching work after this long, whatever the machine.
const TIME_LIMIT: Duration = Duration::from_secs(300);
/// Latency the stand-ins add to every call: a round trip to an Azure region.
const LATENCY: Duration = Duration::from_millis(50);
/// Microsoft Graph's documented write limit for an app in a tenant ("Microsoft Graph
/// service-specific throttling limits", identity and access: 3,000 requests per 150 s
/// for writes), as writes per minute.
const GRAPH_WRITES_PER_MINUTE: f64 = 3000.0 / 150.0 * 60.0;
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Seeded versions expire within the default rotate-before window (30 days).
const DAYS_TO_EXPIRY: i64 = 20;

/// The allocator the `keyturn` binary uses (`handlers/main.rs`), so the library is
/// measured as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run());
}

/// The concurrency the production host gives the session-enabled RotationWorker trigger:
/// `maxConcurrentSessions` (one message per session at a time).
fn host_concurrency() -> usize {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/host.json");
    let text = std::fs::read_to_string(path).expect("host.json is readable");
    let host: Value = serde_json::from_str(&text).expect("host.json is JSON");
    let sessions = host["extensions"]["serviceBus"]["maxConcurrentSessions"]
        .as_u64()
        .expect("host.json sets maxConcurrentSessions");
    usize::try_from(sessions).expect("a small number")
}

struct Bench {
    standins: Arc<Standins>,
    settings: Settings,
    router: Router,
    _dir: tempfile::TempDir,
}

async fn run() {
    let concurrency = host_concurrency();
    let bench = setup().await;
    println!(
        "rotation bench: {OBJECTS} entra-app-secret objects, {} ms latency per call, \
         concurrency {concurrency} (host.json maxConcurrentSessions), propagation delay 0",
        LATENCY.as_millis()
    );

    // Plan every object through KeyVaultEvents before the clock starts.
    for name in object_names() {
        let version = bench
            .standins
            .keyvault()
            .current_secret(&name)
            .expect("seeded")
            .version;
        let event = near_expiry(&bench, &name, &version);
        let (status, _) = invoke(&bench.router, "KeyVaultEvents", &event).await;
        assert_eq!(status, StatusCode::OK, "planning {name}");
    }
    let jobs = messages(&bench, "rotate");
    assert_eq!(jobs.len(), OBJECTS, "one job per object");

    bench.standins.set_latency(LATENCY);
    bench.standins.clear_requests();
    let rotate = deliver_all(&bench.router, jobs, concurrency).await;
    let adds = graph_writes(&bench, "/addPassword");

    // The broker would hold each retirement until its overlap ended; the worker re-checks
    // state rather than the time, so delivering them now measures the same work.
    let retires = messages(&bench, "retire");
    let retire = deliver_all(&bench.router, retires, concurrency).await;
    let removes = graph_writes(&bench, "/removePassword");

    let rotations = rotate.completed as f64;
    let per_minute = rotations / rotate.elapsed.as_secs_f64() * 60.0;
    let writes_per_rotation = (adds + removes) as f64 / rotations;
    let ceiling = GRAPH_WRITES_PER_MINUTE / writes_per_rotation;
    println!(
        "rotate:  {} rotations in {:.1} s = {per_minute:.0} rotations/minute; \
         mean {:.2} s per rotation (per invocation)",
        rotate.completed,
        rotate.elapsed.as_secs_f64(),
        rotate.mean_seconds
    );
    println!(
        "retire:  {} retirements in {:.1} s = {:.0} retirements/minute; mean {:.2} s each",
        retire.completed,
        retire.elapsed.as_secs_f64(),
        retire.completed as f64 / retire.elapsed.as_secs_f64() * 60.0,
        retire.mean_seconds
    );
    println!(
        "graph:   {adds} addPassword + {removes} removePassword = {writes_per_rotation:.2} \
         writes per rotation"
    );
    // A full cycle is one rotation and, later, its retirement: the worker time both take.
    let cycle = rotate.elapsed + retire.elapsed;
    let cycles_per_minute = rotations / cycle.as_secs_f64() * 60.0;
    println!(
        "limit:   Graph allows {GRAPH_WRITES_PER_MINUTE:.0} writes/minute per app and tenant \
         = {ceiling:.0} rotations/minute at {writes_per_rotation:.0} writes each"
    );
    println!(
        "compare: rotate phase alone {per_minute:.0}/minute = {:.0}% of that ceiling; \
         full cycles (rotate + retire) {cycles_per_minute:.0}/minute = {:.0} Graph writes/minute \
         = {:.0}% of the limit per worker instance",
        per_minute / ceiling * 100.0,
        cycles_per_minute * writes_per_rotation,
        cycles_per_minute * writes_per_rotation / GRAPH_WRITES_PER_MINUTE * 100.0
    );
}

/// What one phase did.
struct Phase {
    completed: usize,
    elapsed: Duration,
    mean_seconds: f64,
}

/// Delivers `messages` to RotationWorker with at most `concurrency` in flight.
async fn deliver_all(router: &Router, messages: Vec<ReceivedMessage>, concurrency: usize) -> Phase {
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for message in messages {
        if started.elapsed() > TIME_LIMIT {
            println!("time limit reached; stopping");
            break;
        }
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let router = router.clone();
        tasks.spawn(async move {
            let took = Instant::now();
            let (status, answer) = invoke(&router, "RotationWorker", &delivery(&message)).await;
            drop(permit);
            assert_eq!(status, StatusCode::OK, "{answer}");
            let outcome = &answer["ReturnValue"]["outcome"];
            assert!(
                outcome == "rotated" || outcome == "retired",
                "unexpected outcome: {answer}"
            );
            took.elapsed()
        });
    }
    let durations = tasks.join_all().await;
    let elapsed = started.elapsed();
    let total: f64 = durations.iter().map(Duration::as_secs_f64).sum();
    Phase {
        completed: durations.len(),
        elapsed,
        mean_seconds: total / durations.len().max(1) as f64,
    }
}

fn object_names() -> impl Iterator<Item = String> {
    (0..OBJECTS).map(|i| format!("app-secret-{i:04}"))
}

async fn setup() -> Bench {
    let standins = Arc::new(Standins::start().await.expect("the stand-ins start"));
    let dir = tempfile::tempdir().expect("tempdir");
    let env = Environment::from_pairs([
        ("FUNCTIONS_WORKER_RUNTIME", "custom".to_owned()),
        ("KEYTURN_BACKEND", "azure".to_owned()),
        ("AZURE_TENANT_ID", standins.tenant_id().to_string()),
        ("KEYTURN_AUTHORITY_HOST", standins.login_url().to_string()),
        ("KEYTURN_GRAPH_ENDPOINT", standins.graph().url().to_string()),
        ("KEYTURN_VAULTS", standins.keyvault().url().to_string()),
        // The Key Vault stand-in listens on loopback, not on a Key Vault host.
        ("KEYTURN_ALLOW_ANY_VAULT_HOST", "true".to_owned()),
        (
            "ServiceBusConnection__fullyQualifiedNamespace",
            "sb-keyturn-bench.servicebus.windows.net".to_owned(),
        ),
        ("KEYTURN_AUDIT_STORE", "sqlite".to_owned()),
        ("KEYTURN_DATA_DIR", dir.path().display().to_string()),
    ]);
    let settings = Settings::from_env(&env).expect("a production configuration");
    standins.servicebus().create_queue(
        settings.rotation.queue.as_str(),
        QueueOptions {
            requires_session: true,
            duplicate_detection_window: Some(Duration::from_secs(600)),
        },
    );
    let options = ClientOptions {
        transport: standins.client_options().transport,
        ..default_client_options()
    };
    let credential = standins.credential();
    let graph = GraphClient::with_scope(
        &settings.entra.graph_endpoint,
        GRAPH_SCOPE.to_owned(),
        credential.clone(),
        Some(options.clone()),
    )
    .expect("the stand-in is https");

    // Each object: an application with a credential keyturn added earlier, and a secret
    // holding it that expires within the rotate-before window.
    let end = DateTime::<Utc>::from_timestamp(
        (standins.now() + chrono::Duration::days(DAYS_TO_EXPIRY)).timestamp(),
        0,
    )
    .expect("in range");
    for name in object_names() {
        let app = standins
            .graph()
            .seed_application(name.clone(), Permissions::only(Vec::<String>::new()));
        let object = DirectoryObjectId::parse(&app.object_id.to_string()).expect("a GUID");
        let issued = graph
            .add_password(&object, &format!("keyturn {}", "b".repeat(32)), end)
            .await
            .expect("seeded credential");
        standins.keyvault().seed_secret(
            SecretSeed::new(&name, issued.secret.expose())
                .expires(end)
                .tag(tags::KIND, "entra-app-secret")
                .tag(tags::APP_ID, app.app_id.to_string())
                .tag(tags::KEY_ID, issued.credential.key_id.to_string())
                .tag(tags::JOB_ID, "b".repeat(32))
                .tag(tags::ROTATED_AT, "2030-01-01T00:00:00Z"),
        );
    }

    let vault = Arc::new(
        KeyVault::new(credential.clone(), Some(options.clone())).without_challenge_resource_check(),
    );
    let prover = EntraTokenProver::new(
        &settings.entra.authority_host,
        settings.entra.tenant_id.as_ref().expect("tenant set"),
        DEFAULT_PROOF_SCOPE,
        Some(options.clone()),
    )
    .expect("the stand-in is https");
    let queue = ServiceBusQueue::with_base_url(
        standins.servicebus().url().clone(),
        settings.rotation.queue.as_str(),
        credential,
        Some(options),
    )
    .expect("the stand-in is https");
    let ports = Ports {
        secrets: vault.clone(),
        certificates: vault,
        directory: Arc::new(graph),
        prover: Arc::new(prover),
        queue: Arc::new(queue),
    };
    let clock = {
        let standins = standins.clone();
        Clock::from_fn(move || standins.now())
    };
    // Start-up builds the rest from the settings (the audit log on the SQLite file in
    // the data directory among it), with the stand-in-bound ports and clock in place.
    let overrides = Overrides {
        clock: Some(clock),
        rotation: Some(RotationOverride::Ports { ports, pause: None }),
        ..Overrides::default()
    };
    let services = startup::services_with(&settings, &env, overrides)
        .await
        .expect("start-up builds the worker");
    let state = startup::app_state(&settings, services);
    Bench {
        standins,
        router: router(state, &settings.host.enabled_functions),
        settings,
        _dir: dir,
    }
}

fn near_expiry(bench: &Bench, name: &str, version: &str) -> Value {
    let id = format!(
        "{}secrets/{name}/{version}",
        bench.settings.rotation.vaults[0]
    );
    let now = bench.standins.now();
    let event = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-bench",
        "subject": name,
        "eventType": "Microsoft.KeyVault.SecretNearExpiry",
        "eventTime": now.to_rfc3339(),
        "data": {
            "Id": id,
            "VaultName": "kv-bench",
            "ObjectType": "Secret",
            "ObjectName": name,
            "Version": version,
            "NBF": now.timestamp().to_string(),
            "EXP": (now + chrono::Duration::days(DAYS_TO_EXPIRY)).timestamp().to_string(),
        },
        "dataVersion": "1",
        "metadataVersion": "1",
    });
    json!({ "Data": { "event": event }, "Metadata": {} })
}

fn messages(bench: &Bench, action: &str) -> Vec<ReceivedMessage> {
    bench
        .standins
        .servicebus()
        .messages(bench.settings.rotation.queue.as_str())
        .into_iter()
        .filter(|m| {
            let value: Value = serde_json::from_slice(&m.body).expect("a JSON job");
            Job::from_json(&value).is_ok_and(|job| job.action.name() == action)
        })
        .collect()
}

/// The Service Bus trigger's envelope for `message`, the body double-encoded as the host
/// encodes it.
fn delivery(message: &ReceivedMessage) -> Value {
    let body = String::from_utf8(message.body.clone()).expect("a UTF-8 job");
    let quoted = |text: Option<&str>| json!(format!("\"{}\"", text.unwrap_or_default()));
    json!({
        "Data": { "job": Value::String(Value::String(body).to_string()) },
        "Metadata": {
            "MessageId": quoted(message.message_id.as_deref()),
            "SessionId": quoted(message.session_id.as_deref()),
            "DeliveryCount": "1",
            "ContentType": quoted(message.content_type.as_deref()),
        },
    })
}

fn graph_writes(bench: &Bench, suffix: &str) -> usize {
    bench
        .standins
        .requests_to(Service::Graph)
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(suffix) && r.status < 300)
        .count()
}

async fn invoke(router: &Router, function: &str, body: &Value) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/{function}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("a request");
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
