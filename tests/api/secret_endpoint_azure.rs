//! SecretEndpoint over the forwarded HTTP route with its Azure adapters against the HTTPS
//! stand-ins: the `entra-device` policy asks the Graph stand-in through [`GraphClient`],
//! and the `keyvault` backend reads the Key Vault stand-in through [`KeyVaultSource`]
//! (the official crate, with its 401 challenge). Device certificates are generated here,
//! issued by a test root that plays the tenant's `MS-Organization-Access` CA.

use std::collections::BTreeMap;
use std::sync::Arc;

use azure_core::http::{ClientOptions, RetryOptions};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use keyturn_standins::graph::AlternativeSecurityId as SeededSecurityId;
use keyturn_standins::{
    Device as SeededDevice, Fault, LoggedRequest, Route, SecretSeed, Service, Standins,
};
use keyturn_testkit::pki::{self, TestCa, rcgen};
use rcgen::SerialNumber;
use serde_json::{Value, json};
use tempfile::TempDir;
use uuid::Uuid;

use keyturn::adapters::azure::graph::GraphClient;
use keyturn::adapters::azure::keyvault::KeyVaultSource;
use keyturn::domain::clock::Clock;
use keyturn::domain::names::VaultUrl;
use keyturn::mtls::entra_device::{CERTIFICATE_BINDING_TYPE, DEFAULT_CACHE_TTL, binding_key};
use keyturn::ports::audit::{AuditEntry, AuditStore, Outcome};
use keyturn::ports::directory::DeviceDirectory;
use keyturn::ports::source::SecretSource;

use crate::helpers::{AppOptions, TestApp, read_all, required_front_end, rotation, spawn_app_from};
use keyturn::startup::Overrides;

/// Where App Service puts the client certificate.
const HEADER: &str = "X-ARR-ClientCert";
/// Microsoft Graph's token audience: the stand-ins' token endpoint issues Graph tokens for
/// it, whatever host the Graph stand-in listens on.
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// The secret every device granted it reads, and the names of the Key Vault cases.
const DEVICE_SECRET: &str = "device-secret";
const DEVICE_SECRET_VALUE: &str = "device-secret-value-4e1b";
const CURRENT: &str = "app-token";
const DISABLED: &str = "app-disabled";
const EXPIRED: &str = "app-expired";
const MISSING: &str = "app-missing";
/// In the vault, but granted to nobody.
const PAYROLL: &str = "payroll-key";
/// Neither in the vault nor granted.
const NOWHERE: &str = "no-such-secret";

// ---------------------------------------------------------------------------------------
// Device certificates.

/// The tenant's device-certificate root, written where the endpoint reads it.
struct DeviceCa {
    root: TestCa,
    dir: TempDir,
}

impl DeviceCa {
    fn new() -> Self {
        let mut params = pki::ca_params("MS-Organization-Access (test)");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2060, 1, 1);
        let root = TestCa::from_params(params, None);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("roots.pem"), root.cert_pem()).expect("write");
        Self { root, dir }
    }

    /// A device certificate as Entra issues one: `CN=<deviceId>`, clientAuth, valid
    /// around `now`. Entra issues them directly from its CA, and App Service forwards the
    /// leaf alone.
    fn device_certificate(&self, device_id: Uuid, serial: u64, now: DateTime<Utc>) -> Vec<u8> {
        let mut params = pki::client_params(&device_id.to_string(), &[]);
        params.not_before = offset(now - chrono::Duration::days(30));
        params.not_after = offset(now + chrono::Duration::days(365));
        params.serial_number = Some(SerialNumber::from(serial));
        self.root.issue(&params).cert_der
    }
}

fn offset(at: DateTime<Utc>) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(at.timestamp()).expect("a time in range")
}

/// The `alternativeSecurityIds` entry Entra records for `certificate`.
fn bound(certificate: &[u8]) -> SeededSecurityId {
    SeededSecurityId {
        kind: CERTIFICATE_BINDING_TYPE,
        identity_provider: None,
        key: binding_key(certificate).expect("a generated certificate parses"),
    }
}

// ---------------------------------------------------------------------------------------
// The app, with the real Graph and Key Vault clients pointed at the stand-ins.

/// A device registered in the Graph stand-in (or deliberately not), with its certificate.
struct DeviceLeaf {
    id: Uuid,
    der: Vec<u8>,
}

impl DeviceLeaf {
    fn header(&self) -> String {
        STANDARD.encode(&self.der)
    }
}

/// The devices every test can present.
struct Devices {
    /// Enabled, certificate bound in its only entry; granted the device secret and the
    /// Key Vault cases.
    enabled: DeviceLeaf,
    /// Enabled; the first entry binds a certificate it replaced, the second this one.
    second_entry: DeviceLeaf,
    disabled: DeviceLeaf,
    /// Never registered.
    unknown: DeviceLeaf,
    /// Enabled and bound, granted the device secret only.
    other: DeviceLeaf,
}

struct AzureApp {
    standins: Standins,
    devices: Devices,
    address: String,
    http: reqwest::Client,
    store: Arc<dyn AuditStore>,
    _ca: DeviceCa,
    _app: TestApp,
}

impl AzureApp {
    async fn start() -> Self {
        let standins = Standins::start()
            .await
            .expect("the stand-ins start on loopback");
        // One clock for the stand-ins and the endpoint: the certificates, the secrets'
        // expiry and the device cache are all judged at the stand-ins' time.
        let now = standins.now();
        let ca = DeviceCa::new();
        let leaf = |serial: u64| {
            let id = Uuid::new_v4();
            DeviceLeaf {
                id,
                der: ca.device_certificate(id, serial, now),
            }
        };
        let devices = Devices {
            enabled: leaf(1),
            second_entry: leaf(2),
            disabled: leaf(3),
            unknown: leaf(4),
            other: leaf(5),
        };
        let replaced = ca.device_certificate(devices.second_entry.id, 6, now);
        let graph = standins.graph();
        for (leaf, enabled, security_ids) in [
            (&devices.enabled, true, vec![bound(&devices.enabled.der)]),
            (
                &devices.second_entry,
                true,
                vec![bound(&replaced), bound(&devices.second_entry.der)],
            ),
            (&devices.disabled, false, vec![bound(&devices.disabled.der)]),
            (&devices.other, true, vec![bound(&devices.other.der)]),
        ] {
            let mut device = SeededDevice::new(format!("device-{}", leaf.id));
            device.device_id = leaf.id;
            device.account_enabled = enabled;
            device.alternative_security_ids = security_ids;
            graph.seed_device(device);
        }

        // Without retries, so a throttled answer reaches the endpoint as sent.
        let options = ClientOptions {
            retry: RetryOptions::none(),
            ..standins.client_options()
        };
        let vault = VaultUrl::parse(standins.keyvault().url().as_str())
            .expect("the stand-in's URL is a vault URL");
        let directory: Arc<dyn DeviceDirectory> = Arc::new(
            GraphClient::with_scope(
                standins.graph().url(),
                GRAPH_SCOPE.to_owned(),
                standins.credential(),
                Some(options.clone()),
            )
            .expect("the stand-in's URL is an https endpoint"),
        );
        let mut sources: BTreeMap<String, Arc<dyn SecretSource>> = BTreeMap::new();
        sources.insert(
            "keyvault".into(),
            Arc::new(
                KeyVaultSource::new(vault.clone(), standins.credential(), Some(options))
                    .without_challenge_resource_check(),
            ),
        );
        let device = |leaf: &DeviceLeaf| json!({ "deviceId": leaf.id.to_string() });
        let policy = json!({ "version": 1, "grants": [
            { "name": "devices read their secret",
              "identities": [
                  device(&devices.enabled), device(&devices.second_entry),
                  device(&devices.disabled), device(&devices.unknown), device(&devices.other)
              ],
              "secrets": [ DEVICE_SECRET ],
              "backend": "keyvault" },
            { "name": "the enabled device reads app secrets",
              "identities": [ device(&devices.enabled) ],
              "secrets": [ CURRENT, DISABLED, EXPIRED, MISSING ],
              "backend": "keyvault" }
        ] })
        .to_string();
        let settings = [
            ("KEYTURN_TRUST_ARR_CLIENT_CERT", "true".to_owned()),
            ("KEYTURN_CERT_POLICIES", "entra-device".to_owned()),
            (
                "KEYTURN_ENTRA_DEVICE_ROOTS",
                ca.dir.path().join("roots.pem").display().to_string(),
            ),
            (
                "KEYTURN_DEVICE_CACHE_SECONDS",
                DEFAULT_CACHE_TTL.as_secs().to_string(),
            ),
            ("KEYTURN_ACCESS_POLICY", policy),
            // 0: no rate limit, as documented.
            ("KEYTURN_RATE_LIMIT_PER_IDENTITY", "0".to_owned()),
            ("KEYTURN_RATE_LIMIT_PER_ADDRESS", "0".to_owned()),
        ];
        // Settings parsed as serve parses them; only the clock and the clients, which
        // reach the stand-ins without retries, are put in place.
        let options = AppOptions {
            settings: settings
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            overrides: Overrides {
                clock: Some(Clock::fixed(now)),
                sources,
                directory: Some(directory),
                site: Some(required_front_end()),
                ..Overrides::default()
            },
        };
        let app = spawn_app_from(options, rotation()).await;
        let app = Self {
            standins,
            devices,
            address: app.address.clone(),
            http: app.http.clone(),
            store: app.store.clone(),
            _ca: ca,
            _app: app,
        };
        app.standins
            .keyvault()
            .seed_secret(SecretSeed::new(DEVICE_SECRET, DEVICE_SECRET_VALUE));
        app
    }

    async fn get(&self, name: &str, leaf: &DeviceLeaf) -> reqwest::Response {
        self.http
            .get(format!("{}/api/secrets/{name}", self.address))
            .header(HEADER, leaf.header())
            .send()
            .await
            .expect("the request reaches the app")
    }

    fn graph_calls(&self) -> usize {
        self.standins.requests_to(Service::Graph).len()
    }

    fn key_vault_calls(&self) -> usize {
        self.standins.requests_to(Service::KeyVault).len()
    }

    async fn last_entry(&self) -> AuditEntry {
        read_all(self.store.as_ref())
            .await
            .pop()
            .expect("an audit entry was written")
    }
}

fn assert_error_body(body: &Value, code: &str) {
    let mut keys: Vec<&str> = body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["error", "message", "requestId"], "{body}");
    assert_eq!(body["error"], code, "{body}");
}

/// The audit entry's outcome, and its reason naming the deciding step and code.
fn assert_audited(entry: &AuditEntry, outcome: Outcome, policy: &str, reason: &str) {
    let text = entry
        .record
        .reason
        .as_ref()
        .map(|r| r.as_str().to_owned())
        .unwrap_or_default();
    assert_eq!(entry.record.outcome, outcome, "{text}");
    assert!(
        text.contains(&format!("policy={policy}; reason={reason}")),
        "expected policy={policy}; reason={reason} in {text:?}"
    );
}

// ---------------------------------------------------------------------------------------
// entra-device against the Graph stand-in.

#[tokio::test]
async fn an_enabled_bound_device_reads_its_secret_from_key_vault() {
    let app = AzureApp::start().await;

    let response = app.get(DEVICE_SECRET, &app.devices.enabled).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["name"], DEVICE_SECRET);
    assert_eq!(body["value"], DEVICE_SECRET_VALUE);
    let graph = app.standins.requests_to(Service::Graph);
    assert_eq!(graph.len(), 1);
    assert_eq!(
        graph[0].query_param("$filter"),
        Some(format!("deviceId eq '{}'", app.devices.enabled.id)),
        "the device is looked up by the id in its certificate"
    );
    let entry = app.last_entry().await;
    assert_audited(&entry, Outcome::Succeeded, "access", "granted");
    let reason = entry.record.reason.as_ref().expect("reason").as_str();
    assert!(reason.contains("authenticated-by=entra-device"), "{reason}");
    assert!(
        reason.contains(&format!("device={}", app.devices.enabled.id)),
        "{reason}"
    );
    assert!(reason.contains("backend=keyvault"), "{reason}");
}

#[tokio::test]
async fn a_binding_in_the_second_alternative_security_id_admits_the_device() {
    let app = AzureApp::start().await;

    let response = app.get(DEVICE_SECRET, &app.devices.second_entry).await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["value"], DEVICE_SECRET_VALUE);
}

#[tokio::test]
async fn disabled_and_unknown_devices_are_refused_without_reaching_key_vault() {
    let app = AzureApp::start().await;

    for (leaf, reason) in [
        (&app.devices.disabled, "device_disabled"),
        (&app.devices.unknown, "device_unknown"),
    ] {
        let response = app.get(DEVICE_SECRET, leaf).await;

        assert_eq!(response.status(), 403, "{reason}");
        let body: Value = response.json().await.expect("json");
        assert_error_body(&body, "certificate_rejected");
        assert!(
            !body.to_string().contains(reason),
            "the reason stays in the audit log"
        );
        assert_audited(
            &app.last_entry().await,
            Outcome::Denied,
            "entra-device",
            reason,
        );
    }
    assert_eq!(app.graph_calls(), 2, "one lookup per device");
    assert_eq!(
        app.key_vault_calls(),
        0,
        "a refused device never reaches the backend"
    );
}

#[tokio::test]
async fn a_second_request_from_a_device_is_answered_from_the_cache() {
    let app = AzureApp::start().await;

    assert_eq!(
        app.get(DEVICE_SECRET, &app.devices.enabled).await.status(),
        200
    );
    assert_eq!(app.graph_calls(), 1);
    assert_eq!(
        app.get(DEVICE_SECRET, &app.devices.enabled).await.status(),
        200
    );

    assert_eq!(app.graph_calls(), 1, "no second Graph call for the device");
    assert_eq!(
        app.get(DEVICE_SECRET, &app.devices.other).await.status(),
        200
    );
    assert_eq!(
        app.graph_calls(),
        2,
        "another device is looked up on its own"
    );
}

#[tokio::test]
async fn an_unknown_device_is_remembered_as_unknown() {
    let app = AzureApp::start().await;

    for _ in 0..2 {
        let response = app.get(DEVICE_SECRET, &app.devices.unknown).await;
        assert_eq!(response.status(), 403);
        assert_audited(
            &app.last_entry().await,
            Outcome::Denied,
            "entra-device",
            "device_unknown",
        );
    }

    assert_eq!(app.graph_calls(), 1, "the negative answer is cached too");
}

#[tokio::test]
async fn a_throttled_directory_is_a_retryable_refusal_that_is_not_cached() {
    let app = AzureApp::start().await;
    app.standins.inject(
        Service::Graph,
        Route::any("/v1.0/devices"),
        Fault::throttled(Some(11)),
    );

    let response = app.get(DEVICE_SECRET, &app.devices.enabled).await;

    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.expect("json");
    assert_error_body(&body, "unavailable");
    assert_audited(
        &app.last_entry().await,
        Outcome::Failed,
        "entra-device",
        "directory_unavailable",
    );
    assert_eq!(app.key_vault_calls(), 0);
    assert_eq!(
        app.get(DEVICE_SECRET, &app.devices.enabled).await.status(),
        200,
        "the next request asks the directory again"
    );
    assert_eq!(app.graph_calls(), 2);
}

// ---------------------------------------------------------------------------------------
// The keyvault backend against the Key Vault stand-in.

#[tokio::test]
async fn an_authorized_device_gets_the_current_versions_value_version_type_and_expiry() {
    let app = AzureApp::start().await;
    let kv = app.standins.keyvault();
    let now = app.standins.now();
    kv.seed_secret(SecretSeed::new(CURRENT, "previous-value").content_type("text/plain"));
    let expires = now + chrono::Duration::days(30);
    let current = kv.seed_secret(
        SecretSeed::new(CURRENT, "current-value-93d0")
            .content_type("application/json")
            .expires(expires),
    );

    let response = app.get(CURRENT, &app.devices.enabled).await;

    let status = response.status();
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "name": CURRENT,
            "value": "current-value-93d0",
            "version": current,
            "contentType": "application/json",
            "expiresOn": expires.to_rfc3339_opts(SecondsFormat::Secs, true),
        })
    );
    let entry = app.last_entry().await;
    assert_audited(&entry, Outcome::Succeeded, "access", "granted");
    assert_eq!(
        entry
            .record
            .object
            .secret_version
            .as_ref()
            .map(|v| v.as_str()),
        Some(current.as_str()),
        "the audit log names the version served"
    );
    assert!(
        !serde_json::to_string(&entry)
            .expect("json")
            .contains("current-value-93d0"),
        "the value never reaches the audit log"
    );
}

#[tokio::test]
async fn disabled_expired_and_missing_secrets_are_not_found_for_a_device_that_may_read_them() {
    let app = AzureApp::start().await;
    let kv = app.standins.keyvault();
    let now = app.standins.now();
    // An older live version does not stand in for a current one that is dead.
    kv.seed_secret(SecretSeed::new(DISABLED, "old-live-value"));
    kv.seed_secret(SecretSeed::new(DISABLED, "disabled-value").disabled());
    kv.seed_secret(SecretSeed::new(EXPIRED, "old-live-value"));
    kv.seed_secret(
        SecretSeed::new(EXPIRED, "expired-value").expires(now - chrono::Duration::hours(1)),
    );

    for name in [DISABLED, EXPIRED, MISSING] {
        let response = app.get(name, &app.devices.enabled).await;

        assert_eq!(response.status(), 404, "{name}");
        let body: Value = response.json().await.expect("json");
        assert_error_body(&body, "not_found");
        assert!(!body.to_string().contains("value"), "{name}: {body}");
        assert_audited(
            &app.last_entry().await,
            Outcome::Failed,
            "source",
            "not_found",
        );
    }
    let reads: Vec<String> = app
        .standins
        .requests_to(Service::KeyVault)
        .into_iter()
        .filter(|r| r.status != 401)
        // The official crate asks for the current version as `/secrets/{name}/`.
        .map(|r| format!("{} {} {}", r.method, r.path.trim_end_matches('/'), r.status))
        .collect();
    assert_eq!(
        reads,
        [
            format!("GET /secrets/{DISABLED} 403"),
            format!("GET /secrets/{EXPIRED} 200"),
            format!("GET /secrets/{MISSING} 404"),
        ],
        "each name was asked of Key Vault once, for its current version"
    );
}

/// Status, headers (without the date) and the body with its request id blanked, as bytes.
async fn observable(response: reqwest::Response) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let status = response.status().as_u16();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    headers.sort();
    let bytes = response.bytes().await.expect("a body");
    let body: Value = serde_json::from_slice(&bytes).expect("json");
    let request_id = body["requestId"].as_str().expect("a request id").to_owned();
    assert!(!request_id.is_empty());
    let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
    assert_eq!(
        text.matches(&request_id).count(),
        1,
        "the request id appears once"
    );
    let blanked = text.replace(&request_id, "").into_bytes();
    (status, headers, blanked)
}

#[tokio::test]
async fn a_device_that_may_not_read_a_secret_cannot_tell_whether_it_exists() {
    let app = AzureApp::start().await;
    app.standins
        .keyvault()
        .seed_secret(SecretSeed::new(PAYROLL, "payroll-value-1c7e"));
    // The device authenticates and reads what it is granted, so the cache is warm and the
    // two refusals below differ in nothing but the name.
    assert_eq!(
        app.get(DEVICE_SECRET, &app.devices.other).await.status(),
        200
    );
    let key_vault_before = app.key_vault_calls();

    let denied_existing = observable(app.get(PAYROLL, &app.devices.other).await).await;
    assert_audited(
        &app.last_entry().await,
        Outcome::Denied,
        "access",
        "no_grant",
    );
    let denied_missing = observable(app.get(NOWHERE, &app.devices.other).await).await;
    assert_audited(
        &app.last_entry().await,
        Outcome::Denied,
        "access",
        "no_grant",
    );

    assert_eq!(denied_existing.0, 403);
    let body: Value = serde_json::from_slice(&denied_existing.2).expect("json");
    assert_eq!(body["error"], "forbidden");
    assert_eq!(
        denied_existing, denied_missing,
        "the same status, headers and bytes apart from the request id"
    );
    assert_eq!(
        app.key_vault_calls(),
        key_vault_before,
        "Key Vault is not asked about a name the caller may not read"
    );
}

// ---------------------------------------------------------------------------------------
// The official crate's challenge, as the stand-ins saw it.

/// One logged request as `service status authorization-scheme`.
fn line(request: &LoggedRequest) -> String {
    format!(
        "{:?} {} {} {}",
        request.service,
        request.method,
        request.status,
        request.header("authorization").unwrap_or("-")
    )
}

#[tokio::test]
async fn the_first_key_vault_read_meets_the_challenge_and_later_reads_do_not() {
    let app = AzureApp::start().await;
    app.standins.clear_requests();

    assert_eq!(
        app.get(DEVICE_SECRET, &app.devices.enabled).await.status(),
        200
    );
    let first: Vec<String> = app.standins.requests().iter().map(line).collect();
    app.standins.clear_requests();
    assert_eq!(
        app.get(DEVICE_SECRET, &app.devices.enabled).await.status(),
        200
    );
    let second: Vec<String> = app.standins.requests().iter().map(line).collect();

    assert_eq!(
        first,
        [
            "Entra POST 200 -",
            "Graph GET 200 Bearer",
            "KeyVault GET 401 -",
            "Entra POST 200 -",
            "KeyVault GET 200 Bearer",
        ],
        "a Graph token, the device lookup, then Key Vault's 401 challenge, a Key Vault token and the read with it"
    );
    assert_eq!(
        second,
        ["KeyVault GET 200 Bearer"],
        "the device comes from the cache and the token from the bearer policy"
    );
}
