//! Engine tests: planning and running jobs against the strict in-memory ports of
//! `keyturn-doubles`, with a manual clock, fault injection and simulated crashes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;

use keyturn::audit::{AuditLog, AuditScope};
use keyturn::domain::clock::Clock;
use keyturn::domain::ids::{AppId, KeyId};
use keyturn::domain::names::{ObjectId, ObjectName, ObjectType, VaultUrl};
use keyturn::domain::secret::SecretValue;
use keyturn::events::keyvault::KeyVaultEvent;
use keyturn::functions::key_vault_events;
use keyturn::ports::audit::Outcome;
use keyturn::ports::directory::Application;
use keyturn::ports::queue::OutgoingMessage;
use keyturn::ports::vault::SecretProperties;
use keyturn::ports::{FailureKind, PortError};
use keyturn::rotation::job::{Action, Job};
use keyturn::rotation::plan::{self, EventDecision, ExpiryNotice};
use keyturn::rotation::run::{self, MARKER_PREFIX, RunOutcome};
use keyturn::rotation::tags::{self, PolicyDefaults};
use keyturn::rotation::{Engine, Ports, RotationError};
use keyturn_doubles::{
    CrashPoint, Faults, LIFETIME_POLICY, ManualClock, MemoryAuditStore, MemoryDirectory,
    MemoryQueue, MemoryVault,
};

const APP: &str = "6f1b7a7e-0b1c-4d2a-9e3f-0123456789ab";

/// An audit trail in memory, in order: the scope the engine is handed, over a store the
/// test reads back.
#[derive(Debug)]
struct Trail {
    store: Arc<MemoryAuditStore>,
    scope: AuditScope,
}

impl Trail {
    /// Entries stamped from `clock`, as the functions stamp them from the services' clock.
    fn new(clock: Clock) -> Self {
        let store = Arc::new(MemoryAuditStore::new());
        let scope = AuditScope::function(
            AuditLog::new(store.clone()),
            "RotationWorker",
            "5f0c0d4e-2f35-4f1a-9f3e-8a7f0b6c1d2e",
            clock,
        )
        .expect("scope");
        Self { store, scope }
    }

    fn actions(&self) -> Vec<(String, Outcome)> {
        self.store
            .records()
            .iter()
            .map(|r| (r.action.to_string(), r.outcome))
            .collect()
    }

    fn has(&self, action: &str, outcome: Outcome) -> bool {
        self.actions().contains(&(action.to_string(), outcome))
    }

    fn text(&self) -> String {
        format!("{:?}", self.store.records())
    }
}

impl std::ops::Deref for Trail {
    type Target = AuditScope;

    fn deref(&self) -> &AuditScope {
        &self.scope
    }
}

/// An audit trail that refuses one action for good, as a misconfigured log would.
fn refusing(action: &str) -> Trail {
    let trail = Trail::new(Clock::fixed(start()));
    trail.store.refuse(action);
    trail
}

struct World {
    clock: ManualClock,
    faults: Arc<Faults>,
    vault: Arc<MemoryVault>,
    directory: Arc<MemoryDirectory>,
    queue: Arc<MemoryQueue>,
    engine: Arc<Engine>,
    trail: Arc<Trail>,
    vault_url: VaultUrl,
    app: Application,
    /// The job a worker was running when it was stopped.
    in_flight: std::sync::Mutex<Option<Job>>,
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0)
        .single()
        .expect("time")
}

fn world() -> World {
    let clock = ManualClock::at(start());
    let faults = Faults::new();
    let vault = Arc::new(MemoryVault::new(clock.clock(), faults.clone()));
    let directory = Arc::new(MemoryDirectory::new(clock.clock(), faults.clone()));
    let queue = Arc::new(MemoryQueue::new(faults.clone()));
    let vault_url = VaultUrl::parse("https://kv-one.vault.azure.net/").expect("vault");
    let ports = Ports {
        secrets: vault.clone(),
        certificates: vault.clone(),
        directory: directory.clone(),
        prover: directory.clone(),
        queue: queue.clone(),
    };
    let engine = Engine::new(
        ports,
        vec![vault_url.clone()],
        PolicyDefaults::new(90, 30, 7).expect("defaults"),
        clock.clock(),
    )
    .with_pause(clock.pause());
    let app = directory.add_application(AppId::parse(APP).expect("app id"), "payments-api");
    // Entra's observed propagation is seconds; every test waits through it.
    directory.set_propagation_delay(Duration::from_secs(10));
    let trail = Arc::new(Trail::new(clock.clock()));
    World {
        clock,
        faults,
        vault,
        directory,
        queue,
        engine: Arc::new(engine),
        trail,
        vault_url,
        app,
        in_flight: std::sync::Mutex::new(None),
    }
}

fn name(text: &str) -> ObjectName {
    ObjectName::parse(text).expect("name")
}

fn entra_tags() -> BTreeMap<String, String> {
    BTreeMap::from([
        (tags::KIND.to_string(), "entra-app-secret".to_string()),
        (tags::APP_ID.to_string(), APP.to_string()),
    ])
}

impl World {
    /// A secret whose current version keyturn wrote earlier, holding a keyturn-marked
    /// credential that expires in five days.
    fn seed_keyturn_version(&self, secret: &str) -> (SecretProperties, KeyId) {
        let end = self.clock.now() + chrono::Duration::days(5);
        let earlier = format!("{MARKER_PREFIX}{}", "a".repeat(32));
        let issued = self
            .directory
            .add_person_credential(&self.app.object_id, &earlier, end)
            .expect("app exists");
        let mut tags = entra_tags();
        tags.insert(tags::KEY_ID.into(), issued.credential.key_id.to_string());
        tags.insert(tags::JOB_ID.into(), "a".repeat(32));
        tags.insert(tags::ROTATED_AT.into(), "2030-03-01T00:00:00Z".into());
        let properties = self.vault.put_secret(
            &self.vault_url,
            &name(secret),
            &issued.secret,
            Some(end),
            tags,
        );
        (properties, issued.credential.key_id)
    }

    fn rotate_job(&self, properties: &SecretProperties) -> Job {
        Job::new(Action::Rotate {
            object: properties.id.without_version(),
            replaces_version: properties.id.version().expect("version").clone(),
        })
    }

    async fn run(&self, job: &Job) -> Result<RunOutcome, RotationError> {
        *self.in_flight.lock().expect("lock") = Some(job.clone());
        run::run(&self.engine, self.trail.as_ref(), job).await
    }

    /// Runs `job`, then each `prove` follow-up at its scheduled time (as the broker
    /// delivers it), until the rotation stops proving: promoted, failed or skipped.
    async fn rotate(&self, job: &Job) -> Result<RunOutcome, RotationError> {
        self.drive(job).await.0
    }

    /// [`World::rotate`], with the number of deliveries it took.
    async fn drive(&self, job: &Job) -> (Result<RunOutcome, RotationError>, usize) {
        let mut outcome = self.run(job).await;
        let mut deliveries = 1;
        while matches!(outcome, Ok(RunOutcome::Proving { .. })) {
            let Some(next) = self.next_proof() else {
                break;
            };
            outcome = self.run(&next).await;
            deliveries += 1;
        }
        (outcome, deliveries)
    }

    /// Delivers every `prove` follow-up not delivered yet, each at its time.
    async fn pump(&self) -> Option<Result<RunOutcome, RotationError>> {
        let mut last = None;
        while let Some(next) = self.next_proof() {
            last = Some(self.run(&next).await);
        }
        last
    }

    /// The first `prove` follow-up not delivered yet, with the clock moved to its time.
    fn next_proof(&self) -> Option<Job> {
        self.queue.deliver_next(&self.clock, |job| {
            matches!(job.action, Action::Prove { .. })
        })
    }

    /// Drives `job` until the armed crash point is hit, and returns the job the stopped
    /// worker was running (the message Service Bus delivers again).
    async fn drive_until_crash(&self, job: &Job) -> Job {
        tokio::select! {
            result = self.drive(job) => panic!("the crash point was never reached: {:?}", result.0),
            () = self.faults.crashed() => {}
        }
        self.in_flight
            .lock()
            .expect("lock")
            .clone()
            .expect("a job was running")
    }

    /// Names of the pending copies left in the vault.
    fn pending_copies(&self) -> Vec<String> {
        self.vault
            .secret_names(&self.vault_url)
            .into_iter()
            .filter(|n| n.starts_with(run::PENDING_PREFIX))
            .collect()
    }

    /// Runs `job` until the armed crash point is hit, then drops it mid-flight.
    async fn run_until_crash(&self, job: &Job) {
        tokio::select! {
            result = self.run(job) => panic!("the crash point was never reached: {result:?}"),
            () = self.faults.crashed() => {}
        }
    }

    fn current(&self, secret: &str) -> SecretProperties {
        self.vault
            .secret_history(&self.vault_url, &name(secret))
            .last()
            .expect("a version")
            .properties
            .clone()
    }

    fn current_value(&self, secret: &str) -> SecretValue {
        self.vault
            .secret_history(&self.vault_url, &name(secret))
            .last()
            .expect("a version")
            .value
            .clone()
    }

    fn versions(&self, secret: &str) -> usize {
        self.vault
            .secret_history(&self.vault_url, &name(secret))
            .len()
    }

    fn keyturn_credentials(&self) -> Vec<KeyId> {
        self.directory
            .credentials(&self.app.object_id)
            .into_iter()
            .filter(|c| {
                c.display_name
                    .as_deref()
                    .is_some_and(|d| d.starts_with(MARKER_PREFIX))
            })
            .map(|c| c.key_id)
            .collect()
    }

    fn retire_messages(&self) -> Vec<(OutgoingMessage, Job)> {
        self.queue
            .messages()
            .into_iter()
            .map(|m| {
                let value: serde_json::Value = serde_json::from_slice(&m.body).expect("json");
                let job = Job::from_json(&value).expect("a valid job");
                (m, job)
            })
            .filter(|(_, job)| matches!(job.action, Action::Retire { .. }))
            .collect()
    }

    /// Exactly one current credential that works, and no keyturn credential in the
    /// directory but the current one and (until retired) `previous`.
    fn assert_converged(&self, secret: &str, previous: Option<KeyId>) {
        let current = self.current(secret);
        let notes = tags::Bookkeeping::read(&current.tags);
        let key = notes
            .key_id
            .expect("the current version records its key id");
        assert!(
            self.directory.accepts(
                &AppId::parse(APP).expect("app"),
                &self.current_value(secret)
            ),
            "the current version's credential works"
        );
        let mut expected = vec![key];
        expected.extend(previous);
        let mut found = self.keyturn_credentials();
        found.sort();
        expected.sort();
        assert_eq!(found, expected, "no orphaned keyturn credential");
    }
}

#[tokio::test]
async fn an_app_secret_is_replaced_by_a_proven_credential_and_the_old_one_retired_after_the_overlap()
 {
    let w = world();
    let (v1, k1) = w.seed_keyturn_version("payments");
    let job = w.rotate_job(&v1);

    let outcome = w.rotate(&job).await.expect("rotation succeeds");

    let RunOutcome::Rotated { key_id, .. } = outcome else {
        panic!("expected a rotation, got {outcome:?}");
    };
    let current = w.current("payments");
    let notes = tags::Bookkeeping::read(&current.tags);
    assert_eq!(notes.key_id.map(|k| k.to_string()), key_id);
    assert_eq!(notes.previous_key_id, Some(k1));
    assert_eq!(notes.previous_version.as_ref(), v1.id.version());
    assert_eq!(
        current.tags.get(tags::KIND).map(String::as_str),
        Some("entra-app-secret")
    );
    let credential = w
        .directory
        .credentials(&w.app.object_id)
        .into_iter()
        .find(|c| Some(c.key_id) == notes.key_id)
        .expect("the new credential exists");
    assert_eq!(
        current.expires, credential.end,
        "expiry = the credential's end"
    );
    assert_eq!(
        credential.display_name,
        Some(format!("{MARKER_PREFIX}{}", job.job_id))
    );
    let (attempts, accepted) = w.directory.proofs();
    assert!(attempts > 3, "the proof waited through propagation");
    assert_eq!(accepted, 3, "promoted after three acceptances in a row");
    assert_eq!(
        w.pending_copies(),
        Vec::<String>::new(),
        "the pending copy is gone"
    );
    w.assert_converged("payments", Some(k1));

    let retires = w.retire_messages();
    assert_eq!(retires.len(), 1);
    let (message, retire) = &retires[0];
    assert_eq!(
        message.session_id,
        keyturn::rotation::job::session_id(&v1.id.without_version())
    );
    assert_eq!(
        message.scheduled_enqueue,
        notes.rotated_at.map(|t| t + chrono::Duration::days(7))
    );

    w.clock.advance(Duration::from_secs(7 * 24 * 3600));
    let retired = w.run(retire).await.expect("retirement succeeds");
    assert_eq!(
        retired,
        RunOutcome::Retired {
            key_id: k1.to_string()
        }
    );
    w.assert_converged("payments", None);
    for action in [
        "credential.added",
        "credential.pending",
        "credential.proving",
        "credential.pending_removed",
        "credential.proven",
        "secret.rotated",
        "retirement.scheduled",
        "credential.retired",
    ] {
        assert!(
            w.trail.has(action, Outcome::Succeeded),
            "{action} audited: {}",
            w.trail.text()
        );
    }
}

/// A pending copy belongs to the secret it stages a value for, and so does its owner: it
/// carries the managed secret's `keyturn-owner` from the moment it is stored and through
/// every proof attempt recorded on it.
#[tokio::test]
async fn a_pending_copy_carries_the_owner_of_the_secret_it_stages_for() {
    let w = world();
    let end = w.clock.now() + chrono::Duration::days(5);
    let issued = w
        .directory
        .add_person_credential(&w.app.object_id, "initial", end)
        .expect("app exists");
    let mut tagged = entra_tags();
    tagged.insert(tags::KEY_ID.into(), issued.credential.key_id.to_string());
    tagged.insert("Keyturn-Owner".into(), "payments-team".into());
    let v1 = w.vault.put_secret(
        &w.vault_url,
        &name("payments"),
        &issued.secret,
        Some(end),
        tagged,
    );

    let outcome = w.run(&w.rotate_job(&v1)).await.expect("staged");
    assert!(matches!(outcome, RunOutcome::Proving { .. }), "{outcome:?}");
    let pending = w.pending_copies();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let owner_of_pending = || w.current(&pending[0]).tags.get("keyturn-owner").cloned();
    assert_eq!(owner_of_pending().as_deref(), Some("payments-team"));
    assert_eq!(
        w.current(&pending[0])
            .tags
            .get("keyturn-pending-for")
            .map(String::as_str),
        Some("payments")
    );

    // A proof attempt rewrites the copy's tags: the owner stays.
    let next = w.next_proof().expect("a proof follow-up");
    let outcome = w.run(&next).await.expect("a proof attempt");
    assert!(matches!(outcome, RunOutcome::Proving { .. }), "{outcome:?}");
    assert_eq!(owner_of_pending().as_deref(), Some("payments-team"));
}

#[tokio::test]
async fn no_secret_value_reaches_the_audit_trail() {
    let w = world();
    let (v1, _) = w.seed_keyturn_version("payments");
    w.rotate(&w.rotate_job(&v1))
        .await
        .expect("rotation succeeds");
    let trail = w.trail.text();
    let value = w.current_value("payments");
    assert!(
        !trail.contains(value.expose()),
        "secret value in the audit trail"
    );
}

#[tokio::test]
async fn a_first_rotation_leaves_a_persons_credential_alone() {
    let w = world();
    let end = w.clock.now() + chrono::Duration::days(3);
    let person = w
        .directory
        .add_person_credential(&w.app.object_id, "added in the portal", end)
        .expect("app");
    let v1 = w.vault.put_secret(
        &w.vault_url,
        &name("payments"),
        &person.secret,
        Some(end),
        entra_tags(),
    );

    w.rotate(&w.rotate_job(&v1))
        .await
        .expect("rotation succeeds");

    assert!(
        w.retire_messages().is_empty(),
        "nothing keyturn did not create is scheduled for removal"
    );
    assert!(w.trail.has("retirement.scheduled", Outcome::Skipped));
    assert!(
        w.directory
            .credentials(&w.app.object_id)
            .iter()
            .any(|c| c.key_id == person.credential.key_id)
    );
}

#[tokio::test]
async fn a_retire_job_never_removes_a_credential_without_keyturns_marker() {
    let w = world();
    let (v1, _) = w.seed_keyturn_version("payments");
    w.rotate(&w.rotate_job(&v1))
        .await
        .expect("rotation succeeds");
    let current = w.current("payments");
    let person = w
        .directory
        .add_person_credential(
            &w.app.object_id,
            "break-glass",
            start() + chrono::Duration::days(30),
        )
        .expect("app");
    let forged = Job::new(Action::Retire {
        object: v1.id.without_version(),
        replaced_version: v1.id.version().expect("v").clone(),
        app_object_id: w.app.object_id,
        key_id: person.credential.key_id,
        successor_version: current.id.version().expect("v").clone(),
        rotated_by: w.rotate_job(&v1).job_id,
    });

    let outcome = w.run(&forged).await.expect("completes");

    assert!(matches!(outcome, RunOutcome::Skipped { .. }), "{outcome:?}");
    assert!(
        w.directory
            .credentials(&w.app.object_id)
            .iter()
            .any(|c| c.key_id == person.credential.key_id),
        "the person's credential is still there"
    );
}

#[tokio::test]
async fn a_key_id_copied_onto_a_persons_version_is_never_handed_on() {
    let w = world();
    let end = w.clock.now() + chrono::Duration::days(5);
    let marked = w
        .directory
        .add_person_credential(
            &w.app.object_id,
            &format!("{MARKER_PREFIX}{}", "b".repeat(32)),
            end,
        )
        .expect("app");
    let mut copied = entra_tags();
    copied.insert(tags::KEY_ID.into(), marked.credential.key_id.to_string());
    let v1 = w.vault.put_secret(
        &w.vault_url,
        &name("payments"),
        &marked.secret,
        Some(end),
        copied,
    );

    w.rotate(&w.rotate_job(&v1))
        .await
        .expect("rotation succeeds");

    let notes = tags::Bookkeeping::read(&w.current("payments").tags);
    assert_eq!(notes.previous_key_id, None);
    assert!(
        w.retire_messages().is_empty(),
        "a version keyturn did not write schedules no removal"
    );
}

#[tokio::test]
async fn a_retire_job_removes_only_the_key_its_successor_replaced() {
    let w = world();
    let (v1, k1) = w.seed_keyturn_version("payments");
    w.rotate(&w.rotate_job(&v1))
        .await
        .expect("rotation succeeds");
    let current = w.current("payments");
    let other = w
        .directory
        .add_person_credential(
            &w.app.object_id,
            &format!("{MARKER_PREFIX}{}", "c".repeat(32)),
            start() + chrono::Duration::days(30),
        )
        .expect("app");
    let wrong = Job::new(Action::Retire {
        object: v1.id.without_version(),
        replaced_version: v1.id.version().expect("v").clone(),
        app_object_id: w.app.object_id,
        key_id: other.credential.key_id,
        successor_version: current.id.version().expect("v").clone(),
        rotated_by: w.rotate_job(&v1).job_id,
    });

    let outcome = w.run(&wrong).await.expect("completes");

    assert!(matches!(outcome, RunOutcome::Skipped { .. }), "{outcome:?}");
    let left = w.directory.credentials(&w.app.object_id);
    assert!(left.iter().any(|c| c.key_id == other.credential.key_id));
    assert!(left.iter().any(|c| c.key_id == k1), "nothing else removed");
}

#[tokio::test]
async fn a_retire_job_leaves_alone_an_application_the_secret_no_longer_names() {
    use keyturn::ports::vault::SecretStore;

    let w = world();
    let (v1, k1) = w.seed_keyturn_version("payments");
    w.rotate(&w.rotate_job(&v1))
        .await
        .expect("rotation succeeds");
    let other = w.directory.add_application(
        AppId::parse("0d8e2c4a-1b3f-4e5d-8a9b-abcdefabcdef").expect("app id"),
        "billing-api",
    );
    let current = w.current("payments");
    let mut moved = current.tags.clone();
    moved.insert(tags::APP_ID.into(), other.app_id.to_string());
    w.vault
        .update_tags(
            &w.vault_url,
            &name("payments"),
            current.id.version().expect("v"),
            moved,
        )
        .await
        .expect("tags updated");
    let (_, retire) = w.retire_messages().remove(0);
    w.clock.advance(Duration::from_secs(7 * 24 * 3600));

    let outcome = w.run(&retire).await.expect("completes");

    assert!(matches!(outcome, RunOutcome::Skipped { .. }), "{outcome:?}");
    assert!(
        w.directory
            .credentials(&w.app.object_id)
            .iter()
            .any(|c| c.key_id == k1),
        "the credential on the application the secret no longer names is kept"
    );
}

#[tokio::test]
async fn a_retire_job_after_a_rollback_by_hand_keeps_the_credential() {
    let w = world();
    let (v1, k1) = w.seed_keyturn_version("payments");
    let old_value = w.current_value("payments");
    w.rotate(&w.rotate_job(&v1))
        .await
        .expect("rotation succeeds");
    // A person puts the previous value back, without keyturn's bookkeeping.
    w.vault.put_secret(
        &w.vault_url,
        &name("payments"),
        &old_value,
        None,
        entra_tags(),
    );
    let (_, retire) = w.retire_messages().remove(0);

    let outcome = w.run(&retire).await.expect("completes");

    assert!(matches!(outcome, RunOutcome::Skipped { .. }), "{outcome:?}");
    assert!(
        w.directory
            .credentials(&w.app.object_id)
            .iter()
            .any(|c| c.key_id == k1),
        "the credential the rolled-back version holds is kept"
    );
    assert!(w.directory.accepts(
        &AppId::parse(APP).expect("app"),
        &w.current_value("payments")
    ));
}

#[tokio::test]
async fn a_retire_job_never_removes_the_current_credential() {
    let w = world();
    let (v1, _) = w.seed_keyturn_version("payments");
    w.rotate(&w.rotate_job(&v1))
        .await
        .expect("rotation succeeds");
    let current = w.current("payments");
    let current_key = tags::Bookkeeping::read(&current.tags).key_id.expect("key");
    let wrong = Job::new(Action::Retire {
        object: v1.id.without_version(),
        replaced_version: v1.id.version().expect("v").clone(),
        app_object_id: w.app.object_id,
        key_id: current_key,
        successor_version: current.id.version().expect("v").clone(),
        rotated_by: w.rotate_job(&v1).job_id,
    });
    let outcome = w.run(&wrong).await.expect("completes");
    assert!(matches!(outcome, RunOutcome::Skipped { .. }), "{outcome:?}");
    assert!(w.directory.accepts(
        &AppId::parse(APP).expect("app"),
        &w.current_value("payments")
    ));
}

/// Every step of a rotation, by the port call that makes it take effect, in order: the
/// credential added, its pending copy stored, proof attempts and their bookkeeping, the
/// follow-ups sent, the promotion, the pending copy deleted, the retirement scheduled.
const ROTATION_STEPS: [(&str, usize); 12] = [
    ("add_password", 1),
    ("set_secret", 1),
    ("update_tags", 1),
    ("send", 1),
    ("update_tags", 2),
    ("send", 2),
    ("prove", 1),
    ("prove", 2),
    ("prove", 3),
    ("set_secret", 2),
    ("delete_secret", 1),
    ("send", 5),
];

/// Stops the worker right after each step took effect, delivers the job it was running
/// again to a fresh worker, and checks that every run converges: one new version, the
/// credential it holds and the previous one (until retired), no pending copy, one
/// retirement.
#[tokio::test]
async fn a_worker_stopped_after_any_step_converges_on_redelivery() {
    for (operation, occurrence) in ROTATION_STEPS {
        let w = world();
        let (v1, k1) = w.seed_keyturn_version("payments");
        let job = w.rotate_job(&v1);
        w.faults.crash_after(CrashPoint {
            operation,
            occurrence,
        });

        let stopped = w.drive_until_crash(&job).await;
        // Service Bus redelivers after the lock expires.
        w.clock.advance(Duration::from_secs(5 * 60));
        let (outcome, _) = w.drive(&stopped).await;
        let outcome = outcome.unwrap_or_else(|e| panic!("{operation} {occurrence}: {e}"));
        if let Some(last) = w.pump().await {
            last.unwrap_or_else(|e| panic!("{operation} {occurrence}: late follow-up: {e}"));
        }

        assert!(
            matches!(outcome, RunOutcome::Rotated { .. })
                || outcome
                    == RunOutcome::Skipped {
                        reason: "already rotated".into()
                    },
            "{operation} {occurrence}: {outcome:?}"
        );
        if operation == "add_password" {
            assert!(
                w.trail.has("credential.orphan_removed", Outcome::Succeeded),
                "{operation}: {}",
                w.trail.text()
            );
        }
        assert_eq!(
            w.versions("payments"),
            2,
            "{operation} {occurrence}: exactly one new version"
        );
        assert_eq!(
            w.pending_copies(),
            Vec::<String>::new(),
            "{operation} {occurrence}: no pending copy left"
        );
        w.assert_converged("payments", Some(k1));
        assert_eq!(
            w.retire_messages().len(),
            1,
            "{operation} {occurrence}: retirement scheduled once"
        );

        // And the retirement itself, stopped right after removing and delivered again.
        let (_, retire) = w.retire_messages().remove(0);
        w.clock.advance(Duration::from_secs(7 * 24 * 3600));
        w.faults.crash_after(CrashPoint {
            operation: "remove_password",
            occurrence: 1,
        });
        w.run_until_crash(&retire).await;
        let retired = w
            .run(&retire)
            .await
            .unwrap_or_else(|e| panic!("{operation}: retire: {e}"));
        assert_eq!(
            retired,
            RunOutcome::Retired {
                key_id: k1.to_string()
            },
            "{operation}"
        );
        w.assert_converged("payments", None);
        assert!(
            w.trail.has("credential.retired", Outcome::Skipped),
            "already removed is audited"
        );
    }
}

#[tokio::test]
async fn fifty_duplicate_deliveries_make_one_rotation() {
    let w = world();
    let (v1, k1) = w.seed_keyturn_version("payments");
    let job = w.rotate_job(&v1);

    let mut deliveries = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (engine, trail, job) = (w.engine.clone(), w.trail.clone(), job.clone());
        deliveries.spawn(async move { run::run(&engine, trail.as_ref(), &job).await });
    }
    let outcomes = deliveries.join_all().await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let last = w.pump().await.expect("a proof follow-up");

    assert!(matches!(last, Ok(RunOutcome::Rotated { .. })), "{last:?}");
    assert_eq!(w.versions("payments"), 2);
    assert_eq!(w.faults.count("add_password"), 1);
    w.assert_converged("payments", Some(k1));
    assert_eq!(w.retire_messages().len(), 1);
}

#[tokio::test]
async fn two_workers_on_one_object_make_one_rotation() {
    let w = world();
    let (v1, _) = w.seed_keyturn_version("payments");
    // An event and a sweep planned the same version: one job id, one message.
    let job = w.rotate_job(&v1);
    let spawn = || {
        let (engine, trail, job) = (w.engine.clone(), w.trail.clone(), job.clone());
        tokio::spawn(async move { run::run(&engine, trail.as_ref(), &job).await })
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.await.expect("worker a"), b.await.expect("worker b"));
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    let last = w.pump().await.expect("a proof follow-up");
    assert!(matches!(last, Ok(RunOutcome::Rotated { .. })), "{last:?}");
    assert_eq!(w.versions("payments"), 2);
    assert_eq!(w.faults.count("add_password"), 1);
}

#[tokio::test]
async fn permission_denied_is_permanent_audited_tagged_and_not_retried() {
    let w = world();
    let (v1, _) = w.seed_keyturn_version("payments");
    w.directory.deny_writes(Some(
        "Microsoft Graph Application.ReadWrite.OwnedBy (keyturn must own the application)",
    ));

    let error = w.run(&w.rotate_job(&v1)).await.expect_err("refused");

    assert!(error.is_permanent());
    assert!(matches!(error.kind(), FailureKind::PermissionDenied { .. }));
    assert!(
        error.to_string().contains("Application.ReadWrite.OwnedBy"),
        "{error}"
    );
    assert_eq!(w.faults.count("add_password"), 1, "not retried");
    let current = w.current("payments");
    assert_eq!(current.id, v1.id, "no new version");
    let tag = current
        .tags
        .get(tags::LAST_ERROR)
        .expect("failure recorded on the secret");
    assert!(tag.contains("permission_denied"), "{tag}");
    assert!(w.trail.has("rotation.failed", Outcome::Failed));
}

#[tokio::test]
async fn a_store_refused_for_good_leaves_no_credential_behind() {
    let w = world();
    let (v1, k1) = w.seed_keyturn_version("payments");
    w.faults.fail_next(
        "set_secret",
        PortError::new(
            FailureKind::PermissionDenied {
                missing: "Key Vault Secrets Officer on kv-one".into(),
            },
            "writing a new version",
        ),
    );

    let error = w.run(&w.rotate_job(&v1)).await.expect_err("refused");

    assert!(error.is_permanent());
    assert_eq!(w.faults.count("add_password"), 1);
    assert_eq!(w.current("payments").id, v1.id, "no new version");
    assert_eq!(
        w.keyturn_credentials(),
        vec![k1],
        "the credential that could not be stored is removed"
    );
    assert!(w.trail.has("credential.removed", Outcome::Succeeded));
    assert!(w.trail.has("rotation.failed", Outcome::Failed));
}

#[tokio::test]
async fn an_app_management_policy_violation_is_permanent_audited_and_tagged() {
    let w = world();
    let (v1, _) = w.seed_keyturn_version("payments");
    w.directory
        .set_max_lifetime(Some(Duration::from_secs(30 * 24 * 3600)));

    let error = w.run(&w.rotate_job(&v1)).await.expect_err("refused");

    assert!(error.is_permanent());
    assert_eq!(
        error.kind(),
        FailureKind::PolicyViolation {
            code: LIFETIME_POLICY.into()
        }
    );
    assert_eq!(w.faults.count("add_password"), 1, "not retried");
    let tag = w
        .current("payments")
        .tags
        .get(tags::LAST_ERROR)
        .cloned()
        .expect("tagged");
    assert!(tag.contains("policy_violation"), "{tag}");
    assert!(w.keyturn_credentials().len() == 1, "nothing was added");
}

#[tokio::test]
async fn a_retry_after_is_honoured_within_the_message_lock() {
    let w = world();
    let (v1, k1) = w.seed_keyturn_version("payments");
    for _ in 0..3 {
        w.faults.fail_next(
            "add_password",
            PortError::new(
                FailureKind::Transient {
                    retry_after: Some(Duration::from_secs(7)),
                },
                "Graph answered 429",
            ),
        );
    }
    let before = w.clock.now();

    w.rotate(&w.rotate_job(&v1))
        .await
        .expect("rotation completes");

    assert_eq!(w.faults.count("add_password"), 4);
    assert!(
        w.clock.now() - before >= chrono::Duration::seconds(21),
        "waited 3 x 7 s"
    );
    w.assert_converged("payments", Some(k1));
}

#[tokio::test]
async fn each_entry_carries_the_time_its_action_happened() {
    let w = world();
    let (v1, _) = w.seed_keyturn_version("payments");

    w.rotate(&w.rotate_job(&v1))
        .await
        .expect("rotation completes");

    let records = w.trail.store.records();
    let time_of = |action: &str| {
        records
            .iter()
            .find(|r| r.action.as_str() == action)
            .map(|r| r.at)
            .unwrap_or_else(|| panic!("no {action} entry in {records:?}"))
    };
    let added = time_of("credential.added");
    let proven = time_of("credential.proven");
    // The proof waits out Entra's propagation delay (10 s in this world): the entry
    // says when the proof happened, not when the invocation started.
    assert_eq!(added, start());
    assert!(
        proven - added >= chrono::Duration::seconds(10),
        "added {added}, proven {proven}"
    );
    assert!(records.windows(2).all(|pair| pair[0].at <= pair[1].at));
}

#[tokio::test]
async fn a_lasting_outage_fails_the_invocation_without_marking_the_secret() {
    let w = world();
    let (v1, _) = w.seed_keyturn_version("payments");
    for _ in 0..20 {
        w.faults
            .fail_next("application", PortError::transient("Graph answered 503"));
    }
    let error = w.run(&w.rotate_job(&v1)).await.expect_err("gives up");
    assert!(!error.is_permanent());
    assert!(!w.current("payments").tags.contains_key(tags::LAST_ERROR));
    assert!(w.faults.count("application") <= keyturn::rotation::retry::MAX_ATTEMPTS as usize);
}

#[tokio::test]
async fn a_transient_failure_on_the_last_delivery_is_recorded_before_dead_lettering() {
    let w = world();
    let (v1, _) = w.seed_keyturn_version("payments");
    for _ in 0..20 {
        w.faults
            .fail_next("application", PortError::transient("Graph answered 503"));
    }
    let last = keyturn::ports::queue::MAX_DELIVERY_COUNT;

    let error = run::run_delivery(&w.engine, w.trail.as_ref(), &w.rotate_job(&v1), last)
        .await
        .expect_err("gives up");

    assert!(!error.is_permanent(), "the queue dead-letters it");
    assert!(
        w.trail.has("rotation.failed", Outcome::Failed),
        "{}",
        w.trail.text()
    );
    let tag = w
        .current("payments")
        .tags
        .get(tags::LAST_ERROR)
        .cloned()
        .expect("keyturn-last-error is set");
    assert!(
        tag.contains("retry budget exhausted after 5 deliveries"),
        "{tag}"
    );
}

#[tokio::test]
async fn a_credential_never_accepted_is_removed_at_the_deadline_and_the_failure_recorded() {
    let w = world();
    let (v1, k1) = w.seed_keyturn_version("payments");
    w.directory
        .set_propagation_delay(Duration::from_secs(3 * 3600));
    let started = w.clock.now();

    let (result, deliveries) = w.drive(&w.rotate_job(&v1)).await;

    let error = result.expect_err("the proof deadline passes");
    assert!(
        matches!(error, RotationError::ProofDeadlinePassed { .. }),
        "{error}"
    );
    assert!(error.is_permanent(), "recorded, not redelivered");
    assert_eq!(w.clock.now() - started, chrono::Duration::minutes(60));
    assert_eq!(
        w.faults.count("add_password"),
        1,
        "one credential per rotation"
    );
    assert_eq!(w.faults.count("remove_password"), 1);
    assert!(deliveries > 2 && deliveries < 70, "{deliveries} deliveries");
    assert_eq!(w.versions("payments"), 1, "nothing promoted");
    assert_eq!(
        w.pending_copies(),
        Vec::<String>::new(),
        "the pending copy is gone"
    );
    assert_eq!(
        w.keyturn_credentials(),
        vec![k1],
        "the unproven credential was removed"
    );
    assert!(
        w.trail.has("rotation.failed", Outcome::Failed),
        "{}",
        w.trail.text()
    );
    let last_error = w
        .current("payments")
        .tags
        .get(tags::LAST_ERROR)
        .cloned()
        .expect("keyturn-last-error is set");
    assert!(last_error.contains("did not accept"), "{last_error}");

    // Every sweep names it until it is fixed.
    for _ in 0..2 {
        let report = plan::sweep(
            &w.engine,
            w.trail.as_ref(),
            std::slice::from_ref(&w.vault_url),
            w.clock.now(),
        )
        .await
        .expect("sweeps");
        assert_eq!(report.failing.len(), 1, "{:?}", report.failing);
        assert!(
            report.failing[0].contains("payments"),
            "{:?}",
            report.failing
        );
    }
}

#[tokio::test]
async fn an_enormous_retry_after_from_the_token_endpoint_only_delays_the_proof() {
    let w = world();
    let (v1, k1) = w.seed_keyturn_version("payments");
    w.faults.fail_next(
        "prove",
        PortError::new(
            FailureKind::Transient {
                retry_after: Some(Duration::from_secs(9_999_999_999_999)),
            },
            "token endpoint answered 429",
        ),
    );

    let outcome = w
        .rotate(&w.rotate_job(&v1))
        .await
        .expect("no panic, no failure");

    assert!(matches!(outcome, RunOutcome::Rotated { .. }), "{outcome:?}");
    assert_eq!(w.faults.count("add_password"), 1);
    w.assert_converged("payments", Some(k1));
}

#[tokio::test]
async fn a_credential_whose_addition_cannot_be_audited_is_removed_again() {
    let w = world();
    let (v1, k1) = w.seed_keyturn_version("payments");

    let error = run::run(&w.engine, &refusing("credential.added"), &w.rotate_job(&v1))
        .await
        .expect_err("the audit refusal fails the job");

    assert!(error.is_permanent(), "{error}");
    assert_eq!(w.versions("payments"), 1, "nothing stored");
    assert_eq!(
        w.keyturn_credentials(),
        vec![k1],
        "the unaudited credential was removed"
    );
}

#[tokio::test]
async fn a_stale_job_is_skipped_as_already_rotated() {
    let w = world();
    let (v1, _) = w.seed_keyturn_version("payments");
    w.rotate(&w.rotate_job(&v1)).await.expect("rotates");
    let v2 = w.current("payments");
    w.rotate(&w.rotate_job(&v2)).await.expect("rotates again");

    let late = w.run(&w.rotate_job(&v1)).await.expect("completes");

    assert_eq!(
        late,
        RunOutcome::Skipped {
            reason: "already rotated".into()
        }
    );
    assert_eq!(w.versions("payments"), 3);
}

#[tokio::test]
async fn a_superseded_job_removes_the_credential_an_earlier_delivery_never_stored() {
    let w = world();
    let (v1, k1) = w.seed_keyturn_version("payments");
    let job = w.rotate_job(&v1);
    w.faults.crash_after(CrashPoint {
        operation: "add_password",
        occurrence: 1,
    });
    w.run_until_crash(&job).await;
    w.faults.disarm();
    assert_eq!(
        w.keyturn_credentials().len(),
        2,
        "the crashed delivery added one"
    );
    w.vault.put_secret(
        &w.vault_url,
        &name("payments"),
        &SecretValue::new("typed-in"),
        None,
        entra_tags(),
    );

    let outcome = w.run(&job).await.expect("completes");

    assert!(matches!(outcome, RunOutcome::Skipped { reason } if reason.contains("superseded")));
    assert_eq!(w.keyturn_credentials(), vec![k1], "the stray was removed");
    assert!(w.trail.has("credential.orphan_removed", Outcome::Succeeded));
}

#[tokio::test]
async fn a_late_delivery_keeps_the_credential_its_stored_version_holds() {
    let w = world();
    let (v1, _) = w.seed_keyturn_version("payments");
    let first = w.rotate_job(&v1);
    w.rotate(&first).await.expect("rotates");
    let v2 = w.current("payments");
    let k2 = tags::Bookkeeping::read(&v2.tags).key_id.expect("key");
    w.rotate(&w.rotate_job(&v2)).await.expect("rotates again");

    w.run(&first).await.expect("completes");

    assert!(
        w.keyturn_credentials().contains(&k2),
        "still in its overlap, so not a stray"
    );
}

#[tokio::test]
async fn a_version_written_by_a_person_supersedes_the_job() {
    let w = world();
    let (v1, _) = w.seed_keyturn_version("payments");
    w.vault.put_secret(
        &w.vault_url,
        &name("payments"),
        &SecretValue::new("typed-in"),
        None,
        entra_tags(),
    );
    let outcome = w.run(&w.rotate_job(&v1)).await.expect("completes");
    assert!(matches!(outcome, RunOutcome::Skipped { reason } if reason.contains("superseded")));
}

#[tokio::test]
async fn malformed_tags_are_a_permanent_failure_recorded_on_the_secret() {
    let w = world();
    let mut bad = entra_tags();
    bad.insert(tags::VALIDITY_DAYS.into(), "forever".into());
    let v1 = w.vault.put_secret(
        &w.vault_url,
        &name("payments"),
        &SecretValue::new("x"),
        None,
        bad,
    );

    let error = w.run(&w.rotate_job(&v1)).await.expect_err("malformed");

    assert!(error.is_permanent());
    let tag = w
        .current("payments")
        .tags
        .get(tags::LAST_ERROR)
        .cloned()
        .expect("tagged");
    assert!(tag.contains(tags::VALIDITY_DAYS), "{tag}");
}

#[tokio::test]
async fn a_generated_secret_gets_a_fresh_value_per_its_tags() {
    let w = world();
    let tags = BTreeMap::from([
        (tags::KIND.to_string(), "generated".to_string()),
        (tags::LENGTH.to_string(), "48".to_string()),
        (tags::ALPHABET.to_string(), "hex".to_string()),
        (tags::VALIDITY_DAYS.to_string(), "60".to_string()),
    ]);
    let v1 = w.vault.put_secret(
        &w.vault_url,
        &name("session-key"),
        &SecretValue::new("old"),
        None,
        tags,
    );

    let outcome = w.rotate(&w.rotate_job(&v1)).await.expect("rotates");

    assert!(matches!(outcome, RunOutcome::Rotated { key_id: None, .. }));
    let value = w.current_value("session-key");
    assert_eq!(value.len(), 48);
    assert!(
        value
            .expose()
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(
        w.current("session-key").expires,
        Some(start() + chrono::Duration::days(60))
    );
    assert!(!w.trail.text().contains(value.expose()));
}

fn certificate_tags() -> BTreeMap<String, String> {
    BTreeMap::from([(tags::ROTATE_BEFORE_DAYS.to_string(), "20".to_string())])
}

fn certificate_job(properties: &keyturn::ports::vault::CertificateProperties) -> Job {
    Job::new(Action::Rotate {
        object: properties.id.without_version(),
        replaces_version: properties.id.version().expect("v").clone(),
    })
}

#[tokio::test]
async fn a_retire_job_naming_a_certificate_is_skipped() {
    let w = world();
    let c1 = w
        .vault
        .put_certificate(&w.vault_url, &name("tls"), "Self", None, certificate_tags());
    let (_, key_id) = w.seed_keyturn_version("other");
    let retire = Job::new(Action::Retire {
        object: c1.id.without_version(),
        replaced_version: c1.id.version().expect("v").clone(),
        app_object_id: w.app.object_id,
        key_id,
        successor_version: c1.id.version().expect("v").clone(),
        rotated_by: certificate_job(&c1).job_id,
    });

    let outcome = w.run(&retire).await.expect("completes");

    assert_eq!(
        outcome,
        RunOutcome::Skipped {
            reason: "a certificate has no credential to retire".into()
        }
    );
    assert!(w.keyturn_credentials().contains(&key_id));
}

#[tokio::test]
async fn a_self_signed_certificate_is_renewed_within_the_invocation() {
    let w = world();
    let soon = Some(start() + chrono::Duration::days(10));
    let c1 = w
        .vault
        .put_certificate(&w.vault_url, &name("tls"), "Self", soon, certificate_tags());
    w.vault.set_renewal_time(Duration::from_secs(12));

    let outcome = w.run(&certificate_job(&c1)).await.expect("renews");

    assert!(matches!(outcome, RunOutcome::Rotated { .. }), "{outcome:?}");
    assert_eq!(
        w.vault
            .certificate_versions(&w.vault_url, &name("tls"))
            .len(),
        2
    );
    assert!(w.trail.has("certificate.renewed", Outcome::Succeeded));
}

#[tokio::test]
async fn a_slow_ca_renewal_is_followed_by_scheduled_jobs() {
    let w = world();
    let c1 = w.vault.put_certificate(
        &w.vault_url,
        &name("www"),
        "digicert-ov",
        None,
        certificate_tags(),
    );
    w.vault.set_renewal_time(Duration::from_secs(26 * 3600));

    let first = w.run(&certificate_job(&c1)).await.expect("starts");
    assert_eq!(first, RunOutcome::RenewalPending { next_attempt: 1 });

    let mut attempt = 1;
    let outcome = loop {
        let message = w.queue.messages().pop().expect("a follow-up");
        let value: serde_json::Value = serde_json::from_slice(&message.body).expect("json");
        let follow = Job::from_json(&value).expect("job");
        assert!(message.scheduled_enqueue.is_some());
        w.clock.advance(Duration::from_secs(3600));
        match w.run(&follow).await.expect("follows") {
            RunOutcome::RenewalPending { next_attempt } => {
                attempt += 1;
                assert_eq!(next_attempt, attempt);
            }
            done => break done,
        }
    };
    assert!(matches!(outcome, RunOutcome::Rotated { .. }), "{outcome:?}");
    assert_eq!(w.faults.count("begin_renewal"), 1, "one renewal, followed");
}

#[tokio::test]
async fn a_certificate_from_an_outside_ca_needs_manual_renewal() {
    let w = world();
    let c1 = w.vault.put_certificate(
        &w.vault_url,
        &name("legacy"),
        "Unknown",
        None,
        certificate_tags(),
    );

    let error = w.run(&certificate_job(&c1)).await.expect_err("refused");

    assert!(matches!(error, RotationError::ManualRenewal { .. }));
    assert!(error.is_permanent());
    assert!(error.to_string().contains("manual renewal"));
    assert_eq!(w.faults.count("begin_renewal"), 0);
    assert!(w.trail.has("rotation.failed", Outcome::Failed));
}

#[tokio::test]
async fn a_failed_renewal_is_permanent() {
    let w = world();
    let c1 = w
        .vault
        .put_certificate(&w.vault_url, &name("www"), "Self", None, certificate_tags());
    w.vault
        .fail_next_renewal(&w.vault_url, &name("www"), "CertificateRequestRejected");
    let error = w.run(&certificate_job(&c1)).await.expect_err("fails");
    assert!(error.is_permanent());
    assert!(error.to_string().contains("CertificateRequestRejected"));
}

fn near_expiry_event(object_type: &str, secret: &str, version: &str) -> KeyVaultEvent {
    let collection = if object_type == "Secret" {
        "secrets"
    } else {
        "certificates"
    };
    let value = json!({
        "id": "00eccf70-95a7-4e7c-8299-2eb17ee9ad64",
        "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-one",
        "subject": secret,
        "eventType": format!("Microsoft.KeyVault.{object_type}NearExpiry"),
        "eventTime": "2030-06-01T12:00:00Z",
        "data": {
            "Id": format!("https://kv-one.vault.azure.net/{collection}/{secret}/{version}"),
            "VaultName": "kv-one",
            "ObjectType": object_type,
            "ObjectName": secret,
            "Version": version,
            "NBF": null,
            "EXP": null
        },
        "dataVersion": "1",
        "metadataVersion": "1"
    });
    KeyVaultEvent::parse(&value).expect("event")
}

/// What planning is handed for an event that triggers rotation.
fn notice(event: &KeyVaultEvent) -> ExpiryNotice {
    key_vault_events::expiry_notice(event).expect("an event that triggers rotation")
}

#[tokio::test]
async fn an_event_and_a_sweep_for_one_version_queue_one_job() {
    let w = world();
    let (v1, _) = w.seed_keyturn_version("payments");
    let version = v1.id.version().expect("v").to_string();

    let decision = plan::from_notice(
        &w.engine,
        w.trail.as_ref(),
        &notice(&near_expiry_event("Secret", "payments", &version)),
        w.clock.now(),
    )
    .await
    .expect("plans");
    let swept = plan::sweep(
        &w.engine,
        w.trail.as_ref(),
        std::slice::from_ref(&w.vault_url),
        w.clock.now(),
    )
    .await
    .expect("sweeps");

    let EventDecision::Queued { job_id } = decision else {
        panic!("expected a job, got {decision:?}");
    };
    assert_eq!(swept.queued, 1);
    assert_eq!(w.queue.sends(), 2);
    let messages = w.queue.messages();
    assert_eq!(messages.len(), 1, "the broker dropped the duplicate");
    assert_eq!(messages[0].message_id, job_id.to_string());
    assert_eq!(
        messages[0].session_id,
        "kv-one.vault.azure.net/secrets/payments"
    );
    assert_eq!(messages[0].scheduled_enqueue, None);
}

#[tokio::test]
async fn events_that_cannot_lead_to_a_job_are_acknowledged_with_their_reason() {
    let w = world();
    let (v1, _) = w.seed_keyturn_version("payments");
    w.vault.put_secret(
        &w.vault_url,
        &name("plain"),
        &SecretValue::new("x"),
        None,
        BTreeMap::new(),
    );
    let plain = w.current("plain");
    let stale = v1.id.version().expect("v").to_string();
    w.rotate(&w.rotate_job(&v1)).await.expect("rotates");
    let cases = [
        (
            near_expiry_event("Secret", "payments", &stale),
            EventDecision::Stale,
        ),
        (
            near_expiry_event("Secret", "gone", &stale),
            EventDecision::Gone,
        ),
        (
            near_expiry_event("Secret", "plain", plain.id.version().expect("v").as_str()),
            EventDecision::NotManaged,
        ),
        (
            near_expiry_event(
                "Secret",
                "payments",
                w.current("payments").id.version().expect("v").as_str(),
            ),
            EventDecision::NotDue,
        ),
    ];
    for (event, expected) in cases {
        let decision =
            plan::from_notice(&w.engine, w.trail.as_ref(), &notice(&event), w.clock.now())
                .await
                .expect("plans");
        assert_eq!(decision, expected);
    }
    let sent_before = w.queue.sends();
    let other_vault = KeyVaultEvent::parse(&json!({
        "id": "1", "subject": "x", "eventType": "Microsoft.KeyVault.SecretNearExpiry",
        "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-two",
        "eventTime": "2030-06-01T12:00:00Z", "dataVersion": "1", "metadataVersion": "1",
        "data": { "Id": format!("https://kv-two.vault.azure.net/secrets/x/{stale}"), "VaultName": "kv-two",
                  "ObjectType": "Secret", "ObjectName": "x", "Version": stale }
    }))
    .expect("event");
    assert_eq!(
        plan::from_notice(
            &w.engine,
            w.trail.as_ref(),
            &notice(&other_vault),
            w.clock.now()
        )
        .await,
        Ok(EventDecision::UnknownVault)
    );
    assert_eq!(w.queue.sends(), sent_before);
}

#[tokio::test]
async fn the_sweep_reports_malformed_tags_and_counts_the_rest() {
    let w = world();
    w.seed_keyturn_version("due");
    let later = Some(start() + chrono::Duration::days(200));
    let mut fine = entra_tags();
    fine.insert(tags::VALIDITY_DAYS.into(), "365".into());
    w.vault.put_secret(
        &w.vault_url,
        &name("fresh"),
        &SecretValue::new("x"),
        later,
        fine,
    );
    let mut broken = entra_tags();
    broken.insert(tags::APP_ID.into(), "payments-api".into());
    w.vault.put_secret(
        &w.vault_url,
        &name("broken"),
        &SecretValue::new("x"),
        later,
        broken,
    );
    w.vault.put_secret(
        &w.vault_url,
        &name("unmanaged"),
        &SecretValue::new("x"),
        None,
        BTreeMap::new(),
    );
    w.vault.put_certificate(
        &w.vault_url,
        &name("tls"),
        "Self",
        Some(start() + chrono::Duration::days(5)),
        certificate_tags(),
    );

    let report = plan::sweep(
        &w.engine,
        w.trail.as_ref(),
        std::slice::from_ref(&w.vault_url),
        w.clock.now(),
    )
    .await
    .expect("sweeps");

    assert_eq!(report.examined, 5);
    assert_eq!(report.queued, 2, "the due secret and the certificate");
    assert_eq!(report.not_due, 1);
    assert_eq!(report.not_managed, 1);
    assert_eq!(report.malformed.len(), 1);
    assert!(
        report.malformed[0].contains("broken") && report.malformed[0].contains(tags::APP_ID),
        "{:?}",
        report.malformed
    );
    assert!(w.trail.has("rotation.planned", Outcome::Failed));
    assert_eq!(w.faults.count("secret"), 0, "the sweep never reads a value");
}

#[tokio::test]
async fn a_vault_the_sweep_may_not_list_is_reported_and_the_others_swept() {
    let w = world();
    w.seed_keyturn_version("due");
    w.faults.fail_next(
        "list_secrets",
        PortError::new(
            FailureKind::PermissionDenied {
                missing: "Key Vault Secrets Officer on kv-one".into(),
            },
            "listing secrets",
        ),
    );
    let report = plan::sweep(
        &w.engine,
        w.trail.as_ref(),
        &[w.vault_url.clone(), w.vault_url.clone()],
        w.clock.now(),
    )
    .await
    .expect("sweeps");
    assert_eq!(report.failed_vaults.len(), 1);
    assert!(report.failed_vaults[0].contains("Key Vault Secrets Officer"));
    assert_eq!(report.queued, 1);
    assert!(w.trail.has("sweep.vault_failed", Outcome::Failed));
}

#[tokio::test]
async fn a_vault_whose_certificates_may_not_be_listed_still_has_its_secrets_swept() {
    let w = world();
    w.seed_keyturn_version("due");
    w.faults.fail_next(
        "list_certificates",
        PortError::new(
            FailureKind::PermissionDenied {
                missing: "Key Vault Certificates Officer on kv-one".into(),
            },
            "listing certificates",
        ),
    );

    let report = plan::sweep(
        &w.engine,
        w.trail.as_ref(),
        std::slice::from_ref(&w.vault_url),
        w.clock.now(),
    )
    .await
    .expect("sweeps");

    assert_eq!(report.queued, 1, "the due secret is queued");
    assert_eq!(report.failed_vaults.len(), 1);
    assert!(report.failed_vaults[0].contains("Key Vault Certificates Officer"));
    assert!(w.trail.has("sweep.vault_failed", Outcome::Failed));
}

#[test]
fn object_ids_in_jobs_are_versionless() {
    let id = ObjectId::parse(
        "https://kv-one.vault.azure.net/secrets/a/0123456789abcdef0123456789abcdef",
    )
    .expect("id");
    let job = Job::new(Action::Rotate {
        object: id.without_version(),
        replaces_version: id.version().expect("v").clone(),
    });
    assert_eq!(job.action.object().object_type(), ObjectType::Secret);
    assert!(job.action.object().version().is_none());
}

/// One rotation under a propagation delay (and, when `flapping` is not empty, replicas
/// that answer a propagated credential as `flapping` says at first), driven to promotion
/// and then to its retirement: (Graph writes, deliveries, test-clock time to promotion).
async fn staged_rotation(propagation: Duration, flapping: Vec<bool>) -> (usize, usize, Duration) {
    let w = world();
    w.directory.set_propagation_delay(propagation);
    w.directory.set_flapping(flapping);
    let (v1, k1) = w.seed_keyturn_version("payments");
    let started = w.clock.now();

    let (outcome, deliveries) = w.drive(&w.rotate_job(&v1)).await;

    let outcome = outcome.expect("promoted");
    assert!(matches!(outcome, RunOutcome::Rotated { .. }), "{outcome:?}");
    let promoted_after = (w.clock.now() - started).to_std().expect("forward");
    assert_eq!(w.pending_copies(), Vec::<String>::new());
    w.assert_converged("payments", Some(k1));
    let (_, retire) = w.retire_messages().remove(0);
    w.clock.advance(Duration::from_secs(7 * 24 * 3600));
    w.run(&retire).await.expect("retired");
    w.assert_converged("payments", None);
    let writes = w.faults.count("add_password") + w.faults.count("remove_password");
    (writes, deliveries + 1, promoted_after)
}

/// The figures of a staged rotation: whatever the propagation, two Graph writes (one
/// addPassword, one removePassword at retirement), a delivery per proof attempt, and
/// promotion within a couple of minutes of the credential working everywhere.
#[tokio::test]
async fn a_rotation_converges_with_two_graph_writes_however_long_propagation_takes() {
    let minute = Duration::from_secs(60);
    let cases: [(&str, Duration, Vec<bool>); 5] = [
        ("0 s", Duration::ZERO, vec![]),
        ("30 s", Duration::from_secs(30), vec![]),
        ("5 min", 5 * minute, vec![]),
        ("15 min", 15 * minute, vec![]),
        (
            "2 min, flapping",
            2 * minute,
            vec![true, false, true, false, true],
        ),
    ];
    let window = Duration::from_secs(60);
    println!("| propagation | Graph writes | deliveries | time to promotion |");
    for (label, propagation, flapping) in cases {
        let (writes, deliveries, promoted_after) =
            staged_rotation(propagation, flapping.clone()).await;
        println!(
            "| {label} | {writes} | {deliveries} | {} s |",
            promoted_after.as_secs()
        );
        assert_eq!(writes, 2, "{label}: one add, one remove");
        assert!(
            promoted_after >= propagation + window,
            "{label}: proven across the window after propagation ({promoted_after:?})"
        );
        let refusals = u32::try_from(flapping.iter().filter(|a| !**a).count()).expect("few");
        // At most a minute's poll after propagation, then the window once per refusal.
        assert!(
            promoted_after <= propagation + minute + window * (1 + refusals) + minute,
            "{label}: promoted soon after propagation ({promoted_after:?})"
        );
        assert!(deliveries < 40, "{label}: {deliveries} deliveries");
    }
}

/// Key Vault keeps a deleted secret's name taken: every rotation's pending copy has a
/// name of its own, so the second rotation stores its pending copy like the first.
#[tokio::test]
async fn a_second_rotation_stores_its_pending_copy_despite_soft_delete() {
    let w = world();
    let (v1, _) = w.seed_keyturn_version("payments");
    w.rotate(&w.rotate_job(&v1)).await.expect("first rotation");
    let v2 = w.current("payments");

    let outcome = w.rotate(&w.rotate_job(&v2)).await.expect("second rotation");

    assert!(matches!(outcome, RunOutcome::Rotated { .. }), "{outcome:?}");
    assert_eq!(w.versions("payments"), 3);
    let deleted = w.vault.deleted_secret_names(&w.vault_url);
    assert_eq!(
        deleted.len(),
        2,
        "two pending copies, soft-deleted: {deleted:?}"
    );
    assert!(
        deleted.iter().all(|n| n.starts_with(run::PENDING_PREFIX)),
        "{deleted:?}"
    );
    assert_eq!(w.pending_copies(), Vec::<String>::new());
}

/// Two rotations before the first retirement fires (an early rotation, or an overlap as
/// long as the cadence): the first retirement removes only the first credential; the
/// middle one, held by a version still within its overlap, stays until its own
/// retirement.
#[tokio::test]
async fn a_retirement_never_removes_the_credential_of_a_version_still_within_its_overlap() {
    let w = world();
    let (v1, k1) = w.seed_keyturn_version("payments");
    w.rotate(&w.rotate_job(&v1)).await.expect("first rotation");
    let v2 = w.current("payments");
    let k2 = tags::Bookkeeping::read(&v2.tags).key_id.expect("k2");
    w.clock.advance(Duration::from_secs(24 * 3600));
    w.rotate(&w.rotate_job(&v2))
        .await
        .expect("second rotation, a day later");
    let v3 = w.current("payments");
    let k3 = tags::Bookkeeping::read(&v3.tags).key_id.expect("k3");
    let retires = w.retire_messages();
    assert_eq!(retires.len(), 2);

    // The first retirement, after v2's overlap: k1 goes, k2 (v2's overlap runs a day
    // longer) stays.
    w.clock.advance(Duration::from_secs(6 * 24 * 3600));
    let first = w.run(&retires[0].1).await.expect("first retirement");
    assert_eq!(
        first,
        RunOutcome::Retired {
            key_id: k1.to_string()
        }
    );
    let mut left = w.keyturn_credentials();
    left.sort();
    let mut expected = vec![k2, k3];
    expected.sort();
    assert_eq!(left, expected, "the middle credential survives");

    // Its own retirement, a day later.
    w.clock.advance(Duration::from_secs(24 * 3600));
    let second = w.run(&retires[1].1).await.expect("second retirement");
    assert_eq!(
        second,
        RunOutcome::Retired {
            key_id: k2.to_string()
        }
    );
    assert_eq!(w.keyturn_credentials(), vec![k3]);
}
