//! ExpirySweep through the host's envelopes.

use serde_json::Value;

use crate::helpers::{envelope, fixture, spawn_app};

#[tokio::test]
async fn a_timer_invocation_runs_the_sweep_and_audits_it() {
    let app = spawn_app().await;
    let timer = fixture("custom-handler/timer-trigger.data-value.docs.json");
    // The host sends the timer as a JSON document inside a string.
    let response = app
        .invoke(
            "ExpirySweep",
            &envelope("timer", Value::String(timer.to_string())),
        )
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["ReturnValue"]["past_due"], false);
    assert_eq!(
        body["ReturnValue"]["vaults"][0],
        "https://kv-test.vault.azure.net/"
    );
    let entries = app.audit_entries().await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].record.action.as_str(), "sweep.ran");
    assert_eq!(
        entries[0].record.reason.as_ref().map(|r| r.as_str()),
        Some("1 vault(s): 0 examined, 0 queued, 0 malformed, 0 failing, 0 vault(s) failed")
    );
}

#[tokio::test]
async fn a_past_due_run_is_recorded_as_such() {
    let app = spawn_app().await;
    let mut timer = fixture("custom-handler/timer-trigger.data-value.docs.json");
    timer["IsPastDue"] = Value::Bool(true);
    let response = app.invoke("ExpirySweep", &envelope("timer", timer)).await;
    assert_eq!(response.status(), 200);
    let entries = app.audit_entries().await;
    assert_eq!(
        entries[0].record.reason.as_ref().map(|r| r.as_str()),
        Some(
            "1 vault(s), past due: 0 examined, 0 queued, 0 malformed, 0 failing, 0 vault(s) failed"
        )
    );
}
