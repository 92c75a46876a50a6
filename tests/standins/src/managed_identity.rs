//! A stand-in for App Service's (and Azure Functions') managed identity endpoint, as the
//! platform exposes it to the app: `IDENTITY_ENDPOINT` is a plain-HTTP URL on loopback and
//! `IDENTITY_HEADER` a secret the app sends back in `X-IDENTITY-HEADER` ("How to use
//! managed identities for App Service and Azure Functions", REST protocol, api-version
//! 2019-08-01).
//!
//! `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource={resource}` with at most one of
//! `client_id`, `principal_id` or `mi_res_id` (a user-assigned identity; none means the
//! system-assigned one) answers `access_token`, `expires_on` (seconds since the epoch, as a
//! string), `resource`, `token_type` and `client_id`. An identity that is not assigned to
//! the app is refused with 400, as the platform does. Tests can make the endpoint fail the
//! way a restarting or overloaded platform does: 5xx with or without `Retry-After`, or a
//! dropped connection.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceExt;
use url::Url;
use uuid::Uuid;

/// The only api-version the App Service protocol's current form accepts.
pub const API_VERSION: &str = "2019-08-01";
/// The header the app sends `IDENTITY_HEADER`'s value in.
pub const SECRET_HEADER: &str = "x-identity-header";
/// Tokens last a day, as the platform's do.
const TOKEN_SECONDS: i64 = 24 * 60 * 60;

/// How the endpoint fails the next request (one fault per request, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityFault {
    /// Answer `status` (5xx, 429) with the platform's error body, and `Retry-After:
    /// {seconds}` when given.
    Status {
        status: u16,
        retry_after_seconds: Option<u64>,
    },
    /// Close the connection without answering, as a restarting platform does.
    DropConnection,
}

/// One request the endpoint received: its query and whether the secret header matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRequest {
    pub query: Vec<(String, String)>,
    pub secret_header_matched: bool,
    pub status: u16,
}

impl IdentityRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct IdentityState {
    /// User-assigned identities: client id and principal (object) id.
    user_assigned: Vec<(Uuid, Uuid)>,
    /// The system-assigned identity's ids, when the app has one.
    system_assigned: Option<(Uuid, Uuid)>,
    faults: VecDeque<IdentityFault>,
    /// Faults repeated for every request until cleared.
    always: Option<IdentityFault>,
    requests: Vec<IdentityRequest>,
}

#[derive(Debug)]
struct Inner {
    secret: String,
    state: Mutex<IdentityState>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, IdentityState> {
        self.state
            .lock()
            .expect("the identity endpoint's lock is never held across a panic")
    }
}

/// The endpoint, running on `127.0.0.1`. Dropping it stops it.
#[derive(Debug)]
pub struct ManagedIdentityStandin {
    inner: Arc<Inner>,
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Drop for ManagedIdentityStandin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Marks a response whose connection is closed instead of answered.
#[derive(Debug, Clone, Copy)]
struct Dropped;

impl ManagedIdentityStandin {
    /// Starts the endpoint on an ephemeral loopback port with a fresh secret and no
    /// identity assigned.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            secret: Uuid::new_v4().simple().to_string(),
            state: Mutex::new(IdentityState::default()),
        });
        let router = Router::new()
            .route("/msi/token", axum::routing::get(token))
            .with_state(inner.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let router = router.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request: http::Request<Incoming>| {
                            let router = router.clone();
                            async move {
                                let response = match router.oneshot(request.map(Body::new)).await {
                                    Ok(response) => response,
                                    Err(infallible) => match infallible {},
                                };
                                if response.extensions().get::<Dropped>().is_some() {
                                    return Err(std::io::Error::other("dropped by a fault"));
                                }
                                Ok::<_, std::io::Error>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            inner,
            addr,
            accept,
        })
    }

    /// `IDENTITY_ENDPOINT`: `http://127.0.0.1:{port}/msi/token`.
    pub fn endpoint(&self) -> Url {
        Url::parse(&format!("http://{}/msi/token", self.addr))
            .expect("a socket address makes a valid URL")
    }

    /// `IDENTITY_HEADER`: the secret the app must send back.
    pub fn identity_header(&self) -> &str {
        &self.inner.secret
    }

    /// Assigns a user-assigned identity; returns its client id.
    pub fn assign_user_identity(&self) -> Uuid {
        let client_id = Uuid::new_v4();
        self.inner
            .lock()
            .user_assigned
            .push((client_id, Uuid::new_v4()));
        client_id
    }

    /// Gives the app a system-assigned identity.
    pub fn assign_system_identity(&self) {
        self.inner.lock().system_assigned = Some((Uuid::new_v4(), Uuid::new_v4()));
    }

    /// Queues a fault for the next request.
    pub fn fail_next(&self, fault: IdentityFault) {
        self.inner.lock().faults.push_back(fault);
    }

    /// Fails every request with `fault` until [`Self::clear_faults`].
    pub fn fail_always(&self, fault: IdentityFault) {
        self.inner.lock().always = Some(fault);
    }

    pub fn clear_faults(&self) {
        let mut state = self.inner.lock();
        state.faults.clear();
        state.always = None;
    }

    pub fn requests(&self) -> Vec<IdentityRequest> {
        self.inner.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.inner.lock().requests.clear();
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "statusCode": status.as_u16(), "message": message })),
    )
        .into_response()
}

async fn token(
    State(inner): State<Arc<Inner>>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let matched = headers
        .get(SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == inner.secret);
    let response = answer(&inner, &query, matched);
    let status = if response.extensions().get::<Dropped>().is_some() {
        0
    } else {
        response.status().as_u16()
    };
    inner.lock().requests.push(IdentityRequest {
        query,
        secret_header_matched: matched,
        status,
    });
    response
}

fn answer(inner: &Inner, query: &[(String, String)], matched: bool) -> Response {
    let fault = {
        let mut state = inner.lock();
        state.faults.pop_front().or(state.always)
    };
    match fault {
        Some(IdentityFault::DropConnection) => {
            let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            response.extensions_mut().insert(Dropped);
            return response;
        }
        Some(IdentityFault::Status {
            status,
            retry_after_seconds,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = error(status, "An unexpected error occurred.");
            if let Some(seconds) = retry_after_seconds {
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
            }
            return response;
        }
        None => {}
    }
    if !matched {
        return error(
            StatusCode::UNAUTHORIZED,
            "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.",
        );
    }
    let mut params: HashMap<&str, &str> = HashMap::new();
    for (name, value) in query {
        if params.insert(name.as_str(), value.as_str()).is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("The query parameter '{name}' is given twice."),
            );
        }
    }
    if let Some(unknown) = params.keys().find(|n| {
        !matches!(
            **n,
            "api-version" | "resource" | "client_id" | "principal_id" | "mi_res_id"
        )
    }) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("The query parameter '{unknown}' is not supported."),
        );
    }
    if params.get("api-version") != Some(&API_VERSION) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("The api-version must be {API_VERSION}."),
        );
    }
    let Some(resource) = params.get("resource").filter(|r| !r.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "The resource parameter is required.",
        );
    };
    if Url::parse(resource).is_err() {
        return error(StatusCode::BAD_REQUEST, "The resource must be a URI.");
    }
    let selectors: Vec<(&str, &str)> = ["client_id", "principal_id", "mi_res_id"]
        .into_iter()
        .filter_map(|n| params.get(n).map(|v| (n, *v)))
        .collect();
    let state = inner.lock();
    let identity = match selectors.as_slice() {
        [] => state.system_assigned,
        [("client_id", id)] => state
            .user_assigned
            .iter()
            .find(|(client, _)| Uuid::parse_str(id).is_ok_and(|id| id == *client))
            .copied(),
        [("principal_id", id)] => state
            .user_assigned
            .iter()
            .find(|(_, principal)| Uuid::parse_str(id).is_ok_and(|id| id == *principal))
            .copied(),
        [("mi_res_id", _)] => None,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "Only one of client_id, principal_id and mi_res_id may be given.",
            );
        }
    };
    drop(state);
    let Some((client_id, _)) = identity else {
        return error(
            StatusCode::BAD_REQUEST,
            "No managed identity found for the specified ClientId/ResourceId/PrincipalId.",
        );
    };
    let expires_on = Utc::now().timestamp() + TOKEN_SECONDS;
    axum::Json(json!({
        "access_token": format!("mi.{}", Uuid::new_v4().simple()),
        "expires_on": expires_on.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": client_id,
    }))
    .into_response()
}
