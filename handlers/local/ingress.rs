//! The local Event Grid ingress: the Functions host's Event Grid webhook
//! (`/runtime/webhooks/EventGrid?functionName=...`) on loopback, so events can be replayed
//! with curl in either schema. It answers Event Grid's subscription-validation handshake and
//! the CloudEvents webhook handshake, and delivers each event to the function as the host
//! does: one invocation per event.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};

use crate::events::validation::{SubscriptionValidation, WebhookHandshake};

/// Event Grid delivers batches of at most 1 MB (Event Grid delivery limits).
pub(crate) const MAX_DELIVERY_BYTES: usize = 1024 * 1024;

/// Event Grid marks deliveries with this header: `SubscriptionValidation` or `Notification`.
const EVENT_TYPE_HEADER: &str = "aeg-event-type";

/// Where the ingress hands each event: an invocation of the named function.
#[async_trait]
pub(crate) trait Deliver: Send + Sync {
    /// Delivers one event; `Ok(true)` when the function succeeded.
    async fn deliver(&self, function: &str, event: Value) -> Result<bool, String>;
}

#[derive(Clone)]
struct Ingress {
    deliver: Arc<dyn Deliver>,
    functions: Arc<Vec<String>>,
}

/// The ingress for the Event Grid–triggered `functions`.
pub(crate) fn router(deliver: Arc<dyn Deliver>, functions: Vec<String>) -> Router {
    Router::new()
        .route("/runtime/webhooks/EventGrid", any(webhook))
        .route("/runtime/webhooks/eventgrid", any(webhook))
        .layer(DefaultBodyLimit::max(MAX_DELIVERY_BYTES))
        .with_state(Ingress {
            deliver,
            functions: Arc::new(functions),
        })
}

fn answer(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "message": message }))).into_response()
}

async fn webhook(
    State(ingress): State<Ingress>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(function) = query
        .get("functionName")
        .filter(|f| ingress.functions.contains(f))
    else {
        return answer(
            StatusCode::NOT_FOUND,
            "functionName must name an Event Grid-triggered function",
        );
    };
    let header_pairs = headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)));
    match WebhookHandshake::from_request(method.as_str(), header_pairs) {
        Ok(Some(handshake)) => {
            let mut response = StatusCode::OK.into_response();
            for (name, value) in handshake.response_headers() {
                if let Ok(value) = value.parse() {
                    response.headers_mut().insert(name, value);
                }
            }
            return response;
        }
        Ok(None) => {}
        Err(e) => return answer(StatusCode::BAD_REQUEST, &e.to_string()),
    }
    if method != Method::POST {
        return answer(StatusCode::METHOD_NOT_ALLOWED, "deliver events with POST");
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return answer(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let validation = headers
        .get(EVENT_TYPE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.eq_ignore_ascii_case("SubscriptionValidation"));
    if validation {
        match SubscriptionValidation::from_delivery(&payload) {
            Ok(Some(handshake)) => {
                return (StatusCode::OK, axum::Json(handshake.validation_response()))
                    .into_response();
            }
            Ok(None) => {}
            Err(e) => return answer(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    }
    let events = match payload {
        Value::Array(events) => events,
        single => vec![single],
    };
    let mut failed = 0usize;
    for event in events {
        match ingress.deliver.deliver(function, event).await {
            Ok(true) => {}
            Ok(false) => failed += 1,
            Err(problem) => {
                tracing::warn!(%problem, "event delivery failed");
                failed += 1;
            }
        }
    }
    if failed == 0 {
        StatusCode::OK.into_response()
    } else {
        // Event Grid retries a delivery that is not answered 2xx.
        answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the function failed; deliver again",
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<(String, Value)>>,
        succeed: bool,
    }

    #[async_trait]
    impl Deliver for Recorder {
        async fn deliver(&self, function: &str, event: Value) -> Result<bool, String> {
            self.seen
                .lock()
                .expect("lock")
                .push((function.to_string(), event));
            Ok(self.succeed)
        }
    }

    async fn serve(recorder: Arc<Recorder>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("addr");
        let app = router(recorder, vec!["KeyVaultEvents".into()]);
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}/runtime/webhooks/EventGrid?functionName=KeyVaultEvents")
    }

    fn fixture(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keyvault-events")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
    }

    #[tokio::test]
    async fn the_subscription_validation_handshake_is_answered_with_its_code() {
        let recorder = Arc::new(Recorder::default());
        let url = serve(recorder.clone()).await;
        let validation = json!([{
            "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
            "topic": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
            "subject": "",
            "data": { "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": "https://rp-eastus2.eventgrid.azure.net/validate" },
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2018-01-25T22:12:19.4556811Z",
            "metadataVersion": "1",
            "dataVersion": "1"
        }]);
        let response = reqwest::Client::new()
            .post(&url)
            .header("aeg-event-type", "SubscriptionValidation")
            .json(&validation)
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        assert_eq!(
            body["validationResponse"],
            "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
        );
        assert!(
            recorder.seen.lock().expect("lock").is_empty(),
            "validation is not an event"
        );
    }

    #[tokio::test]
    async fn the_cloudevents_handshake_grants_the_origin() {
        let url = serve(Arc::new(Recorder::default())).await;
        let response = reqwest::Client::new()
            .request(Method::OPTIONS, &url)
            .header("WebHook-Request-Origin", "eventemitter.example.com")
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["webhook-allowed-origin"],
            "eventemitter.example.com"
        );
    }

    #[tokio::test]
    async fn each_event_of_a_batch_is_one_invocation_and_failure_asks_for_redelivery() {
        let recorder = Arc::new(Recorder {
            succeed: true,
            ..Recorder::default()
        });
        let url = serve(recorder.clone()).await;
        let batch = fixture("docs-legacy-casing.secret_new_version_created.array.json");
        let one = fixture("DERIVED.cloudevents-schema.SecretNearExpiry.json");
        let http = reqwest::Client::new();
        let response = http
            .post(&url)
            .header("aeg-event-type", "Notification")
            .json(&batch)
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 200);
        let response = http
            .post(&url)
            .header("content-type", "application/cloudevents+json")
            .body(one.to_string())
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 200);
        let seen = recorder.seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].1["type"], "Microsoft.KeyVault.SecretNearExpiry");

        let failing = Arc::new(Recorder::default());
        let url = serve(failing).await;
        let response = http
            .post(&url)
            .header("aeg-event-type", "Notification")
            .json(&batch)
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 500);
    }

    #[tokio::test]
    async fn unknown_functions_and_non_json_bodies_are_refused() {
        let url = serve(Arc::new(Recorder::default())).await;
        let http = reqwest::Client::new();
        let wrong = url.replace("KeyVaultEvents", "RotationWorker");
        assert_eq!(
            http.post(&wrong)
                .json(&json!([]))
                .send()
                .await
                .expect("answered")
                .status(),
            404
        );
        let response = http
            .post(&url)
            .body("{not json")
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 400);
    }
}
