//! RotationWorker through the host's envelopes, shaped like a real Service Bus capture.

use std::sync::Arc;

use serde_json::{Value, json};

use keyturn::domain::names::{ObjectId, ObjectVersion};
use keyturn::ports::FailureKind;
use keyturn::rotation::job::{Action, Job};

use crate::helpers::{RefusingStore, fixture, spawn_app, spawn_app_with_store};

/// The captured Service Bus invocation with its payload replaced by `job`, double-encoded
/// the way the host encodes it.
fn service_bus_invocation(job: &Value) -> Value {
    let mut captured = fixture("custom-handler/servicebus-trigger.request.captured-ext4.json");
    let double_encoded = Value::String(Value::String(job.to_string()).to_string());
    captured["Data"] = json!({ "job": double_encoded });
    captured
}

/// A rotate job for a secret the vault does not hold.
fn job_for_a_missing_secret() -> Job {
    Job::new(Action::Rotate {
        object: ObjectId::parse("https://kv-test.vault.azure.net/secrets/missing").expect("id"),
        replaces_version: ObjectVersion::parse("0123456789abcdef0123456789abcdef")
            .expect("version"),
    })
}

#[tokio::test]
async fn a_job_is_completed_and_audited_with_its_delivery_count() {
    let app = spawn_app().await;
    let job = job_for_a_missing_secret();
    let body: Value = serde_json::from_slice(&job.message(None).body).expect("json");
    let response = app
        .invoke("RotationWorker", &service_bus_invocation(&body))
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["ReturnValue"]["jobId"], job.job_id.to_string());
    assert_eq!(body["ReturnValue"]["deliveryCount"], 1);
    assert_eq!(body["ReturnValue"]["outcome"], "skipped");
    let entries = app.audit_entries().await;
    assert_eq!(entries[0].record.action.as_str(), "job.received");
    assert_eq!(
        entries[0].record.reason.as_ref().map(|r| r.as_str()),
        Some(format!("job {} delivery 1", job.job_id).as_str())
    );
    assert_eq!(entries[1].record.action.as_str(), "rotation.skipped");
}

#[tokio::test]
async fn a_job_without_an_action_is_completed_as_bad_input() {
    let app = spawn_app().await;
    let job = json!({ "schema": 1, "jobId": "job-42" });
    let response = app
        .invoke("RotationWorker", &service_bus_invocation(&job))
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["ReturnValue"]["failed"], "bad_input");
    let entries = app.audit_entries().await;
    assert_eq!(
        entries.last().expect("entry").record.action.as_str(),
        "invocation.failed"
    );
}

#[tokio::test]
async fn a_job_of_an_unknown_schema_is_completed_not_redelivered() {
    let app = spawn_app().await;
    let job = json!({ "schema": 99, "jobId": "job-from-the-future" });
    let response = app
        .invoke("RotationWorker", &service_bus_invocation(&job))
        .await;

    assert_eq!(response.status(), 200);
    let entries = app.audit_entries().await;
    assert_eq!(entries[0].record.action.as_str(), "invocation.failed");
    let reason = entries[0]
        .record
        .reason
        .as_ref()
        .expect("reason")
        .as_str()
        .to_string();
    assert!(reason.contains("schema 99"), "{reason}");
}

#[tokio::test]
async fn a_transient_failure_abandons_the_message_for_redelivery() {
    let busy = FailureKind::Transient {
        retry_after: Some(std::time::Duration::from_secs(3)),
    };
    let app = spawn_app_with_store(Arc::new(RefusingStore(busy))).await;
    let job = json!({ "schema": 1, "jobId": "job-7" });
    let response = app
        .invoke("RotationWorker", &service_bus_invocation(&job))
        .await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["Logs"][0]
            .as_str()
            .is_some_and(|l| l.starts_with("retryable failure"))
    );
}
