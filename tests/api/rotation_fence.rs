//! Two instances on one object, sharing nothing but the services (the in-memory
//! stand-ins for Key Vault, Entra and the queue) and the lease store (one SQLite file,
//! opened separately by each): no in-process lock is common to them. One instance is
//! held right after each step of a rotation (a long pause that outlives its lease and
//! the broker's session lock), the other is delivered the same job meanwhile and
//! finishes it, then the first resumes. Whatever the step, one rotation survives, no
//! credential in use is removed and no stray remains.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use tempfile::TempDir;

use keyturn::adapters::local::lease::LocalLeases;
use keyturn::adapters::local::store::LocalStore;
use keyturn::audit::{AuditLog, AuditScope};
use keyturn::domain::ids::{AppId, KeyId};
use keyturn::domain::names::{ObjectName, VaultUrl};
use keyturn::ports::directory::Application;
use keyturn::ports::vault::SecretProperties;
use keyturn::rotation::job::{Action, Job};
use keyturn::rotation::run::{self, MARKER_PREFIX, RunOutcome};
use keyturn::rotation::tags::{self, PolicyDefaults};
use keyturn::rotation::{Engine, Ports, RotationError};
use keyturn_doubles::{
    CrashPoint, Faults, ManualClock, MemoryAuditStore, MemoryDirectory, MemoryQueue, MemoryVault,
};

const APP: &str = "6f1b7a7e-0b1c-4d2a-9e3f-0123456789ab";

/// Every step of a rotation that takes effect outside the engine, by occurrence.
const STEPS: [(&str, usize); 12] = [
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

/// Longer than a lease runs unconfirmed (and than a Service Bus session lock).
const LONG_PAUSE: Duration = Duration::from_secs(15 * 60);

/// One instance: its own engine, audit scope and lease store connection.
struct Instance {
    engine: Engine,
    audit: AuditScope,
    running: Mutex<Option<Job>>,
}

struct Services {
    clock: ManualClock,
    faults: Arc<Faults>,
    vault: Arc<MemoryVault>,
    directory: Arc<MemoryDirectory>,
    queue: Arc<MemoryQueue>,
    vault_url: VaultUrl,
    app: Application,
    _dir: TempDir,
}

struct Pair {
    services: Services,
    first: Instance,
    second: Instance,
}

fn name(text: &str) -> ObjectName {
    ObjectName::parse(text).expect("name")
}

fn pair() -> Arc<Pair> {
    let clock = ManualClock::at(
        Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0)
            .single()
            .expect("time"),
    );
    let faults = Faults::new();
    let vault = Arc::new(MemoryVault::new(clock.clock(), faults.clone()));
    let directory = Arc::new(MemoryDirectory::new(clock.clock(), faults.clone()));
    let queue = Arc::new(MemoryQueue::new(faults.clone()));
    let vault_url = VaultUrl::parse("https://kv-one.vault.azure.net/").expect("vault");
    let app = directory.add_application(AppId::parse(APP).expect("app id"), "payments-api");
    directory.set_propagation_delay(Duration::from_secs(10));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keyturn.db");
    let instance = |actor: &str| {
        let ports = Ports {
            secrets: vault.clone(),
            certificates: vault.clone(),
            directory: directory.clone(),
            prover: directory.clone(),
            queue: queue.clone(),
        };
        let store = LocalStore::open(&path).expect("the store opens");
        let engine = Engine::new(
            ports,
            vec![vault_url.clone()],
            PolicyDefaults::new(90, 30, 7).expect("defaults"),
            clock.clock(),
        )
        .with_pause(clock.pause())
        .with_fence(Arc::new(LocalLeases::new(store)));
        let audit = AuditScope::function(
            AuditLog::new(Arc::new(MemoryAuditStore::new())),
            "RotationWorker",
            actor,
            clock.clock(),
        )
        .expect("scope");
        Instance {
            engine,
            audit,
            running: Mutex::new(None),
        }
    };
    let first = instance("5f0c0d4e-2f35-4f1a-9f3e-8a7f0b6c1d2e");
    let second = instance("0a7c3e2b-9d41-4c6f-8e25-3b1d7f9a6c40");
    Arc::new(Pair {
        services: Services {
            clock,
            faults,
            vault,
            directory,
            queue,
            vault_url,
            app,
            _dir: dir,
        },
        first,
        second,
    })
}

impl Services {
    /// A secret whose current version keyturn wrote earlier, with its credential.
    fn seed(&self) -> (SecretProperties, KeyId) {
        let end = self.clock.now() + chrono::Duration::days(5);
        let issued = self
            .directory
            .add_person_credential(
                &self.app.object_id,
                &format!("{MARKER_PREFIX}{}", "a".repeat(32)),
                end,
            )
            .expect("app exists");
        let tags = BTreeMap::from([
            (tags::KIND.to_string(), "entra-app-secret".to_string()),
            (tags::APP_ID.to_string(), APP.to_string()),
            (tags::KEY_ID.into(), issued.credential.key_id.to_string()),
            (tags::JOB_ID.into(), "a".repeat(32)),
            (tags::ROTATED_AT.into(), "2030-03-01T00:00:00Z".into()),
        ]);
        let properties = self.vault.put_secret(
            &self.vault_url,
            &name("payments"),
            &issued.secret,
            Some(end),
            tags,
        );
        (properties, issued.credential.key_id)
    }

    /// The first follow-up of `kind` not delivered yet, with the clock moved to its time.
    fn next(&self, retire: bool) -> Option<Job> {
        self.queue.deliver_next(&self.clock, |job| {
            if retire {
                matches!(job.action, Action::Retire { .. })
            } else {
                matches!(job.action, Action::Prove { .. })
            }
        })
    }

    fn pending_copies(&self) -> Vec<String> {
        self.vault
            .secret_names(&self.vault_url)
            .into_iter()
            .filter(|n| n.starts_with(run::PENDING_PREFIX))
            .collect()
    }

    fn keyturn_credentials(&self) -> Vec<KeyId> {
        let mut found: Vec<KeyId> = self
            .directory
            .credentials(&self.app.object_id)
            .into_iter()
            .filter(|c| {
                c.display_name
                    .as_deref()
                    .is_some_and(|d| d.starts_with(MARKER_PREFIX))
            })
            .map(|c| c.key_id)
            .collect();
        found.sort();
        found
    }

    /// One rotation survived: one new version, whose credential works; the keyturn
    /// credentials are exactly its own and `previous` (until retired); no pending copy.
    fn assert_one_rotation(&self, step: &str, previous: Option<&KeyId>) {
        let history = self
            .vault
            .secret_history(&self.vault_url, &name("payments"));
        assert_eq!(history.len(), 2, "{step}: exactly one new version");
        let current = history.last().expect("a version");
        let key = tags::Bookkeeping::read(&current.properties.tags)
            .key_id
            .expect("the current version records its key id");
        assert!(
            self.directory
                .accepts(&AppId::parse(APP).expect("app"), &current.value),
            "{step}: the credential consumers hold was removed"
        );
        let mut expected = vec![key];
        expected.extend(previous.cloned());
        expected.sort();
        assert_eq!(
            self.keyturn_credentials(),
            expected,
            "{step}: a stray credential remains, or one in use is gone"
        );
        assert_eq!(
            self.pending_copies(),
            Vec::<String>::new(),
            "{step}: a pending copy remains"
        );
    }
}

impl Instance {
    /// Runs `job`, then the prove follow-ups at their times, until the rotation stops
    /// proving.
    async fn drive(&self, services: &Services, job: Job) -> Result<RunOutcome, RotationError> {
        let mut job = job;
        loop {
            *self.running.lock().expect("lock") = Some(job.clone());
            let outcome = run::run(&self.engine, &self.audit, &job).await;
            if !matches!(outcome, Ok(RunOutcome::Proving { .. })) {
                return outcome;
            }
            match services.next(false) {
                Some(next) => job = next,
                None => return outcome,
            }
        }
    }
}

/// Holds the first instance after each step, lets the second finish the job, resumes the
/// first, then retires: the outcome is one rotation, whatever the step. Without the
/// leases, a hold after `add_password` leaves a pending copy of a credential the other
/// instance removed, one after a proof fails the resumed instance for good (its pending
/// copy was promoted and deleted meanwhile), and one after the third proof promotes a
/// second new version.
#[tokio::test]
async fn two_instances_interleaved_at_every_step_make_one_rotation() {
    for (operation, occurrence) in STEPS {
        let step = format!("{operation} {occurrence}");
        let pair = pair();
        let s = &pair.services;
        let (v1, k1) = s.seed();
        let job = Job::new(Action::Rotate {
            object: v1.id.without_version(),
            replaces_version: v1.id.version().expect("version").clone(),
        });
        s.faults.hold_after(CrashPoint {
            operation,
            occurrence,
        });
        let first = {
            let (pair, job) = (pair.clone(), job.clone());
            tokio::spawn(async move { pair.first.drive(&pair.services, job).await })
        };
        tokio::select! {
            () = s.faults.crashed() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => panic!("{step}: never reached"),
        }
        let held = pair
            .first
            .running
            .lock()
            .expect("lock")
            .clone()
            .expect("a job was running");

        // The first instance is paused past its lease; the broker delivers its job again.
        s.clock.advance(LONG_PAUSE);
        let second = pair.second.drive(s, held).await;
        second.unwrap_or_else(|e| panic!("{step}: the second instance failed: {e}"));

        s.faults.resume();
        let first = first.await.expect("the first instance's task");
        if let Err(error) = &first {
            assert!(!error.is_permanent(), "{step}: {error}");
        }
        // Whatever follow-ups the first instance left are delivered, to either instance.
        while let Some(next) = s.next(false) {
            let _ = pair.second.drive(s, next).await;
        }
        s.assert_one_rotation(&step, Some(&k1));

        // After the overlap, every retirement scheduled is delivered to both instances.
        s.clock.advance(Duration::from_secs(8 * 24 * 3600));
        while let Some(retire) = s.next(true) {
            for instance in [&pair.first, &pair.second] {
                let _ = run::run(&instance.engine, &instance.audit, &retire).await;
            }
        }
        s.assert_one_rotation(&step, None);
    }
}

/// A certificate renewal with two instances: the first is held right after it starts the
/// renewal (a CA that takes a day), past its lease, while the second is delivered the same
/// job and follows the renewal. Resumed, the first stops at its next fenced step: one
/// chain of follow-ups, from the lease's holder.
#[tokio::test]
async fn a_certificate_renewal_taken_over_is_followed_by_the_new_holder_only() {
    let pair = pair();
    let s = &pair.services;
    let tags = BTreeMap::from([(tags::ROTATE_BEFORE_DAYS.to_string(), "20".to_string())]);
    let c1 = s
        .vault
        .put_certificate(&s.vault_url, &name("www"), "digicert-ov", None, tags);
    s.vault.set_renewal_time(Duration::from_secs(26 * 3600));
    let job = Job::new(Action::Rotate {
        object: c1.id.without_version(),
        replaces_version: c1.id.version().expect("version").clone(),
    });
    s.faults.hold_after(CrashPoint {
        operation: "begin_renewal",
        occurrence: 1,
    });
    let first = {
        let (pair, job) = (pair.clone(), job.clone());
        tokio::spawn(async move { run::run(&pair.first.engine, &pair.first.audit, &job).await })
    };
    tokio::select! {
        () = s.faults.crashed() => {}
        _ = tokio::time::sleep(Duration::from_secs(30)) => panic!("the renewal never started"),
    }

    s.clock.advance(LONG_PAUSE);
    let second = run::run(&pair.second.engine, &pair.second.audit, &job)
        .await
        .expect("the second instance follows the renewal");
    assert_eq!(second, RunOutcome::RenewalPending { next_attempt: 1 });
    let sends = s.faults.count("send");
    assert_eq!(sends, 1, "the second instance scheduled one follow-up");

    s.faults.resume();
    let first = first.await.expect("the first instance's task");
    assert!(
        matches!(&first, Ok(RunOutcome::Skipped { reason }) if reason.contains("took the object's lease over")),
        "the first instance stops at its next fenced step: {first:?}"
    );
    assert_eq!(
        s.faults.count("send"),
        sends,
        "no second chain of follow-ups"
    );
    assert_eq!(
        s.vault
            .certificate_versions(&s.vault_url, &name("www"))
            .len(),
        1,
        "nothing renewed yet"
    );
}
