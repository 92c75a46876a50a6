//! Certificates: a renewal keeps the tags that make keyturn manage the certificate (Key
//! Vault keeps tags per version, in the stand-in and in the local vault alike), so the
//! next sweep still plans it; and a job is checked against the state it claims before
//! anything is recorded as done.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use azure_core::http::RequestContent;
use azure_core::http::poller::PollerOptions;
use azure_security_keyvault_certificates::models::{
    CertificateClientCreateCertificateOptions, CertificatePolicy, CreateCertificateParameters,
    IssuerParameters, SecretProperties, X509CertificateProperties,
};
use azure_security_keyvault_certificates::{CertificateClient, CertificateClientOptions};
use chrono::{DateTime, TimeZone, Utc};
use keyturn_doubles::{
    Faults, ManualClock, MemoryAuditStore, MemoryDirectory, MemoryQueue, MemoryVault,
};
use keyturn_standins::Standins;

use keyturn::adapters::azure::client::http::default_client_options;
use keyturn::adapters::azure::keyvault::KeyVault;
use keyturn::adapters::local::crypto::VaultKey;
use keyturn::adapters::local::store::LocalStore;
use keyturn::adapters::local::vault::{LocalCertificatePolicy, LocalVault};
use keyturn::audit::{AuditLog, AuditScope};
use keyturn::domain::clock::Clock;
use keyturn::domain::names::{ObjectName, VaultUrl};
use keyturn::ports::audit::Outcome;
use keyturn::ports::vault::{CertificateStore, SecretStore};
use keyturn::rotation::job::{Action, Job};
use keyturn::rotation::run::{self, RunOutcome};
use keyturn::rotation::tags::{self, PolicyDefaults};
use keyturn::rotation::{Engine, Ports, plan};

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0)
        .single()
        .expect("time")
}

/// Tags under which a certificate is always due: the sweep plans it whatever its expiry.
fn always_due() -> BTreeMap<String, String> {
    BTreeMap::from([
        (tags::KIND.to_string(), "certificate".to_string()),
        (tags::VALIDITY_DAYS.to_string(), "3650".to_string()),
        (tags::ROTATE_BEFORE_DAYS.to_string(), "3600".to_string()),
    ])
}

struct Rig {
    engine: Engine,
    queue: Arc<MemoryQueue>,
    audit: Arc<MemoryAuditStore>,
    scope: AuditScope,
    vault: VaultUrl,
}

fn rig(
    secrets: Arc<dyn SecretStore>,
    certificates: Arc<dyn CertificateStore>,
    vault: VaultUrl,
    clock: Clock,
) -> Rig {
    let faults = Faults::new();
    let directory = Arc::new(MemoryDirectory::new(clock.clone(), faults.clone()));
    let queue = Arc::new(MemoryQueue::new(faults));
    let ports = Ports {
        secrets,
        certificates,
        directory: directory.clone(),
        prover: directory,
        queue: queue.clone(),
    };
    let engine = Engine::new(
        ports,
        vec![vault.clone()],
        PolicyDefaults::new(90, 30, 7).expect("defaults"),
        clock.clone(),
    );
    let audit = Arc::new(MemoryAuditStore::new());
    let scope = AuditScope::function(
        AuditLog::new(audit.clone()),
        "RotationWorker",
        "5f0c0d4e-2f35-4f1a-9f3e-8a7f0b6c1d2e",
        clock,
    )
    .expect("scope");
    Rig {
        engine,
        queue,
        audit,
        scope,
        vault,
    }
}

impl Rig {
    /// Sweeps the vault; the job it queued for `name`, if any.
    async fn planned(&self, name: &str) -> Option<Job> {
        let before = self.queue.messages().len();
        let swept = plan::sweep(
            &self.engine,
            &self.scope,
            std::slice::from_ref(&self.vault),
            self.engine_now(),
        )
        .await
        .expect("sweeps");
        assert!(swept.malformed.is_empty(), "{swept:?}");
        self.queue.messages()[before..]
            .iter()
            .map(|m| {
                let value: serde_json::Value = serde_json::from_slice(&m.body).expect("json");
                Job::from_json(&value).expect("a job")
            })
            .find(|job| job.action.object().name().as_str() == name)
    }

    fn engine_now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn count(&self, action: &str, outcome: Outcome) -> usize {
        self.audit
            .records()
            .iter()
            .filter(|r| r.action.as_str() == action && r.outcome == outcome)
            .count()
    }
}

/// Renews `name` through the engine from the job the sweep planned, then sweeps again:
/// the renewed version carries the tags and is planned, for its own version.
async fn renewed_and_planned_again(rig: &Rig, name: &str) {
    let first = rig.planned(name).await.expect("planned before the renewal");
    let outcome = run::run(&rig.engine, &rig.scope, &first)
        .await
        .expect("renews");
    let RunOutcome::Rotated { version, .. } = outcome else {
        panic!("renewed: {outcome:?}");
    };
    assert_ne!(version, first.action_version());

    let next = rig
        .planned(name)
        .await
        .expect("still planned after the renewal");
    assert_eq!(
        next.action_version(),
        version,
        "planned for the renewed version"
    );
}

trait ActionVersion {
    fn action_version(&self) -> String;
}

impl ActionVersion for Job {
    fn action_version(&self) -> String {
        match &self.action {
            Action::Rotate {
                replaces_version, ..
            } => replaces_version.to_string(),
            other => panic!("a rotate job: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_certificate_renewed_in_key_vault_is_still_planned_by_the_next_sweep() {
    let standins = Standins::start().await.expect("stand-ins");
    standins.keyvault().set_polls_until_complete(0);
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
            subject: Some("CN=device-api".to_owned()),
            ..X509CertificateProperties::default()
        }),
        issuer_parameters: Some(IssuerParameters {
            name: Some("Self".to_owned()),
            ..IssuerParameters::default()
        }),
        secret_properties: Some(SecretProperties {
            content_type: Some("application/x-pem-file".to_owned()),
        }),
        ..CertificatePolicy::default()
    };
    let parameters: RequestContent<CreateCertificateParameters> = CreateCertificateParameters {
        certificate_policy: Some(policy),
        tags: Some(always_due().into_iter().collect()),
        ..CreateCertificateParameters::default()
    }
    .try_into()
    .expect("encodable");
    client
        .begin_create_certificate(
            "device-api",
            parameters,
            Some(CertificateClientCreateCertificateOptions {
                method_options: PollerOptions {
                    frequency: azure_core::time::Duration::seconds(1),
                    ..PollerOptions::default()
                },
            }),
        )
        .expect("request built")
        .await
        .expect("the first version is issued");
    let key_vault = Arc::new(
        KeyVault::new(
            standins.credential(),
            Some(azure_core::http::ClientOptions {
                transport: standins.client_options().transport,
                ..default_client_options()
            }),
        )
        .without_challenge_resource_check(),
    );
    let vault = VaultUrl::parse(standins.keyvault().url().as_str()).expect("a vault URL");
    let rig = rig(key_vault.clone(), key_vault, vault, Clock::system());

    renewed_and_planned_again(&rig, "device-api").await;
}

#[tokio::test]
async fn a_certificate_renewed_in_the_local_vault_is_still_planned_by_the_next_sweep() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::open(dir.path().join("keyturn.db")).expect("store");
    let key =
        VaultKey::from_base64("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "test").expect("key");
    let local = Arc::new(
        LocalVault::open(store, key, Clock::system())
            .await
            .expect("vault"),
    );
    let vault = VaultUrl::parse("https://kv-local.vault.azure.net/").expect("vault url");
    local
        .create_certificate(
            &vault,
            &ObjectName::parse("web").expect("name"),
            LocalCertificatePolicy::self_signed("localhost", &["localhost"], 365),
            always_due(),
            Utc::now(),
        )
        .await
        .expect("created");
    let rig = rig(local.clone(), local, vault, Clock::system());

    renewed_and_planned_again(&rig, "web").await;
}

#[tokio::test]
async fn a_forged_follow_up_for_the_current_version_is_never_audited_as_a_renewal() {
    let clock = ManualClock::at(start());
    let faults = Faults::new();
    let memory = Arc::new(MemoryVault::new(clock.clock(), faults));
    let vault = VaultUrl::parse("https://kv-one.vault.azure.net/").expect("vault");
    let rig = rig(memory.clone(), memory.clone(), vault.clone(), clock.clock());
    let name = ObjectName::parse("tls").expect("name");
    let c1 = memory.put_certificate(&vault, &name, "Self", None, always_due());
    let renew = Job::new(Action::Rotate {
        object: c1.id.without_version(),
        replaces_version: c1.id.version().expect("v").clone(),
    });
    let RunOutcome::Rotated { version, .. } = run::run(&rig.engine, &rig.scope, &renew)
        .await
        .expect("renews")
    else {
        panic!("renewed");
    };
    assert_eq!(rig.count("certificate.renewed", Outcome::Succeeded), 1);
    let current = memory
        .certificate_versions(&vault, &name)
        .last()
        .cloned()
        .expect("the renewed version");
    assert_eq!(current.id.version().map(ToString::to_string), Some(version));

    // A follow-up job for the version that is already current: its renewal happened
    // long ago (the last operation completed with this very version).
    let forged = Job::new(Action::FollowRenewal {
        object: current.id.without_version(),
        replaces_version: current.id.version().expect("v").clone(),
        attempt: 3,
    });
    let outcome = run::run(&rig.engine, &rig.scope, &forged)
        .await
        .expect("runs");

    assert!(matches!(outcome, RunOutcome::Skipped { .. }), "{outcome:?}");
    assert_eq!(
        rig.count("certificate.renewed", Outcome::Succeeded),
        1,
        "nothing was renewed, so nothing is audited as renewed"
    );
    assert_eq!(memory.certificate_versions(&vault, &name).len(), 2);

    // A follow-up for the first version, now that a version no renewal made is current:
    // a person imported it, and keyturn does not claim it.
    clock.advance(Duration::from_secs(60));
    let imported = memory.put_certificate(&vault, &name, "Self", None, always_due());
    let stale = Job::new(Action::FollowRenewal {
        object: imported.id.without_version(),
        replaces_version: c1.id.version().expect("v").clone(),
        attempt: 1,
    });
    let outcome = run::run(&rig.engine, &rig.scope, &stale)
        .await
        .expect("runs");
    assert!(matches!(outcome, RunOutcome::Skipped { .. }), "{outcome:?}");
    assert_eq!(rig.count("certificate.renewed", Outcome::Succeeded), 1);
}
