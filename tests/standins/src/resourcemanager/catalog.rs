//! What discovery lists from Resource Manager: the subscriptions the caller can see
//! (`Subscriptions_List`, `Microsoft.Resources`) and the Key Vaults of one subscription
//! with their properties (`Vaults_ListBySubscription`, `Microsoft.KeyVault`), each paged
//! with an absolute `nextLink` carrying a `$skiptoken`. The bodies follow the specs'
//! examples (`GetSubscriptions`, `listVaultBySubscription`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use url::Url;
use uuid::Uuid;

use super::{ArmError, ResourceManagerStandin};
use crate::Shared;
use crate::auth::Grant;

/// `Microsoft.Resources` versions that list subscriptions.
pub const SUBSCRIPTIONS_API_VERSIONS: [&str; 3] = ["2020-01-01", "2021-01-01", "2022-12-01"];
/// `Microsoft.KeyVault` versions that list vaults with their properties.
pub const VAULTS_API_VERSIONS: [&str; 3] = ["2023-02-01", "2023-07-01", "2024-11-01"];
/// The action Reader grants that listing vaults needs.
pub const VAULTS_READ: &str = "Microsoft.KeyVault/vaults/read";
/// Resource Manager's own page size for these lists when no `$top` is given.
const DEFAULT_PAGE_SIZE: usize = 100;
/// `$top` on `Vaults_ListBySubscription` is capped at 1000.
const MAX_TOP: usize = 1000;

/// The compliance-relevant properties of a seeded vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultProperties {
    pub soft_delete: bool,
    pub purge_protection: bool,
    /// `enableRbacAuthorization`; `false` is access-policy mode.
    pub rbac: bool,
    pub public_network_access: bool,
}

impl Default for VaultProperties {
    /// What a vault created today gets: soft delete, RBAC, public access, no purge
    /// protection.
    fn default() -> Self {
        Self {
            soft_delete: true,
            purge_protection: false,
            rbac: true,
            public_network_access: true,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SeededSubscription {
    id: Uuid,
    display_name: String,
    /// Whether the caller holds a role on it: Resource Manager lists only those, and
    /// refuses listing resources in the others.
    accessible: bool,
    /// What the list gives as its `subscriptionId` when not the id (a malformed answer).
    listed_id: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct SeededVault {
    subscription: Uuid,
    name: String,
    uri: Url,
    properties: VaultProperties,
}

#[derive(Debug, Default)]
pub(crate) struct Catalog {
    subscriptions: Vec<SeededSubscription>,
    vaults: Vec<SeededVault>,
    page_size: Option<usize>,
}

impl ResourceManagerStandin<'_> {
    /// A subscription the caller holds Reader on.
    pub fn seed_subscription(&self, display_name: &str) -> Uuid {
        self.add_subscription(display_name, true)
    }

    /// A subscription that exists but on which the caller holds no role.
    pub fn seed_inaccessible_subscription(&self, display_name: &str) -> Uuid {
        self.add_subscription(display_name, false)
    }

    /// A subscription the caller holds Reader on, listed with `listed_id` as its
    /// `subscriptionId` (not a GUID: a malformed answer).
    pub fn seed_subscription_listed_as(&self, display_name: &str, listed_id: &str) -> Uuid {
        let id = self.add_subscription(display_name, true);
        if let Some(seeded) = self
            .lock()
            .catalog
            .subscriptions
            .iter_mut()
            .find(|s| s.id == id)
        {
            seeded.listed_id = Some(listed_id.to_owned());
        }
        id
    }

    fn add_subscription(&self, display_name: &str, accessible: bool) -> Uuid {
        let id = Uuid::new_v4();
        self.lock().catalog.subscriptions.push(SeededSubscription {
            id,
            display_name: display_name.to_owned(),
            accessible,
            listed_id: None,
        });
        id
    }

    /// A vault named `name` in `subscription`'s `rg-vaults`, whose data plane is `uri`
    /// (a Key Vault stand-in's URL); returns its resource id.
    pub fn seed_vault(
        &self,
        subscription: Uuid,
        name: &str,
        uri: &Url,
        properties: VaultProperties,
    ) -> String {
        let vault = SeededVault {
            subscription,
            name: name.to_owned(),
            uri: uri.clone(),
            properties,
        };
        let id = vault_id(&vault);
        self.lock().catalog.vaults.push(vault);
        id
    }

    /// The page size of both lists when the request carries no `$top`.
    pub fn set_list_page_size(&self, size: usize) {
        self.lock().catalog.page_size = Some(size.max(1));
    }
}

fn vault_id(vault: &SeededVault) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/rg-vaults/providers/Microsoft.KeyVault/vaults/{}",
        vault.subscription, vault.name
    )
}

/// Answers the two list operations, or `None` when `path` is neither.
pub(super) fn handle(
    shared: &Shared,
    grant: &Grant,
    method: &Method,
    base: &str,
    path: &str,
    query: &[(String, String)],
) -> Option<Result<Value, ArmError>> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let api_version = query
        .iter()
        .find(|(n, _)| n == "api-version")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    match segments.as_slice() {
        [subscriptions] if subscriptions.eq_ignore_ascii_case("subscriptions") => Some(
            list_subscriptions(shared, method, base, path, api_version, query),
        ),
        [subscriptions, subscription, providers, namespace, vaults]
            if subscriptions.eq_ignore_ascii_case("subscriptions")
                && providers.eq_ignore_ascii_case("providers")
                && namespace.eq_ignore_ascii_case("Microsoft.KeyVault")
                && vaults.eq_ignore_ascii_case("vaults") =>
        {
            Some(list_vaults(
                shared,
                grant,
                method,
                base,
                path,
                subscription,
                api_version,
                query,
            ))
        }
        _ => None,
    }
}

fn check_version(api_version: &str, known: &[&str], kind: &str) -> Result<(), ArmError> {
    if known.contains(&api_version) {
        return Ok(());
    }
    Err(ArmError::new(
        StatusCode::BAD_REQUEST,
        "InvalidApiVersionParameter",
        format!(
            "The api-version '{api_version}' is invalid. The supported versions for '{kind}' are '{}'.",
            known.join(",")
        ),
    ))
}

fn only_get(method: &Method) -> Result<(), ArmError> {
    if method == Method::GET {
        Ok(())
    } else {
        Err(ArmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("The requested method '{method}' is not allowed on this collection."),
        ))
    }
}

fn list_subscriptions(
    shared: &Shared,
    method: &Method,
    base: &str,
    path: &str,
    api_version: &str,
    query: &[(String, String)],
) -> Result<Value, ArmError> {
    only_get(method)?;
    check_version(api_version, &SUBSCRIPTIONS_API_VERSIONS, "subscriptions")?;
    let sites = shared.sites();
    let items: Vec<Value> = sites
        .catalog
        .subscriptions
        .iter()
        .filter(|s| s.accessible)
        .map(|s| {
            let id = s.listed_id.clone().unwrap_or_else(|| s.id.to_string());
            json!({
                "id": format!("/subscriptions/{id}"),
                "authorizationSource": "RoleBased",
                "subscriptionId": id,
                "tenantId": shared.tenant_id,
                "displayName": s.display_name,
                "state": "Enabled",
                "subscriptionPolicies": {
                    "locationPlacementId": "Public_2014-09-01",
                    "quotaId": "PayAsYouGo_2014-09-01",
                    "spendingLimit": "Off",
                },
            })
        })
        .collect();
    let size = sites.catalog.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    drop(sites);
    page(items, size, None, base, path, api_version, query)
}

#[allow(clippy::too_many_arguments)]
fn list_vaults(
    shared: &Shared,
    grant: &Grant,
    method: &Method,
    base: &str,
    path: &str,
    subscription: &str,
    api_version: &str,
    query: &[(String, String)],
) -> Result<Value, ArmError> {
    only_get(method)?;
    check_version(api_version, &VAULTS_API_VERSIONS, "vaults")?;
    let top = match query.iter().find(|(n, _)| n == "$top") {
        None => None,
        Some((_, text)) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_TOP).contains(&n) => Some(n),
            _ => {
                return Err(ArmError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidTopValue",
                    format!("The value of $top '{text}' must be between 1 and {MAX_TOP}."),
                ));
            }
        },
    };
    let sites = shared.sites();
    let Some(seeded) = sites
        .catalog
        .subscriptions
        .iter()
        .find(|s| s.id.to_string().eq_ignore_ascii_case(subscription))
    else {
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("The subscription '{subscription}' could not be found."),
        ));
    };
    if !seeded.accessible || !grant.permissions.allows(VAULTS_READ) {
        return Err(ArmError::new(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{}' with object id '{}' does not have authorization to perform action '{VAULTS_READ}' over scope '/subscriptions/{subscription}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                grant.app_id, grant.app_id
            ),
        ));
    }
    let items: Vec<Value> = sites
        .catalog
        .vaults
        .iter()
        .filter(|v| v.subscription == seeded.id)
        .map(|v| vault_json(shared, v))
        .collect();
    let size = top.unwrap_or(sites.catalog.page_size.unwrap_or(DEFAULT_PAGE_SIZE));
    drop(sites);
    page(items, size, top, base, path, api_version, query)
}

fn vault_json(shared: &Shared, vault: &SeededVault) -> Value {
    let p = &vault.properties;
    let mut properties = json!({
        "tenantId": shared.tenant_id,
        "sku": { "family": "A", "name": "standard" },
        "accessPolicies": [],
        "enabledForDeployment": false,
        "enabledForDiskEncryption": false,
        "enabledForTemplateDeployment": false,
        "enableSoftDelete": p.soft_delete,
        "softDeleteRetentionInDays": 90,
        "enableRbacAuthorization": p.rbac,
        "vaultUri": vault.uri.as_str(),
        "provisioningState": "Succeeded",
        "publicNetworkAccess": if p.public_network_access { "Enabled" } else { "Disabled" },
    });
    // Resource Manager leaves `enablePurgeProtection` out until it is turned on (it
    // cannot be turned off).
    if p.purge_protection {
        properties["enablePurgeProtection"] = json!(true);
    }
    json!({
        "id": vault_id(vault),
        "name": vault.name,
        "type": "Microsoft.KeyVault/vaults",
        "location": "eastus",
        "tags": {},
        "properties": properties,
    })
}

fn page(
    items: Vec<Value>,
    size: usize,
    top: Option<usize>,
    base: &str,
    path: &str,
    api_version: &str,
    query: &[(String, String)],
) -> Result<Value, ArmError> {
    let start = match query.iter().find(|(n, _)| n == "$skiptoken") {
        None => 0,
        Some((_, token)) => decode(token).ok_or_else(|| {
            ArmError::new(
                StatusCode::BAD_REQUEST,
                "InvalidSkipToken",
                "The provided skip token is invalid.",
            )
        })?,
    };
    let end = (start + size).min(items.len());
    let value = items
        .get(start..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let mut body = json!({ "value": value });
    if end < items.len() {
        let mut link = format!(
            "{base}{path}?api-version={api_version}&$skiptoken={}",
            URL_SAFE_NO_PAD.encode(end.to_string())
        );
        if let Some(top) = top {
            link.push_str(&format!("&$top={top}"));
        }
        body["nextLink"] = json!(link);
    }
    Ok(body)
}

fn decode(token: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    std::str::from_utf8(&bytes).ok()?.parse().ok()
}
