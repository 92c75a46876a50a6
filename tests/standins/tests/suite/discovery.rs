//! The listings discovery reads: Resource Manager's subscriptions and vaults, a vault's
//! secrets, certificates and keys as metadata (and the ledger of value reads), Graph's
//! applications and service principals with their credentials and owners. Each pages as
//! the service does and refuses what it refuses.

use chrono::Duration;
use keyturn_standins::{
    Audience, CertificateSeed, KeyCredentialSeed, KeySeed, NetworkRefusal, OwnerUser, Permissions,
    SecretSeed, Standins, VaultProperties,
};
use serde_json::Value;

use crate::{json, start};

async fn get(standins: &Standins, url: &url::Url, token: &str) -> reqwest::Response {
    standins
        .http_client()
        .get(url.clone())
        .bearer_auth(token)
        .send()
        .await
        .expect("the stand-in answers")
}

fn reader(standins: &Standins, audience: Audience) -> String {
    standins.issue_token(
        audience,
        Permissions::only([
            "secrets/list",
            "certificates/list",
            "certificates/get",
            "keys/list",
            "keys/get",
            "keys/getrotationpolicy",
            "Microsoft.KeyVault/vaults/read",
            "Application.Read.All",
        ]),
    )
}

/// Follows `next` links from `first`, returning every item.
async fn all_pages(
    standins: &Standins,
    first: url::Url,
    token: &str,
    next: &str,
) -> (Vec<Value>, usize) {
    let mut url = Some(first);
    let mut items = Vec::new();
    let mut pages = 0;
    while let Some(current) = url.take() {
        let response = get(standins, &current, token).await;
        assert_eq!(response.status(), 200, "{current}");
        let body = json(response).await;
        pages += 1;
        items.extend(
            body["value"]
                .as_array()
                .expect("a value array")
                .iter()
                .cloned(),
        );
        url = body[next]
            .as_str()
            .map(|link| url::Url::parse(link).expect("an absolute next link"));
    }
    (items, pages)
}

#[tokio::test]
async fn resource_manager_lists_visible_subscriptions_and_their_vaults_in_pages() {
    let standins = start().await;
    let arm = standins.resource_manager();
    arm.set_list_page_size(2);
    let sub = arm.seed_subscription("production");
    let hidden = arm.seed_inaccessible_subscription("finance");
    for (name, rbac) in [("kv-a", true), ("kv-b", false), ("kv-c", true)] {
        arm.seed_vault(
            sub,
            name,
            standins.keyvault().url(),
            VaultProperties {
                rbac,
                purge_protection: name == "kv-a",
                ..VaultProperties::default()
            },
        );
    }
    let token = reader(&standins, Audience::ResourceManager);

    let subscriptions = arm
        .url()
        .join("subscriptions?api-version=2022-12-01")
        .expect("url");
    let (subs, _) = all_pages(&standins, subscriptions, &token, "nextLink").await;
    assert_eq!(subs.len(), 1, "only the subscription with a role is listed");
    assert_eq!(subs[0]["subscriptionId"], sub.to_string());

    let vaults = arm
        .url()
        .join(&format!(
            "subscriptions/{sub}/providers/Microsoft.KeyVault/vaults?api-version=2023-07-01"
        ))
        .expect("url");
    let (vaults, pages) = all_pages(&standins, vaults, &token, "nextLink").await;
    assert_eq!((vaults.len(), pages), (3, 2));
    assert_eq!(vaults[1]["properties"]["enableRbacAuthorization"], false);
    assert_eq!(vaults[0]["properties"]["enablePurgeProtection"], true);
    assert!(
        vaults[1]["properties"]
            .get("enablePurgeProtection")
            .is_none()
    );
    assert_eq!(vaults[0]["properties"]["publicNetworkAccess"], "Enabled");
    assert_eq!(
        vaults[0]["properties"]["vaultUri"],
        standins.keyvault().url().as_str()
    );

    let refused = arm
        .url()
        .join(&format!(
            "subscriptions/{hidden}/providers/Microsoft.KeyVault/vaults?api-version=2023-07-01"
        ))
        .expect("url");
    let response = get(&standins, &refused, &token).await;
    assert_eq!(response.status(), 403);
    assert_eq!(json(response).await["error"]["code"], "AuthorizationFailed");

    let old = arm
        .url()
        .join(&format!(
            "subscriptions/{sub}/providers/Microsoft.KeyVault/vaults?api-version=2015-06-01"
        ))
        .expect("url");
    assert_eq!(get(&standins, &old, &token).await.status(), 400);
}

#[tokio::test]
async fn a_vault_lists_secrets_certificates_and_keys_as_metadata_in_pages_of_25() {
    let standins = start().await;
    let vault = standins.add_vault().await.expect("a second vault starts");
    let now = standins.now();
    for i in 0..30 {
        vault.seed_secret(
            SecretSeed::new(format!("s{i:02}"), "value").expires(now + Duration::days(i)),
        );
    }
    vault.seed_certificate(
        CertificateSeed::new("tls", "CN=tls.contoso.com", now, now + Duration::days(90))
            .auto_renew_at(80),
    );
    vault.seed_key(KeySeed::rsa("wrap", 3072).rotated_before_expiry(30));
    vault.seed_key(KeySeed::ec("sign", "P-384"));
    let token = reader(&standins, Audience::KeyVault);
    let base = vault.url().clone();

    let (secrets, pages) = all_pages(
        &standins,
        base.join("secrets?api-version=7.6").expect("url"),
        &token,
        "nextLink",
    )
    .await;
    assert_eq!((secrets.len(), pages), (30, 2));
    assert!(secrets.iter().all(|s| s.get("value").is_none()));

    let (certificates, _) = all_pages(
        &standins,
        base.join("certificates?api-version=7.6").expect("url"),
        &token,
        "nextLink",
    )
    .await;
    assert_eq!(certificates.len(), 1);
    let certificate = json(
        get(
            &standins,
            &base.join("certificates/tls?api-version=7.6").expect("url"),
            &token,
        )
        .await,
    )
    .await;
    assert_eq!(certificate["policy"]["issuer"]["name"], "Self");
    assert_eq!(
        certificate["policy"]["lifetime_actions"][0]["action"]["action_type"],
        "AutoRenew"
    );

    let (keys, _) = all_pages(
        &standins,
        base.join("keys?api-version=7.6").expect("url"),
        &token,
        "nextLink",
    )
    .await;
    assert_eq!(keys.len(), 2);
    let key = json(
        get(
            &standins,
            &base.join("keys/wrap?api-version=7.6").expect("url"),
            &token,
        )
        .await,
    )
    .await;
    assert_eq!(key["key"]["kty"], "RSA");
    assert!(key["key"].get("d").is_none(), "no private part");
    let policy = json(
        get(
            &standins,
            &base
                .join("keys/wrap/rotationpolicy?api-version=7.6")
                .expect("url"),
            &token,
        )
        .await,
    )
    .await;
    assert_eq!(policy["lifetimeActions"][0]["action"]["type"], "Rotate");

    assert_eq!(vault.value_reads(), 0);
    assert_eq!(standins.keyvault().value_reads(), 0, "vaults are apart");
}

#[tokio::test]
async fn every_value_read_is_counted_even_when_the_reader_role_refuses_it() {
    let standins = start().await;
    let vault = standins.keyvault();
    vault.seed_secret(SecretSeed::new("db", "hunter2"));
    let token = reader(&standins, Audience::KeyVault);
    let base = vault.url().clone();

    let response = get(
        &standins,
        &base.join("secrets/db?api-version=7.6").expect("url"),
        &token,
    )
    .await;
    assert_eq!(
        response.status(),
        403,
        "Key Vault Reader cannot read a value"
    );
    let listed = get(
        &standins,
        &base
            .join("secrets/db/versions?api-version=7.6")
            .expect("url"),
        &token,
    )
    .await;
    assert_eq!(listed.status(), 200);
    let exported = standins
        .http_client()
        .post(base.join("keys/k/export?api-version=7.6").expect("url"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("answers");
    assert_ne!(exported.status(), 200);

    assert_eq!(vault.value_reads(), 2);
}

#[tokio::test]
async fn a_vault_behind_its_firewall_refuses_listing_and_a_stopped_vault_does_not_answer() {
    let standins = start().await;
    let vault = standins.add_vault().await.expect("starts");
    vault.refuse_network(Some(NetworkRefusal::Firewall));
    let token = reader(&standins, Audience::KeyVault);
    let url = vault.url().join("secrets?api-version=7.6").expect("url");
    let response = get(&standins, &url, &token).await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        json(response).await["error"]["innererror"]["code"],
        "ForbiddenByFirewall"
    );

    let url_of_vault = vault.url().clone();
    standins.stop_vault(&url_of_vault);
    let refused = standins
        .http_client()
        .get(url)
        .bearer_auth(&token)
        .send()
        .await;
    assert!(refused.is_err(), "a deleted vault's host no longer answers");
}

#[tokio::test]
async fn graph_lists_applications_in_pages_with_selected_properties_and_expanded_owners() {
    let standins = start().await;
    let graph = standins.graph();
    let now = standins.now();
    for i in 0..150 {
        let app = graph.seed_application(
            format!("app-{i:03}"),
            Permissions::only(Vec::<String>::new()),
        );
        graph.add_password(app.object_id, now + Duration::days(i), true);
        if i == 7 {
            graph.add_key_credential(
                app.object_id,
                KeyCredentialSeed::certificate("CN=app-007", now, now + Duration::days(365)),
            );
            graph.add_owner_user(
                app.object_id,
                OwnerUser::new("Ana", Some("ana@contoso.com"), None),
            );
        }
    }
    let token = reader(&standins, Audience::Graph);
    let select = "$select=id,appId,displayName,passwordCredentials,keyCredentials";

    let plain = graph
        .url()
        .join(&format!("v1.0/applications?{select}&$top=999"))
        .expect("url");
    let (apps, pages) = all_pages(&standins, plain, &token, "@odata.nextLink").await;
    // 150 seeded plus the identity the stand-ins start with.
    assert_eq!((apps.len(), pages), (151, 1));
    assert!(
        apps.iter().all(|a| a.get("signInAudience").is_none()),
        "$select is honoured"
    );
    assert!(
        apps.iter()
            .flat_map(|a| a["passwordCredentials"]
                .as_array()
                .cloned()
                .unwrap_or_default())
            .all(|p| p["secretText"].is_null())
    );

    let expanded = graph
        .url()
        .join(&format!(
            "v1.0/applications?{select}&$top=999&$expand=owners($select=id,displayName,userPrincipalName,mail)"
        ))
        .expect("url");
    let (apps, pages) = all_pages(&standins, expanded, &token, "@odata.nextLink").await;
    assert_eq!(
        (apps.len(), pages),
        (151, 2),
        "expanded pages hold at most 100"
    );
    let owned = apps
        .iter()
        .find(|a| a["displayName"] == "app-007")
        .expect("listed");
    assert_eq!(owned["owners"][0]["userPrincipalName"], "ana@contoso.com");
    assert!(owned["owners"][0]["mail"].is_null());
    assert_eq!(owned["keyCredentials"][0]["type"], "AsymmetricX509Cert");
    assert!(owned["keyCredentials"][0]["key"].is_null());

    for bad in [
        "v1.0/applications?$top=1000",
        "v1.0/applications?$select=secretText",
        "v1.0/applications?$expand=memberOf",
        "v1.0/applications?$filter=startswith(displayName,'a')",
    ] {
        let response = get(&standins, &graph.url().join(bad).expect("url"), &token).await;
        assert_eq!(response.status(), 400, "{bad}");
    }
}

/// An object's owners beyond the 20 an expansion holds come from its `/owners` list,
/// paged as the collections are; an unknown object is 404, and a list set to misbehave
/// answers each page with a link to itself.
#[tokio::test]
async fn graph_lists_an_objects_owners_in_pages_and_can_loop_them() {
    let standins = start().await;
    let graph = standins.graph();
    let app = graph.seed_application("crowded", Permissions::only(Vec::<String>::new()));
    for i in 0..25 {
        let upn = format!("owner{i}@contoso.com");
        graph.add_owner_user(
            app.object_id,
            OwnerUser::new(&format!("Owner {i}"), Some(&upn), None),
        );
    }
    let sp = graph.seed_service_principal("saml");
    graph.add_service_principal_owner(sp.object_id, OwnerUser::new("Bo", None, None));
    let token = reader(&standins, Audience::Graph);
    let owners = |path: &str, query: &str| {
        graph
            .url()
            .join(&format!("v1.0/{path}/owners?{query}"))
            .expect("url")
    };

    let first = owners(
        &format!("applications/{}", app.object_id),
        "$select=id,userPrincipalName&$top=10",
    );
    let (listed, pages) = all_pages(&standins, first, &token, "@odata.nextLink").await;
    assert_eq!((listed.len(), pages), (25, 3));
    assert_eq!(listed[0]["userPrincipalName"], "owner0@contoso.com");
    assert!(listed.iter().all(|o| o.get("displayName").is_none()));
    let principal = owners(&format!("servicePrincipals/{}", sp.object_id), "");
    let (listed, pages) = all_pages(&standins, principal, &token, "@odata.nextLink").await;
    assert_eq!((listed.len(), pages), (1, 1));
    assert_eq!(listed[0]["displayName"], "Bo");

    for (path, query, status) in [
        (format!("applications/{}", sp.object_id), "", 404),
        (format!("applications/{}", app.object_id), "$top=1000", 400),
        (
            format!("applications/{}", app.object_id),
            "$select=secretText",
            400,
        ),
        (
            format!("applications/{}", app.object_id),
            "$orderby=id",
            400,
        ),
    ] {
        let response = get(&standins, &owners(&path, query), &token).await;
        assert_eq!(response.status(), status, "{path}?{query}");
    }

    graph.loop_owner_pages(app.object_id);
    let first = owners(&format!("applications/{}", app.object_id), "$top=999");
    let body = json(get(&standins, &first, &token).await).await;
    let link = body["@odata.nextLink"].as_str().expect("a next link");
    let again = json(get(&standins, &url::Url::parse(link).expect("url"), &token).await).await;
    assert_eq!(again["@odata.nextLink"].as_str(), Some(link));
    assert_eq!(again["value"], body["value"]);
}

/// An application's federated identity credentials come through `$expand`, one
/// relationship per request as Graph allows; service principals have no such
/// relationship.
#[tokio::test]
async fn graph_expands_an_applications_federated_credentials_and_only_one_relationship() {
    let standins = start().await;
    let graph = standins.graph();
    let app = graph.seed_application("deployer", Permissions::only(Vec::<String>::new()));
    graph.add_federated_credential(app.object_id, "github-main");
    graph.add_federated_credential(app.object_id, "github-release");
    let token = reader(&standins, Audience::Graph);

    let url = graph
        .url()
        .join(&format!(
            "v1.0/applications?$select=id&$expand=federatedIdentityCredentials&$filter=appId eq '{}'",
            app.app_id
        ))
        .expect("url");
    let response = get(&standins, &url, &token).await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    let listed = &body["value"][0];
    assert_eq!(listed["id"], app.object_id.to_string());
    let federated = listed["federatedIdentityCredentials"]
        .as_array()
        .expect("expanded");
    assert_eq!(federated.len(), 2);
    assert_eq!(federated[0]["name"], "github-main");
    assert_eq!(federated[0]["audiences"][0], "api://AzureADTokenExchange");

    for bad in [
        "v1.0/applications?$expand=owners,federatedIdentityCredentials",
        "v1.0/applications?$expand=owners($select=id),federatedIdentityCredentials",
        "v1.0/servicePrincipals?$expand=federatedIdentityCredentials",
    ] {
        let response = get(&standins, &graph.url().join(bad).expect("url"), &token).await;
        assert_eq!(response.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn graph_partitions_applications_and_service_principals_by_app_id_prefix() {
    let standins = start().await;
    let graph = standins.graph();
    let now = standins.now();
    for i in 0..40 {
        let sp = graph.seed_service_principal(&format!("sp-{i}"));
        graph.add_service_principal_key(
            sp.object_id,
            KeyCredentialSeed::certificate("CN=saml", now, now + Duration::days(3 * 365))
                .usage("Sign"),
        );
    }
    let token = reader(&standins, Audience::Graph);
    let mut total = 0;
    for digit in "0123456789abcdef".chars() {
        let url = graph
            .url()
            .join(&format!(
                "v1.0/servicePrincipals?$filter=startswith(appId,'{digit}')&$top=999"
            ))
            .expect("url");
        let (sps, _) = all_pages(&standins, url, &token, "@odata.nextLink").await;
        assert!(
            sps.iter()
                .all(|s| s["appId"].as_str().is_some_and(|a| a.starts_with(digit)))
        );
        total += sps.len();
    }
    assert_eq!(
        total, 40,
        "the sixteen prefixes cover every service principal once"
    );
}
