//! Resource Manager read for discovery ([`ResourceCatalog`]): the subscriptions the
//! identity holds a role on (`Subscriptions_List`) and each subscription's Key Vaults
//! with their properties (`Vaults_ListBySubscription`), following `nextLink`.
//!
//! Resource Manager rather than Resource Graph: its answer is authoritative where Resource
//! Graph's index can lag a change by minutes, the per-subscription list is one fan-out
//! job, and Reader on the subscription is all either needs.

use async_trait::async_trait;
use serde::Deserialize;

use crate::adapters::azure::client::http::FailureContext;
use crate::adapters::azure::client::resource_manager::ResourceManagerClient;
use crate::domain::ids::SubscriptionId;
use crate::domain::inventory::{FindingKind, InventoryVault, PermissionModel, Scope, ScopeFinding};
use crate::domain::names::{VaultName, VaultUrl};
use crate::ports::PortError;
use crate::ports::catalog::{CatalogPage, Cursor, ResourceCatalog, Stamp, SubscriptionRef};

/// `Microsoft.Resources` version for the subscription list.
pub const SUBSCRIPTIONS_API_VERSION: &str = "2022-12-01";
/// `Microsoft.KeyVault` version for the vault list.
pub const VAULTS_API_VERSION: &str = "2023-07-01";
/// What listing needs: Reader on the subscription.
pub const READER_PERMISSION: &str = "Reader on the subscription (Microsoft.KeyVault/vaults/read)";

#[derive(Debug, Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    #[serde(rename = "nextLink")]
    next_link: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SubscriptionItem {
    #[serde(rename = "subscriptionId")]
    subscription_id: String,
    #[serde(rename = "displayName")]
    display_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct VaultItem {
    id: Option<String>,
    name: Option<String>,
    location: Option<String>,
    #[serde(default)]
    properties: VaultItemProperties,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct VaultItemProperties {
    vault_uri: Option<String>,
    enable_soft_delete: Option<bool>,
    enable_purge_protection: Option<bool>,
    enable_rbac_authorization: Option<bool>,
    public_network_access: Option<String>,
}

fn decode<T: for<'de> Deserialize<'de>>(
    body: &[u8],
    operation: &str,
) -> Result<Page<T>, PortError> {
    serde_json::from_slice(body).map_err(|_| {
        PortError::invalid(format!(
            "{operation}: the answer is not a Resource Manager page"
        ))
    })
}

/// The resource group named in a resource id, `/subscriptions/{s}/resourceGroups/{g}/...`.
fn resource_group(id: &str) -> Option<String> {
    let mut segments = id.split('/');
    while let Some(segment) = segments.next() {
        if segment.eq_ignore_ascii_case("resourceGroups") {
            return segments.next().map(str::to_owned);
        }
    }
    None
}

#[async_trait]
impl ResourceCatalog for ResourceManagerClient {
    async fn subscriptions(
        &self,
        after: Option<&Cursor>,
        stamp: &Stamp,
    ) -> Result<CatalogPage<SubscriptionRef>, PortError> {
        let operation = "listing subscriptions";
        let context = FailureContext {
            operation,
            missing_permission: "Reader on the subscriptions to scan",
            policy_codes: &[],
        };
        let body = self
            .list_page(
                "/subscriptions",
                SUBSCRIPTIONS_API_VERSION,
                after.map(Cursor::as_str),
                &context,
            )
            .await?;
        let page: Page<serde_json::Value> = decode(&body, operation)?;
        let mut out = CatalogPage::last(Vec::new());
        out.next = page.next_link.map(Cursor::new);
        for raw in page.value {
            let parsed = serde_json::from_value::<SubscriptionItem>(raw)
                .ok()
                .and_then(|item| {
                    let id = SubscriptionId::parse(&item.subscription_id).ok()?;
                    Some((id, item.display_name))
                });
            match parsed {
                Some((id, display_name)) => out.items.push(SubscriptionRef { id, display_name }),
                None => out.findings.push(ScopeFinding::new(
                    Scope::Tenant,
                    FindingKind::Malformed,
                    "subscriptions",
                    "a listed subscription has no valid subscriptionId: its vaults are not scanned",
                    stamp.at,
                    stamp.sweep.clone(),
                )),
            }
        }
        Ok(out)
    }

    async fn vaults(
        &self,
        subscription: &SubscriptionId,
        after: Option<&Cursor>,
        stamp: &Stamp,
    ) -> Result<CatalogPage<InventoryVault>, PortError> {
        let operation = format!("listing the Key Vaults of subscription {subscription}");
        let context = FailureContext {
            operation: &operation,
            missing_permission: READER_PERMISSION,
            policy_codes: &[],
        };
        let collection =
            format!("/subscriptions/{subscription}/providers/Microsoft.KeyVault/vaults");
        let body = self
            .list_page(
                &collection,
                VAULTS_API_VERSION,
                after.map(Cursor::as_str),
                &context,
            )
            .await?;
        let page: Page<serde_json::Value> = decode(&body, &operation)?;
        let mut out = CatalogPage::last(Vec::new());
        out.next = page.next_link.map(Cursor::new);
        for raw in page.value {
            let parsed = serde_json::from_value::<VaultItem>(raw)
                .ok()
                .and_then(|item| {
                    let name = VaultName::parse(item.name.as_deref()?).ok()?;
                    let uri = VaultUrl::parse(item.properties.vault_uri.as_deref()?).ok()?;
                    Some((item, name, uri))
                });
            let Some((item, name, uri)) = parsed else {
                out.findings.push(ScopeFinding::new(
                    Scope::Subscription {
                        subscription: *subscription,
                    },
                    FindingKind::Malformed,
                    "vaults",
                    "a listed vault has no valid name or vaultUri",
                    stamp.at,
                    stamp.sweep.clone(),
                ));
                continue;
            };
            let p = &item.properties;
            out.items.push(InventoryVault {
                subscription: Some(*subscription),
                resource_group: item.id.as_deref().and_then(resource_group),
                name,
                uri,
                location: item.location.clone(),
                soft_delete: p.enable_soft_delete,
                // Resource Manager leaves the property out until it is turned on.
                purge_protection: Some(p.enable_purge_protection.unwrap_or(false)),
                permission_model: if p.enable_rbac_authorization == Some(true) {
                    PermissionModel::Rbac
                } else {
                    PermissionModel::AccessPolicy
                },
                public_network_access: p.public_network_access.clone(),
                scanned_at: stamp.at,
                sweep: stamp.sweep.clone(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use azure_core::http::{StatusCode, Url};
    use chrono::DateTime;
    use keyturn_testkit::transport::{Answer, CannedTransport, FixedToken};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::domain::inventory::SweepId;

    const SUBSCRIPTION: &str = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345";

    fn stamp() -> Stamp {
        Stamp {
            sweep: SweepId::parse("20270601T120000Z").expect("sweep"),
            at: DateTime::from_timestamp(1_811_764_800, 0).expect("time"),
        }
    }

    fn client(body: &Value) -> ResourceManagerClient {
        let canned = CannedTransport::always(Answer::new(StatusCode::Ok, body.to_string()));
        let endpoint = Url::parse("https://management.azure.com").expect("url");
        let credential: Arc<FixedToken> = FixedToken::new();
        ResourceManagerClient::new(&endpoint, credential, Some(canned.options())).expect("a client")
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(future)
    }

    /// Any JSON value, for a field that may hold the wrong type.
    fn any_json() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            Just(json!(["x"])),
            Just(json!({"a": 1})),
        ]
    }

    /// A field: a plausible value, absent, or anything.
    fn field(plausible: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
        prop_oneof![3 => plausible.prop_map(Some), 1 => Just(None), 1 => any_json().prop_map(Some)]
    }

    /// A listed vault around Resource Manager's shape.
    fn any_vault() -> impl Strategy<Value = Value> {
        let name = "[a-z][a-z0-9-]{1,24}";
        (
            field(name.prop_map(Value::from)),
            field(name.prop_map(|n| json!(format!("https://{n}.vault.azure.net/")))),
            field(name.prop_map(|n| json!(format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{n}/providers/Microsoft.KeyVault/vaults/{n}")))),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "enableSoftDelete",
                        "enablePurgeProtection",
                        "enableRbacAuthorization",
                        "publicNetworkAccess",
                    ]),
                    field(prop_oneof![any::<bool>().prop_map(Value::from), Just(json!("Disabled"))]),
                ),
                0..4,
            ),
            any::<bool>(),
        )
            .prop_map(|(name, uri, id, properties, has_properties)| {
                let mut vault = serde_json::Map::new();
                let mut props = serde_json::Map::new();
                if let Some(uri) = uri {
                    props.insert("vaultUri".to_owned(), uri);
                }
                for (key, value) in properties {
                    if let Some(value) = value {
                        props.insert(key.to_owned(), value);
                    }
                }
                for (key, value) in [("name", name), ("id", id)] {
                    if let Some(value) = value {
                        vault.insert(key.to_owned(), value);
                    }
                }
                if has_properties {
                    vault.insert("properties".to_owned(), Value::Object(props));
                }
                Value::Object(vault)
            })
    }

    proptest! {
        #[test]
        fn every_listed_vault_is_read_or_recorded_as_a_finding(
            vaults in prop::collection::vec(any_vault(), 0..6),
        ) {
            let subscription = SubscriptionId::parse(SUBSCRIPTION).expect("id");
            let body = json!({"value": vaults});

            let page = block_on(client(&body).vaults(&subscription, None, &stamp()))
                .expect("a page");

            prop_assert_eq!(page.items.len() + page.findings.len(), vaults.len());
            for vault in &page.items {
                let rbac = vault.permission_model == PermissionModel::Rbac;
                let named = |v: &&Value| {
                    v["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(vault.name.as_str()))
                };
                prop_assert!(
                    vaults.iter().filter(named).any(|listed| {
                        rbac == (listed["properties"]["enableRbacAuthorization"] == json!(true))
                    }),
                    "{vault:?} is not as listed"
                );
                prop_assert!(vault.purge_protection.is_some());
                let json = serde_json::to_string(vault).expect("serialise");
                let back: InventoryVault = serde_json::from_str(&json).expect("reads back");
                prop_assert_eq!(&back, vault);
            }
        }

        #[test]
        fn a_page_that_is_not_a_page_is_an_error(body in any_json()) {
            let subscription = SubscriptionId::parse(SUBSCRIPTION).expect("id");
            let listed = block_on(client(&body).vaults(&subscription, None, &stamp()));
            let subscriptions = block_on(client(&body).subscriptions(None, &stamp()));
            // `{"a": 1}` is a page without entries (`value` defaults to none).
            if !body.is_object() {
                prop_assert!(listed.is_err());
                prop_assert!(subscriptions.is_err());
            }
        }
    }

    #[test]
    fn the_resource_group_is_read_from_the_vault_id() {
        assert_eq!(
            resource_group(
                "/subscriptions/x/resourceGroups/rg-vaults/providers/Microsoft.KeyVault/vaults/kv"
            )
            .as_deref(),
            Some("rg-vaults")
        );
        assert_eq!(resource_group("/subscriptions/x"), None);
    }
}
