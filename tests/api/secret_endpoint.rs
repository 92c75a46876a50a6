//! SecretEndpoint over the forwarded HTTP route.

use serde_json::Value;

use keyturn::ports::audit::Outcome;

use crate::helpers::spawn_app;

fn assert_error_body(body: &Value, code: &str) {
    let object = body.as_object().expect("object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["error", "message", "requestId"], "nothing but the three fields");
    assert_eq!(body["error"], code);
}

#[tokio::test]
async fn an_invalid_name_is_refused_before_anything_else_happens() {
    let app = spawn_app().await;
    for name in ["bad_name", "a.b", &"x".repeat(128)] {
        let response = app.get(&format!("/api/secrets/{name}")).await;
        assert_eq!(response.status(), 400, "{name}");
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_error_body(&response.json().await.expect("json"), "invalid_name");
    }
}

#[tokio::test]
async fn with_no_certificate_policy_configured_every_read_is_refused_and_audited() {
    let app = spawn_app().await;
    let response = app.get("/api/secrets/db-password").await;
    assert_eq!(response.status(), 403);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    assert_error_body(&body, "forbidden");

    let entries = app.audit_entries().await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].record.outcome, Outcome::Denied);
    assert_eq!(entries[0].record.object.secret_name.as_ref().map(|n| n.as_str()), Some("db-password"));
    assert_eq!(
        entries[0].record.invocation_id.as_ref().map(|i| i.as_str()),
        body["requestId"].as_str(),
        "the request id leads to the audit entry"
    );
}

#[tokio::test]
async fn an_unknown_route_answers_a_bare_not_found() {
    let app = spawn_app().await;
    let response = app.get("/admin").await;
    assert_eq!(response.status(), 404);
    assert_error_body(&response.json().await.expect("json"), "not_found");
}
