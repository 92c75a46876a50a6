//! The Azure Resource Manager stand-in: `GET` of an App Service site
//! (`/subscriptions/{id}/resourceGroups/{group}/providers/Microsoft.Web/sites/{name}`), as
//! an identity holding Reader on the site reads it. Strict as Resource Manager is: a bearer
//! token for the Resource Manager audience, an `api-version` the `Microsoft.Web` provider
//! publishes, the `Microsoft.Web/sites/read` permission, and Resource Manager's error
//! bodies (`{"error":{"code","message"}}`) for each refusal. The site's body follows the
//! `GetWebApp` example of `Microsoft.Web` 2024-04-01 (`tests/fixtures/resource-manager`).

use std::collections::BTreeMap;
use std::sync::{Arc, MutexGuard};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde_json::{Value, json};
use url::Url;
use uuid::Uuid;

use crate::Shared;
use crate::auth::{Audience, BearerRefusal};

mod catalog;

pub use catalog::{SUBSCRIPTIONS_API_VERSIONS, VAULTS_API_VERSIONS, VAULTS_READ, VaultProperties};

/// Stable `Microsoft.Web` API versions (Azure/azure-rest-api-specs,
/// `specification/web/resource-manager/Microsoft.Web/stable/`) the stand-in answers;
/// Resource Manager refuses any version the provider does not register.
pub const SITES_API_VERSIONS: [&str; 2] = ["2024-04-01", "2024-11-01"];

/// The action Reader grants that reading a site needs.
pub const SITES_READ: &str = "Microsoft.Web/sites/read";

/// How a site's front end treats client certificates (`clientCertEnabled`,
/// `clientCertMode`, `clientCertExclusionPaths`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCerts {
    pub enabled: bool,
    /// `Required`, `Optional` or `OptionalInteractiveUser`.
    pub mode: String,
    /// Comma-separated path prefixes; `None` leaves the property out, as for a site that
    /// never set it.
    pub exclusion_paths: Option<String>,
}

impl ClientCerts {
    /// Certificates required on every path.
    pub fn required() -> Self {
        Self::mode("Required")
    }

    /// Certificates enabled in `mode`, no exclusion path.
    pub fn mode(mode: &str) -> Self {
        Self {
            enabled: true,
            mode: mode.to_owned(),
            exclusion_paths: None,
        }
    }

    pub fn excluding(mut self, paths: &str) -> Self {
        self.exclusion_paths = Some(paths.to_owned());
        self
    }
}

/// A site the stand-in knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteId {
    pub subscription: Uuid,
    pub resource_group: String,
    pub name: String,
}

impl SiteId {
    /// The site's resource id, `/subscriptions/.../providers/Microsoft.Web/sites/{name}`.
    pub fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{}",
            self.subscription, self.resource_group, self.name
        )
    }

    /// `WEBSITE_OWNER_NAME` as the platform sets it on this site:
    /// `{subscriptionId}+{resourceGroup}-{region}webspace`.
    pub fn owner_name(&self) -> String {
        format!(
            "{}+{}-EastUSwebspace",
            self.subscription, self.resource_group
        )
    }
}

#[derive(Debug, Default)]
pub(crate) struct Sites {
    /// By resource id, lower-cased: Resource Manager ids are case-insensitive.
    sites: BTreeMap<String, (SiteId, ClientCerts)>,
    /// Subscriptions and vaults, for discovery's lists.
    catalog: catalog::Catalog,
}

/// The Resource Manager stand-in, for seeding and changing sites.
pub struct ResourceManagerStandin<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) url: &'a Url,
}

impl ResourceManagerStandin<'_> {
    /// `https://127.0.0.1:{port}/`, standing for `https://management.azure.com/`.
    pub fn url(&self) -> &Url {
        self.url
    }

    /// Seeds a site named `name` in a fresh subscription's `rg-keyturn`.
    pub fn seed_site(&self, name: &str, certs: ClientCerts) -> SiteId {
        let id = SiteId {
            subscription: Uuid::new_v4(),
            resource_group: "rg-keyturn".to_owned(),
            name: name.to_owned(),
        };
        self.lock()
            .sites
            .insert(id.resource_id().to_ascii_lowercase(), (id.clone(), certs));
        id
    }

    /// Changes a seeded site's client-certificate settings, as a portal edit would.
    pub fn set_client_certs(&self, site: &SiteId, certs: ClientCerts) {
        let mut sites = self.lock();
        let entry = sites
            .sites
            .get_mut(&site.resource_id().to_ascii_lowercase())
            .expect("the site was seeded");
        entry.1 = certs;
    }

    fn lock(&self) -> MutexGuard<'_, Sites> {
        self.shared.sites()
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

/// An answer in Resource Manager's error shape.
#[derive(Debug)]
struct ArmError {
    status: StatusCode,
    code: &'static str,
    message: String,
    www_authenticate: Option<&'static str>,
}

impl ArmError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            www_authenticate: None,
        }
    }
}

impl IntoResponse for ArmError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            "x-ms-failure-cause",
            HeaderValue::from_static(if self.status == StatusCode::FORBIDDEN {
                "gateway"
            } else {
                "service"
            }),
        );
        if let Some(challenge) = self.www_authenticate {
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

pub(crate) fn fault_response(status: StatusCode) -> Response {
    let (code, message) = match status {
        StatusCode::FORBIDDEN => (
            "AuthorizationFailed",
            "The client does not have authorization to perform action 'Microsoft.Web/sites/read' over the scope or the scope is invalid. If access was recently granted, please refresh your credentials.",
        ),
        StatusCode::TOO_MANY_REQUESTS => (
            "TooManyRequests",
            "The request is being throttled as the limit has been reached for operation type - Read.",
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "ServiceUnavailable",
            "The service is temporarily unavailable.",
        ),
        _ => (
            "InternalServerError",
            "Encountered internal server error. Diagnostic information: timestamp '', subscription id '', tracking id '', request correlation id ''.",
        ),
    };
    ArmError::new(status, code, message).into_response()
}

const CHALLENGE: &str = "Bearer authorization_uri=\"https://login.microsoftonline.com/\", error=\"invalid_token\", error_description=\"The authentication failed because of missing 'Authorization' header.\"";

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match handle(&shared, &method, &uri, &headers) {
        Ok(body) => (StatusCode::OK, axum::Json(body)).into_response(),
        Err(error) => error.into_response(),
    }
}

fn handle(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Value, ArmError> {
    let now = shared.clock.now();
    let grant = shared
        .tokens
        .check(headers, Audience::ResourceManager, now)
        .map_err(unauthorized)?;
    let api_version = query_value(uri, "api-version").ok_or_else(|| {
        ArmError::new(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    })?;
    let path = uri.path();
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    if let Some(answer) = catalog::handle(
        shared,
        &grant,
        method,
        &format!("https://{host}"),
        path,
        &query,
    ) {
        return answer;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let site = match segments.as_slice() {
        [
            subscriptions,
            subscription,
            groups,
            group,
            providers,
            namespace,
            sites,
            name,
        ] if subscriptions.eq_ignore_ascii_case("subscriptions")
            && groups.eq_ignore_ascii_case("resourceGroups")
            && providers.eq_ignore_ascii_case("providers")
            && namespace.eq_ignore_ascii_case("Microsoft.Web")
            && sites.eq_ignore_ascii_case("sites")
            && !name.is_empty() =>
        {
            (*subscription, *group, *name)
        }
        _ => {
            return Err(ArmError::new(
                StatusCode::BAD_REQUEST,
                "InvalidResourceType",
                format!("The resource type could not be found in the namespace for path '{path}'."),
            ));
        }
    };
    if !SITES_API_VERSIONS.contains(&api_version.as_str()) {
        return Err(ArmError::new(
            StatusCode::BAD_REQUEST,
            "NoRegisteredProviderFound",
            format!(
                "No registered resource provider found for location 'eastus' and API version '{api_version}' for type 'sites'. The supported api-versions are '{}'.",
                SITES_API_VERSIONS.join("', '")
            ),
        ));
    }
    let scope = path.to_owned();
    if method != Method::GET || !grant.permissions.allows(SITES_READ) {
        let action = if method == Method::GET {
            SITES_READ
        } else {
            "Microsoft.Web/sites/write"
        };
        return Err(ArmError::new(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{}' with object id '{}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                grant.app_id, grant.app_id
            ),
        ));
    }
    let (subscription, group, name) = site;
    let sites = shared.sites();
    let key = path.to_ascii_lowercase();
    let Some((id, certs)) = sites.sites.get(&key) else {
        let group_exists = sites.sites.values().any(|(id, _)| {
            id.resource_group.eq_ignore_ascii_case(group)
                && id
                    .subscription
                    .to_string()
                    .eq_ignore_ascii_case(subscription)
        });
        return Err(if group_exists {
            ArmError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                format!(
                    "The Resource 'Microsoft.Web/sites/{name}' under resource group '{group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
                ),
            )
        } else {
            ArmError::new(
                StatusCode::NOT_FOUND,
                "ResourceGroupNotFound",
                format!("Resource group '{group}' could not be found."),
            )
        });
    };
    Ok(site_body(id, certs))
}

/// A site as `GET` returns it, in the shape of the `GetWebApp` example, for a Linux
/// function app.
fn site_body(id: &SiteId, certs: &ClientCerts) -> Value {
    let host = format!("{}.azurewebsites.net", id.name);
    let mut properties = json!({
        "state": "Running",
        "hostNames": [host],
        "repositorySiteName": id.name,
        "usageState": "Normal",
        "enabled": true,
        "enabledHostNames": [host, format!("{}.scm.azurewebsites.net", id.name)],
        "availabilityState": "Normal",
        "serverFarmId": format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/serverfarms/plan-keyturn",
            id.subscription, id.resource_group
        ),
        "reserved": true,
        "isXenon": false,
        "hyperV": false,
        "lastModifiedTimeUtc": "2026-01-05T10:12:40.513Z",
        "scmSiteAlsoStopped": false,
        "clientAffinityEnabled": false,
        "clientCertEnabled": certs.enabled,
        "clientCertMode": certs.mode,
        "hostNamesDisabled": false,
        "containerSize": 1536,
        "dailyMemoryTimeQuota": 0,
        "resourceGroup": id.resource_group,
        "defaultHostName": host,
        "httpsOnly": true,
        "redundancyMode": "None",
        "storageAccountRequired": false,
        "keyVaultReferenceIdentity": "SystemAssigned",
    });
    if let Some(paths) = &certs.exclusion_paths {
        properties["clientCertExclusionPaths"] = json!(paths);
    }
    json!({
        "id": id.resource_id(),
        "name": id.name,
        "type": "Microsoft.Web/sites",
        "kind": "functionapp,linux",
        "location": "East US",
        "properties": properties,
    })
}

fn query_value(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn unauthorized(refusal: BearerRefusal) -> ArmError {
    let (code, message) = match refusal {
        BearerRefusal::Missing => (
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".to_owned(),
        ),
        BearerRefusal::NotBearer => (
            "AuthenticationFailedInvalidHeader",
            "Authentication failed. The 'Authorization' header is provided in an invalid format."
                .to_owned(),
        ),
        BearerRefusal::Unknown => (
            "InvalidAuthenticationToken",
            "The access token is invalid.".to_owned(),
        ),
        BearerRefusal::Expired => (
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.".to_owned(),
        ),
        BearerRefusal::WrongAudience { found } => (
            "InvalidAuthenticationTokenAudience",
            format!(
                "The access token has been obtained for wrong audience or resource '{found}'. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'."
            ),
        ),
    };
    ArmError {
        www_authenticate: Some(CHALLENGE),
        ..ArmError::new(StatusCode::UNAUTHORIZED, code, message)
    }
}
