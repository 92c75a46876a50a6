use azure_core::http::RequestContent;
use azure_security_keyvault_secrets::models::{
    SecretClientGetSecretOptions, SetSecretParameters, UpdateSecretPropertiesParameters,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures::TryStreamExt;
use keyturn_standins::{Service, Standins};

use crate::start;

fn client(standins: &Standins) -> SecretClient {
    SecretClient::new(
        standins.keyvault().url().as_str(),
        standins.credential(),
        Some(SecretClientOptions {
            client_options: standins.client_options(),
            // The stand-in is 127.0.0.1, not a subdomain of vault.azure.net.
            verify_challenge_resource: Some(false),
            ..SecretClientOptions::default()
        }),
    )
    .expect("a valid vault URL")
}

#[tokio::test]
async fn the_official_secret_client_sets_gets_lists_and_updates_through_the_challenge() {
    let standins = start().await;
    let client = client(&standins);

    let first = client
        .set_secret(
            "api-key",
            RequestContent::try_from(SetSecretParameters {
                value: Some("first".into()),
                ..Default::default()
            })
            .unwrap(),
            None,
        )
        .await
        .expect("set succeeds after the challenge")
        .into_model()
        .unwrap();
    client
        .set_secret(
            "api-key",
            RequestContent::try_from(SetSecretParameters {
                value: Some("second".into()),
                ..Default::default()
            })
            .unwrap(),
            None,
        )
        .await
        .unwrap();

    let latest = client
        .get_secret("api-key", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(latest.value.as_deref(), Some("second"));
    let first_version = first
        .id
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let old = client
        .get_secret(
            "api-key",
            Some(SecretClientGetSecretOptions {
                secret_version: Some(first_version.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(old.value.as_deref(), Some("first"));

    let versions: Vec<_> = client
        .list_secret_properties_versions("api-key", None)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(versions.len(), 2);

    let updated = client
        .update_secret_properties(
            "api-key",
            RequestContent::try_from(UpdateSecretPropertiesParameters {
                tags: Some([("rotated-by".to_owned(), "keyturn".to_owned())].into()),
                ..Default::default()
            })
            .unwrap(),
            None,
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(updated.tags.unwrap()["rotated-by"], "keyturn");
    assert_eq!(
        standins.keyvault().current_secret("api-key").unwrap().tags["rotated-by"],
        "keyturn"
    );

    let log = standins.requests_to(Service::KeyVault);
    assert_eq!(
        log[0].status, 401,
        "the first request is the unauthenticated probe"
    );
    assert_eq!(log[0].header("authorization"), None);
    assert_eq!(log[1].status, 200);
    assert_eq!(log[1].header("authorization"), Some("Bearer"));
    assert!(
        log.iter()
            .all(|r| r.query_param("api-version").as_deref() == Some("2025-07-01"))
    );
}
