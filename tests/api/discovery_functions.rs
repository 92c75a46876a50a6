//! DiscoverySweep and DiscoveryWorker through the host's envelopes: the timer starts a
//! sweep whose jobs land on the discovery queue, and the worker, delivered each job as
//! the Service Bus trigger delivers it, reads the local vault and directory into the
//! inventory.

use chrono::Duration;
use futures::TryStreamExt;
use serde_json::{Value, json};

use keyturn::adapters::local::directory::LocalDirectory;
use keyturn::adapters::local::queue::{LocalQueue, QueueSettings};
use keyturn::adapters::local::store::LocalStore;
use keyturn::adapters::local::vault::LocalVault;
use keyturn::discovery::job::{DiscoveryJob, JobScope};
use keyturn::domain::inventory::{CredentialFilter, CredentialKind, InventoryCredential};
use keyturn::domain::names::{ObjectName, VaultUrl};
use keyturn::domain::secret::SecretValue;
use keyturn::ports::directory::CredentialIssuer;
use keyturn::ports::inventory::credential_stream;
use keyturn::ports::vault::{NewSecretVersion, SecretStore};

use crate::helpers::{AppOptions, TestApp, fixture, rotation, spawn_app, spawn_app_from};

/// The captured Service Bus invocation carrying `body` as message `message_id`.
fn service_bus_invocation(body: &str, message_id: &str, delivery_count: u32) -> Value {
    let mut captured = fixture("custom-handler/servicebus-trigger.request.captured-ext4.json");
    let double_encoded = Value::String(Value::String(body.to_owned()).to_string());
    captured["Data"] = json!({ "job": double_encoded });
    captured["Metadata"]["MessageId"] = Value::String(Value::String(message_id.into()).to_string());
    captured["Metadata"]["DeliveryCount"] = Value::String(delivery_count.to_string());
    captured
}

/// Seeds the app's local vault with a secret and its directory with an application
/// password, as local mode's demo does.
async fn seed(app: &TestApp) {
    let path = app.data_dir().join("keyturn.db");
    let store = LocalStore::open(&path).expect("the store opens");
    let clock = app.rotation.clock.clock();
    let key = LocalVault::key_from_setting_or_file(None, &path).expect("the vault key");
    let vault = LocalVault::open(store.clone(), key, clock.clone())
        .await
        .expect("the vault opens");
    let now = clock.now();
    vault
        .set_secret(
            &VaultUrl::parse("https://keyturn-local.vault.azure.net/").expect("url"),
            &ObjectName::parse("db-password").expect("name"),
            &SecretValue::new("never-read-by-discovery"),
            NewSecretVersion {
                expires: Some(now + Duration::days(12)),
                ..NewSecretVersion::default()
            },
        )
        .await
        .expect("written");
    let directory = LocalDirectory::new(store, clock);
    let application = directory.create_application("billing").await.expect("app");
    directory
        .add_password(
            &application.object_id,
            "billing secret",
            now + Duration::days(40),
        )
        .await
        .expect("added");
}

fn discovery_queue(app: &TestApp) -> LocalQueue {
    let store = LocalStore::open(app.data_dir().join("keyturn.db")).expect("the store opens");
    LocalQueue::new(
        store,
        "discovery",
        QueueSettings::default(),
        app.rotation.clock.clock(),
    )
    .expect("the queue opens")
}

async fn inventory(app: &TestApp) -> Vec<InventoryCredential> {
    let store = app.services.inventory.as_ref().expect("an inventory");
    credential_stream(store.as_ref(), CredentialFilter::default(), 100)
        .try_collect()
        .await
        .expect("the inventory reads")
}

#[tokio::test]
async fn the_sweep_queues_jobs_and_the_worker_runs_them_into_the_inventory() {
    let app = spawn_app().await;
    seed(&app).await;

    let response = app
        .invoke(
            "DiscoverySweep",
            &json!({ "Data": { "timer": { "IsPastDue": false } }, "Metadata": {} }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let queued = body["ReturnValue"]["queued"].as_u64().expect("a count");
    // Local mode's one subscription, and every range of applications and of service
    // principals.
    assert!(queued > 1, "{body}");
    assert!(
        inventory(&app).await.is_empty(),
        "the sweep itself reads no vault"
    );
    let entries = app.audit_entries().await;
    let last = entries.last().expect("the sweep is audited");
    assert_eq!(last.record.action.as_str(), "sweep.ran");
    assert!(
        last.record
            .reason
            .as_ref()
            .is_some_and(|r| r.as_str().starts_with("discovery sweep ")),
        "{:?}",
        last.record.reason
    );

    // Deliver every job due now, as the trigger would; the vault job is queued by the
    // subscription job, so the queue is read until it is empty.
    let queue = discovery_queue(&app);
    let mut delivered = 0u64;
    while let Some(message) = queue
        .receive(app.rotation.clock.clock().now())
        .await
        .expect("the queue reads")
    {
        let body = String::from_utf8(message.body.clone()).expect("utf-8");
        let response = app
            .invoke(
                "DiscoveryWorker",
                &service_bus_invocation(&body, &message.message_id, message.delivery_count),
            )
            .await;
        assert_eq!(response.status(), 200, "{body}");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["ReturnValue"]["messageId"], message.message_id);
        queue
            .complete(message.lock_token, app.rotation.clock.clock().now())
            .await
            .expect("completed");
        delivered += 1;
        assert!(delivered < 1_000, "the jobs do not loop");
    }
    // The sweep's jobs, and the vault job the subscription queued.
    assert_eq!(delivered, queued + 1);
    // The snapshot waits, scheduled after the jobs.
    assert_eq!(queue.active_count().await.expect("counted"), 1);

    let credentials = inventory(&app).await;
    let names: Vec<(&str, CredentialKind)> = credentials
        .iter()
        .map(|c| (c.name.as_str(), c.kind))
        .collect();
    assert!(
        names.contains(&("db-password", CredentialKind::Secret)),
        "{names:?}"
    );
    assert!(
        names.contains(&("billing secret", CredentialKind::PasswordCredential)),
        "{names:?}"
    );
    let text = format!("{credentials:?}");
    assert!(!text.contains("never-read-by-discovery"));
}

/// The timer fired twice for one occurrence (two instances, or the function's retry):
/// both name the sweep by the occurrence, so the second queues the same message ids and
/// the broker's duplicate detection keeps one of each job.
#[tokio::test]
async fn a_timer_fired_twice_for_one_occurrence_queues_its_jobs_once() {
    let app = spawn_app().await;
    let clock = &app.rotation.clock;
    let occurrence = clock.clock().now() - Duration::milliseconds(300);
    let timer = json!({
        "Data": { "timer": {
            "Schedule": { "AdjustForDST": false },
            "ScheduleStatus": {
                "Last": (occurrence - Duration::hours(6)).to_rfc3339(),
                "Next": occurrence.to_rfc3339(),
                "LastUpdated": (occurrence - Duration::hours(6)).to_rfc3339(),
            },
            "IsPastDue": false,
        } },
        "Metadata": {},
    });

    let first = app.invoke("DiscoverySweep", &timer).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.expect("json");
    let queue = discovery_queue(&app);
    let after_first = queue.active_count().await.expect("counted");
    clock.advance(std::time::Duration::from_secs(95));
    let second = app.invoke("DiscoverySweep", &timer).await;
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.expect("json");

    assert_eq!(
        first["ReturnValue"]["sweep"],
        second["ReturnValue"]["sweep"]
    );
    let queued = first["ReturnValue"]["queued"].as_u64().expect("a count");
    assert!(queued > 1, "{first}");
    // The jobs and the scheduled snapshot, once.
    assert_eq!(after_first, queued + 1);
    assert_eq!(queue.active_count().await.expect("counted"), after_first);
}

/// `KEYTURN_DISCOVERY_SUBSCRIPTIONS` reaches the sweep: it queues one job for each
/// subscription named, and lists none.
#[tokio::test]
async fn the_sweep_queues_a_job_for_each_configured_subscription_only() {
    let configured = [
        "6f1b3c1e-0000-4000-8000-000000000001",
        "0c8d2a4f-0000-4000-8000-000000000002",
    ];
    let app = spawn_app_from(
        AppOptions {
            settings: vec![(
                "KEYTURN_DISCOVERY_SUBSCRIPTIONS".to_owned(),
                configured.join(","),
            )],
            ..AppOptions::default()
        },
        rotation(),
    )
    .await;

    let response = app
        .invoke(
            "DiscoverySweep",
            &json!({ "Data": { "timer": { "IsPastDue": false } }, "Metadata": {} }),
        )
        .await;
    assert_eq!(response.status(), 200);

    let queue = discovery_queue(&app);
    let mut subscriptions = Vec::new();
    while let Some(message) = queue
        .receive(app.rotation.clock.clock().now())
        .await
        .expect("the queue reads")
    {
        let job = DiscoveryJob::decode(&message.body).expect("a discovery job");
        if let JobScope::Subscription { subscription } = job.scope {
            subscriptions.push(subscription.to_string());
        }
        queue
            .complete(message.lock_token, app.rotation.clock.clock().now())
            .await
            .expect("completed");
    }
    subscriptions.sort();
    let mut expected: Vec<String> = configured.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(subscriptions, expected);
}

#[tokio::test]
async fn a_message_that_is_not_a_discovery_job_is_completed_as_bad_input() {
    let app = spawn_app().await;
    let response = app
        .invoke(
            "DiscoveryWorker",
            &service_bus_invocation(r#"{"schema":1,"jobId":"job-42"}"#, "m-1", 1),
        )
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["ReturnValue"]["failed"], "bad_input");
    let entries = app.audit_entries().await;
    assert_eq!(
        entries.last().expect("entry").record.action.as_str(),
        "invocation.failed"
    );
    assert!(inventory(&app).await.is_empty());
}

/// A client secret kept in a managed vault secret (its `keyturn-app-id` and
/// `keyturn-key-id` name it) is managed as soon as the sweep's jobs have run, while the
/// sweep's snapshot still waits an hour: the directory jobs, delivered before the vault job
/// the subscription job queues, write it first, and the vault job marks it. An alert read
/// from the inventory then says keyturn rotates it.
#[tokio::test]
async fn an_adopted_client_secret_is_managed_before_the_sweeps_snapshot() {
    let app = spawn_app().await;
    let path = app.data_dir().join("keyturn.db");
    let store = LocalStore::open(&path).expect("the store opens");
    let clock = app.rotation.clock.clock();
    let key = LocalVault::key_from_setting_or_file(None, &path).expect("the vault key");
    let vault = LocalVault::open(store.clone(), key, clock.clone())
        .await
        .expect("the vault opens");
    let now = clock.now();
    let directory = LocalDirectory::new(store, clock);
    let application = directory.create_application("billing").await.expect("app");
    let issued = directory
        .add_password(
            &application.object_id,
            "billing secret",
            now + Duration::days(10),
        )
        .await
        .expect("added");
    vault
        .set_secret(
            &VaultUrl::parse("https://keyturn-local.vault.azure.net/").expect("url"),
            &ObjectName::parse("billing-secret").expect("name"),
            &SecretValue::new("never-read-by-discovery"),
            NewSecretVersion {
                expires: Some(now + Duration::days(10)),
                tags: [
                    ("keyturn-kind", "entra-app-secret".to_owned()),
                    ("keyturn-app-id", application.app_id.to_string()),
                    ("keyturn-key-id", issued.credential.key_id.to_string()),
                ]
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
                ..NewSecretVersion::default()
            },
        )
        .await
        .expect("written");

    let response = app
        .invoke(
            "DiscoverySweep",
            &json!({ "Data": { "timer": { "IsPastDue": false } }, "Metadata": {} }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let queue = discovery_queue(&app);
    let mut order = Vec::new();
    while let Some(message) = queue
        .receive(app.rotation.clock.clock().now())
        .await
        .expect("the queue reads")
    {
        let body = String::from_utf8(message.body.clone()).expect("utf-8");
        let job = DiscoveryJob::decode(body.as_bytes()).expect("a job");
        order.push(job.scope_key());
        let response = app
            .invoke(
                "DiscoveryWorker",
                &service_bus_invocation(&body, &message.message_id, message.delivery_count),
            )
            .await;
        assert_eq!(response.status(), 200, "{body}");
        queue
            .complete(message.lock_token, app.rotation.clock.clock().now())
            .await
            .expect("completed");
        assert!(order.len() < 1_000, "the jobs do not loop");
    }
    let vault_at = order.iter().position(|s| s.starts_with("vault/"));
    let directory_at = order.iter().position(|s| s.starts_with("directory/"));
    assert!(
        matches!((directory_at, vault_at), (Some(d), Some(v)) if d < v),
        "the directory jobs ran before the vault job: {order:?}"
    );
    assert_eq!(
        queue.active_count().await.expect("counted"),
        1,
        "the snapshot still waits"
    );

    let credentials = inventory(&app).await;
    let adopted = credentials
        .iter()
        .find(|c| c.name == "billing secret")
        .expect("inventoried");
    assert!(adopted.managed, "{adopted:?}");
    let defaults = keyturn::rotation::tags::PolicyDefaults::new(90, 30, 7).expect("defaults");
    let advice = keyturn::alerts::message::advice(adopted, now, &defaults).join(" ");
    assert!(
        advice.contains("keyturn rotates it (through the Key Vault secret that holds it)"),
        "{advice}"
    );
}
