use std::time::Duration;

use keyturn_standins::{Permissions, Standins};
use serde_json::Value;
use uuid::Uuid;

use crate::{json, start};

async fn request_token(
    standins: &Standins,
    client_id: Uuid,
    secret: &str,
    scope: &str,
) -> reqwest::Response {
    standins
        .http_client()
        .post(standins.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id.to_string()),
            ("client_secret", secret),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap()
}

fn error_code(body: &Value) -> u64 {
    body["error_codes"][0].as_u64().unwrap()
}

#[tokio::test]
async fn a_new_secret_is_refused_until_its_propagation_delay_has_passed() {
    let standins = start().await;
    let graph = standins.graph();
    graph.set_propagation_delay(Duration::from_secs(15));
    let app = graph.seed_application("rotated", Permissions::all());
    let new = graph
        .add_password(
            app.object_id,
            standins.now() + chrono::Duration::days(30),
            false,
        )
        .unwrap();

    let early = request_token(
        &standins,
        app.app_id,
        &new.secret_text,
        "https://vault.azure.net/.default",
    )
    .await;
    assert_eq!(early.status(), 401);
    let body = json(early).await;
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(error_code(&body), 7000215);

    standins.advance_clock(Duration::from_secs(16));
    let later = request_token(
        &standins,
        app.app_id,
        &new.secret_text,
        "https://vault.azure.net/.default",
    )
    .await;
    assert_eq!(later.status(), 200);
    let body = json(later).await;
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn an_expired_secret_is_refused_with_aadsts7000222() {
    let standins = start().await;
    let identity = standins.identity().clone();
    standins.advance_clock(Duration::from_secs(400 * 86_400));

    let response = request_token(
        &standins,
        identity.app_id,
        identity.client_secret(),
        "https://graph.microsoft.com/.default",
    )
    .await;

    assert_eq!(response.status(), 401);
    assert_eq!(error_code(&json(response).await), 7000222);
}

#[tokio::test]
async fn a_wrong_secret_is_invalid_client() {
    let standins = start().await;
    let identity = standins.identity().clone();

    let response = request_token(
        &standins,
        identity.app_id,
        "not-the-secret",
        "https://vault.azure.net/.default",
    )
    .await;

    assert_eq!(response.status(), 401);
    assert_eq!(error_code(&json(response).await), 7000215);
}

#[tokio::test]
async fn a_scope_without_dot_default_is_invalid_scope() {
    let standins = start().await;
    let identity = standins.identity().clone();

    let response = request_token(
        &standins,
        identity.app_id,
        identity.client_secret(),
        "https://vault.azure.net",
    )
    .await;

    assert_eq!(response.status(), 400);
    let body = json(response).await;
    assert_eq!(body["error"], "invalid_scope");
}

#[tokio::test]
async fn an_unknown_client_id_is_unauthorized_client() {
    let standins = start().await;

    let response = request_token(
        &standins,
        Uuid::new_v4(),
        "x",
        "https://vault.azure.net/.default",
    )
    .await;

    assert_eq!(response.status(), 400);
    assert_eq!(error_code(&json(response).await), 700016);
}
