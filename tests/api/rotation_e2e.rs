//! Rotation end to end through the HTTPS stand-ins: the engine built as start-up builds it
//! for Azure (Key Vault through the official crates, Graph, the Entra token endpoint and
//! the Service Bus sender), with only the adapters' addresses and transport pointed at the
//! stand-ins, and driven through the host's envelopes on the host's router: a Key Vault
//! event, the job message it puts on the queue, that message delivered to the worker in
//! the Service Bus trigger's envelope, and the retirement delivered after the overlap.
//!
//! A worker "process" here is one router over one engine. Stopping a worker drops its
//! in-flight invocation mid-call, exactly where a step has taken effect at the stand-in,
//! and redelivery goes to a fresh process, as the Functions host would give it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use chrono::{DateTime, Utc};
use keyturn_standins::{
    Fault, LoggedRequest, PasswordRestriction, Permissions, QueueOptions, ReceivedMessage, Route,
    SecretSeed, Service, Standins, StoredSecret,
};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tower::ServiceExt;
use uuid::Uuid;

use keyturn::adapters::azure::client::http::default_client_options;
use keyturn::adapters::azure::graph::GraphClient;
use keyturn::adapters::azure::keyvault::KeyVault;
use keyturn::adapters::azure::servicebus::ServiceBusQueue;
use keyturn::adapters::azure::token::{DEFAULT_PROOF_SCOPE, EntraTokenProver};
use keyturn::adapters::local::audit::LocalAuditStore;
use keyturn::adapters::local::store::LocalStore;
use keyturn::config::{Environment, Settings};
use keyturn::domain::clock::Clock;
use keyturn::domain::ids::{AppId, DirectoryObjectId, KeyId};
use keyturn::domain::names::{ObjectId, ObjectName, ObjectVersion, VaultUrl};
use keyturn::domain::secret::SecretValue;
use keyturn::host::router::{INVOCATION_ID_HEADER, router};
use keyturn::ports::PortError;
use keyturn::ports::audit::{AuditEntry, Outcome};
use keyturn::ports::directory::{
    Application, CredentialIssuer, IssuedCredential, PasswordCredential, ProofError, TokenProver,
};
use keyturn::ports::queue::{JobQueue, OutgoingMessage};
use keyturn::ports::vault::{NewSecretVersion, Secret, SecretProperties, SecretStore};
use keyturn::rotation::Ports;
use keyturn::rotation::job::{Action, Job};
use keyturn::rotation::run::marker;
use keyturn::rotation::tags;
use keyturn::startup::{self, Overrides, RotationOverride};

use crate::helpers::{envelope, fixture, read_all};

/// The stand-ins issue Graph tokens for Microsoft Graph's own audience, whatever host the
/// Graph stand-in listens on; production derives the same scope from its Graph endpoint.
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// The managed secret every test rotates.
const SECRET: &str = "payments-api-secret";
/// The vault name Event Grid reports; the stand-in's URL carries no name of its own.
const VAULT_NAME: &str = "kv-keyturn-e2e";
/// The rotate job that wrote the version every test starts from.
const EARLIER_JOB: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
/// Service Bus's default duplicate-detection window is ten minutes.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// The starting version expires within the default rotate-before window (30 days) and
/// after the default overlap (7 days), so only its retirement can stop it working.
const DAYS_TO_EXPIRY: i64 = 20;

// ---------------------------------------------------------------------------------------
// The world: stand-ins, settings, the audit log and the seeded application and secret
// ---------------------------------------------------------------------------------------

struct World {
    standins: Arc<Standins>,
    env: Environment,
    settings: Settings,
    audit: Arc<LocalAuditStore>,
    app_id: AppId,
    app_object: DirectoryObjectId,
    _dir: tempfile::TempDir,
}

/// The version keyturn wrote before the test, and the credential it holds.
struct Seeded {
    version: String,
    key_id: KeyId,
    value: SecretValue,
}

async fn world() -> World {
    // One acceptance proves a credential here, so one delivery rotates; the staged proof
    // over time has its own test below and the engine tests'.
    world_with(&[
        ("KEYTURN_PROOF_SUCCESSES", "1"),
        ("KEYTURN_PROOF_WINDOW_SECONDS", "0"),
    ])
    .await
}

/// The world with `extra` settings on top of the production configuration.
async fn world_with(extra: &[(&str, &str)]) -> World {
    let standins = Arc::new(Standins::start().await.expect("the stand-ins start"));
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = extra.iter().map(|(k, v)| (*k, (*v).to_owned()));
    let env = Environment::from_pairs(
        [
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
                "sb-keyturn-e2e.servicebus.windows.net".to_owned(),
            ),
            ("KEYTURN_AUDIT_STORE", "sqlite".to_owned()),
            ("KEYTURN_DATA_DIR", dir.path().display().to_string()),
        ]
        .into_iter()
        .chain(extra),
    );
    let settings = Settings::from_env(&env).expect("a production configuration");
    standins.servicebus().create_queue(
        settings.rotation.queue.as_str(),
        QueueOptions {
            requires_session: true,
            duplicate_detection_window: Some(DUPLICATE_WINDOW),
        },
    );
    let local = LocalStore::open(dir.path().join("audit.db")).expect("audit store");
    let seeded = standins
        .graph()
        .seed_application("payments-api", Permissions::only(Vec::<String>::new()));
    World {
        standins,
        env,
        settings,
        audit: Arc::new(LocalAuditStore::new(local)),
        app_id: AppId::parse(&seeded.app_id.to_string()).expect("a GUID"),
        app_object: DirectoryObjectId::parse(&seeded.object_id.to_string()).expect("a GUID"),
        _dir: dir,
    }
}

impl World {
    fn vault(&self) -> VaultUrl {
        self.settings.rotation.vaults[0].clone()
    }

    fn object(&self) -> ObjectId {
        ObjectId::parse(&format!("{}secrets/{SECRET}", self.vault())).expect("a secret id")
    }

    /// A current version keyturn wrote earlier (an earlier job's marker on its credential,
    /// its key id recorded), expiring in five days, so the next rotation retires it.
    async fn seed_keyturn_version(&self) -> Seeded {
        let graph = GraphClient::with_scope(
            &self.settings.entra.graph_endpoint,
            GRAPH_SCOPE.to_owned(),
            self.standins.credential(),
            Some(self.client_options()),
        )
        .expect("the stand-in is https");
        let end = whole_seconds(self.standins.now() + chrono::Duration::days(DAYS_TO_EXPIRY));
        let issued: IssuedCredential = graph
            .add_password(&self.app_object, &format!("keyturn {EARLIER_JOB}"), end)
            .await
            .expect("the earlier credential is added");
        let version = self.standins.keyvault().seed_secret(
            SecretSeed::new(SECRET, issued.secret.expose())
                .content_type("text/plain")
                .expires(end)
                .tag(tags::KIND, "entra-app-secret")
                .tag(tags::APP_ID, self.app_id.to_string())
                .tag(tags::KEY_ID, issued.credential.key_id.to_string())
                .tag(tags::JOB_ID, EARLIER_JOB)
                .tag(tags::ROTATED_AT, "2030-01-01T00:00:00Z"),
        );
        self.standins.clear_requests();
        Seeded {
            version,
            key_id: issued.credential.key_id,
            value: issued.secret,
        }
    }

    /// keyturn's default client options (its retry policy), over the stand-ins' transport.
    fn client_options(&self) -> ClientOptions {
        ClientOptions {
            transport: self.standins.client_options().transport,
            ..default_client_options()
        }
    }

    /// A worker process with keyturn's identity.
    async fn worker(&self) -> Worker {
        self.worker_as(self.standins.credential()).await
    }

    /// A worker process authenticating as `credential`: the ports start-up builds for
    /// Azure, pointed at the stand-ins, in place of the backend's, and the rest as
    /// start-up builds it from the settings.
    async fn worker_as(&self, credential: Arc<dyn TokenCredential>) -> Worker {
        let settings = &self.settings;
        let options = self.client_options();
        let wire = Arc::new(Tripwire::default());
        let vault = Arc::new(
            KeyVault::new(credential.clone(), Some(options.clone()))
                .without_challenge_resource_check(),
        );
        let graph = GraphClient::with_scope(
            &settings.entra.graph_endpoint,
            GRAPH_SCOPE.to_owned(),
            credential.clone(),
            Some(options.clone()),
        )
        .expect("the stand-in is https");
        let tenant = settings.entra.tenant_id.as_ref().expect("tenant set");
        let prover = EntraTokenProver::new(
            &settings.entra.authority_host,
            tenant,
            DEFAULT_PROOF_SCOPE,
            Some(options.clone()),
        )
        .expect("the stand-in is https");
        let queue = ServiceBusQueue::with_base_url(
            self.standins.servicebus().url().clone(),
            settings.rotation.queue.as_str(),
            credential,
            Some(options),
        )
        .expect("the stand-in is https");
        let ports = Ports {
            secrets: Arc::new(Tripped::new(vault.clone(), &wire)),
            certificates: vault,
            directory: Arc::new(Tripped::new(Arc::new(graph), &wire)),
            prover: Arc::new(Tripped::new(Arc::new(prover), &wire)),
            queue: Arc::new(Tripped::new(Arc::new(queue), &wire)),
        };
        // The stand-ins' clock, which tests move past the overlap, is the worker's clock.
        let standins = self.standins.clone();
        let clock = Clock::from_fn(move || standins.now());
        let overrides = Overrides {
            clock: Some(clock),
            audit: Some(self.audit.clone()),
            rotation: Some(RotationOverride::Ports { ports, pause: None }),
            ..Overrides::default()
        };
        let services = startup::services_with(settings, &self.env, overrides)
            .await
            .expect("start-up builds the worker");
        let state = startup::app_state(settings, services);
        Worker {
            router: router(state, &settings.host.enabled_functions),
            wire,
        }
    }

    /// The event Key Vault raises for `version` as Event Grid delivers it.
    fn near_expiry(&self, version: &str) -> Value {
        let mut event = fixture("keyvault-events/DERIVED.eventgrid-schema.SecretNearExpiry.json");
        let expires = self
            .standins
            .keyvault()
            .secret_versions(SECRET)
            .into_iter()
            .find(|v| v.version == version)
            .and_then(|v| v.expires)
            .expect("the version expires");
        event["id"] = json!(Uuid::new_v4().to_string());
        event["subject"] = json!(SECRET);
        event["topic"] = json!(format!(
            "/subscriptions/{}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/{VAULT_NAME}",
            Uuid::new_v4()
        ));
        event["eventTime"] = json!(self.standins.now().to_rfc3339());
        event["data"]["Id"] = json!(format!("{}/{version}", self.object()));
        event["data"]["VaultName"] = json!(VAULT_NAME);
        event["data"]["ObjectName"] = json!(SECRET);
        event["data"]["Version"] = json!(version);
        event["data"]["NBF"] = json!(self.standins.now().timestamp().to_string());
        event["data"]["EXP"] = json!(expires.timestamp().to_string());
        event
    }

    fn messages(&self) -> Vec<ReceivedMessage> {
        self.standins
            .servicebus()
            .messages(self.settings.rotation.queue.as_str())
    }

    /// The job the queue holds for `action` (the broker kept one copy per MessageId).
    fn message(&self, name: &str) -> ReceivedMessage {
        let found: Vec<ReceivedMessage> = self
            .messages()
            .into_iter()
            .filter(|m| job_of(m).action.name() == name)
            .collect();
        assert_eq!(found.len(), 1, "one {name} job on the queue: {found:?}");
        found.into_iter().next().expect("one message")
    }

    fn versions(&self) -> Vec<StoredSecret> {
        self.standins.keyvault().secret_versions(SECRET)
    }

    fn current(&self) -> StoredSecret {
        self.standins
            .keyvault()
            .current_secret(SECRET)
            .expect("the secret exists")
    }

    /// The application's credentials as Graph lists them: key id and display name.
    fn credentials(&self) -> Vec<(KeyId, Option<String>)> {
        self.standins
            .graph()
            .passwords(*self.app_object.as_uuid())
            .into_iter()
            .map(|p| {
                let key = KeyId::parse(&p.key_id.to_string()).expect("a GUID");
                (key, p.display_name)
            })
            .collect()
    }

    /// Credentials carrying keyturn's marker, sorted.
    fn keyturn_credentials(&self) -> Vec<KeyId> {
        let mut keys: Vec<KeyId> = self
            .credentials()
            .into_iter()
            .filter(|(_, name)| name.as_deref().is_some_and(|n| n.starts_with("keyturn ")))
            .map(|(key, _)| key)
            .collect();
        keys.sort();
        keys
    }

    /// Whether the token endpoint grants a token for `secret` (client credentials).
    async fn token_works(&self, secret: &str) -> bool {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &self.app_id.to_string())
            .append_pair("client_secret", secret)
            .append_pair("scope", GRAPH_SCOPE)
            .finish();
        let response = self
            .standins
            .http_client()
            .post(self.standins.token_url())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("the token stand-in answers");
        let status = response.status();
        let answer: Value = response.json().await.expect("a JSON answer");
        status == reqwest::StatusCode::OK && answer["access_token"].is_string()
    }

    fn requests(&self, service: Service, method: &str, path_end: &str) -> Vec<LoggedRequest> {
        self.standins
            .requests_to(service)
            .into_iter()
            .filter(|r| r.method == method && r.path.ends_with(path_end))
            .collect()
    }

    fn add_password_calls(&self) -> usize {
        self.requests(Service::Graph, "POST", "/addPassword").len()
    }

    async fn audit_entries(&self) -> Vec<AuditEntry> {
        read_all(self.audit.as_ref()).await
    }

    async fn actions(&self) -> Vec<String> {
        self.audit_entries()
            .await
            .into_iter()
            .map(|e| e.record.action.as_str().to_owned())
            .collect()
    }

    /// Exactly one current version keyturn wrote, whose credential works and is marked,
    /// and no keyturn credential in Graph but that one and (until retired) `previous`.
    async fn assert_converged(&self, what: &str, previous: Option<KeyId>) {
        let current = self.current();
        let notes = tags::Bookkeeping::read(&current.tags);
        let key = notes
            .key_id
            .expect("the current version records its key id");
        assert!(
            self.token_works(&current.value).await,
            "{what}: the current version's credential works"
        );
        let marked = self
            .credentials()
            .into_iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, name)| name);
        assert_eq!(
            marked.as_deref(),
            notes
                .job_id
                .as_deref()
                .map(|j| format!("keyturn {j}"))
                .as_deref(),
            "{what}: the current credential carries its job's marker"
        );
        let mut expected = vec![key];
        expected.extend(previous);
        expected.sort();
        assert_eq!(
            self.keyturn_credentials(),
            expected,
            "{what}: no orphaned keyturn credential"
        );
    }
}

fn job_of(message: &ReceivedMessage) -> Job {
    let value: Value = serde_json::from_slice(&message.body).expect("a JSON job");
    Job::from_json(&value).expect("a valid job")
}

/// The invocation the Functions host posts for `message`: the captured Service Bus
/// trigger request, the body double-encoded as the host encodes it, and the message's
/// broker properties in the metadata.
fn delivery(message: &ReceivedMessage, delivery_count: u32) -> Value {
    let mut captured = fixture("custom-handler/servicebus-trigger.request.captured-ext4.json");
    let body = String::from_utf8(message.body.clone()).expect("a UTF-8 job");
    captured["Data"] = json!({ "job": Value::String(Value::String(body).to_string()) });
    let quoted = |text: &str| json!(format!("\"{text}\""));
    let metadata = &mut captured["Metadata"];
    metadata["MessageId"] = quoted(message.message_id.as_deref().expect("a MessageId"));
    metadata["SessionId"] = quoted(message.session_id.as_deref().expect("a SessionId"));
    metadata["DeliveryCount"] = json!(delivery_count.to_string());
    metadata["ContentType"] = quoted(message.content_type.as_deref().unwrap_or_default());
    metadata["EnqueuedTimeUtc"] = quoted(&message.enqueued_at.to_rfc3339());
    if let Some(at) = message.scheduled_enqueue_time_utc {
        metadata["ScheduledEnqueueTimeUtc"] = quoted(&at.to_rfc3339());
    }
    captured
}

/// `t` without its fraction of a second, as Graph and Key Vault keep times.
fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).expect("a time the stand-ins handed out")
}

// ---------------------------------------------------------------------------------------
// A worker process, and stopping it right after a step took effect
// ---------------------------------------------------------------------------------------

struct Worker {
    router: Router,
    wire: Arc<Tripwire>,
}

impl Worker {
    /// Posts an invocation to `/<function>` as the host does; the status and the body.
    async fn invoke(&self, function: &str, body: &Value) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("/{function}"))
            .header("content-type", "application/json")
            .header(INVOCATION_ID_HEADER, Uuid::new_v4().to_string())
            .body(Body::from(body.to_string()))
            .expect("a request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, body)
    }

    /// The answer's `ReturnValue`, asserting the host completes the message (200).
    async fn completed(&self, function: &str, body: &Value) -> Value {
        let (status, answer) = self.invoke(function, body).await;
        assert_eq!(status, StatusCode::OK, "{function}: {answer}");
        answer["ReturnValue"].clone()
    }

    /// Runs the invocation until the armed step has taken effect, then drops it there:
    /// the process died between the call and its answer.
    async fn stop_after(&self, operation: &'static str, body: &Value) {
        self.wire.arm(operation);
        tokio::select! {
            answer = self.invoke("RotationWorker", body) => {
                panic!("the worker never reached {operation}: {answer:?}")
            }
            () = self.wire.tripped.notified() => {}
        }
    }
}

/// Stops the worker after the first successful call of one operation.
#[derive(Debug, Default)]
struct Tripwire {
    armed: Mutex<Option<&'static str>>,
    tripped: Notify,
}

impl Tripwire {
    fn arm(&self, operation: &'static str) {
        *self.armed.lock().expect("never poisoned") = Some(operation);
    }

    /// Called after `operation` succeeded; never returns when armed for it.
    async fn after(&self, operation: &str) {
        let hit = {
            let mut armed = self.armed.lock().expect("never poisoned");
            let hit = *armed == Some(operation);
            if hit {
                *armed = None;
            }
            hit
        };
        if hit {
            self.tripped.notify_one();
            std::future::pending::<()>().await;
        }
    }
}

/// An Azure adapter with a tripwire after each call that changes something.
#[derive(Debug)]
struct Tripped<P> {
    inner: Arc<P>,
    wire: Arc<Tripwire>,
}

impl<P> Tripped<P> {
    fn new(inner: Arc<P>, wire: &Arc<Tripwire>) -> Self {
        Self {
            inner,
            wire: wire.clone(),
        }
    }

    async fn after<T: Send>(
        &self,
        operation: &str,
        result: Result<T, PortError>,
    ) -> Result<T, PortError> {
        if result.is_ok() {
            self.wire.after(operation).await;
        }
        result
    }
}

#[async_trait]
impl<P: SecretStore> SecretStore for Tripped<P> {
    async fn list_secrets(&self, vault: &VaultUrl) -> Result<Vec<SecretProperties>, PortError> {
        self.inner.list_secrets(vault).await
    }

    async fn secret_properties(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: Option<&ObjectVersion>,
    ) -> Result<Option<SecretProperties>, PortError> {
        self.inner.secret_properties(vault, name, version).await
    }

    async fn list_versions(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<Vec<SecretProperties>, PortError> {
        self.inner.list_versions(vault, name).await
    }

    async fn secret(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: Option<&ObjectVersion>,
    ) -> Result<Option<Secret>, PortError> {
        self.inner.secret(vault, name, version).await
    }

    async fn set_secret(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        value: &SecretValue,
        version: NewSecretVersion,
    ) -> Result<SecretProperties, PortError> {
        let result = self.inner.set_secret(vault, name, value, version).await;
        self.after("set_secret", result).await
    }

    async fn update_tags(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: &ObjectVersion,
        tags: BTreeMap<String, String>,
    ) -> Result<SecretProperties, PortError> {
        let result = self.inner.update_tags(vault, name, version, tags).await;
        self.after("update_tags", result).await
    }

    async fn delete_secret(&self, vault: &VaultUrl, name: &ObjectName) -> Result<(), PortError> {
        let result = self.inner.delete_secret(vault, name).await;
        self.after("delete_secret", result).await
    }
}

#[async_trait]
impl<P: CredentialIssuer> CredentialIssuer for Tripped<P> {
    async fn password_rules(
        &self,
        app: &DirectoryObjectId,
    ) -> Result<keyturn::ports::directory::PasswordRules, PortError> {
        self.inner.password_rules(app).await
    }

    async fn application(&self, app_id: &AppId) -> Result<Option<Application>, PortError> {
        self.inner.application(app_id).await
    }

    async fn password_credentials(
        &self,
        app: &DirectoryObjectId,
    ) -> Result<Vec<PasswordCredential>, PortError> {
        self.inner.password_credentials(app).await
    }

    async fn add_password(
        &self,
        app: &DirectoryObjectId,
        display_name: &str,
        end: DateTime<Utc>,
    ) -> Result<IssuedCredential, PortError> {
        let result = self.inner.add_password(app, display_name, end).await;
        self.after("add_password", result).await
    }

    async fn remove_password(
        &self,
        app: &DirectoryObjectId,
        key_id: &KeyId,
    ) -> Result<(), PortError> {
        let result = self.inner.remove_password(app, key_id).await;
        self.after("remove_password", result).await
    }
}

#[async_trait]
impl<P: TokenProver> TokenProver for Tripped<P> {
    async fn prove(&self, app_id: &AppId, secret: &SecretValue) -> Result<(), ProofError> {
        let result = self.inner.prove(app_id, secret).await;
        if result.is_ok() {
            self.wire.after("prove").await;
        }
        result
    }
}

#[async_trait]
impl<P: JobQueue> JobQueue for Tripped<P> {
    async fn send(&self, message: &OutgoingMessage) -> Result<(), PortError> {
        let result = self.inner.send(message).await;
        self.after("send", result).await
    }
}

// ---------------------------------------------------------------------------------------
// The whole path
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_expiry_event_ends_in_a_proven_key_vault_version_and_the_old_credential_removed_after_the_overlap()
 {
    let w = world().await;
    let v1 = w.seed_keyturn_version().await;
    let worker = w.worker().await;
    let overlap = chrono::Duration::days(i64::from(w.settings.rotation.defaults.overlap_days));

    // Key Vault event -> KeyVaultEvents -> a job message on the queue.
    let planned = worker
        .completed(
            "KeyVaultEvents",
            &envelope("event", w.near_expiry(&v1.version)),
        )
        .await;
    let expected_job = Job::new(Action::Rotate {
        object: w.object(),
        replaces_version: ObjectVersion::parse(&v1.version).expect("version"),
    });
    assert_eq!(planned["decisions"][0]["decision"], "queued", "{planned}");
    assert_eq!(
        planned["decisions"][0]["jobId"],
        expected_job.job_id.as_str(),
        "{planned}"
    );
    let job_message = w.message("rotate");
    let session = format!(
        "{}:{}/secrets/{SECRET}",
        w.vault().url().host_str().expect("host"),
        w.vault().url().port().expect("port")
    );
    assert_eq!(
        job_message.message_id.as_deref(),
        Some(expected_job.job_id.as_str()),
        "MessageId is the deterministic job id"
    );
    assert_eq!(job_message.session_id.as_deref(), Some(session.as_str()));
    assert_eq!(job_message.scheduled_enqueue_time_utc, None);
    assert_eq!(
        job_message.content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(job_of(&job_message), expected_job);
    let sends = w.requests(Service::ServiceBus, "POST", "/messages");
    assert_eq!(sends.len(), 1);
    assert_eq!(
        sends[0].path,
        format!("/{}/messages", w.settings.rotation.queue.as_str())
    );
    assert_eq!(sends[0].header("authorization"), Some("Bearer"));
    let broker: Value = serde_json::from_str(
        sends[0]
            .header("brokerproperties")
            .expect("BrokerProperties"),
    )
    .expect("BrokerProperties is JSON");
    assert_eq!(
        broker,
        json!({ "MessageId": expected_job.job_id.as_str(), "SessionId": session }),
        "nothing scheduled for a rotate job"
    );

    // The job delivered to RotationWorker -> a new Key Vault version that works.
    let rotated_from = whole_seconds(w.standins.now());
    let rotated = worker
        .completed("RotationWorker", &delivery(&job_message, 1))
        .await;
    assert_eq!(rotated["outcome"], "rotated", "{rotated}");
    assert_eq!(rotated["jobId"], expected_job.job_id.as_str());
    assert_eq!(rotated["deliveryCount"], 1);
    let versions = w.versions();
    assert_eq!(versions.len(), 2, "exactly one new version");
    let v2 = w.current();
    assert_eq!(rotated["version"], v2.version.as_str());
    assert_ne!(v2.value, v1.value.expose());
    assert!(v2.enabled);
    assert_eq!(v2.content_type.as_deref(), Some("text/plain"));
    let notes = tags::Bookkeeping::read(&v2.tags);
    let k2 = notes.key_id.expect("the new version records its key id");
    assert_eq!(rotated["keyId"], k2.to_string());
    assert_eq!(notes.previous_key_id, Some(v1.key_id));
    assert_eq!(
        notes.previous_version.map(|v| v.to_string()),
        Some(v1.version.clone())
    );
    assert_eq!(notes.job_id.as_deref(), Some(expected_job.job_id.as_str()));
    assert_eq!(v2.tags[tags::KIND], "entra-app-secret");
    assert_eq!(v2.tags[tags::APP_ID], w.app_id.to_string());
    let new_credential = w
        .standins
        .graph()
        .passwords(*w.app_object.as_uuid())
        .into_iter()
        .find(|p| p.key_id.to_string() == k2.to_string())
        .expect("the new credential is on the application");
    assert_eq!(
        new_credential.display_name.as_deref(),
        Some(marker(&expected_job.job_id).as_str())
    );
    assert_eq!(v2.expires, Some(new_credential.end), "expiry = endDateTime");
    assert!(w.token_works(&v2.value).await, "the new value works");
    assert!(
        w.token_works(v1.value.expose()).await,
        "the old value keeps working through the overlap"
    );
    let token_requests = w.requests(Service::Entra, "POST", "/oauth2/v2.0/token");
    assert!(
        token_requests.iter().any(|r| r.status == 200),
        "the worker proved the credential at the token endpoint"
    );

    // A retirement job scheduled for now + overlap, in the object's session.
    let retire_message = w.message("retire");
    let retire = job_of(&retire_message);
    let Action::Retire {
        key_id,
        successor_version,
        replaced_version,
        rotated_by,
        ..
    } = &retire.action
    else {
        panic!("a retire job: {retire:?}");
    };
    assert_eq!(*key_id, v1.key_id);
    assert_eq!(successor_version.as_str(), v2.version);
    assert_eq!(replaced_version.as_str(), v1.version);
    assert_eq!(*rotated_by, expected_job.job_id);
    assert_eq!(
        retire_message.message_id.as_deref(),
        Some(retire.job_id.as_str())
    );
    assert_eq!(retire_message.session_id.as_deref(), Some(session.as_str()));
    let scheduled = retire_message
        .scheduled_enqueue_time_utc
        .expect("the retirement is scheduled");
    assert_eq!(Some(scheduled), notes.rotated_at.map(|t| t + overlap));
    assert!(
        scheduled >= rotated_from + overlap && scheduled <= w.standins.now() + overlap,
        "scheduled {scheduled} = rotation time + {overlap}"
    );
    let sends = w.requests(Service::ServiceBus, "POST", "/messages");
    let broker: Value = serde_json::from_str(sends[1].header("brokerproperties").expect("set"))
        .expect("BrokerProperties is JSON");
    assert_eq!(broker["MessageId"], retire.job_id.as_str());
    assert_eq!(broker["SessionId"], session.as_str());
    assert_eq!(
        broker["ScheduledEnqueueTimeUtc"],
        scheduled.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
    );

    // Past the overlap, on the instance the host runs then, the retirement is delivered.
    w.standins.advance_clock(
        (overlap + chrono::Duration::minutes(1))
            .to_std()
            .expect("positive"),
    );
    let later = w.worker().await;
    let retired = later
        .completed("RotationWorker", &delivery(&retire_message, 1))
        .await;
    assert_eq!(retired["outcome"], "retired", "{retired}");
    assert_eq!(retired["keyId"], v1.key_id.to_string());
    let remaining: Vec<KeyId> = w.credentials().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        remaining,
        vec![k2],
        "the old credential is gone, the new one remains"
    );
    assert!(w.token_works(&w.current().value).await);
    assert!(
        !w.token_works(v1.value.expose()).await,
        "the old value is retired"
    );
    let removals = w.requests(Service::Graph, "POST", "/removePassword");
    assert_eq!(removals.len(), 1);
    assert_eq!(removals[0].status, 204);

    let trail = w.actions().await;
    let expected = [
        "event.received",
        "rotation.planned",
        "job.received",
        "credential.added",
        "credential.pending",
        "credential.proving",
        "credential.proven",
        "secret.rotated",
        "credential.pending_removed",
        "retirement.scheduled",
        "job.received",
        "credential.retired",
    ];
    assert_eq!(trail, expected, "the audit trail, step by step");
    let text = format!("{:?}", w.audit_entries().await);
    assert!(
        !text.contains(&w.current().value),
        "no secret value audited"
    );
    assert!(!text.contains(v1.value.expose()), "no secret value audited");
}

// ---------------------------------------------------------------------------------------
// Fault injection: the worker stopped after each step, and the job delivered again
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_worker_stopped_after_any_step_converges_on_redelivery() {
    for step in ["add_password", "prove", "set_secret", "send"] {
        let w = world().await;
        let v1 = w.seed_keyturn_version().await;
        let planner = w.worker().await;
        planner
            .completed(
                "KeyVaultEvents",
                &envelope("event", w.near_expiry(&v1.version)),
            )
            .await;
        let job_message = w.message("rotate");
        let job = job_of(&job_message);

        w.worker()
            .await
            .stop_after(step, &delivery(&job_message, 1))
            .await;
        // The lock expires and Service Bus delivers the job again, to another process.
        w.standins.advance_clock(Duration::from_secs(5 * 60));
        let again = w
            .worker()
            .await
            .completed("RotationWorker", &delivery(&job_message, 2))
            .await;

        let trail = w.actions().await;
        match step {
            "add_password" => {
                assert_eq!(again["outcome"], "rotated", "{step}: {again}");
                assert_eq!(w.add_password_calls(), 2, "{step}");
                assert!(
                    trail.iter().any(|a| a == "credential.orphan_removed"),
                    "{step}: the stray credential's removal is audited: {trail:?}"
                );
            }
            // The pending copy holds the value (stored first, at the first `set_secret`):
            // the proof goes on with the same credential, nothing is added again.
            "prove" | "set_secret" => {
                assert_eq!(again["outcome"], "rotated", "{step}: {again}");
                assert_eq!(w.add_password_calls(), 1, "{step}");
            }
            _ => {
                assert_eq!(again["outcome"], "skipped", "{step}: {again}");
                assert_eq!(again["reason"], "already rotated", "{step}");
                assert_eq!(w.add_password_calls(), 1, "{step}");
            }
        }
        if step == "prove" {
            assert!(
                trail.iter().any(|a| a == "credential.proven"),
                "{step}: {trail:?}"
            );
        }
        assert_eq!(w.versions().len(), 2, "{step}: exactly one new version");
        assert_eq!(
            w.current().tags.get(tags::JOB_ID).map(String::as_str),
            Some(job.job_id.as_str()),
            "{step}"
        );
        w.assert_converged(step, Some(v1.key_id)).await;
        assert_eq!(
            trail.iter().filter(|a| *a == "job.received").count(),
            2,
            "{step}: both deliveries are audited: {trail:?}"
        );
        assert!(
            trail.iter().any(|a| a == "credential.added"),
            "{step}: {trail:?}"
        );
        assert!(
            trail.iter().any(|a| a == "retirement.scheduled"),
            "{step}: {trail:?}"
        );

        // The retirement, stopped right after removing the credential, then delivered
        // again.
        let retire_message = w.message("retire");
        w.standins.advance_clock(Duration::from_secs(8 * 24 * 3600));
        w.worker()
            .await
            .stop_after("remove_password", &delivery(&retire_message, 1))
            .await;
        let retired = w
            .worker()
            .await
            .completed("RotationWorker", &delivery(&retire_message, 2))
            .await;
        assert_eq!(retired["outcome"], "retired", "{step}: {retired}");
        assert_eq!(retired["keyId"], v1.key_id.to_string(), "{step}");
        w.assert_converged(step, None).await;
        assert_eq!(
            w.credentials().len(),
            1,
            "{step}: only the current credential"
        );
        let retirements: Vec<(Outcome, String)> = w
            .audit_entries()
            .await
            .into_iter()
            .filter(|e| e.record.action.as_str() == "credential.retired")
            .map(|e| {
                let reason = e.record.reason.map(|r| r.as_str().to_owned());
                (e.record.outcome, reason.unwrap_or_default())
            })
            .collect();
        assert_eq!(retirements.len(), 1, "{step}: {retirements:?}");
        assert_eq!(retirements[0].0, Outcome::Skipped, "{step}");
        assert!(
            retirements[0].1.ends_with("already removed"),
            "{step}: the redelivery says the first delivery removed it: {retirements:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Duplicates and concurrency
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn fifty_duplicate_deliveries_of_one_job_make_one_rotation() {
    let w = world().await;
    let v1 = w.seed_keyturn_version().await;
    let worker = Arc::new(w.worker().await);
    worker
        .completed(
            "KeyVaultEvents",
            &envelope("event", w.near_expiry(&v1.version)),
        )
        .await;
    let job_message = w.message("rotate");

    let mut deliveries = tokio::task::JoinSet::new();
    for count in 1..=50u32 {
        let (worker, body) = (worker.clone(), delivery(&job_message, count));
        deliveries.spawn(async move { worker.completed("RotationWorker", &body).await });
    }
    let outcomes = deliveries.join_all().await;

    let rotated = outcomes
        .iter()
        .filter(|o| o["outcome"] == "rotated")
        .count();
    let skipped = outcomes
        .iter()
        .filter(|o| o["outcome"] == "skipped" && o["reason"] == "already rotated")
        .count();
    assert_eq!((rotated, skipped), (1, 49), "{outcomes:?}");
    assert_eq!(w.add_password_calls(), 1, "one addPassword at Graph");
    assert_eq!(w.versions().len(), 2, "one new Key Vault version");
    assert_eq!(
        w.requests(Service::KeyVault, "PUT", &format!("/secrets/{SECRET}"))
            .iter()
            .filter(|r| r.status == 200)
            .count(),
        1
    );
    w.assert_converged("duplicates", Some(v1.key_id)).await;
    // Every duplicate re-sent the retirement (its follow-up); the broker kept one.
    assert_eq!(w.messages().len(), 2, "the job and one retirement");
}

/// Two receivers of one host on one object at once (a redelivery after a lost lock while
/// the first invocation still runs). Across instances the session-enabled queue hands one
/// object's session to one receiver; within one, the engine's per-object lock does.
#[tokio::test]
async fn two_workers_on_one_object_at_once_make_one_rotation() {
    let w = world().await;
    let v1 = w.seed_keyturn_version().await;
    let worker = Arc::new(w.worker().await);
    // Event Grid delivers at least once: two events plan the same version, one job id,
    // and the broker keeps one message.
    for _ in 0..2 {
        let planned = worker
            .completed(
                "KeyVaultEvents",
                &envelope("event", w.near_expiry(&v1.version)),
            )
            .await;
        assert_eq!(planned["decisions"][0]["decision"], "queued", "{planned}");
    }
    assert_eq!(
        w.requests(Service::ServiceBus, "POST", "/messages").len(),
        2
    );
    let job_message = w.message("rotate");
    assert_eq!(w.messages().len(), 1, "the broker dropped the duplicate");
    // Calls that take a while keep both invocations in flight together.
    w.standins.set_latency(Duration::from_millis(20));

    let first = tokio::spawn({
        let (worker, body) = (worker.clone(), delivery(&job_message, 1));
        async move { worker.completed("RotationWorker", &body).await }
    });
    let second = tokio::spawn({
        let (worker, body) = (worker.clone(), delivery(&job_message, 2));
        async move { worker.completed("RotationWorker", &body).await }
    });
    let (first, second) = (
        first.await.expect("first worker"),
        second.await.expect("second worker"),
    );

    let mut outcomes = [first["outcome"].clone(), second["outcome"].clone()];
    outcomes.sort_by_key(ToString::to_string);
    assert_eq!(
        outcomes,
        [json!("rotated"), json!("skipped")],
        "{first} {second}"
    );
    assert_eq!(w.add_password_calls(), 1);
    assert_eq!(w.versions().len(), 2);
    w.assert_converged("two workers", Some(v1.key_id)).await;
}

// ---------------------------------------------------------------------------------------
// Throttling
// ---------------------------------------------------------------------------------------

/// One injected 429: where, and the `Retry-After` it carried.
struct Throttle {
    service: Service,
    method: Method,
    path: String,
    retry_after: Option<u64>,
}

#[tokio::test]
async fn a_429_storm_is_ridden_out_honouring_retry_after() {
    let w = world().await;
    let v1 = w.seed_keyturn_version().await;
    let worker = w.worker().await;
    worker
        .completed(
            "KeyVaultEvents",
            &envelope("event", w.near_expiry(&v1.version)),
        )
        .await;
    let job_message = w.message("rotate");
    let app = format!("/v1.0/applications/{}", w.app_object);
    let storm = [
        (
            Service::KeyVault,
            Method::GET,
            format!("/secrets/{SECRET}/versions"),
            Some(1),
        ),
        (
            Service::Graph,
            Method::GET,
            "/v1.0/applications".to_owned(),
            Some(1),
        ),
        (Service::Graph, Method::GET, app.clone(), None),
        (
            Service::Graph,
            Method::POST,
            format!("{app}/addPassword"),
            Some(2),
        ),
        (
            Service::Graph,
            Method::POST,
            format!("{app}/addPassword"),
            Some(1),
        ),
        (
            Service::KeyVault,
            Method::PUT,
            format!("/secrets/{SECRET}"),
            Some(1),
        ),
        (
            Service::KeyVault,
            Method::PUT,
            format!("/secrets/{SECRET}"),
            Some(2),
        ),
    ]
    .map(|(service, method, path, retry_after)| Throttle {
        service,
        method,
        path,
        retry_after,
    });
    for t in &storm {
        w.standins.inject(
            t.service,
            Route::new(t.method.clone(), t.path.clone()),
            Fault::throttled(t.retry_after),
        );
    }

    let rotated = worker
        .completed("RotationWorker", &delivery(&job_message, 1))
        .await;

    assert_eq!(rotated["outcome"], "rotated", "{rotated}");
    assert_eq!(w.versions().len(), 2);
    w.assert_converged("storm", Some(v1.key_id)).await;
    let log = w.standins.requests();
    let throttled: Vec<&LoggedRequest> = log.iter().filter(|r| r.status == 429).collect();
    assert_eq!(throttled.len(), storm.len(), "every 429 was met");
    for (index, t) in storm.iter().enumerate() {
        // The n-th 429 on a route answered the n-th fault injected for it.
        let nth = storm[..index]
            .iter()
            .filter(|o| o.service == t.service && o.method == t.method && o.path == t.path)
            .count();
        let same_route = |r: &&LoggedRequest| {
            r.service == t.service && r.method == t.method.as_str() && r.path == t.path
        };
        let answered = log
            .iter()
            .filter(same_route)
            .filter(|r| r.status == 429)
            .nth(nth)
            .unwrap_or_else(|| panic!("429 {nth} on {} was sent", t.path));
        let retry = log
            .iter()
            .filter(same_route)
            .find(|r| r.received > answered.received)
            .unwrap_or_else(|| panic!("{} {} was retried", t.method, t.path));
        let waited = retry.received.duration_since(answered.received);
        match t.retry_after {
            Some(seconds) => assert!(
                waited >= Duration::from_secs(seconds),
                "{} {} retried after {waited:?}, before its Retry-After of {seconds} s",
                t.method,
                t.path
            ),
            // Without Retry-After, a jittered backoff still waits before the retry.
            None => assert!(waited > Duration::ZERO, "{} {}", t.method, t.path),
        }
    }
    assert_eq!(
        w.requests(Service::Graph, "POST", "/addPassword")
            .iter()
            .filter(|r| r.status == 200 || r.status == 201)
            .count(),
        1,
        "the throttled addPassword calls added nothing; one added the credential"
    );
}

// ---------------------------------------------------------------------------------------
// Permanent failures
// ---------------------------------------------------------------------------------------

/// Plans the job for the seeded version with a fully permitted worker.
async fn planned_job(w: &World, v1: &Seeded) -> ReceivedMessage {
    w.worker()
        .await
        .completed(
            "KeyVaultEvents",
            &envelope("event", w.near_expiry(&v1.version)),
        )
        .await;
    w.message("rotate")
}

/// The invocation was completed (200) as a permanent failure, `rotation.failed` and the
/// host's `invocation.failed` were audited, and the secret carries `keyturn-last-error`
/// naming `needle`. Returns the tag.
async fn assert_permanent(w: &World, answer: &Value, code: &str, needle: &str) -> String {
    assert_eq!(answer["failed"], code, "{answer}");
    let entries = w.audit_entries().await;
    let reason_of = |action: &str| {
        entries
            .iter()
            .find(|e| e.record.action.as_str() == action)
            .and_then(|e| e.record.reason.as_ref())
            .map(|r| r.as_str().to_owned())
            .unwrap_or_else(|| panic!("{action} audited: {entries:?}"))
    };
    let failed = reason_of("rotation.failed");
    assert!(failed.contains(needle), "{failed}");
    assert!(reason_of("invocation.failed").starts_with(code));
    let current = w.current();
    let tag = current
        .tags
        .get(tags::LAST_ERROR)
        .cloned()
        .expect("the failure is recorded on the secret");
    assert!(tag.contains(needle), "{tag}");
    assert!(tag.contains(code), "{tag}");
    tag
}

#[tokio::test]
async fn a_graph_identity_without_application_readwrite_is_a_permanent_recorded_failure() {
    let w = world().await;
    let v1 = w.seed_keyturn_version().await;
    let job_message = planned_job(&w, &v1).await;
    // keyturn's identity may read applications and use the vault and queue, but was
    // never granted Application.ReadWrite.OwnedBy.
    let reader = w.standins.seed_identity(
        "keyturn-without-write",
        Permissions::only([
            "Application.Read.All",
            "Policy.Read.All",
            "secrets/get",
            "secrets/list",
            "secrets/set",
            "Send",
        ]),
    );
    let worker = w.worker_as(w.standins.credential_for(&reader)).await;

    let answer = worker
        .completed("RotationWorker", &delivery(&job_message, 1))
        .await;

    assert_permanent(
        &w,
        &answer,
        "permission_denied",
        "Application.ReadWrite.OwnedBy",
    )
    .await;
    let adds = w.requests(Service::Graph, "POST", "/addPassword");
    assert_eq!(adds.len(), 1, "not retried");
    assert_eq!(adds[0].status, 403);
    assert_eq!(w.versions().len(), 1, "no new version");
    assert_eq!(w.keyturn_credentials(), vec![v1.key_id], "nothing added");
}

#[tokio::test]
async fn a_key_vault_403_on_the_store_is_permanent_recorded_and_leaves_no_credential_behind() {
    let w = world().await;
    let v1 = w.seed_keyturn_version().await;
    let job_message = planned_job(&w, &v1).await;
    // Key Vault refuses the write (the role assignment was removed; the tag write after
    // it stands for the vault once the role is back, so the failure can be recorded).
    w.standins.inject(
        Service::KeyVault,
        Route::new(Method::PUT, format!("/secrets/{SECRET}")),
        Fault::Status {
            status: 403,
            retry_after_seconds: None,
        },
    );

    let answer = w
        .worker()
        .await
        .completed("RotationWorker", &delivery(&job_message, 1))
        .await;

    assert_permanent(
        &w,
        &answer,
        "permission_denied",
        "Key Vault Secrets Officer",
    )
    .await;
    let puts = w.requests(Service::KeyVault, "PUT", &format!("/secrets/{SECRET}"));
    assert_eq!(puts.len(), 1, "not retried");
    assert_eq!(w.add_password_calls(), 1, "not retried");
    assert_eq!(w.versions().len(), 1, "no new version");
    assert_eq!(
        w.keyturn_credentials(),
        vec![v1.key_id],
        "the credential that could not be stored was removed"
    );
    assert!(
        w.token_works(v1.value.expose()).await,
        "the current one still works"
    );
}

#[tokio::test]
async fn an_app_management_policy_violation_is_a_permanent_recorded_failure() {
    let w = world().await;
    let v1 = w.seed_keyturn_version().await;
    let job_message = planned_job(&w, &v1).await;
    // The tenant forbids adding passwords; keyturn reads its policy before addPassword.
    // (A maxLifetime shorter than keyturn's validity is no failure: keyturn caps the
    // lifetime to it, see tenant_policy.rs.)
    w.standins
        .graph()
        .set_tenant_password_restrictions(vec![PasswordRestriction::password_addition(None)]);

    let answer = w
        .worker()
        .await
        .completed("RotationWorker", &delivery(&job_message, 1))
        .await;

    let tag = assert_permanent(
        &w,
        &answer,
        "policy_violation",
        "CredentialTypeNotAllowedAsPerAppPolicy",
    )
    .await;
    assert!(tag.contains("policy_violation"), "{tag}");
    let adds = w.requests(Service::Graph, "POST", "/addPassword");
    assert_eq!(adds.len(), 0, "refused before asking Graph");
    assert_eq!(w.versions().len(), 1, "no new version");
    assert_eq!(w.keyturn_credentials(), vec![v1.key_id], "nothing added");
}

// ---------------------------------------------------------------------------------------
// The staged proof over time, with the production defaults (three acceptances in a row
// across a minute, within an hour)
// ---------------------------------------------------------------------------------------

/// Delivers `first`, then each `prove` follow-up at its scheduled time, to a fresh worker
/// each time, until the rotation stops proving: (the last answer, deliveries).
async fn deliver_until_settled(w: &World, first: &ReceivedMessage) -> (Value, usize) {
    let mut answer = w
        .worker()
        .await
        .completed("RotationWorker", &delivery(first, 1))
        .await;
    let mut deliveries = 1;
    let mut delivered: Vec<Option<String>> = Vec::new();
    while answer["outcome"] == "proving" {
        let next = w
            .messages()
            .into_iter()
            .find(|m| job_of(m).action.name() == "prove" && !delivered.contains(&m.message_id))
            .expect("a proof follow-up is scheduled");
        delivered.push(next.message_id.clone());
        if let Some(at) = next.scheduled_enqueue_time_utc
            && at > w.standins.now()
        {
            w.standins
                .advance_clock((at - w.standins.now()).to_std().expect("a future time"));
        }
        answer = w
            .worker()
            .await
            .completed("RotationWorker", &delivery(&next, 1))
            .await;
        deliveries += 1;
    }
    (answer, deliveries)
}

/// Through the HTTPS stand-ins and the host's envelopes, under propagation delays from
/// none to fifteen minutes: one addPassword and one removePassword per rotation, one
/// delivery per proof attempt, promotion a minute's window after the credential works.
#[tokio::test]
async fn a_staged_rotation_through_the_stand_ins_makes_two_graph_writes_whatever_the_propagation() {
    let minute = Duration::from_secs(60);
    println!("| propagation | Graph writes | deliveries | time to promotion |");
    for propagation in [
        Duration::ZERO,
        Duration::from_secs(30),
        5 * minute,
        15 * minute,
    ] {
        let w = world_with(&[]).await;
        let v1 = w.seed_keyturn_version().await;
        w.standins.graph().set_propagation_delay(propagation);
        w.worker()
            .await
            .completed(
                "KeyVaultEvents",
                &envelope("event", w.near_expiry(&v1.version)),
            )
            .await;
        let started = w.standins.now();

        let (answer, deliveries) = deliver_until_settled(&w, &w.message("rotate")).await;

        assert_eq!(answer["outcome"], "rotated", "{propagation:?}: {answer}");
        let promoted_after = (w.standins.now() - started).to_std().expect("forward");
        w.assert_converged("promoted", Some(v1.key_id)).await;
        let retire = w.message("retire");
        w.standins.advance_clock(Duration::from_secs(8 * 24 * 3600));
        let retired = w
            .worker()
            .await
            .completed("RotationWorker", &delivery(&retire, 1))
            .await;
        assert_eq!(retired["outcome"], "retired", "{retired}");
        w.assert_converged("retired", None).await;
        let writes =
            w.add_password_calls() + w.requests(Service::Graph, "POST", "/removePassword").len();
        println!(
            "| {} s | {writes} | {} | {} s |",
            propagation.as_secs(),
            deliveries + 1,
            promoted_after.as_secs()
        );
        assert_eq!(writes, 2, "{propagation:?}: one add, one remove");
        assert!(
            promoted_after >= propagation + minute,
            "{propagation:?}: proven across the window ({promoted_after:?})"
        );
        assert!(
            promoted_after <= propagation + 3 * minute,
            "{propagation:?}: promoted soon after propagation ({promoted_after:?})"
        );
        let trail = w.actions().await;
        assert!(
            trail.iter().filter(|a| *a == "credential.proving").count() >= 3,
            "{trail:?}"
        );
        let pending = format!(
            "{}{}",
            keyturn::rotation::run::PENDING_PREFIX,
            tags::Bookkeeping::read(&w.current().tags)
                .key_id
                .expect("key")
        );
        assert!(
            w.standins.keyvault().current_secret(&pending).is_none(),
            "the pending copy is deleted"
        );
    }
}
