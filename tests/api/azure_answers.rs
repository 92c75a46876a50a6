//! How keyturn's Azure adapters read what Azure really answers, against the HTTPS
//! stand-ins: a `Retry-After` far beyond any invocation is handed back instead of slept
//! through, removePassword for a key already gone, Graph's ownership rule for
//! `Application.ReadWrite.OwnedBy`, and Service Bus's 403 that means only a full queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use keyturn_standins::{Fault, Permissions, QueueOptions, Route, SecretSeed, Service, Standins};
use uuid::Uuid;

use keyturn::adapters::azure::client::http::{MAX_RETRY_DELAY, default_client_options};
use keyturn::adapters::azure::graph::GraphClient;
use keyturn::adapters::azure::keyvault::KeyVault;
use keyturn::adapters::azure::servicebus::ServiceBusQueue;
use keyturn::domain::ids::{DirectoryObjectId, KeyId};
use keyturn::domain::names::VaultUrl;
use keyturn::ports::directory::CredentialIssuer;
use keyturn::ports::queue::{JobQueue, OutgoingMessage};
use keyturn::ports::vault::SecretStore;
use keyturn::ports::{FailureKind, PortError};

const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const QUEUE: &str = "rotations";

async fn start() -> Standins {
    Standins::start()
        .await
        .expect("the stand-ins start on loopback")
}

/// keyturn's own client options (its retry policy) over the stand-ins' transport: what
/// production builds, pointed at loopback.
fn keyturn_options(standins: &Standins) -> ClientOptions {
    ClientOptions {
        transport: standins.client_options().transport,
        ..default_client_options()
    }
}

fn graph(standins: &Standins, credential: Arc<dyn TokenCredential>) -> GraphClient {
    GraphClient::with_scope(
        standins.graph().url(),
        GRAPH_SCOPE.to_owned(),
        credential,
        Some(keyturn_options(standins)),
    )
    .expect("https")
}

fn object(uuid: Uuid) -> DirectoryObjectId {
    DirectoryObjectId::parse(&uuid.to_string()).expect("a GUID")
}

fn key(uuid: Uuid) -> KeyId {
    KeyId::parse(&uuid.to_string()).expect("a GUID")
}

/// The delay a transient failure carries, or a panic naming what came instead.
fn retry_after(error: &PortError) -> Option<Duration> {
    match error.kind {
        FailureKind::Transient { retry_after } => retry_after,
        ref other => panic!("a transient failure, not {other:?}: {error}"),
    }
}

#[tokio::test]
async fn a_day_long_retry_after_is_handed_back_at_once_by_every_pipeline() {
    let standins = start().await;
    let vault = VaultUrl::parse(standins.keyvault().url().as_str()).expect("a vault URL");
    standins
        .keyvault()
        .seed_secret(SecretSeed::new("payments", "value-1"));
    let key_vault = KeyVault::new(standins.credential(), Some(keyturn_options(&standins)))
        .without_challenge_resource_check();
    key_vault
        .list_secrets(&vault)
        .await
        .expect("warm the challenge");
    let graph = graph(&standins, standins.credential());
    let app = standins
        .graph()
        .seed_application("billing-api", Permissions::all());

    // Key Vault through the official crate, and Graph through keyturn's own pipeline.
    standins.inject(
        Service::KeyVault,
        Route::any("/secrets"),
        Fault::throttled(Some(86_400)),
    );
    standins.inject(
        Service::Graph,
        Route::any("/v1.0/applications/"),
        Fault::unavailable(Some(86_400)),
    );
    let started = Instant::now();
    let vault_error = tokio::time::timeout(Duration::from_secs(30), key_vault.list_secrets(&vault))
        .await
        .expect("the call ends promptly")
        .expect_err("throttled");
    let graph_error = tokio::time::timeout(
        Duration::from_secs(30),
        graph.password_credentials(&object(app.object_id)),
    )
    .await
    .expect("the call ends promptly")
    .expect_err("unavailable");
    let elapsed = started.elapsed();

    assert!(elapsed < MAX_RETRY_DELAY, "waited {elapsed:?}");
    for error in [&vault_error, &graph_error] {
        let delay = retry_after(error).expect("the delay is carried");
        assert!(delay > MAX_RETRY_DELAY, "{error}");
    }
    assert_eq!(
        standins
            .requests_to(Service::Graph)
            .iter()
            .filter(|r| r.status == 503)
            .count(),
        1,
        "one try: the retry is the caller's"
    );

    // Within the bound the pipeline still waits and retries by itself.
    standins.inject(
        Service::Graph,
        Route::any("/v1.0/applications/"),
        Fault::throttled(Some(1)),
    );
    graph
        .password_credentials(&object(app.object_id))
        .await
        .expect("retried after a second");
}

#[tokio::test]
async fn removing_a_key_already_gone_is_done_whatever_4xx_graph_answers() {
    let standins = start().await;
    let graph = graph(&standins, standins.credential());
    let app = standins
        .graph()
        .seed_application("billing-api", Permissions::all());
    let end = standins.now() + chrono::Duration::days(30);
    let gone = standins
        .graph()
        .add_password(app.object_id, end, true)
        .expect("seeded");
    let kept = standins
        .graph()
        .add_password(app.object_id, end, true)
        .expect("seeded");
    graph
        .remove_password(&object(app.object_id), &key(gone.key_id))
        .await
        .expect("removed");

    // Graph answers 400 for the key that is gone: the list shows it absent.
    standins.inject(
        Service::Graph,
        Route::new(axum::http::Method::POST, "/v1.0/applications/"),
        Fault::Status {
            status: 400,
            retry_after_seconds: None,
        },
    );
    let again = graph
        .remove_password(&object(app.object_id), &key(gone.key_id))
        .await
        .expect_err("already gone");
    assert_eq!(again.kind, FailureKind::NotFound, "{again}");

    // A 400 for a key still listed is a refusal, not a removal.
    standins.inject(
        Service::Graph,
        Route::new(axum::http::Method::POST, "/v1.0/applications/"),
        Fault::Status {
            status: 400,
            retry_after_seconds: None,
        },
    );
    let refused = graph
        .remove_password(&object(app.object_id), &key(kept.key_id))
        .await
        .expect_err("refused");
    assert_eq!(refused.kind, FailureKind::Invalid, "{refused}");
    let listed = standins.graph().passwords(app.object_id);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key_id, kept.key_id);
}

#[tokio::test]
async fn an_application_keyturn_does_not_own_is_refused_naming_ownership() {
    let standins = start().await;
    let owned_by = standins.seed_identity(
        "keyturn-owned-by",
        Permissions::only(["Application.ReadWrite.OwnedBy"]),
    );
    let graph = graph(&standins, standins.credential_for(&owned_by));
    let owned = standins
        .graph()
        .seed_application("owned-api", Permissions::all());
    standins.graph().add_owner(owned.object_id, owned_by.app_id);
    let foreign = standins
        .graph()
        .seed_application("someone-elses-api", Permissions::all());
    let end = standins.now() + chrono::Duration::days(30);

    let added = graph
        .add_password(&object(owned.object_id), "keyturn job 1", end)
        .await
        .expect("an owned application takes a credential");
    let refused = graph
        .add_password(&object(foreign.object_id), "keyturn job 1", end)
        .await
        .expect_err("not an owner");
    let theirs = standins
        .graph()
        .add_password(foreign.object_id, end, true)
        .expect("seeded");
    let not_removed = graph
        .remove_password(&object(foreign.object_id), &key(theirs.key_id))
        .await
        .expect_err("not an owner");

    assert_eq!(
        added.credential.display_name.as_deref(),
        Some("keyturn job 1")
    );
    for error in [&refused, &not_removed] {
        let FailureKind::PermissionDenied { missing } = &error.kind else {
            panic!("permission denied: {error}");
        };
        assert!(
            missing.contains("ownership of the application"),
            "{missing}"
        );
        assert!(
            error.context.contains(&foreign.object_id.to_string()),
            "{error}"
        );
    }
    assert_eq!(standins.graph().passwords(foreign.object_id).len(), 1);
    let forbidden = standins
        .requests_to(Service::Graph)
        .into_iter()
        .filter(|r| r.status == 403)
        .count();
    assert_eq!(forbidden, 2);
}

fn job(message_id: &str) -> OutgoingMessage {
    OutgoingMessage {
        message_id: message_id.to_owned(),
        session_id: "kv/secrets/payments".to_owned(),
        scheduled_enqueue: None,
        content_type: "application/json",
        body: br#"{"job":1}"#.to_vec(),
    }
}

#[tokio::test]
async fn only_service_bus_quota_refusals_are_retried_as_a_full_queue() {
    let standins = start().await;
    standins
        .servicebus()
        .create_queue(QUEUE, QueueOptions::default());
    standins.servicebus().set_max_messages(QUEUE, Some(1));
    let sender = ServiceBusQueue::with_base_url(
        url::Url::parse(standins.servicebus().url().as_str()).expect("URL"),
        QUEUE,
        standins.credential(),
        Some(keyturn_options(&standins)),
    )
    .expect("https");

    sender.send(&job("job-1")).await.expect("room for one");
    let full = sender.send(&job("job-2")).await.expect_err("full");
    standins.servicebus().set_max_messages(QUEUE, None);
    standins.inject(
        Service::ServiceBus,
        Route::any("/"),
        Fault::Status {
            status: 403,
            retry_after_seconds: None,
        },
    );
    let other = sender.send(&job("job-3")).await.expect_err("refused");

    assert!(full.is_transient(), "{full}");
    assert!(!other.is_transient(), "{other}");
    assert!(
        matches!(other.kind, FailureKind::PermissionDenied { .. }),
        "{other}"
    );
    assert_eq!(standins.servicebus().messages(QUEUE).len(), 1);
}
