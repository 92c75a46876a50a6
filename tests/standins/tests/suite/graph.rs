use std::time::Duration;

use keyturn_standins::graph::permission;
use keyturn_standins::{Audience, Device, Permissions};
use serde_json::json;

use crate::{json, start, token};

#[tokio::test]
async fn applications_are_found_by_the_exact_app_id_filter() {
    let standins = start().await;
    let token = token(&standins, Audience::Graph).await;
    let app_id = standins.identity().app_id;
    let mut url = standins.graph().url().join("v1.0/applications").unwrap();
    url.query_pairs_mut()
        .append_pair("$filter", &format!("appId eq '{app_id}'"));

    let body = json(
        standins
            .http_client()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;

    let value = body["value"].as_array().unwrap();
    assert_eq!(value.len(), 1);
    assert_eq!(value[0]["appId"], app_id.to_string());
    assert!(value[0]["passwordCredentials"][0]["secretText"].is_null());
}

#[tokio::test]
async fn other_filters_are_refused_with_graphs_error_shape() {
    let standins = start().await;
    let token = token(&standins, Audience::Graph).await;
    let app_id = standins.identity().app_id;
    for (filter, code) in [
        (
            "displayName eq 'keyturn'".to_owned(),
            "Request_UnsupportedQuery",
        ),
        (format!("appId eq {app_id}"), "BadRequest"),
        (format!("appId  eq '{app_id}'"), "BadRequest"),
        // appId supports eq and startsWith (served, for discovery's partitions), not
        // endsWith.
        ("endswith(appId,'a')".to_owned(), "BadRequest"),
    ] {
        let mut url = standins.graph().url().join("v1.0/applications").unwrap();
        url.query_pairs_mut().append_pair("$filter", &filter);
        let response = standins
            .http_client()
            .get(url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "filter {filter:?}");
        let body = json(response).await;
        assert_eq!(body["error"]["code"], code, "filter {filter:?}");
        assert!(body["error"]["innerError"]["request-id"].is_string());
    }
}

#[tokio::test]
async fn add_password_shows_the_secret_once_and_later_reads_never_do() {
    let standins = start().await;
    let token = token(&standins, Audience::Graph).await;
    let object_id = standins.identity().object_id;
    let base = standins
        .graph()
        .url()
        .join(&format!("v1.0/applications/{object_id}/"))
        .unwrap();
    let end = (standins.now() + chrono::Duration::days(90)).to_rfc3339();

    let added = json(
        standins
            .http_client()
            .post(base.join("addPassword").unwrap())
            .bearer_auth(&token)
            .json(&json!({"passwordCredential": {"displayName": "rotation", "endDateTime": end}}))
            .send()
            .await
            .unwrap(),
    )
    .await;

    let secret = added["secretText"].as_str().unwrap();
    assert_eq!(secret.len(), 40);
    assert_eq!(added["hint"], &secret[..3]);
    let key_id = added["keyId"].as_str().unwrap().to_owned();
    let app = json(
        standins
            .http_client()
            .get(
                standins
                    .graph()
                    .url()
                    .join(&format!("v1.0/applications/{object_id}"))
                    .unwrap(),
            )
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let listed = app["passwordCredentials"].as_array().unwrap();
    assert!(listed.iter().any(|p| p["keyId"] == key_id.as_str()));
    assert!(listed.iter().all(|p| p["secretText"].is_null()));
    assert!(!app.to_string().contains(secret));
}

#[tokio::test]
async fn remove_password_answers_204_then_404_for_the_same_key() {
    let standins = start().await;
    let token = token(&standins, Audience::Graph).await;
    let graph = standins.graph();
    let app = graph.seed_application("target", Permissions::all());
    let password = graph
        .add_password(
            app.object_id,
            standins.now() + chrono::Duration::days(1),
            true,
        )
        .unwrap();
    let url = graph
        .url()
        .join(&format!(
            "v1.0/applications/{}/removePassword",
            app.object_id
        ))
        .unwrap();
    let body = json!({"keyId": password.key_id});

    let first = standins
        .http_client()
        .post(url.clone())
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let second = standins
        .http_client()
        .post(url)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();

    assert_eq!(first.status(), 204);
    assert_eq!(second.status(), 404);
    assert!(graph.passwords(app.object_id).is_empty());
}

#[tokio::test]
async fn add_password_beyond_the_policy_lifetime_is_refused() {
    let standins = start().await;
    standins
        .graph()
        .set_max_password_lifetime(Some(Duration::from_secs(30 * 86_400)));
    let token = token(&standins, Audience::Graph).await;
    let object_id = standins.identity().object_id;
    let end = (standins.now() + chrono::Duration::days(90)).to_rfc3339();

    let response = standins
        .http_client()
        .post(
            standins
                .graph()
                .url()
                .join(&format!("v1.0/applications/{object_id}/addPassword"))
                .unwrap(),
        )
        .bearer_auth(&token)
        .json(&json!({"passwordCredential": {"endDateTime": end}}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
    assert_eq!(
        json(response).await["error"]["code"],
        "CredentialInvalidLifetimeAsPerAppPolicy"
    );
    assert_eq!(standins.graph().passwords(object_id).len(), 1);
}

#[tokio::test]
async fn a_token_without_write_permission_cannot_add_a_password() {
    let standins = start().await;
    let token = standins.issue_token(
        Audience::Graph,
        Permissions::only([permission::APPLICATION_READ_ALL]),
    );
    let object_id = standins.identity().object_id;

    let response = standins
        .http_client()
        .post(
            standins
                .graph()
                .url()
                .join(&format!("v1.0/applications/{object_id}/addPassword"))
                .unwrap(),
        )
        .bearer_auth(&token)
        .json(&json!({"passwordCredential": {}}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 403);
    assert_eq!(
        json(response).await["error"]["code"],
        "Authorization_RequestDenied"
    );
}

#[tokio::test]
async fn a_key_vault_token_is_refused_by_graph() {
    let standins = start().await;
    let token = token(&standins, Audience::KeyVault).await;

    let response = standins
        .http_client()
        .get(standins.graph().url().join("v1.0/applications").unwrap())
        .bearer_auth(token)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 401);
    assert_eq!(
        json(response).await["error"]["code"],
        "InvalidAuthenticationToken"
    );
}

#[tokio::test]
async fn devices_are_found_by_device_id_with_their_security_ids() {
    let standins = start().await;
    let mut device = Device::new("sensor-7");
    device
        .alternative_security_ids
        .push(keyturn_standins::graph::AlternativeSecurityId {
            kind: 2,
            identity_provider: None,
            key: b"X509:<SHA1-TP-PUBKEY>ABCDEF".to_vec(),
        });
    device.is_compliant = Some(false);
    standins.graph().seed_device(device.clone());
    standins.graph().seed_device(Device::new("other"));
    let token = token(&standins, Audience::Graph).await;
    let mut url = standins.graph().url().join("v1.0/devices").unwrap();
    url.query_pairs_mut()
        .append_pair("$filter", &format!("deviceId eq '{}'", device.device_id));

    let body = json(
        standins
            .http_client()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;

    let value = body["value"].as_array().unwrap();
    assert_eq!(value.len(), 1);
    assert_eq!(value[0]["accountEnabled"], true);
    assert_eq!(value[0]["isCompliant"], false);
    assert_eq!(value[0]["alternativeSecurityIds"][0]["type"], 2);
    assert_eq!(
        value[0]["alternativeSecurityIds"][0]["key"],
        "WDUwOTo8U0hBMS1UUC1QVUJLRVk+QUJDREVG"
    );
}
