//! What discovery lists from Graph: applications and service principals with their
//! password and key credentials (never a secret: `secretText` and `key` are `null` in
//! lists), owners through `$expand=owners`, paged with `@odata.nextLink`.
//!
//! Strict where Graph is ("Use query parameters to customize responses" and the known
//! issues for directory objects): `$top` is 1-999 (default 100); `$select` names only
//! properties of the type; `$expand` names one relationship ("Only one relationship can
//! be expanded in a single request"): `owners`, or on applications
//! `federatedIdentityCredentials` (a relationship of application, not of service
//! principal); on a directory-object list it caps the page at 100 objects and each
//! expanded collection at 20 (an application holds at most 20 federated identity
//! credentials anyway); `$filter` is `appId eq '...'` or `startswith(appId,'...')` (appId
//! supports `eq` and `startsWith`), nothing else.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    Application, Directory, GRAPH_METADATA, GraphError, GraphStandin, graph_time, parse_filter,
    password_info, password_json,
};
use crate::Shared;

/// Graph's page size when `$top` is absent.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Graph's largest `$top` for directory objects.
pub const MAX_PAGE_SIZE: usize = 999;
/// With `$expand`, a directory-object page holds at most 100 objects (Graph known issue:
/// "$expand on directory objects returns a maximum of 100 objects").
pub const MAX_EXPANDED_PAGE_SIZE: usize = 100;
/// An expanded relationship lists at most 20 objects.
pub const MAX_EXPANDED_ITEMS: usize = 20;

const APPLICATION_PROPERTIES: [&str; 11] = [
    "id",
    "appId",
    "displayName",
    "createdDateTime",
    "signInAudience",
    "passwordCredentials",
    "keyCredentials",
    "tags",
    "notes",
    "publisherDomain",
    "description",
];
const SERVICE_PRINCIPAL_PROPERTIES: [&str; 12] = [
    "id",
    "appId",
    "displayName",
    "servicePrincipalType",
    "signInAudience",
    "passwordCredentials",
    "keyCredentials",
    "preferredTokenSigningKeyThumbprint",
    "appOwnerOrganizationId",
    "accountEnabled",
    "tags",
    "notes",
];

/// A user who owns an application or service principal; `userPrincipalName` and `mail`
/// may be missing, as for guests and accounts without a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerUser {
    pub id: Uuid,
    pub display_name: String,
    pub user_principal_name: Option<String>,
    pub mail: Option<String>,
}

impl OwnerUser {
    pub fn new(display_name: &str, upn: Option<&str>, mail: Option<&str>) -> Self {
        Self {
            id: Uuid::new_v4(),
            display_name: display_name.to_owned(),
            user_principal_name: upn.map(str::to_owned),
            mail: mail.map(str::to_owned),
        }
    }
}

/// A certificate (or other asymmetric key) credential, as Graph lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCredentialSeed {
    pub key_id: Uuid,
    pub display_name: Option<String>,
    /// SHA-1 thumbprint bytes, listed base64 as `customKeyIdentifier`.
    pub thumbprint: Vec<u8>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `AsymmetricX509Cert` or `X509CertAndPassword`.
    pub kind: String,
    /// `Verify` or `Sign`.
    pub usage: String,
}

impl KeyCredentialSeed {
    /// A verify certificate valid from `start` to `end`.
    pub fn certificate(display_name: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Self {
            key_id: Uuid::new_v4(),
            display_name: Some(display_name.to_owned()),
            thumbprint: Uuid::new_v4().as_bytes()[..]
                .iter()
                .chain(&[0u8; 4])
                .copied()
                .collect(),
            start,
            end,
            kind: "AsymmetricX509Cert".to_owned(),
            usage: "Verify".to_owned(),
        }
    }

    pub fn usage(mut self, usage: &str) -> Self {
        self.usage = usage.to_owned();
        self
    }
}

/// A service principal's password credential: key id, display name, start, end.
type SpPassword = (Uuid, Option<String>, DateTime<Utc>, DateTime<Utc>);

/// A service principal seeded for discovery.
#[derive(Debug, Clone)]
pub(crate) struct ServicePrincipal {
    id: Uuid,
    app_id: Uuid,
    display_name: String,
    passwords: Vec<SpPassword>,
    keys: Vec<KeyCredentialSeed>,
    owners: Vec<OwnerUser>,
    preferred_thumbprint: Option<String>,
}

/// A service principal the stand-in knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeededServicePrincipal {
    pub object_id: Uuid,
    pub app_id: Uuid,
}

impl GraphStandin<'_> {
    /// Adds a key credential to an application.
    pub fn add_key_credential(&self, object_id: Uuid, key: KeyCredentialSeed) {
        let _ = self.app_mut(object_id, |app| app.keys.push(key));
    }

    /// Makes `owner` an owner of the application.
    pub fn add_owner_user(&self, object_id: Uuid, owner: OwnerUser) {
        let _ = self.app_mut(object_id, |app| app.owner_users.push(owner));
    }

    /// Removes an application's password or key credential by its keyId, as
    /// `removePassword` or `removeKey` would.
    pub fn remove_application_credential(&self, object_id: Uuid, key_id: Uuid) {
        let _ = self.app_mut(object_id, |app| {
            app.passwords.retain(|p| p.key_id != key_id);
            app.keys.retain(|k| k.key_id != key_id);
        });
    }

    /// Adds a federated identity credential named `name` to an application.
    pub fn add_federated_credential(&self, object_id: Uuid, name: &str) {
        let _ = self.app_mut(object_id, |app| {
            app.federated.push((Uuid::new_v4(), name.to_owned()));
        });
    }

    /// Deletes an application, as `DELETE /applications/{id}` would.
    pub fn delete_application(&self, object_id: Uuid) {
        self.lock().applications.retain(|a| a.id != object_id);
    }

    fn app_mut(&self, object_id: Uuid, change: impl FnOnce(&mut Application)) -> Option<()> {
        let mut directory = self.lock();
        let app = directory
            .applications
            .iter_mut()
            .find(|a| a.id == object_id)?;
        change(app);
        Some(())
    }

    /// Seeds a service principal (an enterprise application) with no credentials.
    pub fn seed_service_principal(&self, display_name: &str) -> SeededServicePrincipal {
        let seeded = SeededServicePrincipal {
            object_id: Uuid::new_v4(),
            app_id: Uuid::new_v4(),
        };
        self.lock().service_principals.push(ServicePrincipal {
            id: seeded.object_id,
            app_id: seeded.app_id,
            display_name: display_name.to_owned(),
            passwords: Vec::new(),
            keys: Vec::new(),
            owners: Vec::new(),
            preferred_thumbprint: None,
        });
        seeded
    }

    /// Adds a key credential to a service principal; a `Sign` one becomes its preferred
    /// token-signing key, as a SAML signing certificate does.
    pub fn add_service_principal_key(&self, object_id: Uuid, key: KeyCredentialSeed) {
        let mut directory = self.lock();
        if let Some(sp) = directory
            .service_principals
            .iter_mut()
            .find(|s| s.id == object_id)
        {
            if key.usage == "Sign" {
                sp.preferred_thumbprint = Some(hex::encode_upper(&key.thumbprint));
            }
            sp.keys.push(key);
        }
    }

    /// Adds a password credential (metadata only) to a service principal.
    pub fn add_service_principal_password(
        &self,
        object_id: Uuid,
        display_name: Option<&str>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Option<Uuid> {
        let mut directory = self.lock();
        let sp = directory
            .service_principals
            .iter_mut()
            .find(|s| s.id == object_id)?;
        let key_id = Uuid::new_v4();
        sp.passwords
            .push((key_id, display_name.map(str::to_owned), start, end));
        Some(key_id)
    }

    /// Makes the application's or service principal's `/owners` list misbehave: every
    /// page answers with an `@odata.nextLink` to itself, a chain that never ends.
    pub fn loop_owner_pages(&self, object_id: Uuid) {
        self.lock().looping_owner_pages.push(object_id);
    }

    pub fn add_service_principal_owner(&self, object_id: Uuid, owner: OwnerUser) {
        let mut directory = self.lock();
        if let Some(sp) = directory
            .service_principals
            .iter_mut()
            .find(|s| s.id == object_id)
        {
            sp.owners.push(owner);
        }
    }
}

fn key_json(key: &KeyCredentialSeed) -> Value {
    json!({
        "customKeyIdentifier": STANDARD.encode(&key.thumbprint),
        "displayName": key.display_name,
        "endDateTime": graph_time(key.end),
        "key": null,
        "keyId": key.key_id,
        "startDateTime": graph_time(key.start),
        "type": key.kind,
        "usage": key.usage,
    })
}

fn user_json(owner: &OwnerUser) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.user",
        "id": owner.id,
        "displayName": owner.display_name,
        "userPrincipalName": owner.user_principal_name,
        "mail": owner.mail,
    })
}

/// Which collection is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Collection {
    Applications,
    ServicePrincipals,
}

impl Collection {
    fn path(self) -> &'static str {
        match self {
            Collection::Applications => "applications",
            Collection::ServicePrincipals => "servicePrincipals",
        }
    }

    fn type_name(self) -> &'static str {
        match self {
            Collection::Applications => "application",
            Collection::ServicePrincipals => "servicePrincipal",
        }
    }

    fn resource(self) -> &'static str {
        match self {
            Collection::Applications => "Application",
            Collection::ServicePrincipals => "ServicePrincipal",
        }
    }

    fn properties(self) -> &'static [&'static str] {
        match self {
            Collection::Applications => &APPLICATION_PROPERTIES,
            Collection::ServicePrincipals => &SERVICE_PRINCIPAL_PROPERTIES,
        }
    }
}

/// What a list request asked for, parsed.
struct ListQuery<'a> {
    select: Option<Vec<&'a str>>,
    owners_select: Option<Vec<&'a str>>,
    expand_owners: bool,
    expand_federated: bool,
    top: Option<usize>,
    skip: usize,
    app_id_eq: Option<String>,
    app_id_prefix: Option<String>,
}

fn bad_property(collection: Collection, name: &str) -> GraphError {
    GraphError::bad_request(
        "BadRequest",
        format!(
            "Could not find a property named '{name}' on type 'microsoft.graph.{}'.",
            collection.type_name()
        ),
    )
}

fn parse_query<'a>(
    collection: Collection,
    query: &'a [(String, String)],
) -> Result<ListQuery<'a>, GraphError> {
    let mut parsed = ListQuery {
        select: None,
        owners_select: None,
        expand_owners: false,
        expand_federated: false,
        top: None,
        skip: 0,
        app_id_eq: None,
        app_id_prefix: None,
    };
    for (name, value) in query {
        match name.as_str() {
            "$select" => {
                let names: Vec<&str> = value.split(',').map(str::trim).collect();
                if let Some(unknown) = names.iter().find(|n| !collection.properties().contains(n)) {
                    return Err(bad_property(collection, unknown));
                }
                parsed.select = Some(names);
            }
            "$expand" => {
                let (relationship, nested) = match value.split_once('(') {
                    Some((name, rest)) => (name.trim(), Some(rest)),
                    None => (value.trim(), None),
                };
                let outside_parentheses = value.split('(').next().unwrap_or_default().contains(',')
                    || nested.is_some_and(|rest| rest.contains("),"));
                if outside_parentheses {
                    return Err(GraphError::bad_request(
                        "BadRequest",
                        format!(
                            "The result of parsing $expand contained at least 2 items, but the maximum allowed is 1. ({value})"
                        ),
                    ));
                }
                if relationship == "federatedIdentityCredentials"
                    && collection == Collection::Applications
                    && nested.is_none()
                {
                    parsed.expand_federated = true;
                    continue;
                }
                if relationship != "owners" {
                    return Err(bad_property(collection, relationship));
                }
                parsed.expand_owners = true;
                if let Some(rest) = nested {
                    let inner = rest.strip_suffix(')').ok_or_else(|| {
                        GraphError::bad_request(
                            "BadRequest",
                            format!("Invalid $expand clause: {value}"),
                        )
                    })?;
                    let select = inner.strip_prefix("$select=").ok_or_else(|| {
                        GraphError::bad_request(
                            "BadRequest",
                            format!("Only $select is supported inside $expand here: {value}"),
                        )
                    })?;
                    parsed.owners_select = Some(select.split(',').map(str::trim).collect());
                }
            }
            "$top" => {
                let top = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                    .ok_or_else(|| {
                        GraphError::bad_request(
                            "Request_BadRequest",
                            format!(
                                "Invalid page size specified: '{value}'. Must be between 1 and {MAX_PAGE_SIZE} inclusive."
                            ),
                        )
                    })?;
                parsed.top = Some(top);
            }
            "$skiptoken" => {
                parsed.skip = decode_skiptoken(value).ok_or_else(|| {
                    GraphError::bad_request(
                        "Directory_ExpiredPageToken",
                        "The specified page token value has expired and can no longer be included in your request.",
                    )
                })?;
            }
            "$filter" => {
                let lower = value.to_ascii_lowercase();
                if lower.starts_with("startswith(") {
                    let inner = value["startswith(".len()..]
                        .strip_suffix(')')
                        .and_then(|i| i.split_once(','))
                        .filter(|(property, _)| property.trim() == "appId")
                        .and_then(|(_, literal)| {
                            literal
                                .trim()
                                .strip_prefix('\'')
                                .and_then(|l| l.strip_suffix('\''))
                        })
                        .filter(|l| !l.contains('\''))
                        .ok_or_else(|| {
                            GraphError::bad_request(
                                "Request_UnsupportedQuery",
                                format!("Unsupported or invalid query filter clause specified for resource '{}': {value}", collection.resource()),
                            )
                        })?;
                    parsed.app_id_prefix = Some(inner.to_ascii_lowercase());
                } else {
                    parsed.app_id_eq = Some(parse_filter(value, "appId", collection.resource())?);
                }
            }
            other if other.starts_with('$') => {
                return Err(GraphError::bad_request(
                    "Request_BadRequest",
                    format!("Unrecognized query argument specified: '{other}'."),
                ));
            }
            _ => {}
        }
    }
    Ok(parsed)
}

/// `GET /v1.0/applications` or `/v1.0/servicePrincipals`.
pub(crate) fn list(
    shared: &Shared,
    collection: Collection,
    base: &str,
    query: &[(String, String)],
) -> Result<http::Response<axum::body::Body>, GraphError> {
    let parsed = parse_query(collection, query)?;
    let mut size = parsed.top.unwrap_or(DEFAULT_PAGE_SIZE);
    if parsed.expand_owners || parsed.expand_federated {
        size = size.min(MAX_EXPANDED_PAGE_SIZE);
    }
    let directory = shared.directory();
    let matches = |app_id: Uuid| {
        let text = app_id.to_string();
        parsed
            .app_id_eq
            .as_deref()
            .is_none_or(|w| text.eq_ignore_ascii_case(w))
            && parsed
                .app_id_prefix
                .as_deref()
                .is_none_or(|p| text.starts_with(p))
    };
    let owners_json = |users: &[OwnerUser], extra: Vec<Value>| -> Value {
        let mut owners: Vec<Value> = extra;
        owners.extend(users.iter().map(user_json));
        owners.truncate(MAX_EXPANDED_ITEMS);
        for owner in &mut owners {
            if let (Some(select), Value::Object(map)) = (&parsed.owners_select, owner) {
                map.retain(|k, _| {
                    k == "id" || k.starts_with("@odata") || select.contains(&k.as_str())
                });
            }
        }
        Value::Array(owners)
    };
    let mut total = 0usize;
    let mut value = Vec::new();
    match collection {
        Collection::Applications => {
            for app in directory.applications.iter().filter(|a| matches(a.app_id)) {
                if total >= parsed.skip && value.len() < size {
                    let mut item = application_json(app);
                    if parsed.expand_owners {
                        item["owners"] = owners_json(&app.owner_users, sp_owners(&directory, app));
                    }
                    if parsed.expand_federated {
                        item["federatedIdentityCredentials"] = app
                            .federated
                            .iter()
                            .take(MAX_EXPANDED_ITEMS)
                            .map(|(id, name)| federated_json(*id, name))
                            .collect();
                    }
                    project(&mut item, parsed.select.as_deref());
                    value.push(item);
                }
                total += 1;
            }
        }
        Collection::ServicePrincipals => {
            for sp in directory
                .service_principals
                .iter()
                .filter(|s| matches(s.app_id))
            {
                if total >= parsed.skip && value.len() < size {
                    let mut item = service_principal_json(sp, shared.tenant_id);
                    if parsed.expand_owners {
                        item["owners"] = owners_json(&sp.owners, Vec::new());
                    }
                    project(&mut item, parsed.select.as_deref());
                    value.push(item);
                }
                total += 1;
            }
        }
    }
    let end = parsed.skip + value.len();
    let mut body = json!({
        "@odata.context": format!("{GRAPH_METADATA}#{}", collection.path()),
        "value": value,
    });
    if end < total {
        let mut link = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in query.iter().filter(|(n, _)| n != "$skiptoken") {
            link.append_pair(name, value);
        }
        link.append_pair("$skiptoken", &encode_skiptoken(end));
        body["@odata.nextLink"] = json!(format!(
            "{base}/v1.0/{}?{}",
            collection.path(),
            link.finish()
        ));
    }
    Ok(axum::response::IntoResponse::into_response(axum::Json(
        body,
    )))
}

/// The service principals that own `app`, as directory objects.
fn sp_owners(directory: &Directory, app: &Application) -> Vec<Value> {
    app.owners
        .iter()
        .map(|owner| {
            json!({
                "@odata.type": "#microsoft.graph.servicePrincipal",
                "id": owner,
                "appId": owner,
                "displayName": directory
                    .applications
                    .iter()
                    .find(|a| a.app_id == *owner)
                    .map(|a| a.display_name.clone()),
            })
        })
        .collect()
}

/// Properties `$select` may name on an owners list (a user's; a service principal owner
/// keeps its `id` and `appId` whatever is selected).
const OWNER_PROPERTIES: [&str; 4] = ["id", "displayName", "userPrincipalName", "mail"];

/// `GET /v1.0/{applications|servicePrincipals}/{id}/owners`: every owner, `$select` and
/// `$top` (1-999, default 100) as on the lists, paged with `@odata.nextLink`; 404
/// `Request_ResourceNotFound` for an unknown object, as Graph answers.
pub(crate) fn owners(
    shared: &Shared,
    collection: Collection,
    base: &str,
    id: &str,
    query: &[(String, String)],
) -> Result<http::Response<axum::body::Body>, GraphError> {
    let mut select: Option<Vec<&str>> = None;
    let mut size = DEFAULT_PAGE_SIZE;
    let mut skip = 0usize;
    for (name, value) in query {
        match name.as_str() {
            "$select" => {
                let names: Vec<&str> = value.split(',').map(str::trim).collect();
                if let Some(unknown) = names.iter().find(|n| !OWNER_PROPERTIES.contains(n)) {
                    return Err(GraphError::bad_request(
                        "BadRequest",
                        format!(
                            "Could not find a property named '{unknown}' on type 'microsoft.graph.directoryObject'."
                        ),
                    ));
                }
                select = Some(names);
            }
            "$top" => {
                size = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                    .ok_or_else(|| {
                        GraphError::bad_request(
                            "Request_BadRequest",
                            format!(
                                "Invalid page size specified: '{value}'. Must be between 1 and {MAX_PAGE_SIZE} inclusive."
                            ),
                        )
                    })?;
            }
            "$skiptoken" => {
                skip = decode_skiptoken(value).ok_or_else(|| {
                    GraphError::bad_request(
                        "Directory_ExpiredPageToken",
                        "The specified page token value has expired and can no longer be included in your request.",
                    )
                })?;
            }
            other if other.starts_with('$') => {
                return Err(GraphError::bad_request(
                    "Request_BadRequest",
                    format!("Unrecognized query argument specified: '{other}'."),
                ));
            }
            _ => {}
        }
    }
    let directory = shared.directory();
    let object = Uuid::parse_str(id).ok();
    let not_found = || {
        GraphError::new(
            http::StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!(
                "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    };
    let mut all: Vec<Value> = match collection {
        Collection::Applications => {
            let app = directory
                .applications
                .iter()
                .find(|a| Some(a.id) == object)
                .ok_or_else(not_found)?;
            let mut all = sp_owners(&directory, app);
            all.extend(app.owner_users.iter().map(user_json));
            all
        }
        Collection::ServicePrincipals => directory
            .service_principals
            .iter()
            .find(|s| Some(s.id) == object)
            .ok_or_else(not_found)?
            .owners
            .iter()
            .map(user_json)
            .collect(),
    };
    if let Some(select) = &select {
        for owner in &mut all {
            if let Value::Object(map) = owner {
                map.retain(|k, _| {
                    k == "id"
                        || k == "appId"
                        || k.starts_with("@odata")
                        || select.contains(&k.as_str())
                });
            }
        }
    }
    let total = all.len();
    let value: Vec<Value> = all.into_iter().skip(skip).take(size).collect();
    let end = skip + value.len();
    let path = format!("{}/{id}/owners", collection.path());
    let mut body = json!({
        "@odata.context": format!("{GRAPH_METADATA}#directoryObjects"),
        "value": value,
    });
    let looping = object.is_some_and(|o| directory.looping_owner_pages.contains(&o));
    if looping || end < total {
        let mut link = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in query.iter().filter(|(n, _)| looping || n != "$skiptoken") {
            link.append_pair(name, value);
        }
        if !looping {
            link.append_pair("$skiptoken", &encode_skiptoken(end));
        }
        body["@odata.nextLink"] = json!(format!("{base}/v1.0/{path}?{}", link.finish()));
    }
    Ok(axum::response::IntoResponse::into_response(axum::Json(
        body,
    )))
}

/// A federated identity credential as Graph lists it: who may exchange a token for the
/// application's, no secret.
fn federated_json(id: Uuid, name: &str) -> Value {
    json!({
        "id": id,
        "name": name,
        "issuer": "https://token.actions.githubusercontent.com",
        "subject": format!("repo:contoso/{name}:environment:production"),
        "audiences": ["api://AzureADTokenExchange"],
        "description": null,
    })
}

/// Keeps the `$select`ed properties (and `id`, annotations and expanded relationships).
fn project(object: &mut Value, select: Option<&[&str]>) {
    if let (Some(select), Value::Object(map)) = (select, object) {
        map.retain(|key, _| {
            key == "id"
                || key == "owners"
                || key == "federatedIdentityCredentials"
                || key.starts_with("@odata")
                || select.contains(&key.as_str())
        });
    }
}

fn application_json(app: &Application) -> Value {
    json!({
        "id": app.id,
        "appId": app.app_id,
        "displayName": app.display_name,
        "createdDateTime": graph_time(app.created),
        "signInAudience": app.sign_in_audience,
        "passwordCredentials": app.passwords.iter().map(|p| password_json(&password_info(p), None)).collect::<Vec<_>>(),
        "keyCredentials": app.keys.iter().map(key_json).collect::<Vec<_>>(),
        "tags": [],
        "notes": null,
        "publisherDomain": "contoso.onmicrosoft.com",
        "description": null,
    })
}

fn service_principal_json(sp: &ServicePrincipal, tenant: Uuid) -> Value {
    json!({
        "id": sp.id,
        "appId": sp.app_id,
        "displayName": sp.display_name,
        "servicePrincipalType": "Application",
        "signInAudience": "AzureADMyOrg",
        "accountEnabled": true,
        "appOwnerOrganizationId": tenant,
        "preferredTokenSigningKeyThumbprint": sp.preferred_thumbprint,
        "passwordCredentials": sp.passwords.iter().map(|(key_id, name, start, end)| json!({
            "customKeyIdentifier": null,
            "displayName": name,
            "endDateTime": graph_time(*end),
            "hint": null,
            "keyId": key_id,
            "secretText": null,
            "startDateTime": graph_time(*start),
        })).collect::<Vec<_>>(),
        "keyCredentials": sp.keys.iter().map(key_json).collect::<Vec<_>>(),
        "tags": [],
        "notes": null,
    })
}

fn encode_skiptoken(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("RFNwdAIAAQAAAD{offset}"))
}

fn decode_skiptoken(token: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    std::str::from_utf8(&bytes)
        .ok()?
        .strip_prefix("RFNwdAIAAQAAAD")?
        .parse()
        .ok()
}
