//! The Microsoft Graph v1.0 stand-in: applications and their password credentials
//! (addPassword, removePassword, an app-management lifetime policy) and devices.

use std::sync::{Arc, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use http::{HeaderMap, Method, StatusCode, Uri};
use rand::Rng;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use url::Url;
use uuid::Uuid;

use crate::Shared;
use crate::auth::{Audience, BearerRefusal, Grant, Permissions};

mod listing;

pub use listing::{KeyCredentialSeed, OwnerUser, SeededServicePrincipal};

/// addPassword without an endDateTime gives a credential two years of life (Graph
/// passwordCredential documentation).
pub const DEFAULT_PASSWORD_LIFETIME_DAYS: i64 = 2 * 365;
/// Entra client secrets are 40 characters; the first three are the `hint`.
const SECRET_LENGTH: usize = 40;
const HINT_LENGTH: usize = 3;
const SECRET_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789~._-";
const GRAPH_METADATA: &str = "https://graph.microsoft.com/v1.0/$metadata";

/// Graph application permissions each operation accepts (any one suffices).
pub mod permission {
    pub const APPLICATION_READ_ALL: &str = "Application.Read.All";
    pub const APPLICATION_READWRITE_ALL: &str = "Application.ReadWrite.All";
    pub const APPLICATION_READWRITE_OWNEDBY: &str = "Application.ReadWrite.OwnedBy";
    pub const DEVICE_READ_ALL: &str = "Device.Read.All";
    pub const DIRECTORY_READ_ALL: &str = "Directory.Read.All";
    pub const POLICY_READ_ALL: &str = "Policy.Read.All";
    pub const POLICY_READ_APPLICATION_CONFIGURATION: &str = "Policy.Read.ApplicationConfiguration";
    pub const POLICY_READWRITE_APPLICATION_CONFIGURATION: &str =
        "Policy.ReadWrite.ApplicationConfiguration";
}

const READ_APPLICATIONS: [&str; 3] = [
    permission::APPLICATION_READ_ALL,
    permission::APPLICATION_READWRITE_ALL,
    permission::APPLICATION_READWRITE_OWNEDBY,
];
const WRITE_APPLICATIONS: [&str; 2] = [
    permission::APPLICATION_READWRITE_ALL,
    permission::APPLICATION_READWRITE_OWNEDBY,
];
/// `GET /policies/defaultAppManagementPolicy` and an application's
/// `appManagementPolicies` (with an application read permission).
const READ_POLICIES: [&str; 3] = [
    permission::POLICY_READ_ALL,
    permission::POLICY_READ_APPLICATION_CONFIGURATION,
    permission::POLICY_READWRITE_APPLICATION_CONFIGURATION,
];
const READ_DEVICES: [&str; 2] = [permission::DEVICE_READ_ALL, permission::DIRECTORY_READ_ALL];

#[derive(Debug, Default)]
pub(crate) struct Directory {
    applications: Vec<Application>,
    devices: Vec<Device>,
    service_principals: Vec<listing::ServicePrincipal>,
    propagation_delay: Duration,
    /// The tenant's default app management policy (`tenantAppManagementPolicy`).
    tenant_policy: AppManagementPolicy,
    /// Added to the `endDateTime` addPassword answers (and keeps), when set.
    answered_end_offset: Option<Duration>,
    /// Objects whose `/owners` pages each link to themselves (a misbehaving service).
    looping_owner_pages: Vec<Uuid>,
}

#[derive(Debug)]
struct Application {
    id: Uuid,
    app_id: Uuid,
    display_name: String,
    passwords: Vec<StoredPassword>,
    /// Key (certificate) credentials, metadata only.
    keys: Vec<listing::KeyCredentialSeed>,
    /// Users who own the application.
    owner_users: Vec<listing::OwnerUser>,
    /// Its federated identity credentials: id and name (metadata; they hold no secret).
    federated: Vec<(Uuid, String)>,
    permissions: Permissions,
    /// When it was created (`createdDateTime`).
    created: DateTime<Utc>,
    /// `AzureADMyOrg`, `AzureADMultipleOrgs`, `AzureADandPersonalMicrosoftAccount` or
    /// `PersonalMicrosoftAccount`.
    sign_in_audience: String,
    /// The app management policy assigned to it, which replaces the tenant's default.
    policy: Option<AppManagementPolicy>,
    /// The application ids whose service principals own this application: with only
    /// `Application.ReadWrite.OwnedBy`, a caller may change only applications it owns.
    owners: Vec<Uuid>,
}

#[derive(Debug)]
struct StoredPassword {
    key_id: Uuid,
    display_name: Option<String>,
    secret: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    usable_from: DateTime<Utc>,
}

/// A password credential as Graph lists it: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordInfo {
    pub key_id: Uuid,
    pub display_name: Option<String>,
    pub hint: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// A new password credential: its id and the secret, which Graph shows only once.
#[derive(Clone)]
pub struct NewPassword {
    pub key_id: Uuid,
    pub secret_text: String,
    pub end: DateTime<Utc>,
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPassword")
            .field("key_id", &self.key_id)
            .field("secret_text", &"[redacted]")
            .field("end", &self.end)
            .finish()
    }
}

/// An application seeded into the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeededApplication {
    /// The directory object id, used in `/applications/{id}`.
    pub object_id: Uuid,
    /// The application (client) id.
    pub app_id: Uuid,
}

/// An `alternativeSecurityId` of a device: Entra stores the device certificate's
/// thumbprint and public-key hash in `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlternativeSecurityId {
    pub kind: i32,
    pub identity_provider: Option<String>,
    pub key: Vec<u8>,
}

/// A device object as `GET /devices` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: Uuid,
    pub device_id: Uuid,
    pub display_name: String,
    pub account_enabled: bool,
    pub alternative_security_ids: Vec<AlternativeSecurityId>,
    pub is_compliant: Option<bool>,
    pub is_managed: Option<bool>,
    pub operating_system: Option<String>,
    pub trust_type: Option<String>,
}

impl Device {
    /// An enabled, compliant, managed device with fresh ids and no security ids.
    pub fn new(display_name: impl Into<String>) -> Self {
        Self {
            id: Uuid::new_v4(),
            device_id: Uuid::new_v4(),
            display_name: display_name.into(),
            account_enabled: true,
            alternative_security_ids: Vec::new(),
            is_compliant: Some(true),
            is_managed: Some(true),
            operating_system: Some("Linux".to_owned()),
            trust_type: Some("AzureAd".to_owned()),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "deviceId": self.device_id,
            "displayName": self.display_name,
            "accountEnabled": self.account_enabled,
            "alternativeSecurityIds": self.alternative_security_ids.iter().map(|a| json!({
                "type": a.kind,
                "identityProvider": a.identity_provider,
                "key": base64::engine::general_purpose::STANDARD.encode(&a.key),
            })).collect::<Vec<_>>(),
            "isCompliant": self.is_compliant,
            "isManaged": self.is_managed,
            "operatingSystem": self.operating_system,
            "trustType": self.trust_type,
        })
    }
}

/// Why the token stand-in refused a client secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretRefusal {
    UnknownApplication,
    InvalidSecret,
    Expired,
}

impl Directory {
    pub(crate) fn authenticate(
        &self,
        app_id: Uuid,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<Permissions, SecretRefusal> {
        let app = self
            .applications
            .iter()
            .find(|a| a.app_id == app_id)
            .ok_or(SecretRefusal::UnknownApplication)?;
        let password = app
            .passwords
            .iter()
            .find(|p| p.secret == secret)
            .ok_or(SecretRefusal::InvalidSecret)?;
        // Until a new secret has propagated, Entra answers exactly as for a wrong one.
        if now < password.usable_from {
            return Err(SecretRefusal::InvalidSecret);
        }
        if now >= password.end {
            return Err(SecretRefusal::Expired);
        }
        Ok(app.permissions.clone())
    }

    fn add_password(
        &mut self,
        object_id: Uuid,
        display_name: Option<String>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        usable_from: DateTime<Utc>,
    ) -> Option<NewPassword> {
        let app = self.applications.iter_mut().find(|a| a.id == object_id)?;
        let secret = new_secret();
        let key_id = Uuid::new_v4();
        app.passwords.push(StoredPassword {
            key_id,
            display_name,
            secret: secret.clone(),
            start,
            end,
            usable_from,
        });
        Some(NewPassword {
            key_id,
            secret_text: secret,
            end,
        })
    }
}

fn new_secret() -> String {
    let mut rng = rand::thread_rng();
    let mut secret: String = (0..HINT_LENGTH)
        .map(|_| char::from(SECRET_ALPHABET[rng.gen_range(0..62)]))
        .collect();
    secret.push_str("8Q~");
    while secret.len() < SECRET_LENGTH {
        secret.push(char::from(
            SECRET_ALPHABET[rng.gen_range(0..SECRET_ALPHABET.len())],
        ));
    }
    secret
}

/// The Graph stand-in as tests see it.
#[derive(Debug, Clone, Copy)]
pub struct GraphStandin<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) url: &'a Url,
}

impl GraphStandin<'_> {
    /// `https://127.0.0.1:{port}/`; Graph paths start with `v1.0/`.
    pub fn url(&self) -> &Url {
        self.url
    }

    pub fn seed_application(
        &self,
        display_name: impl Into<String>,
        permissions: Permissions,
    ) -> SeededApplication {
        let seeded = SeededApplication {
            object_id: Uuid::new_v4(),
            app_id: Uuid::new_v4(),
        };
        self.lock().applications.push(Application {
            id: seeded.object_id,
            app_id: seeded.app_id,
            display_name: display_name.into(),
            passwords: Vec::new(),
            keys: Vec::new(),
            owner_users: Vec::new(),
            federated: Vec::new(),
            permissions,
            created: self.shared.clock.now(),
            sign_in_audience: "AzureADMyOrg".to_owned(),
            policy: None,
            owners: Vec::new(),
        });
        seeded
    }

    /// The tenant's default app management policy's password restrictions; an empty list
    /// disables the policy (`isEnabled: false`), as in a tenant that never set one.
    pub fn set_tenant_password_restrictions(&self, restrictions: Vec<PasswordRestriction>) {
        let mut directory = self.lock();
        directory.tenant_policy.is_enabled = !restrictions.is_empty();
        directory.tenant_policy.passwords = restrictions;
    }

    /// Assigns an app management policy named `display_name` to the application; `None`
    /// removes it, and the tenant's default applies again.
    pub fn set_application_policy(
        &self,
        object_id: Uuid,
        policy: Option<(&str, Vec<PasswordRestriction>)>,
    ) {
        if let Some(app) = self
            .lock()
            .applications
            .iter_mut()
            .find(|a| a.id == object_id)
        {
            app.policy = policy.map(|(name, passwords)| AppManagementPolicy {
                id: Uuid::new_v4(),
                display_name: name.to_owned(),
                is_enabled: true,
                passwords,
            });
        }
    }

    /// The application's `signInAudience`.
    pub fn set_sign_in_audience(&self, object_id: Uuid, audience: &str) {
        if let Some(app) = self
            .lock()
            .applications
            .iter_mut()
            .find(|a| a.id == object_id)
        {
            app.sign_in_audience = audience.to_owned();
        }
    }

    /// Makes addPassword answer (and keep) an `endDateTime` `offset` away from the one
    /// requested: Graph documents its answer as the credential, so a test can tell which
    /// of the two a client stores.
    pub fn set_answered_end_offset(&self, offset: Option<std::time::Duration>) {
        self.lock().answered_end_offset =
            offset.map(|o| Duration::from_std(o).unwrap_or(Duration::MAX));
    }

    /// Makes the service principal of application `owner_app_id` an owner of the
    /// application `object_id` (Graph `POST /applications/{id}/owners/$ref`).
    pub fn add_owner(&self, object_id: Uuid, owner_app_id: Uuid) {
        if let Some(app) = self
            .lock()
            .applications
            .iter_mut()
            .find(|a| a.id == object_id)
        {
            app.owners.push(owner_app_id);
        }
    }

    /// Adds a password credential ending at `end`. With `propagated` it is usable at once,
    /// as a credential created long before the test would be; without, it waits out the
    /// propagation delay like one made through addPassword. `None` if no such application.
    pub fn add_password(
        &self,
        object_id: Uuid,
        end: DateTime<Utc>,
        propagated: bool,
    ) -> Option<NewPassword> {
        let now = self.shared.clock.now();
        let mut directory = self.lock();
        let usable_from = if propagated {
            now
        } else {
            now + directory.propagation_delay
        };
        directory.add_password(object_id, None, now, end, usable_from)
    }

    /// The application's password credentials, without secrets.
    pub fn passwords(&self, object_id: Uuid) -> Vec<PasswordInfo> {
        self.lock()
            .applications
            .iter()
            .find(|a| a.id == object_id)
            .map(|a| a.passwords.iter().map(password_info).collect())
            .unwrap_or_default()
    }

    /// How long a new secret is refused by the token endpoint (observed 4 to 18 s in
    /// Entra, no SLA). Zero by default.
    pub fn set_propagation_delay(&self, delay: std::time::Duration) {
        self.lock().propagation_delay = Duration::from_std(delay).unwrap_or(Duration::MAX);
    }

    /// The tenant default policy's `passwordLifetime` restriction (in seconds): addPassword
    /// asking for more is refused with `CredentialInvalidLifetimeAsPerAppPolicy`. `None`
    /// lifts the tenant's restrictions.
    pub fn set_max_password_lifetime(&self, max: Option<std::time::Duration>) {
        self.set_tenant_password_restrictions(
            max.map(|m| {
                PasswordRestriction::password_lifetime(&format!("PT{}S", m.as_secs()), None)
            })
            .into_iter()
            .collect(),
        );
    }

    pub fn seed_device(&self, device: Device) {
        self.lock().devices.push(device);
    }

    fn lock(&self) -> MutexGuard<'_, Directory> {
        self.shared.directory()
    }
}

/// One `passwordCredentialConfiguration` of an app management policy: a restriction on
/// the password credentials of applications created after `restrict_for_apps_created_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordRestriction {
    /// `passwordAddition`, `passwordLifetime`, `customPasswordAddition`,
    /// `symmetricKeyAddition` or `symmetricKeyLifetime`.
    pub restriction_type: String,
    /// An ISO 8601 duration for the lifetime restrictions (`P90D`).
    pub max_lifetime: Option<String>,
    pub restrict_for_apps_created_after: Option<DateTime<Utc>>,
    /// `state`: `enabled` or `disabled`.
    pub enabled: bool,
}

impl PasswordRestriction {
    /// Blocks adding passwords to applications created after `after`.
    pub fn password_addition(after: Option<DateTime<Utc>>) -> Self {
        Self {
            restriction_type: "passwordAddition".to_owned(),
            max_lifetime: None,
            restrict_for_apps_created_after: after,
            enabled: true,
        }
    }

    /// Limits new passwords to `max_lifetime` (ISO 8601, such as `P30D`).
    pub fn password_lifetime(max_lifetime: &str, after: Option<DateTime<Utc>>) -> Self {
        Self {
            restriction_type: "passwordLifetime".to_owned(),
            max_lifetime: Some(max_lifetime.to_owned()),
            restrict_for_apps_created_after: after,
            enabled: true,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "restrictionType": self.restriction_type,
            "state": if self.enabled { "enabled" } else { "disabled" },
            "maxLifetime": self.max_lifetime,
            "restrictForAppsCreatedAfterDateTime": self.restrict_for_apps_created_after.map(graph_time),
        })
    }
}

/// An app management policy: the tenant's default or one assigned to an application.
#[derive(Debug, Clone, Default)]
struct AppManagementPolicy {
    id: Uuid,
    display_name: String,
    is_enabled: bool,
    passwords: Vec<PasswordRestriction>,
}

/// Applications that allow personal Microsoft accounts hold at most this many passwords.
pub const PERSONAL_ACCOUNT_MAX_PASSWORDS: usize = 2;

/// What Graph answers to a `maxLifetime`: the stand-in reads days, hours, minutes and
/// seconds, years as 365 days and months as 30.
fn lifetime(text: &str) -> Option<Duration> {
    let rest = text.strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut total = Duration::zero();
    for (part, units) in [
        (
            date,
            &[
                ('Y', 365 * 86_400),
                ('M', 30 * 86_400),
                ('W', 7 * 86_400),
                ('D', 86_400),
            ][..],
        ),
        (time, &[('H', 3600), ('M', 60), ('S', 1)][..]),
    ] {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
            } else {
                let seconds = units.iter().find(|(u, _)| *u == c)?.1;
                total += Duration::seconds(number.parse::<i64>().ok()? * seconds);
                number.clear();
            }
        }
        if !number.is_empty() {
            return None;
        }
    }
    Some(total)
}

fn password_info(p: &StoredPassword) -> PasswordInfo {
    PasswordInfo {
        key_id: p.key_id,
        display_name: p.display_name.clone(),
        hint: p.secret.chars().take(HINT_LENGTH).collect(),
        start: p.start,
        end: p.end,
    }
}

fn graph_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn password_json(info: &PasswordInfo, secret_text: Option<&str>) -> Value {
    json!({
        "customKeyIdentifier": null,
        "displayName": info.display_name,
        "endDateTime": graph_time(info.end),
        "hint": info.hint,
        "keyId": info.key_id,
        "secretText": secret_text,
        "startDateTime": graph_time(info.start),
    })
}

fn application_json(app: &Application) -> Value {
    json!({
        "id": app.id,
        "appId": app.app_id,
        "displayName": app.display_name,
        "createdDateTime": graph_time(app.created),
        "signInAudience": app.sign_in_audience,
        "passwordCredentials": app.passwords.iter().map(|p| password_json(&password_info(p), None)).collect::<Vec<_>>(),
    })
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

/// An answer in Graph's error shape.
#[derive(Debug)]
struct GraphError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl GraphError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": graph_time(Utc::now()),
                    "request-id": Uuid::new_v4(),
                    "client-request-id": Uuid::new_v4(),
                }
            }
        });
        (self.status, axum::Json(body)).into_response()
    }
}

pub(crate) fn fault_response(status: StatusCode) -> Response {
    let (code, message) = match status {
        StatusCode::TOO_MANY_REQUESTS => (
            "TooManyRequests",
            "Too many requests have been sent. Retry after the interval in the Retry-After header.",
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "serviceNotAvailable",
            "The service is temporarily unavailable.",
        ),
        _ => ("generalException", "An unexpected error occurred."),
    };
    GraphError::new(status, code, message).into_response()
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
) -> Result<Response, GraphError> {
    let now = shared.clock.now();
    let grant = shared
        .tokens
        .check(headers, Audience::Graph, now)
        .map_err(unauthorized)?;
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let base = format!("https://{host}");
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let is_list = method == Method::GET
        && matches!(
            segments.as_slice(),
            ["v1.0", "applications"]
                | ["v1.0", "servicePrincipals"]
                | ["v1.0", "applications" | "servicePrincipals", _, "owners"]
        );
    let mut filter = None;
    let mut select: Option<Vec<&str>> = None;
    for (name, value) in &query {
        match name.as_str() {
            "$filter" => filter = Some(value.as_str()),
            "$select" => select = Some(value.split(',').map(str::trim).collect()),
            "$top" | "$skiptoken" | "$expand" if is_list => {}
            other if other.starts_with('$') => {
                return Err(GraphError::bad_request(
                    "Request_BadRequest",
                    format!("Unrecognized query argument specified: '{other}'."),
                ));
            }
            _ => {}
        }
    }
    match (method, segments.as_slice()) {
        (&Method::GET, ["v1.0", "applications"]) => {
            require(&grant, &READ_APPLICATIONS)?;
            listing::list(shared, listing::Collection::Applications, &base, &query)
        }
        (&Method::GET, ["v1.0", "servicePrincipals"]) => {
            require(&grant, &READ_APPLICATIONS)?;
            listing::list(
                shared,
                listing::Collection::ServicePrincipals,
                &base,
                &query,
            )
        }
        (&Method::GET, ["v1.0", "applications", id, "owners"]) => {
            require(&grant, &READ_APPLICATIONS)?;
            listing::owners(shared, listing::Collection::Applications, &base, id, &query)
        }
        (&Method::GET, ["v1.0", "servicePrincipals", id, "owners"]) => {
            require(&grant, &READ_APPLICATIONS)?;
            listing::owners(
                shared,
                listing::Collection::ServicePrincipals,
                &base,
                id,
                &query,
            )
        }
        (&Method::GET, ["v1.0", "applications", id]) => {
            require(&grant, &READ_APPLICATIONS)?;
            get_application(shared, id, select.as_deref())
        }
        (&Method::GET, ["v1.0", "applications", id, "appManagementPolicies"]) => {
            require(&grant, &READ_APPLICATIONS)?;
            require(&grant, &READ_POLICIES)?;
            application_policies(shared, id)
        }
        (&Method::GET, ["v1.0", "policies", "defaultAppManagementPolicy"]) => {
            require(&grant, &READ_POLICIES)?;
            Ok(tenant_policy(shared))
        }
        (&Method::POST, ["v1.0", "applications", id, "addPassword"]) => {
            require(&grant, &WRITE_APPLICATIONS)?;
            require_ownership(shared, &grant, id)?;
            add_password(shared, id, body, now)
        }
        (&Method::POST, ["v1.0", "applications", id, "removePassword"]) => {
            require(&grant, &WRITE_APPLICATIONS)?;
            require_ownership(shared, &grant, id)?;
            remove_password(shared, id, body)
        }
        (&Method::POST, ["v1.0", "users", user, "sendMail"]) => {
            require(&grant, &[crate::mail::MAIL_SEND])?;
            crate::mail::send_mail(shared, &grant, user, headers, body)
                .map_err(|r| GraphError::new(r.status, r.code, r.message))
        }
        (&Method::GET, ["v1.0", "devices"]) => {
            require(&grant, &READ_DEVICES)?;
            list_devices(shared, filter, select.as_deref())
        }
        _ => Err(GraphError::bad_request(
            "BadRequest",
            format!(
                "Resource not found for the segment '{}'.",
                segments.last().unwrap_or(&"")
            ),
        )),
    }
}

fn unauthorized(refusal: BearerRefusal) -> GraphError {
    let message = match refusal {
        BearerRefusal::Missing | BearerRefusal::NotBearer => "Access token is empty.".to_owned(),
        BearerRefusal::Unknown => "Access token validation failure.".to_owned(),
        BearerRefusal::Expired => "Lifetime validation failed, the token is expired.".to_owned(),
        BearerRefusal::WrongAudience { .. } => {
            "Access token validation failure. Invalid audience.".to_owned()
        }
    };
    GraphError::new(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        message,
    )
}

fn require(grant: &Grant, any_of: &[&str]) -> Result<(), GraphError> {
    if grant.permissions.allows_any(any_of) {
        Ok(())
    } else {
        Err(GraphError::new(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ))
    }
}

/// `Application.ReadWrite.OwnedBy` writes only to applications the caller owns; Graph
/// refuses any other with 403 `Authorization_RequestDenied`, as for a missing permission.
/// `Application.ReadWrite.All` writes to any. An unknown application is left to the
/// operation, which answers 404.
fn require_ownership(shared: &Shared, grant: &Grant, id: &str) -> Result<(), GraphError> {
    if grant
        .permissions
        .allows(permission::APPLICATION_READWRITE_ALL)
    {
        return Ok(());
    }
    let Ok(object_id) = Uuid::try_parse(id) else {
        return Ok(());
    };
    let directory = shared.directory();
    match directory.applications.iter().find(|a| a.id == object_id) {
        Some(app) if !app.owners.contains(&grant.app_id) => Err(GraphError::new(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )),
        _ => Ok(()),
    }
}

/// Parses `{property} eq '{value}'`, the one filter form the stand-in serves, and
/// refuses everything else as Graph does.
fn parse_filter(filter: &str, property: &str, resource: &str) -> Result<String, GraphError> {
    let invalid =
        || GraphError::bad_request("BadRequest", format!("Invalid filter clause: {filter}"));
    let mut parts = filter.splitn(3, ' ');
    let (Some(name), Some(op), Some(literal)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    if !name.bytes().all(|b| b.is_ascii_alphanumeric()) || name.is_empty() {
        return Err(invalid());
    }
    if name != property {
        return Err(GraphError::bad_request(
            "Request_UnsupportedQuery",
            format!(
                "Unsupported or invalid query filter clause specified for property '{name}' of resource '{resource}'."
            ),
        ));
    }
    if op.is_empty() || !op.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid());
    }
    if op != "eq" {
        return Err(GraphError::bad_request(
            "Request_UnsupportedQuery",
            format!(
                "Unsupported query filter operator '{op}' for property '{name}' of resource '{resource}'."
            ),
        ));
    }
    let inner = literal
        .strip_prefix('\'')
        .and_then(|l| l.strip_suffix('\''))
        .filter(|i| !i.contains('\''))
        .ok_or_else(invalid)?;
    Ok(inner.to_owned())
}

fn parse_object_id(id: &str) -> Result<Uuid, GraphError> {
    Uuid::try_parse(id).map_err(|_| {
        GraphError::bad_request(
            "Request_BadRequest",
            format!("Invalid object identifier '{id}'."),
        )
    })
}

fn not_found(id: &str) -> GraphError {
    GraphError::new(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

/// Keeps only the `$select`ed properties of an object (and `id`, which Graph always
/// returns), as Graph answers a query with `$select`.
fn project(object: &mut Value, select: Option<&[&str]>) {
    if let (Some(select), Value::Object(map)) = (select, object) {
        map.retain(|key, _| {
            key == "id" || key.starts_with("@odata") || select.contains(&key.as_str())
        });
    }
}

fn get_application(
    shared: &Shared,
    id: &str,
    select: Option<&[&str]>,
) -> Result<Response, GraphError> {
    let object_id = parse_object_id(id)?;
    let directory = shared.directory();
    let app = directory
        .applications
        .iter()
        .find(|a| a.id == object_id)
        .ok_or_else(|| not_found(id))?;
    let mut body = application_json(app);
    project(&mut body, select);
    body["@odata.context"] = json!(format!("{GRAPH_METADATA}#applications/$entity"));
    Ok(axum::Json(body).into_response())
}

/// Graph's answer to a body it cannot bind: the property name for an unknown one,
/// otherwise the generic payload message. Values are never echoed.
fn body_error(error: &serde_json::Error) -> GraphError {
    let text = error.to_string();
    if let Some(rest) = text.strip_prefix("unknown field `")
        && let Some((name, _)) = rest.split_once('`')
    {
        return GraphError::bad_request(
            "Request_BadRequest",
            format!(
                "Property '{name}' does not exist as a declared property or extension property."
            ),
        );
    }
    GraphError::bad_request(
        "BadRequest",
        "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddPasswordBody {
    #[serde(rename = "passwordCredential")]
    password_credential: Option<PasswordCredentialBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordCredentialBody {
    #[serde(rename = "displayName")]
    display_name: Option<String>,
    #[serde(rename = "endDateTime")]
    end_date_time: Option<String>,
    #[serde(rename = "startDateTime")]
    start_date_time: Option<String>,
    // Declared but server-generated; Graph ignores what a client sends.
    #[serde(rename = "keyId")]
    _key_id: Option<IgnoredAny>,
    #[serde(rename = "secretText")]
    _secret_text: Option<IgnoredAny>,
    #[serde(rename = "hint")]
    _hint: Option<IgnoredAny>,
    #[serde(rename = "customKeyIdentifier")]
    _custom_key_identifier: Option<IgnoredAny>,
}

fn parse_time(field: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, GraphError> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(t)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|_| {
                GraphError::bad_request(
                    "Request_BadRequest",
                    format!("Invalid value specified for property '{field}' of resource 'PasswordCredential'."),
                )
            })
    })
    .transpose()
}

fn add_password(
    shared: &Shared,
    id: &str,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Response, GraphError> {
    let object_id = parse_object_id(id)?;
    let request: AddPasswordBody = serde_json::from_slice(body).map_err(|e| body_error(&e))?;
    let credential = request
        .password_credential
        .unwrap_or(PasswordCredentialBody {
            display_name: None,
            end_date_time: None,
            start_date_time: None,
            _key_id: None,
            _secret_text: None,
            _hint: None,
            _custom_key_identifier: None,
        });
    let start = parse_time("startDateTime", credential.start_date_time.as_deref())?.unwrap_or(now);
    let end = parse_time("endDateTime", credential.end_date_time.as_deref())?
        .unwrap_or(start + Duration::days(DEFAULT_PASSWORD_LIFETIME_DAYS));
    if end <= start {
        return Err(GraphError::bad_request(
            "Request_BadRequest",
            "Invalid value specified for property 'endDateTime' of resource 'PasswordCredential'.",
        ));
    }
    let mut directory = shared.directory();
    let Some(app) = directory.applications.iter().find(|a| a.id == object_id) else {
        return Err(not_found(id));
    };
    for restriction in effective_restrictions(&directory, app) {
        match restriction.restriction_type.as_str() {
            "passwordAddition" => {
                return Err(GraphError::bad_request(
                    "CredentialTypeNotAllowedAsPerAppPolicy",
                    "Password credentials are not allowed as per assigned policy.",
                ));
            }
            "passwordLifetime" => {
                let max = restriction
                    .max_lifetime
                    .as_deref()
                    .and_then(lifetime)
                    .unwrap_or(Duration::MAX);
                if end - start > max {
                    return Err(GraphError::bad_request(
                        "CredentialInvalidLifetimeAsPerAppPolicy",
                        "Credential lifetime exceeds the max value allowed as per assigned policy.",
                    ));
                }
            }
            _ => {}
        }
    }
    let personal = matches!(
        app.sign_in_audience.as_str(),
        "AzureADandPersonalMicrosoftAccount" | "PersonalMicrosoftAccount"
    );
    if personal && app.passwords.len() >= PERSONAL_ACCOUNT_MAX_PASSWORDS {
        return Err(GraphError::bad_request(
            "TooManyAppPasswords",
            "The application already has the maximum number of passwords allowed for applications that support personal Microsoft accounts.",
        ));
    }
    let end = end + directory.answered_end_offset.unwrap_or_else(Duration::zero);
    let usable_from = (now + directory.propagation_delay).max(start);
    let display_name = credential.display_name;
    let created = directory
        .add_password(object_id, display_name.clone(), start, end, usable_from)
        .ok_or_else(|| not_found(id))?;
    let info = PasswordInfo {
        key_id: created.key_id,
        display_name,
        hint: created.secret_text.chars().take(HINT_LENGTH).collect(),
        start,
        end,
    };
    let mut answer = password_json(&info, Some(&created.secret_text));
    answer["@odata.context"] = json!(format!(
        "{GRAPH_METADATA}#microsoft.graph.passwordCredential"
    ));
    Ok(axum::Json(answer).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemovePasswordBody {
    #[serde(rename = "keyId")]
    key_id: Option<String>,
}

fn remove_password(shared: &Shared, id: &str, body: &[u8]) -> Result<Response, GraphError> {
    let object_id = parse_object_id(id)?;
    let request: RemovePasswordBody = serde_json::from_slice(body).map_err(|e| body_error(&e))?;
    let key_text = request.key_id.ok_or_else(|| {
        GraphError::bad_request("Request_BadRequest", "The parameter 'keyId' is required.")
    })?;
    let key_id = Uuid::try_parse(&key_text).map_err(|_| {
        GraphError::bad_request(
            "Request_BadRequest",
            format!("Invalid value specified for parameter 'keyId': '{key_text}'."),
        )
    })?;
    let mut directory = shared.directory();
    let app = directory
        .applications
        .iter_mut()
        .find(|a| a.id == object_id)
        .ok_or_else(|| not_found(id))?;
    let before = app.passwords.len();
    app.passwords.retain(|p| p.key_id != key_id);
    if app.passwords.len() == before {
        return Err(GraphError::new(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!("No password credential found with keyId '{key_id}'."),
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn policy_json(policy: &AppManagementPolicy, restrictions_field: &str) -> Value {
    let mut body = json!({
        "id": policy.id,
        "displayName": policy.display_name,
        "description": "",
        "isEnabled": policy.is_enabled,
    });
    body[restrictions_field] = json!({
        "passwordCredentials": policy.passwords.iter().map(PasswordRestriction::to_json).collect::<Vec<_>>(),
        "keyCredentials": [],
    });
    body
}

fn tenant_policy(shared: &Shared) -> Response {
    let directory = shared.directory();
    let mut policy = directory.tenant_policy.clone();
    policy.id = Uuid::nil();
    policy.display_name = "Default app management tenant policy".to_owned();
    let mut body = policy_json(&policy, "applicationRestrictions");
    body["description"] = json!(
        "Default tenant policy that enforces app management restrictions on applications and service principals. To apply policy to targeted resources, create a new policy under appManagementPolicies collection."
    );
    body["servicePrincipalRestrictions"] =
        json!({ "passwordCredentials": [], "keyCredentials": [] });
    body["@odata.context"] = json!(format!(
        "{GRAPH_METADATA}#policies/defaultAppManagementPolicy/$entity"
    ));
    axum::Json(body).into_response()
}

fn application_policies(shared: &Shared, id: &str) -> Result<Response, GraphError> {
    let object_id = parse_object_id(id)?;
    let directory = shared.directory();
    let app = directory
        .applications
        .iter()
        .find(|a| a.id == object_id)
        .ok_or_else(|| not_found(id))?;
    let value: Vec<Value> = app
        .policy
        .iter()
        .map(|policy| policy_json(policy, "restrictions"))
        .collect();
    Ok(axum::Json(json!({
        "@odata.context": format!("{GRAPH_METADATA}#policies/appManagementPolicies"),
        "value": value,
    }))
    .into_response())
}

/// The password restrictions addPassword is held to for `app`: its own policy where one
/// is assigned and enabled, else the tenant's default where enabled; only enabled ones
/// that reach an application created when it was.
fn effective_restrictions(directory: &Directory, app: &Application) -> Vec<PasswordRestriction> {
    let policy = match &app.policy {
        Some(policy) if policy.is_enabled => policy,
        Some(_) => return Vec::new(),
        None if directory.tenant_policy.is_enabled => &directory.tenant_policy,
        None => return Vec::new(),
    };
    policy
        .passwords
        .iter()
        .filter(|r| r.enabled)
        .filter(|r| {
            r.restrict_for_apps_created_after
                .is_none_or(|after| app.created > after)
        })
        .cloned()
        .collect()
}

fn list_devices(
    shared: &Shared,
    filter: Option<&str>,
    select: Option<&[&str]>,
) -> Result<Response, GraphError> {
    let wanted = filter
        .map(|f| parse_filter(f, "deviceId", "Device"))
        .transpose()?;
    let directory = shared.directory();
    let value: Vec<Value> = directory
        .devices
        .iter()
        .filter(|d| {
            wanted
                .as_deref()
                .is_none_or(|w| d.device_id.to_string().eq_ignore_ascii_case(w))
        })
        .map(Device::to_json)
        .map(|mut device| {
            project(&mut device, select);
            device
        })
        .collect();
    Ok(axum::Json(json!({
        "@odata.context": format!("{GRAPH_METADATA}#devices"),
        "value": value,
    }))
    .into_response())
}
