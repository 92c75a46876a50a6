//! A small typed Microsoft Graph v1.0 client on azure_core's pipeline: application
//! password credentials ([`CredentialIssuer`]) for rotation, and device lookups
//! ([`DeviceDirectory`]) for the secret endpoint.
//!
//! Graph's error bodies (`{"error":{"code","message"}}`) are read for the code only: the
//! message can echo the request, which for addPassword names the credential. The secret
//! text addPassword returns goes straight into a [`SecretValue`].
//!
//! addPassword is not idempotent, so it is sent without pipeline retries: a retry after a
//! lost answer would add a second credential. Its failures go back to the rotation
//! engine, which converges by finding its credentials by display name.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::headers::{CONTENT_TYPE, HeaderName};
use azure_core::http::{ClientOptions, Method, Pipeline, RawResponse, Request, Url};
use azure_core::time::OffsetDateTime;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;

mod catalog;

pub use catalog::READ_PERMISSION as DISCOVERY_READ_PERMISSION;

use crate::adapters::azure::client::http;
use crate::adapters::azure::client::http::{
    FailureContext, PipelineAuth, ServiceErrorCode, default_client_options, failure_from_status,
    pipeline, without_retries,
};
use crate::domain::contact::MailAddress;
use crate::domain::ids::{AppId, DeviceId, DirectoryObjectId, KeyId};
use crate::domain::secret::SecretValue;
use crate::ports::directory::{
    AlternativeSecurityId, Application, CredentialIssuer, Device, DeviceDirectory,
    IssuedCredential, PasswordCredential, PasswordRules,
};
use crate::ports::{FailureKind, PortError};

/// Microsoft Graph in the public cloud; sovereign clouds have their own
/// (`KEYTURN_GRAPH_ENDPOINT`).
pub const DEFAULT_GRAPH_ENDPOINT: &str = "https://graph.microsoft.com";

/// Graph's app management policy refusals all end in this (for example
/// `CredentialInvalidLifetimeAsPerAppPolicy`, `CredentialTypeNotAllowedAsPerAppPolicy`).
const APP_POLICY_SUFFIX: &str = "AsPerAppPolicy";

/// The app management policy codes addPassword is documented to answer: a lifetime
/// beyond the policy's `passwordLifetime`, and passwords blocked by `passwordAddition`.
pub(crate) const APP_POLICY_CODES: [&str; 2] = [
    "CredentialInvalidLifetimeAsPerAppPolicy",
    "CredentialTypeNotAllowedAsPerAppPolicy",
];

/// What keyturn's identity needs to manage credentials of applications it owns.
pub const APPLICATION_PERMISSION: &str =
    "Microsoft Graph Application.ReadWrite.OwnedBy (and ownership of the application)";
/// What reading app management policies needs. Microsoft documents Policy.Read.All as the
/// least privileged application permission for `GET /policies/defaultAppManagementPolicy`
/// and for an application's `appManagementPolicies`.
pub const POLICY_PERMISSION: &str = "Microsoft Graph Policy.Read.All (to read the app management policies that bound a new credential)";

/// `signInAudience` values of applications that allow personal Microsoft accounts: Entra
/// lets those hold at most two passwords (`TooManyAppPasswords` beyond).
const PERSONAL_ACCOUNT_AUDIENCES: [&str; 2] = [
    "AzureADandPersonalMicrosoftAccount",
    "PersonalMicrosoftAccount",
];

/// The passwords an application that allows personal Microsoft accounts may hold.
pub const PERSONAL_ACCOUNT_MAX_PASSWORDS: usize = 2;

/// The tenant's default policy's name, when it has none of its own.
const TENANT_POLICY: &str = "the tenant's default app management policy";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApplicationFacts {
    created_date_time: Option<DateTime<Utc>>,
    sign_in_audience: Option<String>,
}

/// One `passwordCredentialConfiguration` of a policy's restrictions.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PasswordRestriction {
    restriction_type: Option<String>,
    /// `enabled` or `disabled`; policies written before the property existed omit it.
    state: Option<String>,
    /// An ISO 8601 duration (`P90D`), for `passwordLifetime`.
    max_lifetime: Option<String>,
    restrict_for_apps_created_after_date_time: Option<DateTime<Utc>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Restrictions {
    #[serde(default)]
    password_credentials: Vec<PasswordRestriction>,
}

/// An `appManagementPolicy` assigned to an application (its `restrictions`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApplicationPolicy {
    display_name: Option<String>,
    is_enabled: Option<bool>,
    restrictions: Option<Restrictions>,
}

/// The `tenantAppManagementPolicy` (its `applicationRestrictions`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TenantPolicy {
    display_name: Option<String>,
    is_enabled: Option<bool>,
    application_restrictions: Option<Restrictions>,
}

/// An ISO 8601 duration as app management policies write `maxLifetime` (`P90D`,
/// `P1Y`, `PT12H`, `P4DT12H`). Years count 365 days and months 28, the shortest each can
/// be, so a lifetime capped to it is never beyond what the policy allows.
pub(crate) fn iso_duration(text: &str) -> Option<chrono::Duration> {
    let rest = text.trim().strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (rest, None),
    };
    let mut total = chrono::Duration::zero();
    let mut any = false;
    let mut add = |part: &str, units: &[(char, i64)]| -> Option<()> {
        let mut number = String::new();
        let mut next_unit = 0;
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let position = units[next_unit..].iter().position(|(unit, _)| *unit == c)?;
            let seconds = units[next_unit + position].1;
            let value: i64 = number.parse().ok()?;
            total = total.checked_add(&chrono::Duration::seconds(value.checked_mul(seconds)?))?;
            number.clear();
            next_unit += position + 1;
            any = true;
        }
        number.is_empty().then_some(())
    };
    const DAY: i64 = 86_400;
    add(
        date,
        &[
            ('Y', 365 * DAY),
            ('M', 28 * DAY),
            ('W', 7 * DAY),
            ('D', DAY),
        ],
    )?;
    if let Some(time) = time {
        if time.is_empty() {
            return None;
        }
        add(time, &[('H', 3600), ('M', 60), ('S', 1)])?;
    }
    any.then_some(total)
}

/// The rules `restrictions` of policy `name` set for an application created at `created`.
fn password_rules(
    name: &str,
    restrictions: &Restrictions,
    created: Option<DateTime<Utc>>,
    context: &FailureContext<'_>,
) -> Result<PasswordRules, PortError> {
    let mut rules = PasswordRules::default();
    for restriction in &restrictions.password_credentials {
        let enabled = restriction
            .state
            .as_deref()
            .is_none_or(|state| state.eq_ignore_ascii_case("enabled"));
        // A restriction reaches only applications created after its date; an application
        // whose creation time Graph did not give is held to it.
        let reaches = match (
            restriction.restrict_for_apps_created_after_date_time,
            created,
        ) {
            (Some(after), Some(created)) => created > after,
            _ => true,
        };
        if !enabled || !reaches {
            continue;
        }
        match restriction.restriction_type.as_deref() {
            Some(kind) if kind.eq_ignore_ascii_case("passwordAddition") => {
                rules.forbidden_by = Some(name.to_owned());
            }
            Some(kind) if kind.eq_ignore_ascii_case("passwordLifetime") => {
                let text = restriction.max_lifetime.as_deref().unwrap_or_default();
                let lifetime = iso_duration(text)
                    .filter(|lifetime| *lifetime > chrono::Duration::zero())
                    .ok_or_else(|| {
                        PortError::invalid(format!(
                            "{}: policy `{name}` has a passwordLifetime restriction whose maxLifetime is not an ISO 8601 duration",
                            context.operation
                        ))
                    })?;
                if rules
                    .max_lifetime
                    .as_ref()
                    .is_none_or(|(shortest, _)| lifetime < *shortest)
                {
                    rules.max_lifetime = Some((lifetime, name.to_owned()));
                }
            }
            // customPasswordAddition (a secret the caller chooses: keyturn never does),
            // symmetric keys and anything newer do not bound a generated password.
            _ => {}
        }
    }
    Ok(rules)
}

/// What the secret endpoint's identity needs to look devices up.
pub const DEVICE_PERMISSION: &str = "Microsoft Graph Device.Read.All";

const ACCEPT: HeaderName = HeaderName::from_static("accept");

/// Building the client failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    #[error("invalid Graph endpoint: {problem}")]
    InvalidEndpoint { problem: &'static str },
}

/// The Graph client. Cheap to clone.
#[derive(Clone)]
pub struct GraphClient {
    /// `{endpoint}/v1.0/`
    base: Url,
    pipeline: Pipeline,
    /// Without retries, for addPassword.
    once: Pipeline,
}

impl fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    /// A client for the Graph `endpoint` (`https://graph.microsoft.com`, or a sovereign
    /// cloud's), with tokens for `{endpoint}/.default`.
    pub fn new(
        endpoint: &Url,
        credential: Arc<dyn TokenCredential>,
        options: Option<ClientOptions>,
    ) -> Result<Self, GraphError> {
        let scope = format!("{}/.default", endpoint.as_str().trim_end_matches('/'));
        Self::with_scope(endpoint, scope, credential, options)
    }

    /// A client whose token scope is not derived from the endpoint: for HTTPS stand-ins
    /// on loopback, which accept tokens for `https://graph.microsoft.com/.default`.
    pub fn with_scope(
        endpoint: &Url,
        scope: String,
        credential: Arc<dyn TokenCredential>,
        options: Option<ClientOptions>,
    ) -> Result<Self, GraphError> {
        if endpoint.scheme() != "https" {
            return Err(GraphError::InvalidEndpoint {
                problem: "must be https (bearer tokens are never sent over http)",
            });
        }
        if endpoint.query().is_some() || endpoint.fragment().is_some() {
            return Err(GraphError::InvalidEndpoint {
                problem: "must not carry a query or fragment",
            });
        }
        let mut base = endpoint.clone();
        let path = base.path().trim_end_matches('/').to_owned();
        base.set_path(&format!("{path}/v1.0/"));
        let options = options.unwrap_or_else(default_client_options);
        let once_options = without_retries(&options);
        let auth = PipelineAuth::Bearer { credential, scope };
        Ok(Self {
            base,
            pipeline: pipeline(Some(options), auth.clone()),
            once: pipeline(Some(once_options), auth),
        })
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        let base_path = url.path().to_owned();
        url.set_path(&format!("{base_path}{path}"));
        if !query.is_empty() {
            let query = query
                .iter()
                .map(|(name, value)| format!("{name}={}", percent_encode(value)))
                .collect::<Vec<_>>()
                .join("&");
            url.set_query(Some(&query));
        }
        url
    }

    async fn send(
        &self,
        pipeline: &Pipeline,
        mut request: Request,
        context: &FailureContext<'_>,
    ) -> Result<RawResponse, PortError> {
        request.insert_header(ACCEPT, "application/json");
        let response = http::send(pipeline, &mut request, context).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let code = ServiceErrorCode::from_response(response.headers(), response.body().as_ref());
        // Any app management policy code is a policy refusal, including ones newer than
        // this list.
        let policy_code: Vec<&str> = code
            .iter()
            .map(ServiceErrorCode::as_str)
            .filter(|c| c.ends_with(APP_POLICY_SUFFIX) || APP_POLICY_CODES.contains(c))
            .collect();
        let context = FailureContext {
            policy_codes: &policy_code,
            ..*context
        };
        Err(failure_from_status(
            response.status(),
            response.headers(),
            code.as_ref(),
            OffsetDateTime::now_utc(),
            &context,
        ))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        url: Url,
        context: &FailureContext<'_>,
    ) -> Result<T, PortError> {
        let response = self
            .send(&self.pipeline, Request::new(url, Method::Get), context)
            .await?;
        decode(&response, context)
    }

    async fn post(
        &self,
        pipeline: &Pipeline,
        url: Url,
        body: &serde_json::Value,
        context: &FailureContext<'_>,
    ) -> Result<RawResponse, PortError> {
        let mut request = Request::new(url, Method::Post);
        request.insert_header(CONTENT_TYPE, "application/json");
        let body = serde_json::to_vec(body).map_err(|_| {
            PortError::invalid(format!("{}: encoding the request", context.operation))
        })?;
        request.set_body(body);
        self.send(pipeline, request, context).await
    }

    /// `POST /users/{mailbox}/sendMail` with `body` (a `message` and `saveToSentItems`);
    /// Graph answers 202 Accepted. See `adapters::azure::mail`.
    pub(crate) async fn send_mail(
        &self,
        mailbox: &MailAddress,
        body: &serde_json::Value,
        context: &FailureContext<'_>,
    ) -> Result<(), PortError> {
        let url = self.url(
            &format!("users/{}/sendMail", percent_encode(mailbox.as_str())),
            &[],
        );
        self.post(&self.pipeline, url, body, context).await?;
        Ok(())
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a `$filter` reaches
/// Graph with `%20` for spaces (Graph does not read `+` as a space everywhere) and quotes
/// encoded.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b',') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// An OData string literal: `'value'` with single quotes doubled. The ids filtered on
/// are GUIDs (no quotes possible), but a filter is never built by pasting raw text.
fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn decode<T: DeserializeOwned>(
    response: &RawResponse,
    context: &FailureContext<'_>,
) -> Result<T, PortError> {
    serde_json::from_slice(response.body().as_ref()).map_err(|_| {
        PortError::invalid(format!(
            "{}: Graph answered with an unexpected body",
            context.operation
        ))
    })
}

#[derive(Deserialize)]
struct Collection<T> {
    value: Vec<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphApplication {
    id: DirectoryObjectId,
    app_id: AppId,
    display_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PasswordCredentials {
    #[serde(default)]
    password_credentials: Vec<GraphPassword>,
}

/// A `passwordCredential`; `secretText` is read only from addPassword's answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphPassword {
    key_id: KeyId,
    display_name: Option<String>,
    hint: Option<String>,
    start_date_time: Option<DateTime<Utc>>,
    end_date_time: Option<DateTime<Utc>>,
}

impl From<GraphPassword> for PasswordCredential {
    fn from(password: GraphPassword) -> Self {
        Self {
            key_id: password.key_id,
            display_name: password.display_name,
            hint: password.hint,
            start: password.start_date_time,
            end: password.end_date_time,
        }
    }
}

/// addPassword's answer: the credential and its secret text, shown this once and read
/// straight into a [`SecretValue`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddedPassword {
    #[serde(flatten)]
    credential: GraphPassword,
    #[serde(default, deserialize_with = "secret_text")]
    secret_text: Option<SecretValue>,
}

fn secret_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SecretValue>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.map(SecretValue::new))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphDevice {
    device_id: DeviceId,
    #[serde(default)]
    account_enabled: bool,
    #[serde(default)]
    alternative_security_ids: Vec<GraphAlternativeSecurityId>,
    is_compliant: Option<bool>,
    is_managed: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphAlternativeSecurityId {
    #[serde(rename = "type")]
    kind: Option<i32>,
    identity_provider: Option<String>,
    key: Option<String>,
}

fn device(device: GraphDevice, context: &FailureContext<'_>) -> Result<Device, PortError> {
    let alternative_security_ids = device
        .alternative_security_ids
        .into_iter()
        .map(|id| {
            let key = match id.key {
                Some(key) => BASE64.decode(key.trim()).map_err(|_| {
                    PortError::invalid(format!(
                        "{}: an alternativeSecurityIds key is not base64",
                        context.operation
                    ))
                })?,
                None => Vec::new(),
            };
            Ok(AlternativeSecurityId {
                kind: id.kind.unwrap_or_default(),
                identity_provider: id.identity_provider,
                key,
            })
        })
        .collect::<Result<Vec<_>, PortError>>()?;
    Ok(Device {
        device_id: device.device_id,
        account_enabled: device.account_enabled,
        alternative_security_ids,
        is_compliant: device.is_compliant,
        is_managed: device.is_managed,
    })
}

/// The one object a `$filter` by id found, or none; two is an inconsistency worth
/// refusing rather than guessing.
fn single<T>(mut found: Vec<T>, context: &FailureContext<'_>) -> Result<Option<T>, PortError> {
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => Err(PortError::invalid(format!(
            "{}: Graph returned more than one object for one id",
            context.operation
        ))),
    }
}

/// A refusal Graph gives for the request itself (4xx other than throttling), as opposed to
/// a transient failure.
fn is_client_error(error: &PortError) -> bool {
    matches!(
        error.kind,
        FailureKind::NotFound
            | FailureKind::Invalid
            | FailureKind::Conflict
            | FailureKind::PermissionDenied { .. }
            | FailureKind::PolicyViolation { .. }
    )
}

fn context<'a>(operation: &'a str, missing_permission: &'a str) -> FailureContext<'a> {
    FailureContext {
        operation,
        missing_permission,
        policy_codes: &[],
    }
}

#[async_trait]
impl CredentialIssuer for GraphClient {
    async fn application(&self, app_id: &AppId) -> Result<Option<Application>, PortError> {
        let operation = format!("looking up application {app_id}");
        let context = context(&operation, APPLICATION_PERMISSION);
        let filter = format!("appId eq {}", odata_string(&app_id.to_string()));
        let url = self.url(
            "applications",
            &[("$filter", &filter), ("$select", "id,appId,displayName")],
        );
        let found: Collection<GraphApplication> = self.get(url, &context).await?;
        Ok(single(found.value, &context)?.map(|app| Application {
            object_id: app.id,
            app_id: app.app_id,
            display_name: app.display_name,
        }))
    }

    async fn password_credentials(
        &self,
        app: &DirectoryObjectId,
    ) -> Result<Vec<PasswordCredential>, PortError> {
        let operation = format!("listing the password credentials of application object {app}");
        let context = context(&operation, APPLICATION_PERMISSION);
        let url = self.url(
            &format!("applications/{app}"),
            &[("$select", "passwordCredentials")],
        );
        let found: PasswordCredentials = self.get(url, &context).await?;
        Ok(found
            .password_credentials
            .into_iter()
            .map(PasswordCredential::from)
            .collect())
    }

    async fn password_rules(&self, app: &DirectoryObjectId) -> Result<PasswordRules, PortError> {
        let operation = format!("reading the app management policies of application object {app}");
        let app_context = context(&operation, APPLICATION_PERMISSION);
        let url = self.url(
            &format!("applications/{app}"),
            &[("$select", "createdDateTime,signInAudience")],
        );
        let facts: ApplicationFacts = self.get(url, &app_context).await?;
        let policy_context = context(&operation, POLICY_PERMISSION);
        let url = self.url(&format!("applications/{app}/appManagementPolicies"), &[]);
        let assigned: Collection<ApplicationPolicy> = self.get(url, &policy_context).await?;
        // An application's own policy replaces the tenant's default for it.
        let own = assigned
            .value
            .into_iter()
            .find(|policy| policy.is_enabled.unwrap_or(true));
        let mut rules = match own {
            Some(policy) => {
                let name = policy
                    .display_name
                    .filter(|name| !name.trim().is_empty())
                    .unwrap_or_else(|| "the application's app management policy".to_owned());
                password_rules(
                    &name,
                    &policy.restrictions.unwrap_or_default(),
                    facts.created_date_time,
                    &policy_context,
                )?
            }
            None => {
                let url = self.url("policies/defaultAppManagementPolicy", &[]);
                let tenant: TenantPolicy = self.get(url, &policy_context).await?;
                if tenant.is_enabled.unwrap_or(true) {
                    let name = tenant
                        .display_name
                        .filter(|name| !name.trim().is_empty())
                        .map_or_else(
                            || TENANT_POLICY.to_owned(),
                            |name| format!("{name} (the tenant's default)"),
                        );
                    password_rules(
                        &name,
                        &tenant.application_restrictions.unwrap_or_default(),
                        facts.created_date_time,
                        &policy_context,
                    )?
                } else {
                    PasswordRules::default()
                }
            }
        };
        if facts
            .sign_in_audience
            .as_deref()
            .is_some_and(|audience| PERSONAL_ACCOUNT_AUDIENCES.contains(&audience))
        {
            rules.max_passwords = Some(PERSONAL_ACCOUNT_MAX_PASSWORDS);
        }
        Ok(rules)
    }

    async fn add_password(
        &self,
        app: &DirectoryObjectId,
        display_name: &str,
        end: DateTime<Utc>,
    ) -> Result<IssuedCredential, PortError> {
        let operation = format!("adding a password credential to application object {app}");
        let context = context(&operation, APPLICATION_PERMISSION);
        let url = self.url(&format!("applications/{app}/addPassword"), &[]);
        let body = serde_json::json!({
            "passwordCredential": {
                "displayName": display_name,
                "endDateTime": end.to_rfc3339_opts(SecondsFormat::Secs, true),
            }
        });
        let response = self.post(&self.once, url, &body, &context).await?;
        let added: AddedPassword = decode(&response, &context)?;
        let secret = added
            .secret_text
            .filter(|text| !text.is_empty())
            .ok_or_else(|| {
                PortError::invalid(format!("{operation}: Graph answered without secretText"))
            })?;
        Ok(IssuedCredential {
            credential: added.credential.into(),
            secret,
        })
    }

    async fn remove_password(
        &self,
        app: &DirectoryObjectId,
        key_id: &KeyId,
    ) -> Result<(), PortError> {
        let operation =
            format!("removing password credential {key_id} from application object {app}");
        let context = context(&operation, APPLICATION_PERMISSION);
        let url = self.url(&format!("applications/{app}/removePassword"), &[]);
        let body = serde_json::json!({ "keyId": key_id.to_string() });
        let refused = match self.post(&self.pipeline, url, &body, &context).await {
            Ok(_) => return Ok(()),
            Err(error) if is_client_error(&error) => error,
            Err(error) => return Err(error),
        };
        // Graph documents no answer for a key that is already gone (404 and 400 are both
        // seen). Whatever 4xx it gave, the application's own list decides: a key that is
        // not there has been removed, and that is `NotFound`, which callers that converge
        // take as done. A key still listed keeps the refusal.
        let listed = match self.password_credentials(app).await {
            Ok(listed) => listed,
            Err(_) => return Err(refused),
        };
        if listed.iter().any(|credential| credential.key_id == *key_id) {
            return Err(refused);
        }
        Err(PortError::new(
            FailureKind::NotFound,
            format!("{operation}: the application no longer lists it"),
        ))
    }
}

#[async_trait]
impl DeviceDirectory for GraphClient {
    async fn device(&self, device_id: &DeviceId) -> Result<Option<Device>, PortError> {
        let operation = format!("looking up device {device_id}");
        let context = context(&operation, DEVICE_PERMISSION);
        let filter = format!("deviceId eq {}", odata_string(&device_id.to_string()));
        let url = self.url(
            "devices",
            &[
                ("$filter", &filter),
                (
                    "$select",
                    "deviceId,accountEnabled,alternativeSecurityIds,isCompliant,isManaged",
                ),
            ],
        );
        let found: Collection<GraphDevice> = self.get(url, &context).await?;
        single(found.value, &context)?
            .map(|found| device(found, &context))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use azure_core::http::{StatusCode, Transport};
    use keyturn_testkit::transport::{Answer as Canned, CannedTransport, FixedToken};

    use super::*;
    use crate::ports::FailureKind;

    const SECRET: &str = "Xy18Q~secret-text-shown-once";

    type Pairs = Vec<(&'static str, &'static str)>;
    type Answer = (StatusCode, Pairs, String);

    fn script(answers: Vec<Answer>) -> Arc<CannedTransport> {
        CannedTransport::script(
            answers
                .into_iter()
                .map(|(status, pairs, body)| Canned::new(status, body).headers(pairs)),
        )
    }

    fn client(answers: Vec<Answer>) -> (GraphClient, Arc<CannedTransport>, Arc<FixedToken>) {
        let canned = script(answers);
        let credential = FixedToken::new();
        let endpoint = Url::parse(DEFAULT_GRAPH_ENDPOINT).expect("valid");
        let client = GraphClient::new(&endpoint, credential.clone(), Some(canned.options()))
            .expect("valid client");
        (client, canned, credential)
    }

    fn graph_error(code: &str) -> String {
        format!(r#"{{"error":{{"code":"{code}","message":"echo of {SECRET}"}}}}"#)
    }

    const APP: &str = "6f1b7a7e-0b1c-4d2a-9e3f-0123456789ab";
    const OBJECT: &str = "11111111-2222-3333-4444-555555555555";
    const KEY: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

    fn object() -> DirectoryObjectId {
        DirectoryObjectId::parse(OBJECT).expect("valid")
    }

    #[test]
    fn max_lifetimes_read_as_iso_8601_durations_never_longer_than_meant() {
        let day = chrono::Duration::days(1);
        assert_eq!(iso_duration("P90D"), Some(day * 90));
        assert_eq!(iso_duration("P2W"), Some(day * 14));
        assert_eq!(iso_duration("PT12H"), Some(chrono::Duration::hours(12)));
        assert_eq!(
            iso_duration("P1DT2H30M"),
            Some(day + chrono::Duration::minutes(150))
        );
        // The shortest a year and a month can be.
        assert_eq!(iso_duration("P1Y"), Some(day * 365));
        assert_eq!(iso_duration("P1M"), Some(day * 28));
        for bad in ["", "P", "90D", "PT", "P1H", "P1D2", "PxD", "P1.5D", "P1DT"] {
            assert_eq!(iso_duration(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn an_application_is_found_by_app_id_with_an_encoded_filter_and_select() {
        let (client, canned, credential) = client(vec![(
            StatusCode::Ok,
            vec![],
            format!(r#"{{"value":[{{"id":"{OBJECT}","appId":"{APP}","displayName":"billing"}}]}}"#),
        )]);

        let app = client
            .application(&AppId::parse(APP).expect("valid"))
            .await
            .expect("answered")
            .expect("found");

        assert_eq!(app.object_id, object());
        assert_eq!(app.display_name.as_deref(), Some("billing"));
        let seen = canned.seen();
        assert_eq!(
            seen[0].url,
            format!(
                "https://graph.microsoft.com/v1.0/applications?$filter=appId%20eq%20%27{APP}%27&$select=id,appId,displayName"
            )
        );
        assert_eq!(
            credential.scopes(),
            ["https://graph.microsoft.com/.default"]
        );
    }

    #[tokio::test]
    async fn an_unknown_application_is_none_and_two_are_refused() {
        let (client, _, _) = client(vec![
            (StatusCode::Ok, vec![], r#"{"value":[]}"#.into()),
            (
                StatusCode::Ok,
                vec![],
                format!(
                    r#"{{"value":[{{"id":"{OBJECT}","appId":"{APP}"}},{{"id":"{OBJECT}","appId":"{APP}"}}]}}"#
                ),
            ),
        ]);
        let app_id = AppId::parse(APP).expect("valid");

        assert_eq!(client.application(&app_id).await.expect("answered"), None);
        let error = client.application(&app_id).await.expect_err("ambiguous");
        assert_eq!(error.kind, FailureKind::Invalid);
    }

    #[tokio::test]
    async fn add_password_returns_the_secret_once_and_sends_name_and_end() {
        let (client, canned, _) = client(vec![(
            StatusCode::Ok,
            vec![],
            format!(
                r#"{{"customKeyIdentifier":null,"displayName":"keyturn job 1","endDateTime":"2026-01-01T00:00:00Z","hint":"Xy1","keyId":"{KEY}","secretText":"{SECRET}","startDateTime":"2025-01-01T00:00:00Z"}}"#
            ),
        )]);
        let end = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("valid")
            .with_timezone(&Utc);

        let issued = client
            .add_password(&object(), "keyturn job 1", end)
            .await
            .expect("added");

        assert_eq!(issued.secret.expose(), SECRET);
        assert_eq!(issued.credential.key_id, KeyId::parse(KEY).expect("valid"));
        assert_eq!(issued.credential.end, Some(end));
        assert!(!format!("{issued:?}").contains(SECRET));
        let seen = canned.seen();
        let (method, url, body) = (&seen[0].method, &seen[0].url, &seen[0].body);
        assert_eq!(method, "POST");
        assert_eq!(
            url,
            &format!("https://graph.microsoft.com/v1.0/applications/{OBJECT}/addPassword")
        );
        let body: serde_json::Value = serde_json::from_slice(body).expect("JSON");
        assert_eq!(
            body,
            serde_json::json!({"passwordCredential": {
                "displayName": "keyturn job 1", "endDateTime": "2026-01-01T00:00:00Z"
            }})
        );
    }

    #[tokio::test]
    async fn refusals_map_to_permission_policy_not_found_and_transient() {
        let cases: Vec<(StatusCode, Pairs, String, FailureKind)> = vec![
            (
                StatusCode::Forbidden,
                vec![],
                graph_error("Authorization_RequestDenied"),
                FailureKind::PermissionDenied {
                    missing: APPLICATION_PERMISSION.into(),
                },
            ),
            (
                StatusCode::BadRequest,
                vec![],
                graph_error("CredentialInvalidLifetimeAsPerAppPolicy"),
                FailureKind::PolicyViolation {
                    code: "CredentialInvalidLifetimeAsPerAppPolicy".into(),
                },
            ),
            (
                StatusCode::Forbidden,
                vec![],
                graph_error("CredentialTypeNotAllowedAsPerAppPolicy"),
                FailureKind::PolicyViolation {
                    code: "CredentialTypeNotAllowedAsPerAppPolicy".into(),
                },
            ),
            (
                StatusCode::NotFound,
                vec![],
                graph_error("Request_ResourceNotFound"),
                FailureKind::NotFound,
            ),
            (
                StatusCode::TooManyRequests,
                vec![("retry-after", "11")],
                graph_error("TooManyRequests"),
                FailureKind::Transient {
                    retry_after: Some(std::time::Duration::from_secs(11)),
                },
            ),
        ];
        for (status, headers, body, expected) in cases {
            let (client, _, _) = client(vec![(status, headers, body.clone())]);

            let error = client
                .add_password(&object(), "keyturn", Utc::now())
                .await
                .expect_err("refused");

            assert_eq!(error.kind, expected, "{body}");
            assert!(!error.context.contains(SECRET), "{}", error.context);
        }
    }

    #[tokio::test]
    async fn add_password_is_sent_once_even_when_the_client_retries_other_calls() {
        let canned = script(vec![
            (
                StatusCode::InternalServerError,
                vec![],
                graph_error("generalException"),
            ),
            (StatusCode::Ok, vec![], "{}".into()),
        ]);
        let options = ClientOptions {
            transport: Some(Transport::new(canned.clone())),
            ..default_client_options()
        };
        let endpoint = Url::parse(DEFAULT_GRAPH_ENDPOINT).expect("valid");
        let client =
            GraphClient::new(&endpoint, FixedToken::new(), Some(options)).expect("valid client");

        let error = client
            .add_password(&object(), "keyturn", Utc::now())
            .await
            .expect_err("server error");

        assert!(error.is_transient());
        assert_eq!(canned.seen().len(), 1);
    }

    #[tokio::test]
    async fn remove_password_posts_the_key_id() {
        let (client, canned, _) = client(vec![(StatusCode::NoContent, vec![], String::new())]);

        client
            .remove_password(&object(), &KeyId::parse(KEY).expect("valid"))
            .await
            .expect("removed");

        let seen = canned.seen();
        let body: serde_json::Value = serde_json::from_slice(&seen[0].body).expect("JSON");
        assert_eq!(body, serde_json::json!({ "keyId": KEY }));
        assert!(seen[0].url.ends_with("/removePassword"));
    }

    #[tokio::test]
    async fn devices_decode_every_alternative_security_id() {
        let device_id = "0f0e0d0c-0b0a-0908-0706-050403020100";
        let (client, canned, _) = client(vec![(
            StatusCode::Ok,
            vec![],
            format!(
                r#"{{"value":[{{"deviceId":"{device_id}","accountEnabled":true,"isCompliant":false,"isManaged":true,
                "alternativeSecurityIds":[{{"type":2,"identityProvider":null,"key":"AQID"}},{{"type":2,"key":"BAUG"}}]}}]}}"#
            ),
        )]);

        let device = client
            .device(&DeviceId::parse(device_id).expect("valid"))
            .await
            .expect("answered")
            .expect("found");

        assert!(device.account_enabled);
        assert_eq!(device.is_compliant, Some(false));
        let keys: Vec<&[u8]> = device
            .alternative_security_ids
            .iter()
            .map(|a| a.key.as_slice())
            .collect();
        assert_eq!(keys, [&[1u8, 2, 3][..], &[4, 5, 6][..]]);
        let url = &canned.seen()[0].url;
        assert!(
            url.contains(&format!("$filter=deviceId%20eq%20%27{device_id}%27")),
            "{url}"
        );
        assert!(url.contains(
            "$select=deviceId,accountEnabled,alternativeSecurityIds,isCompliant,isManaged"
        ));
    }

    #[tokio::test]
    async fn a_device_lookup_refused_names_device_read_all_and_bad_keys_are_invalid() {
        let device_id = DeviceId::parse("0f0e0d0c-0b0a-0908-0706-050403020100").expect("valid");
        let (client, _, _) = client(vec![
            (
                StatusCode::Forbidden,
                vec![],
                graph_error("Authorization_RequestDenied"),
            ),
            (
                StatusCode::Ok,
                vec![],
                format!(
                    r#"{{"value":[{{"deviceId":"{device_id}","accountEnabled":true,"alternativeSecurityIds":[{{"type":2,"key":"not base64!"}}]}}]}}"#
                ),
            ),
        ]);

        let denied = client.device(&device_id).await.expect_err("refused");
        let malformed = client.device(&device_id).await.expect_err("malformed");

        assert_eq!(
            denied.kind,
            FailureKind::PermissionDenied {
                missing: DEVICE_PERMISSION.into()
            }
        );
        assert_eq!(malformed.kind, FailureKind::Invalid);
    }

    #[test]
    fn the_endpoint_must_be_https_and_sovereign_scopes_follow_it() {
        let credential: Arc<dyn TokenCredential> = FixedToken::new();
        let http = Url::parse("http://graph.microsoft.com").expect("valid");
        assert!(GraphClient::new(&http, credential.clone(), None).is_err());
        let sovereign = Url::parse("https://graph.microsoft.us/").expect("valid");
        let client = GraphClient::new(&sovereign, credential, None).expect("valid");
        assert_eq!(client.base.as_str(), "https://graph.microsoft.us/v1.0/");
    }

    #[test]
    fn filter_values_are_percent_encoded_and_quoted() {
        assert_eq!(percent_encode("appId eq 'a+b'"), "appId%20eq%20%27a%2Bb%27");
        assert_eq!(odata_string("o'brien"), "'o''brien'");
    }
}
