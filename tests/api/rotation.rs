//! Rotation through the host's envelopes: an expiry event becomes a job message, the job
//! message is delivered to the worker as the host would deliver it, and the retirement it
//! schedules is delivered after the overlap. The ports are the strict in-memory ones.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use keyturn::domain::ids::{AppId, KeyId};
use keyturn::domain::names::{ObjectName, VaultUrl};
use keyturn::ports::directory::Application;
use keyturn::ports::queue::OutgoingMessage;
use keyturn::ports::vault::SecretProperties;
use keyturn::ports::{FailureKind, PortError};
use keyturn::rotation::run::MARKER_PREFIX;
use keyturn::rotation::tags;

use crate::helpers::{
    Rotation, TEST_VAULT, TestApp, envelope, fixture, rotation, spawn_app_with,
    spawn_app_without_rotation,
};

const APP: &str = "6f1b7a7e-0b1c-4d2a-9e3f-0123456789ab";

fn audit_store(
    dir: &tempfile::TempDir,
) -> std::sync::Arc<keyturn::adapters::local::audit::LocalAuditStore> {
    let local = keyturn::adapters::local::store::LocalStore::open(dir.path().join("keyturn.db"))
        .expect("open local store");
    std::sync::Arc::new(keyturn::adapters::local::audit::LocalAuditStore::new(local))
}

async fn app() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    (spawn_app_with(audit_store(&dir), rotation()).await, dir)
}

fn vault() -> VaultUrl {
    VaultUrl::parse(TEST_VAULT).expect("vault")
}

/// An application and a secret whose current version keyturn wrote, holding a
/// keyturn-marked credential that expires in five days.
fn seed(r: &Rotation, secret: &str) -> (Application, SecretProperties, KeyId) {
    let app = r
        .directory
        .add_application(AppId::parse(APP).expect("app id"), "payments-api");
    r.directory.set_propagation_delay(Duration::from_secs(8));
    let end = r.clock.now() + chrono::Duration::days(5);
    let issued = r
        .directory
        .add_person_credential(
            &app.object_id,
            &format!("{MARKER_PREFIX}{}", "b".repeat(32)),
            end,
        )
        .expect("app exists");
    let tags = BTreeMap::from([
        (tags::KIND.to_string(), "entra-app-secret".to_string()),
        (tags::APP_ID.to_string(), APP.to_string()),
        (
            tags::KEY_ID.to_string(),
            issued.credential.key_id.to_string(),
        ),
        (tags::JOB_ID.to_string(), "b".repeat(32)),
        (
            tags::ROTATED_AT.to_string(),
            "2030-01-01T00:00:00Z".to_string(),
        ),
    ]);
    let name = ObjectName::parse(secret).expect("name");
    let properties = r
        .vault
        .put_secret(&vault(), &name, &issued.secret, Some(end), tags);
    (app, properties, issued.credential.key_id)
}

fn near_expiry(properties: &SecretProperties) -> Value {
    let mut event = fixture("keyvault-events/DERIVED.eventgrid-schema.SecretNearExpiry.json");
    let name = properties.id.name().to_string();
    let version = properties.id.version().expect("version").to_string();
    event["subject"] = json!(name);
    event["topic"] =
        json!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-test");
    event["data"]["Id"] = json!(properties.id.to_string());
    event["data"]["VaultName"] = json!("kv-test");
    event["data"]["ObjectName"] = json!(name);
    event["data"]["Version"] = json!(version);
    event
}

/// The invocation the host posts for `message`: the captured Service Bus request with the
/// body double-encoded and the broker properties of the message.
fn delivery(message: &OutgoingMessage, delivery_count: u32) -> Value {
    let mut captured = fixture("custom-handler/servicebus-trigger.request.captured-ext4.json");
    let body = String::from_utf8(message.body.clone()).expect("utf-8 job");
    captured["Data"] = json!({ "job": Value::String(Value::String(body).to_string()) });
    captured["Metadata"]["MessageId"] = json!(format!("\"{}\"", message.message_id));
    captured["Metadata"]["SessionId"] = json!(format!("\"{}\"", message.session_id));
    captured["Metadata"]["DeliveryCount"] = json!(delivery_count.to_string());
    captured
}

async fn return_value(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["ReturnValue"].clone()
}

fn current(r: &Rotation, secret: &str) -> (SecretProperties, keyturn::domain::secret::SecretValue) {
    let history = r
        .vault
        .secret_history(&vault(), &ObjectName::parse(secret).expect("name"));
    let last = history.last().expect("a version");
    (last.properties.clone(), last.value.clone())
}

#[tokio::test]
async fn an_expiry_event_ends_in_a_proven_new_version_and_the_old_credential_retired() {
    let (app, _dir) = app().await;
    let r = &app.rotation;
    let (registration, v1, k1) = seed(r, "payments");

    // Event -> job message.
    let planned = return_value(
        app.invoke("KeyVaultEvents", &envelope("event", near_expiry(&v1)))
            .await,
    )
    .await;
    assert_eq!(planned["decisions"][0]["decision"], "queued", "{planned}");
    let messages = r.queue.messages();
    assert_eq!(messages.len(), 1);
    let job = &messages[0];
    assert_eq!(
        job.message_id, planned["decisions"][0]["jobId"],
        "{planned}"
    );
    assert_eq!(job.session_id, "kv-test.vault.azure.net/secrets/payments");
    assert!(job.message_id.len() <= 128 && job.session_id.len() <= 128);
    assert_eq!(job.scheduled_enqueue, None);

    // Worker -> new version that works.
    let mut rotated = return_value(app.invoke("RotationWorker", &delivery(job, 1)).await).await;
    // Until the credential has propagated, `prove` follow-ups are scheduled; each is
    // delivered at its time, as the broker would.
    let mut sent = 1;
    while rotated["outcome"] == "proving" {
        let follow = r.queue.messages()[sent].clone();
        sent += 1;
        if let Some(at) = follow.scheduled_enqueue
            && at > r.clock.now()
        {
            r.clock
                .advance((at - r.clock.now()).to_std().expect("a future time"));
        }
        rotated = return_value(app.invoke("RotationWorker", &delivery(&follow, 1)).await).await;
    }
    assert_eq!(rotated["outcome"], "rotated", "{rotated}");
    let (v2, value) = current(r, "payments");
    assert_ne!(v2.id, v1.id);
    assert!(
        r.directory
            .accepts(&AppId::parse(APP).expect("app"), &value)
    );
    let notes = tags::Bookkeeping::read(&v2.tags);
    assert_eq!(notes.previous_key_id, Some(k1));

    // Retirement scheduled after the overlap, in the object's session.
    let messages = r.queue.messages();
    assert_eq!(messages.len(), sent + 1);
    let retire = &messages[sent];
    assert_eq!(retire.session_id, job.session_id);
    assert_eq!(
        retire.scheduled_enqueue,
        notes.rotated_at.map(|t| t + chrono::Duration::days(7))
    );

    // A late duplicate of the job is harmless.
    let duplicate = return_value(app.invoke("RotationWorker", &delivery(job, 2)).await).await;
    assert_eq!(duplicate["outcome"], "skipped");

    // After the overlap the old credential goes; the new one stays.
    r.clock.advance(Duration::from_secs(7 * 24 * 3600));
    let retired = return_value(app.invoke("RotationWorker", &delivery(retire, 1)).await).await;
    assert_eq!(retired["outcome"], "retired", "{retired}");
    let keys: Vec<KeyId> = r
        .directory
        .credentials(&registration.object_id)
        .into_iter()
        .map(|c| c.key_id)
        .collect();
    assert_eq!(keys, vec![notes.key_id.expect("new key")]);

    let actions: Vec<String> = app
        .audit_entries()
        .await
        .into_iter()
        .map(|e| e.record.action.as_str().to_string())
        .collect();
    for expected in [
        "event.received",
        "rotation.planned",
        "job.received",
        "credential.added",
        "credential.pending",
        "credential.proven",
        "secret.rotated",
        "retirement.scheduled",
        "rotation.skipped",
        "credential.retired",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
    let trail = format!("{:?}", app.audit_entries().await);
    assert!(
        !trail.contains(value.expose()),
        "no secret value in the audit log"
    );
}

#[tokio::test]
async fn permission_denied_is_completed_recorded_on_the_secret_and_not_retried() {
    let (app, _dir) = app().await;
    let r = &app.rotation;
    let (_, v1, _) = seed(r, "payments");
    r.directory
        .deny_writes(Some("Microsoft Graph Application.ReadWrite.OwnedBy"));
    return_value(
        app.invoke("KeyVaultEvents", &envelope("event", near_expiry(&v1)))
            .await,
    )
    .await;
    let job = r.queue.messages().remove(0);

    let answer = return_value(app.invoke("RotationWorker", &delivery(&job, 1)).await).await;

    assert_eq!(answer["failed"], "permission_denied");
    assert_eq!(r.faults.count("add_password"), 1);
    let (current_version, _) = current(r, "payments");
    let tag = current_version.tags.get(tags::LAST_ERROR).expect("tagged");
    assert!(tag.contains("Application.ReadWrite.OwnedBy"), "{tag}");
    let entries = app.audit_entries().await;
    let failed = entries
        .iter()
        .find(|e| e.record.action.as_str() == "invocation.failed")
        .expect("recorded by the host");
    assert!(
        failed
            .record
            .reason
            .as_ref()
            .expect("reason")
            .as_str()
            .starts_with("permission_denied")
    );
    assert!(
        entries
            .iter()
            .any(|e| e.record.action.as_str() == "rotation.failed")
    );
}

#[tokio::test]
async fn a_lasting_outage_abandons_the_message_for_redelivery() {
    let (app, _dir) = app().await;
    let r = &app.rotation;
    let (_, v1, _) = seed(r, "payments");
    return_value(
        app.invoke("KeyVaultEvents", &envelope("event", near_expiry(&v1)))
            .await,
    )
    .await;
    let job = r.queue.messages().remove(0);
    for _ in 0..10 {
        r.faults.fail_next(
            "application",
            PortError::new(
                FailureKind::Transient { retry_after: None },
                "Graph answered 503",
            ),
        );
    }

    let response = app.invoke("RotationWorker", &delivery(&job, 1)).await;

    assert_eq!(response.status(), 500);
    let (current_version, _) = current(r, "payments");
    assert_eq!(current_version.id, v1.id);
    assert!(!current_version.tags.contains_key(tags::LAST_ERROR));
}

#[tokio::test]
async fn an_event_refused_for_good_does_not_cost_the_rest_of_its_delivery() {
    let (app, _dir) = app().await;
    let r = &app.rotation;
    let (_, v1, _) = seed(r, "payments");
    r.faults.fail_next(
        "secret_properties",
        PortError::new(
            FailureKind::PermissionDenied {
                missing: "Key Vault Secrets Officer on kv-test".into(),
            },
            "Key Vault answered 403",
        ),
    );
    let batch = json!([near_expiry(&v1), near_expiry(&v1)]);

    let answer = return_value(
        app.invoke("KeyVaultEvents", &envelope("event", batch))
            .await,
    )
    .await;

    let decisions = answer["decisions"].as_array().expect("decisions");
    assert_eq!(decisions.len(), 2, "{answer}");
    assert_eq!(decisions[0]["decision"], "failed", "{answer}");
    assert_eq!(decisions[1]["decision"], "queued", "{answer}");
    assert_eq!(r.queue.messages().len(), 1, "the second event was planned");
    let entries = app.audit_entries().await;
    assert!(
        entries
            .iter()
            .any(|e| e.record.action.as_str() == "rotation.planned"
                && e.record.outcome == keyturn::ports::audit::Outcome::Failed),
        "the refused event is audited"
    );
}

#[tokio::test]
async fn the_sweep_queues_what_is_due_and_reports_malformed_tags() {
    let (app, _dir) = app().await;
    let r = &app.rotation;
    seed(r, "payments");
    let broken = BTreeMap::from([(tags::KIND.to_string(), "entra-app-scret".to_string())]);
    r.vault.put_secret(
        &vault(),
        &ObjectName::parse("typo").expect("name"),
        &keyturn::domain::secret::SecretValue::new("x"),
        None,
        broken,
    );
    let timer = fixture("custom-handler/timer-trigger.data-value.docs.json");

    let report = return_value(
        app.invoke(
            "ExpirySweep",
            &envelope("timer", Value::String(timer.to_string())),
        )
        .await,
    )
    .await;

    assert_eq!(report["examined"], 2);
    assert_eq!(report["queued"], 1);
    let malformed = report["malformed"][0]
        .as_str()
        .expect("one malformed object");
    assert!(
        malformed.contains("typo") && malformed.contains(tags::KIND),
        "{malformed}"
    );
    assert_eq!(r.queue.messages().len(), 1);
}

#[tokio::test]
async fn without_rotation_ports_events_and_sweeps_are_acknowledged_and_jobs_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn_app_without_rotation(audit_store(&dir)).await;
    let (_, v1, _) = seed(&app.rotation, "payments");

    let planned = return_value(
        app.invoke("KeyVaultEvents", &envelope("event", near_expiry(&v1)))
            .await,
    )
    .await;
    assert_eq!(planned["decisions"][0]["decision"], "notConfigured");

    let timer = fixture("custom-handler/timer-trigger.data-value.docs.json");
    let swept = return_value(app.invoke("ExpirySweep", &envelope("timer", timer)).await).await;
    assert_eq!(swept["examined"], 0);
    let entries = app.audit_entries().await;
    let sweep = entries.last().expect("sweep audited");
    assert_eq!(sweep.record.action.as_str(), "sweep.ran");
    assert_eq!(
        sweep.record.outcome,
        keyturn::ports::audit::Outcome::Skipped
    );

    let job = keyturn::rotation::job::Job::new(keyturn::rotation::job::Action::Rotate {
        object: v1.id.without_version(),
        replaces_version: v1.id.version().expect("version").clone(),
    });
    let response = app
        .invoke("RotationWorker", &delivery(&job.message(None), 1))
        .await;
    assert_eq!(response.status(), 500, "the job goes back to the queue");
}
