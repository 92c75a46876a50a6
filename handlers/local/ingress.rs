//! The local Event Grid ingress: the Functions host's Event Grid webhook
//! (`/runtime/webhooks/EventGrid?functionName=...`) on loopback, so events can be replayed
//! with curl in either schema, as strict as the host's Event Grid extension
//! (`HttpRequestProcessor`): `aeg-event-type` is required (`SubscriptionValidation` is
//! answered with its code, `Notification` delivers, `Unsubscribe` is 202, anything else
//! 400); `OPTIONS` is the CloudEvents handshake, granted to Event Grid's origins only; each
//! event is one invocation, bound as its JSON text, and a delivery is answered 202 when
//! every invocation succeeded.

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

use crate::events::validation::{SubscriptionValidation, WebhookHandshake, event_grid_origin};

/// Event Grid delivers batches of at most 1 MB (Event Grid delivery limits).
pub(crate) const MAX_DELIVERY_BYTES: usize = 1024 * 1024;

/// Event Grid marks deliveries with this header: `SubscriptionValidation`, `Notification`
/// or `Unsubscribe` (compared without case, as the host does).
const EVENT_TYPE_HEADER: &str = "aeg-event-type";
const VALIDATION: &str = "SubscriptionValidation";
const NOTIFICATION: &str = "Notification";
const UNSUBSCRIBE: &str = "Unsubscribe";

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
    // As the host's Event Grid extension (`HttpRequestProcessor`): OPTIONS is the
    // CloudEvents handshake, granted to Event Grid's origins only; otherwise
    // `aeg-event-type` decides, and a request without it is refused.
    if method == Method::OPTIONS {
        let header_pairs = headers
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)));
        let mut response = StatusCode::OK.into_response();
        let granted = match WebhookHandshake::from_request(method.as_str(), header_pairs) {
            Ok(Some(handshake)) => handshake.response_headers(),
            _ => vec![("WebHook-Allowed-Origin", event_grid_origin(None).to_owned())],
        };
        for (name, value) in granted {
            if let Ok(value) = value.parse() {
                response.headers_mut().insert(name, value);
            }
        }
        return response;
    }
    let event_type = headers
        .get(EVENT_TYPE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or_default();
    let kind = [VALIDATION, NOTIFICATION, UNSUBSCRIBE]
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(event_type));
    let Some(kind) = kind else {
        return answer(
            StatusCode::BAD_REQUEST,
            "aeg-event-type must be SubscriptionValidation, Notification or Unsubscribe",
        );
    };
    if kind == UNSUBSCRIBE {
        return StatusCode::ACCEPTED.into_response();
    }
    if method != Method::POST {
        return answer(StatusCode::METHOD_NOT_ALLOWED, "deliver events with POST");
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return answer(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    if kind == VALIDATION {
        return match SubscriptionValidation::from_delivery(&payload) {
            Ok(Some(handshake)) => {
                (StatusCode::OK, axum::Json(handshake.validation_response())).into_response()
            }
            Ok(None) => answer(
                StatusCode::BAD_REQUEST,
                "a SubscriptionValidation delivery carries a validation event",
            ),
            Err(e) => answer(StatusCode::BAD_REQUEST, &e.to_string()),
        };
    }
    let events = match payload {
        Value::Array(events) => events,
        single @ Value::Object(_) => vec![single],
        _ => {
            return answer(
                StatusCode::BAD_REQUEST,
                "a delivery is a JSON object or array of events",
            );
        }
    };
    let mut failed = 0usize;
    for event in events {
        // The trigger binds each event as its JSON text, as the host's extension converts
        // it for a function that does not bind the SDK's types.
        let text = serde_json::to_string_pretty(&event).unwrap_or_else(|_| event.to_string());
        match ingress.deliver.deliver(function, Value::String(text)).await {
            Ok(true) => {}
            Ok(false) => failed += 1,
            Err(problem) => {
                tracing::warn!(%problem, "event delivery failed");
                failed += 1;
            }
        }
    }
    if failed == 0 {
        StatusCode::ACCEPTED.into_response()
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
    async fn the_cloudevents_handshake_grants_event_grids_origins_only() {
        let url = serve(Arc::new(Recorder::default())).await;
        let http = reqwest::Client::new();
        for (requested, granted) in [
            (Some("eventgrid.azure.net"), "eventgrid.azure.net"),
            (Some("eventgrid.azure.us"), "eventgrid.azure.us"),
            (Some("eventgrid.azure.cn"), "eventgrid.azure.cn"),
            (Some("eventemitter.example.com"), "eventgrid.azure.net"),
            (None, "eventgrid.azure.net"),
        ] {
            let mut request = http.request(Method::OPTIONS, &url);
            if let Some(origin) = requested {
                request = request.header("WebHook-Request-Origin", origin);
            }
            let response = request.send().await.expect("answered");
            assert_eq!(response.status(), 200, "{requested:?}");
            assert_eq!(
                response.headers()["webhook-allowed-origin"],
                granted,
                "{requested:?}"
            );
        }
    }

    /// Every case of `tests/fixtures/eventgrid-webhook/DERIVED.host-answers.json`, the
    /// host's answers as its Event Grid extension's source decides them.
    #[tokio::test]
    async fn the_ingress_answers_every_case_as_the_host_does() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/eventgrid-webhook/DERIVED.host-answers.json");
        let table: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
        let validation = json!([{
            "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
            "topic": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
            "subject": "",
            "data": { "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6" },
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2018-01-25T22:12:19.4556811Z",
            "metadataVersion": "1",
            "dataVersion": "1"
        }]);
        let event = fixture("DERIVED.eventgrid-schema.SecretNearExpiry.json");
        let recorder = Arc::new(Recorder {
            succeed: true,
            ..Recorder::default()
        });
        let url = serve(recorder).await;
        let http = reqwest::Client::new();
        let cases = table["cases"].as_array().expect("cases");
        assert!(cases.len() >= 10);
        for case in cases {
            let method = Method::from_bytes(case["method"].as_str().expect("method").as_bytes())
                .expect("a method");
            let mut request = http.request(method, &url);
            if let Some(kind) = case["aeg-event-type"].as_str() {
                request = request.header("aeg-event-type", kind);
            }
            if let Some(origin) = case["origin"].as_str() {
                request = request.header("WebHook-Request-Origin", origin);
            }
            request = match case["body"].as_str() {
                Some("event") => request.json(&event),
                Some("events") => request.json(&json!([event.clone(), event.clone()])),
                Some("validation") => request.json(&validation),
                _ => request,
            };
            let response = request.send().await.expect("answered");
            assert_eq!(
                u64::from(response.status().as_u16()),
                case["status"].as_u64().expect("status"),
                "{case}"
            );
            if let Some(origin) = case["allowed-origin"].as_str() {
                assert_eq!(
                    response.headers()["webhook-allowed-origin"],
                    origin,
                    "{case}"
                );
            }
            if let Some(code) = case["validationResponse"].as_str() {
                let body: Value = response.json().await.expect("json");
                assert_eq!(body["validationResponse"], code, "{case}");
            }
        }
    }

    #[tokio::test]
    async fn the_event_type_header_decides_as_the_host_decides() {
        let recorder = Arc::new(Recorder {
            succeed: true,
            ..Recorder::default()
        });
        let url = serve(recorder.clone()).await;
        let http = reqwest::Client::new();
        let event = fixture("DERIVED.eventgrid-schema.SecretNearExpiry.json");
        for (header, status) in [
            (None, 400),
            (Some("Notification"), 202),
            (Some("notification"), 202),
            (Some("Unsubscribe"), 202),
            (Some("SubscriptionValidation"), 400),
            (Some("Delivery"), 400),
        ] {
            let mut request = http.post(&url).json(&event);
            if let Some(value) = header {
                request = request.header("aeg-event-type", value);
            }
            let response = request.send().await.expect("answered");
            assert_eq!(response.status(), status, "{header:?}");
        }
        // Only the two Notification deliveries reached the function.
        assert_eq!(recorder.seen.lock().expect("lock").len(), 2);
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
        assert_eq!(response.status(), 202);
        let response = http
            .post(&url)
            .header("aeg-event-type", "Notification")
            .header("content-type", "application/cloudevents+json")
            .body(one.to_string())
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 202);
        let seen = recorder.seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 2);
        // Each event is bound as its JSON text.
        let text = seen[1].1.as_str().expect("the event's JSON text");
        let parsed: Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(parsed, one);

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
            .header("aeg-event-type", "Notification")
            .body("{not json")
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 400);
    }
}
