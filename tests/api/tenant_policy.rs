//! The tenant's rules bound the credential: before addPassword keyturn reads the tenant's
//! default app management policy and the application's own (the Graph stand-in serves
//! both as Graph does and enforces them on addPassword), caps the lifetime to
//! `maxLifetime`, refuses clearly where passwords are forbidden or an application that
//! allows personal Microsoft accounts already holds its two, and stores the expiry Graph
//! answered.

use std::sync::Arc;
use std::time::Duration;

use azure_core::http::ClientOptions;
use chrono::{DateTime, Utc};
use keyturn_doubles::{Faults, MemoryAuditStore, MemoryQueue};
use keyturn_standins::{PasswordRestriction, Permissions, SecretSeed, Service, Standins};
use uuid::Uuid;

use keyturn::adapters::azure::client::http::default_client_options;
use keyturn::adapters::azure::graph::{GraphClient, POLICY_PERMISSION};
use keyturn::adapters::azure::keyvault::KeyVault;
use keyturn::adapters::azure::token::{DEFAULT_PROOF_SCOPE, EntraTokenProver};
use keyturn::audit::{AuditLog, AuditScope};
use keyturn::domain::clock::Clock;
use keyturn::domain::ids::{DirectoryObjectId, TenantId};
use keyturn::domain::names::VaultUrl;
use keyturn::ports::FailureKind;
use keyturn::ports::audit::Outcome;
use keyturn::ports::directory::CredentialIssuer;
use keyturn::rotation::job::Job;
use keyturn::rotation::run::{self, RunOutcome};
use keyturn::rotation::tags::{self, PolicyDefaults};
use keyturn::rotation::{Engine, Ports, RotationError, plan};

const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const SECRET: &str = "payments-api-secret";
/// keyturn's default validity: what it asks for when no policy caps it.
const VALIDITY_DAYS: i64 = 90;

struct Rig {
    standins: Standins,
    engine: Engine,
    queue: Arc<MemoryQueue>,
    audit: Arc<MemoryAuditStore>,
    scope: AuditScope,
    vault: VaultUrl,
    app_object: Uuid,
    graph: GraphClient,
}

fn options(standins: &Standins) -> ClientOptions {
    ClientOptions {
        transport: standins.client_options().transport,
        ..default_client_options()
    }
}

/// An application with one credential of a person's, a managed secret due for rotation,
/// and an engine over the stand-ins.
async fn rig() -> Rig {
    let standins = Standins::start().await.expect("stand-ins");
    let seeded = standins
        .graph()
        .seed_application("payments-api", Permissions::only(Vec::<String>::new()));
    let person = standins
        .graph()
        .add_password(
            seeded.object_id,
            standins.now() + chrono::Duration::days(20),
            true,
        )
        .expect("a person's credential");
    standins.keyvault().seed_secret(
        SecretSeed::new(SECRET, person.secret_text.clone())
            .content_type("text/plain")
            .expires(standins.now() + chrono::Duration::days(5))
            .tag(tags::KIND, "entra-app-secret")
            .tag(tags::APP_ID, seeded.app_id.to_string())
            // One acceptance promotes: the proof over time is not what these tests are about.
            .tag(tags::PROOF_SUCCESSES, "1")
            .tag(tags::PROOF_WINDOW_SECONDS, "0"),
    );
    let vault = VaultUrl::parse(standins.keyvault().url().as_str()).expect("a vault URL");
    let key_vault = Arc::new(
        KeyVault::new(standins.credential(), Some(options(&standins)))
            .without_challenge_resource_check(),
    );
    let graph = GraphClient::with_scope(
        standins.graph().url(),
        GRAPH_SCOPE.to_owned(),
        standins.credential(),
        Some(options(&standins)),
    )
    .expect("https");
    let tenant = TenantId::parse(&standins.tenant_id().to_string()).expect("GUID");
    let prover = EntraTokenProver::new(
        standins.login_url(),
        &tenant,
        DEFAULT_PROOF_SCOPE,
        Some(options(&standins)),
    )
    .expect("https");
    let queue = Arc::new(MemoryQueue::new(Faults::new()));
    let ports = Ports {
        secrets: key_vault.clone(),
        certificates: key_vault,
        directory: Arc::new(graph.clone()),
        prover: Arc::new(prover),
        queue: queue.clone(),
    };
    let engine = Engine::new(
        ports,
        vec![vault.clone()],
        PolicyDefaults::new(VALIDITY_DAYS as u32, 30, 7).expect("defaults"),
        Clock::system(),
    );
    let audit = Arc::new(MemoryAuditStore::new());
    let scope = AuditScope::function(
        AuditLog::new(audit.clone()),
        "RotationWorker",
        "5f0c0d4e-2f35-4f1a-9f3e-8a7f0b6c1d2e",
        Clock::system(),
    )
    .expect("scope");
    Rig {
        standins,
        engine,
        queue,
        audit,
        scope,
        vault,
        app_object: seeded.object_id,
        graph,
    }
}

impl Rig {
    /// The job the sweep plans for the secret.
    async fn job(&self) -> Job {
        let swept = plan::sweep(
            &self.engine,
            &self.scope,
            std::slice::from_ref(&self.vault),
            Utc::now(),
        )
        .await
        .expect("sweeps");
        let message = self
            .queue
            .messages()
            .pop()
            .unwrap_or_else(|| panic!("a job: {swept:?}"));
        let value: serde_json::Value = serde_json::from_slice(&message.body).expect("json");
        Job::from_json(&value).expect("a job")
    }

    async fn rotate(&self) -> Result<RunOutcome, RotationError> {
        let job = self.job().await;
        self.standins.clear_requests();
        run::run(&self.engine, &self.scope, &job).await
    }

    /// The end of the credential keyturn added (its marker names a job).
    fn keyturn_credential_end(&self) -> DateTime<Utc> {
        let added: Vec<_> = self
            .standins
            .graph()
            .passwords(self.app_object)
            .into_iter()
            .filter(|p| {
                p.display_name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("keyturn "))
            })
            .collect();
        assert_eq!(added.len(), 1, "one credential added");
        added[0].end
    }

    fn current_expiry(&self) -> DateTime<Utc> {
        self.standins
            .keyvault()
            .current_secret(SECRET)
            .and_then(|s| s.expires)
            .expect("the current version expires")
    }

    fn add_password_calls(&self) -> usize {
        self.standins
            .requests_to(Service::Graph)
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/addPassword"))
            .count()
    }

    fn failed_audits(&self) -> Vec<String> {
        self.audit
            .records()
            .iter()
            .filter(|r| r.action.as_str() == "rotation.failed" && r.outcome == Outcome::Failed)
            .map(|r| {
                r.reason
                    .as_ref()
                    .map(|t| t.as_str().to_owned())
                    .unwrap_or_default()
            })
            .collect()
    }

    fn last_error(&self) -> Option<String> {
        self.standins
            .keyvault()
            .current_secret(SECRET)
            .and_then(|s| s.tags.get(tags::LAST_ERROR).cloned())
    }
}

fn days_from_now(end: DateTime<Utc>) -> i64 {
    (end - Utc::now() + chrono::Duration::hours(1)).num_days()
}

#[tokio::test]
async fn the_lifetime_is_capped_to_the_tenant_default_policy() {
    let rig = rig().await;
    rig.standins.graph().set_tenant_password_restrictions(vec![
        PasswordRestriction::password_lifetime("P30D", None),
    ]);

    let outcome = rig.rotate().await.expect("rotated within the policy");

    assert!(matches!(outcome, RunOutcome::Rotated { .. }), "{outcome:?}");
    let end = rig.keyturn_credential_end();
    assert_eq!(
        days_from_now(end),
        30,
        "capped from {VALIDITY_DAYS} days: {end}"
    );
    assert_eq!(rig.current_expiry(), end);
    assert_eq!(rig.add_password_calls(), 1);
}

#[tokio::test]
async fn the_applications_own_policy_replaces_the_tenant_default() {
    let rig = rig().await;
    rig.standins.graph().set_tenant_password_restrictions(vec![
        PasswordRestriction::password_lifetime("P10D", None),
    ]);
    rig.standins.graph().set_application_policy(
        rig.app_object,
        Some((
            "payments credentials",
            vec![PasswordRestriction::password_lifetime("P60D", None)],
        )),
    );

    rig.rotate().await.expect("rotated");

    assert_eq!(days_from_now(rig.keyturn_credential_end()), 60);
}

#[tokio::test]
async fn a_policy_forbidding_passwords_is_a_clear_permanent_failure_naming_it() {
    let rig = rig().await;
    rig.standins.graph().set_application_policy(
        rig.app_object,
        Some((
            "no secrets for payments",
            vec![PasswordRestriction::password_addition(None)],
        )),
    );

    let error = rig.rotate().await.expect_err("forbidden");

    assert!(error.is_permanent(), "{error}");
    assert!(
        matches!(error, RotationError::PasswordsForbidden { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("no secrets for payments"),
        "{error}"
    );
    assert_eq!(rig.add_password_calls(), 0, "nothing asked of Graph");
    let failed = rig.failed_audits();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("no secrets for payments"), "{failed:?}");
    assert!(
        rig.last_error().is_some_and(
            |e| e.contains("policy_violation") && e.contains("no secrets for payments")
        ),
        "{:?}",
        rig.last_error()
    );
    // A restriction for applications created after this one does not reach it.
    rig.standins.graph().set_application_policy(
        rig.app_object,
        Some((
            "no secrets for new apps",
            vec![PasswordRestriction::password_addition(Some(
                Utc::now() + chrono::Duration::days(1),
            ))],
        )),
    );
    rig.rotate()
        .await
        .expect("the restriction is for newer applications");
}

#[tokio::test]
async fn the_version_expires_when_graph_says_the_credential_does() {
    let rig = rig().await;
    rig.standins
        .graph()
        .set_answered_end_offset(Some(Duration::from_secs(3600)));

    rig.rotate().await.expect("rotated");

    let end = rig.keyturn_credential_end();
    assert_eq!(
        rig.current_expiry(),
        end,
        "Graph's endDateTime, not the request"
    );
    assert_eq!(days_from_now(end), VALIDITY_DAYS);
}

#[tokio::test]
async fn an_application_for_personal_accounts_holding_two_passwords_is_refused_clearly() {
    let rig = rig().await;
    rig.standins
        .graph()
        .set_sign_in_audience(rig.app_object, "AzureADandPersonalMicrosoftAccount");
    rig.standins
        .graph()
        .add_password(
            rig.app_object,
            Utc::now() + chrono::Duration::days(40),
            true,
        )
        .expect("a second credential of a person's");

    let error = rig.rotate().await.expect_err("two passwords already");

    assert!(error.is_permanent(), "{error}");
    assert!(
        matches!(
            error,
            RotationError::TooManyPasswords {
                max: 2,
                held: 2,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("personal Microsoft accounts"),
        "{error}"
    );
    assert_eq!(rig.add_password_calls(), 0);
    assert_eq!(rig.failed_audits().len(), 1);

    // The stand-in enforces the cap itself, as Graph does.
    let refused = rig
        .graph
        .add_password(
            &DirectoryObjectId::parse(&rig.app_object.to_string()).expect("GUID"),
            "keyturn direct",
            Utc::now() + chrono::Duration::days(10),
        )
        .await
        .expect_err("a third password");
    assert!(refused.context.contains("TooManyAppPasswords"), "{refused}");

    // With one of them gone, keyturn adds its own.
    let person = rig.standins.graph().passwords(rig.app_object)[1].key_id;
    rig.graph
        .remove_password(
            &DirectoryObjectId::parse(&rig.app_object.to_string()).expect("GUID"),
            &keyturn::domain::ids::KeyId::parse(&person.to_string()).expect("GUID"),
        )
        .await
        .expect("removed");
    rig.rotate().await.expect("room for one");
}

#[tokio::test]
async fn reading_the_policies_needs_policy_read_all() {
    let rig = rig().await;
    let no_policy = rig.standins.seed_identity(
        "keyturn-without-policy-read",
        Permissions::only(["Application.ReadWrite.All"]),
    );
    let graph = GraphClient::with_scope(
        rig.standins.graph().url(),
        GRAPH_SCOPE.to_owned(),
        rig.standins.credential_for(&no_policy),
        Some(options(&rig.standins)),
    )
    .expect("https");

    let error = graph
        .password_rules(&DirectoryObjectId::parse(&rig.app_object.to_string()).expect("GUID"))
        .await
        .expect_err("no policy permission");

    assert_eq!(
        error.kind,
        FailureKind::PermissionDenied {
            missing: POLICY_PERMISSION.to_owned()
        }
    );
    assert!(POLICY_PERMISSION.contains("Policy.Read.All"));
}
