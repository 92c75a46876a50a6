//! The Key Vault stand-in: secrets and certificates over Key Vault's REST API, with its
//! challenge-based authentication, api-version check, name rules, error bodies and paging;
//! key metadata in `metadata`; EC keys that sign digests in `keys`.

mod keys;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use url::Url;

mod metadata;

pub use metadata::{CertificateSeed, KeySeed, key_permission};

use crate::auth::{Audience, BearerRefusal, Grant};
use crate::pki::{pem_bundle, self_signed_for_vault};
use crate::{Shared, json_error_detail};
use keyturn_testkit::pki::Issued;

/// The api-version values Key Vault's data plane answers; anything else is refused as
/// Key Vault refuses it. `2025-07-01` is what the 1.x Rust crates send.
pub const API_VERSIONS: [&str; 9] = [
    "2016-10-01",
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "2025-07-01",
];
const LATEST_API_VERSION: &str = "2025-07-01";

/// Key Vault caps `maxresults` at 25 and uses 25 when it is absent.
pub const MAX_PAGE_SIZE: usize = 25;
/// Key Vault object names: 1-127 characters of `0-9a-zA-Z-`.
pub const MAX_NAME_LEN: usize = 127;
/// Key Vault's secret value limit is 25 KiB ("Azure Key Vault service limits").
pub const MAX_SECRET_VALUE_BYTES: usize = 25 * 1024;
/// Key Vault allows 15 tags per object, names up to 512 and values up to 256 characters.
pub const MAX_TAGS: usize = 15;
/// See [`MAX_TAGS`].
pub const MAX_TAG_NAME_LEN: usize = 512;
/// See [`MAX_TAGS`].
pub const MAX_TAG_VALUE_LEN: usize = 256;
/// A soft-delete vault with the default 90-day retention answers with these.
const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
const RECOVERABLE_DAYS: i64 = 90;
const PEM_CONTENT_TYPE: &str = "application/x-pem-file";
const PKCS12_CONTENT_TYPE: &str = "application/x-pkcs12";

/// Permission names a token's application needs for each operation.
pub mod permission {
    pub const SECRETS_GET: &str = "secrets/get";
    pub const SECRETS_LIST: &str = "secrets/list";
    pub const SECRETS_SET: &str = "secrets/set";
    pub const SECRETS_DELETE: &str = "secrets/delete";
    pub const CERTIFICATES_GET: &str = "certificates/get";
    pub const CERTIFICATES_LIST: &str = "certificates/list";
    pub const CERTIFICATES_CREATE: &str = "certificates/create";
    /// `Microsoft.KeyVault/vaults/keys/sign/action` (`keys/get` is in
    /// [`super::key_permission`]).
    pub const KEYS_SIGN: &str = "keys/sign";
}

/// What becomes of a certificate request whose issuer is neither `Self` nor `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IssuerOutcome {
    /// The operation ends `failed` with an error, as when the issuer is not configured.
    #[default]
    Fail,
    /// The operation completes as a self-signed one would.
    Complete,
}

#[derive(Debug)]
pub(crate) struct Vault {
    secrets: BTreeMap<String, SecretEntry>,
    deleted: BTreeMap<String, (SecretEntry, DateTime<Utc>)>,
    certificates: BTreeMap<String, CertificateEntry>,
    keys: BTreeMap<String, metadata::KeyEntry>,
    /// Requests that could have returned a value; see [`metadata::reads_a_value`].
    value_reads: u64,
    /// Set when the vault is deleted: its host no longer answers, even on connections
    /// a client kept open.
    pub(crate) gone: bool,
    page_size: usize,
    polls_until_complete: u32,
    other_issuers: IssuerOutcome,
    network: Option<NetworkRefusal>,
}

/// Why Key Vault refuses a caller's network before it looks at roles: its firewall
/// (`ForbiddenByFirewall`) or public access disabled (`ForbiddenByConnection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkRefusal {
    Firewall,
    Connection,
}

impl Default for Vault {
    fn default() -> Self {
        Self {
            secrets: BTreeMap::new(),
            deleted: BTreeMap::new(),
            certificates: BTreeMap::new(),
            keys: BTreeMap::new(),
            value_reads: 0,
            gone: false,
            page_size: MAX_PAGE_SIZE,
            polls_until_complete: 1,
            other_issuers: IssuerOutcome::Fail,
            network: None,
        }
    }
}

#[derive(Debug, Clone)]
struct SecretEntry {
    name: String,
    versions: Vec<SecretVersion>,
}

#[derive(Debug, Clone)]
struct SecretVersion {
    version: String,
    value: String,
    content_type: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    enabled: bool,
    nbf: Option<i64>,
    exp: Option<i64>,
    created: i64,
    updated: i64,
    managed: bool,
}

#[derive(Debug)]
struct CertificateEntry {
    name: String,
    versions: Vec<CertificateVersion>,
    policy: Value,
    policy_created: i64,
    operation: Option<Operation>,
}

#[derive(Debug)]
struct CertificateVersion {
    version: String,
    der: Vec<u8>,
    nbf: i64,
    exp: i64,
    created: i64,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug)]
struct Operation {
    request_id: String,
    issuer: String,
    csr: Vec<u8>,
    state: OperationState,
    polls_left: u32,
    pending: Option<(Issued, String)>,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum OperationState {
    InProgress,
    Completed,
    Failed,
}

/// A secret to place in the vault before a test runs.
#[derive(Debug, Clone)]
pub struct SecretSeed {
    name: String,
    value: String,
    content_type: Option<String>,
    tags: BTreeMap<String, String>,
    enabled: bool,
    not_before: Option<DateTime<Utc>>,
    expires: Option<DateTime<Utc>>,
}

impl SecretSeed {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            content_type: None,
            tags: BTreeMap::new(),
            enabled: true,
            not_before: None,
            expires: None,
        }
    }

    pub fn tag(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(name.into(), value.into());
        self
    }

    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    pub fn expires(mut self, at: DateTime<Utc>) -> Self {
        self.expires = Some(at);
        self
    }

    pub fn not_before(mut self, at: DateTime<Utc>) -> Self {
        self.not_before = Some(at);
        self
    }

    pub fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }
}

/// One stored version of a secret, as tests inspect it.
#[derive(Clone)]
pub struct StoredSecret {
    pub name: String,
    pub version: String,
    pub value: String,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub enabled: bool,
    pub not_before: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    pub managed: bool,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("value", &"[redacted]")
            .field("tags", &self.tags)
            .field("enabled", &self.enabled)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// The Key Vault stand-in as tests see it: its URL, seeding and inspection.
#[derive(Debug, Clone)]
pub struct KeyVaultStandin<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) url: Url,
    pub(crate) vault: Arc<Mutex<Vault>>,
}

impl KeyVaultStandin<'_> {
    /// `https://127.0.0.1:{port}/`, the vault URL to give a client.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Refuses every authenticated request for `refusal` from now on (`None`: admits
    /// them again), as a vault whose firewall or private-link setting shuts the caller out.
    pub fn refuse_network(&self, refusal: Option<NetworkRefusal>) {
        self.lock().network = refusal;
    }

    /// Adds a new version of a secret and returns its version id.
    pub fn seed_secret(&self, seed: SecretSeed) -> String {
        let now = self.shared.clock.now().timestamp();
        let version = new_version();
        let entry = SecretVersion {
            version: version.clone(),
            value: seed.value,
            content_type: seed.content_type,
            tags: Some(seed.tags).filter(|t| !t.is_empty()),
            enabled: seed.enabled,
            nbf: seed.not_before.map(|t| t.timestamp()),
            exp: seed.expires.map(|t| t.timestamp()),
            created: now,
            updated: now,
            managed: false,
        };
        let mut vault = self.lock();
        vault
            .secrets
            .entry(seed.name.to_ascii_lowercase())
            .or_insert_with(|| SecretEntry {
                name: seed.name.clone(),
                versions: Vec::new(),
            })
            .versions
            .push(entry);
        version
    }

    /// Every version of a secret, oldest first.
    pub fn secret_versions(&self, name: &str) -> Vec<StoredSecret> {
        let vault = self.lock();
        let Some(entry) = vault.secrets.get(&name.to_ascii_lowercase()) else {
            return Vec::new();
        };
        entry
            .versions
            .iter()
            .map(|v| StoredSecret {
                name: entry.name.clone(),
                version: v.version.clone(),
                value: v.value.clone(),
                content_type: v.content_type.clone(),
                tags: v.tags.clone().unwrap_or_default(),
                enabled: v.enabled,
                not_before: v.nbf.and_then(|t| DateTime::from_timestamp(t, 0)),
                expires: v.exp.and_then(|t| DateTime::from_timestamp(t, 0)),
                created: DateTime::from_timestamp(v.created, 0).unwrap_or_default(),
                managed: v.managed,
            })
            .collect()
    }

    /// The newest version of a secret.
    pub fn current_secret(&self, name: &str) -> Option<StoredSecret> {
        self.secret_versions(name).pop()
    }

    /// Page size used when a list request carries no `maxresults` (Key Vault: 25).
    pub fn set_page_size(&self, page_size: usize) {
        self.lock().page_size = page_size.clamp(1, MAX_PAGE_SIZE);
    }

    /// How many polls of a pending certificate operation answer `inProgress` before it
    /// completes (or fails).
    pub fn set_polls_until_complete(&self, polls: u32) {
        self.lock().polls_until_complete = polls;
    }

    pub fn set_other_issuer_outcome(&self, outcome: IssuerOutcome) {
        self.lock().other_issuers = outcome;
    }

    fn lock(&self) -> MutexGuard<'_, Vault> {
        lock_vault(&self.vault)
    }
}

/// The router of one vault: every vault is its own host (its own listener), as each
/// Azure vault is `{name}.vault.azure.net`.
pub(crate) fn router(shared: Arc<Shared>, vault: Arc<Mutex<Vault>>) -> Router {
    Router::new()
        .fallback(dispatch)
        .with_state(VaultState { shared, vault })
}

#[derive(Clone)]
struct VaultState {
    shared: Arc<Shared>,
    vault: Arc<Mutex<Vault>>,
}

pub(crate) fn lock_vault(vault: &Mutex<Vault>) -> MutexGuard<'_, Vault> {
    vault
        .lock()
        .expect("the vault lock is never held across a panic")
}

/// An answer in Key Vault's error shape.
#[derive(Debug)]
struct KvError {
    status: StatusCode,
    code: &'static str,
    message: String,
    inner: Option<&'static str>,
    challenge: Option<String>,
}

impl KvError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            inner: None,
            challenge: None,
        }
    }

    fn bad_parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadParameter", message)
    }

    fn with_inner(mut self, inner: &'static str) -> Self {
        self.inner = Some(inner);
        self
    }
}

impl IntoResponse for KvError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(inner) = self.inner {
            error["innererror"] = json!({"code": inner});
        }
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

pub(crate) fn fault_response(status: StatusCode) -> Response {
    let (code, message) = match status {
        StatusCode::TOO_MANY_REQUESTS => (
            "Throttled",
            "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "ServiceUnavailable",
            "The service is temporarily unavailable.",
        ),
        _ => ("InternalServerError", "An unexpected error occurred."),
    };
    KvError::new(status, code, message).into_response()
}

async fn dispatch(
    State(state): State<VaultState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if lock_vault(&state.vault).gone {
        let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
        response
            .extensions_mut()
            .insert(crate::faults::DropConnection);
        return response;
    }
    match handle(&state.shared, &state.vault, &method, &uri, &headers, &body) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// Everything a handler needs about the request once it is admitted.
struct Call<'a> {
    vault: &'a Mutex<Vault>,
    base: String,
    api_version: String,
    query: Vec<(String, String)>,
    grant: Grant,
    now: DateTime<Utc>,
}

impl Call<'_> {
    fn vault(&self) -> MutexGuard<'_, Vault> {
        lock_vault(self.vault)
    }

    fn require(&self, permission: &'static str) -> Result<(), KvError> {
        // Key Vault's network rules are checked before its roles.
        let network = self.vault().network;
        match network {
            Some(NetworkRefusal::Firewall) => {
                return Err(KvError::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!(
                        "Client address is not authorized and caller is not a trusted service.\r\nClient address: 127.0.0.1\r\nCaller: appid={}\r\nVault: standin;location=eastus",
                        self.grant.app_id
                    ),
                )
                .with_inner("ForbiddenByFirewall"));
            }
            Some(NetworkRefusal::Connection) => {
                return Err(KvError::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "Public network access is disabled and request is not from a trusted service nor via an approved private link.\r\nCaller: appid=\r\nVault: standin;location=eastus",
                )
                .with_inner("ForbiddenByConnection"));
            }
            None => {}
        }
        if self.grant.permissions.allows(permission) {
            return Ok(());
        }
        Err(KvError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={}\r\nAction: '{permission}'",
                self.grant.app_id
            ),
        )
        .with_inner("ForbiddenByRbac"))
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn handle(
    shared: &Shared,
    vault: &Mutex<Vault>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, KvError> {
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let api_versions: Vec<&str> = query
        .iter()
        .filter(|(n, _)| n == "api-version")
        .map(|(_, v)| v.as_str())
        .collect();
    let api_version = match api_versions.as_slice() {
        [] => {
            return Err(KvError::bad_parameter(
                "The 'api-version' query parameter is missing.",
            ));
        }
        [one] if API_VERSIONS.contains(one) => (*one).to_owned(),
        [one] => {
            return Err(KvError::bad_parameter(format!(
                "The specified version ({one}) is not recognized. Consider using the latest supported version ({LATEST_API_VERSION})."
            )));
        }
        _ => {
            return Err(KvError::bad_parameter(
                "The 'api-version' query parameter appears more than once.",
            ));
        }
    };

    let now = shared.clock.now();
    let grant = shared
        .tokens
        .check(headers, Audience::KeyVault, now)
        .map_err(|refusal| unauthorized(shared, refusal))?;

    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let call = Call {
        vault,
        base: format!("https://{host}"),
        api_version,
        query,
        grant,
        now,
    };

    let mut segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    if segments.len() > 1 && segments.last() == Some(&"") {
        segments.pop();
    }
    if metadata::reads_a_value(method, &segments) {
        call.vault().value_reads += 1;
    }
    if let Some(name) = segments.get(1) {
        validate_name(name)?;
    }
    match (method, segments.as_slice()) {
        (&Method::GET, ["secrets"]) => list_secrets(&call),
        (&Method::GET, ["secrets", name]) => get_secret(&call, name, None),
        (&Method::PUT, ["secrets", name]) => set_secret(&call, name, body),
        (&Method::PATCH, ["secrets", name]) => update_secret(&call, name, None, body),
        (&Method::DELETE, ["secrets", name]) => delete_secret(&call, name),
        (&Method::GET, ["secrets", name, "versions"]) => list_secret_versions(&call, name),
        (&Method::GET, ["secrets", name, version]) => get_secret(&call, name, Some(version)),
        (&Method::PATCH, ["secrets", name, version]) => {
            update_secret(&call, name, Some(version), body)
        }
        (&Method::POST, ["keys", name, version, "sign"]) => keys::sign(&call, name, version, body),
        (&Method::GET, ["certificates"]) => list_certificates(&call),
        (&Method::POST, ["certificates", name, "create"]) => create_certificate(&call, name, body),
        (&Method::GET, ["certificates", name, "pending"]) => certificate_operation(&call, name),
        (&Method::GET, ["certificates", name, "policy"]) => certificate_policy(&call, name),
        (&Method::GET, ["certificates", name, "versions"]) => {
            metadata::list_certificate_versions(&call, name)
        }
        (&Method::GET, ["keys"]) => metadata::list_keys(&call),
        (&Method::GET, ["keys", name, "versions"]) => metadata::list_key_versions(&call, name),
        (&Method::GET, ["keys", name, "rotationpolicy"]) => {
            metadata::key_rotation_policy(&call, name)
        }
        (&Method::GET, ["keys", name]) => metadata::get_key(&call, name, None),
        (&Method::GET, ["keys", name, version]) => metadata::get_key(&call, name, Some(version)),
        (&Method::GET, ["certificates", name]) => get_certificate(&call, name, None),
        (&Method::GET, ["certificates", name, version]) => {
            get_certificate(&call, name, Some(version))
        }
        _ => Err(KvError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("The operation {method} {} is not supported.", uri.path()),
        )),
    }
}

fn unauthorized(shared: &Shared, refusal: BearerRefusal) -> KvError {
    let message = match refusal {
        BearerRefusal::Missing | BearerRefusal::NotBearer => {
            "AKV10000: Request is missing a Bearer or PoP token.".to_owned()
        }
        BearerRefusal::Unknown => "AKV10000: The access token is not valid.".to_owned(),
        BearerRefusal::Expired => "AKV10001: The access token has expired.".to_owned(),
        BearerRefusal::WrongAudience { found } => format!(
            "AKV10022: Invalid audience. Expected {}, found: {found}.",
            Audience::KeyVault.uri()
        ),
    };
    let mut error = KvError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message);
    error.challenge = Some(format!(
        r#"Bearer authorization="https://login.microsoftonline.com/{}", resource="{}""#,
        shared.tenant_id,
        Audience::KeyVault.uri()
    ));
    error
}

fn validate_name(name: &str) -> Result<(), KvError> {
    let valid = (1..=MAX_NAME_LEN).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(KvError::bad_parameter(format!(
            "The request URI contains an invalid name: {name}"
        )))
    }
}

fn is_version(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn new_version() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn secret_not_found(name: &str, version: Option<&str>) -> KvError {
    let id = match version {
        Some(v) => format!("{name}/{v}"),
        None => name.to_owned(),
    };
    KvError::new(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        format!(
            "A secret with (name/id) {id} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

fn certificate_not_found(name: &str) -> KvError {
    KvError::new(
        StatusCode::NOT_FOUND,
        "CertificateNotFound",
        format!(
            "A certificate with (name/id) {name} was not found in this key vault. If you recently deleted this certificate you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

/// Parses a JSON body into `T`, answering like Key Vault when it does not fit. Only
/// serde's structural messages (unknown, missing or duplicate field) are echoed: a type
/// error could quote a value, and a value may be a secret.
fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, KvError> {
    serde_json::from_slice(body).map_err(|e| KvError::bad_parameter(json_error_detail(&e)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttributesBody {
    enabled: Option<bool>,
    nbf: Option<i64>,
    exp: Option<i64>,
    // Read-only attributes a client may echo back; Key Vault ignores them.
    #[serde(rename = "created")]
    _created: Option<IgnoredAny>,
    #[serde(rename = "updated")]
    _updated: Option<IgnoredAny>,
    #[serde(rename = "recoveryLevel")]
    _recovery_level: Option<IgnoredAny>,
    #[serde(rename = "recoverableDays")]
    _recoverable_days: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetSecretBody {
    value: Option<String>,
    #[serde(rename = "contentType")]
    content_type: Option<String>,
    attributes: Option<AttributesBody>,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateSecretBody {
    #[serde(rename = "contentType")]
    content_type: Option<String>,
    attributes: Option<AttributesBody>,
    tags: Option<BTreeMap<String, String>>,
}

fn validate_tags(tags: &Option<BTreeMap<String, String>>) -> Result<(), KvError> {
    let Some(tags) = tags else { return Ok(()) };
    if tags.len() > MAX_TAGS {
        return Err(KvError::bad_parameter(format!(
            "Too many tags: {} given, at most {MAX_TAGS} are allowed.",
            tags.len()
        )));
    }
    for (name, value) in tags {
        if name.is_empty() || name.chars().count() > MAX_TAG_NAME_LEN {
            return Err(KvError::bad_parameter(format!(
                "Tag names must be 1 to {MAX_TAG_NAME_LEN} characters."
            )));
        }
        if value.chars().count() > MAX_TAG_VALUE_LEN {
            return Err(KvError::bad_parameter(format!(
                "Tag values must be at most {MAX_TAG_VALUE_LEN} characters (tag {name:?})."
            )));
        }
    }
    Ok(())
}

fn secret_attributes(v: &SecretVersion) -> Value {
    let mut attributes = json!({
        "enabled": v.enabled,
        "created": v.created,
        "updated": v.updated,
        "recoveryLevel": RECOVERY_LEVEL,
        "recoverableDays": RECOVERABLE_DAYS,
    });
    if let Some(nbf) = v.nbf {
        attributes["nbf"] = json!(nbf);
    }
    if let Some(exp) = v.exp {
        attributes["exp"] = json!(exp);
    }
    attributes
}

/// The common fields of a secret answer: `id`, `attributes` and whichever of `tags`,
/// `contentType`, `managed` and `kid` the version has.
fn secret_item(base: &str, name: &str, v: &SecretVersion, id_version: bool) -> Value {
    let id = if id_version {
        format!("{base}/secrets/{name}/{}", v.version)
    } else {
        format!("{base}/secrets/{name}")
    };
    let mut item = json!({ "id": id, "attributes": secret_attributes(v) });
    if let Some(tags) = &v.tags {
        item["tags"] = json!(tags);
    }
    if let Some(content_type) = &v.content_type {
        item["contentType"] = json!(content_type);
    }
    if v.managed {
        item["managed"] = json!(true);
        item["kid"] = json!(format!("{base}/keys/{name}/{}", v.version));
    }
    item
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn get_secret(call: &Call, name: &str, version: Option<&str>) -> Result<Response, KvError> {
    call.require(permission::SECRETS_GET)?;
    let vault = call.vault();
    let entry = vault
        .secrets
        .get(&name.to_ascii_lowercase())
        .ok_or_else(|| secret_not_found(name, version))?;
    let found = match version {
        None => entry.versions.last(),
        Some(v) if is_version(v) => entry
            .versions
            .iter()
            .find(|sv| sv.version.eq_ignore_ascii_case(v)),
        Some(_) => None,
    };
    let v = found.ok_or_else(|| secret_not_found(name, version))?;
    if !v.enabled {
        return Err(KvError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation get is not allowed on a disabled secret.",
        )
        .with_inner("SecretDisabled"));
    }
    let mut body = secret_item(&call.base, &entry.name, v, true);
    body["value"] = json!(v.value);
    Ok(json_response(StatusCode::OK, body))
}

fn set_secret(call: &Call, name: &str, body: &[u8]) -> Result<Response, KvError> {
    call.require(permission::SECRETS_SET)?;
    let request: SetSecretBody = parse_body(body)?;
    let value = request
        .value
        .ok_or_else(|| KvError::bad_parameter("The property 'value' is required."))?;
    if value.len() > MAX_SECRET_VALUE_BYTES {
        return Err(KvError::bad_parameter(format!(
            "The secret value is {} bytes; at most {MAX_SECRET_VALUE_BYTES} are allowed.",
            value.len()
        )));
    }
    validate_tags(&request.tags)?;
    let key = name.to_ascii_lowercase();
    let mut vault = call.vault();
    if vault.deleted.contains_key(&key) {
        return Err(KvError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."
            ),
        )
        .with_inner("ObjectIsDeletedButRecoverable"));
    }
    let now = call.now.timestamp();
    let attributes = request.attributes;
    let v = SecretVersion {
        version: new_version(),
        value,
        content_type: request.content_type,
        tags: request.tags,
        enabled: attributes.as_ref().and_then(|a| a.enabled).unwrap_or(true),
        nbf: attributes.as_ref().and_then(|a| a.nbf),
        exp: attributes.as_ref().and_then(|a| a.exp),
        created: now,
        updated: now,
        managed: false,
    };
    let entry = vault.secrets.entry(key).or_insert_with(|| SecretEntry {
        name: name.to_owned(),
        versions: Vec::new(),
    });
    let mut answer = secret_item(&call.base, &entry.name, &v, true);
    answer["value"] = json!(v.value);
    entry.versions.push(v);
    Ok(json_response(StatusCode::OK, answer))
}

fn update_secret(
    call: &Call,
    name: &str,
    version: Option<&str>,
    body: &[u8],
) -> Result<Response, KvError> {
    call.require(permission::SECRETS_SET)?;
    let request: UpdateSecretBody = parse_body(body)?;
    validate_tags(&request.tags)?;
    let mut vault = call.vault();
    let entry = vault
        .secrets
        .get_mut(&name.to_ascii_lowercase())
        .ok_or_else(|| secret_not_found(name, version))?;
    let display_name = entry.name.clone();
    let v = match version {
        None => entry.versions.last_mut(),
        Some(wanted) if is_version(wanted) => entry
            .versions
            .iter_mut()
            .find(|sv| sv.version.eq_ignore_ascii_case(wanted)),
        Some(_) => None,
    }
    .ok_or_else(|| secret_not_found(name, version))?;
    if let Some(content_type) = request.content_type {
        v.content_type = Some(content_type);
    }
    if let Some(tags) = request.tags {
        v.tags = Some(tags);
    }
    if let Some(attributes) = request.attributes {
        if let Some(enabled) = attributes.enabled {
            v.enabled = enabled;
        }
        if attributes.nbf.is_some() {
            v.nbf = attributes.nbf;
        }
        if attributes.exp.is_some() {
            v.exp = attributes.exp;
        }
    }
    v.updated = call.now.timestamp();
    Ok(json_response(
        StatusCode::OK,
        secret_item(&call.base, &display_name, v, true),
    ))
}

fn delete_secret(call: &Call, name: &str) -> Result<Response, KvError> {
    call.require(permission::SECRETS_DELETE)?;
    let key = name.to_ascii_lowercase();
    let mut vault = call.vault();
    let entry = vault
        .secrets
        .remove(&key)
        .ok_or_else(|| secret_not_found(name, None))?;
    let deleted = call.now.timestamp();
    let mut answer = match entry.versions.last() {
        Some(v) => secret_item(&call.base, &entry.name, v, true),
        None => json!({}),
    };
    answer["recoveryId"] = json!(format!("{}/deletedsecrets/{}", call.base, entry.name));
    answer["deletedDate"] = json!(deleted);
    answer["scheduledPurgeDate"] = json!(deleted + RECOVERABLE_DAYS * 86_400);
    vault.deleted.insert(key, (entry, call.now));
    Ok(json_response(StatusCode::OK, answer))
}

fn list_secrets(call: &Call) -> Result<Response, KvError> {
    call.require(permission::SECRETS_LIST)?;
    // Only the page asked for is rendered: a listing of many pages costs each page's
    // share, not the whole vault again for every page.
    let vault = call.vault();
    let items: Vec<_> = vault
        .secrets
        .values()
        .filter_map(|e| e.versions.last().map(|v| (e, v)))
        .collect();
    page_of(call, "/secrets", items, vault.page_size, |(e, v)| {
        secret_item(&call.base, &e.name, v, false)
    })
}

fn list_secret_versions(call: &Call, name: &str) -> Result<Response, KvError> {
    call.require(permission::SECRETS_LIST)?;
    let (items, page_size) = {
        let vault = call.vault();
        let items: Vec<Value> = vault
            .secrets
            .get(&name.to_ascii_lowercase())
            .map(|e| {
                e.versions
                    .iter()
                    .map(|v| secret_item(&call.base, &e.name, v, true))
                    .collect()
            })
            .unwrap_or_default();
        (items, vault.page_size)
    };
    page(call, &format!("/secrets/{name}/versions"), items, page_size)
}

/// One page of `items` with a `nextLink` carrying an opaque `$skiptoken`, as Key Vault
/// pages every list.
fn page(
    call: &Call,
    path: &str,
    items: Vec<Value>,
    default_size: usize,
) -> Result<Response, KvError> {
    page_of(call, path, items, default_size, |item| item)
}

/// [`page`] over any items, rendering only those on the page.
fn page_of<T>(
    call: &Call,
    path: &str,
    items: Vec<T>,
    default_size: usize,
    render: impl FnMut(T) -> Value,
) -> Result<Response, KvError> {
    let max_results = match call.query("maxresults") {
        None => None,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Some(n),
            _ => {
                return Err(KvError::bad_parameter(format!(
                    "Invalid value for maxresults: {text}. It must be between 1 and {MAX_PAGE_SIZE}."
                )));
            }
        },
    };
    let size = max_results.unwrap_or(default_size);
    let start = match call.query("$skiptoken") {
        None => 0,
        Some(token) => decode_skiptoken(token)
            .ok_or_else(|| KvError::bad_parameter("The $skiptoken is not valid."))?,
    };
    let end = (start + size).min(items.len());
    let total = items.len();
    let value: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(end.saturating_sub(start))
        .map(render)
        .collect();
    let next_link = if end < total {
        let mut link = format!(
            "{}{path}?api-version={}&$skiptoken={}",
            call.base,
            call.api_version,
            encode_skiptoken(end)
        );
        if let Some(n) = max_results {
            link.push_str(&format!("&maxresults={n}"));
        }
        Value::String(link)
    } else {
        Value::Null
    };
    Ok(json_response(
        StatusCode::OK,
        json!({ "value": value, "nextLink": next_link }),
    ))
}

fn encode_skiptoken(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("{{\"NextMarker\":{offset}}}"))
}

fn decode_skiptoken(token: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    usize::try_from(value.get("NextMarker")?.as_u64()?).ok()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCertificateBody {
    policy: Option<PolicyBody>,
    attributes: Option<AttributesBody>,
    tags: Option<BTreeMap<String, String>>,
    #[serde(rename = "preserveCertOrder")]
    _preserve_cert_order: Option<bool>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    #[serde(skip_serializing)]
    id: Option<Value>,
    key_props: Option<KeyProps>,
    secret_props: Option<SecretProps>,
    x509_props: Option<X509Props>,
    lifetime_actions: Option<Vec<Value>>,
    issuer: Option<IssuerBody>,
    #[serde(rename = "attributes", skip_serializing)]
    _attributes: Option<Value>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct KeyProps {
    exportable: Option<bool>,
    kty: Option<String>,
    key_size: Option<u32>,
    reuse_key: Option<bool>,
    crv: Option<String>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct SecretProps {
    #[serde(rename = "contentType")]
    content_type: Option<String>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct X509Props {
    subject: Option<String>,
    sans: Option<Sans>,
    ekus: Option<Vec<String>>,
    key_usage: Option<Vec<String>>,
    validity_months: Option<u32>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Sans {
    dns_names: Option<Vec<String>>,
    emails: Option<Vec<String>>,
    upns: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct IssuerBody {
    name: Option<String>,
    cty: Option<String>,
    cert_transparency: Option<bool>,
}

/// Key Vault's default validity for a new certificate.
const DEFAULT_VALIDITY_MONTHS: u32 = 12;

fn create_certificate(call: &Call, name: &str, body: &[u8]) -> Result<Response, KvError> {
    call.require(permission::CERTIFICATES_CREATE)?;
    let request: CreateCertificateBody = parse_body(body)?;
    validate_tags(&request.tags)?;
    let _ = request.attributes;
    let mut policy = request
        .policy
        .ok_or_else(|| KvError::bad_parameter("Policy is required for a new certificate."))?;
    let _ = policy.id.take();
    let issuer = policy
        .issuer
        .as_ref()
        .and_then(|i| i.name.clone())
        .ok_or_else(|| KvError::bad_parameter("The policy's issuer name is required."))?;
    let x509 = policy.x509_props.get_or_insert(X509Props {
        subject: None,
        sans: None,
        ekus: None,
        key_usage: None,
        validity_months: None,
    });
    let subject = x509
        .subject
        .clone()
        .ok_or_else(|| KvError::bad_parameter("The policy's x509_props.subject is required."))?;
    let validity_months = *x509.validity_months.get_or_insert(DEFAULT_VALIDITY_MONTHS);
    x509.ekus.get_or_insert_with(Vec::new);
    x509.key_usage.get_or_insert_with(Vec::new);
    let dns_names = x509
        .sans
        .as_ref()
        .and_then(|s| s.dns_names.clone())
        .unwrap_or_default();
    let content_type = policy
        .secret_props
        .get_or_insert(SecretProps { content_type: None })
        .content_type
        .get_or_insert_with(|| PKCS12_CONTENT_TYPE.to_owned())
        .clone();
    if content_type != PEM_CONTENT_TYPE {
        // Building PKCS#12 needs more than a test stand-in should carry; refusing keeps
        // a test from believing it received a real PFX.
        return Err(KvError::bad_parameter(format!(
            "This stand-in issues only {PEM_CONTENT_TYPE} certificates; set policy.secret_props.contentType to it (requested {content_type})."
        )));
    }
    let key_props = policy.key_props.get_or_insert(KeyProps {
        exportable: Some(true),
        kty: Some("RSA".to_owned()),
        key_size: Some(2048),
        reuse_key: Some(false),
        crv: None,
    });
    let rsa = !matches!(key_props.kty.as_deref(), Some("EC" | "EC-HSM"));
    policy.lifetime_actions.get_or_insert_with(Vec::new);

    let now_time = time::OffsetDateTime::from_unix_timestamp(call.now.timestamp())
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let (cert, csr) =
        self_signed_for_vault(&subject, &dns_names, validity_months, rsa, now_time)
            .map_err(|e| KvError::bad_parameter(format!("The policy cannot be honoured: {e}")))?;
    let policy_json = strip_nulls(
        serde_json::to_value(&policy)
            .map_err(|e| KvError::bad_parameter(format!("The policy cannot be stored: {e}")))?,
    );

    let mut vault = call.vault();
    let polls = vault.polls_until_complete;
    let key = name.to_ascii_lowercase();
    let entry = vault
        .certificates
        .entry(key)
        .or_insert_with(|| CertificateEntry {
            name: name.to_owned(),
            versions: Vec::new(),
            policy: Value::Null,
            policy_created: call.now.timestamp(),
            operation: None,
        });
    if entry
        .operation
        .as_ref()
        .is_some_and(|o| o.state == OperationState::InProgress)
    {
        return Err(KvError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Certificate {name} is currently being created; wait for the pending operation to finish."
            ),
        ));
    }
    entry.policy = policy_json;
    entry.operation = Some(Operation {
        request_id: new_version(),
        issuer,
        csr,
        state: OperationState::InProgress,
        polls_left: polls,
        pending: Some((cert, content_type)),
        tags: request.tags,
    });
    let body = operation_json(call, entry);
    let mut response = json_response(StatusCode::ACCEPTED, body);
    if let Ok(location) = HeaderValue::from_str(&format!(
        "{}/certificates/{}/pending?api-version={}",
        call.base, entry.name, call.api_version
    )) {
        response
            .headers_mut()
            .insert(http::header::LOCATION, location);
    }
    Ok(response)
}

/// Drops absent optional fields, which Key Vault leaves out rather than sending `null`.
fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

fn operation_json(call: &Call, entry: &CertificateEntry) -> Value {
    let Some(op) = &entry.operation else {
        return Value::Null;
    };
    let mut body = json!({
        "id": format!("{}/certificates/{}/pending", call.base, entry.name),
        "issuer": { "name": op.issuer },
        "csr": STANDARD.encode(&op.csr),
        "cancellation_requested": false,
        "request_id": op.request_id,
    });
    match op.state {
        OperationState::InProgress => {
            body["status"] = json!("inProgress");
            body["status_details"] = json!(
                "Pending certificate created. Certificate request is in progress. This may take some time based on the issuer provider. Please check again later."
            );
        }
        OperationState::Completed => {
            body["status"] = json!("completed");
            body["target"] = json!(format!("{}/certificates/{}", call.base, entry.name));
        }
        OperationState::Failed => {
            body["status"] = json!("failed");
            body["status_details"] = json!(format!(
                "The issuer '{}' is not configured for this vault.",
                op.issuer
            ));
            body["error"] = json!({
                "code": "CertificateIssuerNotFound",
                "message": format!("The issuer '{}' is not configured for this vault.", op.issuer),
            });
        }
    }
    body
}

fn certificate_operation(call: &Call, name: &str) -> Result<Response, KvError> {
    call.require(permission::CERTIFICATES_GET)?;
    let mut guard = call.vault();
    let vault = &mut *guard;
    let other_issuers = vault.other_issuers;
    let entry = vault
        .certificates
        .get_mut(&name.to_ascii_lowercase())
        .ok_or_else(|| {
            KvError::new(
                StatusCode::NOT_FOUND,
                "PendingCertificateNotFound",
                format!("Pending certificate not found: {name}"),
            )
        })?;
    let Some(op) = entry.operation.as_mut() else {
        return Err(KvError::new(
            StatusCode::NOT_FOUND,
            "PendingCertificateNotFound",
            format!("Pending certificate not found: {name}"),
        ));
    };
    // `Unknown` issuers wait for a merge that this stand-in does not offer, as Key Vault
    // keeps them pending.
    if op.state == OperationState::InProgress && op.issuer != "Unknown" {
        if op.polls_left > 0 {
            op.polls_left -= 1;
        } else if op.issuer == "Self" || other_issuers == IssuerOutcome::Complete {
            op.state = OperationState::Completed;
            if let Some((cert, content_type)) = op.pending.take() {
                let tags = op.tags.clone();
                let version = new_version();
                let (nbf, exp) = validity_of(&entry.policy, call.now);
                entry.versions.push(CertificateVersion {
                    version: version.clone(),
                    der: cert.cert_der.clone(),
                    nbf,
                    exp,
                    created: call.now.timestamp(),
                    tags: tags.clone(),
                });
                let secret = SecretVersion {
                    version,
                    value: pem_bundle(&cert),
                    content_type: Some(content_type),
                    tags,
                    enabled: true,
                    nbf: Some(nbf),
                    exp: Some(exp),
                    created: call.now.timestamp(),
                    updated: call.now.timestamp(),
                    managed: true,
                };
                let cert_name = entry.name.clone();
                vault
                    .secrets
                    .entry(cert_name.to_ascii_lowercase())
                    .or_insert_with(|| SecretEntry {
                        name: cert_name,
                        versions: Vec::new(),
                    })
                    .versions
                    .push(secret);
            }
        } else {
            op.state = OperationState::Failed;
            op.pending = None;
        }
    }
    let entry = vault
        .certificates
        .get(&name.to_ascii_lowercase())
        .ok_or_else(|| certificate_not_found(name))?;
    Ok(json_response(StatusCode::OK, operation_json(call, entry)))
}

/// A new certificate is valid from now for the policy's `validity_months`, in whole
/// seconds as Key Vault reports it.
fn validity_of(policy: &Value, now: DateTime<Utc>) -> (i64, i64) {
    let months = policy["x509_props"]["validity_months"]
        .as_i64()
        .unwrap_or(i64::from(DEFAULT_VALIDITY_MONTHS));
    let nbf = now.timestamp();
    (nbf, nbf + months * 30 * 86_400)
}

fn policy_json(call: &Call, entry: &CertificateEntry) -> Value {
    let mut policy = entry.policy.clone();
    policy["id"] = json!(format!("{}/certificates/{}/policy", call.base, entry.name));
    policy["attributes"] = json!({
        "enabled": true,
        "created": entry.policy_created,
        "updated": entry.policy_created,
    });
    policy
}

fn certificate_policy(call: &Call, name: &str) -> Result<Response, KvError> {
    call.require(permission::CERTIFICATES_GET)?;
    let vault = call.vault();
    let entry = vault
        .certificates
        .get(&name.to_ascii_lowercase())
        .ok_or_else(|| certificate_not_found(name))?;
    Ok(json_response(StatusCode::OK, policy_json(call, entry)))
}

/// Get Certificates: each certificate's current version as a CertificateItem (id
/// without a version, x5t, attributes, tags when set), paged like every list. A
/// certificate whose first version is still being issued has nothing to list yet.
fn list_certificates(call: &Call) -> Result<Response, KvError> {
    call.require(permission::CERTIFICATES_LIST)?;
    let (items, page_size) = {
        let vault = call.vault();
        let items: Vec<Value> = vault
            .certificates
            .values()
            .filter_map(|entry| {
                let v = entry.versions.last()?;
                let mut item = json!({
                    "id": format!("{}/certificates/{}", call.base, entry.name),
                    "x5t": x5t(&v.der),
                    "attributes": certificate_attributes(v),
                });
                if let Some(tags) = &v.tags {
                    item["tags"] = json!(tags);
                }
                Some(item)
            })
            .collect();
        (items, vault.page_size)
    };
    page(call, "/certificates", items, page_size)
}

/// A certificate's SHA-1 thumbprint as Key Vault writes it: base64url without padding.
fn x5t(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn certificate_attributes(v: &CertificateVersion) -> Value {
    json!({
        "enabled": true,
        "nbf": v.nbf,
        "exp": v.exp,
        "created": v.created,
        "updated": v.created,
        "recoveryLevel": RECOVERY_LEVEL,
        "recoverableDays": RECOVERABLE_DAYS,
    })
}

fn get_certificate(call: &Call, name: &str, version: Option<&str>) -> Result<Response, KvError> {
    call.require(permission::CERTIFICATES_GET)?;
    let vault = call.vault();
    let entry = vault
        .certificates
        .get(&name.to_ascii_lowercase())
        .ok_or_else(|| certificate_not_found(name))?;
    let v = match version {
        None => entry.versions.last(),
        Some(wanted) => entry
            .versions
            .iter()
            .find(|cv| cv.version.eq_ignore_ascii_case(wanted)),
    }
    .ok_or_else(|| certificate_not_found(name))?;
    let base = &call.base;
    let cert_name = &entry.name;
    let mut body = json!({
        "id": format!("{base}/certificates/{cert_name}/{}", v.version),
        "kid": format!("{base}/keys/{cert_name}/{}", v.version),
        "sid": format!("{base}/secrets/{cert_name}/{}", v.version),
        "x5t": x5t(&v.der),
        "cer": STANDARD.encode(&v.der),
        "attributes": certificate_attributes(v),
        "policy": policy_json(call, entry),
    });
    if let Some(tags) = &v.tags {
        body["tags"] = json!(tags);
    }
    Ok(json_response(StatusCode::OK, body))
}
