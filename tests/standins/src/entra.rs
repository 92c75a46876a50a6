//! The Entra ID v2 token endpoint stand-in: the client-credentials grant, checked against
//! the Graph stand-in's applications, with Entra's error bodies.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::json;
use uuid::Uuid;

use crate::Shared;
use crate::auth::TOKEN_LIFETIME_SECONDS;
use crate::graph::SecretRefusal;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

/// An answer in Entra's OAuth error shape.
struct EntraError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

impl EntraError {
    fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            code,
            description: description.into(),
        }
    }
}

impl IntoResponse for EntraError {
    fn into_response(self) -> Response {
        let now = chrono::Utc::now();
        let trace_id = Uuid::new_v4();
        let correlation_id = Uuid::new_v4();
        let timestamp = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
        let body = json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
                self.code, self.description
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        (self.status, axum::Json(body)).into_response()
    }
}

pub(crate) fn fault_response(status: StatusCode) -> Response {
    let (error, code, description) = match status {
        StatusCode::TOO_MANY_REQUESTS => (
            "temporarily_unavailable",
            50196,
            "The server terminated an operation because it encountered a client request loop.",
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        ),
        _ => ("server_error", 90000, "An internal error occurred."),
    };
    EntraError::new(status, error, code, description).into_response()
}

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&shared, &method, &uri, &headers, &body) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

fn handle(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, EntraError> {
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let tenant = match (method, segments.as_slice()) {
        (&Method::POST, [tenant, "oauth2", "v2.0", "token"]) => *tenant,
        _ => {
            return Err(EntraError::new(
                StatusCode::NOT_FOUND,
                "invalid_request",
                900561,
                "The endpoint only accepts POST requests to /{tenant}/oauth2/v2.0/token.",
            ));
        }
    };
    if !tenant.eq_ignore_ascii_case(&shared.tenant_id.to_string()) {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        ));
    }
    let form_content = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_content {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        ));
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let missing = |name: &str| {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    };
    let grant_type = field("grant_type").ok_or_else(|| missing("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let client_id = field("client_id").ok_or_else(|| missing("client_id"))?;
    let scope = field("scope").ok_or_else(|| missing("scope"))?;
    let secret = field("client_secret").ok_or_else(|| {
        EntraError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        )
    })?;
    let resource = scope.strip_suffix("/.default").ok_or_else(|| {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        )
    })?;
    let audience = shared.audience_of(resource).ok_or_else(|| {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            format!("The resource principal named {resource} was not found in the tenant named {tenant}."),
        )
    })?;
    let not_found = || {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        )
    };
    let app_id = Uuid::try_parse(client_id).map_err(|_| not_found())?;
    let now = shared.clock.now();
    let permissions = shared
        .directory()
        .authenticate(app_id, secret, now)
        .map_err(|refusal| match refusal {
            SecretRefusal::UnknownApplication => not_found(),
            SecretRefusal::InvalidSecret => EntraError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{app_id}'."),
            ),
            SecretRefusal::Expired => EntraError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000222,
                format!("The provided client secret keys for app '{app_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."),
            ),
        })?;
    let token = shared.tokens.issue_for(audience, app_id, permissions, now);
    Ok(axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_SECONDS,
        "ext_expires_in": TOKEN_LIFETIME_SECONDS,
        "access_token": token,
    }))
    .into_response())
}
