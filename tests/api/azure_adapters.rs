//! The Azure adapters against the HTTPS stand-ins: Key Vault through the official crates
//! (with the 401 challenge), Graph, the Entra token endpoint and Service Bus, each over
//! TLS with the stand-ins' test CA, checked for what they send and how refusals map.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::poller::PollerOptions;
use azure_core::http::{ClientOptions, RequestContent, RetryOptions};
use azure_security_keyvault_certificates::models::{
    CertificateClientCreateCertificateOptions, CertificatePolicy, CreateCertificateParameters,
    IssuerParameters, SecretProperties, X509CertificateProperties,
};
use azure_security_keyvault_certificates::{CertificateClient, CertificateClientOptions};
use chrono::{DateTime, Utc};
use keyturn_standins::{
    Device, Fault, NetworkRefusal, Permissions, QueueOptions, Route, SecretSeed, Service, Standins,
};
use uuid::Uuid;

use keyturn::adapters::azure::graph::{APPLICATION_PERMISSION, DEVICE_PERMISSION, GraphClient};
use keyturn::adapters::azure::keyvault::{KeyVault, KeyVaultSource};
use keyturn::adapters::azure::servicebus::ServiceBusQueue;
use keyturn::adapters::azure::token::{DEFAULT_PROOF_SCOPE, EntraTokenProver};
use keyturn::domain::ids::{AppId, DeviceId, DirectoryObjectId, TenantId};
use keyturn::domain::names::{ObjectName, ObjectVersion, VaultUrl};
use keyturn::domain::secret::SecretValue;
use keyturn::ports::directory::{CredentialIssuer, DeviceDirectory, ProofError, TokenProver};
use keyturn::ports::queue::{JobQueue, OutgoingMessage};
use keyturn::ports::source::SecretSource;
use keyturn::ports::vault::{
    CertificateOperation, CertificateStore, NewSecretVersion, SecretStore,
};
use keyturn::ports::{FailureKind, PortError};

/// Microsoft Graph's token audience: the stand-ins' token endpoint issues Graph tokens
/// for it, whatever host the Graph stand-in listens on.
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const QUEUE: &str = "rotations";

async fn start() -> Standins {
    Standins::start()
        .await
        .expect("the stand-ins start on loopback")
}

/// The stand-ins' transport, without retries, so a refusal reaches the mapping as sent.
fn no_retries(standins: &Standins) -> ClientOptions {
    ClientOptions {
        retry: RetryOptions::none(),
        ..standins.client_options()
    }
}

fn vault_url(standins: &Standins) -> VaultUrl {
    VaultUrl::parse(standins.keyvault().url().as_str()).expect("the stand-in's URL is a vault URL")
}

fn key_vault(standins: &Standins, credential: Arc<dyn TokenCredential>) -> KeyVault {
    KeyVault::new(credential, Some(no_retries(standins))).without_challenge_resource_check()
}

fn graph(standins: &Standins, credential: Arc<dyn TokenCredential>) -> GraphClient {
    GraphClient::with_scope(
        standins.graph().url(),
        GRAPH_SCOPE.to_owned(),
        credential,
        Some(no_retries(standins)),
    )
    .expect("the stand-in's URL is an https endpoint")
}

fn name(text: &str) -> ObjectName {
    ObjectName::parse(text).expect("valid name")
}

fn version(text: &str) -> ObjectVersion {
    ObjectVersion::parse(text).expect("valid version")
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn permission_missing(error: &PortError) -> &str {
    match &error.kind {
        FailureKind::PermissionDenied { missing } => missing,
        other => panic!(
            "expected permission denied, got {other:?} ({})",
            error.context
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Key Vault secrets
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn secrets_round_trip_through_the_official_crate_after_the_challenge() {
    let standins = start().await;
    let vault = vault_url(&standins);
    let store = key_vault(&standins, standins.credential());
    let api_key = name("api-key");
    let expires: DateTime<Utc> = standins.now() + chrono::Duration::days(90);

    let first = store
        .set_secret(
            &vault,
            &api_key,
            &SecretValue::new("first-value"),
            NewSecretVersion {
                content_type: Some("text/plain".into()),
                expires: Some(expires),
                tags: tags(&[("keyturn-kind", "generated")]),
                ..NewSecretVersion::default()
            },
        )
        .await
        .expect("first version written");
    standins.advance_clock(Duration::from_secs(5));
    let second = store
        .set_secret(
            &vault,
            &api_key,
            &SecretValue::new("second-value"),
            NewSecretVersion::default(),
        )
        .await
        .expect("second version written");

    let requests = standins.requests_to(Service::KeyVault);
    assert_eq!(
        requests[0].status, 401,
        "the first request meets the challenge"
    );
    assert_eq!(requests[0].header("authorization"), None);
    assert_eq!(requests[1].header("authorization"), Some("Bearer"));
    assert_eq!(first.id.vault(), &vault);
    assert_eq!(
        first.expires.map(|e| e.timestamp()),
        Some(expires.timestamp())
    );
    assert_eq!(first.tags, tags(&[("keyturn-kind", "generated")]));
    assert_eq!(first.content_type.as_deref(), Some("text/plain"));

    let current = store
        .secret(&vault, &api_key, None)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(current.value.expose(), "second-value");
    assert_eq!(current.properties.id, second.id);
    let old_version = first.id.version().expect("a written version has one");
    let old = store
        .secret(&vault, &api_key, Some(old_version))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(old.value.expose(), "first-value");

    let updated = store
        .update_tags(
            &vault,
            &api_key,
            old_version,
            tags(&[
                ("keyturn-last-error", "none"),
                ("keyturn-kind", "generated"),
            ]),
        )
        .await
        .expect("tags replaced");
    assert_eq!(
        updated.tags.get("keyturn-last-error").map(String::as_str),
        Some("none")
    );
    assert_eq!(
        updated.expires.map(|e| e.timestamp()),
        Some(expires.timestamp())
    );
    let stored = standins.keyvault().secret_versions("api-key");
    assert_eq!(
        stored[0].tags.get("keyturn-last-error").map(String::as_str),
        Some("none")
    );
    assert_eq!(
        stored[0].value, "first-value",
        "updating tags keeps the value"
    );

    let versions = store.list_versions(&vault, &api_key).await.expect("listed");
    assert_eq!(versions.len(), 2);
    assert!(versions.iter().any(|v| v.id == first.id));
}

#[tokio::test]
async fn listing_and_metadata_reads_never_fetch_a_value() {
    let standins = start().await;
    let vault = vault_url(&standins);
    let store = key_vault(&standins, standins.credential());
    standins.keyvault().set_page_size(2);
    for index in 0..5 {
        standins.keyvault().seed_secret(
            SecretSeed::new(format!("secret-{index}"), "value").tag("keyturn-kind", "generated"),
        );
    }
    standins.advance_clock(Duration::from_secs(5));
    let newest = standins
        .keyvault()
        .seed_secret(SecretSeed::new("secret-0", "newer value"));
    store
        .list_secrets(&vault)
        .await
        .expect("warm the challenge");
    standins.clear_requests();

    let listed = store.list_secrets(&vault).await.expect("listed");
    let current = store
        .secret_properties(&vault, &name("secret-0"), None)
        .await
        .expect("read")
        .expect("exists");
    let absent = store
        .secret_properties(&vault, &name("never-written"), None)
        .await
        .expect("read");

    assert_eq!(listed.len(), 5, "every page is followed");
    assert!(listed.iter().all(|s| s.id.version().is_none()));
    assert_eq!(current.id.version(), Some(&version(&newest)));
    assert_eq!(absent, None);
    let requests = standins.requests_to(Service::KeyVault);
    assert!(
        requests.len() >= 3,
        "pages were fetched: {}",
        requests.len()
    );
    for request in &requests {
        let path = request.path.trim_end_matches('/');
        assert!(
            path == "/secrets" || path.ends_with("/versions"),
            "a metadata read fetched {path}"
        );
    }
}

#[tokio::test]
async fn versions_written_in_one_second_are_told_apart_by_key_vault() {
    let standins = start().await;
    let vault = vault_url(&standins);
    let store = key_vault(&standins, standins.credential());
    standins
        .keyvault()
        .seed_secret(SecretSeed::new("twins", "one"));
    let second = standins
        .keyvault()
        .seed_secret(SecretSeed::new("twins", "two"));

    let current = store
        .secret_properties(&vault, &name("twins"), None)
        .await
        .expect("read")
        .expect("exists");

    assert_eq!(current.id.version(), Some(&version(&second)));
}

#[tokio::test]
async fn a_missing_role_is_permission_denied_naming_the_key_vault_role() {
    let standins = start().await;
    let vault = vault_url(&standins);
    let reader =
        standins.seed_identity("reader", Permissions::only(["secrets/get", "secrets/list"]));
    let store = key_vault(&standins, standins.credential_for(&reader));

    let error = store
        .set_secret(
            &vault,
            &name("api-key"),
            &SecretValue::new("v"),
            NewSecretVersion::default(),
        )
        .await
        .expect_err("refused");
    let missing = permission_missing(&error).to_owned();

    assert!(
        missing.starts_with("Key Vault Secrets Officer on vault 127.0.0.1"),
        "{missing}"
    );
    assert!(error.context.contains("HTTP 403"), "{}", error.context);
    assert!(
        !error.context.contains("Caller"),
        "Key Vault's message stays out: {}",
        error.context
    );

    let nobody = standins.seed_identity("nobody", Permissions::only(["certificates/get"]));
    let store = key_vault(&standins, standins.credential_for(&nobody));
    let error = store.list_secrets(&vault).await.expect_err("refused");
    assert!(permission_missing(&error).starts_with("Key Vault Secrets User"));
}

#[tokio::test]
async fn a_vault_network_refusal_is_reported_as_such_not_as_a_missing_role() {
    let standins = start().await;
    let vault = vault_url(&standins);
    let store = key_vault(&standins, standins.credential());
    for (refusal, code) in [
        (NetworkRefusal::Firewall, "ForbiddenByFirewall"),
        (NetworkRefusal::Connection, "ForbiddenByConnection"),
    ] {
        standins.keyvault().refuse_network(Some(refusal));
        let error = store.list_secrets(&vault).await.expect_err("refused");
        assert_eq!(
            error.kind,
            FailureKind::NetworkRefused {
                code: code.to_owned()
            },
            "{}",
            error.context
        );
        assert!(error.context.contains("network rules"), "{}", error.context);
        assert!(
            !error.context.contains("Client address"),
            "Key Vault's message stays out: {}",
            error.context
        );
        let source = KeyVaultSource::new(
            vault.clone(),
            standins.credential(),
            Some(standins.client_options()),
        )
        .without_challenge_resource_check();
        let error = source
            .fetch(&name("api-key"), standins.now())
            .await
            .expect_err("refused");
        assert!(
            matches!(error.kind, FailureKind::NetworkRefused { .. }),
            "{error:?}"
        );
    }
    // A role refusal behind the same 403 is still a missing role.
    standins.keyvault().refuse_network(None);
    let nobody = standins.seed_identity("nobody", Permissions::only(["certificates/get"]));
    let store = key_vault(&standins, standins.credential_for(&nobody));
    let error = store.list_secrets(&vault).await.expect_err("refused");
    assert!(permission_missing(&error).starts_with("Key Vault Secrets User"));
}

#[tokio::test]
async fn throttling_is_transient_with_key_vaults_retry_after() {
    let standins = start().await;
    let vault = vault_url(&standins);
    let store = key_vault(&standins, standins.credential());
    store
        .list_secrets(&vault)
        .await
        .expect("warm the challenge");
    standins.inject(
        Service::KeyVault,
        Route::any("/secrets"),
        Fault::throttled(Some(7)),
    );

    let error = store.list_secrets(&vault).await.expect_err("throttled");

    assert_eq!(
        error.kind,
        FailureKind::Transient {
            retry_after: Some(Duration::from_secs(7))
        }
    );
}

#[tokio::test]
async fn the_pipeline_waits_out_retry_after_before_trying_again() {
    let standins = start().await;
    let vault = vault_url(&standins);
    let options = ClientOptions {
        retry: RetryOptions::exponential(azure_core::http::ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(10),
            max_retries: 2,
            max_total_elapsed: azure_core::time::Duration::seconds(30),
            max_delay: azure_core::time::Duration::seconds(5),
        }),
        ..standins.client_options()
    };
    let store =
        KeyVault::new(standins.credential(), Some(options)).without_challenge_resource_check();
    store
        .list_secrets(&vault)
        .await
        .expect("warm the challenge");
    standins.clear_requests();
    standins.inject(
        Service::KeyVault,
        Route::any("/secrets"),
        Fault::throttled(Some(1)),
    );

    store
        .list_secrets(&vault)
        .await
        .expect("succeeds on the retry");

    let requests = standins.requests_to(Service::KeyVault);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].status, 429);
    assert_eq!(requests[1].status, 200);
    let waited = requests[1].received.duration_since(requests[0].received);
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
}

#[tokio::test]
async fn server_errors_are_transient_and_missing_versions_are_none() {
    let standins = start().await;
    let vault = vault_url(&standins);
    let store = key_vault(&standins, standins.credential());
    standins
        .keyvault()
        .seed_secret(SecretSeed::new("api-key", "v"));
    store
        .list_secrets(&vault)
        .await
        .expect("warm the challenge");

    standins.inject(
        Service::KeyVault,
        Route::any("/secrets"),
        Fault::internal_error(),
    );
    let error = store
        .secret(&vault, &name("api-key"), None)
        .await
        .expect_err("500");
    let missing = store
        .secret(
            &vault,
            &name("api-key"),
            Some(&version("0123456789abcdef0123456789abcdef")),
        )
        .await
        .expect("read");

    assert_eq!(error.kind, FailureKind::Transient { retry_after: None });
    assert!(missing.is_none());
}

// ---------------------------------------------------------------------------------------
// The endpoint's keyvault source
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_keyvault_source_serves_only_live_current_versions() {
    let standins = start().await;
    let now = standins.now();
    let vault = vault_url(&standins);
    let source = KeyVaultSource::new(vault, standins.credential(), Some(no_retries(&standins)))
        .without_challenge_resource_check();
    let kv = standins.keyvault();
    let live = kv.seed_secret(
        SecretSeed::new("live", "device-secret")
            .content_type("text/plain")
            .expires(now + chrono::Duration::days(1)),
    );
    kv.seed_secret(SecretSeed::new("disabled", "x").disabled());
    kv.seed_secret(SecretSeed::new("expired", "x").expires(now - chrono::Duration::hours(1)));
    kv.seed_secret(SecretSeed::new("early", "x").not_before(now + chrono::Duration::hours(1)));

    let served = source
        .fetch(&name("live"), now)
        .await
        .expect("read")
        .expect("served");
    assert_eq!(served.value.expose(), "device-secret");
    assert_eq!(served.version.as_deref(), Some(live.as_str()));
    assert_eq!(served.content_type.as_deref(), Some("text/plain"));
    for refused in ["disabled", "expired", "early", "missing"] {
        let fetched = source.fetch(&name(refused), now).await.expect("read");
        assert!(fetched.is_none(), "{refused} must not be served");
    }
}

// ---------------------------------------------------------------------------------------
// Key Vault certificates
// ---------------------------------------------------------------------------------------

async fn create_certificate(standins: &Standins, name: &str, issuer: &str) {
    let client = CertificateClient::new(
        standins.keyvault().url().as_str(),
        standins.credential(),
        Some(CertificateClientOptions {
            client_options: standins.client_options(),
            verify_challenge_resource: Some(false),
            ..CertificateClientOptions::default()
        }),
    )
    .expect("valid vault URL");
    let policy = CertificatePolicy {
        x509_certificate_properties: Some(X509CertificateProperties {
            subject: Some(format!("CN={name}")),
            ..X509CertificateProperties::default()
        }),
        issuer_parameters: Some(IssuerParameters {
            name: Some(issuer.to_owned()),
            ..IssuerParameters::default()
        }),
        secret_properties: Some(SecretProperties {
            content_type: Some("application/x-pem-file".to_owned()),
        }),
        ..CertificatePolicy::default()
    };
    let parameters: RequestContent<CreateCertificateParameters> = CreateCertificateParameters {
        certificate_policy: Some(policy),
        ..CreateCertificateParameters::default()
    }
    .try_into()
    .expect("encodable");
    // The poller waits 30 s between polls by default; the stand-in completes at once.
    let options = CertificateClientCreateCertificateOptions {
        method_options: PollerOptions {
            frequency: azure_core::time::Duration::seconds(1),
            ..PollerOptions::default()
        },
    };
    client
        .begin_create_certificate(name, parameters, Some(options))
        .expect("request built")
        .await
        .expect("the first version is issued");
}

#[tokio::test]
async fn a_self_issued_certificate_renews_from_its_policy() {
    let standins = start().await;
    let vault = vault_url(&standins);
    let store = key_vault(&standins, standins.credential());
    standins.keyvault().set_polls_until_complete(0);
    create_certificate(&standins, "device-api", "Self").await;
    let cert = name("device-api");

    let before = store
        .certificate_properties(&vault, &cert)
        .await
        .expect("read")
        .expect("exists");
    let issuer = store.issuer(&vault, &cert).await.expect("policy read");
    let started = store
        .begin_renewal(&vault, &cert)
        .await
        .expect("renewal started");
    let finished = store.renewal_status(&vault, &cert).await.expect("polled");

    assert_eq!(issuer, "Self");
    assert_eq!(
        before.x5t_hex.as_ref().map(String::len),
        Some(40),
        "SHA-1 thumbprint in hex"
    );
    assert_eq!(started, CertificateOperation::InProgress);
    let CertificateOperation::Completed { version } = finished else {
        panic!("expected completion, got {finished:?}");
    };
    assert_ne!(Some(&version), before.id.version());
    let after = store
        .certificate_properties(&vault, &cert)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(after.id.version(), Some(&version));
    assert_eq!(
        store
            .certificate_properties(&vault, &name("absent"))
            .await
            .expect("read"),
        None
    );
}

#[tokio::test]
async fn certificates_are_listed_through_the_official_crate_across_pages() {
    let standins = start().await;
    let vault = vault_url(&standins);
    let store = key_vault(&standins, standins.credential());
    standins.keyvault().set_polls_until_complete(0);
    standins.keyvault().set_page_size(1);
    for cert in ["device-api", "gateway-tls", "partner-sso"] {
        create_certificate(&standins, cert, "Self").await;
    }

    let listed = store.list_certificates(&vault).await.expect("listed");

    let names: Vec<&str> = listed.iter().map(|c| c.id.name().as_str()).collect();
    assert_eq!(names, ["device-api", "gateway-tls", "partner-sso"]);
    for listed in &listed {
        let read = store
            .certificate_properties(&vault, listed.id.name())
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(listed.x5t_hex, read.x5t_hex, "{}", listed.id.name());
        assert_eq!(listed.expires, read.expires, "{}", listed.id.name());
        assert!(listed.enabled && listed.expires.is_some());
        assert_eq!(listed.id.version(), None, "a list item names no version");
    }

    let nobody = standins.seed_identity("nobody", Permissions::only(["certificates/get"]));
    let refused = key_vault(&standins, standins.credential_for(&nobody))
        .list_certificates(&vault)
        .await
        .expect_err("listing needs certificates/list");
    assert!(
        permission_missing(&refused).starts_with("Key Vault Certificate"),
        "{}",
        permission_missing(&refused)
    );
}

#[tokio::test]
async fn a_renewal_already_pending_is_returned_rather_than_started_twice() {
    let standins = start().await;
    let vault = vault_url(&standins);
    let store = key_vault(&standins, standins.credential());
    standins.keyvault().set_polls_until_complete(0);
    create_certificate(&standins, "device-api", "Self").await;
    standins.keyvault().set_polls_until_complete(5);
    let cert = name("device-api");

    let first = store.begin_renewal(&vault, &cert).await.expect("started");
    standins.clear_requests();
    let second = store.begin_renewal(&vault, &cert).await.expect("pending");

    assert_eq!(first, CertificateOperation::InProgress);
    assert_eq!(second, CertificateOperation::InProgress);
    let creates = standins
        .requests_to(Service::KeyVault)
        .into_iter()
        .filter(|r| r.path.ends_with("/create"))
        .count();
    assert_eq!(creates, 0, "no second operation was started");
}

// ---------------------------------------------------------------------------------------
// Graph and the token endpoint
// ---------------------------------------------------------------------------------------

struct Rotated {
    object_id: DirectoryObjectId,
    app_id: AppId,
}

fn seed_application(standins: &Standins) -> Rotated {
    let seeded = standins
        .graph()
        .seed_application("billing-api", Permissions::all());
    Rotated {
        object_id: DirectoryObjectId::parse(&seeded.object_id.to_string()).expect("GUID"),
        app_id: AppId::parse(&seeded.app_id.to_string()).expect("GUID"),
    }
}

fn prover(standins: &Standins) -> EntraTokenProver {
    let tenant = TenantId::parse(&standins.tenant_id().to_string()).expect("GUID");
    EntraTokenProver::new(
        standins.login_url(),
        &tenant,
        DEFAULT_PROOF_SCOPE,
        Some(no_retries(standins)),
    )
    .expect("valid authority")
}

#[tokio::test]
async fn add_password_returns_the_secret_once_and_remove_password_retires_it() {
    let standins = start().await;
    let graph = graph(&standins, standins.credential());
    let app = seed_application(&standins);
    let end = standins.now() + chrono::Duration::days(30);

    let found = graph
        .application(&app.app_id)
        .await
        .expect("looked up")
        .expect("found");
    let issued = graph
        .add_password(&found.object_id, "keyturn job 7", end)
        .await
        .expect("added");
    let listed = graph
        .password_credentials(&app.object_id)
        .await
        .expect("listed");

    assert_eq!(found.object_id, app.object_id);
    assert_eq!(found.display_name.as_deref(), Some("billing-api"));
    assert!(issued.secret.len() >= 40);
    assert!(!format!("{issued:?}").contains(issued.secret.expose()));
    assert_eq!(
        issued.credential.display_name.as_deref(),
        Some("keyturn job 7")
    );
    assert_eq!(
        issued.credential.end.map(|e| e.timestamp()),
        Some(end.timestamp())
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key_id, issued.credential.key_id);
    assert_eq!(
        listed[0].hint.as_deref(),
        Some(&issued.secret.expose()[..3]),
        "Graph lists a hint, never the secret"
    );
    let lookup = standins
        .requests_to(Service::Graph)
        .into_iter()
        .find(|r| r.path == "/v1.0/applications")
        .expect("looked up by filter");
    assert_eq!(
        lookup.query_param("$filter"),
        Some(format!("appId eq '{}'", app.app_id))
    );
    assert_eq!(
        lookup.query_param("$select").as_deref(),
        Some("id,appId,displayName")
    );

    graph
        .remove_password(&app.object_id, &issued.credential.key_id)
        .await
        .expect("removed");
    let again = graph
        .remove_password(&app.object_id, &issued.credential.key_id)
        .await
        .expect_err("already gone");

    assert!(
        standins
            .graph()
            .passwords(Uuid::parse_str(&app.object_id.to_string()).expect("GUID"))
            .is_empty()
    );
    assert_eq!(again.kind, FailureKind::NotFound);
    assert_eq!(
        graph
            .application(&AppId::new_random())
            .await
            .expect("looked up"),
        None
    );
}

#[tokio::test]
async fn a_new_secret_is_rejected_while_it_propagates_then_proves() {
    let standins = start().await;
    let graph = graph(&standins, standins.credential());
    let prover = prover(&standins);
    let app = seed_application(&standins);
    standins
        .graph()
        .set_propagation_delay(Duration::from_secs(10));
    let issued = graph
        .add_password(
            &app.object_id,
            "keyturn",
            standins.now() + chrono::Duration::days(30),
        )
        .await
        .expect("added");

    let early = prover.prove(&app.app_id, &issued.secret).await;
    standins.advance_clock(Duration::from_secs(11));
    let later = prover.prove(&app.app_id, &issued.secret).await;
    let wrong = prover
        .prove(&app.app_id, &SecretValue::new("not-the-secret"))
        .await;

    assert_eq!(
        early,
        Err(ProofError::Rejected {
            code: "AADSTS7000215".into()
        })
    );
    assert_eq!(later, Ok(()));
    assert_eq!(
        wrong,
        Err(ProofError::Rejected {
            code: "AADSTS7000215".into()
        })
    );
}

#[tokio::test]
async fn expired_secrets_are_rejected_and_throttling_is_transient() {
    let standins = start().await;
    let prover = prover(&standins);
    let app = seed_application(&standins);
    let object = Uuid::parse_str(&app.object_id.to_string()).expect("GUID");
    let password = standins
        .graph()
        .add_password(object, standins.now() + chrono::Duration::hours(1), true)
        .expect("seeded application");
    let secret = SecretValue::new(password.secret_text.clone());

    standins.inject(Service::Entra, Route::any("/"), Fault::throttled(Some(4)));
    let throttled = prover.prove(&app.app_id, &secret).await;
    standins.inject(Service::Entra, Route::any("/"), Fault::internal_error());
    let failed = prover.prove(&app.app_id, &secret).await;
    standins.advance_clock(Duration::from_secs(2 * 3600));
    let expired = prover.prove(&app.app_id, &secret).await;

    assert_eq!(
        throttled,
        Err(ProofError::Port(PortError::new(
            FailureKind::Transient {
                retry_after: Some(Duration::from_secs(4))
            },
            format!(
                "proving a client secret of application {} (AADSTS50196): HTTP 429",
                app.app_id
            )
        )))
    );
    assert!(
        matches!(failed, Err(ProofError::Port(ref e)) if e.is_transient()),
        "{failed:?}"
    );
    assert_eq!(
        expired,
        Err(ProofError::Rejected {
            code: "AADSTS7000222".into()
        })
    );
}

#[tokio::test]
async fn graph_refusals_map_to_permission_policy_and_throttling() {
    let standins = start().await;
    let app = seed_application(&standins);
    let devices_only =
        standins.seed_identity("devices-only", Permissions::only(["Device.Read.All"]));
    let limited = graph(&standins, standins.credential_for(&devices_only));
    let apps_only = standins.seed_identity(
        "apps-only",
        Permissions::only(["Application.ReadWrite.OwnedBy"]),
    );
    let no_devices = graph(&standins, standins.credential_for(&apps_only));
    let graph = graph(&standins, standins.credential());

    let denied = limited.application(&app.app_id).await.expect_err("denied");
    let denied_device = no_devices
        .device(&DeviceId::new_random())
        .await
        .expect_err("denied");
    standins
        .graph()
        .set_max_password_lifetime(Some(Duration::from_secs(30 * 86_400)));
    let policy = graph
        .add_password(
            &app.object_id,
            "keyturn",
            standins.now() + chrono::Duration::days(90),
        )
        .await
        .expect_err("beyond the policy");
    standins.inject(
        Service::Graph,
        Route::any("/v1.0/applications/"),
        Fault::throttled(Some(9)),
    );
    let throttled = graph
        .add_password(
            &app.object_id,
            "keyturn",
            standins.now() + chrono::Duration::days(10),
        )
        .await
        .expect_err("throttled");

    assert_eq!(permission_missing(&denied), APPLICATION_PERMISSION);
    assert_eq!(permission_missing(&denied_device), DEVICE_PERMISSION);
    assert_eq!(
        policy.kind,
        FailureKind::PolicyViolation {
            code: "CredentialInvalidLifetimeAsPerAppPolicy".into()
        }
    );
    assert!(
        !policy.context.contains("max value"),
        "Graph's message stays out: {}",
        policy.context
    );
    assert_eq!(
        throttled.kind,
        FailureKind::Transient {
            retry_after: Some(Duration::from_secs(9))
        }
    );
    assert_eq!(
        standins
            .graph()
            .passwords(Uuid::parse_str(&app.object_id.to_string()).expect("GUID"))
            .len(),
        0,
        "refused additions leave nothing behind"
    );
}

#[tokio::test]
async fn devices_are_found_by_device_id_with_every_security_id_decoded() {
    let standins = start().await;
    let graph = graph(&standins, standins.credential());
    let mut seeded = Device::new("laptop-17");
    seeded.is_compliant = Some(false);
    seeded.alternative_security_ids = vec![
        keyturn_standins::graph::AlternativeSecurityId {
            kind: 2,
            identity_provider: None,
            key: b"first-binding".to_vec(),
        },
        keyturn_standins::graph::AlternativeSecurityId {
            kind: 2,
            identity_provider: None,
            key: b"X509:<SHA1-TP-PUBKEY>thumbprint-and-key-hash".to_vec(),
        },
    ];
    let device_id = DeviceId::parse(&seeded.device_id.to_string()).expect("GUID");
    standins.graph().seed_device(seeded);

    let device = graph
        .device(&device_id)
        .await
        .expect("looked up")
        .expect("found");
    let unknown = graph
        .device(&DeviceId::new_random())
        .await
        .expect("looked up");

    assert_eq!(device.device_id, device_id);
    assert!(device.account_enabled);
    assert_eq!(device.is_compliant, Some(false));
    assert_eq!(device.is_managed, Some(true));
    let keys: Vec<&[u8]> = device
        .alternative_security_ids
        .iter()
        .map(|id| id.key.as_slice())
        .collect();
    assert_eq!(
        keys,
        [
            &b"first-binding"[..],
            &b"X509:<SHA1-TP-PUBKEY>thumbprint-and-key-hash"[..]
        ]
    );
    assert_eq!(unknown, None);
}

// ---------------------------------------------------------------------------------------
// Service Bus
// ---------------------------------------------------------------------------------------

fn sender(standins: &Standins, credential: Arc<dyn TokenCredential>) -> ServiceBusQueue {
    let base = url::Url::parse(standins.servicebus().url().as_str()).expect("valid URL");
    ServiceBusQueue::with_base_url(base, QUEUE, credential, Some(no_retries(standins)))
        .expect("valid sender")
}

fn job(message_id: &str, scheduled: Option<DateTime<Utc>>) -> OutgoingMessage {
    OutgoingMessage {
        message_id: message_id.to_owned(),
        session_id: "kv-prod/secret/billing".to_owned(),
        scheduled_enqueue: scheduled,
        content_type: "application/json",
        body: br#"{"version":1,"kind":"rotate"}"#.to_vec(),
    }
}

#[tokio::test]
async fn jobs_reach_service_bus_with_their_broker_properties() {
    let standins = start().await;
    standins.servicebus().create_queue(
        QUEUE,
        QueueOptions {
            requires_session: true,
            duplicate_detection_window: Some(Duration::from_secs(600)),
        },
    );
    let sender = sender(&standins, standins.credential());
    let at = DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
        .expect("valid")
        .with_timezone(&Utc);

    sender.send(&job("job-1", Some(at))).await.expect("sent");
    sender
        .send(&job("job-1", Some(at)))
        .await
        .expect("a duplicate is accepted");
    sender.send(&job("job-2", None)).await.expect("sent");

    let messages = standins.servicebus().messages(QUEUE);
    assert_eq!(
        messages.len(),
        2,
        "the duplicate MessageId was delivered once"
    );
    assert_eq!(messages[0].message_id.as_deref(), Some("job-1"));
    assert_eq!(
        messages[0].session_id.as_deref(),
        Some("kv-prod/secret/billing")
    );
    assert_eq!(messages[0].scheduled_enqueue_time_utc, Some(at));
    assert_eq!(
        messages[0].content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(messages[0].body, br#"{"version":1,"kind":"rotate"}"#);
    assert_eq!(messages[1].scheduled_enqueue_time_utc, None);
    let sent = standins.requests_to(Service::ServiceBus);
    let properties = sent[0].header("brokerproperties").expect("sent");
    assert!(
        properties.contains(r#""ScheduledEnqueueTimeUtc":"Wed, 02 Jan 2030 03:04:05 GMT""#),
        "{properties}"
    );
    assert_eq!(sent[0].status, 201);
}

#[tokio::test]
async fn service_bus_refusals_map_to_port_failures() {
    let standins = start().await;
    standins
        .servicebus()
        .create_queue(QUEUE, QueueOptions::default());
    let cannot_send = standins.seed_identity("no-send", Permissions::only(["secrets/get"]));

    let denied = sender(&standins, standins.credential_for(&cannot_send))
        .send(&job("job-1", None))
        .await
        .expect_err("no Send claim");
    let sender = sender(&standins, standins.credential());
    standins.inject(
        Service::ServiceBus,
        Route::any("/"),
        Fault::unavailable(Some(3)),
    );
    let busy = sender.send(&job("job-2", None)).await.expect_err("busy");

    assert!(
        permission_missing(&denied).starts_with("Azure Service Bus Data Sender on queue rotations")
    );
    assert_eq!(
        busy.kind,
        FailureKind::Transient {
            retry_after: Some(Duration::from_secs(3))
        }
    );
    assert!(standins.servicebus().messages(QUEUE).is_empty());
}

/// The stand-in models Key Vault on its own, apart from keyturn's code, so that it can
/// catch keyturn being wrong; its limits must still be the ones keyturn defines once in
/// `domain::limits` and `domain::names`.
#[test]
fn the_key_vault_stand_in_enforces_the_limits_keyturn_defines() {
    use keyturn::domain::{limits, names};
    use keyturn_standins::keyvault as standin;

    assert_eq!(standin::MAX_TAGS, limits::MAX_TAGS);
    assert_eq!(standin::MAX_TAG_NAME_LEN, limits::MAX_TAG_NAME_LEN);
    assert_eq!(standin::MAX_TAG_VALUE_LEN, limits::MAX_TAG_VALUE_LEN);
    assert_eq!(
        standin::MAX_SECRET_VALUE_BYTES,
        limits::MAX_SECRET_VALUE_BYTES
    );
    assert_eq!(standin::MAX_NAME_LEN, names::OBJECT_NAME_MAX_LEN);
}
