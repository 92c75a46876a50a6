//! KeyVaultEvents through the host's envelopes.

use std::sync::Arc;

use serde_json::{Value, json};

use keyturn::ports::FailureKind;

use crate::helpers::{RefusingStore, envelope, fixture, fixtures, spawn_app, spawn_app_with_store};

fn event_fixtures() -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(fixtures().join("keyvault-events"))
        .expect("fixture dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|n| {
            let v = fixture(&format!("keyvault-events/{n}"));
            (n, v)
        })
        .collect()
}

#[tokio::test]
async fn every_key_vault_event_fixture_is_answered_with_success() {
    let app = spawn_app().await;
    let fixtures = event_fixtures();
    assert_eq!(
        fixtures.len(),
        11,
        "all keyvault-events fixtures are exercised"
    );
    for (name, event) in fixtures {
        // The host sends the event as an object or as a JSON document inside a string.
        for value in [event.clone(), Value::String(event.to_string())] {
            let response = app
                .invoke("KeyVaultEvents", &envelope("event", value))
                .await;
            assert_eq!(response.status(), 200, "{name}");
            let body: Value = response.json().await.expect("json");
            let returned = &body["ReturnValue"];
            let expiry = name.contains("NearExpiry") || name.contains("Expired");
            assert_eq!(
                returned["received"].as_array().map(Vec::len),
                Some(usize::from(expiry)),
                "{name}"
            );
            assert_eq!(returned["ignored"], json!(usize::from(!expiry)), "{name}");
        }
    }
}

#[tokio::test]
async fn expiry_events_are_audited_with_the_object_they_name() {
    let app = spawn_app().await;
    let event = fixture("keyvault-events/DERIVED.eventgrid-schema.SecretNearExpiry.json");
    let response = app
        .invoke("KeyVaultEvents", &envelope("event", event))
        .await;
    assert_eq!(response.status(), 200);

    let entries = app.audit_entries().await;
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.record.action.as_str(), "event.received");
    assert_eq!(
        entry.record.object.vault.as_ref().map(|v| v.as_str()),
        Some("https://sample-kv.vault.azure.net/"),
        "the vault as the rotation engine records it: its URL"
    );
    assert_eq!(
        entry.record.object.secret_name.as_ref().map(|v| v.as_str()),
        Some("newsecret")
    );
    assert_eq!(
        entry
            .record
            .object
            .secret_version
            .as_ref()
            .map(|v| v.as_str()),
        Some("ee059b2bb5bc48398a53b168c6cdcb10")
    );
    assert_eq!(
        entry.record.reason.as_ref().map(|v| v.as_str()),
        Some("Microsoft.KeyVault.SecretNearExpiry")
    );
}

#[tokio::test]
async fn ten_replays_of_one_event_are_one_entry_and_one_counted_entry() {
    let app = spawn_app().await;
    let event = fixture("keyvault-events/DERIVED.eventgrid-schema.SecretNearExpiry.json");

    for _ in 0..10 {
        let response = app
            .invoke("KeyVaultEvents", &envelope("event", event.clone()))
            .await;
        assert_eq!(response.status(), 200);
    }
    app.services.audit.flush().await.expect("the window closes");

    let entries = app.audit_entries().await;
    let received: Vec<_> = entries
        .iter()
        .filter(|e| e.record.action.as_str() == "event.received")
        .collect();
    assert_eq!(received.len(), 2, "{entries:?}");
    assert_eq!(received[0].record.count, None);
    assert_eq!(received[1].record.count, Some(9));
    assert_eq!(received[0].record.object, received[1].record.object);
}

#[tokio::test]
async fn received_events_are_answered_with_the_object_ids_key_vault_writes() {
    let app = spawn_app().await;
    let version = "ee059b2bb5bc48398a53b168c6cdcb10";
    let secret = fixture("keyvault-events/DERIVED.eventgrid-schema.SecretNearExpiry.json");
    let mut without_id = secret.clone();
    without_id["data"]
        .as_object_mut()
        .expect("data")
        .remove("Id");
    let cases = [
        (
            secret,
            format!("https://sample-kv.vault.azure.net/secrets/newsecret/{version}"),
        ),
        (
            fixture("keyvault-events/DERIVED.cloudevents-schema.CertificateExpired.json"),
            format!("https://sample-kv.vault.azure.net/certificates/newcert/{version}"),
        ),
        // Without `Id` the event names only the vault: its public-cloud URL is the id.
        (
            without_id,
            format!("https://sample-kv.vault.azure.net/secrets/newsecret/{version}"),
        ),
    ];
    for (event, expected) in cases {
        let response = app
            .invoke("KeyVaultEvents", &envelope("event", event))
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["ReturnValue"]["received"], json!([expected]));
    }
}

#[tokio::test]
async fn a_malformed_event_is_a_permanent_failure_recorded_in_the_audit_log() {
    let app = spawn_app().await;
    let malformed =
        json!({ "eventType": "Microsoft.KeyVault.SecretNearExpiry", "data": "not an object" });
    let response = app
        .invoke("KeyVaultEvents", &envelope("event", malformed))
        .await;

    assert_eq!(response.status(), 200, "completed, not retried");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["ReturnValue"]["failed"], "bad_input");
    let entries = app.audit_entries().await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].record.action.as_str(), "invocation.failed");
    let reason = entries[0]
        .record
        .reason
        .as_ref()
        .expect("reason")
        .as_str()
        .to_string();
    assert!(reason.starts_with("bad_input"), "{reason}");
}

#[tokio::test]
async fn a_body_that_is_not_an_envelope_is_a_permanent_failure() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(format!("{}/KeyVaultEvents", app.address))
        .header("content-type", "application/json")
        .body("{ this is not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.audit_entries().await[0].record.action.as_str(),
        "invocation.failed"
    );
}

#[tokio::test]
async fn an_unreachable_audit_log_fails_the_invocation_so_event_grid_retries() {
    let app = spawn_app_with_store(Arc::new(RefusingStore(FailureKind::Transient {
        retry_after: None,
    })))
    .await;
    let event = fixture("keyvault-events/DERIVED.cloudevents-schema.CertificateExpired.json");
    let response = app
        .invoke("KeyVaultEvents", &envelope("event", event))
        .await;
    assert_eq!(response.status(), 500);
}

#[tokio::test]
async fn a_permanent_failure_that_cannot_be_recorded_is_retried_instead_of_lost() {
    let denied = FailureKind::PermissionDenied {
        missing: "Storage Table Data Contributor".into(),
    };
    let app = spawn_app_with_store(Arc::new(RefusingStore(denied))).await;
    let event = fixture("keyvault-events/DERIVED.eventgrid-schema.SecretExpired.json");
    let response = app
        .invoke("KeyVaultEvents", &envelope("event", event))
        .await;
    assert_eq!(response.status(), 500);
}
