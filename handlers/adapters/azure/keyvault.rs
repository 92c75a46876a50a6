//! Key Vault through Microsoft's official crates (`azure_security_keyvault_secrets` and
//! `_certificates`): the [`SecretStore`] and [`CertificateStore`] ports, and the secret
//! endpoint's `keyvault` [`SecretSource`]. Every failure the crates report is mapped once,
//! here, into the port vocabulary.
//!
//! Listing and metadata reads never fetch a value: Key Vault has no metadata-only read of
//! one secret, so [`SecretStore::secret_properties`] is answered from the versions
//! listing (which carries no values) and only [`SecretStore::secret`] and the endpoint
//! source call get-secret.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::poller::PollerOptions;
use azure_core::http::{
    ClientOptions, DeserializeWith, JsonFormat, RawResponse, RequestContent, Response, StatusCode,
};
use azure_core::time::OffsetDateTime;
use azure_security_keyvault_certificates::models::{
    CertificateAttributes, CertificateClientCreateCertificateOptions,
    CertificateClientGetCertificateOptions, CertificateOperation as SdkOperation,
    CreateCertificateParameters,
};
use azure_security_keyvault_certificates::{CertificateClient, CertificateClientOptions};
use azure_security_keyvault_secrets::models::{
    SecretAttributes, SecretClientGetSecretOptions, SecretClientUpdateSecretPropertiesOptions,
    SetSecretParameters, UpdateSecretPropertiesParameters,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use chrono::{DateTime, Utc};
use futures::{Stream, TryStreamExt};
use serde::Deserialize;

use crate::adapters::azure::client::http::{
    FailureContext, ServiceErrorCode, default_client_options, failure_from_status,
    failure_from_transport,
};
use crate::domain::names::{ObjectId, ObjectName, ObjectType, ObjectVersion, VaultUrl};
use crate::domain::secret::SecretValue;
use crate::ports::source::{SecretSource, SourcedSecret};
use crate::ports::vault::{
    CertificateOperation, CertificateProperties, CertificateStore, NewSecretVersion, Secret,
    SecretProperties, SecretStore,
};
use crate::ports::{FailureKind, PortError};

/// Vault clients kept per process. Each client holds its own bearer policy and token
/// cache, so reusing it saves the 401 challenge and a token request per call; keyturn
/// manages a handful of vaults (`KEYTURN_VAULTS`), and a bound this far above that keeps
/// a stream of unexpected vault URLs from growing the cache without limit.
pub(crate) const MAX_CACHED_VAULTS: usize = 64;

/// How long the official crate's poller waits before handing over an in-progress answer
/// when Key Vault sends no `Retry-After`: azure_core sleeps this interval before yielding
/// even the first answer (default 30 s), and keyturn reads only that first answer, so it
/// is set to azure_core's enforced minimum of one second.
pub(crate) const RENEWAL_POLL_INTERVAL_SECONDS: i64 = 1;

/// Key Vault's inner error code for a get on a disabled secret version (HTTP 403).
const SECRET_DISABLED: &str = "SecretDisabled";

/// Key Vault's inner error codes for a 403 its network rules gave before its roles were
/// looked at: the firewall does not admit the caller's address, or public network access
/// is disabled and the request did not come through an approved private link.
const NETWORK_REFUSALS: [&str; 2] = ["ForbiddenByFirewall", "ForbiddenByConnection"];

/// Key Vault's final certificate operation states ("Get Certificate Operation": `status`).
const OPERATION_COMPLETED: &str = "completed";
const OPERATION_CANCELLED: &str = "cancelled";
const OPERATION_FAILED: &str = "failed";

/// The port's metadata from any of the official crate's secret models (a listed item, a
/// got, set or updated secret): they carry the same fields under different types.
macro_rules! secret_properties {
    ($vault:expr, $model:ident, $context:expr) => {
        secret_properties(
            $vault,
            $model.id.as_deref(),
            $model.attributes.as_ref(),
            $model.content_type,
            $model.tags,
            $model.managed,
            $context,
        )
    };
}

/// The port's metadata from either of the official crate's certificate models (a listed
/// item or a got certificate).
macro_rules! certificate_properties {
    ($vault:expr, $model:ident, $context:expr) => {
        certificate_properties(
            $vault,
            $model.id.as_deref(),
            $model.attributes.as_ref(),
            $model.tags,
            $model.x509_thumbprint.as_deref(),
            $context,
        )
    };
}

/// Key Vault secrets and certificates in any number of vaults, through the official
/// crates. One instance serves both ports; clients are built per vault on first use.
pub struct KeyVault {
    credential: Arc<dyn TokenCredential>,
    options: ClientOptions,
    verify_challenge_resource: bool,
    secrets: Mutex<HashMap<VaultUrl, Arc<SecretClient>>>,
    certificates: Mutex<HashMap<VaultUrl, Arc<CertificateClient>>>,
}

impl fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVault")
            .field("verify_challenge_resource", &self.verify_challenge_resource)
            .finish_non_exhaustive()
    }
}

impl KeyVault {
    /// Clients authenticate with `credential` (Key Vault's challenge names the scope);
    /// `options` carry the transport and retries, `None` meaning keyturn's defaults.
    pub fn new(credential: Arc<dyn TokenCredential>, options: Option<ClientOptions>) -> Self {
        Self {
            credential,
            options: options.unwrap_or_else(default_client_options),
            verify_challenge_resource: true,
            secrets: Mutex::new(HashMap::new()),
            certificates: Mutex::new(HashMap::new()),
        }
    }

    /// Accepts a 401 challenge whose resource is not the vault's own domain. Only for
    /// HTTPS stand-ins on loopback, whose host cannot be a `vault.azure.net` name; in
    /// Azure the check stops a vault URL from steering tokens to another resource.
    pub fn without_challenge_resource_check(mut self) -> Self {
        self.verify_challenge_resource = false;
        self
    }

    fn secret_client(&self, vault: &VaultUrl) -> Result<Arc<SecretClient>, PortError> {
        cached(&self.secrets, vault, || {
            let options = SecretClientOptions {
                client_options: self.options.clone(),
                verify_challenge_resource: Some(self.verify_challenge_resource),
                ..SecretClientOptions::default()
            };
            SecretClient::new(vault.as_str(), self.credential.clone(), Some(options))
        })
    }

    fn certificate_client(&self, vault: &VaultUrl) -> Result<Arc<CertificateClient>, PortError> {
        cached(&self.certificates, vault, || {
            let options = CertificateClientOptions {
                client_options: self.options.clone(),
                verify_challenge_resource: Some(self.verify_challenge_resource),
                ..CertificateClientOptions::default()
            };
            CertificateClient::new(vault.as_str(), self.credential.clone(), Some(options))
        })
    }

    /// Every version's metadata, paging through Key Vault's listing.
    async fn versions(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        context: &FailureContext<'_>,
    ) -> Result<Vec<SecretProperties>, PortError> {
        let client = self.secret_client(vault)?;
        let pager = client
            .list_secret_properties_versions(name.as_str(), None)
            .map_err(|e| failure(&e, context))?;
        collect(pager, context, |item| {
            secret_properties!(vault, item, context)
        })
        .await
    }
}

fn cached<T>(
    cache: &Mutex<HashMap<VaultUrl, Arc<T>>>,
    vault: &VaultUrl,
    build: impl FnOnce() -> azure_core::Result<T>,
) -> Result<Arc<T>, PortError> {
    let mut clients = cache
        .lock()
        .map_err(|_| PortError::invalid("the Key Vault client cache is unusable"))?;
    if let Some(client) = clients.get(vault) {
        return Ok(client.clone());
    }
    let client =
        Arc::new(build().map_err(|_| {
            PortError::invalid(format!("cannot build a Key Vault client for {vault}"))
        })?);
    if clients.len() >= MAX_CACHED_VAULTS {
        clients.clear();
    }
    clients.insert(vault.clone(), client.clone());
    Ok(client)
}

fn poller_options() -> CertificateClientCreateCertificateOptions<'static> {
    CertificateClientCreateCertificateOptions {
        method_options: PollerOptions {
            frequency: azure_core::time::Duration::seconds(RENEWAL_POLL_INTERVAL_SECONDS),
            ..PollerOptions::default()
        },
    }
}

/// The vault as an operator knows it: its name, or the URL's host for other hosts.
fn vault_label(vault: &VaultUrl) -> String {
    match vault.vault_name() {
        Some(name) => format!("vault {name}"),
        None => format!("vault {}", vault.url().host_str().unwrap_or(vault.as_str())),
    }
}

/// Role names for the context of a failure: what to grant, and where.
struct Roles {
    secrets_read: String,
    secrets_write: String,
    certificates: String,
}

impl Roles {
    fn of(vault: &VaultUrl) -> Self {
        let label = vault_label(vault);
        Self {
            secrets_read: format!(
                "Key Vault Secrets User (or Key Vault Secrets Officer) on {label}"
            ),
            secrets_write: format!("Key Vault Secrets Officer on {label}"),
            certificates: format!("Key Vault Certificates Officer on {label}"),
        }
    }
}

fn context<'a>(operation: &'a str, missing_permission: &'a str) -> FailureContext<'a> {
    FailureContext {
        operation,
        missing_permission,
        policy_codes: &[],
    }
}

/// The one mapping of an official-crate error (secrets, certificates and the audit
/// signer's keys): a network refusal told apart from a missing role, an HTTP answer
/// through [`failure_from_status`] (its headers carry `Retry-After`), anything else
/// through [`failure_from_transport`]. The crate's message is never copied: it quotes
/// Key Vault's, which can echo a request.
pub(crate) fn failure(error: &azure_core::Error, context: &FailureContext<'_>) -> PortError {
    if http_status(error) == Some(StatusCode::Forbidden)
        && let Some(code) = inner_code(error).filter(|c| NETWORK_REFUSALS.contains(&c.as_str()))
    {
        return PortError::new(
            FailureKind::NetworkRefused {
                code: code.as_str().to_owned(),
            },
            format!(
                "{}: HTTP 403 ({}): the vault's network rules refuse this caller (firewall, \
                 private endpoint or public access), not its role",
                context.operation,
                code.as_str()
            ),
        );
    }
    match error.kind() {
        ErrorKind::HttpResponse {
            status,
            raw_response: Some(raw),
            ..
        } => {
            let code = ServiceErrorCode::from_response(raw.headers(), raw.body().as_ref());
            failure_from_status(
                *status,
                raw.headers(),
                code.as_ref(),
                OffsetDateTime::now_utc(),
                context,
            )
        }
        _ => failure_from_transport(error, context),
    }
}

/// The model of a Key Vault answer; a failed request and an unreadable body are both
/// mapped through [`failure`].
async fn answer<T: DeserializeWith<JsonFormat>>(
    request: impl Future<Output = azure_core::Result<Response<T>>>,
    context: &FailureContext<'_>,
) -> Result<T, PortError> {
    request
        .await
        .map_err(|e| failure(&e, context))?
        .into_model()
        .map_err(|e| failure(&e, context))
}

/// A request body for the official crate, or an error naming the operation.
fn encode<P, T>(parameters: P, operation: &str) -> Result<RequestContent<T>, PortError>
where
    P: TryInto<RequestContent<T>>,
{
    parameters
        .try_into()
        .map_err(|_| PortError::invalid(format!("{operation}: encoding the request")))
}

/// Every item of a Key Vault listing, paging through it, each converted by `convert`.
async fn collect<I, T>(
    pager: impl Stream<Item = azure_core::Result<I>>,
    context: &FailureContext<'_>,
    mut convert: impl FnMut(I) -> Result<T, PortError>,
) -> Result<Vec<T>, PortError> {
    let mut pager = std::pin::pin!(pager);
    let mut items = Vec::new();
    while let Some(item) = pager.try_next().await.map_err(|e| failure(&e, context))? {
        items.push(convert(item)?);
    }
    Ok(items)
}

fn http_status(error: &azure_core::Error) -> Option<StatusCode> {
    error.http_status()
}

/// Key Vault's inner error code (`error.innererror.code`), which tells a disabled secret
/// or key (`SecretDisabled`, `KeyDisabled`) or a network rule from a missing role
/// (`ForbiddenByRbac`) behind the same 403.
pub(crate) fn inner_code(error: &azure_core::Error) -> Option<ServiceErrorCode> {
    #[derive(Deserialize)]
    struct Envelope {
        error: Option<Outer>,
    }
    #[derive(Deserialize)]
    struct Outer {
        innererror: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        code: Option<String>,
    }
    let ErrorKind::HttpResponse {
        raw_response: Some(raw),
        ..
    } = error.kind()
    else {
        return None;
    };
    let raw: &RawResponse = raw;
    let envelope: Envelope = serde_json::from_slice(raw.body().as_ref()).ok()?;
    envelope
        .error?
        .innererror?
        .code
        .and_then(|code| ServiceErrorCode::parse(&code))
}

fn is_disabled(error: &azure_core::Error) -> bool {
    http_status(error) == Some(StatusCode::Forbidden)
        && inner_code(error).is_some_and(|code| code.as_str() == SECRET_DISABLED)
}

fn to_utc(time: Option<OffsetDateTime>) -> Option<DateTime<Utc>> {
    let time = time?;
    DateTime::from_timestamp(time.unix_timestamp(), time.nanosecond())
}

/// Key Vault keeps attribute times in whole Unix seconds.
fn to_offset(time: Option<DateTime<Utc>>) -> Result<Option<OffsetDateTime>, PortError> {
    time.map(|t| {
        OffsetDateTime::from_unix_timestamp(t.timestamp())
            .map_err(|_| PortError::invalid("a secret time is outside Key Vault's range"))
    })
    .transpose()
}

fn sorted_tags(tags: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    tags.unwrap_or_default().into_iter().collect()
}

/// The id of an object of `kind` Key Vault returned, re-rooted at the vault the caller
/// named, so ids compare equal to the configured vault URL whatever host spelling Key
/// Vault answers with.
fn object_id(
    vault: &VaultUrl,
    kind: ObjectType,
    id: Option<&str>,
    context: &FailureContext<'_>,
) -> Result<ObjectId, PortError> {
    let invalid = || {
        PortError::invalid(format!(
            "{}: Key Vault answered without a valid {} id",
            context.operation,
            kind.as_str().to_lowercase()
        ))
    };
    let parsed = ObjectId::parse(id.ok_or_else(invalid)?).map_err(|_| invalid())?;
    if parsed.object_type() != kind {
        return Err(invalid());
    }
    Ok(vault.object_id(kind, parsed.name().clone(), parsed.version().cloned()))
}

fn secret_properties(
    vault: &VaultUrl,
    id: Option<&str>,
    attributes: Option<&SecretAttributes>,
    content_type: Option<String>,
    tags: Option<HashMap<String, String>>,
    managed: Option<bool>,
    context: &FailureContext<'_>,
) -> Result<SecretProperties, PortError> {
    Ok(SecretProperties {
        id: object_id(vault, ObjectType::Secret, id, context)?,
        // Key Vault omits `enabled` only for versions it never disabled.
        enabled: attributes.and_then(|a| a.enabled).unwrap_or(true),
        not_before: to_utc(attributes.and_then(|a| a.not_before)),
        expires: to_utc(attributes.and_then(|a| a.expires)),
        created: to_utc(attributes.and_then(|a| a.created)),
        updated: to_utc(attributes.and_then(|a| a.updated)),
        content_type,
        tags: sorted_tags(tags),
        managed: managed.unwrap_or(false),
    })
}

fn certificate_properties(
    vault: &VaultUrl,
    id: Option<&str>,
    attributes: Option<&CertificateAttributes>,
    tags: Option<HashMap<String, String>>,
    x5t: Option<&[u8]>,
    context: &FailureContext<'_>,
) -> Result<CertificateProperties, PortError> {
    Ok(CertificateProperties {
        id: object_id(vault, ObjectType::Certificate, id, context)?,
        enabled: attributes.and_then(|a| a.enabled).unwrap_or(true),
        not_before: to_utc(attributes.and_then(|a| a.not_before)),
        expires: to_utc(attributes.and_then(|a| a.expires)),
        tags: sorted_tags(tags),
        x5t_hex: x5t.map(hex::encode),
    })
}

/// The current version among `versions`: Key Vault's current version is the newest one
/// created. `None` when two versions share the newest creation second, which metadata
/// alone cannot order.
fn newest(versions: Vec<SecretProperties>) -> Option<Option<SecretProperties>> {
    let newest_created = versions.iter().filter_map(|v| v.created).max();
    let mut candidates: Vec<SecretProperties> = versions
        .into_iter()
        .filter(|v| v.created == newest_created)
        .collect();
    match candidates.len() {
        0 => Some(None),
        1 => Some(candidates.pop()),
        _ => None,
    }
}

/// Where a certificate operation stands, as Key Vault reports it: `completed` and
/// `cancelled` are final, an `error` means failed (as the official crate's poller reads
/// it), anything else is still in progress.
enum OperationState {
    InProgress,
    Completed,
    Failed { code: String },
    Cancelled,
}

impl OperationState {
    fn of(operation: SdkOperation) -> Self {
        match operation.status.as_deref() {
            Some(OPERATION_COMPLETED) => Self::Completed,
            Some(OPERATION_CANCELLED) => Self::Cancelled,
            status if operation.error.is_some() || status == Some(OPERATION_FAILED) => {
                Self::Failed {
                    code: operation
                        .error
                        .and_then(|e| e.code)
                        .and_then(|code| ServiceErrorCode::parse(&code))
                        .map(|code| code.as_str().to_owned())
                        .unwrap_or_else(|| OPERATION_FAILED.to_owned()),
                }
            }
            _ => Self::InProgress,
        }
    }
}

/// A get-secret answer, telling a disabled version apart from a missing one.
enum Read {
    Found(Box<Secret>),
    Missing,
    Disabled,
}

impl KeyVault {
    async fn read(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: Option<&ObjectVersion>,
        context: &FailureContext<'_>,
    ) -> Result<Read, PortError> {
        let client = self.secret_client(vault)?;
        let options = SecretClientGetSecretOptions {
            secret_version: version.map(|v| v.as_str().to_owned()),
            ..SecretClientGetSecretOptions::default()
        };
        let response = match client.get_secret(name.as_str(), Some(options)).await {
            Ok(response) => response,
            Err(error) if http_status(&error) == Some(StatusCode::NotFound) => {
                return Ok(Read::Missing);
            }
            Err(error) if is_disabled(&error) => return Ok(Read::Disabled),
            Err(error) => return Err(failure(&error, context)),
        };
        let secret = response.into_model().map_err(|e| failure(&e, context))?;
        let value = secret.value.map(SecretValue::new).ok_or_else(|| {
            PortError::invalid(format!(
                "{}: Key Vault answered without a value",
                context.operation
            ))
        })?;
        let properties = secret_properties!(vault, secret, context)?;
        Ok(Read::Found(Box::new(Secret { properties, value })))
    }

    /// The port's view of an operation: a completed one is reported with the version it
    /// made, which Key Vault's operation does not name (its `target` is versionless), so
    /// the certificate's current version is read.
    async fn resolve(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        state: OperationState,
        context: &FailureContext<'_>,
    ) -> Result<CertificateOperation, PortError> {
        Ok(match state {
            OperationState::InProgress => CertificateOperation::InProgress,
            OperationState::Cancelled => CertificateOperation::Cancelled,
            OperationState::Failed { code } => CertificateOperation::Failed { code },
            OperationState::Completed => {
                let current = self.certificate_properties(vault, name).await?;
                match current.and_then(|c| c.id.version().cloned()) {
                    Some(version) => CertificateOperation::Completed { version },
                    None => {
                        return Err(PortError::invalid(format!(
                            "{}: the operation completed but the certificate has no version",
                            context.operation
                        )));
                    }
                }
            }
        })
    }
}

#[async_trait]
impl SecretStore for KeyVault {
    async fn list_secrets(&self, vault: &VaultUrl) -> Result<Vec<SecretProperties>, PortError> {
        let roles = Roles::of(vault);
        let operation = format!("listing the secrets of {}", vault_label(vault));
        let context = context(&operation, &roles.secrets_read);
        let client = self.secret_client(vault)?;
        let pager = client
            .list_secret_properties(None)
            .map_err(|e| failure(&e, &context))?;
        collect(pager, &context, |item| {
            secret_properties!(vault, item, &context)
        })
        .await
    }

    async fn secret_properties(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: Option<&ObjectVersion>,
    ) -> Result<Option<SecretProperties>, PortError> {
        let roles = Roles::of(vault);
        let operation = format!(
            "reading the metadata of secret {name} in {}",
            vault_label(vault)
        );
        let context = context(&operation, &roles.secrets_read);
        let versions = match self.versions(vault, name, &context).await {
            Ok(versions) => versions,
            Err(error) if error.kind == FailureKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        if let Some(version) = version {
            return Ok(versions
                .into_iter()
                .find(|v| v.id.version() == Some(version)));
        }
        match newest(versions) {
            Some(current) => Ok(current),
            // Two versions created in the same second: only Key Vault knows which is
            // current. Ask it; the value that comes along is dropped unread.
            None => Ok(self
                .secret(vault, name, None)
                .await?
                .map(|secret| secret.properties)),
        }
    }

    async fn list_versions(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<Vec<SecretProperties>, PortError> {
        let roles = Roles::of(vault);
        let operation = format!(
            "listing the versions of secret {name} in {}",
            vault_label(vault)
        );
        self.versions(vault, name, &context(&operation, &roles.secrets_read))
            .await
    }

    async fn secret(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: Option<&ObjectVersion>,
    ) -> Result<Option<Secret>, PortError> {
        let roles = Roles::of(vault);
        let operation = format!("reading secret {name} in {}", vault_label(vault));
        let context = context(&operation, &roles.secrets_read);
        match self.read(vault, name, version, &context).await? {
            Read::Found(secret) => Ok(Some(*secret)),
            Read::Missing => Ok(None),
            Read::Disabled => Err(PortError::invalid(format!(
                "{operation}: the version is disabled, so Key Vault refuses to read it"
            ))),
        }
    }

    async fn set_secret(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        value: &SecretValue,
        version: NewSecretVersion,
    ) -> Result<SecretProperties, PortError> {
        let roles = Roles::of(vault);
        let operation = format!(
            "writing a new version of secret {name} in {}",
            vault_label(vault)
        );
        let context = context(&operation, &roles.secrets_write);
        let client = self.secret_client(vault)?;
        let parameters = SetSecretParameters {
            value: Some(value.expose().to_owned()),
            content_type: version.content_type,
            secret_attributes: Some(SecretAttributes {
                enabled: Some(true),
                not_before: to_offset(version.not_before)?,
                expires: to_offset(version.expires)?,
                ..SecretAttributes::default()
            }),
            tags: Some(version.tags.into_iter().collect()),
        };
        let content: RequestContent<SetSecretParameters> = encode(parameters, &operation)?;
        let secret = answer(client.set_secret(name.as_str(), content, None), &context).await?;
        secret_properties!(vault, secret, &context)
    }

    async fn update_tags(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
        version: &ObjectVersion,
        tags: BTreeMap<String, String>,
    ) -> Result<SecretProperties, PortError> {
        let roles = Roles::of(vault);
        let operation = format!(
            "updating the tags of secret {name} version {version} in {}",
            vault_label(vault)
        );
        let context = context(&operation, &roles.secrets_write);
        let client = self.secret_client(vault)?;
        let parameters = UpdateSecretPropertiesParameters {
            tags: Some(tags.into_iter().collect()),
            ..UpdateSecretPropertiesParameters::default()
        };
        let content: RequestContent<UpdateSecretPropertiesParameters> =
            encode(parameters, &operation)?;
        let options = SecretClientUpdateSecretPropertiesOptions {
            secret_version: Some(version.as_str().to_owned()),
            ..SecretClientUpdateSecretPropertiesOptions::default()
        };
        let secret = answer(
            client.update_secret_properties(name.as_str(), content, Some(options)),
            &context,
        )
        .await?;
        secret_properties!(vault, secret, &context)
    }

    async fn delete_secret(&self, vault: &VaultUrl, name: &ObjectName) -> Result<(), PortError> {
        let roles = Roles::of(vault);
        let operation = format!("deleting secret {name} in {}", vault_label(vault));
        let context = context(&operation, &roles.secrets_write);
        let client = self.secret_client(vault)?;
        // The answer describes the deleted secret (its recovery id); nothing in it is needed.
        answer(client.delete_secret(name.as_str(), None), &context).await?;
        Ok(())
    }
}

#[async_trait]
impl CertificateStore for KeyVault {
    async fn list_certificates(
        &self,
        vault: &VaultUrl,
    ) -> Result<Vec<CertificateProperties>, PortError> {
        let roles = Roles::of(vault);
        let operation = format!("listing the certificates of {}", vault_label(vault));
        let context = context(&operation, &roles.certificates);
        let client = self.certificate_client(vault)?;
        let pager = client
            .list_certificate_properties(None)
            .map_err(|e| failure(&e, &context))?;
        collect(pager, &context, |item| {
            certificate_properties!(vault, item, &context)
        })
        .await
    }

    async fn certificate_properties(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<Option<CertificateProperties>, PortError> {
        let roles = Roles::of(vault);
        let operation = format!("reading certificate {name} in {}", vault_label(vault));
        let context = context(&operation, &roles.certificates);
        let client = self.certificate_client(vault)?;
        let options = CertificateClientGetCertificateOptions::default();
        let certificate = match client.get_certificate(name.as_str(), Some(options)).await {
            Ok(response) => response.into_model().map_err(|e| failure(&e, &context))?,
            Err(error) if http_status(&error) == Some(StatusCode::NotFound) => return Ok(None),
            Err(error) => return Err(failure(&error, &context)),
        };
        certificate_properties!(vault, certificate, &context).map(Some)
    }

    async fn issuer(&self, vault: &VaultUrl, name: &ObjectName) -> Result<String, PortError> {
        let roles = Roles::of(vault);
        let operation = format!(
            "reading the policy of certificate {name} in {}",
            vault_label(vault)
        );
        let context = context(&operation, &roles.certificates);
        let client = self.certificate_client(vault)?;
        let policy = answer(client.get_certificate_policy(name.as_str(), None), &context).await?;
        policy
            .issuer_parameters
            .and_then(|issuer| issuer.name)
            .filter(|issuer| !issuer.is_empty())
            .ok_or_else(|| PortError::invalid(format!("{operation}: the policy names no issuer")))
    }

    async fn begin_renewal(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<CertificateOperation, PortError> {
        let roles = Roles::of(vault);
        let operation = format!("renewing certificate {name} in {}", vault_label(vault));
        let context = context(&operation, &roles.certificates);
        match self.renewal_status(vault, name).await {
            Ok(CertificateOperation::InProgress) => return Ok(CertificateOperation::InProgress),
            Ok(_) => {}
            Err(error) if error.kind == FailureKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let client = self.certificate_client(vault)?;
        let policy = answer(client.get_certificate_policy(name.as_str(), None), &context).await?;
        // Key Vault keeps tags per version and a create carries only the tags it is
        // given: the new version is given the current version's, so the tags that make
        // keyturn manage the certificate survive its renewal.
        let tags = self
            .certificate_properties(vault, name)
            .await?
            .map(|current| current.tags)
            .filter(|tags| !tags.is_empty());
        let parameters = CreateCertificateParameters {
            certificate_policy: Some(policy),
            tags: tags.map(|tags| tags.into_iter().collect()),
            ..CreateCertificateParameters::default()
        };
        let content: RequestContent<CreateCertificateParameters> = encode(parameters, &operation)?;
        let mut poller = client
            .begin_create_certificate(name.as_str(), content, Some(poller_options()))
            .map_err(|e| failure(&e, &context))?;
        // Only the create request's own answer: following the operation is the engine's
        // business (renewal_status), so no invocation waits on an issuer.
        let first = match poller.try_next().await {
            Ok(first) => first,
            // Key Vault answers 409 when an operation started since the check above.
            Err(error) if http_status(&error) == Some(StatusCode::Conflict) => {
                return self.renewal_status(vault, name).await;
            }
            Err(error) => return Err(failure(&error, &context)),
        };
        let response = first.ok_or_else(|| {
            PortError::transient(format!("{operation}: Key Vault sent no operation"))
        })?;
        let started = response.into_model().map_err(|e| failure(&e, &context))?;
        self.resolve(vault, name, OperationState::of(started), &context)
            .await
    }

    async fn renewal_status(
        &self,
        vault: &VaultUrl,
        name: &ObjectName,
    ) -> Result<CertificateOperation, PortError> {
        let roles = Roles::of(vault);
        let operation = format!(
            "reading the pending operation of certificate {name} in {}",
            vault_label(vault)
        );
        let context = context(&operation, &roles.certificates);
        let client = self.certificate_client(vault)?;
        let state = answer(
            client.get_certificate_operation(name.as_str(), None),
            &context,
        )
        .await?;
        self.resolve(vault, name, OperationState::of(state), &context)
            .await
    }
}

/// The secret endpoint's `keyvault` backend: the current value of a secret in one vault.
#[derive(Debug)]
pub struct KeyVaultSource {
    vault: VaultUrl,
    key_vault: KeyVault,
}

impl KeyVaultSource {
    pub fn new(
        vault: VaultUrl,
        credential: Arc<dyn TokenCredential>,
        options: Option<ClientOptions>,
    ) -> Self {
        Self {
            vault,
            key_vault: KeyVault::new(credential, options),
        }
    }

    /// See [`KeyVault::without_challenge_resource_check`]: for loopback stand-ins only.
    pub fn without_challenge_resource_check(mut self) -> Self {
        self.key_vault = self.key_vault.without_challenge_resource_check();
        self
    }
}

#[async_trait]
impl SecretSource for KeyVaultSource {
    async fn fetch(
        &self,
        name: &ObjectName,
        now: DateTime<Utc>,
    ) -> Result<Option<SourcedSecret>, PortError> {
        let operation = format!("reading secret {name} in {}", vault_label(&self.vault));
        let roles = Roles::of(&self.vault);
        let context = context(&operation, &roles.secrets_read);
        let secret = match self
            .key_vault
            .read(&self.vault, name, None, &context)
            .await?
        {
            Read::Found(secret) => *secret,
            // Key Vault refuses to read a disabled current version, and a device must
            // not get it anyway.
            Read::Missing | Read::Disabled => return Ok(None),
        };
        Ok(SourcedSecret::from_vault(secret, now))
    }
}
