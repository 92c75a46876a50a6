use std::time::Duration;

use http::Method;
use keyturn_standins::{Audience, Fault, Route, SecretSeed, Service};

use crate::{start, token};

#[tokio::test]
async fn an_injected_429_carries_retry_after_and_fires_once() {
    let standins = start().await;
    standins.keyvault().seed_secret(SecretSeed::new("app", "v"));
    let token = token(&standins, Audience::KeyVault).await;
    standins.inject(
        Service::KeyVault,
        Route::new(Method::GET, "/secrets/app"),
        Fault::throttled(Some(7)),
    );
    let url = standins
        .keyvault()
        .url()
        .join("secrets/app?api-version=7.5")
        .unwrap();

    let throttled = standins
        .http_client()
        .get(url.clone())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let retried = standins
        .http_client()
        .get(url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();

    assert_eq!(throttled.status(), 429);
    assert_eq!(throttled.headers()["retry-after"], "7");
    assert_eq!(retried.status(), 200);
    let log = standins.requests_to(Service::KeyVault);
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200]);
    assert_eq!(log[0].fault.as_deref(), Some("status 429"));
    assert!(log[1].received >= log[0].received);
}

#[tokio::test]
async fn faults_only_catch_their_own_route_and_service() {
    let standins = start().await;
    standins.inject(
        Service::Graph,
        Route::any("/v1.0/devices"),
        Fault::unavailable(None),
    );
    let token = token(&standins, Audience::Graph).await;

    let apps = standins
        .http_client()
        .get(standins.graph().url().join("v1.0/applications").unwrap())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let devices = standins
        .http_client()
        .get(standins.graph().url().join("v1.0/devices").unwrap())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();

    assert_eq!(apps.status(), 200);
    assert_eq!(devices.status(), 503);
    assert!(devices.headers().get("retry-after").is_none());
}

#[tokio::test]
async fn a_dropped_connection_reaches_the_client_as_a_transport_error() {
    let standins = start().await;
    standins.inject(Service::Entra, Route::any("/"), Fault::DropConnection);
    let identity = standins.identity().clone();

    let result = standins
        .http_client()
        .post(standins.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &identity.app_id.to_string()),
        ])
        .send()
        .await;

    assert!(result.is_err());
    let log = standins.requests_to(Service::Entra);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status, 0);
}

#[tokio::test]
async fn the_log_records_selected_headers_and_never_the_token() {
    let standins = start().await;
    let token = token(&standins, Audience::ServiceBus).await;
    standins.servicebus().create_queue("q", Default::default());
    standins.set_latency(Duration::from_millis(1));

    standins
        .http_client()
        .post(standins.servicebus().url().join("q/messages").unwrap())
        .bearer_auth(&token)
        .header("Content-Type", "text/plain")
        .header("BrokerProperties", r#"{"MessageId":"m1"}"#)
        .body("hello")
        .send()
        .await
        .unwrap();

    let log = standins.requests_to(Service::ServiceBus);
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].header("brokerproperties"),
        Some(r#"{"MessageId":"m1"}"#)
    );
    assert_eq!(log[0].header("authorization"), Some("Bearer"));
    assert!(!format!("{:?}", standins.requests()).contains(&token));
}
