//! The axum router the Functions host talks to: `POST /<FunctionName>` for non-HTTP
//! triggers, and the forwarded `/api/...` routes for HTTP triggers
//! (`enableForwardingHttpRequest`). Routes only unwrap envelopes and call the functions.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;
use tracing::Instrument;

use crate::audit::Action;
use crate::domain::function::Function;
use crate::domain::names::VaultUrl;
use crate::events::keyvault::KeyVaultEvent;
use crate::events::servicebus::ServiceBusMessage;
use crate::events::timer::TimerInfo;
use crate::functions::secret_endpoint::{EndpointError, EndpointRequest, Refusal};
use crate::functions::{
    Context, FunctionError, Services, alert_sweep, discovery_sweep, discovery_worker,
    evidence_export, expiry_sweep, key_vault_events, rotation_worker, secret_endpoint,
};
use crate::host::answer::ErrorAnswer;
use crate::host::envelope::{InvocationRequest, InvocationResponse, MAX_INVOCATION_BODY_BYTES};
use crate::host::outcome::{Disposition, classify};
use crate::host::tls::TlsPeer;
use crate::mtls::header::ARR_CLIENT_CERT_HEADER;
use crate::mtls::policies::Presented;
use crate::ports::audit::{AuditObject, Outcome};
use crate::rotation::job::Delivery;

/// The header carrying the host's invocation id.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";

/// Where App Service's front end reports the client's address.
const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";

/// What the router needs at run time.
#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub vaults: Arc<Vec<VaultUrl>>,
}

/// The router for the given functions. Functions not listed answer 404, as the host would
/// for a disabled function.
pub fn router(state: AppState, enabled: &[Function]) -> Router {
    let mut router = Router::new();
    for function in enabled {
        router = match function {
            Function::KeyVaultEvents => {
                router.route("/KeyVaultEvents", post(key_vault_events_route))
            }
            Function::ExpirySweep => router.route("/ExpirySweep", post(expiry_sweep_route)),
            Function::RotationWorker => {
                router.route("/RotationWorker", post(rotation_worker_route))
            }
            Function::DiscoverySweep => {
                router.route("/DiscoverySweep", post(discovery_sweep_route))
            }
            Function::DiscoveryWorker => {
                router.route("/DiscoveryWorker", post(discovery_worker_route))
            }
            Function::AlertSweep => router.route("/AlertSweep", post(alert_sweep_route)),
            Function::EvidenceExport => {
                router.route("/EvidenceExport", post(evidence_export_route))
            }
            // An empty name is a name that fails validation, not an unknown route.
            Function::SecretEndpoint => router
                .route("/api/secrets/{name}", get(secret_endpoint_route))
                .route("/api/secrets/", get(secret_endpoint_route)),
        };
    }
    router
        .fallback(unknown_route)
        .layer(middleware::from_fn(invocation_span))
        .layer(DefaultBodyLimit::max(MAX_INVOCATION_BODY_BYTES))
        .with_state(state)
}

/// One span per invocation, carrying the function and the host's invocation id.
async fn invocation_span(request: Request, next: Next) -> Response {
    let function = function_of(request.uri().path());
    let invocation_id = invocation_id(request.headers());
    let span = tracing::info_span!("invocation", function, invocation_id = %invocation_id);
    let started = Instant::now();
    async move {
        let response = next.run(request).await;
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "invocation finished"
        );
        response
    }
    .instrument(span)
    .await
}

fn function_of(path: &str) -> &'static str {
    match path {
        "/KeyVaultEvents" => key_vault_events::NAME.name(),
        "/ExpirySweep" => expiry_sweep::NAME.name(),
        "/RotationWorker" => rotation_worker::NAME.name(),
        "/DiscoverySweep" => discovery_sweep::NAME.name(),
        "/DiscoveryWorker" => discovery_worker::NAME.name(),
        "/AlertSweep" => alert_sweep::NAME.name(),
        "/EvidenceExport" => evidence_export::NAME.name(),
        p if p.starts_with("/api/secrets/") => secret_endpoint::NAME.name(),
        _ => "unknown",
    }
}

/// The host's invocation id, or a fresh one for requests that did not come from the host
/// (local tools, curl). Only a well-formed id is trusted, so the header cannot inject text
/// into logs or the audit trail. A forwarded HTTP request carries the client's headers with
/// the host's id added after them (on a line of its own or joined by a comma), so only the
/// last value is the host's: a client cannot choose the id its request is logged under.
fn invocation_id(headers: &HeaderMap) -> String {
    headers
        .get_all(INVOCATION_ID_HEADER)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| uuid::Uuid::parse_str(v.trim()).ok())
        .unwrap_or_else(uuid::Uuid::new_v4)
        .to_string()
}

fn context(state: &AppState, function: Function, headers: &HeaderMap) -> Context {
    Context {
        function,
        invocation_id: invocation_id(headers),
        now: state.services.clock.now(),
        services: state.services.clone(),
    }
}

/// Unwraps the envelope, decodes the trigger input and runs the function.
async fn trigger<I, O, Fut>(
    state: &AppState,
    function: Function,
    headers: &HeaderMap,
    body: &[u8],
    decode: impl FnOnce(&InvocationRequest) -> Result<I, String>,
    run: impl FnOnce(Context, I) -> Fut,
) -> Response
where
    Fut: Future<Output = Result<O, FunctionError>>,
    O: Serialize,
{
    let ctx = context(state, function, headers);
    let input = InvocationRequest::parse(body)
        .map_err(|e| e.to_string())
        .and_then(|request| decode(&request));
    let result = match input {
        Ok(input) => run(ctx.clone(), input).await,
        Err(problem) => Err(FunctionError::BadInput(problem)),
    };
    answer(&ctx, result).await
}

/// A timer-triggered function: decodes its timer binding (`binding` in its
/// `function.json`) and runs it.
async fn timer_route<O, Fut>(
    state: &AppState,
    function: Function,
    binding: &'static str,
    headers: &HeaderMap,
    body: &[u8],
    run: impl FnOnce(Context, TimerInfo) -> Fut,
) -> Response
where
    Fut: Future<Output = Result<O, FunctionError>>,
    O: Serialize,
{
    trigger(
        state,
        function,
        headers,
        body,
        |request| {
            let value = request.binding_value(binding).map_err(|e| e.to_string())?;
            TimerInfo::from_value(&value).map_err(|e| e.to_string())
        },
        run,
    )
    .await
}

/// Turns a non-HTTP function's result into the host's answer, following the outcome table
/// in `docs/outcomes.md`.
async fn answer<O: Serialize>(ctx: &Context, result: Result<O, FunctionError>) -> Response {
    let error = match result {
        Ok(output) => {
            let body = InvocationResponse::new().return_value(json!(output));
            return (StatusCode::OK, axum::Json(body)).into_response();
        }
        Err(error) => error,
    };
    match classify(&error) {
        Disposition::Retry { after } => {
            // The host reads a non-2xx answer's status and drops its body, `Logs`
            // included: this line on stdout (captured by the host into the function's
            // log, within the invocation's span) is where the failure is seen.
            tracing::warn!(
                %error,
                retry_after_s = after.map(|d| d.as_secs()),
                "invocation failed; the trigger will deliver it again"
            );
            let body = InvocationResponse::new().log(format!("retryable failure: {error}"));
            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
        }
        Disposition::Permanent { code } => {
            tracing::error!(%error, code, "invocation failed permanently; completing it");
            let reason = format!("{code}: {error}");
            match ctx
                .audit(
                    Action::InvocationFailed,
                    AuditObject::default(),
                    Outcome::Failed,
                    Some(&reason),
                )
                .await
            {
                Ok(()) => {
                    let body = InvocationResponse::new()
                        .log(format!(
                            "permanent failure ({code}), recorded in the audit log"
                        ))
                        .return_value(json!({ "failed": code }));
                    (StatusCode::OK, axum::Json(body)).into_response()
                }
                Err(audit_error) => {
                    // Completing without the record would lose the failure: fail instead, so
                    // the delivery is retried once the audit log is reachable again.
                    tracing::error!(%audit_error, "cannot record a permanent failure; failing the invocation");
                    let body = InvocationResponse::new()
                        .log("permanent failure could not be recorded; retrying");
                    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
                }
            }
        }
    }
}

async fn key_vault_events_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    trigger(
        &state,
        key_vault_events::NAME,
        &headers,
        &body,
        |request| {
            let value = request
                .binding_value(key_vault_events::BINDING)
                .map_err(|e| e.to_string())?;
            KeyVaultEvent::parse_all(&value).map_err(|e| e.to_string())
        },
        |ctx, events| async move { key_vault_events::run(&ctx, events).await },
    )
    .await
}

async fn expiry_sweep_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let vaults = state.vaults.clone();
    timer_route(
        &state,
        expiry_sweep::NAME,
        expiry_sweep::BINDING,
        &headers,
        &body,
        |ctx, timer| async move { expiry_sweep::run(&ctx, timer, &vaults).await },
    )
    .await
}

async fn rotation_worker_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    trigger(
        &state,
        rotation_worker::NAME,
        &headers,
        &body,
        |request| {
            let job = request
                .binding_value(rotation_worker::BINDING)
                .map_err(|e| e.to_string())
                .and_then(|job| Delivery::decode(&job).map_err(|e| e.to_string()))?;
            let message =
                ServiceBusMessage::from_metadata(request.metadata()).map_err(|e| e.to_string())?;
            Ok((job, message))
        },
        |ctx, (job, message)| async move { rotation_worker::run(&ctx, job, message).await },
    )
    .await
}

async fn discovery_sweep_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    timer_route(
        &state,
        discovery_sweep::NAME,
        discovery_sweep::BINDING,
        &headers,
        &body,
        |ctx, timer| async move { discovery_sweep::run(&ctx, timer).await },
    )
    .await
}

async fn alert_sweep_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    timer_route(
        &state,
        alert_sweep::NAME,
        alert_sweep::BINDING,
        &headers,
        &body,
        |ctx, timer| async move { alert_sweep::run(&ctx, timer).await },
    )
    .await
}

async fn evidence_export_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    timer_route(
        &state,
        evidence_export::NAME,
        evidence_export::BINDING,
        &headers,
        &body,
        |ctx, timer| async move { evidence_export::run(&ctx, timer).await },
    )
    .await
}

async fn discovery_worker_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    trigger(
        &state,
        discovery_worker::NAME,
        &headers,
        &body,
        |request| {
            let job = request
                .binding_value(discovery_worker::BINDING)
                .map_err(|e| e.to_string())?;
            let message =
                ServiceBusMessage::from_metadata(request.metadata()).map_err(|e| e.to_string())?;
            Ok((discovery_worker::body(&job), message))
        },
        |ctx, (job, message)| async move { discovery_worker::run(&ctx, job, message).await },
    )
    .await
}

async fn secret_endpoint_route(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    tls: Option<Extension<ConnectInfo<TlsPeer>>>,
    headers: HeaderMap,
) -> Response {
    let ctx = context(&state, secret_endpoint::NAME, &headers);
    // A segment that does not decode (`%FF`), or no segment at all, is refused by the
    // endpoint like any other invalid name: audited, with the JSON error body. The empty
    // string is never a valid name.
    let name = name.map(|Path(name)| name).unwrap_or_default();
    let tls = tls.map(|Extension(ConnectInfo(peer))| peer);
    let mut header_values = headers.get_all(ARR_CLIENT_CERT_HEADER).iter();
    let header = match (header_values.next(), header_values.next()) {
        (None, _) => None,
        // A value with bytes outside visible ASCII cannot be base64; U+FFFD makes it
        // fail as such rather than pass as an empty header.
        (Some(value), None) => Some(ArrHeader::Once(value.to_str().unwrap_or("\u{FFFD}"))),
        (Some(_), Some(_)) => Some(ArrHeader::Repeated),
    };
    let presented = match (&tls, header) {
        (Some(_), Some(_)) => Presented::Both,
        (Some(peer), None) => Presented::PeerChain(&peer.chain),
        (None, Some(ArrHeader::Once(value))) => Presented::ArrHeader(value),
        (None, Some(ArrHeader::Repeated)) => Presented::RepeatedArrHeader,
        (None, None) => Presented::Nothing,
    };
    let source_address = match &tls {
        Some(peer) => Some(peer.address.ip()),
        None if state.services.endpoint.policies().trusts_arr_header() => {
            forwarded_client(&headers)
        }
        None => None,
    };
    let request = EndpointRequest {
        name: &name,
        presented,
        source_address,
    };
    match secret_endpoint::run(&ctx, request).await {
        Ok(delivered) => {
            let body = json!({
                "name": delivered.name.to_string(),
                "value": delivered.value.expose(),
                "version": delivered.version,
                "contentType": delivered.content_type,
                "expiresOn": delivered.expires_on,
            });
            no_store((StatusCode::OK, axum::Json(body)).into_response())
        }
        Err(EndpointError::Refused(refusal)) => {
            error_response(ErrorAnswer::refused(refusal), &ctx.invocation_id)
        }
        Err(EndpointError::Failed(error)) => {
            tracing::error!(%error, "secret endpoint failed");
            let answer = match classify(&error) {
                Disposition::Retry { after } => ErrorAnswer::refused(Refusal::Unavailable {
                    retry_after: after.map(secret_endpoint::retry_after_seconds),
                }),
                Disposition::Permanent { .. } => ErrorAnswer::INTERNAL,
            };
            error_response(answer, &ctx.invocation_id)
        }
    }
}

/// How often the request carried `X-ARR-ClientCert`.
enum ArrHeader<'a> {
    Once(&'a str),
    Repeated,
}

/// The client address App Service's front end reported: the last `X-Forwarded-For`
/// entry, the one the front end itself appended (earlier entries come from the client
/// and prove nothing). App Service writes it as `address:port`.
fn forwarded_client(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers
        .get_all(FORWARDED_FOR_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()?
        .trim();
    last.parse::<IpAddr>()
        .ok()
        .or_else(|| last.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The error body: a stable code, a short message and the request id under which the full
/// diagnostics were logged. Never headers, URIs or backend messages.
fn error_response(answer: ErrorAnswer, request_id: &str) -> Response {
    let body = json!({ "error": answer.code, "message": answer.message, "requestId": request_id });
    let mut response = (answer.status, axum::Json(body)).into_response();
    if let Some(seconds) = answer.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    no_store(response)
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn unknown_route(headers: HeaderMap) -> Response {
    error_response(ErrorAnswer::UNKNOWN_ROUTE, &invocation_id(&headers))
}
