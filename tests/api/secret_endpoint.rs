//! SecretEndpoint over the forwarded HTTP route and over keyturn's own TLS listener:
//! certificate policies with generated certificates, the access policy's
//! indistinguishable refusals, rate limits, the entra-device path, the Table backend on
//! Azurite, and real `curl` and the Linux client against the running binary.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, TimeZone, Utc};
use keyturn_testkit::pki::{self, Issued, TestCa, rcgen};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, SerialNumber};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;

use keyturn::access::rate_limit::RateLimits;
use keyturn::adapters::appsettings::AppSettingsSource;
use keyturn::adapters::azure::client::table::{EntityKey, TableClient, TableName};
use keyturn::adapters::azure::table_source::{SECRETS_PARTITION, TableSecretSource};
use keyturn::adapters::local::audit::LocalAuditStore;
use keyturn::adapters::local::store::LocalStore;
use keyturn::domain::clock::Clock;
use keyturn::domain::ids::DeviceId;
use keyturn::domain::secret::SecretValue;
use keyturn::functions::secret_endpoint::Endpoint;
use keyturn::mtls::endpoint::{ChainConfig, PolicyConfig};
use keyturn::mtls::entra_device::binding_key;
use keyturn::mtls::policies::Presented;
use keyturn::ports::audit::{AuditEntry, AuditStore, Outcome, StoredEntry};
use keyturn::ports::directory::{AlternativeSecurityId, Device, DeviceDirectory};
use keyturn::ports::source::SecretSource;
use keyturn::ports::{FailureKind, PortError};

use crate::helpers::{
    AppOptions, TestApp, read_all, required_front_end, rotation, spawn_app, spawn_app_from,
    start_up,
};
use keyturn::startup::{self, Overrides};

const HEADER: &str = "X-ARR-ClientCert";
/// The instant every in-process test runs at.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn assert_error_body(body: &Value, code: &str) {
    let object = body.as_object().expect("object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["error", "message", "requestId"],
        "nothing but the three fields"
    );
    assert_eq!(body["error"], code);
}

// ---------------------------------------------------------------------------------------
// A test PKI: root, intermediate, leaves, CRLs.

struct Pki {
    root: TestCa,
    intermediate: TestCa,
    dir: TempDir,
}

#[derive(Clone)]
struct Leaf {
    der: Vec<u8>,
    pem: String,
    key_pem: String,
}

impl From<Issued> for Leaf {
    fn from(issued: Issued) -> Self {
        Self {
            der: issued.cert_der,
            pem: issued.cert_pem,
            key_pem: issued.key_pem,
        }
    }
}

impl Leaf {
    fn header(&self) -> String {
        STANDARD.encode(&self.der)
    }

    fn thumbprint(&self) -> String {
        keyturn::domain::thumbprint::Thumbprint::of_der(&self.der).to_string()
    }
}

/// A CA named `name`, valid 2020 to 2040, signed by `parent` or by itself.
fn ca(name: &str, parent: Option<&TestCa>) -> TestCa {
    TestCa::from_params(ca_params(name), parent)
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = pki::ca_params(name);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2040, 1, 1);
    params
}

/// A TLS server certificate for `names`, from a CA of its own that clients are given.
fn server_cert(names: &[&str]) -> (TestCa, Issued) {
    let server_ca = ca("keyturn test server CA", None);
    let cert = server_ca.issue(&pki::server_params(names));
    (server_ca, cert)
}

/// What kind of leaf to issue.
#[derive(Clone, Copy)]
enum Eku {
    ClientAuth,
    ServerAuthOnly,
    Absent,
}

struct LeafSpec<'a> {
    cn: &'a str,
    san: &'a str,
    eku: Eku,
    not_before: (i32, u8, u8),
    not_after: (i32, u8, u8),
    serial: u64,
}

impl<'a> LeafSpec<'a> {
    fn valid(cn: &'a str, serial: u64) -> Self {
        Self {
            cn,
            san: "device.example.com",
            eku: Eku::ClientAuth,
            not_before: (2025, 1, 1),
            not_after: (2026, 1, 1),
            serial,
        }
    }
}

fn issue(spec: &LeafSpec<'_>, issuer: Option<&TestCa>) -> Leaf {
    let mut params = CertificateParams::new(vec![spec.san.to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, spec.cn);
    params.extended_key_usages = match spec.eku {
        Eku::ClientAuth => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Eku::ServerAuthOnly => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Eku::Absent => Vec::new(),
    };
    let (y, m, d) = spec.not_before;
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = spec.not_after;
    params.not_after = rcgen::date_time_ymd(y, m, d);
    params.serial_number = Some(SerialNumber::from(spec.serial));
    params.use_authority_key_identifier_extension = true;
    match issuer {
        Some(issuer) => issuer.issue(&params),
        None => pki::self_signed(&params),
    }
    .into()
}

const REVOKED_SERIAL: u64 = 666;

impl Pki {
    fn new() -> Self {
        let root = ca("keyturn test root", None);
        let intermediate = ca("keyturn test devices", Some(&root));
        let pki = Self {
            root,
            intermediate,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        std::fs::write(pki.path("roots.pem"), pki.root.cert_pem()).expect("write");
        std::fs::write(pki.path("intermediates.pem"), pki.intermediate.cert_pem()).expect("write");
        std::fs::write(pki.path("root.crl"), crl(&pki.root, &[])).expect("write");
        std::fs::write(
            pki.path("devices.crl"),
            crl(&pki.intermediate, &[REVOKED_SERIAL]),
        )
        .expect("write");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn leaf(&self, spec: &LeafSpec<'_>) -> Leaf {
        issue(spec, Some(&self.intermediate))
    }

    /// The chain policy over this PKI, with CRLs checked.
    fn chain_settings(&self) -> Vec<(String, String)> {
        let path = |name: &str| self.path(name).display().to_string();
        vec![
            ("KEYTURN_CERT_POLICIES".into(), "chain".into()),
            ("KEYTURN_CHAIN_ROOTS".into(), path("roots.pem")),
            (
                "KEYTURN_CHAIN_INTERMEDIATES".into(),
                path("intermediates.pem"),
            ),
            (
                "KEYTURN_CHAIN_CRLS".into(),
                format!("{},{}", path("root.crl"), path("devices.crl")),
            ),
            ("KEYTURN_CHAIN_REVOCATION".into(), "crl".into()),
        ]
    }

    /// The entra-device policy over this PKI's root.
    fn entra_device_settings(&self) -> Vec<(String, String)> {
        vec![
            ("KEYTURN_CERT_POLICIES".into(), "entra-device".into()),
            (
                "KEYTURN_ENTRA_DEVICE_ROOTS".into(),
                self.path("roots.pem").display().to_string(),
            ),
        ]
    }

    fn chain_config(&self) -> ChainConfig {
        ChainConfig {
            roots: self.path("roots.pem"),
            intermediates: vec![self.path("intermediates.pem")],
            crls: vec![self.path("root.crl"), self.path("devices.crl")],
            check_revocation: true,
            clock_skew: Duration::from_secs(300),
        }
    }
}

fn crl(issuer: &TestCa, revoked: &[u64]) -> String {
    crl_until(issuer, revoked, (2030, 1, 1))
}

/// A CRL whose nextUpdate is `next_update`.
fn crl_until(issuer: &TestCa, revoked: &[u64], next_update: (i32, u8, u8)) -> String {
    let (y, m, d) = next_update;
    issuer
        .crl(
            revoked,
            rcgen::date_time_ymd(2025, 5, 1),
            rcgen::date_time_ymd(y, m, d),
        )
        .pem
}

// ---------------------------------------------------------------------------------------
// The app with a configured endpoint.

struct EndpointApp {
    address: String,
    http: reqwest::Client,
    store: Arc<dyn AuditStore>,
    /// The endpoint start-up built, for CRL refreshes.
    endpoint: Arc<Endpoint>,
    _app: TestApp,
}

impl EndpointApp {
    /// The app start-up builds from the endpoint settings `settings` (on top of
    /// [`endpoint_settings`]) at [`now`], with `overrides` in place.
    async fn start(settings: Vec<(String, String)>, mut overrides: Overrides) -> Self {
        let mut all = endpoint_settings();
        all.extend(settings);
        overrides.site.get_or_insert_with(required_front_end);
        let options = AppOptions {
            settings: all,
            overrides: Overrides {
                clock: Some(Clock::fixed(now())),
                ..overrides
            },
        };
        let app = spawn_app_from(options, rotation()).await;
        Self {
            address: app.address.clone(),
            http: app.http.clone(),
            store: app.store.clone(),
            endpoint: app.services.endpoint.clone(),
            _app: app,
        }
    }

    async fn get(&self, name: &str, certificate: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .get(format!("{}/api/secrets/{name}", self.address));
        if let Some(value) = certificate {
            request = request.header(HEADER, value);
        }
        request.send().await.expect("request reaches the app")
    }

    async fn last_entry(&self) -> AuditEntry {
        read_all(self.store.as_ref())
            .await
            .pop()
            .expect("an audit entry was written")
    }
}

fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// What every endpoint test app is configured with: the [`SECRETS`] as app settings, the
/// header trusted, and no rate limits (`0`, as documented) unless a test sets its own.
fn endpoint_settings() -> Vec<(String, String)> {
    let mut settings = pairs(&SECRETS);
    settings.extend(pairs(&[
        ("KEYTURN_TRUST_ARR_CLIENT_CERT", "true"),
        ("KEYTURN_RATE_LIMIT_PER_IDENTITY", "0"),
        ("KEYTURN_RATE_LIMIT_PER_ADDRESS", "0"),
    ]));
    settings
}

/// The thumbprint policy pinning `pinned`, with `policy` as the access policy.
fn thumbprint_settings(pinned: &Leaf, policy: &str) -> Vec<(String, String)> {
    vec![
        ("KEYTURN_CERT_POLICIES".into(), "trusted-thumbprints".into()),
        ("KEYTURN_TRUSTED_THUMBPRINTS".into(), pinned.thumbprint()),
        access_policy(policy),
    ]
}

fn access_policy(policy: &str) -> (String, String) {
    ("KEYTURN_ACCESS_POLICY".to_owned(), policy.to_owned())
}

fn sources(pairs: &[(&str, &str)]) -> BTreeMap<String, Arc<dyn SecretSource>> {
    let mut sources: BTreeMap<String, Arc<dyn SecretSource>> = BTreeMap::new();
    sources.insert(
        "appsettings".into(),
        Arc::new(AppSettingsSource::from_settings(
            "KEYTURN_SECRET_",
            pairs.iter().copied(),
        )),
    );
    sources
}

const SECRETS: [(&str, &str); 2] = [
    ("KEYTURN_SECRET_DB_PASSWORD", "db-value-8c1f"),
    ("KEYTURN_SECRET_PAYROLL_KEY", "payroll-value-77aa"),
];

/// Grants every certificate under the test root `db-password` and `allowed-missing`.
const POLICY: &str = r#"{ "version": 1, "grants": [
    { "name": "test devices",
      "identities": [ { "issuer": "CN=keyturn test devices" } ],
      "secrets": [ "db-password", "allowed-missing" ],
      "backend": "appsettings" } ] }"#;

async fn chain_app(pki: &Pki, limits: RateLimits) -> EndpointApp {
    let mut settings = pki.chain_settings();
    settings.push(access_policy(POLICY));
    for (name, limit) in [
        ("KEYTURN_RATE_LIMIT_PER_IDENTITY", limits.per_identity),
        ("KEYTURN_RATE_LIMIT_PER_ADDRESS", limits.per_address),
    ] {
        if let Some(limit) = limit {
            settings.push((name.to_owned(), limit.to_string()));
        }
    }
    EndpointApp::start(settings, Overrides::default()).await
}

/// The audit entry's reason names the deciding step and code.
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
// Tests.

#[tokio::test]
async fn an_invalid_name_is_refused_before_anything_else_happens() {
    let app = spawn_app().await;
    for name in ["bad_name", "a.b", &"x".repeat(128)] {
        let response = app.get(&format!("/api/secrets/{name}")).await;
        assert_eq!(response.status(), 400, "{name}");
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_error_body(&response.json().await.expect("json"), "invalid_name");
    }
}

#[tokio::test]
async fn an_undecodable_or_empty_name_is_refused_as_invalid_and_audited() {
    let app = spawn_app().await;
    for path in ["/api/secrets/%FF", "/api/secrets/"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
        let body: Value = response.json().await.expect("json");
        assert_error_body(&body, "invalid_name");
        // The second is a repeat of the first refusal's kind: counted, and written once
        // its window closes.
        app.services.audit.flush().await.expect("the window closes");
        let entry = app.audit_entries().await.pop().expect("audited");
        assert_audited(&entry, Outcome::Denied, "name", "invalid_name");
        assert_eq!(
            entry.record.invocation_id.as_ref().map(|i| i.as_str()),
            body["requestId"].as_str(),
            "{path}"
        );
    }
    assert_eq!(app.audit_entries().await.len(), 2);
}

#[tokio::test]
async fn with_no_certificate_policy_configured_every_read_is_refused_and_audited() {
    let app = spawn_app().await;
    let response = app.get("/api/secrets/db-password").await;
    assert_eq!(response.status(), 403);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    assert_error_body(&body, "forbidden");

    let entries = app.audit_entries().await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].record.outcome, Outcome::Denied);
    assert_eq!(
        entries[0]
            .record
            .object
            .secret_name
            .as_ref()
            .map(|n| n.as_str()),
        Some("db-password")
    );
    assert_eq!(
        entries[0].record.invocation_id.as_ref().map(|i| i.as_str()),
        body["requestId"].as_str(),
        "the request id leads to the audit entry"
    );
}

#[tokio::test]
async fn the_hosts_invocation_id_is_taken_not_one_the_client_sent() {
    // A forwarded request carries the client's headers with the host's invocation id added
    // after them: on a line of its own, or joined to the client's value by a comma.
    let client = "11111111-1111-4111-8111-111111111111";
    let host = "22222222-2222-4222-8222-222222222222";
    let app = spawn_app().await;
    let joined = format!("{client}, {host}");
    for values in [vec![client, host], vec![joined.as_str()]] {
        let mut request = app
            .http
            .get(format!("{}/api/secrets/db-password", app.address));
        for value in &values {
            request = request.header("X-Azure-Functions-InvocationId", *value);
        }
        let response = request.send().await.expect("request reaches the app");
        assert_eq!(response.status(), 403, "{values:?}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["requestId"], host, "{values:?}");
        let entry = app.audit_entries().await.pop().expect("audited");
        assert_eq!(
            entry.record.invocation_id.as_ref().map(|i| i.as_str()),
            Some(host),
            "{values:?}"
        );
    }
}

#[tokio::test]
async fn an_unknown_route_answers_a_bare_not_found() {
    let app = spawn_app().await;
    let response = app.get("/admin").await;
    assert_eq!(response.status(), 404);
    assert_error_body(&response.json().await.expect("json"), "not_found");
}

#[tokio::test]
async fn a_valid_leaf_via_the_intermediate_reads_its_secret_and_the_read_is_audited() {
    let pki = Pki::new();
    let app = chain_app(&pki, RateLimits::default()).await;
    let leaf = pki.leaf(&LeafSpec::valid("laptop-1", 10));

    let response = app.get("db-password", Some(&leaf.header())).await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["name"], "db-password");
    assert_eq!(body["value"], "db-value-8c1f");
    let mut keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["contentType", "expiresOn", "name", "value", "version"]
    );

    let entry = app.last_entry().await;
    assert_audited(&entry, Outcome::Succeeded, "access", "granted");
    assert_eq!(entry.record.actor.kind(), "identity");
    assert_eq!(
        entry.record.actor.name().as_str(),
        format!("sha256:{}", leaf.thumbprint())
    );
    let reason = entry.record.reason.as_ref().expect("reason").as_str();
    assert!(reason.contains("authenticated-by=chain"), "{reason}");
    assert!(reason.contains("CN=laptop-1"), "{reason}");
    assert!(reason.contains("backend=appsettings"), "{reason}");
    assert!(
        !serde_json::to_string(&entry)
            .expect("json")
            .contains("db-value-8c1f"),
        "the value never reaches the audit log"
    );
}

#[tokio::test]
async fn every_bad_certificate_is_refused_with_its_own_reason_code() {
    let pki = Pki::new();
    let app = chain_app(&pki, RateLimits::default()).await;
    let other_root = ca("someone else's root", None);
    let impostor = ca("keyturn test devices", None);

    let expired = LeafSpec {
        not_before: (2024, 1, 1),
        not_after: (2025, 1, 1),
        ..LeafSpec::valid("expired", 20)
    };
    let not_yet_valid = LeafSpec {
        not_before: (2025, 7, 1),
        not_after: (2026, 7, 1),
        ..LeafSpec::valid("future", 21)
    };
    let no_eku = LeafSpec {
        eku: Eku::Absent,
        ..LeafSpec::valid("no-eku", 22)
    };
    let server_only = LeafSpec {
        eku: Eku::ServerAuthOnly,
        ..LeafSpec::valid("server-only", 23)
    };
    let cases: Vec<(&str, Leaf, &str)> = vec![
        ("expired", pki.leaf(&expired), "expired"),
        ("not yet valid", pki.leaf(&not_yet_valid), "not_yet_valid"),
        (
            "wrong root",
            issue(&LeafSpec::valid("wrong-root", 24), Some(&other_root)),
            "unknown_issuer",
        ),
        (
            "an impostor CA with the intermediate's name",
            issue(&LeafSpec::valid("impostor", 26), Some(&impostor)),
            "bad_signature",
        ),
        ("no EKU", pki.leaf(&no_eku), "missing_client_auth_eku"),
        (
            "serverAuth only",
            pki.leaf(&server_only),
            "missing_client_auth_eku",
        ),
        (
            "self-signed",
            issue(&LeafSpec::valid("self-signed", 25), None),
            "unknown_issuer",
        ),
        (
            "revoked",
            pki.leaf(&LeafSpec::valid("revoked", REVOKED_SERIAL)),
            "revoked",
        ),
    ];
    for (case, leaf, reason) in cases {
        let response = app.get("db-password", Some(&leaf.header())).await;
        assert_eq!(response.status(), 403, "{case}");
        assert_eq!(response.headers()["cache-control"], "no-store", "{case}");
        let body: Value = response.json().await.expect("json");
        assert_error_body(&body, "certificate_rejected");
        assert!(
            !body.to_string().contains(reason),
            "{case}: the reason stays in the audit log"
        );
        let entry = app.last_entry().await;
        assert_audited(&entry, Outcome::Denied, "chain", reason);
        assert_eq!(
            entry
                .record
                .object
                .thumbprint
                .as_ref()
                .map(|t| t.as_str().to_owned()),
            Some(leaf.thumbprint()),
            "{case}: the presented certificate is named"
        );
    }
}

#[tokio::test]
async fn malformed_headers_are_refused_with_their_reason_codes() {
    let pki = Pki::new();
    let app = chain_app(&pki, RateLimits::default()).await;
    let leaf = pki.leaf(&LeafSpec::valid("laptop-1", 30));
    let garbage: String = (0..100 * 1024)
        .map(|i| (b'A' + (i % 26) as u8) as char)
        .collect();
    let cases = [
        ("not base64", "this is not base64!".to_owned(), "not_base64"),
        (
            "truncated DER",
            STANDARD.encode(&leaf.der[..leaf.der.len() / 2]),
            "malformed_certificate",
        ),
        (
            "PEM armour",
            leaf.pem.replace('\n', " "),
            "pem_armour_not_accepted",
        ),
        ("100 KB of garbage", garbage, "header_too_large"),
    ];
    for (case, value, reason) in cases {
        let response = app.get("db-password", Some(&value)).await;
        assert_eq!(response.status(), 403, "{case}");
        assert_error_body(
            &response.json().await.expect("json"),
            "certificate_rejected",
        );
        assert_audited(&app.last_entry().await, Outcome::Denied, "header", reason);
    }
}

impl EndpointApp {
    /// A request carrying `X-ARR-ClientCert` once per value, in order.
    async fn get_with_headers(&self, name: &str, values: &[&str]) -> reqwest::Response {
        let mut request = self
            .http
            .get(format!("{}/api/secrets/{name}", self.address));
        for value in values {
            // `RequestBuilder::header` appends: each value goes on a line of its own.
            request = request.header(HEADER, *value);
        }
        request.send().await.expect("request reaches the app")
    }
}

#[tokio::test]
async fn a_repeated_client_certificate_header_is_refused_whatever_the_order() {
    let pki = Pki::new();
    let app = chain_app(&pki, RateLimits::default()).await;
    let valid = pki.leaf(&LeafSpec::valid("laptop-1", 32)).header();
    let other_root = ca("someone else's root", None);
    let foreign = issue(&LeafSpec::valid("laptop-1", 33), Some(&other_root)).header();
    // The valid certificate alone is served: what follows is refused for the repetition.
    assert_eq!(app.get("db-password", Some(&valid)).await.status(), 200);

    let cases: [(&str, Vec<&str>); 5] = [
        ("valid, then garbage", vec![&valid, "garbage"]),
        ("garbage, then valid", vec!["garbage", &valid]),
        ("valid, then another CA's", vec![&valid, &foreign]),
        ("another CA's, then valid", vec![&foreign, &valid]),
        ("the same valid one twice", vec![&valid, &valid]),
    ];
    for (case, values) in cases {
        let response = app.get_with_headers("db-password", &values).await;

        assert_eq!(response.status(), 403, "{case}");
        assert_error_body(
            &response.json().await.expect("json"),
            "certificate_rejected",
        );
        assert_audited(
            &app.last_entry().await,
            Outcome::Denied,
            "header",
            "client_cert_header_repeated",
        );
    }
}

#[tokio::test]
async fn two_certificates_folded_into_one_header_line_are_refused_as_repeated() {
    let pki = Pki::new();
    let app = chain_app(&pki, RateLimits::default()).await;
    let valid = pki.leaf(&LeafSpec::valid("laptop-1", 34)).header();

    let response = app
        .get("db-password", Some(&format!("{valid}, {valid}")))
        .await;

    assert_eq!(response.status(), 403);
    assert_audited(
        &app.last_entry().await,
        Outcome::Denied,
        "header",
        "client_cert_header_repeated",
    );
}

#[tokio::test]
async fn a_request_without_a_certificate_is_told_one_is_required() {
    let pki = Pki::new();
    let app = chain_app(&pki, RateLimits::default()).await;
    let response = app.get("db-password", None).await;
    assert_eq!(response.status(), 401);
    assert_error_body(
        &response.json().await.expect("json"),
        "certificate_required",
    );
    assert_audited(
        &app.last_entry().await,
        Outcome::Denied,
        "tls",
        "certificate_required",
    );
}

#[tokio::test]
async fn the_header_is_refused_unless_keyturn_runs_behind_app_service() {
    let pki = Pki::new();
    let mut settings = pki.chain_settings();
    settings.extend([
        access_policy(POLICY),
        ("KEYTURN_TRUST_ARR_CLIENT_CERT".into(), "false".into()),
    ]);
    let app = EndpointApp::start(settings, Overrides::default()).await;
    let leaf = pki.leaf(&LeafSpec::valid("laptop-1", 31));

    let response = app.get("db-password", Some(&leaf.header())).await;

    assert_eq!(response.status(), 403);
    assert_error_body(
        &response.json().await.expect("json"),
        "certificate_rejected",
    );
    assert_audited(
        &app.last_entry().await,
        Outcome::Denied,
        "header",
        "client_cert_header_not_trusted",
    );
}

#[tokio::test]
async fn a_thumbprint_allowlist_admits_a_pinned_certificate_and_no_other() {
    let pinned = issue(&LeafSpec::valid("pinned", 40), None);
    let stranger = issue(&LeafSpec::valid("stranger", 41), None);
    let policy = format!(
        r#"{{ "version": 1, "grants": [ {{ "identities": [ {{ "thumbprint": "{}" }} ], "secrets": [ "db-*" ], "backend": "appsettings" }} ] }}"#,
        pinned.thumbprint()
    );
    let app = EndpointApp::start(thumbprint_settings(&pinned, &policy), Overrides::default()).await;

    let hit = app.get("db-password", Some(&pinned.header())).await;
    assert_eq!(hit.status(), 200);
    assert_audited(
        &app.last_entry().await,
        Outcome::Succeeded,
        "access",
        "granted",
    );

    let miss = app.get("db-password", Some(&stranger.header())).await;
    assert_eq!(miss.status(), 403);
    assert_error_body(&miss.json().await.expect("json"), "certificate_rejected");
    assert_audited(
        &app.last_entry().await,
        Outcome::Denied,
        "trusted-thumbprints",
        "thumbprint_not_trusted",
    );
}

/// Status, headers (without the date) and body (without the request id) of an answer.
async fn observable(response: reqwest::Response) -> (u16, Vec<(String, String)>, Value) {
    let status = response.status().as_u16();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    headers.sort();
    let mut body: Value = response.json().await.expect("json");
    body.as_object_mut().expect("object").remove("requestId");
    (status, headers, body)
}

#[tokio::test]
async fn denied_callers_cannot_tell_existing_secrets_from_missing_ones() {
    let pki = Pki::new();
    let app = chain_app(&pki, RateLimits::default()).await;
    let leaf = pki.leaf(&LeafSpec::valid("laptop-1", 50)).header();

    let allowed_missing = app.get("allowed-missing", Some(&leaf)).await;
    assert_eq!(
        allowed_missing.status(),
        404,
        "a caller who may read a name learns it is missing"
    );
    assert_error_body(&allowed_missing.json().await.expect("json"), "not_found");
    assert_audited(
        &app.last_entry().await,
        Outcome::Failed,
        "source",
        "not_found",
    );

    let denied_existing = observable(app.get("payroll-key", Some(&leaf)).await).await;
    assert_audited(
        &app.last_entry().await,
        Outcome::Denied,
        "access",
        "no_grant",
    );
    let denied_missing = observable(app.get("no-such-secret", Some(&leaf)).await).await;
    assert_audited(
        &app.last_entry().await,
        Outcome::Denied,
        "access",
        "no_grant",
    );

    assert_eq!(denied_existing.0, 403);
    assert_eq!(denied_existing.2["error"], "forbidden");
    assert_eq!(
        denied_existing, denied_missing,
        "denied-existing and denied-missing answer the same bytes apart from the request id"
    );
}

#[tokio::test]
async fn an_identity_over_its_rate_limit_is_told_when_to_retry() {
    let pki = Pki::new();
    let limits = RateLimits {
        per_identity: Some(2),
        per_address: None,
    };
    let app = chain_app(&pki, limits).await;
    let leaf = pki.leaf(&LeafSpec::valid("laptop-1", 60)).header();
    let other = pki.leaf(&LeafSpec::valid("laptop-2", 61)).header();

    for _ in 0..2 {
        assert_eq!(app.get("db-password", Some(&leaf)).await.status(), 200);
    }
    let limited = app.get("db-password", Some(&leaf)).await;

    assert_eq!(limited.status(), 429);
    assert_eq!(
        limited.headers()["retry-after"],
        "30",
        "two a minute: one every 30 s"
    );
    assert_error_body(&limited.json().await.expect("json"), "rate_limited");
    assert_audited(
        &app.last_entry().await,
        Outcome::Denied,
        "rate-limit",
        "identity_rate_limited",
    );
    assert_eq!(
        app.get("db-password", Some(&other)).await.status(),
        200,
        "another identity has its own quota"
    );
}

#[tokio::test]
async fn a_source_address_over_its_rate_limit_is_refused_before_certificate_checks() {
    let pki = Pki::new();
    let limits = RateLimits {
        per_identity: None,
        per_address: Some(1),
    };
    let app = chain_app(&pki, limits).await;
    let leaf = pki.leaf(&LeafSpec::valid("laptop-1", 62)).header();
    let from = |address: &'static str| {
        let leaf = leaf.clone();
        let app = &app;
        async move {
            app.http
                .get(format!("{}/api/secrets/db-password", app.address))
                .header(HEADER, leaf)
                .header("X-Forwarded-For", format!("203.0.113.9, {address}"))
                .send()
                .await
                .expect("request")
        }
    };

    assert_eq!(from("198.51.100.7:50123").await.status(), 200);
    let limited = from("198.51.100.7:50124").await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "60");
    assert_audited(
        &app.last_entry().await,
        Outcome::Denied,
        "rate-limit",
        "address_rate_limited",
    );
    assert_eq!(
        from("198.51.100.8:50125").await.status(),
        200,
        "the address App Service appended counts, not the client's own entries"
    );
}

/// The refused requests of the flood test: what an attacker without a certificate sent
/// in 10 s in the issue that asked for folding, rounded.
const FLOOD: usize = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_refusals_folds_into_few_entries_whose_counts_add_up_while_reads_are_served() {
    use tower::ServiceExt;

    let pki = Pki::new();
    let mut settings = endpoint_settings();
    settings.extend(pki.chain_settings());
    settings.push(access_policy(POLICY));
    settings.push(("KEYTURN_RATE_LIMIT_PER_ADDRESS".into(), "1".into()));
    let options = AppOptions {
        settings,
        overrides: Overrides {
            clock: Some(Clock::fixed(now())),
            site: Some(required_front_end()),
            ..Overrides::default()
        },
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (settings, state, store) = start_up(options, &rotation(), dir.path()).await;
    let audit = state.services.audit.clone();
    let app = keyturn::host::router::router(state, &settings.host.enabled_functions);
    let device = pki.leaf(&LeafSpec::valid("laptop-1", 63)).header();
    let request = |forwarded: Option<String>, certificate: Option<&str>| {
        let mut request = axum::http::Request::get("/api/secrets/db-password");
        if let Some(address) = forwarded {
            request = request.header("X-Forwarded-For", address);
        }
        if let Some(certificate) = certificate {
            request = request.header(HEADER, certificate);
        }
        request.body(axum::body::Body::empty()).expect("a request")
    };
    // The flood: one IPv4 address, many addresses of one IPv6 /64, and a thousand /64s
    // (more sources than a window tracks); no certificate, so every request is refused,
    // by the address's rate limit or, for its first, for want of a certificate.
    let source = |index: usize| match index % 10 {
        0..=5 => "203.0.113.9:443".to_owned(),
        6..=8 => format!("[2001:db8:1:2::{:x}]:443", index % 65_000),
        _ => format!("[2001:db8:{:x}::1]:443", index % 1000),
    };

    let started = std::time::Instant::now();
    let reads = {
        let app = app.clone();

        let device = device.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..200 {
                let answer = app
                    .clone()
                    .oneshot(request(None, Some(&device)))
                    .await
                    .expect("answered");
                statuses.push(answer.status().as_u16());
            }
            statuses
        })
    };
    let floods: Vec<_> = (0..4)
        .map(|lane| {
            let app = app.clone();

            tokio::spawn(async move {
                let mut refused = 0;
                for index in (lane..FLOOD).step_by(4) {
                    let answer = app
                        .clone()
                        .oneshot(request(Some(source(index)), None))
                        .await
                        .expect("answered");
                    if answer.status().is_client_error() {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    for flood in floods {
        refused += flood.await.expect("flood task");
    }
    let statuses = reads.await.expect("reads task");
    audit.flush().await.expect("the window closes");

    assert_eq!(refused, FLOOD);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let entries = read_all(store.as_ref()).await;
    let denied: Vec<&AuditEntry> = entries
        .iter()
        .filter(|e| e.record.outcome == Outcome::Denied)
        .collect();
    let counted: u64 = denied.iter().map(|e| e.record.occurrences()).sum();
    assert_eq!(counted, FLOOD as u64, "the counts add up to every refusal");
    // Each window writes at most two entries per tracked kind plus two per reason code
    // (the flood has two codes); a slow run spans more windows, each bounded alike.
    let per_window = 2 * (keyturn::audit::MAX_FOLDED_KINDS + 2);
    let windows = 2 + started.elapsed().as_secs() / keyturn::audit::FOLD_WINDOW.as_secs();
    assert!(
        denied.len() <= windows as usize * per_window,
        "{} refusal entries for {FLOOD} refusals",
        denied.len()
    );
    let granted = entries
        .iter()
        .filter(|e| e.record.outcome == Outcome::Succeeded)
        .count();
    assert_eq!(granted, 200, "every read is audited on its own");
    let report = audit.verify().await.expect("verify");
    assert!(report.is_intact(), "{report}");
}

// ---------------------------------------------------------------------------------------
// entra-device, with a strict in-test directory.

/// A directory that knows a fixed set of devices, counts every lookup, and refuses
/// lookups of the nil GUID as Graph would refuse a malformed filter.
#[derive(Debug, Default)]
struct StrictDirectory {
    devices: HashMap<DeviceId, Device>,
    lookups: Mutex<Vec<DeviceId>>,
}

#[async_trait]
impl DeviceDirectory for StrictDirectory {
    async fn device(&self, device_id: &DeviceId) -> Result<Option<Device>, PortError> {
        self.lookups.lock().expect("test lock").push(*device_id);
        if device_id.as_uuid().is_nil() {
            return Err(PortError::invalid("a nil device id is not a device"));
        }
        Ok(self.devices.get(device_id).cloned())
    }
}

struct EntraFixture {
    _pki: Pki,
    directory: Arc<StrictDirectory>,
    app: EndpointApp,
    enabled: Leaf,
    second_entry: Leaf,
    disabled: Leaf,
    unknown: Leaf,
    unbound: Leaf,
}

fn device(id: DeviceId, enabled: bool, keys: Vec<(i32, Vec<u8>)>) -> Device {
    Device {
        device_id: id,
        account_enabled: enabled,
        alternative_security_ids: keys
            .into_iter()
            .map(|(kind, key)| AlternativeSecurityId {
                kind,
                identity_provider: None,
                key,
            })
            .collect(),
        is_compliant: Some(true),
        is_managed: Some(true),
    }
}

async fn entra_fixture() -> EntraFixture {
    let pki = Pki::new();
    let ids: Vec<DeviceId> = (0..5).map(|_| DeviceId::new_random()).collect();
    // Entra's device CA issues device certificates directly, and App Service forwards the
    // leaf alone: the test root plays the tenant's MS-Organization-Access root.
    let leaf = |i: usize, serial| {
        issue(
            &LeafSpec::valid(&ids[i].to_string(), serial),
            Some(&pki.root),
        )
    };
    let (enabled, second_entry, disabled, unknown, unbound) = (
        leaf(0, 70),
        leaf(1, 71),
        leaf(2, 72),
        leaf(3, 73),
        leaf(4, 74),
    );
    let bind = |l: &Leaf| binding_key(&l.der).expect("binding");
    let replaced = bind(&leaf(1, 75));
    let mut directory = StrictDirectory::default();
    for d in [
        device(ids[0], true, vec![(2, bind(&enabled))]),
        device(ids[1], true, vec![(2, replaced), (2, bind(&second_entry))]),
        device(ids[2], false, vec![(2, bind(&disabled))]),
        device(ids[4], true, vec![(1, bind(&unbound))]),
    ] {
        directory.devices.insert(d.device_id, d);
    }
    let directory = Arc::new(directory);
    let policy = r#"{ "version": 1, "grants": [ { "identities": [ { "subject": "CN=*" } ], "secrets": [ "db-password" ], "backend": "appsettings" } ] }"#;
    let mut settings = pki.entra_device_settings();
    settings.push(access_policy(policy));
    let overrides = Overrides {
        directory: Some(directory.clone()),
        ..Overrides::default()
    };
    let app = EndpointApp::start(settings, overrides).await;
    EntraFixture {
        _pki: pki,
        directory,
        app,
        enabled,
        second_entry,
        disabled,
        unknown,
        unbound,
    }
}

impl EntraFixture {
    async fn read(&self, leaf: &Leaf) -> reqwest::Response {
        self.app.get("db-password", Some(&leaf.header())).await
    }

    fn lookups(&self) -> usize {
        self.directory.lookups.lock().expect("test lock").len()
    }
}

/// A directory that is throttled, as Graph answers 429 with `Retry-After`.
#[derive(Debug)]
struct ThrottledDirectory;

#[async_trait]
impl DeviceDirectory for ThrottledDirectory {
    async fn device(&self, _: &DeviceId) -> Result<Option<Device>, PortError> {
        Err(PortError::new(
            FailureKind::Transient {
                retry_after: Some(Duration::from_secs(42)),
            },
            "looking up a device",
        ))
    }
}

#[tokio::test]
async fn a_throttled_directory_answers_503_with_its_retry_after() {
    let pki = Pki::new();
    let leaf = issue(
        &LeafSpec::valid(&DeviceId::new_random().to_string(), 80),
        Some(&pki.root),
    );
    let mut settings = pki.entra_device_settings();
    settings.push(access_policy(POLICY));
    let overrides = Overrides {
        directory: Some(Arc::new(ThrottledDirectory)),
        ..Overrides::default()
    };
    let app = EndpointApp::start(settings, overrides).await;

    let response = app.get("db-password", Some(&leaf.header())).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "42");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_error_body(&response.json().await.expect("json"), "unavailable");
    assert_audited(
        &app.last_entry().await,
        Outcome::Failed,
        "entra-device",
        "directory_unavailable",
    );
}

/// A secret source that is throttled, as Key Vault answers 429 with `Retry-After`.
#[derive(Debug)]
struct ThrottledSource;

#[async_trait]
impl SecretSource for ThrottledSource {
    async fn fetch(
        &self,
        _: &keyturn::domain::names::ObjectName,
        _: DateTime<Utc>,
    ) -> Result<Option<keyturn::ports::source::SourcedSecret>, PortError> {
        Err(PortError::new(
            FailureKind::Transient {
                retry_after: Some(Duration::from_millis(7_500)),
            },
            "reading a secret",
        ))
    }
}

#[tokio::test]
async fn a_throttled_secret_source_answers_503_with_its_retry_after() {
    let pki = Pki::new();
    let mut settings = pki.chain_settings();
    settings.push(access_policy(POLICY));
    let mut throttled: BTreeMap<String, Arc<dyn SecretSource>> = BTreeMap::new();
    throttled.insert("appsettings".into(), Arc::new(ThrottledSource));
    let overrides = Overrides {
        sources: throttled,
        ..Overrides::default()
    };
    let app = EndpointApp::start(settings, overrides).await;
    let leaf = pki.leaf(&LeafSpec::valid("device-9", 90));

    let response = app.get("db-password", Some(&leaf.header())).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "8");
    assert_error_body(&response.json().await.expect("json"), "unavailable");
}

#[tokio::test]
async fn an_enabled_device_with_its_certificate_bound_reads_its_secret() {
    let f = entra_fixture().await;
    let response = f.read(&f.enabled).await;
    assert_eq!(response.status(), 200);
    let entry = f.app.last_entry().await;
    assert_audited(&entry, Outcome::Succeeded, "access", "granted");
    let reason = entry.record.reason.expect("reason");
    assert!(
        reason.as_str().contains("authenticated-by=entra-device"),
        "{reason:?}"
    );
    assert!(reason.as_str().contains("device="), "{reason:?}");
}

#[tokio::test]
async fn a_binding_in_a_later_alternative_security_id_counts() {
    let f = entra_fixture().await;
    assert_eq!(f.read(&f.second_entry).await.status(), 200);
}

#[tokio::test]
async fn disabled_unknown_and_unbound_devices_are_refused_with_their_reasons() {
    let f = entra_fixture().await;
    for (leaf, reason) in [
        (&f.disabled, "device_disabled"),
        (&f.unknown, "device_unknown"),
        (&f.unbound, "device_certificate_not_bound"),
    ] {
        let response = f.read(leaf).await;
        assert_eq!(response.status(), 403, "{reason}");
        assert_error_body(
            &response.json().await.expect("json"),
            "certificate_rejected",
        );
        assert_audited(
            &f.app.last_entry().await,
            Outcome::Denied,
            "entra-device",
            reason,
        );
    }
}

#[tokio::test]
async fn device_lookups_are_cached_including_negative_answers() {
    let f = entra_fixture().await;
    assert_eq!(f.read(&f.enabled).await.status(), 200);
    assert_eq!(f.read(&f.enabled).await.status(), 200);
    assert_eq!(f.lookups(), 1, "the second read is answered from the cache");
    assert_eq!(f.read(&f.unknown).await.status(), 403);
    assert_eq!(f.read(&f.unknown).await.status(), 403);
    assert_eq!(f.lookups(), 2, "an unknown device is remembered too");
}

#[tokio::test]
async fn a_certificate_whose_subject_is_not_a_device_id_never_reaches_the_directory() {
    let f = entra_fixture().await;
    let laptop = issue(&LeafSpec::valid("laptop-1", 76), Some(&f._pki.root));
    let response = f.read(&laptop).await;
    assert_eq!(response.status(), 403);
    assert_audited(
        &f.app.last_entry().await,
        Outcome::Denied,
        "entra-device",
        "subject_not_device_id",
    );
    assert_eq!(f.lookups(), 0);
}

// ---------------------------------------------------------------------------------------
// The Table backend against Azurite.

/// Where the test command starts Azurite's table service.
const TABLE_ENDPOINT_VARIABLE: &str = "KEYTURN_TEST_TABLE_ENDPOINT";
/// Azurite's published development account key; it opens nothing but a local emulator.
const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[tokio::test]
async fn the_table_backend_serves_live_rows_and_hides_disabled_and_expired_ones() {
    let endpoint = std::env::var(TABLE_ENDPOINT_VARIABLE).unwrap_or_else(|_| {
        panic!("{TABLE_ENDPOINT_VARIABLE} is not set: start Azurite via the project's test command (.ci/test)")
    });
    let connection = SecretValue::new(format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_ACCOUNT_KEY};TableEndpoint={endpoint}"
    ));
    let client = TableClient::from_connection_string(&connection, None).expect("client");
    let table =
        TableName::parse(&format!("secrets{}", uuid::Uuid::new_v4().simple())).expect("table name");
    client
        .create_table_if_not_exists(&table)
        .await
        .expect("the table is created (is Azurite running?)");
    let partition = EntityKey::parse(SECRETS_PARTITION).expect("key");
    let rows = [
        (
            "wifi-psk",
            serde_json::json!({ "Value": "psk-value-31", "Version": "v7", "ContentType": "text/plain", "ExpiresOn": "2025-12-31T00:00:00Z" }),
        ),
        (
            "old-token",
            serde_json::json!({ "Value": "old", "ExpiresOn": "2025-01-01T00:00:00Z" }),
        ),
        (
            "off-token",
            serde_json::json!({ "Value": "off", "Enabled": false }),
        ),
    ];
    for (name, row) in rows {
        client
            .insert(
                &table,
                &partition,
                &EntityKey::parse(name).expect("key"),
                &row,
            )
            .await
            .expect("row inserted");
    }
    let mut backends: BTreeMap<String, Arc<dyn SecretSource>> = BTreeMap::new();
    backends.insert(
        "table".into(),
        Arc::new(TableSecretSource::new(client.clone(), table.clone())),
    );
    let pinned = issue(&LeafSpec::valid("kiosk-1", 90), None);
    let policy = r#"{ "version": 1, "grants": [ { "identities": [ { "subject": "CN=kiosk-*" } ], "secrets": [ "*-psk", "*-token" ], "backend": "table" } ] }"#;
    let overrides = Overrides {
        sources: backends,
        ..Overrides::default()
    };
    let app = EndpointApp::start(thumbprint_settings(&pinned, policy), overrides).await;

    let response = app.get("WIFI-PSK", Some(&pinned.header())).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["value"], "psk-value-31");
    assert_eq!(body["version"], "v7");
    assert_eq!(body["contentType"], "text/plain");
    assert_eq!(body["expiresOn"], "2025-12-31T00:00:00Z");
    assert_eq!(body["name"], "WIFI-PSK", "the name as asked");
    for dead in ["old-token", "off-token", "new-token"] {
        assert_eq!(
            app.get(dead, Some(&pinned.header())).await.status(),
            404,
            "{dead}"
        );
    }
    client.delete_table(&table).await.expect("cleanup");
}

// ---------------------------------------------------------------------------------------
// keyturn's own TLS listener, with real clients.

/// A running `keyturn serve` with its TLS listener, and the files its clients need.
struct TlsServed {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Drop for TlsServed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TLS_SECRET: &str = "psk-over-tls-5d2e";

fn serve_tls() -> TlsServed {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    // The server's own certificate, for 127.0.0.1, from a CA the clients are given.
    let (server_ca, server_cert) = server_cert(&["localhost", "127.0.0.1"]);
    let server_cert_path = write("server.pem", &server_cert.cert_pem);
    let server_key_path = write("server.key", &server_cert.key_pem);
    write("server-ca.pem", server_ca.cert_pem());

    let long_lived = |cn, serial| LeafSpec {
        not_before: (2024, 1, 1),
        not_after: (2040, 1, 1),
        ..LeafSpec::valid(cn, serial)
    };
    let device = pki.leaf(&long_lived("linux-device-1", 100));
    write("device.pem", &device.pem);
    write("device.key", &device.key_pem);
    let stranger = issue(&long_lived("linux-device-2", 101), None);
    write("stranger.pem", &stranger.pem);
    write("stranger.key", &stranger.key_pem);

    let roots = pki.path("roots.pem").display().to_string();
    let intermediates = pki.path("intermediates.pem").display().to_string();
    let data_dir = dir.path().join("data").display().to_string();
    let policy = r#"{"version":1,"grants":[{"identities":[{"subject":"CN=linux-device-*"}],"secrets":["wifi-psk","missing-one"],"backend":"appsettings"}]}"#;
    let thumbprint = device.thumbprint();
    let env: Vec<(&str, &str)> = vec![
        ("KEYTURN_AUDIT_STORE", "sqlite"),
        ("KEYTURN_DATA_DIR", &data_dir),
        ("AzureWebJobs.KeyVaultEvents.Disabled", "true"),
        ("AzureWebJobs.ExpirySweep.Disabled", "true"),
        ("AzureWebJobs.RotationWorker.Disabled", "true"),
        ("AzureWebJobs.DiscoverySweep.Disabled", "true"),
        ("AzureWebJobs.DiscoveryWorker.Disabled", "true"),
        ("AzureWebJobs.AlertSweep.Disabled", "true"),
        ("AzureWebJobs.EvidenceExport.Disabled", "true"),
        ("KEYTURN_CERT_POLICIES", "chain,trusted-thumbprints"),
        ("KEYTURN_CHAIN_ROOTS", &roots),
        ("KEYTURN_CHAIN_INTERMEDIATES", &intermediates),
        ("KEYTURN_CHAIN_REVOCATION", "off"),
        ("KEYTURN_TRUSTED_THUMBPRINTS", &thumbprint),
        ("KEYTURN_ACCESS_POLICY", policy),
        ("KEYTURN_SECRET_WIFI_PSK", TLS_SECRET),
        ("KEYTURN_TLS_ADDRESS", "127.0.0.1:0"),
        ("KEYTURN_TLS_CERT", &server_cert_path),
        ("KEYTURN_TLS_KEY", &server_key_path),
    ];
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyturn"));
    command.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    let mut child = command
        .envs(env)
        .args(["serve", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("keyturn starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("keyturn logs its TLS listener before exiting")
            .expect("a log line");
        let parsed: Value = serde_json::from_str(&line).expect("log lines are JSON");
        if parsed["fields"]["message"] == "terminating TLS for the SecretEndpoint" {
            let address = parsed["fields"]["address"].as_str().expect("address");
            break address
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port");
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    TlsServed { child, port, dir }
}

impl TlsServed {
    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// `curl` as a device would run it; returns the status and the body.
    fn curl(&self, identity: Option<&str>, name: &str, extra: &[&str]) -> (u16, Value) {
        let mut command = Command::new("curl");
        command.args([
            "--silent",
            "--show-error",
            "--cacert",
            &self.file("server-ca.pem"),
        ]);
        if let Some(identity) = identity {
            command.args([
                "--cert",
                &self.file(&format!("{identity}.pem")),
                "--key",
                &self.file(&format!("{identity}.key")),
            ]);
        }
        let output = command
            .args(extra)
            .args(["--write-out", "\n%{http_code}"])
            .arg(format!("{}/api/secrets/{name}", self.url()))
            .output()
            .expect("curl runs");
        assert!(
            output.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).expect("utf-8");
        let (body, status) = text.rsplit_once('\n').expect("status line");
        (
            status.parse().expect("status"),
            serde_json::from_str(body).expect("JSON body"),
        )
    }
}

#[test]
fn curl_with_a_client_certificate_reads_a_secret_over_keyturns_own_tls() {
    let served = serve_tls();

    for version in [
        ["--tlsv1.3", "--tls-max", "1.3"],
        ["--tlsv1.2", "--tls-max", "1.2"],
    ] {
        let (status, body) = served.curl(Some("device"), "wifi-psk", &version);
        assert_eq!(status, 200, "{version:?}: {body}");
        assert_eq!(body["value"], TLS_SECRET);
    }

    let (status, body) = served.curl(None, "wifi-psk", &[]);
    assert_eq!(status, 401);
    assert_eq!(body["error"], "certificate_required");

    let (status, body) = served.curl(Some("stranger"), "wifi-psk", &[]);
    assert_eq!(status, 403);
    assert_eq!(body["error"], "certificate_rejected");

    let (status, body) = served.curl(Some("device"), "missing-one", &[]);
    assert_eq!(status, 404, "{body}");

    let (status, _) = served.curl(
        Some("device"),
        "wifi-psk",
        &["--header", "X-ARR-ClientCert: AAAA"],
    );
    assert_eq!(
        status, 403,
        "a header cannot stand in for the TLS certificate"
    );
}

#[test]
fn tls_older_than_1_2_is_refused_in_the_handshake() {
    let served = serve_tls();
    let output = Command::new("curl")
        .args([
            "--silent",
            "--tlsv1.0",
            "--tls-max",
            "1.1",
            "--cacert",
            &served.file("server-ca.pem"),
        ])
        .arg(format!("{}/api/secrets/wifi-psk", served.url()))
        .output()
        .expect("curl runs");
    assert!(!output.status.success(), "a TLS 1.1 handshake must fail");
}

#[test]
fn the_linux_client_script_prints_the_secret_and_reports_refusals() {
    let served = serve_tls();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/keyturn-secret.sh");
    let run = |identity: &str, name: &str| {
        Command::new("bash")
            .arg(&script)
            .args(["--url", &served.url()])
            .args(["--cert", &served.file(&format!("{identity}.pem"))])
            .args(["--key", &served.file(&format!("{identity}.key"))])
            .args(["--cacert", &served.file("server-ca.pem")])
            .arg(name)
            .output()
            .expect("the script runs")
    };

    let read = run("device", "wifi-psk");
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&read.stdout),
        TLS_SECRET,
        "the value and nothing else"
    );

    let refused = run("stranger", "wifi-psk");
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("certificate_rejected") && stderr.contains("request id"),
        "{stderr}"
    );

    let bad_name = run("device", "not_a_name");
    assert_eq!(bad_name.status.code(), Some(2));
}

// ---------------------------------------------------------------------------------------
// Scheduled CRL refresh.

/// How many times a test asks again while waiting for a background task's effect, and
/// how long it waits between asks: together a generous bound, never a measured time.
const POLL_ATTEMPTS: usize = 500;
const POLL_PAUSE: Duration = Duration::from_millis(10);

/// The chain endpoint, shared so that the refresh task and the app see the same CRLs.
fn shared_chain_endpoint(pki: &Pki) -> Arc<Endpoint> {
    let config = PolicyConfig {
        trust_arr_header: true,
        chain: Some(pki.chain_config()),
        ..PolicyConfig::default()
    };
    Arc::new(
        Endpoint::from_config(
            &config,
            Some(POLICY),
            sources(&SECRETS),
            None,
            RateLimits::default(),
        )
        .expect("valid endpoint"),
    )
}

#[tokio::test]
async fn a_certificate_revoked_after_start_up_is_refused_once_the_crls_are_refreshed() {
    let pki = Pki::new();
    let app = chain_app(&pki, RateLimits::default()).await;
    let endpoint = app.endpoint.clone();
    let device = pki.leaf(&LeafSpec::valid("laptop-revoked-later", 4242));
    assert_eq!(
        app.get("db-password", Some(&device.header()))
            .await
            .status(),
        200
    );

    std::fs::write(
        pki.path("devices.crl"),
        crl(&pki.intermediate, &[REVOKED_SERIAL, 4242]),
    )
    .expect("write");
    assert_eq!(
        app.get("db-password", Some(&device.header()))
            .await
            .status(),
        200,
        "CRLs are cached: a new file takes effect at the next refresh, not before"
    );

    let (stop, stopped) = oneshot::channel::<()>();
    let refresher = tokio::spawn(keyturn::mtls::endpoint::refresh_crls_every(
        endpoint.policies(),
        POLL_PAUSE,
        async move {
            let _ = stopped.await;
        },
    ));
    let mut status = 200;
    for _ in 0..POLL_ATTEMPTS {
        status = app
            .get("db-password", Some(&device.header()))
            .await
            .status()
            .as_u16();
        if status != 200 {
            break;
        }
        tokio::time::sleep(POLL_PAUSE).await;
    }
    assert_eq!(status, 403, "the refreshed CRL revokes the certificate");
    assert_audited(&app.last_entry().await, Outcome::Denied, "chain", "revoked");

    let _ = stop.send(());
    refresher
        .await
        .expect("the refresh task ends when told to stop");
}

#[tokio::test]
async fn a_crl_refresh_that_fails_keeps_the_revocations_already_in_force() {
    let pki = Pki::new();
    let app = chain_app(&pki, RateLimits::default()).await;
    let endpoint = app.endpoint.clone();
    let revoked = pki.leaf(&LeafSpec::valid("laptop-revoked", REVOKED_SERIAL));
    let valid = pki.leaf(&LeafSpec::valid("laptop-valid", 4243));

    // A CA midway through publishing: a truncated file.
    let published = crl(&pki.intermediate, &[REVOKED_SERIAL]);
    std::fs::write(pki.path("devices.crl"), &published[..published.len() / 2]).expect("write");
    let refreshed = keyturn::mtls::endpoint::refresh_crls(endpoint.policies())
        .expect("a chain policy is configured");
    assert!(refreshed.is_err(), "a truncated CRL does not load");

    assert_eq!(
        app.get("db-password", Some(&revoked.header()))
            .await
            .status(),
        403
    );
    assert_audited(&app.last_entry().await, Outcome::Denied, "chain", "revoked");
    assert_eq!(
        app.get("db-password", Some(&valid.header())).await.status(),
        200
    );
}

#[tokio::test]
async fn the_refresh_task_ends_at_once_when_no_crl_files_are_configured() {
    let pki = Pki::new();
    let config = PolicyConfig {
        trust_arr_header: true,
        chain: Some(ChainConfig {
            crls: Vec::new(),
            check_revocation: false,
            ..pki.chain_config()
        }),
        ..PolicyConfig::default()
    };
    let endpoint = Arc::new(
        Endpoint::from_config(
            &config,
            Some(POLICY),
            sources(&SECRETS),
            None,
            RateLimits::default(),
        )
        .expect("valid endpoint"),
    );
    assert!(!keyturn::mtls::endpoint::has_crls_to_refresh(
        endpoint.policies()
    ));
    let never = std::future::pending::<()>();
    // The bound only keeps a regression from hanging the suite.
    let ended = tokio::time::timeout(
        Duration::from_secs(30),
        keyturn::mtls::endpoint::refresh_crls_every(endpoint.policies(), POLL_PAUSE, never),
    )
    .await;
    assert!(
        ended.is_ok(),
        "nothing to refresh: the task does not linger"
    );
}

// ---------------------------------------------------------------------------------------
// The TLS listener's shutdown.

/// An audit store whose appends announce themselves and then wait for the test's
/// permission: it holds a granted request in flight for exactly as long as the test needs.
#[derive(Debug)]
struct GatedStore {
    inner: Arc<dyn AuditStore>,
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    gate: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl AuditStore for GatedStore {
    async fn head(&self) -> Result<Option<StoredEntry>, PortError> {
        self.inner.head().await
    }
    async fn append(&self, entry: &AuditEntry) -> Result<(), PortError> {
        let _ = self.entered.send(());
        self.gate
            .acquire()
            .await
            .map_err(|_| PortError::invalid("the test closed the gate"))?
            .forget();
        self.inner.append(entry).await
    }
    async fn read(&self, from: u64, count: u32) -> Result<Vec<StoredEntry>, PortError> {
        self.inner.read(from, count).await
    }
}

/// One GET over a new TLS connection presenting `leaf`; the status and body.
async fn tls_get(
    address: std::net::SocketAddr,
    server_ca: rustls::pki_types::CertificateDer<'static>,
    leaf: &Leaf,
) -> std::io::Result<(u16, Value)> {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(server_ca)
        .expect("the server CA is a certificate");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())
        .expect("the leaf key is PEM");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the defaults")
    .with_root_certificates(roots)
    .with_client_auth_cert(vec![leaf.der.clone().into()], key)
    .expect("a usable client certificate");
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("a DNS name"),
            tcp,
        )
        .await?;
    stream
        .write_all(
            b"GET /api/secrets/db-password HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await?;
    let mut response = Vec::new();
    // The server closes without close_notify after a `Connection: close` answer; what
    // arrived before that is the whole response.
    match stream.read_to_end(&mut response).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no end of headers"))?;
    let status = head
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no status"))?;
    let body = serde_json::from_str(body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok((status, body))
}

#[tokio::test]
async fn shutting_the_tls_listener_down_refuses_new_connections_and_finishes_requests_in_flight() {
    let pki = Pki::new();
    let (server_ca, server_cert) = server_cert(&["localhost"]);
    std::fs::write(pki.path("server.pem"), &server_cert.cert_pem).expect("write");
    std::fs::write(pki.path("server.key"), &server_cert.key_pem).expect("write");
    let device = pki.leaf(&LeafSpec::valid("laptop-over-tls", 4244));

    let local = LocalStore::open(pki.path("keyturn.db")).expect("store");
    let (entered, mut entries_started) = tokio::sync::mpsc::unbounded_channel();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let store = Arc::new(GatedStore {
        inner: Arc::new(LocalAuditStore::new(local)),
        entered,
        gate: gate.clone(),
    });
    let path = |name: &str| pki.path(name).display().to_string();
    let mut settings = endpoint_settings();
    settings.extend(pki.chain_settings());
    settings.extend([
        access_policy(POLICY),
        ("KEYTURN_TRUST_ARR_CLIENT_CERT".into(), "false".into()),
        ("KEYTURN_TLS_ADDRESS".into(), "127.0.0.1:0".into()),
        ("KEYTURN_TLS_CERT".into(), path("server.pem")),
        ("KEYTURN_TLS_KEY".into(), path("server.key")),
    ]);
    let options = AppOptions {
        settings,
        overrides: Overrides {
            clock: Some(Clock::fixed(now())),
            audit: Some(store),
            ..Overrides::default()
        },
    };
    let data = tempfile::tempdir().expect("tempdir");
    let (settings, state, _) = start_up(options, &rotation(), data.path()).await;
    let tls_config = startup::tls_config(&settings)
        .expect("TLS configuration")
        .expect("a TLS listener is configured");
    let tls_address = settings.endpoint.tls.as_ref().expect("configured").address;
    let (shutdown, shutdown_requested) = oneshot::channel::<()>();
    let server = startup::spawn_tls(tls_address, tls_config, state, async move {
        let _ = shutdown_requested.await;
    })
    .await
    .expect("the listener starts");
    let address = server.local_addr();

    // Arrange: a granted request held inside the handler, at its audit append.
    let in_flight = tokio::spawn({
        let server_ca = rustls::pki_types::CertificateDer::from(server_ca.cert_der().to_vec());
        let device = device.clone();
        async move { tls_get(address, server_ca, &device).await }
    });
    entries_started
        .recv()
        .await
        .expect("the request reaches the audit append");

    // Act: shut down while it is in flight.
    shutdown.send(()).expect("the server awaits its signal");

    // Assert: the listening socket closes while the request is still held...
    let mut refused = false;
    for _ in 0..POLL_ATTEMPTS {
        match tokio::net::TcpStream::connect(address).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(POLL_PAUSE).await,
        }
    }
    assert!(refused, "new connections are refused once shutdown begins");
    assert!(
        !in_flight.is_finished(),
        "the held request is still in flight"
    );

    // ...and the held request still gets its answer before the listener reports stopped.
    gate.add_permits(1);
    let (status, body) = in_flight
        .await
        .expect("the client task does not panic")
        .expect("the in-flight request is answered");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], "db-value-8c1f");
    server.stopped().await.expect("the listener stops cleanly");
}

// ---------------------------------------------------------------------------------------
// Kept verdicts: a certificate's checks are reused only while they would decide the same.

fn at(y: i32, m: u32, d: u32, hh: u32, mm: u32, ss: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, hh, mm, ss)
        .single()
        .expect("valid time")
}

fn refusal_reason(
    result: Result<
        keyturn::domain::identity::Authenticated,
        keyturn::mtls::policies::CertificateRefusal,
    >,
) -> &'static str {
    match result {
        Ok(_) => "accepted",
        Err(refusal) => refusal.reason,
    }
}

/// What `policies` decide about the certificate in `header` at each instant, in order:
/// `accepted` or the refusal's reason code.
async fn reasons_at(
    policies: &keyturn::mtls::policies::CertificatePolicies,
    header: &str,
    instants: &[DateTime<Utc>],
) -> Vec<&'static str> {
    let mut reasons = Vec::new();
    for instant in instants {
        let result = policies
            .authenticate(Presented::ArrHeader(header), *instant)
            .await;
        reasons.push(refusal_reason(result));
    }
    reasons
}

#[tokio::test]
async fn a_kept_verdict_is_reused_only_until_the_certificate_expires() {
    let pki = Pki::new();
    let endpoint = shared_chain_endpoint(&pki);
    let policies = endpoint.policies();
    // Valid until 2026-01-01T00:00:00Z.
    let header = pki.leaf(&LeafSpec::valid("laptop-expiring", 5001)).header();

    let first = reasons_at(policies, &header, &[at(2025, 12, 31, 23, 0, 0)]).await;
    assert_eq!(first, ["accepted"]);
    assert_eq!(policies.kept_verdicts(), 1, "an acceptance is kept");
    let later = [at(2025, 12, 31, 23, 59, 59), at(2026, 1, 1, 0, 0, 1)];
    assert_eq!(
        reasons_at(policies, &header, &later).await,
        ["accepted", "expired"],
        "past notAfter the certificate is checked again, and refused"
    );
}

#[tokio::test]
async fn a_kept_verdict_ends_when_the_crls_it_relied_on_go_stale() {
    let pki = Pki::new();
    std::fs::write(
        pki.path("devices.crl"),
        crl_until(&pki.intermediate, &[REVOKED_SERIAL], (2025, 7, 1)),
    )
    .expect("write");
    let endpoint = shared_chain_endpoint(&pki);
    let policies = endpoint.policies();
    let header = pki
        .leaf(&LeafSpec::valid("laptop-stale-crl", 5002))
        .header();
    let instants = [at(2025, 6, 30, 23, 59, 0), at(2025, 7, 1, 0, 0, 1)];
    assert_eq!(
        reasons_at(policies, &header, &instants).await,
        ["accepted", "crl_expired"],
        "a verdict reached under a CRL is not reused once that CRL is stale"
    );
}

#[tokio::test]
async fn a_kept_verdict_ends_when_a_configured_intermediate_expires() {
    let root = ca("keyturn test root", None);
    let mut short_lived = ca_params("keyturn test devices");
    short_lived.not_after = rcgen::date_time_ymd(2025, 8, 1);
    let intermediate = TestCa::from_params(short_lived, Some(&root));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("roots.pem"), root.cert_pem()).expect("write");
    std::fs::write(dir.path().join("ica.pem"), intermediate.cert_pem()).expect("write");
    let config = PolicyConfig {
        trust_arr_header: true,
        chain: Some(ChainConfig {
            roots: dir.path().join("roots.pem"),
            intermediates: vec![dir.path().join("ica.pem")],
            crls: Vec::new(),
            check_revocation: false,
            clock_skew: Duration::ZERO,
        }),
        ..PolicyConfig::default()
    };
    let endpoint = Endpoint::from_config(
        &config,
        Some(POLICY),
        sources(&SECRETS),
        None,
        RateLimits::default(),
    )
    .expect("valid endpoint");
    let policies = endpoint.policies();
    let header = issue(
        &LeafSpec::valid("laptop-short-ica", 5003),
        Some(&intermediate),
    )
    .header();
    let instants = [at(2025, 7, 31, 23, 59, 0), at(2025, 8, 1, 0, 0, 1)];
    assert_eq!(
        reasons_at(policies, &header, &instants).await,
        ["accepted", "expired"],
        "the intermediate's notAfter bounds the verdict, not only the leaf's"
    );
}

#[tokio::test]
async fn refusals_are_checked_every_time_and_never_kept() {
    let pki = Pki::new();
    let endpoint = shared_chain_endpoint(&pki);
    let policies = endpoint.policies();
    let header = pki
        .leaf(&LeafSpec::valid("laptop-revoked", REVOKED_SERIAL))
        .header();
    assert_eq!(
        reasons_at(policies, &header, &[now(), now(), now()]).await,
        ["revoked"; 3]
    );
    assert_eq!(policies.kept_verdicts(), 0);
}

// ---------------------------------------------------------------------------------------
// Altered certificates: whatever a client changes in a valid certificate, the header path
// refuses it with a reason code, and nothing panics.

/// One way to alter a certificate's DER.
#[derive(Debug, Clone)]
enum Alteration {
    /// XOR a byte at this position (modulo the length) with a non-zero mask.
    Flip { at: usize, mask: u8 },
    /// Keep only this many bytes (modulo the length).
    Truncate { keep: usize },
    /// Insert a byte at this position (modulo the length plus one).
    Insert { at: usize, byte: u8 },
}

fn alter(der: &[u8], alteration: &Alteration) -> Vec<u8> {
    let mut altered = der.to_vec();
    match *alteration {
        Alteration::Flip { at, mask } => altered[at % der.len()] ^= mask,
        Alteration::Truncate { keep } => altered.truncate(keep % der.len()),
        Alteration::Insert { at, byte } => altered.insert(at % (der.len() + 1), byte),
    }
    altered
}

fn alteration() -> impl proptest::strategy::Strategy<Value = Alteration> {
    use proptest::prelude::*;
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Alteration::Flip { at, mask }),
        any::<usize>().prop_map(|keep| Alteration::Truncate { keep }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Alteration::Insert { at, byte }),
    ]
}

#[test]
fn every_altered_certificate_is_refused_with_a_reason_code() {
    use proptest::test_runner::{Config, TestRunner};

    let pki = Pki::new();
    let endpoint = shared_chain_endpoint(&pki);
    let leaf = pki.leaf(&LeafSpec::valid("laptop-altered", 6001));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let original = runtime.block_on(
        endpoint
            .policies()
            .authenticate(Presented::ArrHeader(&leaf.header()), now()),
    );
    assert_eq!(refusal_reason(original), "accepted", "the unaltered leaf");

    let mut runner = TestRunner::new(Config {
        cases: 512,
        ..Config::default()
    });
    runner
        .run(&alteration(), |alteration| {
            let altered = alter(&leaf.der, &alteration);
            let header = STANDARD.encode(&altered);
            let result = runtime.block_on(
                endpoint
                    .policies()
                    .authenticate(Presented::ArrHeader(&header), now()),
            );
            let reason = refusal_reason(result);
            proptest::prop_assert_ne!(reason, "accepted", "an altered certificate was accepted");
            proptest::prop_assert!(
                !reason.is_empty()
                    && reason
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "reason codes are snake_case: {reason}"
            );
            Ok(())
        })
        .expect("no altered certificate is accepted");
}
