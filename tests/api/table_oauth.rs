//! Table storage with a bearer token, keyturn's identity-based path
//! (`KEYTURN_TABLE_ENDPOINT`), against Azurite with OAuth enabled over HTTPS (`--oauth
//! basic`, started by `.ci/test` with a certificate it generates): the client asks its
//! credential for an Azure Storage token and sends it as Azurite demands, and a token for
//! another audience is refused as a missing role. Azurite's basic OAuth checks a token's
//! issuer, audience and lifetime, not its signature, so the test credential mints unsigned
//! tokens with the claims Entra puts in a managed identity's storage token.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::{ClientOptions, RetryOptions, Transport, Url};
use azure_core::time::{Duration as AzureDuration, OffsetDateTime};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::json;

use keyturn::adapters::azure::client::table::{EntityKey, TableClient, TableName};
use keyturn::ports::FailureKind;

const ENDPOINT_VARIABLE: &str = "KEYTURN_TEST_TABLE_OAUTH_ENDPOINT";
const CA_VARIABLE: &str = "KEYTURN_TEST_TABLE_OAUTH_CA";

/// Mints a storage token for `audience`, recording the scopes it was asked for.
#[derive(Debug)]
struct MintedToken {
    audience: &'static str,
    scopes: Mutex<Vec<String>>,
}

impl MintedToken {
    fn new(audience: &'static str) -> Arc<Self> {
        Arc::new(Self {
            audience,
            scopes: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl TokenCredential for MintedToken {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.scopes
            .lock()
            .expect("test lock")
            .extend(scopes.iter().map(|s| (*s).to_owned()));
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
        let claims = URL_SAFE_NO_PAD.encode(
            json!({
                "aud": self.audience,
                "iss": format!("https://sts.windows.net/{tenant}/"),
                "iat": now - 60, "nbf": now - 60, "exp": now + 3600,
                "oid": "11059fcc-5514-4800-b5f8-49808b9cfab6",
                "tid": tenant,
                "idtyp": "app",
            })
            .to_string(),
        );
        Ok(AccessToken::new(
            Secret::new(format!("{header}.{claims}.c2lnbmF0dXJl")),
            OffsetDateTime::now_utc() + AzureDuration::hours(1),
        ))
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct Row {
    value: String,
}

/// Azurite's OAuth endpoint and a client transport that trusts its test CA only.
fn azurite() -> (Url, ClientOptions) {
    let endpoint = std::env::var(ENDPOINT_VARIABLE).unwrap_or_else(|_| {
        panic!("{ENDPOINT_VARIABLE} is not set: start Azurite via the project's test command (.ci/test)")
    });
    let ca = std::env::var(CA_VARIABLE).unwrap_or_else(|_| {
        panic!("{CA_VARIABLE} is not set: .ci/test sets it beside {ENDPOINT_VARIABLE}")
    });
    let pem = std::fs::read(&ca).unwrap_or_else(|e| panic!("{ca}: {e}"));
    let root = reqwest::Certificate::from_pem(&pem).expect("a PEM certificate");
    let client = reqwest::Client::builder()
        .tls_certs_only([root])
        .build()
        .expect("an HTTP client");
    let options = ClientOptions {
        transport: Some(Transport::new(Arc::new(client))),
        retry: RetryOptions::none(),
        ..ClientOptions::default()
    };
    (Url::parse(&endpoint).expect("a URL"), options)
}

#[tokio::test]
async fn the_identity_based_table_client_works_against_azurite_with_oauth_over_https() {
    let (endpoint, options) = azurite();
    assert_eq!(endpoint.scheme(), "https");
    let credential = MintedToken::new("https://storage.azure.com");
    let client =
        TableClient::with_token(endpoint.clone(), credential.clone(), Some(options.clone()))
            .expect("an https endpoint");
    let table =
        TableName::parse(&format!("oauth{}", uuid::Uuid::new_v4().simple())).expect("a table name");
    client
        .create_table_if_not_exists(&table)
        .await
        .expect("Azurite accepts the bearer token");
    let partition = EntityKey::parse("p").expect("key");
    let row = EntityKey::parse("r1").expect("key");
    let value = Row {
        value: "through a token".to_owned(),
    };
    client
        .insert(&table, &partition, &row, &value)
        .await
        .expect("inserted with the token");
    let read = client
        .get::<Row>(&table, &partition, &row)
        .await
        .expect("read with the token");
    assert_eq!(read.properties, value);
    assert_eq!(
        credential
            .scopes
            .lock()
            .expect("test lock")
            .first()
            .map(String::as_str),
        Some("https://storage.azure.com/.default")
    );
    client.delete_table(&table).await.expect("deleted");

    // A token for another resource is refused, and reported as the role it lacks.
    let graph = MintedToken::new("https://graph.microsoft.com");
    let wrong = TableClient::with_token(endpoint, graph, Some(options)).expect("client");
    let error = wrong
        .create_table_if_not_exists(&table)
        .await
        .expect_err("Azurite refuses the audience");
    assert!(
        matches!(error.kind, FailureKind::PermissionDenied { .. }),
        "{error:?}"
    );
}
