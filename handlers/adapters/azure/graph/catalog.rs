//! Graph read for discovery ([`DirectoryCatalog`]): applications and service principals
//! with their password and key credentials and their owners, one range of appIds at a
//! time (`$filter=startswith(appId,'{digit}')`), following `@odata.nextLink`.
//!
//! One request per page carries everything: `$select` names only what the inventory
//! records (Graph never lists `secretText` or a key's `key` anyway), and
//! `$expand=owners(...)` brings the owners along, which caps a page at 100 objects
//! (Graph's known issue for `$expand` on directory objects) instead of a request per
//! object. An owner list longer than the 20 an expansion returns is read in full from
//! `/owners`.
//!
//! Federated identity credentials are counted by a second list of the same range,
//! `$select=id&$expand=federatedIdentityCredentials`: Graph expands only one relationship
//! per request, and owners take it on the first list. That is one request per 100
//! applications (an application holds at most 20 federated identity credentials, all of
//! them in its expansion), where `/applications/{id}/federatedIdentityCredentials` (or its
//! `$count`, an advanced query needing `ConsistencyLevel: eventual`) would be one per
//! application.

use std::collections::HashSet;

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
    CatalogPage, Cursor, DirectoryCatalog, DirectoryKind, DirectoryRange, RequestBudget, Stamp,
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
/// Pages of an `/owners` list followed at most: 100 pages of 999 is far more owners than
/// any object has, so a list that goes on is one that does not end.
const MAX_OWNER_PAGES: usize = 100;
const FEDERATED_EXPAND: &str = "federatedIdentityCredentials";

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

    fn first_federated_page(&self, range: &DirectoryRange) -> azure_core::http::Url {
        let filter = format!(
            "startswith(appId,{})",
            odata_string(&range.prefix.to_string())
        );
        self.url(
            "applications",
            &[
                ("$select", "id"),
                ("$expand", FEDERATED_EXPAND),
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

    /// Every owner of the object, from its `/owners` list, each page's request waiting
    /// its turn on `budget`. A list that does not end (a page linking back to one already
    /// read, more than [`MAX_OWNER_PAGES`] pages, a link off Graph's origin) is cut: the
    /// owners read so far, and why it was cut. A request that fails fails the listing's
    /// page, as the page's own request would.
    async fn all_owners(
        &self,
        kind: DirectoryKind,
        object_id: &DirectoryObjectId,
        context: &FailureContext<'_>,
        budget: &dyn RequestBudget,
    ) -> Result<(Vec<Value>, Option<String>), PortError> {
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
        let mut owners: Vec<Value> = Vec::new();
        let mut ids = HashSet::new();
        let mut followed = HashSet::new();
        let mut pages = 0;
        while let Some(current) = url.take() {
            followed.insert(current.to_string());
            budget.wait().await;
            let page: Value = self.get(current, context).await?;
            pages += 1;
            for owner in page["value"].as_array().into_iter().flatten() {
                if ids.insert(owner["id"].to_string()) {
                    owners.push(owner.clone());
                }
            }
            let Some(link) = page["@odata.nextLink"].as_str() else {
                break;
            };
            let cut = if pages >= MAX_OWNER_PAGES {
                format!("the list goes on past {MAX_OWNER_PAGES} pages")
            } else if followed.contains(link) {
                "a page links back to one already read".to_owned()
            } else {
                match self.next_page(&Cursor::new(link)) {
                    Ok(next) => {
                        url = Some(next);
                        continue;
                    }
                    Err(error) => error.to_string(),
                }
            };
            return Ok((owners, Some(cut)));
        }
        Ok((owners, None))
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
        budget: &dyn RequestBudget,
    ) -> Result<CatalogPage<InventoryCredential>, PortError> {
        let operation = format!("listing {}", range.label());
        let context = context(&operation, READ_PERMISSION);
        let url = match after {
            Some(cursor) => self.next_page(cursor)?,
            None => self.first_page(range),
        };
        let body: Value = self.get(url, &context).await?;
        // A page lists its objects in `value` (`[]` when there are none): an answer
        // without one is not a page, not an empty range.
        let Some(objects) = body.get("value").and_then(Value::as_array) else {
            return Err(PortError::invalid(format!(
                "{operation}: the answer is not a Graph collection page"
            )));
        };
        let mut page = CatalogPage::last(Vec::new());
        page.next = body["@odata.nextLink"].as_str().map(Cursor::new);
        for object in objects {
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
                let (all, cut) = self
                    .all_owners(range.kind, &object_id, &context, budget)
                    .await?;
                if let Some(why) = cut {
                    // The credentials are read whole; only their owner list may be short.
                    page.findings.push(ScopeFinding::new(
                        scope.clone(),
                        FindingKind::PageFailed,
                        "owners",
                        format!("listing the owners: {why}; the owners read so far are kept"),
                        stamp.at,
                        stamp.sweep.clone(),
                    ));
                }
                if all.len() > owner_values.len() {
                    owner_values = all;
                }
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

    async fn federated_credential_counts(
        &self,
        range: &DirectoryRange,
        after: Option<&Cursor>,
    ) -> Result<CatalogPage<(DirectoryObjectId, u32)>, PortError> {
        if range.kind != DirectoryKind::Applications {
            // Federated identity credentials are a relationship of applications only.
            return Ok(CatalogPage::last(Vec::new()));
        }
        let operation = format!(
            "counting federated identity credentials of {}",
            range.label()
        );
        let context = context(&operation, READ_PERMISSION);
        let url = match after {
            Some(cursor) => self.next_page(cursor)?,
            None => self.first_federated_page(range),
        };
        let body: Value = self.get(url, &context).await?;
        let mut page = CatalogPage::last(Vec::new());
        page.next = body["@odata.nextLink"].as_str().map(Cursor::new);
        for object in body["value"].as_array().into_iter().flatten() {
            let Some(id) = object["id"]
                .as_str()
                .and_then(|id| DirectoryObjectId::parse(id).ok())
            else {
                continue;
            };
            let count = object[FEDERATED_EXPAND].as_array().map_or(0, Vec::len);
            if count > 0 {
                page.items
                    .push((id, u32::try_from(count).unwrap_or(u32::MAX)));
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use azure_core::http::StatusCode;
    use keyturn_testkit::transport::{Answer, CannedTransport, FixedToken};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::adapters::azure::graph::DEFAULT_GRAPH_ENDPOINT;
    use crate::domain::inventory::SweepId;
    use crate::ports::FailureKind;
    use crate::ports::catalog::{HexDigit, Unpaced};

    fn stamp() -> Stamp {
        Stamp {
            sweep: SweepId::parse("20270601T120000Z").expect("sweep"),
            at: DateTime::from_timestamp(1_811_764_800, 0).expect("time"),
        }
    }

    /// `body` read as Graph's answer to the first page of `kind`'s range `a`.
    fn list(
        body: &Value,
        kind: DirectoryKind,
    ) -> Result<CatalogPage<InventoryCredential>, PortError> {
        let canned = CannedTransport::script([Answer::new(StatusCode::Ok, body.to_string())]);
        let endpoint = azure_core::http::Url::parse(DEFAULT_GRAPH_ENDPOINT).expect("url");
        let client = GraphClient::new(&endpoint, FixedToken::new(), Some(canned.options()))
            .expect("a client");
        let range = DirectoryRange {
            kind,
            prefix: HexDigit::parse("a").expect("hex"),
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(client.credentials(&range, None, &stamp(), &Unpaced))
    }

    #[test]
    fn an_answer_without_a_value_list_is_an_error_not_an_empty_range() {
        for body in [
            json!({}),
            json!({"value": null}),
            json!({"value": {}}),
            json!([]),
        ] {
            let error = list(&body, DirectoryKind::Applications).expect_err("not a page");
            assert_eq!(error.kind, FailureKind::Invalid, "{body}");
        }
        let empty = list(&json!({"value": []}), DirectoryKind::Applications);
        assert!(empty.expect("an empty range is a page").items.is_empty());
    }

    const GUIDS: [&str; 3] = [
        "8d3f2a51-0c4e-4b8a-9f61-2b7f3c9d1e01",
        "a1b2c3d4-0000-4000-8000-000000000001",
        "0f1e2d3c-4b5a-4697-8877-665544332211",
    ];

    /// Any JSON value, for a field that may hold the wrong type.
    fn any_json() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            Just(json!(["x"])),
            Just(json!({"a": 1})),
        ]
    }

    /// An identifier: a valid one, or not.
    fn any_id() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            4 => prop::sample::select(GUIDS.to_vec()).prop_map(|g| Some(json!(g))),
            1 => Just(None),
            1 => any_json().prop_map(Some),
        ]
    }

    /// A Graph time: a valid one, no end date, malformed or of the wrong type.
    fn any_time() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            4 => (0i64..253_402_300_799, prop::sample::select(vec!["Z", "+14:00", "-14:00", ".1234567Z"]))
                .prop_map(|(s, zone)| {
                    let at = DateTime::from_timestamp(s, 0).expect("in range");
                    Some(json!(format!("{}{zone}", at.format("%Y-%m-%dT%H:%M:%S"))))
                }),
            1 => Just(None),
            1 => Just(Some(Value::Null)),
            1 => prop::sample::select(vec!["06/01/2027", "2027-13-01T00:00:00Z", "+10000-01-01T00:00:00Z", ""])
                .prop_map(|t| Some(json!(t))),
            1 => any_json().prop_map(Some),
        ]
    }

    fn object(fields: Vec<(&str, Option<Value>)>) -> Value {
        Value::Object(
            fields
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                .collect(),
        )
    }

    fn any_credential() -> impl Strategy<Value = Value> {
        (
            any_id(),
            any_time(),
            any_time(),
            proptest::option::of(any_json()),
            proptest::option::of(any_json()),
        )
            .prop_map(|(key_id, start, end, name, custom)| {
                object(vec![
                    ("keyId", key_id),
                    ("startDateTime", start),
                    ("endDateTime", end),
                    ("displayName", name),
                    ("customKeyIdentifier", custom),
                ])
            })
    }

    /// An owner: any of its fields may be missing (an owner without mail is common).
    fn any_owner() -> impl Strategy<Value = Value> {
        (
            any_id(),
            proptest::option::of(".{0,8}"),
            proptest::option::of(".{0,8}"),
            proptest::option::of(any_json()),
        )
            .prop_map(|(id, name, upn, mail)| {
                object(vec![
                    ("id", id),
                    ("displayName", name.map(Value::from)),
                    ("userPrincipalName", upn.map(Value::from)),
                    ("mail", mail),
                ])
            })
    }

    fn any_object() -> impl Strategy<Value = Value> {
        let credentials = prop_oneof![
            4 => proptest::collection::vec(any_credential(), 0..4).prop_map(|c| Some(json!(c))),
            1 => Just(None),
            1 => any_json().prop_map(Some),
        ];
        (
            any_id(),
            any_id(),
            credentials.clone(),
            credentials,
            proptest::collection::vec(any_owner(), 0..4),
        )
            .prop_map(|(id, app_id, passwords, keys, owners)| {
                object(vec![
                    ("id", id),
                    ("appId", app_id),
                    ("passwordCredentials", passwords),
                    ("keyCredentials", keys),
                    ("owners", Some(json!(owners))),
                ])
            })
    }

    proptest! {
        #[test]
        fn every_listed_credential_is_read_or_recorded(
            objects in proptest::collection::vec(any_object(), 0..5),
            kind in prop::sample::select(vec![DirectoryKind::Applications, DirectoryKind::ServicePrincipals]),
        ) {
            let count = |o: &Value, f: &str| o[f].as_array().map_or(0, Vec::len);
            let credentials: usize = objects
                .iter()
                .map(|o| count(o, "passwordCredentials") + count(o, "keyCredentials"))
                .sum();

            let page = list(&json!({"value": objects}), kind).expect("a page");

            // An object without valid ids is one finding however many credentials it has.
            let seen = page.items.len() + page.findings.len();
            prop_assert!(seen <= credentials + objects.len(), "{seen} of {credentials}");
            let valid_ids = |o: &Value| {
                o["id"].as_str().is_some_and(|i| DirectoryObjectId::parse(i).is_ok())
                    && o["appId"].as_str().is_some_and(|i| AppId::parse(i).is_ok())
            };
            if objects.iter().all(valid_ids) {
                prop_assert_eq!(seen, credentials);
            }
            for credential in &page.items {
                let json = serde_json::to_string(credential).expect("serialise");
                let back: InventoryCredential = serde_json::from_str(&json).expect("reads back");
                prop_assert_eq!(&back, credential);
                prop_assert!(!credential.name.is_empty());
            }
            for finding in &page.findings {
                prop_assert_eq!(finding.kind, FindingKind::Malformed);
                prop_assert!(finding.subject.chars().count() <= 64);
            }
        }

        #[test]
        fn a_credential_without_an_end_date_and_an_owner_without_mail_are_read_as_such(
            start in 0i64..253_402_300_799,
            end in proptest::option::of(0i64..253_402_300_799),
            upn in "[a-z]{1,8}@contoso\\.com",
        ) {
            let at = |s: i64| DateTime::from_timestamp(s, 0).expect("in range");
            let text = |s: i64| at(s).format("%Y-%m-%dT%H:%M:%SZ").to_string();
            let body = json!({"value": [{
                "id": GUIDS[0],
                "appId": GUIDS[1],
                "passwordCredentials": [{
                    "keyId": GUIDS[2],
                    "startDateTime": text(start),
                    "endDateTime": end.map(text),
                }],
                "owners": [{"id": GUIDS[0], "userPrincipalName": upn, "mail": null}],
            }]});

            let page = list(&body, DirectoryKind::Applications).expect("a page");

            prop_assert!(page.findings.is_empty());
            let credential = &page.items[0];
            prop_assert_eq!(credential.not_before, Some(at(start)));
            prop_assert_eq!(credential.expires, end.map(at));
            prop_assert_eq!(credential.owners.len(), 1);
            prop_assert_eq!(credential.owners[0].mail.as_deref(), None);
            prop_assert_eq!(credential.owners[0].user_principal_name.as_deref(), Some(upn.as_str()));
        }
    }

    #[test]
    fn graph_times_are_rfc_3339_and_null_is_no_end_date() {
        assert_eq!(graph_time(&Value::Null), Ok(None));
        assert!(graph_time(&Value::from("2026-01-06T10:00:00Z")).is_ok_and(|t| t.is_some()));
        assert!(graph_time(&Value::from("06/01/2026")).is_err());
        assert!(graph_time(&Value::from(5)).is_err());
    }
}
