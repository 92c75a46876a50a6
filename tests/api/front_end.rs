//! The secret endpoint's front-end check, through start-up as `serve` runs it: with
//! `KEYTURN_TRUST_ARR_CLIENT_CERT=true` the app reads its own site (named by the platform's
//! `WEBSITE_*` variables) from the Resource Manager stand-in with keyturn's credential, and
//! serves only while the site requires client certificates on the secret route. Every
//! other front end, and a failed read, gets 503 for every request, audited with its reason.

use std::time::{Duration, Instant};

use azure_core::http::{ClientOptions, RetryOptions};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyturn_standins::{ClientCerts, Fault, Permissions, Route, Service, SiteId, Standins};
use keyturn_testkit::pki;
use serde_json::Value;

use keyturn::domain::thumbprint::Thumbprint;
use keyturn::ports::audit::Outcome;
use keyturn::startup::Overrides;

use crate::helpers::{AppOptions, TestApp, read_all, rotation, spawn_app_from};

const HEADER: &str = "X-ARR-ClientCert";
const SECRET_VALUE: &str = "db-value-front-end-5d2c";

/// A running app behind a site the Resource Manager stand-in describes.
struct FrontEndApp {
    standins: Standins,
    site: SiteId,
    certificate: String,
    app: TestApp,
}

struct Start {
    certs: ClientCerts,
    check_seconds: u64,
    /// Seed the site only after start-up, or never: `None` reads a missing site.
    seeded: bool,
    permissions: Option<Permissions>,
    fault: Option<Fault>,
}

impl Start {
    fn with(certs: ClientCerts) -> Self {
        Self {
            certs,
            check_seconds: 300,
            seeded: true,
            permissions: None,
            fault: None,
        }
    }
}

impl FrontEndApp {
    async fn start(start: Start) -> Self {
        let standins = Standins::start()
            .await
            .expect("the stand-ins start on loopback");
        let site = if start.seeded {
            standins
                .resource_manager()
                .seed_site("kt-endpoint", start.certs)
        } else {
            SiteId {
                subscription: uuid::Uuid::new_v4(),
                resource_group: "rg-keyturn".to_owned(),
                name: "kt-endpoint".to_owned(),
            }
        };
        if let Some(fault) = start.fault {
            standins.inject(Service::ResourceManager, Route::any("/"), fault);
        }
        let credential = match start.permissions {
            Some(permissions) => {
                let identity = standins.seed_identity("keyturn-endpoint", permissions);
                standins.credential_for(&identity)
            }
            None => standins.credential(),
        };

        let der = pki::self_signed(&pki::client_params("front-end-device", &[])).cert_der;
        let thumbprint = Thumbprint::of_der(&der).to_string();
        let policy = format!(
            r#"{{ "version": 1, "grants": [ {{ "identities": [ {{ "thumbprint": "{thumbprint}" }} ], "secrets": [ "db-password" ], "backend": "appsettings" }} ] }}"#
        );
        let settings = [
            ("KEYTURN_TRUST_ARR_CLIENT_CERT", "true".to_owned()),
            ("KEYTURN_CERT_POLICIES", "trusted-thumbprints".to_owned()),
            ("KEYTURN_TRUSTED_THUMBPRINTS", thumbprint),
            ("KEYTURN_ACCESS_POLICY", policy),
            ("KEYTURN_SECRET_DB_PASSWORD", SECRET_VALUE.to_owned()),
            (
                "KEYTURN_RESOURCE_MANAGER_ENDPOINT",
                standins.resource_manager().url().to_string(),
            ),
            (
                "KEYTURN_FRONT_END_CHECK_SECONDS",
                start.check_seconds.to_string(),
            ),
            ("WEBSITE_OWNER_NAME", site.owner_name()),
            ("WEBSITE_RESOURCE_GROUP", site.resource_group.clone()),
            ("WEBSITE_SITE_NAME", site.name.clone()),
        ];
        // Settings parsed as serve parses them; only keyturn's credential and the
        // Resource Manager client's transport (trusting the stand-ins' CA, no retries, so
        // one injected fault is what the check sees) are put in place.
        let options = AppOptions {
            settings: settings
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            overrides: Overrides {
                credential: Some(credential),
                resource_manager_options: Some(ClientOptions {
                    retry: RetryOptions::none(),
                    ..standins.client_options()
                }),
                ..Overrides::default()
            },
        };
        let app = spawn_app_from(options, rotation()).await;
        Self {
            standins,
            site,
            certificate: STANDARD.encode(der),
            app,
        }
    }

    async fn get(&self) -> reqwest::Response {
        self.app
            .http
            .get(format!("{}/api/secrets/db-password", self.app.address))
            .header(HEADER, &self.certificate)
            .send()
            .await
            .expect("the request reaches the app")
    }

    async fn assert_served(&self) {
        let response = self.get().await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["value"], SECRET_VALUE);
    }

    /// 503 `front_end_unverified`, audited as a refusal with `reason`.
    async fn assert_refused(&self, reason: &str) {
        let response = self.get().await;
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "front_end_unverified", "{body}");
        assert!(
            !body.to_string().contains(SECRET_VALUE),
            "a refusal never carries the secret"
        );
        let entry = read_all(self.app.store.as_ref())
            .await
            .pop()
            .expect("the refusal is audited");
        assert_eq!(entry.record.outcome, Outcome::Denied);
        let text = entry
            .record
            .reason
            .as_ref()
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default();
        assert_eq!(text, format!("policy=front-end; reason={reason}"));
    }

    /// Polls until the answer's status is `status`, for at most `within`.
    async fn wait_for_status(&self, status: u16, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.get().await.status().as_u16();
            if seen == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still {seen} after {within:?}, expected {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn site_reads(&self) -> Vec<keyturn_standins::LoggedRequest> {
        self.standins.requests_to(Service::ResourceManager)
    }
}

#[tokio::test]
async fn a_front_end_that_requires_certificates_everywhere_is_believed() {
    let app = FrontEndApp::start(Start::with(ClientCerts::required())).await;
    app.assert_served().await;

    // One read, of exactly the site the platform's variables name, at the pinned API
    // version, with a Resource Manager token (the stand-in refuses anything else).
    let reads = app.site_reads();
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!(reads[0].method, "GET");
    assert_eq!(reads[0].path, app.site.resource_id());
    assert_eq!(reads[0].query.as_deref(), Some("api-version=2024-04-01"));
    assert_eq!(reads[0].status, 200);
}

#[tokio::test]
async fn optional_certificates_are_not_believed() {
    for mode in ["Optional", "OptionalInteractiveUser"] {
        let app = FrontEndApp::start(Start::with(ClientCerts::mode(mode))).await;
        app.assert_refused("client_cert_not_required").await;
    }
}

#[tokio::test]
async fn certificates_not_enabled_are_not_believed() {
    let certs = ClientCerts {
        enabled: false,
        ..ClientCerts::required()
    };
    let app = FrontEndApp::start(Start::with(certs)).await;
    app.assert_refused("client_cert_not_enabled").await;
}

#[tokio::test]
async fn an_exclusion_path_over_the_secret_route_is_not_believed() {
    for paths in ["/api/secrets", "/health,/api", "/API/SECRETS/db-password"] {
        let app = FrontEndApp::start(Start::with(ClientCerts::required().excluding(paths))).await;
        app.assert_refused("secret_route_excluded").await;
    }
}

#[tokio::test]
async fn an_exclusion_path_elsewhere_is_believed() {
    let app = FrontEndApp::start(Start::with(
        ClientCerts::required().excluding("/api/health,/status"),
    ))
    .await;
    app.assert_served().await;
}

#[tokio::test]
async fn a_failed_read_is_not_believed() {
    for status in [403, 500] {
        let start = Start {
            fault: Some(Fault::Status {
                status,
                retry_after_seconds: None,
            }),
            ..Start::with(ClientCerts::required())
        };
        let app = FrontEndApp::start(start).await;
        app.assert_refused("site_read_failed").await;
        assert_eq!(app.site_reads()[0].status, status);
    }
}

#[tokio::test]
async fn an_identity_without_reader_on_the_site_is_refused_and_so_is_every_request() {
    let start = Start {
        permissions: Some(Permissions::only(["secrets/get"])),
        ..Start::with(ClientCerts::required())
    };
    let app = FrontEndApp::start(start).await;
    app.assert_refused("site_read_failed").await;
    assert_eq!(app.site_reads()[0].status, 403);
}

#[tokio::test]
async fn a_site_resource_manager_does_not_know_is_refused() {
    let start = Start {
        seeded: false,
        ..Start::with(ClientCerts::required())
    };
    let app = FrontEndApp::start(start).await;
    app.assert_refused("site_read_failed").await;
    assert_eq!(app.site_reads()[0].status, 404);
}

#[tokio::test]
async fn a_recheck_closes_the_gate_when_the_front_end_weakens_and_opens_it_again() {
    let start = Start {
        check_seconds: 1,
        ..Start::with(ClientCerts::required())
    };
    let app = FrontEndApp::start(start).await;
    app.assert_served().await;

    let rm = app.standins.resource_manager();
    rm.set_client_certs(&app.site, ClientCerts::mode("Optional"));
    app.wait_for_status(503, Duration::from_secs(10)).await;
    app.assert_refused("client_cert_not_required").await;

    rm.set_client_certs(&app.site, ClientCerts::required());
    app.wait_for_status(200, Duration::from_secs(10)).await;
    app.assert_served().await;
    assert!(app.site_reads().len() >= 3, "checked on the schedule");
}

#[tokio::test]
async fn a_recheck_that_cannot_read_the_site_closes_the_gate() {
    let start = Start {
        check_seconds: 1,
        ..Start::with(ClientCerts::required())
    };
    let app = FrontEndApp::start(start).await;
    app.assert_served().await;
    for _ in 0..50 {
        app.standins.inject(
            Service::ResourceManager,
            Route::any("/"),
            Fault::internal_error(),
        );
    }
    app.wait_for_status(503, Duration::from_secs(10)).await;
    app.assert_refused("site_read_failed").await;
}

#[tokio::test]
async fn platform_variables_that_name_no_site_keep_the_endpoint_closed() {
    let standins = Standins::start().await.expect("stand-ins");
    let options = AppOptions {
        settings: [
            ("KEYTURN_TRUST_ARR_CLIENT_CERT", "true"),
            ("KEYTURN_CERT_POLICIES", "trusted-thumbprints"),
            (
                "KEYTURN_TRUSTED_THUMBPRINTS",
                "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08",
            ),
            ("KEYTURN_RESOURCE_MANAGER_ENDPOINT", "https://127.0.0.1:9"),
            ("WEBSITE_SITE_NAME", "kt-endpoint"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        overrides: Overrides {
            credential: Some(standins.credential()),
            ..Overrides::default()
        },
    };
    let app = spawn_app_from(options, rotation()).await;
    let response = app
        .http
        .get(format!("{}/api/secrets/db-password", app.address))
        .send()
        .await
        .expect("reaches the app");
    assert_eq!(response.status(), 503);
    let entry = read_all(app.store.as_ref()).await.pop().expect("audited");
    assert_eq!(
        entry.record.reason.as_ref().map(|r| r.as_str().to_owned()),
        Some("policy=front-end; reason=site_unknown".to_owned())
    );
    assert!(standins.requests_to(Service::ResourceManager).is_empty());
}
