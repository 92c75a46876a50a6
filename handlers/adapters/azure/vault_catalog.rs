//! Key Vault's data plane read as metadata for discovery ([`VaultCatalog`]): the list
//! operations (secrets, certificates, keys; pages of at most 25 with `nextLink`), `GET`
//! of a certificate (its public certificate and policy) and of a key (its public JSON
//! web key) and rotation policy. Nothing else: no operation here returns a secret value,
//! a private key or key material, and Key Vault Reader, which cannot read values, is all
//! the identity needs.
//!
//! A typed client on azure_core's pipeline rather than the official crates: discovery
//! walks hundreds of vaults from one client, follows `nextLink`s as Key Vault gives them,
//! and needs the official keys crate for nothing else.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::headers::HeaderName;
use azure_core::http::{ClientOptions, Method, Pipeline, Request, Transport, Url};
use azure_core::time::OffsetDateTime;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::adapters::azure::client::http::{
    self, FailureContext, PipelineAuth, ServiceErrorCode, failure_from_status, pipeline,
};
use crate::domain::inventory::{
    CertificateDetails, CredentialHandle, CredentialKind, CredentialSource, FindingKind,
    InventoryCredential, KeyDetails, LifetimeAction, LifetimeActionType, LifetimeTrigger, Scope,
    ScopeFinding,
};
use crate::ports::catalog::{CatalogPage, Cursor, ObjectKind, Stamp, VaultCatalog, VaultRef};
use crate::ports::{FailureKind, PortError};

/// The data-plane version discovery speaks (7.6 lists, certificate policies and key
/// rotation policies as read here).
pub const API_VERSION: &str = "7.6";
/// Key Vault's largest (and default) page: `maxresults` 1-25.
pub const PAGE_SIZE: u32 = 25;
/// Key Vault's token audience in the public cloud.
pub const KEY_VAULT_SCOPE: &str = "https://vault.azure.net/.default";
/// What discovery's identity needs on a vault.
pub const READER_PERMISSION: &str = "Key Vault Reader on the vault (an access-policy vault: an access policy with list and get permissions on keys and certificates and list on secrets, no secret get)";
/// Key Vault's inner codes for a network refusal (firewall, public access disabled).
const NETWORK_REFUSALS: [&str; 2] = ["ForbiddenByFirewall", "ForbiddenByConnection"];
/// Signature algorithms that hash with SHA-1 (RFC 3279 section 2.2.1 and 2.2.3).
const SHA1_SIGNATURES: [&str; 3] = [
    "1.2.840.113549.1.1.5",
    "1.2.840.10045.4.1",
    "1.2.840.10040.4.3",
];

const ACCEPT: HeaderName = HeaderName::from_static("accept");

/// How long a connection to a vault may stay idle before it is closed. Discovery reads a
/// vault once a sweep, in one job whose requests follow one another milliseconds apart
/// (the vault's budget spaces them 5 ms apart by default): a connection idle this long
/// belongs to a listing or a vault that is done. reqwest's default, 90 seconds, keeps the
/// connections to every vault read in the last minute and a half (a job has up to nine
/// requests in flight, each connection with its TLS and read buffers): memory that grows
/// with the vaults a sweep reads rather than with the vaults it reads at once.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_millis(500);

/// azure_core's own timeouts for its default reqwest client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP client discovery reads vaults with: `builder` (a caller's TLS roots, for
/// instance) with [`IDLE_CONNECTION_TIMEOUT`], azure_core's connect and read timeouts,
/// and no redirects, as azure_core's default client.
pub fn http_client(builder: reqwest::ClientBuilder) -> reqwest::Result<reqwest::Client> {
    builder
        .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Key Vault's data plane, for any vault the identity can read.
#[derive(Clone)]
pub struct KeyVaultCatalog {
    pipeline: Pipeline,
}

impl fmt::Debug for KeyVaultCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVaultCatalog").finish_non_exhaustive()
    }
}

impl KeyVaultCatalog {
    /// A client whose tokens are for `scope` (Key Vault's audience in the cloud used).
    /// Without a transport in `options`, requests go through [`http_client`]; a caller's
    /// transport is used as given.
    pub fn new(
        credential: Arc<dyn TokenCredential>,
        scope: &str,
        options: Option<ClientOptions>,
    ) -> Self {
        let mut options = options.unwrap_or_else(http::default_client_options);
        if options.transport.is_none() {
            match http_client(reqwest::Client::builder()) {
                Ok(client) => options.transport = Some(Transport::new(Arc::new(client))),
                // azure_core's own client then, with its 90-second idle connections.
                Err(error) => tracing::warn!(
                    error = %error,
                    "the Key Vault discovery client could not be built with its connection policy"
                ),
            }
        }
        let options = Some(options);
        Self {
            pipeline: pipeline(
                options,
                PipelineAuth::Bearer {
                    credential,
                    scope: scope.to_owned(),
                },
            ),
        }
    }

    async fn get(&self, url: Url, operation: &str) -> Result<Value, PortError> {
        let context = FailureContext {
            operation,
            missing_permission: READER_PERMISSION,
            policy_codes: &[],
        };
        let mut request = Request::new(url, Method::Get);
        request.insert_header(ACCEPT, "application/json");
        let response = http::send(&self.pipeline, &mut request, &context).await?;
        let body = response.body().as_ref();
        if response.status().is_success() {
            return serde_json::from_slice(body)
                .map_err(|_| PortError::invalid(format!("{operation}: the answer is not JSON")));
        }
        if u16::from(response.status()) == 403
            && let Some(code) = inner_code(body).filter(|c| NETWORK_REFUSALS.contains(&c.as_str()))
        {
            return Err(PortError::new(
                FailureKind::NetworkRefused { code: code.clone() },
                format!(
                    "{operation}: HTTP 403 ({code}): the vault's network rules refuse discovery"
                ),
            ));
        }
        let code = ServiceErrorCode::from_response(response.headers(), body);
        Err(failure_from_status(
            response.status(),
            response.headers(),
            code.as_ref(),
            OffsetDateTime::now_utc(),
            &context,
        ))
    }
}

fn inner_code(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value["error"]["innererror"]["code"]
        .as_str()
        .filter(|c| c.len() <= 64)
        .map(str::to_owned)
}

/// `{vault}{path}?api-version=...`, or the service's `nextLink` when it stays on the
/// vault's origin (a link elsewhere would carry the token away).
fn page_url(vault: &VaultRef, kind: ObjectKind, after: Option<&Cursor>) -> Result<Url, PortError> {
    match after {
        Some(cursor) => {
            let url = Url::parse(cursor.as_str())
                .map_err(|_| PortError::invalid("Key Vault's nextLink is not a URL"))?;
            if url.origin() != vault.uri.url().origin() {
                return Err(PortError::invalid(
                    "Key Vault's nextLink leaves the vault's origin",
                ));
            }
            Ok(url)
        }
        None => {
            let mut url = vault.uri.url().clone();
            url.set_path(kind.as_str());
            url.set_query(Some(&format!(
                "api-version={API_VERSION}&maxresults={PAGE_SIZE}"
            )));
            Ok(url)
        }
    }
}

/// The first page of an object's versions, or the service's `nextLink` on the vault's
/// origin.
fn versions_url(
    vault: &VaultRef,
    kind: ObjectKind,
    name: &str,
    after: Option<&Cursor>,
) -> Result<Url, PortError> {
    if after.is_some() {
        return page_url(vault, kind, after);
    }
    let mut url = vault.uri.url().clone();
    url.path_segments_mut()
        .map_err(|_| PortError::invalid("a vault URL that cannot hold a path"))?
        .clear()
        .extend([kind.as_str(), name, "versions"]);
    url.set_query(Some(&format!(
        "api-version={API_VERSION}&maxresults={PAGE_SIZE}"
    )));
    Ok(url)
}

fn object_url(vault: &VaultRef, path: &str) -> Url {
    let mut url = vault.uri.url().clone();
    url.set_path(path);
    url.set_query(Some(&format!("api-version={API_VERSION}")));
    url
}

#[derive(Debug, Deserialize, Default)]
struct Attributes {
    enabled: Option<bool>,
    created: Option<Value>,
    updated: Option<Value>,
    nbf: Option<Value>,
    exp: Option<Value>,
}

/// An item of any of the three lists (`id` for secrets and certificates, `kid` for keys).
#[derive(Debug, Deserialize)]
struct ListItem {
    id: Option<String>,
    kid: Option<String>,
    #[serde(default)]
    attributes: Attributes,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(rename = "contentType")]
    content_type: Option<String>,
    /// Set on a certificate's backing secret and key: listed with the certificate.
    #[serde(default)]
    managed: bool,
    x5t: Option<String>,
}

/// A Key Vault time: seconds since the epoch. `Err` for anything else.
fn unix_time(value: &Option<Value>) -> Result<Option<DateTime<Utc>>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .map(Some)
            .ok_or(()),
        Some(_) => Err(()),
    }
}

fn x5t_hex(x5t: &str) -> Option<String> {
    URL_SAFE_NO_PAD
        .decode(x5t.trim_end_matches('='))
        .ok()
        .map(hex::encode_upper)
}

#[async_trait]
impl VaultCatalog for KeyVaultCatalog {
    async fn objects(
        &self,
        vault: &VaultRef,
        kind: ObjectKind,
        after: Option<&Cursor>,
        stamp: &Stamp,
    ) -> Result<CatalogPage<InventoryCredential>, PortError> {
        let operation = format!("listing {} of vault {}", kind.as_str(), vault.name);
        let url = page_url(vault, kind, after)?;
        let body = self.get(url, &operation).await?;
        let source = CredentialSource::Vault {
            subscription: vault.subscription,
            name: vault.name.clone(),
            uri: vault.uri.clone(),
        };
        let scope = Scope::Vault {
            subscription: vault.subscription,
            name: vault.name.clone(),
        };
        let mut page = CatalogPage::last(Vec::new());
        page.next = body["nextLink"]
            .as_str()
            .filter(|l| !l.is_empty())
            .map(Cursor::new);
        // A page lists its objects in `value`, an empty vault as `[]`: an answer without
        // one is not a page, and reading it as an empty one would retire every object
        // of the vault from the inventory.
        let Some(items) = body.get("value").and_then(Value::as_array).cloned() else {
            return Err(PortError::invalid(format!(
                "{operation}: the answer is not a Key Vault page"
            )));
        };
        for raw in items {
            let Ok(item) = serde_json::from_value::<ListItem>(raw) else {
                page.findings.push(ScopeFinding::new(
                    scope.clone(),
                    FindingKind::Malformed,
                    kind.as_str(),
                    format!(
                        "an item of {} does not have Key Vault's shape",
                        kind.as_str()
                    ),
                    stamp.at,
                    stamp.sweep.clone(),
                ));
                continue;
            };
            if item.managed {
                continue;
            }
            let id = item
                .id
                .as_deref()
                .or(item.kid.as_deref())
                .unwrap_or_default();
            let name = id.rsplit('/').next().unwrap_or_default().to_owned();
            if name.is_empty() {
                page.findings.push(ScopeFinding::new(
                    scope.clone(),
                    FindingKind::Malformed,
                    kind.as_str(),
                    format!("an item of {} has no id naming it", kind.as_str()),
                    stamp.at,
                    stamp.sweep.clone(),
                ));
                continue;
            }
            let times = (
                unix_time(&item.attributes.created),
                unix_time(&item.attributes.updated),
                unix_time(&item.attributes.nbf),
                unix_time(&item.attributes.exp),
            );
            let (Ok(created), Ok(updated), Ok(not_before), Ok(expires)) = times else {
                page.findings.push(ScopeFinding::new(
                    scope.clone(),
                    FindingKind::Malformed,
                    format!("{}/{name}", kind.as_str()),
                    "a date attribute is not a Unix time",
                    stamp.at,
                    stamp.sweep.clone(),
                ));
                continue;
            };
            let credential_kind = match kind {
                ObjectKind::Secrets => CredentialKind::Secret,
                ObjectKind::Certificates => CredentialKind::Certificate,
                ObjectKind::Keys => CredentialKind::Key,
            };
            let certificate = item.x5t.as_deref().map(|x5t| CertificateDetails {
                thumbprint: x5t_hex(x5t),
                ..CertificateDetails::default()
            });
            page.items.push(InventoryCredential {
                source: source.clone(),
                kind: credential_kind,
                name: name.clone(),
                handle: CredentialHandle::VaultObject {
                    name,
                    version: None,
                    versions: None,
                },
                enabled: item.attributes.enabled.unwrap_or(true),
                created,
                updated,
                not_before,
                expires,
                content_type: item.content_type,
                tags: item.tags,
                certificate,
                key: None,
                directory: None,
                owners: Vec::new(),
                managed: false,
                scanned_at: stamp.at,
                sweep: stamp.sweep.clone(),
            });
        }
        Ok(page)
    }

    async fn certificate(
        &self,
        vault: &VaultRef,
        name: &str,
    ) -> Result<CertificateDetails, PortError> {
        let operation = format!("reading certificate {name} of vault {}", vault.name);
        let body = self
            .get(
                object_url(vault, &format!("certificates/{name}")),
                &operation,
            )
            .await?;
        let mut details = CertificateDetails {
            thumbprint: body["x5t"].as_str().and_then(x5t_hex),
            ..CertificateDetails::default()
        };
        if let Some(der) = body["cer"].as_str().and_then(|c| STANDARD.decode(c).ok()) {
            read_certificate(&der, &mut details);
        }
        let policy = &body["policy"];
        details.policy_issuer = policy["issuer"]["name"].as_str().map(str::to_owned);
        if details.key_type.is_none() {
            details.key_type = policy["key_props"]["kty"].as_str().map(str::to_owned);
        }
        if details.key_size.is_none() {
            details.key_size = policy["key_props"]["key_size"]
                .as_u64()
                .and_then(|s| u32::try_from(s).ok());
        }
        if details.curve.is_none() {
            details.curve = policy["key_props"]["crv"].as_str().map(str::to_owned);
        }
        for action in policy["lifetime_actions"].as_array().into_iter().flatten() {
            let kind = match action["action"]["action_type"].as_str() {
                Some(a) if a.eq_ignore_ascii_case("AutoRenew") => LifetimeActionType::AutoRenew,
                Some(a) if a.eq_ignore_ascii_case("EmailContacts") => {
                    LifetimeActionType::EmailContacts
                }
                _ => continue,
            };
            let trigger = &action["trigger"];
            let number = |field: &str| trigger[field].as_u64().and_then(|n| u32::try_from(n).ok());
            let trigger = match (number("days_before_expiry"), number("lifetime_percentage")) {
                (Some(days), _) => LifetimeTrigger::DaysBeforeExpiry(days),
                (None, Some(percent)) => LifetimeTrigger::LifetimePercentage(percent),
                (None, None) => continue,
            };
            details.lifetime_actions.push(LifetimeAction {
                action: kind,
                trigger,
            });
        }
        Ok(details)
    }

    async fn key(&self, vault: &VaultRef, name: &str) -> Result<KeyDetails, PortError> {
        let operation = format!("reading key {name} of vault {}", vault.name);
        let body = self
            .get(object_url(vault, &format!("keys/{name}")), &operation)
            .await?;
        let jwk = &body["key"];
        let key_size = jwk["n"]
            .as_str()
            .and_then(|n| URL_SAFE_NO_PAD.decode(n.trim_end_matches('=')).ok())
            .map(|bytes| {
                let significant = bytes.iter().skip_while(|b| **b == 0).count();
                u32::try_from(significant * 8).unwrap_or(u32::MAX)
            });
        let policy_operation = format!(
            "reading the rotation policy of key {name} of vault {}",
            vault.name
        );
        let policy = self
            .get(
                object_url(vault, &format!("keys/{name}/rotationpolicy")),
                &policy_operation,
            )
            .await?;
        let rotation_policy = policy["lifetimeActions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| {
                a["action"]["type"]
                    .as_str()
                    .is_some_and(|t| t.eq_ignore_ascii_case("Rotate"))
            });
        Ok(KeyDetails {
            key_type: jwk["kty"].as_str().map(str::to_owned),
            key_size,
            curve: jwk["crv"].as_str().map(str::to_owned),
            rotation_policy,
        })
    }

    /// A certificate's `GET` carries its policy; a key's rotation policy is a second
    /// `GET`.
    fn detail_requests(&self, kind: ObjectKind) -> u32 {
        match kind {
            ObjectKind::Secrets => 0,
            ObjectKind::Certificates => 1,
            ObjectKind::Keys => 2,
        }
    }

    async fn versions(
        &self,
        vault: &VaultRef,
        kind: ObjectKind,
        name: &str,
        after: Option<&Cursor>,
    ) -> Result<(u32, Option<Cursor>), PortError> {
        let operation = format!(
            "listing the versions of {}/{name} in vault {}",
            kind.as_str(),
            vault.name
        );
        let body = self
            .get(versions_url(vault, kind, name, after)?, &operation)
            .await?;
        let listed = body["value"].as_array().map_or(0, Vec::len);
        let next = body["nextLink"]
            .as_str()
            .filter(|l| !l.is_empty())
            .map(Cursor::new);
        Ok((u32::try_from(listed).unwrap_or(u32::MAX), next))
    }
}

/// Issuer, subject, key type and size and the SHA-1 flag from the public certificate.
fn read_certificate(der: &[u8], details: &mut CertificateDetails) {
    use x509_parser::prelude::{FromDer, X509Certificate};
    use x509_parser::public_key::PublicKey;
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return;
    };
    details.issuer = Some(cert.issuer().to_string());
    details.subject = Some(cert.subject().to_string());
    let algorithm = cert.signature_algorithm.algorithm.to_id_string();
    details.sha1_signature = SHA1_SIGNATURES.contains(&algorithm.as_str());
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            details.key_type = Some("RSA".to_owned());
            details.key_size = u32::try_from(rsa.key_size()).ok();
        }
        Ok(PublicKey::EC(point)) => {
            details.key_type = Some("EC".to_owned());
            details.key_size = u32::try_from(point.key_size()).ok();
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use azure_core::http::StatusCode;
    use keyturn_testkit::transport::{Answer, CannedTransport, FixedToken};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::domain::inventory::SweepId;
    use crate::domain::names::{VaultName, VaultUrl};

    fn vault() -> VaultRef {
        VaultRef {
            subscription: None,
            name: "kv-prod".parse::<VaultName>().expect("name"),
            uri: VaultUrl::parse("https://kv-prod.vault.azure.net").expect("url"),
        }
    }

    fn stamp() -> Stamp {
        Stamp {
            sweep: SweepId::parse("20270601T120000Z").expect("sweep"),
            at: DateTime::from_timestamp(1_811_764_800, 0).expect("time"),
        }
    }

    /// `body` read as Key Vault's answer to a listing of `kind`.
    fn list(body: &Value, kind: ObjectKind) -> Result<CatalogPage<InventoryCredential>, PortError> {
        let canned = CannedTransport::always(Answer::new(StatusCode::Ok, body.to_string()));
        let catalog =
            KeyVaultCatalog::new(FixedToken::new(), KEY_VAULT_SCOPE, Some(canned.options()));
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(catalog.objects(&vault(), kind, None, &stamp()))
    }

    #[test]
    fn an_answer_without_a_value_list_is_an_error_not_an_empty_vault() {
        for body in [
            json!({}),
            json!({"value": null}),
            json!({"value": {"id": "https://kv-prod.vault.azure.net/secrets/a"}}),
            json!([]),
            json!({"nextLink": "https://kv-prod.vault.azure.net/secrets?$skiptoken=x"}),
        ] {
            let error = list(&body, ObjectKind::Secrets).expect_err("not a page");
            assert_eq!(error.kind, FailureKind::Invalid, "{body}");
        }
        let empty = list(&json!({"value": [], "nextLink": null}), ObjectKind::Secrets);
        assert!(empty.expect("an empty vault is a page").items.is_empty());
    }

    #[test]
    fn an_item_without_an_id_is_a_finding_not_dropped() {
        let body = json!({"value": [
            {"attributes": {"enabled": true}},
            {"id": "https://kv-prod.vault.azure.net/secrets/"},
            {"id": "https://kv-prod.vault.azure.net/secrets/db-password"},
        ]});

        let page = list(&body, ObjectKind::Secrets).expect("a page");

        assert_eq!(page.items.len(), 1);
        assert_eq!(page.findings.len(), 2);
        assert!(
            page.findings
                .iter()
                .all(|f| f.kind == FindingKind::Malformed)
        );
    }

    /// Any JSON value, for a field that may hold the wrong type.
    fn any_json() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            Just(json!([1, "x"])),
            Just(json!({"a": 1})),
        ]
    }

    /// A Key Vault time: mostly plausible seconds, sometimes anything.
    fn any_time() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            3 => (0i64..4_102_444_800).prop_map(|s| Some(Value::from(s))),
            1 => Just(None),
            1 => any_json().prop_map(Some),
        ]
    }

    /// A list item around Key Vault's shape: fields missing, of the wrong type, huge.
    fn any_item() -> impl Strategy<Value = Value> {
        let id = prop_oneof![
            "[a-z0-9-]{1,20}"
                .prop_map(|n| Some(json!(format!("https://kv-prod.vault.azure.net/x/{n}")))),
            Just(None),
            any_json().prop_map(Some),
        ];
        let attributes = (
            proptest::option::of(any::<bool>()),
            any_time(),
            any_time(),
            any_time(),
            any_time(),
        );
        let tags = prop_oneof![
            proptest::collection::btree_map("[a-z-]{1,8}", ".{0,8}", 0..3)
                .prop_map(|t| Some(json!(t))),
            Just(None),
            any_json().prop_map(Some),
        ];
        (
            id,
            attributes,
            tags,
            proptest::option::of(any_json()),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(
                |(id, (enabled, created, updated, nbf, exp), tags, content_type, managed)| {
                    let mut item = serde_json::Map::new();
                    let mut attrs = serde_json::Map::new();
                    let set =
                        |map: &mut serde_json::Map<String, Value>, k: &str, v: Option<Value>| {
                            if let Some(v) = v {
                                map.insert(k.to_owned(), v);
                            }
                        };
                    set(&mut attrs, "enabled", enabled.map(Value::from));
                    set(&mut attrs, "created", created);
                    set(&mut attrs, "updated", updated);
                    set(&mut attrs, "nbf", nbf);
                    set(&mut attrs, "exp", exp);
                    set(&mut item, "id", id);
                    item.insert("attributes".to_owned(), Value::Object(attrs));
                    set(&mut item, "tags", tags);
                    set(&mut item, "contentType", content_type);
                    set(&mut item, "managed", managed.map(Value::from));
                    Value::Object(item)
                },
            )
    }

    proptest! {
        #[test]
        fn every_listed_item_is_read_recorded_or_a_certificates_own(
            items in proptest::collection::vec(any_item(), 0..8),
        ) {
            let listed = items.len();
            let managed = items.iter().filter(|i| i["managed"] == json!(true)).count();

            let page = list(&json!({"value": items}), ObjectKind::Secrets).expect("a page");

            let seen = page.items.len() + page.findings.len();
            prop_assert!(seen <= listed && seen + managed >= listed, "{seen} of {listed}");
            for credential in &page.items {
                prop_assert!(!credential.name.is_empty());
                let json = serde_json::to_string(credential).expect("serialise");
                let back: InventoryCredential = serde_json::from_str(&json).expect("reads back");
                prop_assert_eq!(&back, credential);
            }
        }

        #[test]
        fn a_well_formed_item_is_read_as_listed(
            name in "[a-zA-Z0-9-]{1,127}",
            times in proptest::collection::vec(proptest::option::of(0i64..253_402_300_799), 4),
            enabled in any::<bool>(),
            tags in proptest::collection::btree_map("[a-z-]{1,8}", ".{0,16}", 0..4),
        ) {
            let at = |t: Option<i64>| t.map(|s| DateTime::from_timestamp(s, 0).expect("in range"));
            let body = json!({"value": [{
                "id": format!("https://kv-prod.vault.azure.net/secrets/{name}"),
                "attributes": {
                    "enabled": enabled, "created": times[0], "updated": times[1],
                    "nbf": times[2], "exp": times[3],
                },
                "tags": tags,
            }]});

            let page = list(&body, ObjectKind::Secrets).expect("a page");

            prop_assert!(page.findings.is_empty());
            let credential = &page.items[0];
            prop_assert_eq!(&credential.name, &name);
            prop_assert_eq!(credential.enabled, enabled);
            prop_assert_eq!(
                [credential.created, credential.updated, credential.not_before, credential.expires],
                [at(times[0]), at(times[1]), at(times[2]), at(times[3])]
            );
            prop_assert_eq!(&credential.tags, &tags);
        }
    }

    #[test]
    fn key_vault_times_are_unix_seconds_and_anything_else_is_malformed() {
        assert_eq!(unix_time(&None), Ok(None));
        assert_eq!(
            unix_time(&Some(Value::from(1_700_000_000))),
            Ok(DateTime::from_timestamp(1_700_000_000, 0))
        );
        assert!(unix_time(&Some(Value::from("2026-01-01"))).is_err());
    }

    #[test]
    fn a_thumbprint_is_read_from_base64url_as_upper_hex() {
        assert_eq!(x5t_hex("AAEC").as_deref(), Some("000102"));
        assert!(x5t_hex("not base64!").is_none());
    }
}
