//! Graph read for discovery ([`DirectoryCatalog`]): applications and service principals
//! with their password and key credentials and their owners, one range of appIds at a
//! time (`$filter=startswith(appId,'{digit}')`), following `@odata.nextLink`.
//!
//! One request per page carries everything: `$select` names only what the inventory
//! records (Graph never lists `secretText` or a key's `key` anyway), and
//! `$expand=owners(...)` brings the owners along, which caps a page at 100 objects
//! (Graph's known issue for `$expand` on directory objects) instead of a request per
//! object. An owner list longer than the 20 an expansion returns is read in full from
//! `/owners`. The federated identity credentials are not counted here: that would be a
//! request per application.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{GraphClient, context, odata_string};
use crate::adapters::azure::client::http::FailureContext;
use crate::domain::ids::{AppId, DirectoryObjectId, KeyId};
use crate::domain::inventory::{
    CredentialHandle, CredentialKind, CredentialSource, DirectoryDetails, FindingKind,
    InventoryCredential, Owner, Scope, ScopeFinding,
};
use crate::ports::PortError;
use crate::ports::catalog::{
    CatalogPage, Cursor, DirectoryCatalog, DirectoryKind, DirectoryRange, Stamp,
};

/// What discovery reads: Application.Read.All lists both collections with credentials.
pub const READ_PERMISSION: &str = "Microsoft Graph Application.Read.All";
/// Graph's largest page for directory objects.
pub const PAGE_SIZE: &str = "999";
const APPLICATION_SELECT: &str =
    "id,appId,displayName,signInAudience,passwordCredentials,keyCredentials";
const SERVICE_PRINCIPAL_SELECT: &str =
    "id,appId,displayName,signInAudience,passwordCredentials,keyCredentials";
const OWNERS_EXPAND: &str = "owners($select=id,displayName,userPrincipalName,mail)";
/// An expanded relationship lists at most 20 objects.
const MAX_EXPANDED_OWNERS: usize = 20;

impl GraphClient {
    fn first_page(&self, range: &DirectoryRange) -> azure_core::http::Url {
        let (path, select) = match range.kind {
            DirectoryKind::Applications => ("applications", APPLICATION_SELECT),
            DirectoryKind::ServicePrincipals => ("servicePrincipals", SERVICE_PRINCIPAL_SELECT),
        };
        let filter = format!(
            "startswith(appId,{})",
            odata_string(&range.prefix.to_string())
        );
        self.url(
            path,
            &[
                ("$select", select),
                ("$expand", OWNERS_EXPAND),
                ("$filter", &filter),
                ("$top", PAGE_SIZE),
            ],
        )
    }

    /// A `nextLink` is followed only on Graph's own origin.
    fn next_page(&self, cursor: &Cursor) -> Result<azure_core::http::Url, PortError> {
        let url = azure_core::http::Url::parse(cursor.as_str())
            .map_err(|_| PortError::invalid("Graph's @odata.nextLink is not a URL"))?;
        if url.origin() != self.base.origin() {
            return Err(PortError::invalid(
                "Graph's @odata.nextLink leaves Graph's origin",
            ));
        }
        Ok(url)
    }

    async fn all_owners(
        &self,
        kind: DirectoryKind,
        object_id: &DirectoryObjectId,
        context: &FailureContext<'_>,
    ) -> Result<Vec<Value>, PortError> {
        let path = match kind {
            DirectoryKind::Applications => format!("applications/{object_id}/owners"),
            DirectoryKind::ServicePrincipals => format!("servicePrincipals/{object_id}/owners"),
        };
        let mut url = Some(self.url(
            &path,
            &[
                ("$select", "id,displayName,userPrincipalName,mail"),
                ("$top", PAGE_SIZE),
            ],
        ));
        let mut owners = Vec::new();
        while let Some(current) = url.take() {
            let page: Value = self.get(current, context).await?;
            owners.extend(page["value"].as_array().cloned().unwrap_or_default());
            if let Some(link) = page["@odata.nextLink"].as_str() {
                url = Some(self.next_page(&Cursor::new(link))?);
            }
        }
        Ok(owners)
    }
}

fn owner(value: &Value) -> Owner {
    let text = |field: &str| value[field].as_str().map(str::to_owned);
    Owner {
        object_id: value["id"]
            .as_str()
            .and_then(|id| DirectoryObjectId::parse(id).ok()),
        display_name: text("displayName"),
        user_principal_name: text("userPrincipalName"),
        mail: text("mail"),
    }
}

/// A Graph time (`2026-01-06T10:00:00Z`); `null` or absent is "no end date".
fn graph_time(value: &Value) -> Result<Option<DateTime<Utc>>, ()> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| ()),
        _ => Err(()),
    }
}

#[async_trait]
impl DirectoryCatalog for GraphClient {
    async fn credentials(
        &self,
        range: &DirectoryRange,
        after: Option<&Cursor>,
        stamp: &Stamp,
    ) -> Result<CatalogPage<InventoryCredential>, PortError> {
        let operation = format!("listing {}", range.label());
        let context = context(&operation, READ_PERMISSION);
        let url = match after {
            Some(cursor) => self.next_page(cursor)?,
            None => self.first_page(range),
        };
        let body: Value = self.get(url, &context).await?;
        let mut page = CatalogPage::last(Vec::new());
        page.next = body["@odata.nextLink"].as_str().map(Cursor::new);
        for object in body["value"].as_array().into_iter().flatten() {
            let ids = object["id"]
                .as_str()
                .and_then(|id| DirectoryObjectId::parse(id).ok())
                .zip(
                    object["appId"]
                        .as_str()
                        .and_then(|id| AppId::parse(id).ok()),
                );
            let Some((object_id, app_id)) = ids else {
                page.findings.push(ScopeFinding::new(
                    Scope::DirectoryPage {
                        range: range.label(),
                    },
                    FindingKind::Malformed,
                    "object",
                    "a listed object has no valid id or appId",
                    stamp.at,
                    stamp.sweep.clone(),
                ));
                continue;
            };
            let display_name = object["displayName"].as_str().map(str::to_owned);
            let (source, scope) = match range.kind {
                DirectoryKind::Applications => (
                    CredentialSource::Application {
                        object_id,
                        app_id,
                        display_name,
                    },
                    Scope::Application { object_id },
                ),
                DirectoryKind::ServicePrincipals => (
                    CredentialSource::ServicePrincipal {
                        object_id,
                        app_id,
                        display_name,
                    },
                    Scope::ServicePrincipal { object_id },
                ),
            };
            let passwords = object["passwordCredentials"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let keys = object["keyCredentials"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if passwords.is_empty() && keys.is_empty() {
                continue;
            }
            let mut owner_values = object["owners"].as_array().cloned().unwrap_or_default();
            if owner_values.len() >= MAX_EXPANDED_OWNERS {
                owner_values = self.all_owners(range.kind, &object_id, &context).await?;
            }
            let owners: Vec<Owner> = owner_values.iter().map(owner).collect();
            let sign_in_audience = object["signInAudience"].as_str().map(str::to_owned);
            let entries = passwords
                .iter()
                .map(|c| (CredentialKind::PasswordCredential, c))
                .chain(keys.iter().map(|c| (CredentialKind::KeyCredential, c)));
            for (kind, credential) in entries {
                let key_id = credential["keyId"]
                    .as_str()
                    .and_then(|k| KeyId::parse(k).ok());
                let start = graph_time(&credential["startDateTime"]);
                let end = graph_time(&credential["endDateTime"]);
                let (Some(key_id), Ok(start), Ok(end)) = (key_id, start, end) else {
                    page.findings.push(ScopeFinding::new(
                        scope.clone(),
                        FindingKind::Malformed,
                        credential["keyId"]
                            .as_str()
                            .unwrap_or("credential")
                            .chars()
                            .take(64)
                            .collect::<String>(),
                        "a credential has no valid keyId or a start or end that is not a date",
                        stamp.at,
                        stamp.sweep.clone(),
                    ));
                    continue;
                };
                let name = credential["displayName"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .map_or_else(|| key_id.to_string(), str::to_owned);
                let thumbprint = credential["customKeyIdentifier"].as_str().and_then(|c| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .decode(c)
                        .ok()
                        .map(hex::encode_upper)
                });
                page.items.push(InventoryCredential {
                    source: source.clone(),
                    kind,
                    name,
                    handle: CredentialHandle::DirectoryCredential { key_id },
                    enabled: true,
                    created: None,
                    updated: None,
                    not_before: start,
                    expires: end,
                    content_type: None,
                    tags: Default::default(),
                    certificate: None,
                    key: None,
                    directory: Some(DirectoryDetails {
                        credential_type: credential["type"].as_str().map(str::to_owned),
                        usage: credential["usage"].as_str().map(str::to_owned),
                        thumbprint: if kind == CredentialKind::KeyCredential {
                            thumbprint
                        } else {
                            None
                        },
                        sign_in_audience: sign_in_audience.clone(),
                        federated_credentials: None,
                    }),
                    owners: owners.clone(),
                    managed: false,
                    scanned_at: stamp.at,
                    sweep: stamp.sweep.clone(),
                });
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_times_are_rfc_3339_and_null_is_no_end_date() {
        assert_eq!(graph_time(&Value::Null), Ok(None));
        assert!(graph_time(&Value::from("2026-01-06T10:00:00Z")).is_ok_and(|t| t.is_some()));
        assert!(graph_time(&Value::from("06/01/2026")).is_err());
        assert!(graph_time(&Value::from(5)).is_err());
    }
}
