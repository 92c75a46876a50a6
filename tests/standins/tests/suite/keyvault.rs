use keyturn_standins::keyvault::permission;
use keyturn_standins::{Audience, Permissions, SecretSeed};
use serde_json::json;

use crate::{json, start, token};

const API: &str = "api-version=2025-07-01";

#[tokio::test]
async fn a_request_without_a_token_gets_the_key_vault_challenge() {
    let standins = start().await;
    let url = standins
        .keyvault()
        .url()
        .join(&format!("secrets/app-secret?{API}"))
        .unwrap();

    let response = standins.http_client().get(url).send().await.unwrap();

    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        challenge,
        format!(
            r#"Bearer authorization="https://login.microsoftonline.com/{}", resource="https://vault.azure.net""#,
            standins.tenant_id()
        )
    );
    assert_eq!(json(response).await["error"]["code"], "Unauthorized");
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let standins = start().await;
    let graph_token = token(&standins, Audience::Graph).await;
    let url = standins
        .keyvault()
        .url()
        .join(&format!("secrets?{API}"))
        .unwrap();

    let response = standins
        .http_client()
        .get(url)
        .bearer_auth(graph_token)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let body = json(response).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid audience")
    );
}

#[tokio::test]
async fn a_missing_api_version_is_a_bad_parameter() {
    let standins = start().await;
    let token = token(&standins, Audience::KeyVault).await;
    let url = standins.keyvault().url().join("secrets").unwrap();

    let response = standins
        .http_client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
    assert_eq!(json(response).await["error"]["code"], "BadParameter");
}

#[tokio::test]
async fn an_unknown_api_version_is_refused_with_key_vaults_message() {
    let standins = start().await;
    let token = token(&standins, Audience::KeyVault).await;
    let url = standins
        .keyvault()
        .url()
        .join("secrets?api-version=7.9")
        .unwrap();

    let response = standins
        .http_client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
    let body = json(response).await;
    assert_eq!(body["error"]["code"], "BadParameter");
    assert_eq!(
        body["error"]["message"],
        "The specified version (7.9) is not recognized. Consider using the latest supported version (2025-07-01)."
    );
}

#[tokio::test]
async fn secret_names_outside_key_vaults_alphabet_are_refused() {
    let standins = start().await;
    let token = token(&standins, Audience::KeyVault).await;
    let long = "a".repeat(128);
    for bad in ["under_score", "dot.name", long.as_str()] {
        let url = standins
            .keyvault()
            .url()
            .join(&format!("secrets/{bad}?{API}"))
            .unwrap();
        let response = standins
            .http_client()
            .put(url)
            .bearer_auth(&token)
            .json(&json!({"value": "v"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "name {bad:?}");
        assert_eq!(json(response).await["error"]["code"], "BadParameter");
    }
}

#[tokio::test]
async fn a_set_body_with_an_unknown_or_missing_field_is_a_bad_parameter() {
    let standins = start().await;
    let token = token(&standins, Audience::KeyVault).await;
    let url = standins
        .keyvault()
        .url()
        .join(&format!("secrets/app?{API}"))
        .unwrap();
    for body in [
        json!({"value": "v", "colour": "red"}),
        json!({"contentType": "text/plain"}),
    ] {
        let response = standins
            .http_client()
            .put(url.clone())
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "body {body}");
        assert_eq!(json(response).await["error"]["code"], "BadParameter");
    }
    assert!(standins.keyvault().current_secret("app").is_none());
}

#[tokio::test]
async fn a_token_without_the_get_permission_gets_forbidden() {
    let standins = start().await;
    standins
        .keyvault()
        .seed_secret(SecretSeed::new("app", "value"));
    let token = standins.issue_token(
        Audience::KeyVault,
        Permissions::only([permission::SECRETS_LIST]),
    );
    let url = standins
        .keyvault()
        .url()
        .join(&format!("secrets/app?{API}"))
        .unwrap();

    let response = standins
        .http_client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 403);
    let body = json(response).await;
    assert_eq!(body["error"]["code"], "Forbidden");
    assert_eq!(body["error"]["innererror"]["code"], "ForbiddenByRbac");
}

#[tokio::test]
async fn seeded_secrets_carry_tags_and_expiry_in_unix_seconds() {
    let standins = start().await;
    let expires = chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap();
    let version = standins.keyvault().seed_secret(
        SecretSeed::new("db-password", "hunter2")
            .tag("rotation", "graph")
            .expires(expires),
    );
    let token = token(&standins, Audience::KeyVault).await;
    let url = standins
        .keyvault()
        .url()
        .join(&format!("secrets/db-password/?{API}"))
        .unwrap();

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

    assert_eq!(body["value"], "hunter2");
    assert_eq!(body["tags"]["rotation"], "graph");
    assert_eq!(body["attributes"]["exp"], 1_900_000_000);
    let id = body["id"].as_str().unwrap();
    assert!(id.ends_with(&format!("/secrets/db-password/{version}")));
    assert_eq!(version.len(), 32);
    assert!(version.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[tokio::test]
async fn lists_page_with_next_links_until_every_secret_is_seen() {
    let standins = start().await;
    for i in 0..5 {
        standins
            .keyvault()
            .seed_secret(SecretSeed::new(format!("s{i}"), "v"));
    }
    standins.keyvault().set_page_size(2);
    let token = token(&standins, Audience::KeyVault).await;
    let mut next = Some(
        standins
            .keyvault()
            .url()
            .join(&format!("secrets?{API}"))
            .unwrap()
            .to_string(),
    );
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(url) = next {
        let body = json(
            standins
                .http_client()
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        pages += 1;
        for item in body["value"].as_array().unwrap() {
            assert!(item.get("value").is_none(), "lists never carry values");
            seen.push(
                item["id"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
            );
        }
        next = body["nextLink"].as_str().map(str::to_owned);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["s0", "s1", "s2", "s3", "s4"]);
}

#[tokio::test]
async fn an_unknown_version_is_secret_not_found() {
    let standins = start().await;
    standins.keyvault().seed_secret(SecretSeed::new("app", "v"));
    let token = token(&standins, Audience::KeyVault).await;
    let url = standins
        .keyvault()
        .url()
        .join(&format!("secrets/app/{}?{API}", "0".repeat(32)))
        .unwrap();

    let response = standins
        .http_client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 404);
    assert_eq!(json(response).await["error"]["code"], "SecretNotFound");
}

#[tokio::test]
async fn a_disabled_secret_refuses_get_with_secret_disabled() {
    let standins = start().await;
    standins
        .keyvault()
        .seed_secret(SecretSeed::new("old", "v").disabled());
    let token = token(&standins, Audience::KeyVault).await;
    let url = standins
        .keyvault()
        .url()
        .join(&format!("secrets/old?{API}"))
        .unwrap();

    let response = standins
        .http_client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 403);
    assert_eq!(
        json(response).await["error"]["innererror"]["code"],
        "SecretDisabled"
    );
}

#[tokio::test]
async fn a_self_issued_certificate_completes_after_the_configured_polls_and_gets_a_managed_secret()
{
    let standins = start().await;
    standins.keyvault().set_polls_until_complete(2);
    let token = token(&standins, Audience::KeyVault).await;
    let kv = standins.keyvault().url().clone();
    let client = standins.http_client();
    let policy = json!({"policy": {
        "key_props": {"exportable": true, "kty": "EC", "reuse_key": false},
        "secret_props": {"contentType": "application/x-pem-file"},
        "x509_props": {"subject": "CN=device-gateway", "sans": {"dns_names": ["gw.example"]}, "validity_months": 12},
        "issuer": {"name": "Self"}
    }});

    let created = client
        .post(kv.join(&format!("certificates/gw/create?{API}")).unwrap())
        .bearer_auth(&token)
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    assert_eq!(json(created).await["status"], "inProgress");

    let pending = kv.join(&format!("certificates/gw/pending?{API}")).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let body = json(
            client
                .get(pending.clone())
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        statuses.push(body["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(statuses, ["inProgress", "inProgress", "completed"]);

    let cert = json(
        client
            .get(kv.join(&format!("certificates/gw?{API}")).unwrap())
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let sid = cert["sid"].as_str().unwrap();
    let secret = json(
        client
            .get(format!("{sid}?{API}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(secret["managed"], true);
    assert_eq!(secret["contentType"], "application/x-pem-file");
    assert!(
        secret["value"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert_eq!(secret["kid"], cert["kid"]);
}

#[tokio::test]
async fn a_certificate_from_an_unconfigured_issuer_fails() {
    let standins = start().await;
    standins.keyvault().set_polls_until_complete(0);
    let token = token(&standins, Audience::KeyVault).await;
    let kv = standins.keyvault().url().clone();
    let client = standins.http_client();
    let policy = json!({"policy": {
        "secret_props": {"contentType": "application/x-pem-file"},
        "x509_props": {"subject": "CN=x"},
        "issuer": {"name": "DigiCert"}
    }});
    let created = client
        .post(kv.join(&format!("certificates/x/create?{API}")).unwrap())
        .bearer_auth(&token)
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);

    let body = json(
        client
            .get(kv.join(&format!("certificates/x/pending?{API}")).unwrap())
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;

    assert_eq!(body["status"], "failed");
    assert!(body["error"]["code"].is_string());
}
